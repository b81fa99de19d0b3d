"""l_inf PGD (Madry et al. 2018; paper Figures 4-5, Appendix D.1), batched, in a few lines.

Random start uniform in the eps-ball, ``steps`` sign-gradient ascent steps of size
``alpha``, each followed by projection onto the eps-ball and the valid input range.
"""

from __future__ import annotations

import torch

from alignctl.geometry.devices import eval_mode


def _default_loss(out, y):
    from alignctl.evaluation.losses import cross_entropy, logistic

    return logistic(out, y) if out.dim() == 1 or out.shape[-1] == 1 else cross_entropy(out, y)


def pgd(model, x, y, *, eps, alpha, steps=10, input_range=None, loss_fn=None,
        random_start=True, generator=None, output=None) -> torch.Tensor:  # fmt: skip
    """Adversarial examples (same shape as x, floating); the model's parameter gradients are
    untouched. The model sees a copy of each iterate (in-place ops in its forward are
    harmless) and ``output`` picks the logits of tuple/dict outputs."""
    from alignctl.geometry.outputs import select_output

    loss_fn = loss_fn or _default_loss
    lo, hi = input_range if input_range is not None else (-float("inf"), float("inf"))
    x = x.detach()
    if not x.is_floating_point():
        from alignctl.geometry.inputs import float_dtype

        x = x.to(float_dtype(model))
    delta = torch.zeros_like(x)
    if random_start:
        delta = (
            torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1
        ) * eps
    adv = (x + delta).clamp(lo, hi)
    for _ in range(steps):
        adv.requires_grad_(True)
        logits = select_output(model(adv.clone()), output)
        (grad,) = torch.autograd.grad(loss_fn(logits, y), adv)
        adv = adv.detach() + alpha * grad.sign()
        adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(lo, hi)
    return adv.detach()


def adversarial_accuracy(model, x, y, *, eps, alpha, steps=10, input_range=None,
                         batch_size=1024, generator=None, output=None) -> float:  # fmt: skip
    """Accuracy on PGD examples, model in eval mode (its modes are restored)."""
    from alignctl.evaluation.losses import n_correct
    from alignctl.geometry.outputs import select_output

    correct = 0
    with eval_mode(model), torch.enable_grad():
        for i in range(0, len(x), batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            adv = pgd(model, xb, yb, eps=eps, alpha=alpha, steps=steps, input_range=input_range,
                      generator=generator, output=output)  # fmt: skip
            with torch.no_grad():
                correct += n_correct(select_output(model(adv), output), yb)
    return correct / max(1, len(x))
