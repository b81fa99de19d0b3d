"""When the monitor and the callbacks measure, and what they take as a step (qa7): steps that
jump past a multiple of ``every`` (Lightning's manual optimization with two optimizers, a loop
counting samples), a callback reused for a second training or by a second Trainer, steps that
are not integers or go back, and a model or probe that do not fit: InputError, not torch's."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_integrations import hf_trainer, tiny_gpt2, token_rows, toy

import alignctl
from alignctl.errors import InputError
from alignctl.integrations.loop import MAX_STEP, Every, as_step

KEY = "alignment/centroid_alignment"


def first_of_each_bucket(steps, every):
    """The specification: the first step seen in each interval [k every, (k+1) every), once
    a multiple of every has been seen."""
    out, buckets = [], set()
    for s in steps:
        if (out or s % every == 0) and s // every not in buckets:
            out.append(s)
            buckets.add(s // every)
    return out


@given(st.lists(st.integers(0, 10_000), max_size=40), st.integers(1, 50))
def test_every_measures_the_first_step_of_each_multiple(raw, every):
    steps = sorted(raw)
    sched, measured = Every(every), []
    for s in steps:
        if sched.due(s):
            sched.last = s
            measured.append(s)
    assert measured == first_of_each_bucket(list(dict.fromkeys(steps)), every)


@given(st.one_of(st.integers(-(2**70), 2**70), st.floats(), st.booleans(), st.text(max_size=5),
                 st.none(), st.integers(0, 2**40).map(torch.tensor)))  # fmt: skip
def test_a_step_is_an_integer_a_log_line_can_hold(value):
    from alignctl.report.monitor_log import _is_measurement

    try:
        step = as_step(value)
    except InputError:
        exact = isinstance(value, int) and not isinstance(value, bool)
        exact = exact or (isinstance(value, torch.Tensor) and not value.is_floating_point())
        assert not exact or not 0 <= int(value) <= MAX_STEP
        return
    assert type(step) is int and step == int(value) and 0 <= step <= MAX_STEP
    assert _is_measurement({"step": step, "metrics": {}})  # its own reader keeps the line


def test_monitor_steps_that_jump_or_go_back(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    x, y = toy(n=16)
    mon = alignctl.Monitor(net, x, y, every=1000, out=tmp_path / "m")
    for samples in range(0, 5000, 384):  # a loop that counts samples, batch 384
        mon.step(samples)
    assert [e["step"] for e in mon.entries] == [0, 1152, 2304, 3072, 4224]
    mon.step(4224)  # seen again: not measured twice
    with pytest.raises(InputError, match="must not go back"):
        mon.step(100)  # the batch index of the next epoch
    with pytest.raises(InputError, match="measured already"):
        mon.measure(4224)
    for bad in (-1, 2.0, "5", True, 2**63):
        with pytest.raises(InputError, match="integer"):
            mon.step(bad)
    mon.close()
    from alignctl.report.monitor_log import read_log

    entries, notes = read_log(tmp_path / "m" / "alignment.jsonl")
    assert len(entries) == 5 and not notes


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"model": lambda x: x}, "torch.nn.Module"),
        ({"test": torch.randn(4, 8)}, "pair"),
        ({"test": (torch.randn(4, 8), None)}, "pair"),
        ({"probe_x": torch.randn(16, 8, dtype=torch.complex64)}, "complex"),
        ({"probe_x": torch.empty(16, 8, device="meta")}, "meta"),
    ],
)
def test_a_model_or_probe_of_the_wrong_kind_is_an_input_error(kwargs, match):
    x, y = toy(n=16)
    args = {"model": torch.nn.Linear(8, 3), "probe_x": x, "probe_y": y, **kwargs}
    with pytest.raises(InputError, match=match):
        alignctl.Monitor(args.pop("model"), args.pop("probe_x"), args.pop("probe_y"), out=None,
                         **args)  # fmt: skip


@pytest.mark.parametrize("probe", [torch.randn(16, 5), torch.randn(16), torch.randn(16, 8, 2)])
def test_a_probe_the_model_cannot_take_is_an_input_error(probe):
    mon = alignctl.Monitor(torch.nn.Linear(8, 3), probe, out=None)
    with pytest.raises(InputError, match=r"cannot be applied to the probe \(probe_x of shape"):
        mon.step(0)


# ---------------------------------------------------------------- Lightning
def test_lightning_manual_optimization_with_two_optimizers(tmp_path):
    L = pytest.importorskip("lightning")
    from alignctl.integrations.lightning import AlignmentCallback

    class TwoOptimizers(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False
            self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
                                           torch.nn.Linear(16, 3))  # fmt: skip
            self.critic = torch.nn.Linear(8, 1)

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, _):
            x, y = batch
            for opt, loss in zip(self.optimizers(), (
                torch.nn.functional.cross_entropy(self(x), y), self.critic(x).pow(2).mean()
            ), strict=True):  # fmt: skip
                opt.zero_grad()
                self.manual_backward(loss)
                opt.step()  # each counts in trainer.global_step

        def configure_optimizers(self):
            return [torch.optim.SGD(self.net.parameters(), lr=0.1),
                    torch.optim.SGD(self.critic.parameters(), lr=0.1)]  # fmt: skip

    x, y = toy()
    cb = AlignmentCallback(x[:16], y[:16], every_n_steps=3)
    trainer = L.Trainer(max_steps=24, logger=False, callbacks=[cb], accelerator="cpu",
                        enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False)  # fmt: skip
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    trainer.fit(TwoOptimizers(), loader)
    steps = [e["step"] for e in cb.probe.entries]
    assert steps == first_of_each_bucket(range(0, 25, 2), 3)  # not only the multiples of 6
    assert steps == [0, 4, 6, 10, 12, 16, 18, 22, 24]


def test_lightning_callback_reused_for_a_second_training(tmp_path):
    pytest.importorskip("lightning")
    from test_integrations import lightning_fit

    from alignctl.integrations.lightning import AlignmentCallback

    x, y = toy(seed=1)
    cb = AlignmentCallback(x[:16], y[:16], every_n_steps=4)
    lightning_fit(tmp_path / "a", [cb], max_steps=8)
    first = [e["time"] for e in cb.probe.entries]
    lightning_fit(tmp_path / "b", [cb], max_steps=4)
    # the second training's own series: measured from its step 0, the first run's entries
    # (which verdicts and stop_when read) gone
    assert [e["step"] for e in cb.probe.entries] == [0, 4]
    assert not set(first) & {e["time"] for e in cb.probe.entries}


def test_lightning_module_without_forward_is_an_input_error(tmp_path):
    L = pytest.importorskip("lightning")
    from alignctl.integrations.lightning import AlignmentCallback

    class NoForward(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(8, 3)

        def training_step(self, batch, _):
            return torch.nn.functional.cross_entropy(self.net(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    x, y = toy()
    trainer = L.Trainer(max_steps=2, logger=False, accelerator="cpu", enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False,
                        callbacks=[AlignmentCallback(x, y)])  # fmt: skip
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    with pytest.raises(InputError, match="defines no forward"):
        trainer.fit(NoForward(), loader)


# ---------------------------------------------------------------- Hugging Face
def test_hf_callback_reused_by_a_second_trainer_logs_to_it(tmp_path):
    """qa7: the Trainer found at the first on_train_begin was kept, so a second Trainer's
    measurements went into the first one's log_history (and report_to), none into its own."""
    pytest.importorskip("transformers")
    from alignctl.integrations.transformers import AlignmentCallback

    ids, labels, rows = token_rows()
    cb = AlignmentCallback(ids[:16], labels[:16], every_n_steps=3)
    first = hf_trainer(tmp_path / "a", tiny_gpt2(), rows, [cb], max_steps=6)
    first.train()
    second = hf_trainer(tmp_path / "b", tiny_gpt2(), rows, [cb], max_steps=6)
    second.train()
    for trainer in (first, second):
        assert [h["step"] for h in trainer.state.log_history if KEY in h] == [0, 3, 6]
    assert [e["step"] for e in cb.probe.entries] == [0, 3, 6]


def test_hf_token_ids_the_model_cannot_embed_are_an_input_error(tmp_path):
    pytest.importorskip("transformers")
    from alignctl.integrations.transformers import AlignmentCallback

    ids, labels, rows = token_rows()
    cb = AlignmentCallback(ids[:16] + 100, labels[:16], every_n_steps=3)  # vocabulary: 32
    # the embedding and the id named (geometry/indices.py), not torch's "index out of range"
    with pytest.raises(InputError, match=r"token id 1\d\d is out of range .*wte, which has 32"):
        hf_trainer(tmp_path, tiny_gpt2(), rows, [cb], max_steps=3).train()


@pytest.mark.parametrize("failure", ["no tensorboard", "wrong model_config"])
def test_a_monitor_that_cannot_start_leaves_the_earlier_run_as_it_was(tmp_path, monkeypatch,
                                                                      failure):  # fmt: skip
    """qa7: with overwrite=True the earlier run was deleted first, then TensorBoard missing (a
    raw ModuleNotFoundError) or a model_config that does not fit failed, leaving an empty
    folder and a writer record of a monitor that never ran."""
    import sys

    out = tmp_path / "m"
    x, y = toy(n=16)
    net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    alignctl.Monitor(net, x, y, every=1, out=out).close()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    kwargs = {"overwrite": True}
    if failure == "no tensorboard":
        monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
        kwargs["tensorboard"] = True
    else:
        wrong = {"arch": "mlp", "in_features": 8, "hidden": [5], "out_features": 3}
        kwargs.update(save_checkpoints=True, model_config=wrong)
    with pytest.raises(InputError, match="TensorBoard|does not describe"):
        alignctl.Monitor(net, x, y, every=1, out=out, **kwargs)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
