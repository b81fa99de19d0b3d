"""GrokAlign on a random subset of the batch (``grokalign:subsample=f``): an unbiased estimate
of the full-batch penalty and of its gradient, checked exactly over every subset; the default
unchanged bit for bit; resume exact; bad values one-line errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from _configs import grokalign_config, weights
from torch import nn
from typer.testing import CliRunner

from alignctl import Trainer, build_regulariser
from alignctl.cli.assemble import app
from alignctl.errors import InputError
from alignctl.geometry.inputs import ModelFront
from alignctl.runs.config import config_from_dict
from alignctl.train.step import step_loss


def _zero_loss(out, y):
    return out.new_zeros(())


class Protocol(nn.Module):
    """A token model that says where its Jacobian is taken (embed / forward_embedded)."""

    def __init__(self):
        super().__init__()
        self.emb, self.head = nn.Embedding(9, 4), nn.Sequential(nn.Linear(12, 5), nn.ReLU(),
                                                                nn.Linear(5, 2))  # fmt: skip

    def embed(self, tokens):
        return self.emb(tokens)

    def forward_embedded(self, e):
        return self.head(e.flatten(1))

    def forward(self, tokens):
        return self.forward_embedded(self.embed(tokens))


def _model_and_batch(kind: str):
    torch.manual_seed(0)
    if kind == "mlp":
        model = nn.Sequential(
            nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 6), nn.ReLU(), nn.Linear(6, 3)
        )  # fmt: skip
        return model.double(), torch.randn(6, 5, dtype=torch.float64)
    if kind == "cnn":
        model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 2))
        return model.double(), torch.randn(5, 1, 6, 6, dtype=torch.float64)
    if kind == "protocol":
        return Protocol().double(), torch.randint(0, 9, (6, 3))
    # tokens: the Jacobian is taken at the embedding, which the subset's forward recomputes
    model = nn.Sequential(
        nn.Embedding(9, 4), nn.Flatten(), nn.Linear(12, 5), nn.Tanh(), nn.Linear(5, 3)
    )  # fmt: skip
    return model.double(), torch.randint(0, 9, (6, 3))


def _penalty_and_grads(model, x, spec: str, subset=None, monkeypatch=None):
    """step_loss with a zero loss (the penalty alone) and its gradient in every weight; the
    subset drawn is ``subset`` (torch.randperm patched to put it first)."""
    reg = build_regulariser(spec)
    if subset is not None:
        rest = [i for i in range(x.shape[0]) if i not in subset]
        perm = torch.tensor([*subset, *rest])
        monkeypatch.setattr(torch, "randperm", lambda n, device=None: perm.clone())
    y = torch.zeros(x.shape[0], dtype=torch.long)
    pen = step_loss(model, ModelFront(model, x), [reg], _zero_loss, x, y)
    grads = torch.autograd.grad(pen, list(model.parameters()), allow_unused=True)
    return pen.detach(), [torch.zeros_like(p) if g is None else g for g, p in
                          zip(grads, model.parameters(), strict=True)]  # fmt: skip


@pytest.mark.parametrize("kind", ["mlp", "cnn", "tokens", "protocol"])
@pytest.mark.parametrize("norm", ["fro", "fro2"])
@pytest.mark.parametrize("m", [1, 2, 3])
def test_mean_over_every_subset_is_the_full_penalty_and_gradient(kind, norm, m, monkeypatch):
    model, x = _model_and_batch(kind)
    n = x.shape[0]
    base = f"grokalign:lambda=0.7,n_proj=exact,norm={norm}"
    want, want_grads = _penalty_and_grads(model, x, base)
    spec = f"{base},subsample={m / n!r}"
    subsets = list(itertools.combinations(range(n), m))
    vals, grads = [], []
    with monkeypatch.context() as mp:
        for s in subsets:
            v, g = _penalty_and_grads(model, x, spec, s, mp)
            vals.append(v)
            grads.append(g)
    assert len({round(v.item(), 12) for v in vals}) > 1  # the subsets differ: a real average
    torch.testing.assert_close(torch.stack(vals).mean(), want, rtol=1e-12, atol=0)
    for i, w in enumerate(want_grads):
        got = torch.stack([g[i] for g in grads]).mean(0)
        torch.testing.assert_close(got, w, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("f, n, m", [(0.25, 400, 100), (0.125, 400, 50), (0.3, 10, 3),
                                     (0.05, 10, 1), (0.01, 10, 1), (0.34, 3, 1)])  # fmt: skip
def test_rows_are_m_distinct_uniform_draws(f, n, m):
    reg = build_regulariser(f"grokalign:subsample={f}")
    torch.manual_seed(0)
    counts = torch.zeros(n)
    draws = 2000
    for _ in range(draws):
        idx = reg.penalty_rows(n, torch.device("cpu"))
        assert idx.shape == (m,) and len(set(idx.tolist())) == m
        assert 0 <= int(idx.min()) and int(idx.max()) < n
        counts[idx] += 1
    # every row is drawn with probability m / n (binomial, 6 standard deviations)
    p = m / n
    assert (counts / draws - p).abs().max() <= 6 * (p * (1 - p) / draws) ** 0.5


@pytest.mark.parametrize("spec, n", [("grokalign", 8), ("grokalign:subsample=1", 8),
                                     ("grokalign:subsample=1.0", 8),
                                     ("grokalign:subsample=0.97", 8)])  # fmt: skip
def test_whole_batch_draws_nothing(spec, n):
    """f = 1, or a subset that rounds to the whole batch: the step's own x and out, no draw."""
    reg = build_regulariser(spec)
    state = torch.get_rng_state()
    assert reg.penalty_rows(n, torch.device("cpu")) is None
    assert torch.equal(state, torch.get_rng_state())


def test_lazy_steps_draw_only_when_the_penalty_is_due():
    model, x = _model_and_batch("mlp")
    reg = build_regulariser("grokalign:n_proj=exact,every=3,subsample=0.5")
    due = []
    for _ in range(6):
        rows = reg.penalty_rows(x.shape[0], x.device)
        xs = x if rows is None else x[rows]
        xs = xs.detach().requires_grad_(True)
        pen = reg.penalty(model, xs, model(xs), None)
        due.append((rows is not None, pen is not None))
    assert due == [(True, True), (False, False), (False, False)] * 2


def _trainer(tmp_path, name, reg: dict, epochs: int = 5) -> Trainer:
    d = grokalign_config(**reg)
    (tmp_path / name).mkdir(exist_ok=True)
    tr = Trainer(tmp_path / name, config_from_dict(d, tmp_path), "cpu")
    return tr


def _old_train_step(self, xb, yb):
    """train_step as it was before subsampling: the reference for the default."""
    self.model.train()
    inp, out = self.front.forward_train(xb, True)
    loss = self.loss_fn(out, yb)
    for r in self.regs:
        pen = r.penalty(self.model, inp, out, yb)
        if pen is not None:
            loss = loss + pen
    self._track_loss(loss)
    self.opt.zero_grad(set_to_none=True)
    loss.backward(inputs=self.params)
    self.opt.step()
    self.step += 1
    return loss.detach()


@pytest.mark.parametrize("reg", [{}, {"subsample": 1}, {"subsample": 0.99}, {"every": 2}])
def test_default_is_unchanged_bit_for_bit(tmp_path, monkeypatch, reg):
    ref = _trainer(tmp_path, "ref", {})
    with monkeypatch.context() as mp:
        mp.setattr(Trainer, "train_step", _old_train_step)
        ref.fit(3, save_every=3)
    new = _trainer(tmp_path, "new", reg)
    new.fit(3, save_every=3)
    a, b = weights(ref), weights(new)
    same = all(torch.equal(a[k], b[k]) for k in a)
    assert same is ("every" not in reg)  # every=2 is another method: the check can fail


@pytest.mark.parametrize("reg", [{"subsample": 0.25}, {"subsample": 0.5, "every": 3}])
def test_resume_with_subsampling_is_bit_for_bit(tmp_path, reg):
    ref = _trainer(tmp_path, "ref", reg)
    ref.fit(5, save_every=1)
    part = _trainer(tmp_path, "part", reg)
    part.fit(2, save_every=1)
    resumed = _trainer(tmp_path, "part", reg)
    resumed.restore()
    resumed.fit(5, save_every=1)
    a, b = weights(ref), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    full = _trainer(tmp_path, "full", {})
    full.fit(5, save_every=5)
    assert not all(torch.equal(a[k], v) for k, v in weights(full).items())


@pytest.mark.parametrize("bad", ["0", "-0.5", "1.5", "2", "true", "half", "0.0"])
def test_subsample_must_be_a_fraction(bad):
    with pytest.raises(InputError, match="regulariser grokalign: subsample"):
        build_regulariser(f"grokalign:subsample={bad}")


@pytest.mark.parametrize("bad", ["2", "0", "nan"])
def test_cli_refuses_a_bad_subsample_in_one_line(tmp_path, bad):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x_train=rng.random((20, 10), dtype=np.float32),
             y_train=rng.integers(0, 2, 20))  # fmt: skip
    d = grokalign_config()
    d["data"] = {"path": str(tmp_path / "data.npz")}
    (tmp_path / "alignctl.yaml").write_text(__import__("json").dumps(d))
    args = ["train", "--config", str(tmp_path / "alignctl.yaml"), "--out", str(tmp_path / "o")]
    r = CliRunner().invoke(app, [*args, "--reg", f"grokalign:subsample={bad}", "--quiet"])
    assert r.exit_code == 2, (r.stderr, r.exception)
    err = r.stderr.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "subsample" in err, err
    assert not (tmp_path / "o").exists()
