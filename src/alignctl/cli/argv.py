"""The command line as typed, before typer parses it: ``--verbose`` anywhere, empty arguments
refused, and the NAME placeholders every command's help shows (:mod:`alignctl.cli.assemble`)."""

from __future__ import annotations


def verbose_first(args: list[str]) -> list[str]:
    """``--verbose`` is the app's option; accept it after the command too (before ``--``)."""
    end = args.index("--") if "--" in args else len(args)
    if "--verbose" not in args[:end]:
        return args
    return ["--verbose"] + [a for i, a in enumerate(args) if i >= end or a != "--verbose"]


def empty_argument(args: list[str]) -> str | None:
    """Why an empty or blank argument is refused, or None. No option or path of alignctl takes
    one, and it is what an unset shell variable gives: ``--json "$OUT"`` dropped the output
    and exited 0, ``analyze ""`` analysed the working directory."""
    end = args.index("--") if "--" in args else len(args)
    for i, arg in enumerate(args[:end]):
        name, eq, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        if eq and not value.strip():
            what = f"{name} was given an empty value"
        elif not name and not arg.strip():
            what = "an empty argument" + (f" after {args[i - 1]}" if i else "")
        else:
            continue
        return f"{what} (an unset shell variable?): give a value or leave it out"
    return None


# placeholders by parameter name, the same in every command; others get their NAME
METAVARS = {
    "path": "PATH", "out": "DIR", "resume": "DIR", "config": "FILE", "model": "SPEC",
    "data": "SPEC", "split": "train|test", "device": "auto|cpu|cuda|mps",
    "metrics": "fast|standard|full|a,b,...", "samples": "N", "batch_size": "N", "seeds": "N",
    "epochs": "N", "max_epochs": "N", "workers": "N", "pgd_steps": "N", "eps": "E",
    "alpha": "A", "json_out": "FILE|-", "csv_out": "FILE|-", "markdown": "FILE|-",
    "plot": "FILE.png", "fail_under": "METRIC=VALUE", "fail_over": "METRIC=VALUE",
    "max_drop": "METRIC=DELTA", "max_rise": "METRIC=DELTA", "baseline": "REPORT.json",
    "require_verdict": "VERDICT",
    "reg": "NAME[:k=v,...]", "save_every": "N", "eval_every": "N", "save_schedule": "log:K",
    "weights": "raw|ema", "state_key": "KEY", "dist": "METRIC", "at": "S1,S2",
    "output": "KEY|INDEX", "max_memory": "SIZE", "threads": "N", "sketch": "K", "cache": "DIR",
    "panels": "P1,P2,...", "title": "TEXT", "seed_offset": "N", "render": "RESULT.json",
    "regs": "R1,R2,...", "task": "TASK", "seed": "N",
}  # fmt: skip


def whole_placeholders(params) -> None:
    """``--samples N`` rather than typer's ``<int range>``/``<list[str]>``/``<bool>`` type
    labels (an explicit ``metavar=`` on an option wins); repeatable options say so."""
    for p in params:
        if p.metavar is None and not getattr(p, "is_flag", False):
            p.metavar = METAVARS.get(p.name, p.name.upper())
        if getattr(p, "nargs", 1) != 1 and hasattr(p, "display_type_rich"):
            p.display_type_rich = lambda ctx: None  # "RUN..." says it, not "<list[Path]>"
        if getattr(p, "multiple", False) and p.help and "repeat" not in p.help.lower():
            p.help = f"{p.help.rstrip()} Repeatable."
