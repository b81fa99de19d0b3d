"""One checkpoint measured for :func:`alignctl.report.analysis.analyze`: accuracies, the
metrics' means and standard deviations over the samples (:func:`alignctl.measure`), PGD
accuracy; the deterministic sample subset, the per-sample values a report keeps, and which
failures are this checkpoint's (numeric: it diverged) rather than the run's (the model does
not fit the data: an InputError)."""

from __future__ import annotations

import math

import torch

from alignctl.errors import InputError, first_line


def _subset(x, y, samples: int | None):
    """(x, y, indices) of a deterministic subset of ``samples`` (all when None)."""
    if not samples or samples >= len(x):
        return x, y, torch.arange(len(x))
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:samples].sort().values
    return x[idx], y[idx], idx


def _stats(values: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    means, stds = {}, {}
    for k, v in values.items():
        v = v.double()
        means[k] = float(v.mean())
        stds[k] = float(v.std(unbiased=False))
    return means, stds


def _model_error(e: Exception) -> InputError:
    return InputError(f"the model cannot be applied to the data: {first_line(e)}")


def _numeric(e: Exception) -> bool:
    """Whether an exception comes from the numbers (a failed eigh, an overflow), which
    depend on the checkpoint, rather than from the model's structure."""
    if isinstance(e, (ArithmeticError, getattr(torch.linalg, "LinAlgError", ArithmeticError))):
        return True
    text = str(e).lower()
    return any(w in text for w in ("linalg", "converge", "singular", "nan", "inf", "overflow"))


def _measure_checkpoint(entry, model, data, xs, ys, opts, notes) -> int:
    """Accuracies and metrics of the loaded weights into ``entry``; returns C. Outputs that
    are not finite make the checkpoint ``diverged`` with the reason.

    When the measured samples are the whole training split (``opts["reuse"]``), the train
    accuracy comes from the logits of measure()'s own forward passes instead of a second
    forward pass, once they were found bit-identical to predict()'s on a checkpoint whose
    logits are not the same for every sample (a zero head proves nothing); on the ones
    before, both are computed and compared (a model whose logits differ between the two,
    e.g. embed + forward_embedded against forward, is predicted on every checkpoint). The
    order of the checks is kept: outputs that are not finite make the checkpoint diverged
    whatever the measurement did (its notes are then dropped)."""
    from alignctl.evaluation.accuracy import noise_accuracy, predict
    from alignctl.evaluation.attacks import adversarial_accuracy
    from alignctl.evaluation.losses import accuracy
    from alignctl.geometry.measure import measure
    from alignctl.geometry.vjp import as_matrix

    dev, spec, mm = opts["dev"], opts["spec"], opts["max_memory"]
    measure = opts.get("measure") or measure  # over the ranks' samples: report/sharded.py
    reuse, errors, seen, failed = opts.get("reuse"), {}, [], None
    kwargs = dict(metrics=opts["names"], batch_size=opts["batch_size"], device=dev, output=spec,
                  max_memory=mm, sketch=opts["sketch"], errors=errors)  # fmt: skip
    if reuse and reuse["ok"]:
        own: list[str] = []
        try:
            values = measure(model, xs, ys, notes=own, outputs=seen, **kwargs)
        except Exception as e:  # noqa: BLE001 (raised below unless the outputs say diverged)
            failed = e
        out = seen[0] if failed is None and seen else _train_outputs(predict, model, data, opts)
    else:
        out = _train_outputs(predict, model, data, opts)
    # (n, C) or (n,) for the whole split, named in the error (the samples measured may be a
    # subset, or, over torchrun's ranks, one rank's block of it)
    as_matrix(out, len(data.x_train), tuple(data.x_train.shape))
    n_classes = 1 if out.dim() == 1 else out.shape[1]
    if not bool(torch.isfinite(out).all()):
        entry["diverged"] = True
        entry["reason"] = "the outputs are not finite (they overflow) although the weights are"
        return n_classes
    if failed is not None:
        raise failed
    if reuse and reuse["ok"]:
        notes.extend(n for n in own if n not in notes)
    else:
        if reuse:
            kwargs["outputs"] = seen
        values = measure(model, xs, ys, notes=notes, **kwargs)
        if reuse and seen:  # checked once: the same model, shapes and kernels afterwards
            same = torch.equal(seen[0], out.to(seen[0].device))
            # logits alike for every sample (a zero head at step 0) agree on any two paths:
            # no proof for later weights, so the next checkpoint compares again
            reuse["ok"] = same if not same or _differ(out) else None
    entry["train_accuracy"] = accuracy(out, data.y_train.to(out.device))
    if data.x_test is not None and len(data.x_test):
        test_out = predict(model, data.x_test, dev, output=spec, max_memory=mm)
        entry["test_accuracy"] = accuracy(test_out, data.y_test.to(dev))
        if "noise_std" in data.meta:  # the XOR cluster's criterion
            entry["noise_accuracy"] = noise_accuracy(model, data, dev, output=spec)
    entry["metrics"], entry["metrics_std"] = _stats(values)
    if errors:  # sketched estimates (many classes): their errors next to the values
        entry["metrics_error"] = {k: float(errors[k].double().mean()) if k in errors else None
                                  for k in values}  # fmt: skip
    if opts["keep_samples"]:
        entry["_per_sample"] = {k: v.double().tolist() for k, v in values.items()}
    bad = [k for k, v in entry["metrics"].items() if not math.isfinite(v)]
    if bad:
        entry["diverged"] = True
        entry["reason"] = f"{', '.join(bad)} not finite even in float64"
    elif opts["robustness"]:
        p = opts["pgd"]
        entry["adversarial_accuracy"] = adversarial_accuracy(
            model, data.x_test.to(dev), data.y_test.to(dev), eps=p["eps"], alpha=p["alpha"],
            steps=p["steps"], input_range=p["input_range"], output=spec,
            generator=torch.Generator(dev).manual_seed(0),
        )  # fmt: skip
    return n_classes


def _differ(out: torch.Tensor) -> bool:
    """Whether some samples' logits differ from the first's."""
    return out.shape[0] > 1 and not bool((out == out[:1]).all())


def _samples(ys: torch.Tensor, kept: torch.Tensor, per_sample: list) -> dict:
    """``labels`` (n,) and ``indices`` (n,) of the measured samples in their split, and
    ``metrics``: one {metric: [n values]} per checkpoint (None for a diverged one)."""
    return {"labels": ys.tolist(), "indices": kept.tolist(), "metrics": per_sample}


def _train_outputs(predict, model, data, opts) -> torch.Tensor:
    """predict() on the training split; a model that does not take the data: InputError."""
    try:
        return predict(model, data.x_train, opts["dev"], output=opts["spec"],
                       max_memory=opts["max_memory"])  # fmt: skip
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 (the model does not take the data: run-level)
        raise _model_error(e) from None
