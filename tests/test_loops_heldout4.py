"""Held-out checks of the monitor and the callbacks in the training loops people write: models
in bfloat16, image data kept as ``uint8``, resumed Hugging Face trainings. Each measurement
must be the one ``alignctl analyze`` makes of the same weights, and the series a stop decision
reads must be the uninterrupted run's."""

import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import alignctl
from alignctl.cli.assemble import app

runner = CliRunner()
KEY = "alignment/centroid_alignment"


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3))


def _images(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g)
    return x, (x[:, 0, 0, 0] % 3).long()


def test_a_uint8_held_out_split_is_fed_as_the_probe_is():
    """MNIST-style uint8 tensors for the probe and the test split: the test accuracy is the
    float model's on the images as floats (before: the raw uint8 batch went into the model,
    'Input type (unsigned char) and bias type (float) should be the same', reported as a
    probe the model cannot take)."""
    model = _cnn()
    x, y = _images()
    mon = alignctl.Monitor(model, x[:32], y[:32], out=None, test=(x[32:], y[32:]))
    entry = mon.measure(0)
    with torch.no_grad():
        want = (model(x[32:].float()).argmax(1) == y[32:]).double().mean().item()
    assert entry["test_accuracy"] == pytest.approx(want)


def _bf16_factory(tmp_path):
    (tmp_path / "nets.py").write_text(
        "from torch import nn\n\ndef make():\n    return nn.Sequential(nn.Linear(6, 16), "
        "nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))\n"
    )
    return {"factory": f"{tmp_path / 'nets.py'}:make"}


def test_a_bfloat16_model_with_a_test_split_measures_as_analyze_does(tmp_path):
    """A model converted to bfloat16 entirely, float32 data: the monitor measures a float32 copy
    (as analyze measures the saved weights), and the test accuracy is taken on that copy too
    (before: the bf16 model ran on the float32 test inputs, 'mat1 and mat2 must have the same
    dtype', an InputError on the first step)."""
    cfg = _bf16_factory(tmp_path)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2),
                          nn.Linear(16, 3)).bfloat16()  # fmt: skip
    g = torch.Generator().manual_seed(1)
    x = torch.randn(160, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    out = tmp_path / "m"
    with alignctl.Monitor(model, x[:96], y[:96], every=5, out=out, save_checkpoints=True,
                          model_config=cfg, test=(x[96:], y[96:])) as mon:  # fmt: skip
        for step in range(11):
            loss = nn.functional.cross_entropy(model(x[:96].bfloat16()).float(), y[:96])
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.step(step)
    r = runner.invoke(app, ["analyze", str(out), "--metrics", "fast", "--json", "-"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert [c["step"] for c in report["checkpoints"]] == [0, 5, 10]
    for got, want in zip(report["checkpoints"], mon.entries, strict=True):
        assert got["train_accuracy"] == want["train_accuracy"]
        assert got["test_accuracy"] == want["test_accuracy"]
        for k, v in want["metrics"].items():
            assert got["metrics"][k] == pytest.approx(v, rel=1e-5, abs=1e-7), k
    assert report["recommendation"] == mon.recommendation()


# ---------------------------------------------------------------- a resumed Hugging Face run
def _hf(out, rows, callbacks, max_steps, **kw):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from test_integrations import tiny_gpt2

    args = transformers.TrainingArguments(
        str(out), max_steps=max_steps, per_device_train_batch_size=8, logging_steps=5,
        report_to=[], use_cpu=True, save_strategy="steps", save_steps=4, disable_tqdm=True,
        seed=0, learning_rate=1e-2, lr_scheduler_type="constant", **kw,
    )  # fmt: skip
    return transformers.Trainer(model=tiny_gpt2(), args=args, train_dataset=rows,
                                callbacks=callbacks)  # fmt: skip


@pytest.mark.parametrize("restore", [False, True])
def test_hf_resumed_in_a_new_process_judges_the_whole_series(tmp_path, restore):
    """A training resumed from its checkpoint by a new process (a new callback, as after a
    crash or a preempted job): the series the verdicts and ``stop_when`` read is the
    uninterrupted run's, as Lightning's ``fit(ckpt_path=...)`` keeps it (before: the callback
    started empty at the checkpoint's step, so a stop decision that reads the trend over the
    run, or the best step, saw only the resumed part). ``restore_callback_states_from_checkpoint``
    (which rebuilds the Trainer's stateful callbacks) changes nothing."""
    pytest.importorskip("transformers")
    from test_integrations import token_rows

    from alignctl.integrations.transformers import AlignmentCallback

    ids, labels, rows = token_rows()
    kw = {"every_n_steps": 2, "test": (ids[16:32], labels[16:32])}
    whole = AlignmentCallback(ids[:16], labels[:16], **kw)
    _hf(tmp_path / "whole", rows, [whole], max_steps=8).train()
    first = AlignmentCallback(ids[:16], labels[:16], **kw)
    _hf(tmp_path / "r", rows, [first], max_steps=4).train()
    resumed = AlignmentCallback(ids[:16], labels[:16], **kw)  # a new process
    opts = {"restore_callback_states_from_checkpoint": restore}
    trainer = _hf(tmp_path / "r", rows, [resumed], max_steps=8, **opts)
    trainer.train(resume_from_checkpoint=str(tmp_path / "r" / "checkpoint-4"))
    assert [e["step"] for e in resumed.probe.entries] == [0, 2, 4, 6, 8]
    for got, want in zip(resumed.probe.entries, whole.probe.entries, strict=True):
        assert got["metrics"] == pytest.approx(want["metrics"], rel=1e-5)
        assert got["verdict"] == want["verdict"]
    assert resumed.probe.recommendation() == whole.probe.recommendation()
    history = trainer.state.log_history
    assert [h["step"] for h in history if KEY in h] == [0, 2, 4, 6, 8]


def test_hf_resumed_with_another_probe_measures_afresh(tmp_path):
    """The saved series is another probe's: not read as this one's."""
    pytest.importorskip("transformers")
    from test_integrations import token_rows

    from alignctl.integrations.transformers import AlignmentCallback

    ids, labels, rows = token_rows()
    _hf(tmp_path, rows, [AlignmentCallback(ids[:16], labels[:16], every_n_steps=2)], 4).train()
    other = AlignmentCallback(ids[16:32], labels[16:32], every_n_steps=2)
    _hf(tmp_path, rows, [other], max_steps=8).train(resume_from_checkpoint=True)
    assert [e["step"] for e in other.probe.entries] == [4, 6, 8]


def test_lightning_bf16_true_precision_with_a_test_split(tmp_path):
    """``precision="bf16-true"`` converts the module to bfloat16; the probe and the test split
    are float32, as the data of such a run usually is (before: the test accuracy's forward
    pass failed with 'mat1 and mat2 must have the same dtype' at the start of training)."""
    L = pytest.importorskip("lightning")
    from lightning.pytorch.loggers import CSVLogger

    from alignctl.integrations.lightning import AlignmentCallback

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, _):
            return nn.functional.cross_entropy(self(batch[0]).float(), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    cb = AlignmentCallback(x[:32], y[:32], every_n_steps=2, test=(x[32:], y[32:]))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(
        max_steps=4, precision="bf16-true", logger=CSVLogger(tmp_path), callbacks=[cb],
        accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False,
    )  # fmt: skip
    trainer.fit(Module(), loader)
    assert [e["step"] for e in cb.probe.entries] == [0, 2, 4]
    assert all(e["test_accuracy"] is not None for e in cb.probe.entries)
    assert "alignment/test_accuracy" in trainer.callback_metrics
