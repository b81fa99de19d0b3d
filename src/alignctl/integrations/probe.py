"""Measuring a model on a fixed probe set in the middle of training, without changing the
training: what the monitor and both framework callbacks share.

A measurement runs :func:`alignctl.measure` on the probe in eval mode and, when labels are
given, the probe accuracy (and a held-out accuracy), then puts back every piece of state it
could have touched: each submodule's train/eval mode and the random number generators (torch
CPU, every CUDA device once CUDA is initialised, Python ``random``, NumPy's global generator).
Parameter gradients are not touched (the vector-Jacobian products are taken with respect to
the inputs only) and eval mode freezes batch-norm statistics, so the training that follows is
bit for bit the one without measurement (``tests/test_monitor.py``).

The entries are the lines of ``alignment.jsonl`` (:mod:`alignctl.report.monitor_log`); the
verdict and the recommendation come from the library's rules (``report.verdict``), and with
``stop_when="stop"`` a ``stop`` recommendation asks the training loop to stop.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import torch

from alignctl.errors import InputError, first_line, short
from alignctl.integrations.loop import keeps_rng, preserved_state
from alignctl.report import monitor_log

STOP_WHEN = (None, "stop")
PREFIX = "alignment/"  # of the scalars the integrations report


def _as_tensor(x, what: str) -> torch.Tensor | None:
    from alignctl.geometry.arguments import as_inputs

    return None if x is None else as_inputs(x, what)


def _logits(model: torch.nn.Module, x: torch.Tensor, dev: torch.device) -> torch.Tensor:
    """The model's logits on x, fed as ``alignctl analyze`` feeds a checkpoint's model
    (:func:`alignctl.evaluation.accuracy.predict`): a copy of each chunk (a forward may write
    its input, x /= 255), integer data no embedding reads (``uint8`` images) as floats in the
    model's dtype, the logits picked from a dict/tuple output."""
    from alignctl.evaluation.accuracy import predict

    return predict(model, x, dev)


def _device_of(model: torch.nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


@contextlib.contextmanager
def _no_autocast(dev: torch.device) -> Iterator[None]:
    """Full precision inside a caller's ``torch.autocast`` (a loop calling ``mon.step`` in its
    mixed-precision block): the measurement is the one ``alignctl analyze`` makes of the same
    weights, whatever context the loop calls it from."""
    available = getattr(torch.amp, "is_autocast_available", None)  # torch >= 2.4
    if available is not None and not available(dev.type):
        yield
        return
    with torch.autocast(dev.type, enabled=False):
        yield


class Probe:
    """A fixed probe set, the metrics to take on it, and the measurements so far.

    Args:
        probe_x: inputs (n, ...): floats, or integer token ids for token models.
        probe_y: integer labels (n,) or None; labels give the probe accuracy, which the
            verdicts (and so ``stop_when``) need.
        metrics: ``fast`` (centroid metrics: one backward pass), ``standard``, ``full`` or
            names (:func:`alignctl.report.analysis.resolve_metrics`).
        test: optional held-out ``(x, y)``: its accuracy makes the verdicts label-based
            rather than inferred from centroid alignment.
        stop_when: None, or ``"stop"``: ask to stop when the recommendation is ``stop``.
        verdict: threshold overrides (the config's ``verdict:`` section).
    """

    @keeps_rng
    def __init__(self, probe_x, probe_y=None, *, metrics="fast", test=None, stop_when=None,
                 batch_size: int | None = None, verdict: dict | None = None) -> None:  # fmt: skip
        from alignctl.geometry.arguments import count
        from alignctl.geometry.metrics import METRICS
        from alignctl.report.analysis import resolve_metrics
        from alignctl.report.verdict import thresholds

        if stop_when not in STOP_WHEN:
            raise InputError(f"stop_when must be None or 'stop', not {short(stop_when)}")
        self.x = _as_tensor(probe_x, "probe_x")
        self.y = _as_tensor(probe_y, "probe_y")
        if self.y is not None and self.y.reshape(-1).shape[0] != self.x.shape[0]:
            raise InputError(f"{self.y.numel()} probe labels for {self.x.shape[0]} probe inputs")
        self.test = None
        if test is not None:
            if not isinstance(test, (tuple, list)) or len(test) != 2 or test[1] is None:
                raise InputError("test must be a pair (x, y) of held-out inputs and labels")
            self.test = (_as_tensor(test[0], "test x"), _as_tensor(test[1], "test y"))
        if stop_when is not None and self.y is None:  # it could never fire: say so now
            raise InputError("stop_when='stop' needs probe labels (probe_y): the "
                             "recommendation reads the probe accuracy")  # fmt: skip
        self.names = resolve_metrics(metrics)
        if self.y is None and any(METRICS.get(n).needs == "label" for n in self.names):
            raise InputError("these metrics need probe labels: pass probe_y")
        self.stop_when, self.batch_size = stop_when, count(batch_size, "batch_size")
        self.t = thresholds(verdict)
        self.entries: list[dict] = []
        self.stop_reason: str | None = None
        self.offset: float | str | None = "unknown"  # report/evidence.input_offset, once

    def measure(self, model: torch.nn.Module, step: int) -> dict:
        """Measure ``model`` (mapping probe inputs to (n, C) or (n,)) at ``step``; returns the
        log entry with its verdict, and decides whether to stop. A model that fails on the
        probe (shapes, token ids out of range): InputError naming the probe."""
        t0 = time.perf_counter()
        from alignctl.geometry.arguments import NotApplicable

        try:
            values, accs, n_classes = self._measure(model)
        except (MemoryError, torch.OutOfMemoryError):
            raise
        except Exception as e:  # noqa: BLE001 (the model does not take the probe: say so)
            if isinstance(e, InputError) and not isinstance(e, NotApplicable):
                raise
            text = e.why if isinstance(e, NotApplicable) else first_line(e)
            raise InputError(
                f"the model cannot be applied to the probe (probe_x of shape "
                f"{tuple(self.x.shape)}, {self.x.dtype}): {text}"
            ) from e
        means = {k: float(v.double().mean()) for k, v in values.items()}
        stds = {k: float(v.double().std(unbiased=False)) for k, v in values.items()}
        entry = monitor_log.make_entry(
            step, means, stds, train_accuracy=accs[0], test_accuracy=accs[1],
            n_samples=len(self.x), n_classes=n_classes, input_offset=self.offset,
            time=time.time(), seconds=time.perf_counter() - t0,
        )  # fmt: skip
        self.entries.append(entry)
        monitor_log.annotate(self.entries, t=self.t, since=len(self.entries) - 1)
        self._decide()
        return entry

    def rewind(self, step: int) -> int | None:
        """Training (re)starts at ``step``: forget the measurements at it or after (another run's,
        or a future a resume abandons), which the verdicts and the stop decision must not read;
        returns the last step kept (None: none)."""
        self.entries = [e for e in self.entries if e["step"] < step]
        self.stop_reason = None
        return self.entries[-1]["step"] if self.entries else None

    def _measure(self, model: torch.nn.Module):
        """(per-sample metric values, [probe accuracy, held-out accuracy], C)."""
        from alignctl.evaluation.losses import accuracy
        from alignctl.geometry.inputs import ModelFront
        from alignctl.geometry.measure import measure
        from alignctl.geometry.placement import prepare
        from alignctl.geometry.vjp import check_labels
        from alignctl.geometry.wrappers import unwrap
        from alignctl.report.evidence import input_offset

        # the wrapped module: DDP's own forward broadcasts buffers, a collective that a
        # probe measured on one rank would wait in forever (geometry/wrappers.py)
        model = unwrap(model)
        seen: list[torch.Tensor] = []
        with preserved_state(model), _no_autocast(_device_of(model)):
            model.eval()
            # the model measure() runs (a float32 copy of a bfloat16/float16 model, as analyze
            # measures its checkpoints): the accuracies come from the same function
            model, dev, _ = prepare(model, _device_of(model), None)
            values = measure(model, self.x, self.y, metrics=self.names,
                             batch_size=self.batch_size, device=dev, outputs=seen)  # fmt: skip
            if self.offset == "unknown":  # token ids: the Jacobian is the embedding's, no offset
                tokens = ModelFront(model, self.x[:2].to(dev), None).tokens
                self.offset = None if tokens else input_offset(self.x)
            with torch.no_grad():
                # the logits of measure's own forward passes: the accuracy costs no extra pass
                out = seen[0] if seen else _logits(model, self.x, dev)
                accs = [None, None]
                n_classes = 1 if out.dim() == 1 else out.shape[-1]
                if self.y is not None:
                    # a label no output stands for would count as wrong, silently (measure
                    # checks labels only for the metrics that read them)
                    y = check_labels(self.y, len(self.x), n_classes)
                    accs[0] = accuracy(out, y.to(out.device))
                if self.test is not None:
                    tout = _logits(model, self.test[0], dev)
                    ty = check_labels(self.test[1], len(self.test[0]), n_classes)
                    accs[1] = accuracy(tout, ty.to(tout.device))
        return values, accs, n_classes

    def recommendation(self) -> dict:
        return monitor_log.recommendation(self.entries, self.t)

    def _decide(self) -> None:
        # never on the first measurement: a trend needs two points, and one point read as
        # "flat" would end a run that starts generalised (fine-tuning) before it trained
        if self.stop_when is None or self.stop_reason is not None or len(self.entries) < 2:
            return
        # nor on the first measurement that fits the probe: the recommendation then has no
        # trend since the fit ("confirm on later checkpoints"), which only training on gives
        live = [e for e in self.entries if e.get("verdict") != "diverged"]
        fit = self.t["fit"]
        first = next((i for i, e in enumerate(live) if (e.get("train_accuracy") or 0) >= fit), None)
        if first is not None and first == len(live) - 1:
            return
        rec = self.recommendation()
        if rec["action"] == self.stop_when:
            step = self.entries[-1]["step"]
            self.stop_reason = f"alignctl: stopping at step {step}: {rec['reason']}"

    @property
    def should_stop(self) -> bool:
        return self.stop_reason is not None

    def scalars(self, entry: dict, prefix: str = PREFIX) -> dict[str, float]:
        """The entry's finite means and accuracies as ``{prefix + name: value}``."""
        out = {f"{prefix}{k}": v for k, v in entry["metrics"].items() if v is not None}
        for key, name in (("train_accuracy", "probe_accuracy"), ("test_accuracy", "test_accuracy")):
            if entry.get(key) is not None:
                out[prefix + name] = entry[key]
        return out
