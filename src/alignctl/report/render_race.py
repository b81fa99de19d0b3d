"""Rendering a race result (``alignctl race``): Markdown for files and pipes, a rich table for
the terminal. Both show the p-value with the test that gave it (paired t-test when every run
grokked, log-rank under censoring: :func:`alignctl.train.race_table.compare`)."""

from __future__ import annotations

from alignctl.report.cells import field, is_real, num
from alignctl.report.paper import paper_epochs, paper_row
from alignctl.report.render_markdown import escape, table

# how a speed-up with censored runs reads (race.bound)
MARK = {"lower": ">=", "upper": "<=", "unknown": "~"}
HEAD = ["regulariser", "mean epochs", "speed-up", "p", "test", "mean seconds",
        "wall-clock speed-up", "grokked"]  # fmt: skip


def _fixed(v, digits: int, suffix: str = "") -> str:
    return f"{float(v):.{digits}f}{suffix}" if is_real(v) else num(v)


def head(result: dict) -> list[str]:
    """The columns: HEAD, and "paper epochs" when the task is a row of the paper's Table 1."""
    return HEAD + (["paper epochs"] if paper_row(field(result, "task")) else [])


def _test(r: dict) -> str:
    """The test behind p; results written before the field existed used the paired t-test
    whenever no run was censored."""
    test = field(r, "test")
    if test is None and field(r, "p_value") is not None and not field(r, "censored"):
        return "paired t-test"
    return num(test)


def rows(result: dict) -> list[list[str]]:
    """The table's cells as plain text, one row per regulariser."""
    out = []
    task = field(result, "task")
    with_paper = paper_row(task) is not None
    for r in field(result, "rows") or []:
        p = field(r, "p_value")
        paper = paper_epochs(task, field(r, "reg"))
        out.append([
            num(field(r, "reg")),
            f"{_fixed(field(r, 'mean_epochs'), 1)} ± {_fixed(field(r, 'std_epochs'), 1)}",
            MARK.get(field(r, "bound"), "") + _fixed(field(r, "speedup"), 2, "x"),
            "-" if p is None else f"{p:.2g}" if is_real(p) else num(p),
            _test(r),
            _fixed(field(r, "mean_seconds"), 2),
            _fixed(field(r, "wall_speedup"), 2, "x"),
            f"{num(field(r, 'grokked'))}/{num(field(r, 'runs'))}",
        ] + ([num(paper) if paper is not None else "-"] if with_paper else []))  # fmt: skip
    return out


def heading(result: dict) -> str:
    first, seeds = field(result, "seed_offset", 0), field(result, "seeds", 0)
    last = first + seeds - 1 if is_real(first) and is_real(seeds) else "?"
    return (f"Task {num(field(result, 'task'))}, seeds {num(first)}..{num(last)}, "
            f"max {num(field(result, 'max_epochs'))} epochs")  # fmt: skip


def footnote(result: dict) -> str | None:
    notes = []
    row = paper_row(field(result, "task"))
    if row:
        notes.append(
            f"Paper (Table 1, row {row['row']}, 25 seeds): GrokAlign {row['speedup']:.2f}x "
            f"faster in epochs, {row['wall_speedup']:.2f}x in wall-clock time (Table 4)."
        )
    if any(field(r, "censored") for r in field(result, "rows") or []):
        notes.append(
            "Runs that did not grok count at max epochs (censored). A speed-up marked >= is a "
            "lower bound (censored baseline runs), <= an upper bound (censored runs of that "
            "regulariser), ~ neither (both censored). With censored runs p comes from the "
            "log-rank test (right-censored at max epochs, unpaired), not the paired t-test."
        )
    return " ".join(notes) or None


def markdown_table(result: dict) -> str:
    lines = [escape(heading(result)), ""]
    cols = head(result)
    lines += table(cols, rows(result), right=[False] + [True] * (len(cols) - 1))
    note = footnote(result)
    if note:
        lines += ["", escape(note)]
    return "\n".join(lines) + "\n"


def rich_table(result: dict, width: int | None = None):
    """The terminal table (:func:`fitted`) at ``width`` columns (None: every column)."""
    return fitted(result, width)[0]


def fitted(result: dict, width: int | None):
    """(the terminal table with its footnote, the width it takes): fitted to ``width`` as
    analyze's and compare's are (:func:`alignctl.report.fit_table.fit_table`): numbers are
    never cut or folded; the regulariser, mean epochs and speed-up always stay, regulariser
    names and the test wrap, the other columns are taken in order while they fit and the rest
    are named below the table (``--markdown -`` and ``--json`` have them all)."""
    from rich.console import Group
    from rich.text import Text

    from alignctl.report.fit_table import fit_table

    table, need, _ = fit_table(head(result), rows(result), width,
                               keep=("regulariser", "mean epochs", "speed-up"),
                               wraps=("regulariser", "test"), title=heading(result),
                               hint="--markdown - has all")  # fmt: skip
    note = footnote(result)
    return (Group(table, Text(note)) if note else table), need
