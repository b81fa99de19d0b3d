"""Linear regions on a 2-D slice against networks whose regions are known in closed form, and
local complexity against a brute-force loop over neurons and vertices in float64."""

import itertools

import numpy as np
import pytest
import torch
from torch import nn

import alignctl
from alignctl.errors import InputError
from alignctl.geometry.metrics.local_complexity import RADIUS, directions, local_complexity
from alignctl.geometry.regions import plane_points, regions_on_slice

PAD = 0.3


def _lines(net: nn.Sequential, x3: torch.Tensor) -> np.ndarray:
    """Each hidden unit's line c0 + c1 a + c2 b = 0 on the plane x(a, b), (H, 3)."""
    w, b = net[0].weight.double(), net[0].bias.double()
    xi, xj, xk = x3.double()
    return torch.stack([w @ xi + b, w @ (xj - xi), w @ (xk - xi)], 1).detach().numpy()


def arrangement_cells(lines: np.ndarray, lo: float, hi: float) -> int:
    """Cells of a line arrangement in general position inside the square [lo, hi]^2:
    1 + (lines crossing the square) + (intersection points inside it)."""
    corners = np.array([[1, a, b] for a in (lo, hi) for b in (lo, hi)])
    vals = lines @ corners.T  # (H, 4)
    crossing = [i for i in range(len(lines)) if vals[i].min() < 0 < vals[i].max()]
    inside = 0
    for i, j in itertools.combinations(crossing, 2):
        m = np.array([lines[i, 1:], lines[j, 1:]])
        a, b = np.linalg.solve(m, -np.array([lines[i, 0], lines[j, 0]]))
        inside += lo < a < hi and lo < b < hi
    return 1 + len(crossing) + inside


def _relu_net(seed: int, d: int, hidden: int, classes: int = 3) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, classes))


def grid_sign_vectors(lines: np.ndarray, grid: np.ndarray) -> int:
    """Distinct sign vectors of the lines over the grid points: the cells the grid sees."""
    b, a = np.meshgrid(grid, grid, indexing="ij")
    vals = lines[:, :1, None] + lines[:, 1:2, None] * a + lines[:, 2:3, None] * b
    return len({tuple(col) for col in (vals > 0).reshape(len(lines), -1).T})


@pytest.mark.parametrize(
    "seed,d,hidden", [(0, 4, 5), (1, 6, 7), (2, 3, 6), (4, 10, 8), (5, 2, 9), (6, 20, 12)]
)
def test_one_hidden_layer_regions_are_the_line_arrangement(seed, d, hidden):
    """Closed form on nets whose cells are all wider than the grid spacing; on every net the
    ids equal the cells the grid sees (sign vectors computed independently)."""
    net = _relu_net(seed, d, hidden)
    x3 = torch.randn(3, d, generator=torch.Generator().manual_seed(seed + 100))
    lines = _lines(net, x3)
    got = regions_on_slice(net, x3, resolution=500, pad=PAD)
    assert got.piecewise_linear and got.note == ""
    assert got.n_regions == grid_sign_vectors(lines, got.a.numpy())
    assert got.n_regions == arrangement_cells(lines, -PAD, 1 + PAD)


def test_leaky_relu_and_inplace_relu_give_the_same_partition():
    torch.manual_seed(4)
    a = nn.Sequential(nn.Linear(5, 6), nn.ReLU(inplace=True), nn.Linear(6, 2))
    b = nn.Sequential(nn.Linear(5, 6), nn.LeakyReLU(0.1), nn.Linear(6, 2))
    b.load_state_dict(a.state_dict())
    x3 = torch.randn(3, 5)
    ra, rb = regions_on_slice(a, x3, resolution=200), regions_on_slice(b, x3, resolution=200)
    assert torch.equal(ra.region, rb.region)
    assert ra.n_regions == arrangement_cells(_lines(a, x3), -PAD, 1 + PAD)


def test_centroid_of_each_region_is_its_affine_maps_column_sum():
    """Inside the region of pattern s, f(x) = W2 diag(s) (W1 x + b1) + b2, so its centroid is
    W1^T diag(s) W2^T 1; alignctl.jacobian's J^T 1 at a point of each region must equal it."""
    net = _relu_net(5, 4, 6).double()
    x3 = torch.randn(3, 4, dtype=torch.float64)
    part = regions_on_slice(net, x3, resolution=120)
    pts = plane_points(x3, part.a, part.b)
    ids = part.region.reshape(-1)
    first = torch.tensor([int((ids == r).nonzero()[0]) for r in ids.unique()])
    x = pts[first]
    mu = alignctl.jacobian(net, x, dtype=torch.float64).sum(1)  # (regions, d)
    w1, b1, w2 = net[0].weight, net[0].bias, net[2].weight
    s = (x @ w1.T + b1 > 0).double()  # (regions, H)
    want = (s * (w2.sum(0))) @ w1  # W1^T diag(s) W2^T 1, row-wise
    torch.testing.assert_close(mu, want.detach(), rtol=1e-12, atol=1e-12)
    assert len(set(map(tuple, s.tolist()))) == len(first)  # one pattern per region id


def test_maxpool_cnn_partition_is_finer_than_any_single_layer():
    torch.manual_seed(6)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(2 * 3 * 3, 3))  # fmt: skip
    x3 = torch.randn(3, 1, 6, 6)
    part = regions_on_slice(net, x3, resolution=150)
    assert part.piecewise_linear and part.n_regions > 1
    no_pool = nn.Sequential(*list(net)[:2])  # regions of the first ReLU only
    coarse = regions_on_slice(no_pool, x3, resolution=150)
    assert part.n_regions >= coarse.n_regions


def test_smooth_and_hidden_nonlinearities_are_reported():
    torch.manual_seed(7)
    tanh = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2))
    part = regions_on_slice(tanh, torch.randn(3, 4), resolution=60)
    assert not part.piecewise_linear and "Tanh" in part.note and part.n_regions == 0

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 5), nn.Linear(5, 2)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    part = regions_on_slice(Functional(), torch.randn(3, 4), resolution=60)
    assert not part.piecewise_linear and "not nn modules" in part.note
    with pytest.raises(InputError, match="one line"):
        x = torch.randn(1, 4)
        regions_on_slice(tanh, torch.cat([x, 2 * x, 3 * x]))


# --- local complexity ------------------------------------------------------------------------


def brute_local_complexity(net: nn.Sequential, x: torch.Tensor, n_dir: int = 8) -> np.ndarray:
    """For each sample, each vertex x +- r u_p, each ReLU neuron: a Python loop in float64."""
    net = net.double()
    u = directions(x[0].numel(), n_dir).numpy()
    out = []
    for xi in x.double():
        flat = xi.reshape(-1).numpy()
        r = RADIUS * np.linalg.norm(flat)
        vertices = [flat + s * r * u[p] for p in range(len(u)) for s in (1, -1)]
        signs: dict[tuple[int, int], set] = {}
        for vert in vertices:
            h = torch.tensor(vert).reshape(xi.shape)[None]
            for k, layer in enumerate(net):
                if isinstance(layer, nn.ReLU):
                    for j, z in enumerate(h.reshape(-1).tolist()):
                        signs.setdefault((k, j), set()).add(z > 0)
                h = layer(h)
        out.append(sum(len(s) > 1 for s in signs.values()))
    return np.array(out, dtype=float)


@pytest.mark.parametrize(
    "factory,shape",
    [
        (lambda: nn.Sequential(nn.Linear(6, 30), nn.ReLU(), nn.Linear(30, 3)), (6,)),
        (
            lambda: nn.Sequential(
                nn.Linear(5, 20), nn.ReLU(), nn.Linear(20, 20), nn.ReLU(), nn.Linear(20, 1)
            ),
            (5,),
        ),  # fmt: skip
        (
            lambda: nn.Sequential(
                nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 16, 4)
            ),
            (2, 4, 4),
        ),  # fmt: skip
    ],
)
def test_local_complexity_matches_brute_force(factory, shape):
    torch.manual_seed(8)
    net = factory()
    x = torch.randn(7, *shape) * 0.3  # near the origin, where boundaries crowd
    want = brute_local_complexity(net, x)
    got = alignctl.measure(net.double(), x.double(), metrics=["local_complexity"])
    np.testing.assert_array_equal(got["local_complexity"].numpy(), want)
    assert want.sum() > 0  # the test sees boundaries
    again = alignctl.measure(net.double(), x.double(), metrics=["local_complexity"], batch_size=2)
    assert torch.equal(again["local_complexity"], got["local_complexity"])  # seeded, batch-free


def test_local_complexity_counts_maxpool_windows_and_rejects_smooth_nets():
    torch.manual_seed(9)
    pool = nn.Sequential(nn.MaxPool1d(2), nn.Flatten(), nn.Linear(4, 2))
    x = torch.randn(5, 1, 8, dtype=torch.float64)
    lc = local_complexity(pool.double(), x, radius=10.0)
    assert (lc > 0).any() and (lc <= 4).all()  # at most one change per window
    tanh = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    with pytest.raises(InputError, match="Tanh"):
        alignctl.measure(tanh, torch.randn(4, 3), metrics=["local_complexity"])


def test_local_complexity_is_opt_in():
    net = _relu_net(0, 4, 5)
    assert "local_complexity" not in alignctl.measure(net, torch.randn(3, 4))


# --- exact arrangements, general position not assumed -----------------------------------------


def euler_cells(lines, lo, hi) -> int:
    """Faces inside the box [lo, hi]^2 cut by lines (c0, c1, c2) in exact rational arithmetic:
    the planar graph of the box's sides and the clipped lines has F = E - V + 1 inner faces
    (Euler), so concurrent and parallel lines count right; a line touching the box in a
    point adds nothing."""
    from fractions import Fraction as Fr

    lo, hi = Fr(lo), Fr(hi)
    inside = lambda p: lo <= p[0] <= hi and lo <= p[1] <= hi  # noqa: E731
    segs = {}
    for n, (c0, c1, c2) in enumerate(lines):
        ends = {(e, -(c0 + c1 * e) / c2) for e in (lo, hi) if c2} | {
            (-(c0 + c2 * e) / c1, e) for e in (lo, hi) if c1
        }
        ends = {p for p in ends if inside(p)}
        if len(ends) >= 2:
            segs[n] = ends
    for i, j in itertools.combinations(list(segs), 2):
        (a0, a1, a2), (b0, b1, b2) = lines[i], lines[j]
        det = a1 * b2 - a2 * b1
        if det:
            p = ((a2 * b0 - a0 * b2) / det, (a0 * b1 - a1 * b0) / det)
            if inside(p):
                segs[i].add(p)
                segs[j].add(p)
    corners = {(x, y) for x in (lo, hi) for y in (lo, hi)}
    on_sides = corners | {p for s in segs.values() for p in s if lo in p or hi in p}
    verts = on_sides | {p for s in segs.values() for p in s}
    side_edges = sum(
        len([p for p in on_sides if p[axis] == v]) - 1 for axis in (0, 1) for v in (lo, hi)
    )
    edges = side_edges + sum(len(s) - 1 for s in segs.values())
    return edges - len(verts) + 1


def _exact_lines(net, x3):
    from fractions import Fraction as Fr

    w, b = net[0].weight.tolist(), net[0].bias.tolist()
    xi, xj, xk = ([Fr(v) for v in x.tolist()] for x in x3)
    out = []
    for wr, br in zip(w, b, strict=True):
        wr = [Fr(v) for v in wr]
        dot = lambda v: sum(p * q for p, q in zip(wr, v, strict=True))  # noqa: E731, B023
        out.append((dot(xi) + Fr(br), dot(xj) - dot(xi), dot(xk) - dot(xi)))
    return out


def test_regions_of_concurrent_and_parallel_neurons_match_the_exact_arrangement():
    """Integer weights and inputs (float64 arithmetic exact): five neurons' lines through x_i,
    one parallel to another; and random nets with biases (lines in general position)."""
    g = torch.Generator().manual_seed(9)
    net = nn.Sequential(nn.Linear(4, 7), nn.ReLU(), nn.Linear(7, 3)).double()
    x3 = torch.randint(-3, 4, (3, 4), generator=g).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.randint(-4, 5, (7, 4), generator=g).double())
        net[0].bias.copy_(-(net[0].weight @ x3[0]))  # every line through x_i = (0, 0)
        net[0].weight[5] = net[0].weight[4]  # parallel to neuron 4, through (0.5, 0)
        net[0].bias[5] = net[0].bias[4] - 0.5 * (net[0].weight[4] @ (x3[1] - x3[0]))
    lines = _exact_lines(net, x3)
    assert euler_cells(lines, -PAD, 1 + PAD) == regions_on_slice(net, x3, resolution=301).n_regions
    for seed, d, hidden in [(11, 3, 7), (12, 8, 10), (13, 5, 14)]:
        torch.manual_seed(seed)
        net = _relu_net(seed, d, hidden).double()
        x3 = torch.randn(3, d, generator=torch.Generator().manual_seed(7 * seed)).double()
        want = euler_cells(_exact_lines(net, x3), -PAD, 1 + PAD)
        assert regions_on_slice(net, x3, resolution=400).n_regions == want
