"""``alignctl.Dataset(...)`` is checked when made, by the rules a data file gets: one table of
cases run through both routes (an .npz file read by ``alignctl analyze`` through its config,
and ``alignctl.Dataset`` in Python, as NumPy arrays, tensors and lists) must give the same
accept/refuse outcome, and a Hypothesis property: any generated arrays make a Dataset or raise
InputError, never another exception.

Before: ``Dataset`` was a plain record (x and y of different lengths, NaN inputs, labels 0.5
were all kept, to fail later or not at all); the file route crashed with an internal error on
big-endian arrays and a huge num_classes, and read a 0-d label array as one sample."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import alignctl
from alignctl.cli.assemble import app
from alignctl.errors import InputError
from alignctl.runs.tasks import load_data

X = np.arange(12, dtype=np.float32).reshape(4, 3) / 12
Y = np.array([0, 1, 2, 0])
NET = (
    "import torch\n"
    "def make():\n    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3, 3))\n"
)


def _case(ok: bool, extras: dict | None = None, **arrays):
    arrays = {"x_train": X, "y_train": Y, **arrays}
    return ok, {k: v for k, v in arrays.items() if v is not None}, extras or {}


CASES = {
    # accepted: every kind of number a model takes
    "float32": _case(True),
    "float64": _case(True, x_train=X.astype(np.float64)),
    "float16": _case(True, x_train=X.astype(np.float16)),
    "big-endian": _case(True, x_train=X.astype(">f4"), y_train=Y.astype(">i8")),
    "integer inputs (tokens)": _case(True, x_train=np.arange(12).reshape(4, 3)),
    "uint8 inputs": _case(True, x_train=np.arange(12, dtype=np.uint8).reshape(4, 3)),
    "bool inputs": _case(True, x_train=X > 0.5),
    "(n, 1, 3) inputs": _case(True, x_train=X[:, None, :]),
    "integral float labels": _case(True, y_train=Y.astype(np.float32)),
    "(n, 1) labels": _case(True, y_train=Y[:, None]),
    "uint16 labels": _case(True, y_train=Y.astype(np.uint16)),
    "test split": _case(True, x_test=X[:2], y_test=Y[:2]),
    "num_classes": _case(True, {"num_classes": 3}),
    "input_range": _case(True, {"input_range": [0, 1]}),
    # refused: each mistake, one InputError
    "fewer labels": _case(False, y_train=Y[:3]),
    "more labels": _case(False, y_train=np.r_[Y, 1]),
    "fractional labels": _case(False, y_train=Y + 0.5),
    "NaN label": _case(False, y_train=np.array([0, 1, np.nan, 0])),
    "infinite label": _case(False, y_train=np.array([0, 1, np.inf, 0])),
    "bool labels": _case(False, y_train=Y > 0),
    "label -3": _case(False, y_train=np.array([0, 1, -3, 0])),
    "label -1 beside 2": _case(False, y_train=np.array([0, -1, 2, 1])),
    "test label -2": _case(False, x_test=X[:2], y_test=np.array([0, -2])),
    "complex labels": _case(False, y_train=Y.astype(np.complex64)),
    "string labels": _case(False, y_train=np.array(["a", "b", "c", "d"])),
    "(n, 2) labels": _case(False, y_train=np.zeros((4, 2), np.int64)),
    "0-d labels": _case(False, x_train=X[:1], y_train=np.array(1)),
    "0-d inputs": _case(False, x_train=np.array(1.0), y_train=Y[:1]),
    "no samples": _case(False, x_train=X[:0], y_train=Y[:0]),
    "samples of no elements": _case(False, x_train=np.zeros((4, 0), np.float32)),
    "NaN input": _case(False, x_train=np.where(X > 0.5, np.nan, X)),
    "infinite input": _case(False, x_train=np.where(X > 0.5, -np.inf, X)),
    "beyond float32": _case(False, x_train=X.astype(np.float64) * 1e300),
    "complex inputs": _case(False, x_train=X.astype(np.complex64)),
    "long double inputs": _case(False, x_train=X.astype(np.longdouble)),
    "uint64 beyond int64": _case(False, x_train=np.full((4, 3), 2**63 + 1, np.uint64)),
    "x_test without y_test": _case(False, x_test=X[:2]),
    "y_test without x_test": _case(False, y_test=Y[:2]),
    "test of other features": _case(False, x_test=np.zeros((2, 4), np.float32), y_test=Y[:2]),
    "test tokens, train floats": _case(False, x_test=np.zeros((2, 3), np.int64), y_test=Y[:2]),
    "test labels fewer": _case(False, x_test=X[:2], y_test=Y[:1]),
    "label beyond num_classes": _case(False, {"num_classes": 2}),
    "num_classes 0": _case(False, {"num_classes": 0}),
    "num_classes 2.0": _case(False, {"num_classes": 2.0}),
    "num_classes 1e30": _case(False, {"num_classes": 10**30}),
    "input_range reversed": _case(False, {"input_range": [1, 0]}),
    "input_range NaN": _case(False, {"input_range": [float("nan"), 1]}),
}


def _cli_accepts(tmp_path, arrays: dict, extras: dict) -> bool:
    """The file route: the arrays in an .npz, analysed by `alignctl analyze --config`."""
    np.savez(tmp_path / "d.npz", **arrays)
    (tmp_path / "net.py").write_text(NET)
    cfg = {"model": {"factory": "net.py:make"}, "data": {"path": "d.npz", **extras}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3, 3))
    torch.save(net.state_dict(), tmp_path / "run" / "checkpoints" / "step_0.pt")
    r = CliRunner().invoke(app, ["analyze", str(tmp_path / "run"),
                                 "--config", str(tmp_path / "c.yaml"), "--json", "-"])  # fmt: skip
    assert r.exit_code in (0, 2), (r.exit_code, r.output)
    if r.exit_code == 2:
        assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
        assert "internal error" not in r.stderr, r.stderr
    return r.exit_code == 0


def _forms(arrays: dict) -> list[dict]:
    """The same arrays as NumPy arrays, tensors (where torch holds the dtype) and lists."""
    out = [arrays, {k: v.tolist() for k, v in arrays.items()}]
    try:
        out.append({k: torch.from_numpy(v.astype(v.dtype.newbyteorder("="))) for k, v in
                    arrays.items()})  # fmt: skip
    except TypeError:  # long double, complex256: no tensor of them exists
        pass
    return out


def _api_accepts(arrays: dict, extras: dict) -> bool:
    outcomes = set()
    for form in _forms(arrays):
        try:
            alignctl.Dataset(**form, **extras)
            outcomes.add(True)
        except InputError as e:
            assert "\n" not in str(e) and str(e).startswith("Dataset: "), str(e)
            outcomes.add(False)
    assert len(outcomes) == 1, f"arrays, tensors and lists disagree: {outcomes}"
    return outcomes.pop()


@pytest.mark.parametrize("name", list(CASES))
def test_the_file_route_and_the_api_accept_and_refuse_the_same(tmp_path, name):
    ok, arrays, extras = CASES[name]
    assert _api_accepts(arrays, extras) is ok
    assert _cli_accepts(tmp_path, arrays, extras) is ok
    if ok:  # and what they accept is the same data
        ds = alignctl.Dataset(**arrays, **extras)
        read = load_data({"path": "d.npz", **extras}, tmp_path)
        for key in ("x_train", "y_train", "x_test", "y_test"):
            a, b = getattr(ds, key), getattr(read, key)
            assert (a is None and b is None) or (a.dtype == b.dtype and torch.equal(a, b)), key
        assert ds.num_classes == read.num_classes and ds.input_range == read.input_range


def test_a_refusal_names_the_field_and_the_mistake():
    with pytest.raises(InputError, match=r"^Dataset: x_train has 4 samples but y_train has 3$"):
        alignctl.Dataset(X, Y[:3])
    with pytest.raises(InputError, match=r"^Dataset: y_test contains NaN or infinite values$"):
        alignctl.Dataset(X, Y, X[:1], [float("nan")])
    with pytest.raises(InputError, match=r"^Dataset: x_train is a sparse_coo tensor"):
        alignctl.Dataset(torch.tensor(X).to_sparse(), Y)
    with pytest.raises(InputError, match=r"^Dataset: x_train is a meta tensor"):
        alignctl.Dataset(torch.empty(4, 3, device="meta"), Y)
    with pytest.raises(InputError, match=r"^Dataset: x_train is not a rectangular array"):
        alignctl.Dataset([[1.0, 2.0], [3.0]], [0, 1])
    ds = alignctl.Dataset(np.arange(6).reshape(3, 2), [1, 0, 1], num_classes=np.int64(2))
    assert ds.x_train.dtype == torch.int64 and ds.num_classes == 2  # token ids stay tokens


# ---- the property: any arrays make a Dataset or one InputError, nothing else ----

DTYPES = ["bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
          "float16", "float32", "float64", "longdouble", ">f4", ">i8", "complex64", "<U2",
          "datetime64[s]", "object"]  # fmt: skip
VALUES = st.sampled_from([0, 1, 2, -1, -3, 0.5, 255, 2**40, float("nan"), float("inf"), 1e300])


@st.composite
def arrays(draw, n=None):
    shape = draw(st.lists(st.integers(0, 3), min_size=0, max_size=3).map(tuple))
    if n is not None and shape and draw(st.booleans()):
        shape = (n, *shape[1:])
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    fill = draw(st.lists(VALUES, min_size=1, max_size=4))
    flat = [fill[i % len(fill)] for i in range(int(np.prod(shape)))]
    with np.errstate(all="ignore"):
        try:
            a = np.array(flat, dtype=np.float64).astype(dtype).reshape(shape)
        except (ValueError, TypeError, OverflowError):
            a = np.zeros(shape, dtype)
    form = draw(st.sampled_from(["numpy", "tensor", "list"]))
    if form == "list":
        return a.tolist()
    if form == "tensor":
        try:
            return torch.from_numpy(a.astype(a.dtype.newbyteorder("=")))
        except TypeError:
            return a
    return a


OTHER = st.one_of(st.none(), st.integers(-2, 5), st.booleans(), st.floats(), st.text(max_size=2),
                  st.lists(st.floats(), max_size=3), st.just(10**30))  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_every_dataset_constructs_or_raises_one_input_error(data):
    x = data.draw(arrays())
    n = len(x) if hasattr(x, "__len__") and np.ndim(x) else None
    y = data.draw(arrays(n))
    test = data.draw(st.none() | st.tuples(arrays(), arrays()) | st.tuples(arrays(), st.none()))
    x_test, y_test = test or (None, None)
    try:
        ds = alignctl.Dataset(x, y, x_test, y_test, num_classes=data.draw(OTHER),
                              input_range=data.draw(OTHER))  # fmt: skip
    except InputError as e:
        assert str(e).startswith("Dataset: ") and "\n" not in str(e), str(e)
        return
    assert ds.x_train.dtype in (torch.float32, torch.int64) and ds.y_train.dtype == torch.int64
    assert ds.x_train.ndim >= 1 and len(ds.x_train) == len(ds.y_train) >= 1
    assert not ds.x_train.is_floating_point() or bool(torch.isfinite(ds.x_train).all())
