"""Held-out checks of the outputs people and machines read (issues 4 and 12), on inputs the
other tests never used: CSV cells a spreadsheet would run as formulas, figure text with
``$`` (matplotlib's TeX math), ``compare`` on report files its validation accepts (another
version's, or edited by hand) and paths with rich markup printed on a terminal."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console
from test_render import md_tables

from alignctl.report import compare as cmp
from alignctl.report import render

GOLDEN = Path(__file__).parent / "golden" / "sparse-parity-grokalign.json"
TRIGGERS = "=+-@\t\r'"


def golden() -> dict:
    return json.loads(GOLDEN.read_text())


# ---- CSV: no live formula, and every cell reads back ---------------------------------------
risky = st.builds(lambda p, t: p + t, st.sampled_from([*TRIGGERS, ""]), st.text(max_size=10))


@settings(max_examples=150, deadline=None)
@given(
    name=risky,
    verdict=risky,
    unit=risky,
    metric=risky.map(lambda t: t + "§"),
    value=st.floats(-1e300, 1e300),
)
def test_csv_text_cells_are_never_formulas_and_read_back(name, verdict, unit, metric, value):
    report = golden()
    report["metric_names"] = [*report["metric_names"], metric]
    ck = report["checkpoints"][0]
    ck.update(name=name, verdict=verdict, step_unit=unit)
    ck["metrics"][metric] = value
    rows = list(csv.reader(io.StringIO(render.to_csv(report), newline="")))
    header, first = rows[0], dict(zip(rows[0], rows[1], strict=True))

    def back(cell: str) -> str:  # the documented reading: one leading ' was added
        return cell[1:] if cell.startswith("'") else cell

    for cell, want in ((first["name"], name), (first["verdict"], verdict),
                       (first["step_unit"], unit)):  # fmt: skip
        assert not cell.startswith(tuple(TRIGGERS[:-1])), cell
        assert back(cell) == want
    column = next(h for h in header if back(h) == metric)
    assert not column.startswith(tuple(TRIGGERS[:-1]))
    assert float(first[column]) == value  # numbers (negative ones too) are never prefixed
    assert float(first["centroid_alignment"]) == ck["metrics"]["centroid_alignment"] < 0


def test_a_checkpoint_named_as_a_formula_is_text_in_the_csv():
    report = golden()
    report["checkpoints"][0]["name"] = '=HYPERLINK("http://x","c")'
    text = render.to_csv(report)
    assert '"\'=HYPERLINK(""http://x"",""c"")"' in text.splitlines()[1]


# ---- figures: text is drawn as written ------------------------------------------------------
ODD = ["lr$\\frac$", "a$x^$b", "$1e-3$", "cost$", "a\\$b$c"]


def _svg_text(path: Path) -> str:
    import html

    return html.unescape(path.read_text())


@pytest.mark.parametrize("name", ODD)
def test_analyze_plot_draws_dollar_names_literally(tmp_path, name):
    import matplotlib

    report = golden()
    report["path"] = f"runs/{name}"
    report["metric_names"] = [*report["metric_names"], f"m{name}"]
    for ck in report["checkpoints"]:
        ck["metrics"][f"m{name}"] = 1.0
    report["checkpoints"][-1]["verdict"] = f"v{name}"
    out = tmp_path / "fig.svg"
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text stays text in the SVG
        render.plot(report, out)
    svg = _svg_text(out)
    for text in (f"{name}:", f"m{name}", f"v{name}"):  # title, panel, verdict change
        assert text in svg, text


def test_compare_plot_of_odd_reports_and_labels(tmp_path):
    from alignctl.report.figures.pages import plot_runs

    a, b = golden(), golden()
    b["regularisers"] = [{"name": "$x^$"}, "plain", {"name": 3, "lambda": 10**400}]
    b["checkpoints"][-1]["metrics"] = None  # null metrics pass the report check
    del b["checkpoints"][2]["verdict"]
    b["checkpoints"][3]["verdict"] = ["odd"]
    b["checkpoints"][4]["train_accuracy"] = "x"
    runs = cmp.series([a, b])
    assert runs[1].label == "$x^$ + plain + 3"
    plot_runs(runs, tmp_path / "cmp.png", title="t $\\frac$")
    assert (tmp_path / "cmp.png").stat().st_size > 0


# ---- compare on any report its check accepts --------------------------------------------------
json_scalars = st.one_of(st.none(), st.booleans(), st.text(max_size=6),
                         st.integers(-(10**300), 10**300), st.floats(allow_nan=False))  # fmt: skip
json_values = st.recursive(json_scalars, lambda ch: st.lists(ch, max_size=2)
                           | st.dictionaries(st.text(max_size=3), ch, max_size=2),
                           max_leaves=4)  # fmt: skip
NAMES = ["centroid_alignment", "jacobian_norm", "jacobian_erank", "mine"]


@st.composite
def report_files(draw):
    names = draw(st.lists(st.sampled_from(NAMES), unique=True))
    ck = st.fixed_dictionaries(
        {"step": st.integers(0, 10**12),
         "metrics": st.one_of(st.none(), st.fixed_dictionaries({n: json_values for n in names}))},
        optional={"verdict": json_values, "train_accuracy": json_values,
                  "test_accuracy": json_values, "metrics_std": json_values},
    )  # fmt: skip
    top = {"path": st.text(max_size=12), "regularisers": json_values, "verdict": json_values,
           "recommendation": json_values, "step_unit": json_values}  # fmt: skip
    report = draw(st.fixed_dictionaries({"checkpoints": st.lists(ck, min_size=1, max_size=4)},
                                        optional=top))  # fmt: skip
    if draw(st.booleans()):
        report["metric_names"] = names
    return report


def _load(tmp: Path, report: dict, i: int) -> dict:
    path = tmp / f"r{i}.json"
    path.write_text(json.dumps(report))
    return cmp.load_report(path)


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(report_files(), min_size=2, max_size=3))
def test_compare_renders_every_report_it_accepts(tmp_path, reports):
    from alignctl.report.fit_table import fit_table

    loaded = [_load(tmp_path, r, i) for i, r in enumerate(reports)]
    result = cmp.comparison(cmp.series(loaded))
    json.loads(cmp.to_json(result), parse_constant=pytest.fail)  # strict JSON
    header, rows = cmp.table_rows(result)
    for width in (40, 80):
        table, need, _ = fit_table(header, rows, width, keep=("step", "run", "verdict"),
                                   wraps=("run", "verdict"))  # fmt: skip
        console = Console(width=max(width, need), file=io.StringIO(), no_color=True)
        with console.capture() as cap:
            console.print(table)
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", cap.get())  # no escape reached it
    md = cmp.to_markdown(result)
    assert md_tables(md)[0] == [header, *rows]


def test_compare_diff_beyond_float_range_is_null():
    a, b = golden(), golden()
    a["checkpoints"][-1]["metrics"]["jacobian_norm"] = -1.7e308
    b["checkpoints"][-1]["metrics"]["jacobian_norm"] = 1.7e308
    result = cmp.comparison(cmp.series([a, b]))
    back = json.loads(cmp.to_json(result), parse_constant=pytest.fail)
    assert back["last"]["diff"]["jacobian_norm"] == [None, None]
    assert back["last"]["values"]["jacobian_norm"] == [-1.7e308, 1.7e308]


def test_compare_refuses_a_null_step_in_one_line(tmp_path):
    from alignctl.errors import InputError

    report = golden()
    report["checkpoints"][0]["step"] = None
    with pytest.raises(InputError, match="integer step"):
        _load(tmp_path, report, 0)


# ---- paths on a terminal: text, never markup -------------------------------------------------
def test_compare_reading_line_prints_markup_like_paths(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from alignctl.cli import app, common

    folder = tmp_path / "x[/bold]\x1b[31m"
    folder.mkdir(parents=True)
    (folder / "a.json").write_text(GOLDEN.read_text())
    seen = io.StringIO()

    def terminal():  # stderr as a terminal: the "reading" lines are printed
        return Console(file=seen, force_terminal=True, markup=common.err_console()._markup)

    monkeypatch.setattr("alignctl.cli.compare.err_console", terminal)
    res = CliRunner().invoke(app, ["compare", str(folder / "a.json"), str(GOLDEN)])
    assert res.exit_code == 0, res.output
    assert "x[/bold]\\x1b[31m" in seen.getvalue()


def test_compare_table_of_a_folder_with_an_escape_sequence():
    a, b = golden(), golden()
    a["path"], b["path"] = "runs/\x1b[2Jwipe", "runs/b"
    header, rows = cmp.table_rows(cmp.comparison(cmp.series([a, b])))
    assert all("\x1b" not in c for r in rows for c in r)
    assert any("\\x1b[2Jwipe" in c for r in rows for c in r)


@pytest.mark.parametrize("ch", ["\u202e", "\u202a", "\u2066", "\u2069", "\u200f", "\u200e"])
def test_bidirectional_controls_in_names_are_escaped(ch):
    """A folder name holding a right-to-left override reordered the rest of the title or table
    row it was printed on (the CLI's printable() escaped it; the report cells did not)."""
    from alignctl.report.cells import clean

    out = clean(f"run{ch}gnp.exe")
    assert ch not in out and f"\\u{ord(ch):04x}" in out
    assert clean("\u05e9\u05dc\u05d5\u05dd \U0001f468\u200d\U0001f469") == (
        "\u05e9\u05dc\u05d5\u05dd \U0001f468\u200d\U0001f469"
    )  # right-to-left letters and a zero-width joiner in an emoji stay as they are
