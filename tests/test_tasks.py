"""Tasks and data loading: labels against their definitions, determinism with pinned values
(the same data on every machine), the MNIST/CIFAR readers on tiny generated files, and every
error path of load_data."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from alignctl.errors import InputError
from alignctl.runs.tasks import TASKS, Dataset, load_data


def write_idx(path: Path, arr: np.ndarray, gz: bool = False) -> None:
    """Independent IDX writer: magic 0 0 8 ndim, big-endian int32 dims, uint8 data."""
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    with (gzip.open if gz else open)(path, "wb") as f:  # closed: 3.12's GzipFile buffers
        f.write(data)


def make_mnist(root: Path, n_train=10, n_test=6, gz=False):
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) * 3) % 10,
    }
    for name, a in arrays.items():
        write_idx(root / (name + (".gz" if gz else "")), a, gz)
    return arrays


def make_cifar(folder: Path, per_batch=3, n_test=5):
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name in names:
        n = n_test if name.startswith("test") else per_batch
        labels = rng.integers(0, 10, n)
        pix = rng.integers(0, 256, (n, 3072))
        rec = np.concatenate([labels[:, None], pix], axis=1).astype(np.uint8)
        rec.tofile(folder / name)
        out[name] = (labels, pix)
    return out


FILE_FIXTURES = {"mnist": make_mnist, "cifar10": make_cifar}


@pytest.mark.parametrize("task", TASKS.names())
def test_every_task_builds_with_small_params(task, tmp_path):
    params = TASKS.get(task).test_params
    if task in FILE_FIXTURES:
        FILE_FIXTURES[task](tmp_path / params["root"])
    ds = load_data({"task": task, **params}, tmp_path)
    assert isinstance(ds, Dataset) and ds.name == task
    assert len(ds.x_train) == len(ds.y_train) > 0 and len(ds.x_test) == len(ds.y_test) > 0
    assert ds.y_train.dtype == torch.int64
    assert ds.x_train.dtype in (torch.float32, torch.int64)
    again = load_data({"task": task, **params}, tmp_path)
    assert torch.equal(ds.x_train, again.x_train) and torch.equal(ds.y_test, again.y_test)
    if ds.input_range is not None:
        lo, hi = ds.input_range
        assert lo <= float(ds.x_train.min()) and float(ds.x_train.max()) <= hi


def test_xor_cluster_definition_and_pinned_values():
    ds = load_data({"task": "xor-cluster"}, Path("."))
    assert ds.x_train.shape == (400, 40000) and ds.x_test.shape == (400, 40000)
    assert ds.num_classes == 1 and ds.meta == {"noise_std": 0.2, "noise_from": 2}
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert set(x[:, :2].unique().tolist()) == {-1.0, 1.0}
        assert torch.allclose(x[:, 2:].abs(), torch.tensor(0.05))
        assert torch.equal(y, (x[:, 0] * x[:, 1]).long())
    assert ds.y_train[:10].tolist() == [-1, -1, -1, -1, -1, 1, 1, 1, 1, 1]
    assert float(ds.x_train.sum()) == pytest.approx(54.6, abs=1e-3)


def test_sparse_parity_definition_and_pinned_values():
    ds = load_data({"task": "sparse-parity"}, Path("."))
    assert ds.x_train.shape == (1000, 40) and ds.x_test.shape == (1000, 40)
    assert set(ds.x_train.unique().tolist()) == {0.0, 1.0}  # 0/1 encoding, not +-1
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert torch.equal(y, (x[:, 0] + x[:, 1] + x[:, 2]).long() % 2)
    assert ds.y_train[:10].tolist() == [0, 1, 1, 1, 1, 0, 1, 0, 1, 1]
    assert float(ds.x_train.sum()) == 20037.0
    other = load_data({"task": "sparse-parity", "seed": 1}, Path("."))
    assert not torch.equal(ds.x_train, other.x_train)


def test_modular_addition_onehot_covers_all_pairs():
    ds = load_data({"task": "modular-addition"}, Path("."))
    p = 61
    assert ds.x_train.shape == (1860, 2 * p) and ds.num_classes == p
    x = torch.cat([ds.x_train, ds.x_test])
    y = torch.cat([ds.y_train, ds.y_test])
    a, b = x[:, :p].argmax(1), x[:, p:].argmax(1)
    assert torch.equal(x.sum(1), torch.full((p * p,), 2.0))
    assert torch.equal(y, (a + b) % p)
    assert len(set(zip(a.tolist(), b.tolist(), strict=True))) == p * p
    assert ds.y_train[:10].tolist() == [56, 40, 45, 22, 10, 27, 48, 14, 3, 15]


def test_modular_addition_tokens_transformer_setup():
    ds = load_data(
        {"task": "modular-addition", "p": 113, "train_fraction": 0.3, "encoding": "tokens"}, "."
    )
    assert ds.x_train.dtype == torch.int64 and ds.x_train.shape == (3830, 3)
    assert ds.x_test.shape == (113 * 113 - 3830, 3) and ds.input_range is None
    assert torch.equal(ds.x_train[:, 2], torch.full((3830,), 113))
    assert torch.equal(ds.y_train, (ds.x_train[:, 0] + ds.x_train[:, 1]) % 113)
    assert ds.x_train[:4].tolist() == [[37, 1, 113], [23, 9, 113], [2, 43, 113], [7, 34, 113]]


def test_digits_split_and_pinned_values():
    from sklearn.datasets import load_digits

    ds = load_data({"task": "digits"}, Path("."))
    assert ds.x_train.shape == (1438, 64) and ds.x_test.shape == (359, 64)
    assert ds.y_train[:10].tolist() == [7, 7, 1, 9, 8, 5, 0, 4, 5, 6]
    # every sample is a real digit with its real label
    raw = load_digits()
    lookup = {tuple(r): t for r, t in zip(raw.data / 16.0, raw.target, strict=True)}
    for x, y in zip(ds.x_test[:20].double().numpy(), ds.y_test[:20].tolist(), strict=True):
        assert lookup[tuple(x)] == y
    small = load_data({"task": "digits", "n_train": 100}, Path("."))
    assert len(small.x_train) == 100 and torch.equal(small.x_test, ds.x_test)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reader(tmp_path, gz):
    arrays = make_mnist(tmp_path / "data", gz=gz)
    ds = load_data({"task": "mnist", "root": "data", "n_train": 10, "n_test": 6}, tmp_path)
    assert ds.x_train.shape == (10, 784) and ds.input_range == (0.0, 1.0)
    # the full test set keeps the file's order
    want = arrays["t10k-images-idx3-ubyte"].reshape(6, -1) / 255.0
    np.testing.assert_allclose(ds.x_test.numpy(), want, rtol=1e-6)
    assert ds.y_test.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    # a random subset: each sample keeps its own label
    sub = load_data({"task": "mnist", "root": "data", "n_train": 4, "n_test": 6}, tmp_path)
    imgs = arrays["train-images-idx3-ubyte"].reshape(10, -1) / 255.0
    for x, y in zip(sub.x_train.numpy(), sub.y_train.tolist(), strict=True):
        (i,) = np.nonzero(np.abs(imgs - x).max(1) < 1e-6)[0]
        assert arrays["train-labels-idx1-ubyte"][i] == y
    img = load_data(
        {"task": "mnist", "root": "data", "n_train": 4, "n_test": 6, "flatten": False}, tmp_path
    )
    assert img.x_train.shape == (4, 1, 28, 28)


def test_mnist_errors(tmp_path):
    with pytest.raises(InputError, match="train-images-idx3-ubyte not found .*never downloads"):
        load_data({"task": "mnist", "root": "nowhere"}, tmp_path)
    make_mnist(tmp_path / "m")
    with pytest.raises(InputError, match="asked for 1024 samples, but 1..10"):
        load_data({"task": "mnist", "root": "m"}, tmp_path)
    (tmp_path / "m" / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x0d\x01junk")
    with pytest.raises(InputError, match="bad magic number"):
        load_data({"task": "mnist", "root": "m", "n_train": 2, "n_test": 2}, tmp_path)


def test_cifar10_reader(tmp_path):
    files = make_cifar(tmp_path / "c" / "cifar-10-batches-bin")
    ds = load_data({"task": "cifar10", "root": "c", "n_train": 15, "n_test": 5}, tmp_path)
    assert ds.x_train.shape == (15, 3, 32, 32) and ds.num_classes == 10
    labels, pix = files["test_batch.bin"]
    # a random permutation of the test records, each image with its label
    for x, y in zip(ds.x_test, ds.y_test.tolist(), strict=True):
        flat = (x.reshape(-1).numpy() * 255).round()
        (i,) = np.nonzero((pix == flat).all(1))[0]
        assert labels[i] == y
    (tmp_path / "c" / "cifar-10-batches-bin" / "test_batch.bin").write_bytes(b"\x01" * 100)
    with pytest.raises(InputError, match="not a multiple"):
        load_data({"task": "cifar10", "root": "c", "n_train": 2, "n_test": 2}, tmp_path)
    with pytest.raises(InputError, match="data_batch_1.bin"):
        load_data({"task": "cifar10", "root": "elsewhere"}, tmp_path)


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return {"path": path.name}


def test_data_files_round_trip(tmp_path):
    x, y = np.random.default_rng(0).normal(size=(6, 3)), np.array([0, 1, 2, 0, 1, 2])
    spec = _npz(tmp_path / "d.npz", x_train=x, y_train=y.astype(float), x_test=x[:2], y_test=y[:2])
    ds = load_data({**spec, "num_classes": 3, "input_range": [-5, 5]}, tmp_path)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.y_train.tolist() == y.tolist() and ds.name == "d" and ds.num_classes == 3
    assert ds.input_range == (-5.0, 5.0)
    from safetensors.torch import save_file

    t = {"x_train": torch.tensor(x), "y_train": torch.tensor(y)}
    save_file(t, tmp_path / "d.safetensors")
    torch.save({**t, "x_train": torch.arange(6).view(6, 1)}, tmp_path / "d.pt")
    st = load_data({"path": "d.safetensors"}, tmp_path)
    assert st.x_test is None and st.num_classes is None
    torch.testing.assert_close(st.x_train, torch.tensor(x, dtype=torch.float32))
    pt = load_data({"path": str(tmp_path / "d.pt")}, Path("/"))
    assert pt.x_train.dtype == torch.int64  # integer inputs stay tokens


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x_train": np.zeros((3, 2))}, "missing 'y_train'"),
        ({"x_train": np.zeros((3, 2)), "y_train": np.zeros(4)}, "x_train has 3 samples but y_"),
        ({"x_train": np.zeros((3, 2)), "y_train": np.array([0, 0.5, 1])}, "fractional"),
        ({"x_train": np.full((3, 2), np.nan), "y_train": np.zeros(3)}, "NaN or infinite"),
        ({"x_train": np.zeros((0, 2)), "y_train": np.zeros(0)}, "no samples"),
        ({"x_train": np.zeros((3, 2)), "y_train": np.zeros(3), "x_test": np.zeros(1)}, "both"),
        ({"X_train": np.zeros((3, 2)), "y_train": np.zeros(3)}, "unknown key.*X_train; valid"),
        ({"x_train": np.zeros((3, 2)), "y_train": np.array(["a", "b", "c"])}, "non-numeric"),
    ],
)
def test_data_file_errors(tmp_path, arrays, message):
    spec = _npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(InputError, match=message) as info:
        load_data(spec, tmp_path)
    assert "bad.npz" in str(info.value)


def test_data_file_refusals(tmp_path):
    objs = np.empty(3, dtype=object)
    np.savez(tmp_path / "obj.npz", x_train=objs, y_train=np.zeros(3))
    with pytest.raises(InputError, match="object array"):
        load_data({"path": "obj.npz"}, tmp_path)
    with pytest.raises(InputError, match="not found"):
        load_data({"path": "missing.npz"}, tmp_path)
    (tmp_path / "d.csv").write_text("1,2\n")
    with pytest.raises(InputError, match="unsupported data file type"):
        load_data({"path": "d.csv"}, tmp_path)
    (tmp_path / "junk.pt").write_bytes(b"not a pickle")
    with pytest.raises(InputError, match="junk.pt: cannot read data file"):
        load_data({"path": "junk.pt"}, tmp_path)


def test_task_and_section_errors(tmp_path):
    with pytest.raises(InputError, match="unknown task 'mnits'; valid: .*mnist"):
        load_data({"task": "mnits"}, tmp_path)
    with pytest.raises(InputError, match=r"unknown parameter\(s\) n_trian; valid: .*n_train"):
        load_data({"task": "xor-cluster", "n_trian": 3}, tmp_path)
    with pytest.raises(InputError, match="exactly one"):
        load_data({"task": "digits", "path": "x.npz"}, tmp_path)
    with pytest.raises(InputError, match="n_train must be int, got 'a'"):
        load_data({"task": "xor-cluster", "n_train": "a"}, tmp_path)
    with pytest.raises(InputError, match="eps must be float, got True"):
        load_data({"task": "xor-cluster", "eps": True}, tmp_path)
    with pytest.raises(InputError, match="missing required parameter.*root"):
        load_data({"task": "mnist"}, tmp_path)
    with pytest.raises(InputError, match="encoding must be"):
        load_data({"task": "modular-addition", "p": 5, "encoding": "binary"}, tmp_path)
    with pytest.raises(InputError, match="unknown key.*shuffle; valid: path"):
        load_data({"path": "x.npz", "shuffle": True}, tmp_path)


def test_data_factories(tmp_path):
    (tmp_path / "mk.py").write_text(
        "import numpy as np, torch\n"
        "from alignctl.runs.tasks import Dataset\n"
        "def pair(n=4):\n    return np.ones((n, 2)), np.arange(n)\n"
        "def full():\n    return Dataset(torch.ones(2, 3), torch.tensor([0, 1]), num_classes=2)\n"
        "def bad():\n    return {'x': 1}\n"
        "def mismatch():\n    return np.ones((3, 2)), np.arange(2)\n"
        "def boom():\n    raise KeyError('k')\n"
    )
    ds = load_data({"factory": "mk.py:pair", "kwargs": {"n": 5}}, tmp_path)
    assert ds.x_train.shape == (5, 2) and ds.x_test is None
    assert load_data({"factory": "mk.py:full"}, tmp_path).num_classes == 2
    with pytest.raises(InputError, match="must return .* got dict"):
        load_data({"factory": "mk.py:bad"}, tmp_path)
    with pytest.raises(InputError, match="data factory mk.py:mismatch: x_train has 3 samples"):
        load_data({"factory": "mk.py:mismatch"}, tmp_path)
    with pytest.raises(InputError, match="data factory mk.py:boom failed: KeyError"):
        load_data({"factory": "mk.py:boom"}, tmp_path)
    with pytest.raises(InputError, match="not found"):
        load_data({"factory": "nope.py:f"}, tmp_path)
