"""The framework callbacks under the real frameworks, on tiny models on the CPU: a Lightning
Trainer with a CSVLogger, a Hugging Face Trainer with its TensorBoard ``report_to``
integration (token ids and continuous inputs); metrics received, training unchanged, early
stopping from the recommendation. Skipped when an extra is not installed."""

import logging
import runpy
from pathlib import Path

import pytest
import torch

import alignctl

# with a held-out split, any network is "generalising" with flat test accuracy -> "stop"
EASY = {"fit": 0.0, "skill": -10.0, "plateau": 1e9, "chance_skill": -10.0}
KEYS = ("alignment/centroid_alignment", "alignment/centroid_norm", "alignment/probe_accuracy")


def toy(n=64, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


# ---------------------------------------------------------------- Lightning
def lightning_fit(tmp_path, callbacks, max_steps=8):
    L = pytest.importorskip("lightning")
    from lightning.pytorch.loggers import CSVLogger

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2),
                torch.nn.Linear(16, 3),
            )  # fmt: skip

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, _):
            x, y = batch
            return torch.nn.functional.cross_entropy(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    L.seed_everything(0, verbose=False)
    x, y = toy()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=8, shuffle=True
    )
    module = Module()
    trainer = L.Trainer(
        max_steps=max_steps, logger=CSVLogger(tmp_path), callbacks=callbacks, accelerator="cpu",
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )  # fmt: skip
    trainer.fit(module, loader)
    return trainer, module


def test_lightning_loggers_receive_the_metrics(tmp_path):
    import csv

    pytest.importorskip("lightning")
    from alignctl.integrations.lightning import AlignmentCallback

    x, y = toy(seed=1)
    cb = AlignmentCallback(x[:32], y[:32], every_n_steps=4)
    trainer, module = lightning_fit(tmp_path, [cb])
    rows = list(csv.DictReader(open(f"{trainer.logger.log_dir}/metrics.csv")))
    got = {int(r["step"]): r for r in rows if r.get(KEYS[0])}
    assert sorted(got) == [0, 4, 8]
    want = alignctl.measure(module, x[:32], metrics=["centroid_alignment"])["centroid_alignment"]
    assert float(got[8][KEYS[0]]) == pytest.approx(float(want.double().mean()), rel=1e-6)
    assert all(float(got[s][KEYS[2]]) >= 0 for s in got)
    assert KEYS[0] in trainer.callback_metrics  # for EarlyStopping / ModelCheckpoint


def test_lightning_training_is_unchanged_and_stops_on_stop(tmp_path, caplog):
    pytest.importorskip("lightning")
    from alignctl.integrations.lightning import AlignmentCallback

    x, y = toy(seed=1)
    _, plain = lightning_fit(tmp_path / "a", [])
    _, watched = lightning_fit(tmp_path / "b", [AlignmentCallback(x, y, every_n_steps=2)])
    watched_state = watched.state_dict()
    for k, a in plain.state_dict().items():
        assert torch.equal(a, watched_state[k]), k
    cb = AlignmentCallback(x, y, every_n_steps=4, stop_when="stop", verdict=EASY, test=toy(seed=2))
    with caplog.at_level(logging.WARNING, logger="alignctl"):
        trainer, _ = lightning_fit(tmp_path / "c", [cb], max_steps=50)
    assert trainer.global_step < 50 and cb.stop_reason and cb.stop_reason in caplog.text


# ---------------------------------------------------------------- Hugging Face
def hf_trainer(tmp_path, model, rows, callbacks, max_steps=10, report_to=()):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")  # the Trainer needs it

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return len(rows)

        def __getitem__(self, i):
            return rows[i]

    args = transformers.TrainingArguments(
        str(tmp_path / "hf"), max_steps=max_steps, per_device_train_batch_size=8,
        logging_steps=5, report_to=list(report_to), use_cpu=True, save_strategy="no",
        disable_tqdm=True, seed=0, learning_rate=1e-2,
    )  # fmt: skip
    return transformers.Trainer(model=model, args=args, train_dataset=Rows(), callbacks=callbacks)


def tiny_gpt2():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(
        vocab_size=32, n_positions=16, n_embd=16, n_layer=1, n_head=2, num_labels=2,
        pad_token_id=0, bos_token_id=1, eos_token_id=1,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.GPT2ForSequenceClassification(cfg)


def token_rows(n=48):
    ids = torch.randint(2, 32, (n, 8), generator=torch.Generator().manual_seed(0))
    labels = (ids[:, 0] > 16).long()
    return ids, labels, [{"input_ids": ids[i], "labels": labels[i]} for i in range(n)]


def test_hf_token_ids_reach_log_history_and_report_to(tmp_path):
    pytest.importorskip("transformers")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from alignctl.integrations.transformers import AlignmentCallback, TokenModel

    ids, labels, rows = token_rows()
    model = tiny_gpt2()
    cb = AlignmentCallback(ids[:16], labels[:16], every_n_steps=5)
    trainer = hf_trainer(tmp_path, model, rows, [cb], report_to=["tensorboard"])
    trainer.train()
    history = trainer.state.log_history
    measured = [h for h in history if KEYS[0] in h]
    assert [h["step"] for h in measured] == [0, 5, 10]
    assert [h["step"] for h in history if "loss" in h] == [5, 10]  # the Trainer's own logs stay
    want = alignctl.measure(TokenModel(model), ids[:16], metrics=["centroid_alignment"])
    value = float(want["centroid_alignment"].double().mean())
    assert measured[-1][KEYS[0]] == pytest.approx(value, rel=1e-5)
    # report_to=["tensorboard"]: HF's TensorBoardCallback, logging under OUTPUT/runs/*/
    events = [EventAccumulator(str(p)) for p in (tmp_path / "hf" / "runs").iterdir()]
    for e in events:
        e.Reload()
    tags = {t for e in events for t in e.Tags()["scalars"]}
    assert "train/alignment/centroid_alignment" in tags, tags  # HF prefixes train/


def test_hf_continuous_inputs_and_stop(tmp_path, caplog):
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_outputs import SequenceClassifierOutput

    from alignctl.integrations.transformers import AlignmentCallback

    class Config(transformers.PretrainedConfig):
        model_type = "alignctl-tiny"

        def __init__(self, d=8, classes=3, **kw):
            super().__init__(**kw)
            self.d, self.classes = d, classes

    class Tiny(transformers.PreTrainedModel):
        config_class = Config

        def __init__(self, config):
            super().__init__(config)
            self.net = torch.nn.Sequential(
                torch.nn.Linear(config.d, 16), torch.nn.Tanh(), torch.nn.Linear(16, config.classes)
            )
            self.post_init()

        def forward(self, x, labels=None):
            logits = self.net(x)
            loss = None if labels is None else torch.nn.functional.cross_entropy(logits, labels)
            return SequenceClassifierOutput(loss=loss, logits=logits)

    x, y = toy()
    rows = [{"x": x[i], "labels": y[i]} for i in range(len(x))]
    torch.manual_seed(0)
    cb = AlignmentCallback(x[:24], y[:24], every_n_steps=5)
    trainer = hf_trainer(tmp_path / "a", Tiny(Config()), rows, [cb])
    trainer.train()
    assert [h["step"] for h in trainer.state.log_history if KEYS[1] in h] == [0, 5, 10]
    stop = AlignmentCallback(
        x, y, every_n_steps=5, stop_when="stop", verdict=EASY, test=toy(seed=2)
    )
    trainer = hf_trainer(tmp_path / "b", Tiny(Config()), rows, [stop], max_steps=40)
    with caplog.at_level(logging.WARNING, logger="alignctl"):
        trainer.train()
    assert trainer.state.global_step < 40 and stop.stop_reason in caplog.text


# ---------------------------------------------------------------- README snippets
ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {
    "monitor_loop.py": None,
    "lightning_callback.py": "lightning",
    "hf_callback.py": "transformers",
}


def readme_python_blocks() -> list[str]:
    from markdown_it import MarkdownIt

    tokens = MarkdownIt().parse((ROOT / "README.md").read_text(encoding="utf-8"))
    return [t.content for t in tokens if t.type == "fence" and t.info.strip() == "python"]


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_readme_snippet_is_the_example_and_runs(name, tmp_path, monkeypatch):
    code = (ROOT / "examples" / "integrations" / name).read_text(encoding="utf-8")
    assert code in readme_python_blocks(), f"README does not quote {name} verbatim"
    if EXAMPLES[name]:
        pytest.importorskip(EXAMPLES[name])
    if name == "hf_callback.py":
        pytest.importorskip("accelerate")
    monkeypatch.chdir(tmp_path)  # the examples write under runs/
    runpy.run_path(str(ROOT / "examples" / "integrations" / name), run_name="__main__")
    assert (tmp_path / "runs").is_dir()


def test_readme_install_lines_cover_what_the_snippets_need():
    """Each integration heading's `pip install 'alignctl[...]'` installs every third-party
    module its snippet imports or names in ``report_to`` (the Hugging Face snippet reports to
    TensorBoard, which `alignctl[transformers]` alone did not install: the snippet failed)."""
    import re
    import sys

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    extras = {
        name: {re.split(r"[<>=!~\[ ]", d.strip().strip('"'))[0] for d in deps.split(",") if d}
        for name, deps in re.findall(r"^(\w+) = \[([^\]]*)\]", pyproject, re.M)
    }
    sections = re.findall(
        r"^### .*\(`pip install 'alignctl\[([\w,]+)\]'`\)\n(.*?)```python\n(.*?)```",
        readme,
        re.M | re.S,
    )
    assert sections, "no integration heading with an install line"
    for wanted, _, code in sections:
        have = set().union(*(extras[e] for e in wanted.split(",")))
        mods = {m.split(".")[0] for m in re.findall(r"^\s*(?:from|import) (\w[\w.]*)", code, re.M)}
        for listed in re.findall(r"report_to=\[([^\]]*)\]", code):
            mods |= set(re.findall(r"\"(\w+)\"", listed))
        needs = mods - set(sys.stdlib_module_names) - {"torch", "alignctl", "numpy"}
        assert needs <= have, f"alignctl[{wanted}] does not install {sorted(needs - have)}"
