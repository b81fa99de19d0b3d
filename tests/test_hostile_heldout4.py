"""Hostile files in a run folder someone else sent (issues 3, 11, 16, held out): pickles built
opcode by opcode with torch's own rebuild functions, tensors that hold no dense data, names and
text made to break a terminal or a parser. Each: one ``error:`` line, exit 2, nothing changed,
nothing executed (a payload would create a marker file)."""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from test_checkpoints_hostile import _state, analyze_fails, make_run
from typer.testing import CliRunner

from alignctl.cli.assemble import app

# ------------------------------------------------------------------ pickles, opcode by opcode

P2 = b"\x80\x02"


def G(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def S(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def I(n: int) -> bytes:  # noqa: E743 (the pickle opcode family)
    return b"J" + struct.pack("<i", n)


def T(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def call(fn: bytes, *args: bytes) -> bytes:
    return fn + T(*args) + b"R"


def tensor(key: str, t: torch.Tensor, storage: str = "FloatStorage") -> bytes:
    """``_rebuild_tensor_v2`` of storage record ``key`` (as torch.save writes it)."""
    pid = T(S("storage"), G("torch", storage), S(key), S("cpu"), I(t.numel()))
    shape, stride = T(*map(I, t.shape)), T(*map(I, t.stride()))
    return call(G("torch._utils", "_rebuild_tensor_v2"), pid + b"Q", I(0), shape, stride,
                b"\x89", call(G("collections", "OrderedDict")))  # fmt: skip


def with_attributes(inner: bytes, attrs: dict[str, bytes]) -> bytes:
    """``_rebuild_parameter_with_state(inner, ...)``: torch sets each attribute on the tensor."""
    state = b"}" + b"".join(S(k) + v + b"s" for k, v in attrs.items())
    return call(G("torch._utils", "_rebuild_parameter_with_state"), inner, b"\x89",
                call(G("collections", "OrderedDict")), state)  # fmt: skip


def torch_zip(path: Path, pkl: bytes, records: dict[str, bytes]) -> Path:
    """A torch zip archive (torch.save's own, for its version records) with our data.pkl."""
    buf = io.BytesIO()
    torch.save({}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    prefix = src.namelist()[0].split("/")[0]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name in src.namelist():
            if "/data/" not in name:
                z.writestr(name, pkl if name.endswith("/data.pkl") else src.read(name))
        for key, data in records.items():
            z.writestr(f"{prefix}/data/{key}", data)
    return path


def state_pickle(replace: dict[str, bytes]) -> tuple[bytes, dict[str, bytes]]:
    """A state-dict pickle of the test model, with entries in ``replace`` given as opcodes."""
    body, records = b"}", {}
    for i, (k, v) in enumerate(_state().items()):
        records[str(i)] = v.numpy().tobytes()
        body += S(k) + (replace[k] if k in replace else tensor(str(i), v)) + b"s"
    return P2 + body + b".", records


SHADOW = ("item", "to", "float", "contiguous", "detach", "numpy", "cpu", "clone")


def _only_checkpoint(run: Path) -> Path:
    for p in (run / "checkpoints").iterdir():
        p.unlink()
    return run / "checkpoints" / "step_1.pt"


# ------------------------------------------------------- tensors the pickle gave attributes


def test_attributes_a_pickle_sets_on_a_tensor_never_shadow_its_methods(tmp_path):
    """``_rebuild_parameter_with_state`` (torch's weights-only allowlist) sets any attribute:
    ``item``/``to``/``float`` became ``builtins.set``, and analyze died with "internal error:
    TypeError: set() takes no keyword arguments". The weights are plain; analysed as such."""
    run = make_run(tmp_path / "run")
    first = next(iter(_state()))
    v = _state()[first]
    shadows = {name: G("builtins", "set") for name in SHADOW}
    pkl, records = state_pickle({first: with_attributes(tensor("0", v), shadows)})
    torch_zip(_only_checkpoint(run), pkl, records)
    r = CliRunner().invoke(app, ["analyze", str(run), "--quiet", "--metrics", "fast"])
    assert r.exit_code == 0, (r.stderr, r.exception)


def test_a_step_counter_whose_item_is_shadowed(tmp_path):
    run = make_run(tmp_path / "run")
    body, records = state_pickle({})
    shadows = {"item": G("builtins", "set"), "numel": G("builtins", "set")}
    step = with_attributes(tensor("s", torch.tensor([7]), "LongStorage"), shadows)
    records["s"] = torch.tensor([7]).numpy().tobytes()
    pkl = P2 + b"}" + S("state_dict") + body[2:-1] + b"s" + S("global_step") + step + b"s."
    torch_zip(_only_checkpoint(run), pkl, records)
    r = CliRunner().invoke(app, ["analyze", str(run), "--json", "-", "--metrics", "fast"])
    assert r.exit_code == 0, (r.stderr, r.exception)
    assert '"step": 7' in r.stdout


def test_data_tensors_the_pickle_gave_attributes(tmp_path):
    run = make_run(tmp_path / "run")
    x, y = torch.randn(12, 4), torch.arange(12) % 3
    shadows = {name: G("builtins", "set") for name in SHADOW}
    pkl = (P2 + b"}" + S("x_train") + with_attributes(tensor("x", x), shadows) + b"s"
           + S("y_train") + tensor("y", y, "LongStorage") + b"s.")  # fmt: skip
    torch_zip(run / "data.pt", pkl, {"x": x.numpy().tobytes(), "y": y.numpy().tobytes()})
    cfg = yaml.safe_load((run / "alignctl.yaml").read_text())
    cfg["data"]["path"] = "data.pt"
    (run / "alignctl.yaml").write_text(yaml.safe_dump(cfg))
    r = CliRunner().invoke(app, ["analyze", str(run), "--quiet", "--metrics", "fast"])
    assert r.exit_code == 0, (r.stderr, r.exception)


# ------------------------------------------------------- tensors without dense CPU data

KINDS = {
    "meta": (lambda t: torch.empty_like(t, device="meta"), "meta tensor"),
    "sparse_coo": (lambda t: t.to_sparse(), "sparse_coo tensor"),
    "sparse_csr": (lambda t: t.to_sparse_csr(), "sparse_csr tensor"),
    "quantized": (lambda t: torch.quantize_per_tensor(t, 0.1, 0, torch.qint8), "quantized"),
}


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_weights_without_dense_data_are_refused_in_one_line(tmp_path, kind):
    """Before: "internal error: RuntimeError: Error(s) in loading state_dict ... copy_()
    between dense and sparse Tensors", "this is a bug in alignctl"."""
    make, words = KINDS[kind]
    run = make_run(tmp_path / "run")
    sd = _state()
    first = next(iter(sd))
    torch.save({**sd, first: make(sd[first])}, _only_checkpoint(run))
    err = analyze_fails([str(run)], words, run)
    assert repr(first) in err


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize(
    "key,kind", [(k, v) for k in ("x_train", "y_train") for v in sorted(KINDS)
                 if (k, v) != ("y_train", "sparse_csr")]  # CSR is 2-D only
)  # fmt: skip
def test_data_without_dense_data_is_refused_in_one_line(tmp_path, kind, key):
    make, words = KINDS[kind]
    run = make_run(tmp_path / "run")
    data = {"x_train": torch.randn(12, 4), "y_train": (torch.arange(12) % 3).float()}
    data[key] = make(data[key])
    torch.save(data, run / "data.pt")
    cfg = yaml.safe_load((run / "alignctl.yaml").read_text())
    cfg["data"]["path"] = "data.pt"
    (run / "alignctl.yaml").write_text(yaml.safe_dump(cfg))
    err = analyze_fails([str(run)], words, run)
    assert repr(key) in err


# ------------------------------------------------------- DCP .metadata built by an attacker

MD = "torch.distributed.checkpoint.metadata"


def _dcp_run(root: Path) -> tuple[Path, Path]:
    import warnings

    dcp = pytest.importorskip("torch.distributed.checkpoint")
    run = make_run(root)
    _only_checkpoint(run)
    folder = run / "checkpoints" / "step-5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "assuming the intent is to save in a single process"
        dcp.save({"model": _state(), "step": 5}, checkpoint_id=str(folder), no_dist=True)
    return run, folder


def _metadata(keyops: bytes) -> bytes:
    """NEWOBJ Metadata, BUILD {state_dict_metadata: {<keyops>: BytesStorageMetadata()},
    storage_data: {}}: only allowed globals."""
    entries = b"}" + keyops + G(MD, "BytesStorageMetadata") + b")\x81" + b"s"
    state = b"}" + S("state_dict_metadata") + entries + b"s" + S("storage_data") + b"}s"
    return P2 + G(MD, "Metadata") + b")\x81" + state + b"b."


@pytest.mark.parametrize(
    "size,words",
    [((2**40, 2**40), "impossible size"), ((-1, 4), "impossible size"), ((2**62,), "impossible")],
)
def test_dcp_tensor_sizes_that_cannot_be_allocated(tmp_path, size, words):
    """Before: "internal error: RuntimeError: Storage size calculation overflowed" (or
    "negative dimension"): the reader allocated a tensor of the size the pickle declared."""
    import pickle

    run, folder = _dcp_run(tmp_path / "run")
    meta = pickle.loads((folder / ".metadata").read_bytes())  # our own file: a real Metadata
    first = next(k for k in meta.state_dict_metadata if k.startswith("model."))
    meta.state_dict_metadata[first].size = torch.Size(size)
    (folder / ".metadata").write_bytes(pickle.dumps(meta, protocol=2))
    analyze_fails([str(run)], words, run)


def test_dcp_weights_over_the_read_budget_are_not_allocated(tmp_path, monkeypatch):
    import pickle

    from alignctl.errors import InputError
    from alignctl.runs.checkpoints import CheckpointRef, read_weights

    _, folder = _dcp_run(tmp_path / "run")
    meta = pickle.loads((folder / ".metadata").read_bytes())
    first = next(k for k in meta.state_dict_metadata if k.startswith("model."))
    meta.state_dict_metadata[first].size = torch.Size((2**16, 2**16))  # 16 GiB of float32
    (folder / ".metadata").write_bytes(pickle.dumps(meta, protocol=2))
    monkeypatch.setenv("ALIGNCTL_MAX_READ_BYTES", str(2**30))
    with pytest.raises(InputError, match="16.0 GiB of weights, over the read budget of 1 GiB"):
        read_weights(CheckpointRef(folder, "step-5", None))


@pytest.mark.parametrize(
    "keyops,shown",
    [
        (b")" + b"\x85" * 100_000, "(((((...),),),))"),  # a tuple nested 100,000 deep
        (b"(" + b"K\x01" * 1_000_000 + b"t", "(1, 1, 1, 1, 1, 1, ...)"),  # a million long
    ],
    ids=["deep", "long"],
)
def test_dcp_metadata_keys_are_shown_shortly(tmp_path, keyops, shown):
    """Before: "internal error: RecursionError ... repr" for the deep key, and a 3 MB error
    line for the long one."""
    run, folder = _dcp_run(tmp_path / "run")
    (folder / ".metadata").write_bytes(_metadata(keyops))
    err = analyze_fails([str(run)], "has a key that is not a string", run)
    assert shown in err and len(err) < 500


def test_dcp_metadata_instances_never_initialised(tmp_path):
    """NEWOBJ without BUILD: a Metadata without fields (before: "internal error:
    AttributeError: 'Metadata' object has no attribute 'state_dict_metadata'")."""
    run, folder = _dcp_run(tmp_path / "run")
    (folder / ".metadata").write_bytes(P2 + G(MD, "Metadata") + b")\x81.")
    analyze_fails([str(run)], "does not hold DCP metadata", run)
    index = G(MD, "MetadataIndex") + b")\x81}" + S("fqn") + S("x") + b"s" + S("offset") + b"Ns"
    index += S("index") + b"Nsb"
    storage = b"}" + index + G(MD[:-8] + "filesystem", "_StorageInfo") + b")\x81s"
    entries = b"}" + S("x") + G(MD, "BytesStorageMetadata") + b")\x81s"
    state = b"}" + S("state_dict_metadata") + entries + b"s" + S("storage_data") + storage + b"s"
    (folder / ".metadata").write_bytes(P2 + G(MD, "Metadata") + b")\x81" + state + b"b.")
    analyze_fails([str(run)], "outside its folder", run)  # no relative_path


# ------------------------------------------------------- safetensors headers the library refuses


def _safetensors_with(path: Path, change) -> None:
    import json

    header, offset, data = {}, 0, b""
    for k, v in _state().items():
        raw = v.numpy().tobytes()
        header[k] = {
            "dtype": "F32",
            "shape": list(v.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        offset, data = offset + len(raw), data + raw
    text = change(json.dumps({"__metadata__": {"step": "1"}, **header}).encode())
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


@pytest.mark.parametrize(
    "change,words",
    [
        (lambda h: h.replace(b'"step": "1"', b'"step": [1, 2]'), "__metadata__ is not a mapping"),
        (lambda h: h.replace(b'"step": "1"', b'"step": {"a": 1}'), "__metadata__ is not a mapping"),
        (lambda h: b"\xef\xbb\xbf" + h, "BOM"),
    ],
    ids=["list", "dict", "bom"],
)
def test_safetensors_headers_the_library_refuses_are_refused(tmp_path, change, words):
    """Before: analysed (exit 0) through alignctl's own header reader (streaming, steps),
    though ``safetensors.torch.load`` refuses the same file ("invalid JSON in header")."""
    from safetensors.torch import load

    run = make_run(tmp_path / "run")
    path = _only_checkpoint(run).with_suffix(".safetensors")
    _safetensors_with(path, change)
    with pytest.raises(Exception, match="invalid JSON in header"):
        load(path.read_bytes())
    analyze_fails([str(run)], words, run)
