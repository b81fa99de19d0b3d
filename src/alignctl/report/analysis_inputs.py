"""What :func:`alignctl.report.analysis.analyze` checks and derives before it measures: the
options no checkpoint changes (one InputError up front), which output is the logits, whether
the model takes tokens, the thread count, whether PGD applies, and what the report's numbers
were measured on (``measured_on``: data digest, weights, output)."""

from __future__ import annotations

import torch

from alignctl.errors import InputError
from alignctl.report.checkpoint_measure import _model_error


def attackable(data, tokens: bool) -> bool:
    """PGD needs a continuous test input (not tokens)."""
    return data.x_test is not None and len(data.x_test) > 0 and not tokens


def output_spec(run, output):
    """--output / output= first, else the config's ``model: {output: ...}``."""
    from alignctl.geometry.outputs import check_spec

    if output is not None:
        return check_spec(output)
    return check_spec((getattr(run.config, "model", None) or {}).get("output"))


def measured_on(run, data, output) -> dict:
    """The inputs a report's numbers depend on beyond its options: the SHA-256 of the data
    (:func:`alignctl.report.cache_keys.data_digest`), which weights were read and which output
    is the logits."""
    from alignctl.report.cache_keys import data_digest

    return {"data_sha256": data_digest(data), "weights": getattr(run, "weights", None),
            "state_key": getattr(run, "state_key", None), "output": output}  # fmt: skip


def check_options(run, samples, batch_size, steps, eps, alpha, on_checkpoint) -> None:
    """The options that no checkpoint changes, before any work: a bad one is one InputError,
    not every checkpoint ``diverged`` (a NaN batch size failed inside each measurement) nor a
    silent subset (``samples=-1`` measured all but one sample)."""
    from alignctl.geometry.arguments import count
    from alignctl.runs.validate import check_pgd

    if not all(hasattr(run, a) for a in ("config", "load_data", "build_model")):  # a Run
        raise InputError(f"analyze takes a run from alignctl.open_run(path), not "
                         f"{type(run).__name__}")  # fmt: skip
    count(samples, "samples")
    count(batch_size, "batch size")
    check_pgd(eps, alpha, count(steps, "PGD steps", optional=False))
    if on_checkpoint is not None and not callable(on_checkpoint):
        raise InputError(f"on_checkpoint must be callable, not {type(on_checkpoint).__name__}")


def token_inputs(model, x, dev, spec) -> bool:
    from alignctl.geometry.devices import eval_mode
    from alignctl.geometry.inputs import ModelFront

    try:
        with eval_mode(model):
            return ModelFront(model, x[:2].to(dev), spec).tokens
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 (any failure of the user's model is reported)
        raise _model_error(e) from None


def analysis_threads(threads, model, x, dev, tokens):
    from alignctl.geometry.threads import auto_threads, forward_work, num_threads

    if threads is None and dev.type == "cpu" and model is not None:
        xb = x[:1].to(dev) if tokens else x[:1].to(dev, torch.get_default_dtype())
        work = forward_work(model, xb) * 256  # a few hundred samples per batch
        threads = auto_threads(work, load_aware=True)
    return num_threads(threads)
