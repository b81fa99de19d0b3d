"""Drawing the paper's Figure 1: a 2-D slice through three inputs with the network's linear
regions (shaded by predicted class, one shade per region, thin dark boundaries), the decision
boundary (red) and the three samples' centroids mu = J^T 1: thumbnails under the slice for
image inputs, else arrows of their projection onto the slice plane (scaled per panel).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alignctl.report.figures import pyplot

_CLASS = np.array(
    [
        [0.56, 0.74, 0.86],
        [0.99, 0.75, 0.5],
        [0.6, 0.84, 0.6],
        [0.95, 0.6, 0.6],
        [0.77, 0.69, 0.84],
        [0.77, 0.61, 0.58],
        [0.97, 0.71, 0.82],
        [0.8, 0.8, 0.8],
        [0.86, 0.86, 0.55],
        [0.55, 0.85, 0.88],
    ]
)  # fmt: skip  (tab10, lightened)
_NAMES = ("$x_i$", "$x_j$", "$x_k$")


@dataclass
class SlicePanel:
    """One slice to draw. region (R, R) ids or -1; label (R, R) classes; a, b (R,) grid;
    inputs (3, ...) and centroids (3, d) of the samples; arrows (3, 2): the centroids'
    coordinates in the plane; field: (points (m, 2), vectors (m, 2)) or None."""

    title: str
    a: np.ndarray
    b: np.ndarray
    region: np.ndarray
    label: np.ndarray
    inputs: np.ndarray
    centroids: np.ndarray
    arrows: np.ndarray
    sample_labels: list
    field: tuple | None = None


def region_image(region: np.ndarray, label: np.ndarray, classes=None) -> np.ndarray:
    """RGB (R, R, 3): the class colour, a shade per region, dark region boundaries, red
    decision boundary (where the class changes between neighbouring grid points). ``classes``
    (sorted): the classes the figure shows, coloured in that order (default: by class index),
    so that two of them share a colour only when a figure shows more than the palette holds."""
    rank = label if classes is None else np.searchsorted(classes, label)
    rgb = _CLASS[rank % len(_CLASS)].copy()
    if (region >= 0).all():
        shade = 0.78 + 0.22 * ((region * 0.6180339887) % 1.0)  # golden-ratio spread of shades
        rgb *= shade[..., None]
        edge = _edges(region)
        rgb[edge] = 0.5 * rgb[edge] + 0.5 * 0.2  # half-tone lines: dense partitions stay legible
    boundary = _edges(label)
    boundary[1:] |= boundary[:-1]  # two grid points wide
    boundary[:, 1:] |= boundary[:, :-1]
    rgb[boundary] = (0.85, 0.05, 0.05)
    return rgb.clip(0, 1)


def _edges(ids: np.ndarray) -> np.ndarray:
    """Grid points whose id differs from the next point along a or b: (R, R) bool."""
    e = np.zeros(ids.shape, bool)
    e[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    e[:-1, :] |= ids[:-1, :] != ids[1:, :]
    return e


def _thumbnail(ax, img: np.ndarray, title: str, signed: bool) -> None:
    """A centroid in a diverging map centred on 0 (red +, blue -); an input in grey."""
    v = float(np.abs(img).max()) or 1.0
    if signed:
        ax.imshow(img, cmap="RdBu_r", vmin=-v, vmax=v, interpolation="nearest")
    else:
        ax.imshow(img, cmap="gray_r", interpolation="nearest")
    ax.set_title(title, fontsize=7)
    ax.set_axis_off()


def _as_image(v: np.ndarray, shape) -> np.ndarray:
    img = v.reshape(shape)
    if img.ndim == 3:  # (C, H, W): one channel shows as is, three as their mean
        img = img.mean(0)
    return img


def draw_slice(ax, panel: SlicePanel, image_shape=None, classes=None) -> None:
    from matplotlib import patheffects

    extent = (panel.a[0], panel.a[-1], panel.b[0], panel.b[-1])
    ax.imshow(region_image(panel.region, panel.label, classes), origin="lower", extent=extent,
              interpolation="nearest", aspect="equal")  # fmt: skip
    pts = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    if panel.field is not None:
        (xy, uv) = panel.field
        ax.quiver(xy[:, 0], xy[:, 1], uv[:, 0], uv[:, 1], color="0.3", width=0.003,
                  angles="xy", scale_units="xy", scale=1)  # fmt: skip
    if image_shape is None:
        uv = panel.arrows * _fit(pts, panel.arrows, extent)
        ax.quiver(pts[:, 0], pts[:, 1], uv[:, 0], uv[:, 1], color="k",
                  width=0.008, angles="xy", scale_units="xy", scale=1)  # fmt: skip
    for (x, y), name, lab in zip(pts, _NAMES, panel.sample_labels, strict=True):
        ax.plot(x, y, "o", ms=6, mfc="white", mec="black", mew=1.2)
        text = ax.annotate(f"{name} (class {lab})", (x, y), xytext=(5, -11),
                           textcoords="offset points", fontsize=7)  # fmt: skip
        text.set_path_effects([patheffects.withStroke(linewidth=2.5, foreground="white")])
    ax.set_xlabel("a   along $x_j - x_i$")
    ax.set_ylabel("b   along $x_k - x_i$")
    ax.set_title(panel.title, loc="left", fontsize=8)
    ax.grid(False)


def _fit(pts: np.ndarray, uv: np.ndarray, extent, margin: float = 0.03) -> float:
    """The largest factor <= 1 that keeps every arrow's tip pts + f uv inside the plotted box
    (less ``margin`` of its width), so that no arrowhead is cut off; one factor for all arrows
    keeps their relative lengths."""
    lo = np.array([extent[0], extent[2]]) + margin * (extent[1] - extent[0])
    hi = np.array([extent[1], extent[3]]) - margin * (extent[1] - extent[0])
    f = 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        room = np.where(uv > 0, (hi - pts) / uv, np.where(uv < 0, (lo - pts) / uv, np.inf))
    room = room[np.isfinite(room) & (room > 0)]
    return float(min(f, room.min())) if room.size else f


def arrow_scale(vectors: np.ndarray, longest: float = 0.35) -> np.ndarray:
    """Rescale 2-D vectors so that the longest has length ``longest`` (0 stays 0)."""
    n = float(np.linalg.norm(vectors, axis=-1).max()) if len(vectors) else 0.0
    return vectors * (longest / n) if n > 0 else vectors


def slice_figure(panels: list[SlicePanel], image_shape=None, title: str = ""):
    """A figure with one slice per panel, side by side; thumbnails of the inputs and their
    centroids below each slice when the inputs are images."""
    plt = pyplot()
    k = len(panels)
    rows = 3 if image_shape is not None else 1
    heights = [4.0] + [1.0] * (rows - 1)
    classes = np.unique(np.concatenate([p.label.ravel() for p in panels]))  # one colour each
    fig = plt.figure(figsize=(4.4 * k, sum(heights) + 0.6))
    grid = fig.add_gridspec(rows, 3 * k, height_ratios=heights)
    for p, panel in enumerate(panels):
        draw_slice(fig.add_subplot(grid[0, 3 * p : 3 * p + 3]), panel, image_shape, classes)
        if image_shape is None:
            continue
        for s in range(3):
            inp, mu = (_as_image(v[s], image_shape) for v in (panel.inputs, panel.centroids))
            _thumbnail(fig.add_subplot(grid[1, 3 * p + s]), inp, _NAMES[s], False)
            _thumbnail(fig.add_subplot(grid[2, 3 * p + s]), mu, f"μ({_NAMES[s]})", True)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.legend(handles=_key(panels, image_shape), loc="upper center", ncol=4, frameon=False,
               bbox_to_anchor=(0.5, 0.0), fontsize=7)  # fmt: skip
    return fig


def _key(panels: list[SlicePanel], image_shape) -> list:
    """What the marks mean, for the marks that some panel shows."""
    from matplotlib.lines import Line2D

    key = [Line2D([], [], color=(0.85, 0.05, 0.05), lw=2, label="decision boundary")]
    if any(p.field is None for p in panels):
        key.append(Line2D([], [], color="0.35", lw=0.8,
                          label="linear region boundaries (colour: predicted class)"))  # fmt: skip
    key.append(Line2D([], [], ls="", marker="o", mfc="white", mec="black", label="samples"))
    arrow = dict(ls="", marker=r"$\rightarrow$", ms=10)
    if image_shape is None:
        key.append(Line2D([], [], color="k", label="centroid μ = Jᵀ1, projected", **arrow))
    if any(p.field is not None for p in panels):
        key.append(Line2D([], [], color="0.3", label="centroid field (grid)", **arrow))
    return key
