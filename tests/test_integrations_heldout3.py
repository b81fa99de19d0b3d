"""The framework callbacks in Trainer workflows the other integration tests do not use
(qa_live): a Lightning training resumed from its checkpoint."""

import pytest
import torch
from test_integrations import toy

KEY = "alignment/centroid_alignment"


def _module():
    L = pytest.importorskip("lightning")

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
                                           torch.nn.Linear(16, 3))  # fmt: skip

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, _):
            return torch.nn.functional.cross_entropy(self(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Module()


def _fit(folder, callbacks, max_steps, ckpt_path=None):
    L = pytest.importorskip("lightning")
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    L.seed_everything(0, verbose=False)
    x, y = toy()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    saver = ModelCheckpoint(dirpath=folder / "ck", every_n_train_steps=4, save_top_k=-1)
    trainer = L.Trainer(
        max_steps=max_steps, logger=TensorBoardLogger(folder, name="tb", version=0),
        callbacks=[*callbacks, saver], accelerator="cpu", enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(_module(), loader, ckpt_path=ckpt_path)
    return trainer


def _logged_steps(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = []
    for f in sorted((folder / "tb" / "version_0").glob("events*")):
        events = EventAccumulator(str(f))
        events.Reload()
        if KEY in events.Tags()["scalars"]:
            steps += [e.step for e in events.Scalars(KEY)]
    return steps


def test_lightning_resume_from_ckpt_path_logs_the_checkpoint_step_once(tmp_path):
    """qa_live: ``trainer.fit(ckpt_path=...)`` measured and logged the checkpoint's own step
    again at on_train_start (a duplicate point in every logger), and the resumed series began
    there, so its verdicts and ``stop_when`` ignored the steps before the checkpoint."""
    pytest.importorskip("lightning")
    from alignctl.integrations.lightning import AlignmentCallback

    x, y = toy(seed=1)
    first = AlignmentCallback(x[:32], y[:32], every_n_steps=4)
    _fit(tmp_path, [first], max_steps=8)
    assert _logged_steps(tmp_path) == [0, 4, 8]
    resumed = AlignmentCallback(x[:32], y[:32], every_n_steps=4)  # a new process's callback
    trainer = _fit(tmp_path, [resumed], 12, ckpt_path=tmp_path / "ck" / "epoch=0-step=8.ckpt")
    assert trainer.global_step == 12
    assert _logged_steps(tmp_path) == [0, 4, 8, 12]
    assert [e["step"] for e in resumed.probe.entries] == [0, 4, 8, 12]
    assert [e["metrics"] for e in resumed.probe.entries[:3]] == [
        e["metrics"] for e in first.probe.entries
    ]
    assert KEY in trainer.callback_metrics


def test_lightning_resume_with_another_probe_measures_afresh(tmp_path):
    pytest.importorskip("lightning")
    from alignctl.integrations.lightning import AlignmentCallback

    x, y = toy(seed=1)
    _fit(tmp_path, [AlignmentCallback(x[:32], y[:32], every_n_steps=4)], max_steps=8)
    other = AlignmentCallback(x[32:], y[32:], every_n_steps=4)  # not the checkpoint's series
    _fit(tmp_path, [other], 12, ckpt_path=tmp_path / "ck" / "epoch=0-step=8.ckpt")
    assert [e["step"] for e in other.probe.entries] == [8, 12]


def test_hf_token_probe_holding_the_pad_id_is_an_input_error(tmp_path):
    """qa_live: a GPT-2 sequence classifier pools its logits at the last token that is not
    pad_token_id when given input_ids, but at the last position when given inputs_embeds (the
    path the Jacobian is taken on): a probe drawn over the whole vocabulary (pad id included)
    was measured, and its probe accuracy taken, as another function than the model's."""
    pytest.importorskip("transformers")
    from test_integrations import hf_trainer, tiny_gpt2, token_rows

    from alignctl.errors import InputError
    from alignctl.integrations.transformers import AlignmentCallback

    ids, labels, rows = token_rows()
    padded = ids[:16].clone()
    padded[:4, -2:] = 0  # tiny_gpt2's pad_token_id
    cb = AlignmentCallback(padded, labels[:16], every_n_steps=3)
    with pytest.raises(InputError, match="pad_token_id 0"):
        hf_trainer(tmp_path, tiny_gpt2(), rows, [cb], max_steps=3).train()
    ok = AlignmentCallback(ids[:16], labels[:16], every_n_steps=3)  # no pad id: measured
    hf_trainer(tmp_path / "b", tiny_gpt2(), rows, [ok], max_steps=3).train()
    assert [e["step"] for e in ok.probe.entries] == [0, 3]
