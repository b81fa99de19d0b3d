"""``alignctl geometry`` as a library call: the paper's Figure 1 for a run, without graph-tool.

For each chosen checkpoint: the linear regions and decision regions on the slice through three
samples of the run's data (:func:`alignctl.geometry.regions.regions_on_slice`), and the samples'
centroids mu = J^T 1 (:func:`alignctl.jacobian`, float64). Networks that are not piecewise
linear get the decision regions and a field of centroids projected onto the plane instead.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from alignctl.errors import InputError

IMAGE_TASKS = ("digits", "mnist", "cifar10")
FIELD = 11  # centroid-field arrows per side, for networks without linear regions


def image_shape(data, override=None):
    """The shape thumbnails are drawn in: ``override``; (C, H, W) / (H, W) inputs as they are;
    flat inputs of the image tasks as the square they came from; else None (not images)."""
    if override is not None:
        return tuple(override)
    if data.x_train.is_floating_point():
        shape = tuple(data.x_train.shape[1:])
        if len(shape) in (2, 3):
            return shape
        side = math.isqrt(shape[0]) if len(shape) == 1 else 0
        if data.name in IMAGE_TASKS and side * side == shape[0]:
            return (side, side)
    return None


def default_samples(y: torch.Tensor) -> list[int]:
    """The first sample of each of the first three classes met (first three if fewer)."""
    picked, seen = [], set()
    for i, c in enumerate(y.tolist()):
        if c not in seen:
            picked.append(i)
            seen.add(c)
        if len(picked) == 3:
            return picked
    return list(range(min(3, len(y))))


def _checkpoint(run, step: int | None):
    refs = run.checkpoints
    if step is None:
        return refs[-1]
    for ref in refs:
        if ref.step == step:
            return ref
    steps = ", ".join(str(r.step) for r in refs)
    raise InputError(f"no checkpoint at step {step}; the run has steps {steps}")


def _field(model, x3, part, n: int = FIELD):
    """Centroids on a coarse n x n grid, projected onto the plane: (points, vectors)."""
    from alignctl.geometry.measure import jacobian
    from alignctl.geometry.regions import plane_coordinates, plane_points
    from alignctl.report.figures.slice import arrow_scale

    g = torch.linspace(float(part.a[0]) + 0.05, float(part.a[-1]) - 0.05, n, dtype=torch.float64)
    pts = plane_points(x3, g, g)
    if hasattr(model, "embed") and hasattr(model, "forward_embedded"):
        model = _Embedded(model)  # the points are embeddings already
    mu = jacobian(model, pts, dtype=torch.float64).sum(1)
    vec = plane_coordinates(x3, mu).numpy()
    bb, aa = np.meshgrid(g.numpy(), g.numpy(), indexing="ij")
    return np.stack([aa.ravel(), bb.ravel()], 1), arrow_scale(vec, 0.6 * float(g[1] - g[0]))


def slice_panels(run, steps, samples, *, split="train", resolution=300, pad=0.3):
    """(SlicePanels, summary dicts) for the checkpoints at ``steps`` (None: the last)."""
    from alignctl.evaluation.accuracy import predict
    from alignctl.geometry.measure import jacobian
    from alignctl.geometry.regions import plane_coordinates, regions_on_slice
    from alignctl.report.figures.slice import SlicePanel, arrow_scale
    from alignctl.runs.checkpoints import load_weights, read_checkpoint

    data = run.load_data()
    xs, ys = (data.x_train, data.y_train) if split == "train" else (data.x_test, data.y_test)
    if xs is None:
        raise InputError(f"the data has no {split} split")
    idx = default_samples(ys) if samples is None else list(samples)
    if len(idx) != 3 or len(set(idx)) != 3 or not all(0 <= i < len(xs) for i in idx):
        raise InputError(f"--samples needs three different indices in 0..{len(xs) - 1}")
    refs = [_checkpoint(run, s) for s in (steps or [None])]
    model = run.build_model().eval()
    x3, panels, summary = xs[idx], [], []
    for ref in refs:
        state, _ = read_checkpoint(ref)
        load_weights(model, state, ref.path.name)
        del state
        part = regions_on_slice(model, x3, resolution=resolution, pad=pad)
        mu = jacobian(model, x3, dtype=torch.float64).sum(1)  # (3, d) = J^T 1
        flat3 = _lifted(model, x3)
        arrows = arrow_scale(plane_coordinates(flat3, mu).numpy())
        field = None if part.piecewise_linear else _field(model, flat3, part)
        acc = _accuracies(model, data, predict)
        unit = "step" if ref.step is None else f"step {ref.step}"
        what = f"{part.n_regions} linear regions on a {resolution}x{resolution} grid"
        what = what if part.piecewise_linear else part.note
        panels.append(SlicePanel(
            title=f"{unit}: {acc}\n{what}", a=part.a.numpy(), b=part.b.numpy(),
            region=part.region.numpy(), label=part.label.numpy(), inputs=flat3.numpy(),
            centroids=mu.numpy(), arrows=arrows, sample_labels=ys[idx].tolist(), field=field,
        ))  # fmt: skip
        summary.append({"checkpoint": ref.name, "step": ref.step, "samples": idx,
                        "piecewise_linear": part.piecewise_linear, "note": part.note,
                        "regions": part.n_regions, "resolution": resolution,
                        "centroids": mu.tolist()})  # fmt: skip
    return panels, summary


class _Embedded(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, e):
        return self.model.forward_embedded(e)


def _lifted(model, x3: torch.Tensor) -> torch.Tensor:
    """The samples where the slice lives: embedded for token models, else as they are."""
    if hasattr(model, "embed") and hasattr(model, "forward_embedded"):
        with torch.no_grad():
            return model.embed(x3).detach().double()
    return x3.double()


def _accuracies(model, data, predict) -> str:
    from alignctl.evaluation.losses import accuracy

    with torch.no_grad():
        parts = [f"train {accuracy(predict(model, data.x_train, 'cpu'), data.y_train):.0%}"]
        if data.x_test is not None and len(data.x_test):
            parts.append(f"test {accuracy(predict(model, data.x_test, 'cpu'), data.y_test):.0%}")
    return ", ".join(parts)


def geometry_figure(run, path, *, steps=None, samples=None, split="train", resolution=300,
                    pad=0.3, shape=None) -> list[dict]:  # fmt: skip
    """Draw the slice figure of ``run`` to ``path`` (.png/.svg/.pdf); returns the summary."""
    from alignctl.report.figures import check_format, save
    from alignctl.report.figures.slice import slice_figure

    check_format(path)
    panels, summary = slice_panels(run, steps, samples, split=split, resolution=resolution,
                                   pad=pad)  # fmt: skip
    data = run.load_data()
    img = image_shape(data, shape) if not data.x_train.dtype == torch.long else None
    if img is not None and math.prod(img) != panels[0].centroids.shape[1]:
        raise InputError(f"image shape {img} does not hold {panels[0].centroids.shape[1]} values")
    name = run.root.name
    fig = slice_figure(panels, img, f"{name}: slice through samples {summary[0]['samples']}")
    save(fig, path)
    return summary
