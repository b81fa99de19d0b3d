"""The callbacks in Trainer configurations the other integration tests do not use (qa15):
a Hugging Face training resumed from its checkpoint."""

import pytest
import torch
from test_integrations import tiny_gpt2, token_rows

KEY = "alignment/centroid_alignment"


def hf_resumable(out, model, rows, callbacks, max_steps):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    args = transformers.TrainingArguments(
        str(out), max_steps=max_steps, per_device_train_batch_size=8, logging_steps=5,
        report_to=[], use_cpu=True, save_strategy="steps", save_steps=4, disable_tqdm=True,
        seed=0, learning_rate=1e-2,
    )  # fmt: skip
    return transformers.Trainer(model=model, args=args, train_dataset=rows, callbacks=callbacks)


def test_hf_resume_from_checkpoint_logs_the_checkpoint_step_once(tmp_path):
    """qa15: resume_from_checkpoint restores log_history with the measurement at the
    checkpoint's step, and on_train_begin logged that step again: a duplicate point in
    log_history / trainer_state.json (and in every report_to integration of the resumed run)."""
    pytest.importorskip("transformers")
    from alignctl.integrations.transformers import AlignmentCallback

    ids, labels, rows = token_rows()
    cb = AlignmentCallback(ids[:16], labels[:16], every_n_steps=2)
    hf_resumable(tmp_path, tiny_gpt2(), rows, [cb], max_steps=4).train()
    resumed = hf_resumable(tmp_path, tiny_gpt2(), rows, [cb], max_steps=8)
    resumed.train(resume_from_checkpoint=True)
    history = resumed.state.log_history
    assert [h["step"] for h in history if KEY in h] == [0, 2, 4, 6, 8]
    # the step is still measured: the callback's series (verdicts, stop_when) is whole
    assert [e["step"] for e in cb.probe.entries] == [0, 2, 4, 6, 8]
    at4 = [h[KEY] for h in history if KEY in h and h["step"] == 4]
    assert at4[0] == pytest.approx(cb.probe.entries[2]["metrics"]["centroid_alignment"])


def test_a_monitor_stepped_inside_autocast_measures_in_full_precision():
    """qa15: ``mon.step`` called inside the loop's ``torch.autocast(bfloat16)`` block measured
    under it: the log's values were bf16 ones, not those of the weights (``alignctl.measure``,
    ``alignctl analyze`` of the same checkpoint, a Lightning ``bf16-mixed`` callback)."""
    import alignctl

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    x = torch.randn(32, 6, generator=torch.Generator().manual_seed(1))
    y = (x[:, 0] > 0).long()
    mon = alignctl.Monitor(net, x, y, every=1, out=None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mon.step(0)
        assert torch.is_autocast_enabled("cpu")  # the caller's context is left as it was
    want = alignctl.measure(net, x, y, metrics="fast")
    for name, values in want.items():
        assert mon.entries[0]["metrics"][name] == float(values.double().mean()), name
