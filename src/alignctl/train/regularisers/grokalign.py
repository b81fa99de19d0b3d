"""GrokAlign (paper section 4.1): penalise the Jacobian's Frobenius norm.

Per sample, norm(J)_F^2 is estimated with Hoffman et al.'s random projections: for v drawn
from N(0, I_C) and normalised to unit length, E[C * norm(v^T J)^2] = norm(J)_F^2. v^T J is one
vector-Jacobian product of the batch's outputs with respect to its inputs (create_graph, so
the penalty is differentiable in the weights), averaged over ``n_proj`` draws; ``n_proj=exact``
uses the C one-hot vectors instead. The penalty is

- ``norm=fro`` (default; what the paper's public code trains with, and what its lambdas were
  tuned for): lambda * mean_batch sqrt(max(estimate, eps));
- ``norm=fro2`` (the paper's formula): lambda * mean_batch estimate.

Spec names: ``lambda`` (default 0.01 when neither preset nor user gives one; the paper uses
0.001-1.0 by setup), ``n_proj`` (1, or ``exact``), ``norm``, ``eps``, ``every``, ``subsample``,
``path``.

``every=k`` is lazy regularisation (Karras et al., StyleGAN2, section 4 / appendix B, for their
R1 penalty): the penalty is computed on one step in k, with lambda scaled by k, and skipped on
the others. Over k steps the penalty's gradient sums to k * (lambda * grad) at one point instead
of lambda * grad at k nearby points, so for SGD the update is unbiased up to the change of the
weights within k steps; under Adam the k-times larger gradient on one step is normalised by the
second-moment estimate, so it is an approximation there (as it is for StyleGAN2, which trains
with Adam). The penalty's cost (a create-graph VJP and the double backward) is paid once per k
steps: a GrokAlign step then costs about 1 + r/k plain steps where r ~ 0.8 is the penalty's
relative cost (``benchmarks/train_step.py`` measures it). ``every=1`` (the default) is the
paper's method, unchanged.

``subsample=f`` (a fraction in (0, 1]; default 1, the whole batch, today's behaviour bit for
bit) computes the penalty on m = round(f * n) (at least 1) of the batch's n rows, a uniformly
random subset drawn without replacement on every step from torch's global generator (part of
the resume state, so a resumed run continues exactly). The penalty is lambda times a mean over
samples of a per-sample term t_i (sqrt(max(estimate_i, eps)) for ``fro``, estimate_i for
``fro2``), and the mean of t over a uniform random m-subset S has expectation
sum_S (1/C(n, m)) (1/m) sum_{i in S} t_i = (1/n) sum_i t_i, as has its gradient in the
weights: an unbiased estimate of the full-batch penalty and of its gradient, for ``fro`` as for
``fro2`` (the square root is per sample, inside the mean; the projection estimate's own bias
under ``fro`` is unchanged), with a gradient on every step, unlike ``every``. This is the
minibatch argument (Robbins and Monro; the penalty's own minibatch); the projections are
Hoffman et al.'s. The training step forwards the m rows on their own, differentiable at the
input (:func:`alignctl.train.step.step_loss`), so the VJP and the double backward involve m
rows, not n: a step costs about 1 + (r + phi) * m / n plain steps, with r the penalty's
relative cost and phi ~ 1/3 the extra forward's (``benchmarks/xor_step.py``). The loss itself
still sees the whole batch. The subset is its own forward pass: a model whose layers couple
samples (BatchNorm in training mode) normalises it by its own statistics. With ``every=k`` the
two combine (the subset is drawn on the steps that carry the penalty), still unbiased.

``path=auto`` (default) computes the penalty of a ReLU MLP (an ``nn.Sequential`` of Linear
and ReLU layers, like the ``mlp`` model) as a chain of weight products with the batch's own
ReLU masks (:mod:`alignctl.train.relu_chain`): the same penalty and gradient as autograd's
create-graph VJP and double backward, without the double backward, and with ``subsample``
without the subset's second forward pass; checked against autograd on the first penalised step
of each run. ``path=autograd`` always takes the generic path (any model).

The eps clamp keeps an all-dead-ReLU sample (J = 0) from producing an infinite gradient.
"""

from __future__ import annotations

import logging
import math

import torch

from alignctl.errors import short
from alignctl.train.regularisers import Regulariser, real, register_regulariser

PATHS = ("auto", "autograd")


def projections(n: int, c: int, n_proj, dtype, device) -> tuple[list[torch.Tensor], float]:
    """(the projection vectors, each (n, C), and the scale) of Hoffman et al.'s estimator:
    ``n_proj`` draws from N(0, I_C) normalised per sample (scale C / n_proj), or the C one-hot
    vectors for ``exact`` (scale 1). Draws from torch's global generator."""
    if n_proj == "exact":
        return list(torch.eye(c, dtype=dtype, device=device).unsqueeze(1).expand(c, n, c)), 1.0
    vs = [torch.randn(n, c, dtype=dtype, device=device) for _ in range(int(n_proj))]
    return [v / v.norm(dim=1, keepdim=True) for v in vs], c / len(vs)  # unit length per sample


def frobenius_estimate(x: torch.Tensor, out: torch.Tensor, n_proj, drawn=None,
                       create_graph: bool = True) -> torch.Tensor:  # fmt: skip
    """Per-sample estimate of norm(J)_F^2, (n,), differentiable in the model's weights (with
    ``create_graph``); ``drawn``: (projections, scale) already drawn for these rows."""
    out = out.reshape(out.shape[0], -1)  # (n, C)
    n, c = out.shape
    vs, scale = drawn or projections(n, c, n_proj, out.dtype, out.device)
    est = out.new_zeros(n)
    for v in vs:
        (g,) = torch.autograd.grad(out, x, v, create_graph=create_graph, retain_graph=True)
        est = est + g.reshape(n, -1).pow(2).sum(1)  # norm(v^T J)^2
    return scale * est


def chain_estimate(chain, rows, drawn) -> torch.Tensor:
    """The same estimate from a :class:`alignctl.train.relu_chain.ReluChain` (its last forward
    pass's masks, at ``rows``), differentiable in the weights by a first-order backward."""
    vs, scale = drawn
    est = None
    for v in vs:
        term = chain.vjp(v, rows).pow(2).sum(1)
        est = term if est is None else est + term
    return scale * est


@register_regulariser("grokalign")
class GrokAlign(Regulariser):
    name = "grokalign"
    sign = 1.0

    def __init__(
        self,
        lam: float = 0.01,
        n_proj: int | str = 1,
        norm: str = "fro",
        eps: float = 1e-8,
        every: int = 1,
        subsample: float = 1.0,
        path: str = "auto",
    ):
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"every must be a positive integer, not {short(every)}")
        if (
            not isinstance(subsample, (int, float))
            or isinstance(subsample, bool)
            or not 0 < subsample <= 1
        ):
            raise ValueError(
                f"subsample is the fraction of the batch the penalty is computed on, "
                f"in (0, 1], not {short(subsample)}"
            )
        if path not in PATHS:
            raise ValueError(f"path must be one of {', '.join(PATHS)}, not {short(path)}")
        if norm not in ("fro", "fro2"):
            raise ValueError(f"norm must be fro or fro2, not {short(norm)}")
        if n_proj != "exact" and (not isinstance(n_proj, int) or n_proj < 1):
            raise ValueError(f"n_proj must be a positive integer or 'exact', not {short(n_proj)}")
        # lambda is the magnitude (grokunalign negates the penalty); eps > 0 keeps the square
        # root's gradient finite at J = 0, what it is for
        self.lam, self.n_proj, self.norm = real("lambda", lam, 0.0), n_proj, norm
        self.eps = real("eps", eps, 0.0, open_low=True)
        self.every, self.subsample = every, float(subsample)
        self.calls = 0  # penalty calls so far: which steps carry the lazy penalty
        self.path = path
        self.chain_ok: bool | None = None  # the chain checked against autograd (this run)

    def penalty_rows(self, n: int, device):
        """None (the whole batch) or m = round(subsample * n) random rows, drawn when due."""
        if self.subsample == 1.0 or not self.penalty_due():
            return None  # a step without the lazy penalty draws nothing
        m = self.penalty_size(n)
        return None if m >= n else torch.randperm(n, device=device)[:m]

    def penalty_size(self, n: int) -> int:
        return min(n, max(1, math.floor(self.subsample * n + 0.5)))

    def penalty_due(self) -> bool:
        return self.calls % self.every == 0

    def _due(self) -> bool:
        due = self.penalty_due()
        self.calls += 1
        return due

    def _value(self, est: torch.Tensor) -> torch.Tensor:
        value = est.clamp_min(self.eps).sqrt() if self.norm == "fro" else est
        return self.sign * self.lam * self.every * value.mean()

    def penalty(self, model, x, out, y):
        if not self._due():
            return None
        return self._value(frobenius_estimate(x, out, self.n_proj))

    def uses_chain(self) -> bool:
        """Whether the step may compute the penalty through a ReLU chain (``path=auto`` and no
        disagreement with autograd found in this run)."""
        return self.path == "auto" and self.chain_ok is not False

    def chain_penalty(self, chain, out, rows, forward_rows):
        """:meth:`penalty` for the ``rows`` of the batch whose output is ``out``, through the
        :class:`alignctl.train.relu_chain.ReluChain` that produced it. The first time, the
        estimate is compared with autograd's on the same rows and projections
        (``forward_rows()``: those rows forwarded on their own, differentiable at the input;
        no random draw); if they differ (:func:`alignctl.train.relu_chain.agrees`) this run
        takes the generic path from then on, this step included, and says so in the log."""
        from alignctl.train.relu_chain import agrees

        if not self._due():
            return None
        flat = out.reshape(out.shape[0], -1)
        m = flat.shape[0] if rows is None else rows.shape[0]
        drawn = projections(m, flat.shape[1], self.n_proj, flat.dtype, flat.device)
        est = chain_estimate(chain, rows, drawn)
        if self.chain_ok is None:
            x, o = forward_rows()
            generic = frobenius_estimate(x, o, self.n_proj, drawn, create_graph=False)
            self.chain_ok = agrees(est, generic)
            if not self.chain_ok:
                logging.getLogger("alignctl").warning(
                    "%s: the ReLU-chain penalty differs from autograd's on this model; "
                    "computing it with autograd for the rest of this run", self.name
                )  # fmt: skip
                est = frobenius_estimate(x, o, self.n_proj, drawn)
        return self._value(est)

    # The position in the k-step cycle is training state: resume must continue it exactly.
    def state_dict(self) -> dict:
        return {"calls": self.calls} if self.every > 1 else {}

    def load_state_dict(self, state: dict) -> None:
        self.calls = int(state.get("calls", 0))
