"""What watching alignment costs a training run: ratios measured in one run (interleaved
repetitions, medians).

    nice -n 10 python benchmarks/monitor_overhead.py [--reps 21] [--segment 500] [--steps 200]
        [--framework-reps 3] [--no-frameworks]

The MNIST preset's network (MLP 784-196-196-196-10 without bias, weights x8), AdamW 1e-3 wd
0.01, cross-entropy, batch 128, one CPU thread (CPU time of the process), on synthetic
MNIST-shaped data (uniform pixels in [0, 1], 10 classes from a fixed random linear teacher: no
data set is downloaded; the costs depend on the shapes only). The probe is 512 training
samples with labels; metrics ``fast`` (the centroid metrics, one backward pass) every 100
steps, as the README recommends.

  plain loop   segments of ``--segment`` training steps (default 500: five measurements)
               with ``alignctl.Monitor(every=100)`` / the same without, run back to back;
               the median of the per-pair ratios and its 90% bootstrap interval; target <=
               1.02. Also the in-run ratio (the monitored run's time over the same run's time
               less what ``Monitor.step`` spent); one measurement right after 100 training
               steps and the same repeated at once (warm caches), as training steps; and its
               floor (the probe's forward and input-gradient backward alone) in time and in
               multiply-adds.
  Lightning    ``lightning.Trainer.fit`` for ``--steps`` steps with the AlignmentCallback
               (every_n_steps=100, a CSVLogger receiving the metrics): the run's CPU time over
               the same run's CPU time less the callback's (timed inside the run: separate
               runs differ by far more than the callback costs on a shared machine).
  Hugging Face ``transformers.Trainer.train`` likewise (``report_to`` none; the metrics go to
               ``log_history``).

Steps are numbered from 1, so each monitored segment measures exactly once; the framework runs
(``--steps`` steps each) measure at the start too (step 0), as the callbacks do.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import alignctl
from alignctl.integrations.probe import Probe

BATCH, PROBE, EVERY = 128, 512, 100


def data(n=4096, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 784, generator=g)
    teacher = torch.randn(784, 10, generator=g)
    return x, ((x - 0.5) @ teacher).argmax(1)


def network():
    from alignctl.train.presets import PRESETS

    spec = PRESETS.get("mnist")()["model"]
    torch.manual_seed(0)
    return alignctl.MODELS.get("mlp")(**{k: v for k, v in spec.items() if k != "arch"})


class Loop:
    """A plain training loop; ``segment(n)`` runs n more steps (monitored or not)."""

    def __init__(self, monitored: bool, out: Path, device: str = "cpu"):
        self.x, self.y = (t.to(device) for t in data())
        self.net = network().to(device)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=1e-3, weight_decay=0.01)
        self.gen = torch.Generator().manual_seed(1)
        self.step, self.inside = 0, 0.0  # CPU seconds spent in Monitor.step
        self.mon = None
        if monitored:
            self.mon = alignctl.Monitor(self.net, self.x[:PROBE], self.y[:PROBE], every=EVERY,
                                        metrics="fast", out=out, overwrite=True)  # fmt: skip

    def segment(self, n: int) -> None:
        for _ in range(n):
            self.step += 1
            idx = torch.randint(0, len(self.x), (BATCH,), generator=self.gen).to(self.x.device)
            loss = F.cross_entropy(self.net(self.x[idx]), self.y[idx])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            if self.mon is not None:
                t0 = time.process_time()
                self.mon.step(self.step)
                self.inside += time.process_time() - t0


def floor(net, x) -> None:
    """What any exact measurement of the centroid metrics costs: the probe's forward pass and
    one backward pass to its input (mu = J^T 1 for every sample at once)."""
    xg = x.clone().requires_grad_(True)
    torch.autograd.grad(net(xg).sum(), xg)


def macs(net) -> tuple[int, int]:
    """Multiply-adds of (one training step, the floor) for a stack of Linear layers: the step
    forwards BATCH rows, then takes weight gradients (one product per layer) and input
    gradients for every layer but the first; the floor forwards PROBE rows and takes input
    gradients for every layer."""
    sizes = [m.in_features * m.out_features for m in net.modules()
             if isinstance(m, torch.nn.Linear)]  # fmt: skip
    fwd = sum(sizes)
    return BATCH * (3 * fwd - sizes[0]), PROBE * 2 * fwd


def paired(plain, watched, segment: int, reps: int) -> tuple[list[float], float]:
    """Per-pair ratios (monitored segment / the plain segment run just before it, CPU time of
    this process) and the in-run ratio of all monitored segments. CPU time, not wall-clock:
    on a shared machine the wall-clock of the same work varies by +-15% between repetitions,
    far more than the 2% to be measured; pairing cancels slow drift of the machine's load."""
    plain.segment(segment)
    watched.segment(segment)  # warm-up
    ratios, total, inside0 = [], 0.0, watched.inside
    for _ in range(reps):
        t0 = time.process_time()
        plain.segment(segment)
        t1 = time.process_time()
        watched.segment(segment)
        t2 = time.process_time()
        ratios.append((t2 - t1) / (t1 - t0))
        total += t2 - t1
    inside = watched.inside - inside0
    return ratios, total / (total - inside)


def bootstrap_median(values: list[float], n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """90% percentile-bootstrap interval of the median."""
    import random

    rng = random.Random(seed)
    meds = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(n))
    return meds[int(0.05 * n)], meds[int(0.95 * n) - 1]


def interleaved(cases: dict, reps: int) -> dict[str, float]:
    """Median CPU seconds of each case (this process, all threads), the cases round-robin."""
    for fn in cases.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(reps):
        for k, fn in cases.items():
            t0 = time.process_time()
            fn()
            times[k].append(time.process_time() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def timed(cb):
    """Count the CPU seconds the callback spends (its measurements) in ``cb.cpu``."""
    inner, cb.cpu = cb._maybe_measure, 0.0

    def wrapper(*args, **kwargs):
        t0 = time.process_time()
        out = inner(*args, **kwargs)
        cb.cpu += time.process_time() - t0
        return out

    cb._maybe_measure = wrapper
    return cb


def in_run_ratio(fit, steps: int, reps: int, folder: Path) -> tuple[float, float]:
    """(median of total / (total - callback) over ``reps`` runs with the callback, median
    callback CPU seconds): the training time with the callback over the same run's time
    without it, both from one run, so load drift between runs cancels."""
    fit(steps, True, folder / "warm")
    ratios, spent = [], []
    for i in range(reps):
        t0 = time.process_time()
        cb = fit(steps, True, folder / str(i))
        total = time.process_time() - t0
        ratios.append(total / (total - cb))
        spent.append(cb)
    return statistics.median(ratios), statistics.median(spent)


def lightning_fit(steps: int, callback: bool, folder: Path) -> None:
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    from alignctl.integrations.lightning import AlignmentCallback

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = network()

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, _):
            return F.cross_entropy(self(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-3, weight_decay=0.01)

    x, y = data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH)
    cbs = [timed(AlignmentCallback(x[:PROBE], y[:PROBE], every_n_steps=EVERY))] if callback else []
    trainer = L.Trainer(
        max_steps=steps, logger=CSVLogger(folder), callbacks=cbs, accelerator="cpu",
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )  # fmt: skip
    trainer.fit(Module(), loader)
    return cbs[0].cpu if cbs else 0.0


def hf_train(steps: int, callback: bool, folder: Path) -> None:
    import transformers
    from transformers.modeling_outputs import SequenceClassifierOutput

    from alignctl.integrations.transformers import AlignmentCallback

    class Tiny(transformers.PreTrainedModel):
        config_class = transformers.PretrainedConfig

        def __init__(self, config):
            super().__init__(config)
            self.net = network()

        def forward(self, x, labels=None):
            logits = self.net(x)
            loss = None if labels is None else F.cross_entropy(logits, labels)
            return SequenceClassifierOutput(loss=loss, logits=logits)

    x, y = data()

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return len(x)

        def __getitem__(self, i):
            return {"x": x[i], "labels": y[i]}

    args = transformers.TrainingArguments(
        str(folder), max_steps=steps, per_device_train_batch_size=BATCH, report_to=[],
        use_cpu=True, save_strategy="no", disable_tqdm=True, logging_strategy="no",
        learning_rate=1e-3, weight_decay=0.01, dataloader_num_workers=0,
    )  # fmt: skip
    cbs = [timed(AlignmentCallback(x[:PROBE], y[:PROBE], every_n_steps=EVERY))] if callback else []
    trainer = transformers.Trainer(model=Tiny(transformers.PretrainedConfig()), args=args,
                                   train_dataset=Rows(), callbacks=cbs)  # fmt: skip
    trainer.remove_callback(transformers.PrinterCallback)  # logs are data, not output here
    trainer.train()
    return cbs[0].cpu if cbs else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=21)
    ap.add_argument("--segment", type=int, default=500, help="steps per plain-loop segment")
    ap.add_argument("--steps", type=int, default=200, help="framework runs")
    ap.add_argument("--framework-reps", type=int, default=3)
    ap.add_argument("--no-frameworks", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    import logging

    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plain, watched = Loop(False, tmp / "p"), Loop(True, tmp / "m")
        ratios, in_run = paired(plain, watched, a.segment, a.reps)
        lo, hi = bootstrap_median(ratios)
        n_meas = a.segment // EVERY
        print(f"plain loop, {a.reps} pairs of {a.segment}-step segments ({n_meas} measurements "
              f"each; Monitor(every={EVERY}, fast, {PROBE} probe samples)):")  # fmt: skip
        print(f"  ratio monitored / plain: median {statistics.median(ratios):.4f}, 90% interval "
              f"[{lo:.4f}, {hi:.4f}] (target <= 1.02)")  # fmt: skip
        print(f"  in-run ratio (monitored time / the same less Monitor.step): {in_run:.4f}")
        probe = Probe(plain.x[:PROBE], plain.y[:PROBE], metrics="fast")
        # round-robin: "measurement" runs right after 100 training steps (as in a run), "warm"
        # repeats it at once (its data and activations still in the caches), then the floor
        t = interleaved({"plain": lambda: plain.segment(EVERY),
                         "measurement": lambda: probe.measure(plain.net, 0),
                         "warm": lambda: probe.measure(plain.net, 0),
                         "floor": lambda: floor(plain.net, plain.x[:PROBE])}, a.reps)  # fmt: skip
        for case, what in (
            ("measurement", "one measurement right after 100 training steps"),
            ("warm", "the same measurement repeated at once (warm caches)"),
            ("floor", "its floor (forward + input-gradient backward alone)"),
        ):
            print(
                f"  {what}: {t[case] * 1e3:.2f} ms = {t[case] / t['plain'] * EVERY:.2f} "
                f"training steps; 1 + that / {EVERY} = {1 + t[case] / t['plain']:.4f}"
            )
        step, probe_macs = macs(plain.net)
        print(f"  multiply-adds: a training step {step / 1e6:.1f}M, the floor "
              f"{probe_macs / 1e6:.1f}M = {probe_macs / step:.2f} steps: at every={EVERY} "
              f"the overhead cannot be under {1 + probe_macs / step / EVERY:.4f} on a device "
              f"where time follows multiply-adds")  # fmt: skip
        if a.no_frameworks:
            return
        for name, fit in (("Lightning", lightning_fit), ("Hugging Face", hf_train)):
            try:
                ratio, spent = in_run_ratio(fit, a.steps, a.framework_reps, tmp / name)
            except ImportError as e:
                print(f"{name}: skipped ({e})")
                continue
            print(f"{name} Trainer, {a.steps} steps with AlignmentCallback(every_n_steps="
                  f"{EVERY}): {spent * 1e3:.0f} ms CPU in the callback; training time with / "
                  f"without it: {ratio:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
