"""safetensors headers: alignctl's own header readers (checkpoint streaming, steps) refuse
exactly what the safetensors library refuses (qa6). Overlapping offsets were streamed (one
tensor's bytes loaded into another: a wrong model, exit 0), and negative, float, boolean or
overflowing shapes and float offsets were 'internal error' lines from inside torch."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import safetensors.torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import SafetensorError
from test_cli_analyze import invoke

from alignctl.runs.checkpoints.st_header import tensor_problem

SIZES = {"F32": 4, "F16": 2, "I64": 8, "U8": 1, "BOOL": 1}
MODEL = {"arch": "mlp", "in_features": 5, "hidden": [4], "out_features": 3}
SHAPES = {"1.weight": [4, 5], "1.bias": [4], "3.weight": [3, 4], "3.bias": [3]}


def _file(header: dict, data: bytes) -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


def _tiled(tensors):
    """(header, data) of tensors [(name, dtype, shape)] laid out as the format wants."""
    header, at = {}, 0
    for name, dtype, shape in tensors:
        n = int(np.prod(shape, dtype=object)) * SIZES[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [at, at + n]}
        at += n
    return header, bytes(at)


DIM = st.one_of(st.integers(0, 4), st.sampled_from([-1, 2.0, True, 2**40]))
MUTATION = st.sampled_from(["none", "swap", "shift", "overlap", "float", "shape", "drop_dtype"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tensors=st.lists(
        st.tuples(st.sampled_from(sorted(SIZES)), st.lists(st.integers(0, 4), max_size=3)),
        min_size=1,
        max_size=4,
    ),
    mutation=MUTATION,
    which=st.integers(0, 3),
    dim=DIM,
)
def test_refuses_what_the_library_refuses(tensors, mutation, which, dim):
    header, data = _tiled([(f"t{i}", d, s) for i, (d, s) in enumerate(tensors)])
    info = header[f"t{which % len(tensors)}"]
    begin, end = info["data_offsets"]
    if mutation == "swap":
        info["data_offsets"] = [end, begin]
    elif mutation == "shift":
        info["data_offsets"] = [begin + 1, end + 1]
    elif mutation == "overlap":
        info["data_offsets"] = [0, end - begin]
    elif mutation == "float":
        info["data_offsets"] = [float(begin), end]
    elif mutation == "shape":
        info["shape"] = [*info["shape"], dim]
    elif mutation == "drop_dtype":
        del info["dtype"]
    try:
        safetensors.torch.load(_file(header, data))
        library_ok = True
    except SafetensorError:
        library_ok = False
    # formats.safetensors_header also checks the data's length against the tensors' end
    ours = tensor_problem(header) is None
    ours = ours and max((v["data_offsets"][1] for v in header.values()), default=0) == len(data)
    assert ours == library_ok, header


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda h: h["1.bias"].update(data_offsets=[0, 16]), "overlaps another tensor"),
        (lambda h: h["1.weight"].update(shape=[-4, -5]), "is not a list of counts"),
        (lambda h: h["1.weight"].update(shape=[4.0, 5.0]), "is not a list of counts"),
        (lambda h: h["1.weight"].update(data_offsets=[0.0, 80.0]), "are not two byte offsets"),
        (lambda h: h["3.bias"].update(shape=[2**62, 2**62, 0]), "overflows"),
    ],
)
def test_analyze_refuses_a_malformed_header_in_one_line(tmp_path, change, words):
    root = tmp_path / "run"
    (root / "checkpoints").mkdir(parents=True)
    g = np.random.default_rng(0)
    np.savez(root / "data.npz", x_train=g.normal(size=(8, 5)).astype(np.float32),
             y_train=g.integers(0, 3, 8))  # fmt: skip
    (root / "alignctl.yaml").write_text(
        yaml.safe_dump({"model": MODEL, "data": {"path": "data.npz"}})
    )
    header, data = _tiled([(k, "F32", s) for k, s in SHAPES.items()])
    change(header)
    if header["3.bias"]["shape"][0] == 2**62:
        header["3.bias"]["data_offsets"] = [header["3.bias"]["data_offsets"][0]] * 2
        data = data[:-12]
    victim = root / "checkpoints" / "step_1.safetensors"
    victim.write_bytes(_file(header, data))
    before = victim.read_bytes()
    r = invoke(root, "--no-cache")
    assert r.exit_code == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], r.stderr
    assert "internal error" not in r.stderr and victim.read_bytes() == before
