"""A model whose output is not (n, C) or (n,) logits: the error names the caller's input, its
number of samples N and their shape, never the 1- or 2-sample probe the plan runs first; the
same line from measure(), jacobian(), analyze(), ``alignctl analyze`` and ``alignctl train``."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from typer.testing import CliRunner

import alignctl
from alignctl.cli.assemble import app
from alignctl.errors import InputError
from alignctl.report.analysis import resolve_metrics

sys.path.insert(0, str(Path(__file__).parent))
from test_bad_input import make_run  # noqa: E402

FACTORY = '''
import math
import torch
from torch import nn


class Shaped(nn.Module):
    """Flatten, a linear layer, then outputs of shape ``per`` per sample, or, ``per=None``,
    one flat vector for the whole batch (no row per sample)."""

    def __init__(self, d, per=None):
        super().__init__()
        self.per = per
        self.lin = nn.Linear(d, math.prod(per) if per else 3)

    def forward(self, x):
        out = self.lin(x.flatten(1))
        return out.reshape(-1) if self.per is None else out.reshape(x.shape[0], *self.per)


def make(d, per=None):
    return Shaped(d, per)
'''
exec(FACTORY)  # Shaped, make: the same model in the library calls  # noqa: S102


def _expect(message: str, n: int, sample: tuple, per) -> None:
    assert f"the {n} input sample{'s' * (n != 1)} of shape {sample}" in message, message
    assert f"({n}, C) or ({n},)" in message, message
    if per is not None:
        assert f"shape {per} per sample" in message, message
    assert "n=1" not in message and "n=2" not in message


PER = st.one_of(st.none(), st.lists(st.integers(2, 4), min_size=2, max_size=3).map(tuple))


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 40), st.lists(st.integers(1, 3), min_size=1, max_size=3).map(tuple), PER,
       st.sampled_from(["fast", "standard"]))  # fmt: skip
def test_measure_names_the_callers_samples(n, sample, per, metrics):
    model = make(math.prod(sample), per)  # noqa: F821 (defined by exec)
    x = torch.randn(n, *sample)
    names = resolve_metrics(metrics)
    y = torch.zeros(n, dtype=torch.long)
    with pytest.raises(InputError) as e:
        alignctl.measure(model, x, y, metrics=names, max_memory="1MiB")
    _expect(str(e.value), n, sample, per)
    with pytest.raises(InputError) as e:
        alignctl.jacobian(model, x, batch_size=2)
    _expect(str(e.value), n, sample, per)


def _run(tmp_path, n, sample, per) -> Path:
    (tmp_path / "shaped.py").write_text(FACTORY)
    g = np.random.default_rng(0)
    x = g.normal(size=(n, *sample)).astype(np.float32)
    data = {"x_train": x, "y_train": np.zeros(n, dtype=np.int64), "x_test": x[:3],
            "y_test": np.zeros(min(n, 3), dtype=np.int64)}  # fmt: skip
    kwargs = {"d": math.prod(sample), "per": list(per) if per else None}
    cfg = {"model": {"factory": "shaped.py:make", "kwargs": kwargs},
           "data": {"path": "data.npz"}, "train": {"epochs": 1}}  # fmt: skip
    sd = {k: v.contiguous() for k, v in make(**kwargs).state_dict().items()}  # noqa: F821
    root = make_run(tmp_path / "run", config=yaml.safe_dump(cfg), data=data,
                    ckpts={"step_0.safetensors": sd})  # fmt: skip
    (root / "shaped.py").write_text(FACTORY)
    return root


@pytest.mark.parametrize(("n", "sample", "per"), [(20, (4,), (3, 5)), (7, (2, 3), None)])
def test_analyze_and_train_name_the_runs_samples(tmp_path, n, sample, per):
    root = _run(tmp_path, n, sample, per)
    from alignctl.runs.run import open_run

    with pytest.raises(InputError) as e:
        alignctl.analyze(open_run(root), metrics="fast")
    _expect(str(e.value), n, sample, per)
    runner = CliRunner()
    for argv in (["analyze", str(root), "--quiet", "--no-cache"],
                 ["train", "--config", str(root / "alignctl.yaml"), "--out",
                  str(tmp_path / "o"), "--quiet"]):  # fmt: skip
        r = runner.invoke(app, argv)
        assert r.exit_code == 2, (r.stderr, r.exception)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
        _expect(lines[0], n, sample, per)
    assert not (tmp_path / "o").exists()


def test_good_shapes_still_pass():
    for model in (nn.Linear(4, 3), nn.Sequential(nn.Linear(4, 1), nn.Flatten(0))):
        values = alignctl.measure(model, torch.randn(5, 4), metrics=["centroid_alignment"])
        assert values["centroid_alignment"].shape == (5,)
