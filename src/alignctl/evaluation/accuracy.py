"""Accuracies and the "grokked" criterion (SETUPS.md; paper Table 3)."""

from __future__ import annotations

import torch

EVAL_BATCH = 4096


@torch.no_grad()
def predict(model, x: torch.Tensor, device) -> torch.Tensor:
    """Outputs for x in eval mode, in chunks; (n, C) or (n,). The model's modes are restored."""
    from alignctl.geometry.devices import eval_mode

    with eval_mode(model):
        return torch.cat(
            [model(x[i : i + EVAL_BATCH].to(device)) for i in range(0, len(x), EVAL_BATCH)]
        )


def evaluate(model, data, loss_fn, device, noise_seed: int = 0) -> dict:
    """train/test accuracy and train loss; for tasks with a noise criterion (XOR cluster),
    the test accuracy under Gaussian noise on the coordinates from ``noise_from`` on."""
    from alignctl.evaluation.losses import accuracy

    out = predict(model, data.x_train, device)
    y = data.y_train.to(out.device)
    ev = {"loss": float(loss_fn(out, y)), "train_accuracy": accuracy(out, y), "test_accuracy": None}
    if data.x_test is not None and len(data.x_test):
        ev["test_accuracy"] = accuracy(
            predict(model, data.x_test, device), data.y_test.to(out.device)
        )
        if "noise_std" in data.meta:
            ev["noise_accuracy"] = noise_accuracy(model, data, device, noise_seed)
    return ev


def noise_accuracy(model, data, device, noise_seed: int = 0) -> float:
    """Test accuracy with Gaussian noise (std ``noise_std``) added to the coordinates from
    ``noise_from`` on: the XOR cluster's robustness criterion (paper A.1). The same noise at
    every evaluation (its own generator), so the global RNG is untouched."""
    from alignctl.evaluation.losses import accuracy

    g = torch.Generator().manual_seed(noise_seed)
    x = data.x_test.clone()
    start = int(data.meta.get("noise_from", 0))
    x[:, start:] += data.meta["noise_std"] * torch.randn(x[:, start:].shape, generator=g)
    out = predict(model, x, device)
    return accuracy(out, data.y_test.to(out.device))


def is_grokked(ev: dict, criterion: dict) -> bool:
    """Every threshold given (train_acc, test_acc, noise_acc; fractions) is exceeded."""
    keys = {
        "train_acc": "train_accuracy",
        "test_acc": "test_accuracy",
        "noise_acc": "noise_accuracy",
    }
    wanted = {k: v for k, v in (criterion or {}).items() if v is not None and k in keys}
    if not wanted:
        return False
    return all(ev.get(keys[k]) is not None and ev[keys[k]] > v for k, v in wanted.items())
