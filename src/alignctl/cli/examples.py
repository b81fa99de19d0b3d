"""Examples shown at the end of each command's ``--help`` (printed as written, not rewrapped);
``tests/test_cli_heldout3.py`` checks that they name only options the command has."""

from __future__ import annotations

EXAMPLES = {
    "analyze": [
        "alignctl analyze runs/sp-ga",
        "alignctl analyze ckpt/ --model my_models.py:make_net --data data.npz",
        "alignctl analyze runs/sp-ga --json report.json --fail-under test_accuracy=0.9",
        "alignctl analyze runs/sp-ga --baseline main.json --max-drop test_accuracy=0.02",
    ],
    "train": [
        "alignctl train --task sparse-parity --reg grokalign --out runs/sp-ga",
        "alignctl train --config my_run.yaml --reg grokalign:lambda=0.05 --out runs/mine",
        "alignctl train --resume runs/sp-ga --epochs 2000",
    ],
    "race": [
        "alignctl race --task sparse-parity --regs none,grokalign --seeds 2 --out races/sp",
        "alignctl race --render races/sp.json",
    ],
    "compare": [
        "alignctl compare runs/sp-base runs/sp-ga --plot compare.png",
    ],
    "geometry": [
        "alignctl geometry runs/sp-ga --steps 21,200 --out slice.png",
    ],
    "metrics": ["alignctl metrics"],
}


def write_examples(name: str, formatter) -> None:
    """The ``Examples:`` section of command ``name`` (nothing when it has none)."""
    lines = EXAMPLES.get(name)
    if lines:
        with formatter.section("Examples"):
            for line in lines:
                formatter.write(f"{'':>{formatter.current_indent}}{line}\n")
