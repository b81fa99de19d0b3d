"""A table of text cells fitted to a terminal width, no number cut: the generic form of
``analyze``'s table (:mod:`alignctl.report.render_table`), for ``compare``'s.

Every column keeps its widest cell; columns named ``keep`` always stay and those in ``wraps``
(names, verdicts) wrap at spaces, never narrower than their longest word, only when the kept
columns would not fit whole; a word wider than what is left folds (down to 12 cells). The
others are taken in order while the table fits ``width``, and the rest are named in the
caption. Where the kept columns alone are wider than ``width`` even folded, the table is that
wide (the caller widens its console: rich would fold the numbers otherwise).
"""

from __future__ import annotations

from rich.cells import cell_len
from rich.text import Text

from alignctl.report.render_table import _build, _column, _width

__all__ = ["fit_table"]

FOLD_FLOOR = 12  # a folded name keeps this many cells a line (or its header's width)


def fit_table(header: list[str], rows: list[list[str]], width: int | None, *, keep=(),
              wraps=(), title: str | None = None, hint: str = ""):  # fmt: skip
    """(rich Table, the width it takes, the headers left out) for ``width`` columns (None:
    every column at full width)."""
    cols = [_column(h, [r[i] for r in rows], wraps=h in wraps) for i, h in enumerate(header)]
    chosen = [i for i, h in enumerate(header) if h in keep]
    # the kept columns whole when they fit (a run's label is how its rows are read), else
    # the wrapping ones at their longest word
    whole = width is None or _width(None, [cols[i]["full"] for i in chosen]) <= width

    def widths(idx):
        return [cols[i]["min"] if cols[i]["wraps"] and not whole else cols[i]["full"]
                for i in idx]  # fmt: skip

    if width is None:
        chosen = list(range(len(cols)))
    else:
        for i in range(len(cols)):
            if i not in chosen and _width(None, widths(sorted([*chosen, i]))) <= width:
                chosen.append(i)
    chosen.sort()
    ws = widths(chosen)
    spare = None if width is None else width - _width(None, ws)
    for j, i in enumerate(chosen):  # wrapping columns grow into what is left, in order
        if cols[i]["wraps"]:
            grow = (
                cols[i]["full"] - ws[j]
                if spare is None
                else min(max(spare, 0), cols[i]["full"] - ws[j])
            )
            ws[j] += grow
            spare = None if spare is None else spare - grow
    if spare is not None and spare < 0:  # a word wider than the terminal: fold it
        _fold(cols, chosen, ws, -spare)
    hidden = [h for i, h in enumerate(header) if i not in chosen]
    caption = None
    if hidden:
        caption = f"not shown, to fit {width} columns: {', '.join(hidden)}"
        caption += f" ({hint})" if hint else ""
    table = _build([cols[i] for i in chosen], ws, title=Text(title) if title else None,
                   caption=Text(caption) if caption else None)  # fmt: skip
    return table, _width(None, ws), hidden


def _fold(cols: list[dict], chosen: list[int], ws: list[int], excess: int) -> None:
    """Narrow the wrapping columns among ``chosen`` below their longest word, widest first,
    by up to ``excess`` cells in all (rich folds the word): a run labelled by a 90-character
    folder name made ``compare``'s table 116 wide on a 40-column terminal."""
    for j in sorted((j for j, i in enumerate(chosen) if cols[i]["wraps"]), key=lambda j: -ws[j]):
        floor = max(cell_len(cols[chosen[j]]["header"]), FOLD_FLOOR)
        give = max(0, min(excess, ws[j] - floor))
        ws[j] -= give
        excess -= give
