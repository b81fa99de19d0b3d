"""The Markdown summary of a report (``--markdown``, ``GITHUB_STEP_SUMMARY``): GitHub-flavoured
tables that parse whatever the report holds.

Every piece of report text is escaped (:func:`escape`): characters that Markdown would read as
syntax (``|`` splits table cells even inside code spans, ``*``/``_`` emphasis, backticks,
links, HTML, entities, strikethrough) are backslash-escaped, and control characters and line
breaks are made visible, so each cell reads back as exactly its text (tested with
markdown-it-py on generated reports).
"""

from __future__ import annotations

from alignctl.report.cells import (
    ACCURACIES,
    accuracy_keys,
    checkpoints,
    clean,
    field,
    gate_passed,
    gate_text,
    gates,
    metric,
    metric_columns,
    num,
    pct,
    step,
    step_unit,
    verdict,
)

_SPECIAL = set("\\`*_[]<>|&~!#$")


def escape(text) -> str:
    """Text that Markdown (CommonMark + GFM tables) shows literally, on one line."""
    return "".join("\\" + ch if ch in _SPECIAL else ch for ch in clean(text))


def table(head: list[str], rows: list[list[str]], right: list[bool] | None = None) -> list[str]:
    """A GFM table from plain-text cells (escaped here); ``right``: right-aligned columns."""
    right = right or [False] * len(head)
    lines = ["| " + " | ".join(escape(h) for h in head) + " |",
             "|" + "|".join("---:" if r else "---" for r in right) + "|"]  # fmt: skip
    lines += ["| " + " | ".join(escape(c) for c in row) + " |" for row in rows]
    return lines


def checkpoint_table(report: dict, wide: bool = False) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the per-checkpoint table as plain text (before escaping)."""
    accs = accuracy_keys(report, wide=True)
    cols = metric_columns(report, wide)
    unit = step_unit(report)
    head = [f"step ({unit})" if unit else "step"] + [ACCURACIES[k] for k in accs]
    head += [h for _, h in cols] + ["verdict"]
    rows = [[step(ck)] + [pct(field(ck, k)) for k in accs]
            + [num(metric(ck, k)) for k, _ in cols] + [verdict(ck)]
            for ck in checkpoints(report)]  # fmt: skip
    return head, rows


def to_markdown(report: dict, wide: bool = False) -> str:
    head, rows = checkpoint_table(report, wide)
    where = ", ".join(f"{what}: {num(field(report, k))}"  # a label first: never a list marker
                      for k, what in (("split", "split"), ("n_samples", "samples"),
                                      ("device", "device")))  # fmt: skip
    target = field(report, "target", field(report, "path", ""))  # older reports: the run
    out = [f"### alignctl analyze {escape(target)}", "", escape(where), ""]
    out += table(head, rows, right=[True] * (len(head) - 1) + [False]) if rows else [
        "No checkpoint was analysed."]  # fmt: skip
    rec = field(report, "recommendation")
    inferred = " (inferred)" if field(report, "inferred") is True else ""
    out += ["", f"- **Verdict:** {escape(num(field(report, 'verdict')))}{inferred}",
            f"- **Recommendation:** {escape(num(field(rec, 'action')))}: "
            f"{escape(num(field(rec, 'reason')))}"]  # fmt: skip
    g = gates(report)
    if g:
        out += ["", "| gate | result |", "|---|---|"]
        out += [f"| {escape(gate_text(x))} | {'pass' if gate_passed(x) else '**FAIL**'} |"
                for x in g]  # fmt: skip
    notes = field(report, "notes")
    if isinstance(notes, list) and notes:
        out += [""] + [f"- note: {escape(n)}" for n in notes]
    return "\n".join(out) + "\n"
