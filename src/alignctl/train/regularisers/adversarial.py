"""Adversarial training (Madry et al. 2018; paper appendix D.1): every batch is replaced by
its l_inf PGD examples (random start, ``steps`` sign-gradient steps of ``alpha``, projected to
the eps-ball and, when known, the data's input range). The attack runs in the model's
current (training) mode, as in Madry et al.
"""

from __future__ import annotations

from alignctl.train.regularisers import Regulariser, count, real, register_regulariser


@register_regulariser("adversarial")
class Adversarial(Regulariser):
    name = "adversarial"

    def __init__(self, eps: float = 0.1, alpha: float = 0.025, steps: int = 10):
        # a negative radius or step size is no attack (it descends the loss or empties the ball)
        self.eps, self.alpha = real("eps", eps, 0.0), real("alpha", alpha, 0.0)
        self.steps = count("steps", steps, 0)
        self.input_range: tuple[float, float] | None = None  # set by the trainer from the data
        self.output = None  # set by the trainer: the logits of tuple/dict outputs

    def check_inputs(self, x) -> None:
        if not x.is_floating_point():  # the batches would pass unchanged: a plain run
            raise ValueError(
                "PGD perturbs floating-point inputs; this model reads integer tokens, and "
                "there is no l_inf ball around a token (no adversarial training would happen)"
            )

    def transform_batch(self, model, x, y, loss_fn):
        from alignctl.evaluation.attacks import pgd

        return pgd(model, x, y, eps=self.eps, alpha=self.alpha, steps=self.steps,
                   input_range=self.input_range, loss_fn=loss_fn, output=self.output)  # fmt: skip
