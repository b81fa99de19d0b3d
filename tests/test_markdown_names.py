"""compare on held-out reports: its Markdown tables keep their cells whatever the run
folders are called, and the figure link of ``--markdown`` + ``--plot`` stays an image for any
file name (spaces, brackets, parentheses)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

from markdown_it import MarkdownIt
from test_figures import report
from test_render import md_list_items, md_tables

from alignctl.cli.common import figure_link
from alignctl.report.compare import comparison, series, to_markdown

ODD = ["a|b", "`x`", "<i>", "c_d*", "[l](u)", "名前 ~~s~~", "&amp;"]


def test_compare_markdown_keeps_cells_for_odd_run_names():
    # two baselines: their labels carry the run folders' names, into every table row
    runs = [report(f"/runs/{name}", [0, 10, 20], seed=i) for i, name in enumerate(ODD[:2])]
    runs += [report(f"/runs/{'|'.join(ODD[2:])}", [0, 15], seed=3)]
    cmp = comparison(series(runs))
    text = to_markdown(cmp, "fig.png")
    (table,) = md_tables(text)
    assert {len(row) for row in table} == {len(table[0])}
    assert [row[1] for row in table[1:4]] == [r["label"] for r in cmp["runs"]]
    assert all(name in " ".join(r["label"] for r in cmp["runs"]) for name in ODD)
    items = md_list_items(text)
    assert [i.split(": ")[0] for i in items] == [r["label"] for r in cmp["runs"]]


def test_figure_link_is_an_image_for_any_file_name(tmp_path):
    md = MarkdownIt("commonmark")
    for name in ["my fig [1].png", "d (x)/f).png", "<a> b.svg", "naïve #1.png"]:
        plot = tmp_path / "out" / name
        link = figure_link(plot, str(tmp_path / "report.md"))
        tokens = md.parseInline(f"![fig]({link})")[0].children
        (image,) = [t for t in tokens if t.type == "image"]
        assert Path(unquote(image.attrs["src"])) == Path("out") / name


def test_compare_reads_metrics_of_reports_without_metric_names():
    """A hand-made or older report without ``metric_names``: its checkpoints' metrics are
    compared and drawn (they were dropped: accuracies only, empty panels refused)."""
    from alignctl.report.figures.trajectories import available

    a, b = report("/r/a", [0, 10]), report("/r/b", [0, 10], seed=1)
    for r in (a, b):
        del r["metric_names"]
    cmp = comparison(series([a, b]))
    assert cmp["quantities"][2:] == ["centroid_alignment", "jacobian_norm", "jacobian_erank"]
    assert "jacobian_norm" in available(series([a, b]))
