"""``alignctl compare``'s table fits the terminal as analyze's does: COLUMNS when piped (it was
at least 160 wide whatever COLUMNS said, and folded by rich on a narrow terminal), no cell cut,
the columns left out named below it."""

import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from typer.testing import CliRunner

from alignctl.report.fit_table import fit_table

EXAMPLES = Path(__file__).resolve().parents[1] / "examples/checkpoints"
KEEP, WRAPS = ("step", "run", "verdict"), ("run", "verdict")


def render(table, width) -> str:
    console = Console(width=width, no_color=True, highlight=False, file=io.StringIO())
    with console.capture() as cap:
        console.print(table)
    return cap.get()


word = st.text(st.sampled_from("abcxyz019.%+-()‖λ"), min_size=1, max_size=9)
cell = st.lists(word, min_size=1, max_size=3).map(" ".join)


@settings(max_examples=120, deadline=None)
@given(st.integers(0, 5), st.integers(1, 6), st.integers(1, 220), st.data())
def test_fitted_table_cuts_no_cell_at_any_width(n_extra, n_rows, width, data):
    header = ["step", "run", "verdict"] + [f"q{i}" for i in range(n_extra)]
    rows = [data.draw(st.lists(cell, min_size=len(header), max_size=len(header)))
            for _ in range(n_rows)]  # fmt: skip
    table, need, hidden = fit_table(header, rows, width, keep=KEEP, wraps=WRAPS)
    out = render(table, max(width, need))
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= max(width, need)
    assert need <= width or not [h for h in header if h not in KEEP and h not in hidden]
    shown = [i for i, h in enumerate(header) if h not in hidden and h not in WRAPS]
    for row in rows:  # every non-wrapping cell shown whole on one line
        for i in shown:
            assert any(row[i] in line for line in lines), (row[i], out)


@pytest.mark.parametrize("columns", [40, 60, 80, 200])
def test_compare_cli_fits_columns(monkeypatch, columns):
    from alignctl.cli.assemble import app

    monkeypatch.setenv("COLUMNS", str(columns))
    runs = [str(EXAMPLES / "sparse-parity-baseline"), str(EXAMPLES / "sparse-parity-grokalign")]
    r = CliRunner().invoke(app, ["compare", *runs])
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert max(len(line) for line in lines) <= columns
    assert "96.8% (+38.5 pt)" in r.stdout or "test acc" in r.stdout.split("not shown")[-1]
    if columns >= 200:
        assert "not shown" not in r.stdout and "erank" in r.stdout
    else:
        assert "not shown, to fit" in " ".join(r.stdout.split())
