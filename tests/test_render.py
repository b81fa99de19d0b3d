"""Every renderer renders every report: table, panel, Markdown, CSV, JSON and the step summary
on generated report dicts (Hypothesis), Markdown read back with a real parser (markdown-it-py),
and the terminal table at several widths."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from rich.console import Console

from alignctl.report import cells, render
from alignctl.report.render_markdown import checkpoint_table, escape

GOLDEN = Path(__file__).parent / "golden" / "sparse-parity-grokalign.json"
VERDICTS = ["learning", "memorising", "generalising", "robust", "diverged"]
MD = MarkdownIt("commonmark").enable(["table", "strikethrough"])

# ---- what a report can hold -------------------------------------------------------------
texts = st.text(max_size=12)  # any code point but lone surrogates: control chars, |, *, ...
odd_texts = st.sampled_from(["|mu|", "|J|_F", "a|b\\|c", "*x*", "_y_", "`z`", "<b>", "&amp;",
                             "[l](u)", "~~s~~", "# h", "$m$", "a\nb", "\x1b[31mred", "\u2028",
                             " pad ", "\\", "!", "-", "1.", "---"])  # fmt: skip
any_text = st.one_of(texts, odd_texts)
floats = st.floats(allow_nan=True, allow_infinity=True)
values = st.one_of(st.none(), floats, st.integers(-(10**12), 10**12), st.booleans(), any_text)
metric_names = st.one_of(st.sampled_from(list(cells.HEADERS) + ["centroid_inner"]), any_text)


@st.composite
def reports(draw):
    names = draw(st.lists(metric_names, max_size=8, unique=True))
    keys = st.one_of(st.sampled_from(names), any_text) if names else any_text

    ck_required = {}
    ck_optional = {
        "name": any_text,
        "step": st.one_of(st.integers(-5, 10**9), values),
        "metrics": st.one_of(st.dictionaries(keys, values, max_size=10), values),
        "metrics_std": st.dictionaries(keys, values, max_size=10),
        "train_accuracy": st.one_of(st.floats(0, 1), values),
        "test_accuracy": st.one_of(st.floats(0, 1), values),
        "adversarial_accuracy": st.one_of(st.floats(0, 1), values),
        "noise_accuracy": st.one_of(st.floats(0, 1), values),
        "verdict": st.one_of(st.sampled_from(VERDICTS), values),
        "inferred": values,
        "seconds": values,
        "step_unit": values,
        "diverged": values,
        "extra key": values,
    }
    checkpoint = st.one_of(st.fixed_dictionaries(ck_required, optional=ck_optional), values)
    gate = st.fixed_dictionaries(
        {},
        optional={
            "rule": any_text,
            "value": values,
            "threshold": values,
            "passed": values,
            "baseline": values,
            "drop": values,
        },  # fmt: skip
    )
    top = {
        "alignctl_version": values,
        "path": any_text,
        "device": values,
        "split": values,
        "n_samples": values,
        "metric_names": st.one_of(st.just(names), st.lists(values, max_size=3), values),
        "checkpoints": st.one_of(st.lists(checkpoint, max_size=5), values),
        "verdict": st.one_of(st.sampled_from(VERDICTS), values),
        "inferred": values,
        "recommendation": st.one_of(
            st.fixed_dictionaries({}, optional={"action": values, "reason": values}), values
        ),
        "gates": st.one_of(st.lists(gate, max_size=3), values),
        "passed": values,
        "notes": st.one_of(st.lists(any_text, max_size=2), values),
        "step_unit": values,
        "pgd": values,
        "something new": values,
    }
    return draw(st.fixed_dictionaries({}, optional=top))


# ---- reading Markdown back ----------------------------------------------------------------
def md_tables(text: str) -> list[list[list[str]]]:
    """Every table in ``text`` as rows of cell texts (the header row first)."""
    tables, row, cell = [], None, None
    for tok in MD.parse(text):
        if tok.type == "table_open":
            tables.append([])
        elif tok.type == "tr_open":
            row = []
        elif tok.type == "tr_close":
            tables[-1].append(row)
        elif tok.type == "inline" and row is not None and cell:
            row.append("".join(c.content for c in tok.children or []))
        elif tok.type in ("th_open", "td_open"):
            cell = True
        elif tok.type in ("th_close", "td_close"):
            cell = False
        elif tok.type == "table_close":
            row = None
    return tables


def md_list_items(text: str) -> list[str]:
    items, depth = [], 0
    for tok in MD.parse(text):
        depth += tok.type == "list_item_open"
        depth -= tok.type == "list_item_close"
        if depth and tok.type == "inline":
            items.append("".join(c.content for c in tok.children or []))
    return items


def _rich(renderable, width) -> str:
    console = Console(width=width, no_color=True, highlight=False, file=io.StringIO())
    with console.capture() as cap:
        console.print(renderable)
    return cap.get()


# ---- properties ---------------------------------------------------------------------------
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reports())
@example({"metric_names": None, "checkpoints": [{"metrics": 1.0}]})  # found in CI: not a dict
def test_every_renderer_renders_every_report(report):
    for width in (None, 80):
        _rich(render.rich_table(report, width=width), width or 200)
        _rich(render.rich_panel(report, width=width), width or 200)
    _rich(render.rich_table(report, width=80, wide=True), 300)
    # JSON: strict (no NaN), and what it holds reads back
    text = render.to_json(report)
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    # CSV: one row per checkpoint, every row as long as the header
    rows = list(csv.reader(io.StringIO(render.to_csv(report))))
    assert len(rows) == 1 + len(cells.checkpoints(report))
    assert {len(r) for r in rows} == {len(rows[0])}
    # Markdown and the step summary: the table reads back cell for cell
    md = render.to_markdown(report)
    assert render.step_summary(report) == md
    head, body = checkpoint_table(report)
    tables = md_tables(md)
    if body:
        assert tables[0] == [head] + body
    else:
        assert "No checkpoint was analysed." in md
    items = md_list_items(md)
    assert items[0].startswith("Verdict:") and items[1].startswith("Recommendation:")


@settings(max_examples=100, deadline=None)
@given(any_text)
def test_escaped_text_reads_back_as_itself(text):
    md = f"| {escape(text)} |\n|---|\n| {escape(text)} |\n\nx {escape(text)}\n"
    want = cells.clean(text)
    assert md_tables(md) == [[[want], [want]]]
    para = [t for t in MD.parse(md) if t.type == "inline"][-1]
    assert "".join(c.content for c in para.children) == f"x {want}".strip()


def test_clean_text_is_one_visible_line():
    assert cells.clean("a\nb\x1b[31m \u2028c\td  ") == "a\\x0ab\\x1b[31m \\u2028c\\x09d"
    assert cells.clean("\ud800") == "\\ud800"  # a lone surrogate (undecodable file name)


@pytest.mark.parametrize(
    "v, text",
    [(None, "-"), (float("nan"), "nan"), (float("inf"), "inf"), (float("-inf"), "-inf"),
     (True, "yes"), (False, "no"), (3, "3"), (0.123456, "0.1235"), ("generalising",
     "generalising"), ([1, 2], "[1, 2]")],
)  # fmt: skip
def test_cell_text_of_each_kind_of_value(v, text):
    assert cells.num(v) == text


def test_percentages_only_for_accuracies_in_range():
    assert cells.pct(0.5) == "50.0%" and cells.pct(1) == "100.0%"
    assert cells.pct(1.5) == "1.5" and cells.pct(1e308) == "1e+308" and cells.pct("x") == "x"


# ---- the shipped example's report ---------------------------------------------------------
def golden(robust=False, gates=True) -> dict:
    report = json.loads(GOLDEN.read_text())
    if robust:
        for i, ck in enumerate(report["checkpoints"]):
            ck["adversarial_accuracy"] = 0.9 * (ck["test_accuracy"] or 0) + 1e-3 * i
    if gates:
        report["gates"] = [
            {"rule": "test_accuracy >= 0.9", "value": 0.968, "threshold": 0.9, "passed": True},
            {"rule": "verdict at least generalising", "value": "generalising",
             "threshold": "generalising", "passed": True},
            {"rule": "centroid_alignment drop from baseline <= 0.1", "value": 0.04,
             "threshold": 0.4, "passed": False, "baseline": 0.5, "drop": 0.46, "max_drop": 0.1},
        ]  # fmt: skip
    return report


def test_markdown_of_the_example_is_a_table_with_the_intended_cells():
    report = golden()
    md = render.to_markdown(report)
    head = md.splitlines()[4]
    assert "\\|mu\\|" in head and "\\|J\\|\\_F" in head
    table, gates = md_tables(md)
    assert table[0] == ["step", "train acc", "test acc", "cent. align", "jac. align",
                        "jac. align full", "|mu|", "|J|_F", "PC1", "erank", "verdict"]  # fmt: skip
    assert len(table) == 1 + len(report["checkpoints"])
    last = report["checkpoints"][-1]
    assert table[-1][:3] == ["200", "100.0%", f"{last['test_accuracy']:.1%}"]
    assert table[-1][7] == f"{last['metrics']['jacobian_norm']:.4g}"
    assert table[-1][-1] == "generalising"
    assert gates[0] == ["gate", "result"]
    assert gates[2] == ["verdict at least generalising: value generalising, threshold "
                        "generalising", "pass"]  # fmt: skip
    assert gates[3] == ["centroid_alignment drop from baseline <= 0.1: value 0.04, baseline 0.5, "
                        "drop 0.46", "FAIL"]  # fmt: skip
    items = md_list_items(md)
    assert items[0] == "Verdict: generalising"
    assert items[1] == f"Recommendation: {report['recommendation']['action']}: " + report[
        "recommendation"]["reason"]  # fmt: skip


def test_a_verdict_gate_renders_in_every_format():
    """The crash of issue 12: a verdict gate's value is a string."""
    report = golden()
    for width in (80, None):
        text = _rich(render.rich_panel(report, width=width), 120)
        assert "value generalising, threshold generalising" in text
    assert "value generalising" in render.to_markdown(report)
    assert json.loads(render.to_json(report))["gates"][1]["value"] == "generalising"


# ---- the terminal table -------------------------------------------------------------------
def _tokens(text: str) -> set[str]:
    return set(text.split())


@pytest.mark.parametrize("width", [60, 80, 100, 120, 200])
@pytest.mark.parametrize("robust", [False, True])
def test_table_fits_the_width_and_cuts_no_number(width, robust):
    report = golden(robust=robust)
    out = _rich(render.rich_table(report, width=width), width)
    out += _rich(render.rich_panel(report, width=width), width)
    assert max(len(line) for line in out.splitlines()) <= width
    assert "…" not in out
    columns, _, hidden = render.fit_columns(report, width)
    shown = [c["header"] for c in columns]
    assert shown[:3] == ["step", "train acc", "test acc"] and shown[-1] == "verdict"
    assert ("adv. acc" in shown) == robust
    assert "cent. align" in shown  # the key metric survives at 60 columns
    tokens = _tokens(out)
    for col in columns[:-1]:
        assert set(col["cells"]) <= tokens, col["header"]  # every number whole
    if width >= 120 and not robust:
        assert not hidden
    if hidden:
        assert "not shown" in out


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "step": st.integers(0, 10**9),
                "train_accuracy": st.one_of(st.none(), st.floats(0, 1)),
                "test_accuracy": st.one_of(st.none(), st.floats(0, 1)),
                "metrics": st.fixed_dictionaries(
                    {
                        k: st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))
                        for k in cells.HEADERS
                    }
                ),
                "verdict": st.sampled_from(VERDICTS),
                "inferred": st.booleans(),
            }
        ),  # fmt: skip
        min_size=1,
        max_size=6,
    ),
    st.sampled_from([60, 80, 100, 120, 200]),
)
def test_generated_tables_fit_any_width(cks, width):
    report = {"path": "runs/x", "metric_names": list(cells.HEADERS), "checkpoints": cks}
    out = _rich(render.rich_table(report, width=width), width)
    assert max(len(line) for line in out.splitlines()) <= width
    columns, _, _ = render.fit_columns(report, width)
    tokens = _tokens(out)
    for col in columns[:-1]:
        assert set(col["cells"]) <= tokens, col["header"]


def test_wide_shows_every_metric_of_the_report():
    report = golden()
    report["metric_names"].append("my_metric")
    for ck in report["checkpoints"]:
        ck["metrics"]["my_metric"] = 1.0
    columns, _, hidden = render.fit_columns(report, 60, wide=True)
    headers = [c["header"] for c in columns]
    assert not hidden and "my_metric" in headers and "centroid_inner" in headers


def test_sparkline_fits_its_room():
    assert len(render.sparkline(list(range(500)), limit=20)) == 20
    assert render.sparkline([None, float("nan"), "x"]) == ""
    assert render.sparkline([1.0, 2.0]) == "▁█"


def test_json_has_no_nan():
    report = golden()
    report["checkpoints"][0]["metrics"]["jacobian_norm"] = math.nan
    report["checkpoints"][1]["metrics"]["jacobian_norm"] = -math.inf
    back = json.loads(render.to_json(report))
    assert back["checkpoints"][0]["metrics"]["jacobian_norm"] is None
    assert back["checkpoints"][1]["metrics"]["jacobian_norm"] is None


def test_width_arithmetic_is_what_rich_renders():
    from alignctl.report.render_table import _build, _width

    columns, widths, _ = render.fit_columns(golden(robust=True), None)
    for n in range(1, len(columns) + 1):
        out = _rich(_build(columns[:n], widths[:n]), 10_000)
        assert max(len(x.rstrip()) for x in out.splitlines()) <= _width(columns[:n], widths[:n])
        assert len(out.splitlines()[0]) == _width(columns[:n], widths[:n])
