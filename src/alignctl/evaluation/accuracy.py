"""Accuracies and the "grokked" criterion (SETUPS.md; paper Table 3)."""

from __future__ import annotations

import torch

EVAL_BATCH = 4096


@torch.no_grad()
def predict(model, x: torch.Tensor, device, *, output=None, max_memory=None) -> torch.Tensor:
    """Logits for x in eval mode, in chunks; (n, C) or (n,). The model's modes are restored.

    The model gets a copy of each chunk (it may modify it in place; not where its structure
    proves it never does, :mod:`alignctl.geometry.readonly`), integer data that no
    ``nn.Embedding`` reads as floats, and its logits are picked from tuple/dict outputs by
    ``output`` (:mod:`alignctl.geometry.inputs`, :mod:`alignctl.geometry.outputs`). Chunks
    hold at most :data:`EVAL_BATCH` samples and stay within ``max_memory`` (default 512 MiB)
    by the module outputs of a one-sample forward pass."""
    import alignctl.geometry.memory as memory
    from alignctl.geometry.devices import eval_mode
    from alignctl.geometry.inputs import ModelFront
    from alignctl.geometry.readonly import never_writes_input

    if len(x) == 0:
        return torch.empty(0)
    with eval_mode(model):
        front = ModelFront(model, x[:2].to(device), output)
        per = memory.forward_bytes(lambda: front(x[:1], device)) + x[:1].nbytes * 2
        budget = memory.budget(max_memory, device)
        size = max(1, min(EVAL_BATCH, budget // max(1, per)))
        copy = not never_writes_input(front.model)
        chunks = range(0, len(x), size)
        return torch.cat([front(x[i : i + size], device, copy) for i in chunks])


def evaluate(model, data, loss_fn, device, noise_seed: int = 0, output=None) -> dict:
    """train/test accuracy and train loss; for tasks with a noise criterion (XOR cluster),
    the test accuracy under Gaussian noise on the coordinates from ``noise_from`` on."""
    from alignctl.evaluation.losses import accuracy

    out = predict(model, data.x_train, device, output=output)
    y = data.y_train.to(out.device)
    ev = {"loss": float(loss_fn(out, y)), "train_accuracy": accuracy(out, y), "test_accuracy": None}
    if data.x_test is not None and len(data.x_test):
        ev["test_accuracy"] = accuracy(
            predict(model, data.x_test, device, output=output), data.y_test.to(out.device)
        )
        if "noise_std" in data.meta:
            ev["noise_accuracy"] = noise_accuracy(model, data, device, noise_seed, output)
    return ev


def noise_accuracy(model, data, device, noise_seed: int = 0, output=None) -> float:
    """Test accuracy with Gaussian noise (std ``noise_std``) added to the coordinates from
    ``noise_from`` on: the XOR cluster's robustness criterion (paper A.1). The same noise at
    every evaluation (its own generator), so the global RNG is untouched."""
    from alignctl.evaluation.losses import accuracy

    g = torch.Generator().manual_seed(noise_seed)
    x = data.x_test.clone()
    start = int(data.meta.get("noise_from", 0))
    x[:, start:] += data.meta["noise_std"] * torch.randn(x[:, start:].shape, generator=g)
    out = predict(model, x, device, output=output)
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


def grokked_problem(criterion: dict, data) -> str | None:
    """Why the grokked ``criterion`` can never hold on ``data`` (a
    :class:`alignctl.runs.tasks.Dataset`), or None: a threshold of 1 (an accuracy must exceed
    it), ``test_acc`` without a test split, ``noise_acc`` on data without the task's input
    noise (only the XOR cluster has one). Such a run never groks whatever it learns, and a
    race would count every pair as censored at --max-epochs."""
    given = {k: v for k, v in (criterion or {}).items() if v is not None}
    full = [k for k, v in given.items() if v >= 1.0]
    if full:
        return f"{full[0]} {given[full[0]]:g}: an accuracy must exceed it, and none exceeds 1"
    if "test_acc" in given and getattr(data, "x_test", None) is None:
        return "test_acc needs a test split, and the data has none (x_test, y_test)"
    if "noise_acc" in given and "noise_std" not in (getattr(data, "meta", None) or {}):
        return "noise_acc is the XOR cluster's accuracy under input noise; this data has no noise"
    return None
