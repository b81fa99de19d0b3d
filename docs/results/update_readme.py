"""Rewrite the README's race tables from the saved race results, with the race command.

Each block in README.md between

    <!-- race-table docs/results/NAME.json -->
    <!-- /race-table -->

is replaced by the output of ``alignctl race --render docs/results/NAME.json --markdown -``:
the tables are generated, never typed. tests/test_readme_results.py fails when a block and
its result disagree.

    python docs/results/update_readme.py
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"(<!-- race-table (\S+) -->\n)(.*?)(<!-- /race-table -->)", re.S)


def rendered(result: str) -> str:
    cmd = [sys.executable, "-m", "alignctl", "race", "--render", result, "--markdown", "-"]
    return subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    new = BLOCK.sub(lambda m: m.group(1) + "\n" + rendered(m.group(2)) + "\n" + m.group(4), text)
    readme.write_text(new, encoding="utf-8")
    print(f"{len(BLOCK.findall(text))} race tables rendered into {readme}")


if __name__ == "__main__":
    main()
