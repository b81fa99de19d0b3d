"""``alignctl analyze`` as a library call: one report dict for a run (paper sections 2-4).

The report's schema is the JSON of ``alignctl analyze --json`` (README). Checkpoints are
streamed: one state dict in memory at a time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from alignctl._version import __version__
from alignctl.errors import InputError

CENTROID = ["centroid_alignment", "centroid_inner", "centroid_norm"]
STANDARD = CENTROID + [
    "jacobian_alignment", "jacobian_alignment_full", "jacobian_norm", "jacobian_pc1",
    "jacobian_erank",
]  # fmt: skip
METRIC_SETS = {"fast": CENTROID, "standard": STANDARD}


def resolve_metrics(spec: str | list[str] | None) -> list[str]:
    """``fast`` (centroid metrics: one backward pass per batch), ``standard`` (the table's),
    ``full`` (every registered metric but the opt-in ones) or a comma-separated list of
    names and sets (``standard,local_complexity``)."""
    from alignctl.geometry.metrics import METRICS

    if spec is None:
        return list(STANDARD)
    sets = {**METRIC_SETS, "full": [m for m in METRICS.names() if not METRICS.get(m).opt_in]}
    parts = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for part in parts:
        for n in sets.get(part) or [part]:
            METRICS.get(n)  # InputError naming the valid ones
            if n not in names:
                names.append(n)
    return names


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


def _attackable(data) -> bool:
    """PGD needs a continuous test input (not tokens)."""
    return data.x_test is not None and len(data.x_test) > 0 and data.x_test.is_floating_point()


def _model_error(e: Exception) -> InputError:
    line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return InputError(f"the model cannot be applied to the data: {line}")


def analyze(run, *, split: str = "train", samples: int | None = None, batch_size=None,
            device="auto", metrics="standard", robustness: bool = False, eps=None, alpha=None,
            steps: int = 10, on_checkpoint: Callable[[dict, int, int], None] | None = None,
            keep_samples: bool = False) -> dict:  # fmt: skip
    """Analyse every checkpoint of ``run`` (an :class:`alignctl.run.Run`). ``keep_samples``
    adds the per-sample values under ``samples`` (see :func:`_samples`)."""
    from alignctl.evaluation.accuracy import noise_accuracy, predict
    from alignctl.evaluation.attacks import adversarial_accuracy
    from alignctl.evaluation.losses import accuracy
    from alignctl.geometry.devices import resolve_device
    from alignctl.geometry.measure import measure
    from alignctl.report.verdict import checkpoint_verdict, recommend, thresholds
    from alignctl.runs.checkpoints import is_finite_state, load_weights, read_checkpoint

    names = resolve_metrics(metrics)
    dev = resolve_device(device)
    if split not in ("train", "test"):
        raise InputError(f"unknown split {split!r}; valid: train, test")
    data = run.load_data()
    if split == "test" and data.x_test is None:
        raise InputError("--split test: the data has no test split")
    xs, ys = (data.x_train, data.y_train) if split == "train" else (data.x_test, data.y_test)
    xs, ys, kept = _subset(xs, ys, samples)
    per_sample: list[dict | None] = []
    if robustness and not _attackable(data):
        raise InputError("--robustness needs a test split of continuous inputs (PGD perturbs x)")
    t = thresholds(run.config.verdict)
    model = run.build_model().to(dev)
    lo, hi = data.input_range or (float(data.x_train.min()), float(data.x_train.max()))
    eps = eps if eps is not None else 4 / 255 * (hi - lo)
    alpha = alpha if alpha is not None else eps / 2
    entries, n_classes = [], None
    for i, ref in enumerate(run.checkpoints):
        t0 = time.perf_counter()
        state, meta = read_checkpoint(ref)
        load_weights(model, state, ref.path.name)
        entry = {"name": ref.name, "step": ref.step if ref.step is not None else i,
                 "metrics": {}, "metrics_std": {}, "train_accuracy": None,
                 "test_accuracy": None, "diverged": not is_finite_state(state)}  # fmt: skip
        del state
        kept_values = None
        if not entry["diverged"]:
            try:
                out = predict(model, data.x_train, dev)
                n_classes = n_classes or (1 if out.dim() == 1 else out.shape[1])
                values = measure(model, xs, ys, metrics=names, batch_size=batch_size, device=dev)
            except InputError:
                raise
            except (RuntimeError, ValueError, TypeError, IndexError) as e:
                raise _model_error(e) from None
            entry["train_accuracy"] = accuracy(out, data.y_train.to(out.device))
            if data.x_test is not None and len(data.x_test):
                entry["test_accuracy"] = accuracy(
                    predict(model, data.x_test, dev), data.y_test.to(dev)
                )
                if "noise_std" in data.meta:  # the XOR cluster's criterion
                    entry["noise_accuracy"] = noise_accuracy(model, data, dev)
            entry["metrics"], entry["metrics_std"] = _stats(values)
            if keep_samples:
                kept_values = {k: v.double().tolist() for k, v in values.items()}
            entry["diverged"] = not torch.isfinite(out).all() or not all(
                math.isfinite(v) for v in entry["metrics"].values()
            )
            if robustness and not entry["diverged"]:
                entry["adversarial_accuracy"] = adversarial_accuracy(
                    model, data.x_test.to(dev), data.y_test.to(dev), eps=eps, alpha=alpha,
                    steps=steps, input_range=(lo, hi),
                    generator=torch.Generator(dev).manual_seed(0),
                )  # fmt: skip
        per_sample.append(None if entry["diverged"] else kept_values)
        if entry["diverged"]:
            entry["metrics"] = {k: None for k in names}
            entry["metrics_std"] = {k: None for k in names}
        entry["verdict"], entry["inferred"] = checkpoint_verdict(
            entry,
            n_classes=data.num_classes or n_classes or 2,
            grokked=run.config.grokked,
            t=t,
            history=entries,
        )
        entry["seconds"] = round(time.perf_counter() - t0, 4)
        entries.append(entry)
        if on_checkpoint:
            on_checkpoint(entry, i + 1, len(run.checkpoints))
    return {
        "alignctl_version": __version__, "path": str(run.root), "device": str(dev),
        "split": split, "n_samples": int(len(xs)), "metric_names": names,
        "checkpoints": entries, "verdict": entries[-1]["verdict"] if entries else None,
        "inferred": bool(entries and entries[-1]["inferred"]),
        "recommendation": recommend(entries, t), "gates": [], "passed": True,
        "pgd": {"eps": eps, "alpha": alpha, "steps": steps} if robustness else None,
        "notes": list(getattr(run, "notes", [])),
        "regularisers": list((getattr(run.config, "train", None) or {}).get("regularisers") or []),
        "step_unit": "optimiser step" if (run.root / "run.json").is_file() else "step",
        "thresholds": t,
        **({"samples": _samples(ys, kept, per_sample)} if keep_samples else {}),
    }  # fmt: skip


def _samples(ys: torch.Tensor, kept: torch.Tensor, per_sample: list) -> dict:
    """``labels`` (n,) and ``indices`` (n,) of the measured samples in their split, and
    ``metrics``: one {metric: [n values]} per checkpoint (None for a diverged one)."""
    return {"labels": ys.tolist(), "indices": kept.tolist(), "metrics": per_sample}
