"""The README's GitHub Actions workflow, run as written: its `alignctl` steps pass on a fresh
GrokAlign run with GITHUB_STEP_SUMMARY set (exit 0, no traceback, a summary whose tables
parse), and the same gates fail on the shipped baseline example."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml
from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "examples" / "checkpoints" / "sparse-parity-baseline"


def workflow_steps() -> list[list[str]]:
    """The `run:` commands of the README's workflow that call alignctl, as argument lists."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", readme, flags=re.S)
    flow = next(yaml.safe_load(b) for b in blocks if "GITHUB" in b or "jobs:" in b)
    steps = [s["run"] for job in flow["jobs"].values() for s in job["steps"] if "run" in s]
    return [shlex.split(r, comments=True) for r in steps if r.strip().startswith("alignctl")]


def run(args: list[str], cwd: Path, summary: Path) -> subprocess.CompletedProcess:
    assert args[0] == "alignctl"
    # one thread, as in conftest.py: on 2 shared cores a second one only spins
    env = dict(os.environ, GITHUB_STEP_SUMMARY=str(summary), COLUMNS="80", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "alignctl", *args[1:]], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def tables(markdown: str) -> list[list[list[str]]]:
    md = MarkdownIt("commonmark").enable("table")
    out, row, inside = [], None, False
    for tok in md.parse(markdown):
        if tok.type == "table_open":
            out.append([])
        elif tok.type == "tr_open":
            row = []
        elif tok.type == "tr_close":
            out[-1].append(row)
        elif tok.type in ("th_open", "td_open", "th_close", "td_close"):
            inside = tok.type.endswith("open")
        elif tok.type == "inline" and inside:
            row.append("".join(c.content for c in tok.children or []))
    return out


def test_readme_workflow_passes_as_written_and_its_gates_fail_the_baseline(tmp_path):
    steps = workflow_steps()
    assert [s[1] for s in steps] == ["--version", "train", "analyze"]
    summary = tmp_path / "summary.md"
    for args in steps:
        r = run(args, tmp_path, summary)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr + r.stdout
        if args[1] == "analyze":  # the table fits the log's 80 columns
            assert max(len(x) for x in r.stdout.splitlines()) <= 80
    assert "torch" in run(steps[0], tmp_path, summary).stdout
    text = summary.read_text()
    found = tables(text)
    head, *rows = found[0]
    assert head[0].startswith("step") and head[-1] == "verdict" and "|J|_F" in head
    assert all(len(r) == len(head) for r in rows) and rows[-1][-1] == "generalising"
    gates = found[1]
    assert gates[0] == ["gate", "result"] and {r[1] for r in gates[1:]} == {"pass"}
    assert len(gates) == 1 + 3

    # the same gates on the baseline example: every one fails, exit 1
    analyze = next(s for s in steps if s[1] == "analyze")
    on_base = [str(BASELINE) if a == "run" else a for a in analyze]
    r = run(on_base, tmp_path, tmp_path / "base-summary.md")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    failed = [x for x in r.stderr.splitlines() if x.startswith("gate failed:")]
    assert len(failed) == 3
    assert any("test_accuracy >= 0.9: value 0.583" in x for x in failed)
    gates = tables((tmp_path / "base-summary.md").read_text())[1]
    assert {r[1] for r in gates[1:]} == {"FAIL"}
