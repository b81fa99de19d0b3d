"""``alignctl geometry``: the paper's Figure 1 for a run: linear regions, decision boundary
and centroids on the 2-D slice through three samples, at one or two checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from alignctl.cli.common import check_outputs, cli_errors, parse_ints
from alignctl.errors import InputError

Opt = typer.Option
MAX_RESOLUTION = 2000  # 4 million grid points: the outputs (N, classes) stay in memory


@cli_errors
def geometry_cmd(
    path: Annotated[Path, typer.Argument(help="Run directory, checkpoint folder or file.")],
    out: Annotated[str, Opt(metavar="FILE", help="The figure: .png, .svg or .pdf.")],
    step: Annotated[
        int | None, Opt(metavar="S", help="Checkpoint step (default: the last).")
    ] = None,
    steps: Annotated[
        str | None,
        Opt(
            metavar="S1,S2",
            help="Checkpoint steps side by side, e.g. 72,400 (memorising vs aligned).",
        ),
    ] = None,
    samples: Annotated[
        str | None,
        Opt(
            metavar="I,J,K",
            help="Three sample indices of the split (default: first of three classes).",
        ),
    ] = None,
    split: Annotated[str, Opt(help="Samples from the train or test split.")] = "train",
    resolution: Annotated[
        int, Opt(metavar="N", help="Grid points per side of the slice.", min=16, max=MAX_RESOLUTION)
    ] = 300,
    pad: Annotated[
        float,
        Opt(metavar="P", help="Margin around the samples, in slice units.", min=0.0, max=10.0),
    ] = 0.3,
    image_shape: Annotated[
        str | None,
        Opt(
            metavar="H,W|C,H,W",
            help="Draw centroids as images of this shape, e.g. 28,28 or 3,32,32.",
        ),
    ] = None,
    config: Annotated[Path | None, Opt(help="alignctl.yaml to use instead of the run's.")] = None,
    json_out: Annotated[
        str | None, Opt("--json", help="Write region counts and centroids as JSON (- = stdout).")
    ] = None,
) -> None:
    """Figure 1 of the paper: the input-space partition and centroids on a 2-D slice."""
    from alignctl.report.figures import check_format
    from alignctl.report.figures.figure1 import geometry_figure
    from alignctl.runs.run import open_run

    check_format(out)
    if step is not None and steps is not None:
        raise InputError("give --step or --steps, not both")
    chosen = parse_ints(steps, "--steps") or ([step] if step is not None else None)
    if chosen is not None and not 1 <= len(chosen) <= 4:
        raise InputError("--steps takes one to four steps")
    if chosen is not None and len(set(chosen)) != len(chosen):
        raise InputError(f"--steps takes different steps, not {steps}")
    idx = parse_ints(samples, "--samples")
    if idx is not None and len(idx) != 3:
        raise InputError("--samples takes exactly three indices i,j,k")
    if split not in ("train", "test"):
        raise InputError(f"unknown split {split!r}; valid: train, test")
    shape = parse_ints(image_shape, "--image-shape")
    if shape is not None and (len(shape) not in (2, 3) or min(shape) < 1):
        raise InputError(
            f"--image-shape takes two or three positive sizes (H,W or C,H,W), not {image_shape}"
        )
    outputs = check_outputs({"--out": out, "--json": json_out}, files_only=("--out",))
    run = open_run(path, config=config)
    outputs.refuse_inputs(run.input_files())
    summary: list = []
    outputs.call("--out", lambda p: summary.extend(
        geometry_figure(run, p, steps=chosen, samples=idx, split=split, resolution=resolution,
                        pad=pad, shape=shape)))  # fmt: skip
    outputs.finish()
    outputs.write("--json", lambda: json.dumps(summary, indent=2) + "\n")
    outputs.finish()
    if json_out != "-":
        for s in summary:
            grid = f"{s['resolution']}x{s['resolution']} grid"
            what = f"{s['regions']} linear regions seen on a {grid}"
            what = what if s["piecewise_linear"] else s["note"]
            typer.echo(f"step {s['step']}: {what} on the slice through samples {s['samples']}")
        typer.echo(f"wrote {out}")
