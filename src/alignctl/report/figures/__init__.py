"""Figures: run trajectories (one run or several overlaid), per-sample distributions and the
paper's Figure 1 (linear regions and centroids on a 2-D slice).

matplotlib comes from the ``plot`` extra and is imported only when a figure is drawn, always
with the headless Agg backend. Pure library: functions return or save figures, never show them.
"""

from __future__ import annotations

from pathlib import Path

from alignctl.errors import InputError

FORMATS = ("png", "svg", "pdf")
# One colour per run, colour-blind safe (Okabe & Ito), baseline first
COLORS = ["#555555", "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9"]
RC = {
    "font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "legend.fontsize": 7,
    "xtick.labelsize": 7, "ytick.labelsize": 7, "axes.spines.top": False,
    "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.25, "grid.linewidth": 0.5,
    "figure.dpi": 100, "savefig.bbox": "tight", "savefig.pad_inches": 0.05,
}  # fmt: skip


def pyplot(what: str = "--plot"):
    """matplotlib.pyplot on the Agg backend, or InputError with the install hint (``what``
    names the option that needs it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from alignctl.errors import missing_extra

        raise missing_extra(what, "matplotlib", "plot") from None
    plt.rcParams.update(RC)
    return plt


def check_format(path) -> str:
    """The format named by the suffix of ``path`` (png, svg or pdf); a name without a suffix
    (``/dev/stdout``, a pipe, a device) gets PNG; any other suffix is an InputError."""
    fmt = Path(path).suffix.lower().lstrip(".") or "png"
    if fmt not in FORMATS:
        raise InputError(f"{path}: a figure must end in .png, .svg or .pdf")
    return fmt


DPI = 200  # PNG pixels per inch: the 6-8 pt labels need about 200 to stay legible


def save(fig, path, dpi: int = DPI) -> None:
    """Write ``fig`` atomically in the format of ``path``'s suffix, then close it. OSErrors
    propagate: the command's output guard names the option and keeps the old file."""
    from alignctl.runs.atomic import atomic_write

    fmt = check_format(path)
    plt = pyplot()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi))
    finally:
        plt.close(fig)


def finite(v) -> float:
    """A plottable float: None, non-finite values and anything not a number (a hand-edited
    report's "x", true) become NaN (a gap in the line)."""
    import math
    import numbers

    if not isinstance(v, numbers.Real) or isinstance(v, bool):
        return float("nan")
    try:
        v = float(v)
    except OverflowError:  # an integer beyond float's range
        return float("nan")
    return v if math.isfinite(v) else float("nan")


def literal(text) -> str:
    """``text`` as matplotlib draws it verbatim: every ``$`` escaped, so a pair of them is not
    TeX math (a run folder named ``lr$\\frac$`` stopped ``--plot`` with a mathtext parse
    error; ``$1e-3$`` was drawn in italics). matplotlib turns ``\\$`` back into ``$`` outside
    math, so the drawn text is exactly ``text``."""
    return str(text).replace("$", r"\$")
