"""Held-out in-place forwards of issue 11 (qa12): the thread-count probe of ``analyze`` ran
the model on the first training sample itself (a float32 CPU tensor: ``.to`` made no copy),
so ``x /= 255`` in ``forward`` divided that sample before it was measured; the monitor's
probe ran the model on its held-out inputs themselves (divided again at every probe)."""

import numpy as np
import torch
import yaml
from torch import nn

import alignctl
from alignctl.integrations.probe import Probe


class Scales(nn.Module):
    """Divides its input in place, as image models that take 0..255 pixels do."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc, self.head = nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x):
        x /= 255.0
        return self.head(torch.tanh(self.fc(x)))


def make():
    return Scales()


def test_analyze_measures_the_data_not_what_the_thread_probe_left(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(6, 6, generator=g) * 255, torch.arange(6) % 3
    torch.save({"x_train": x.clone(), "y_train": y}, tmp_path / "data.pt")
    (tmp_path / "nets.py").write_text(open(__file__).read())
    (tmp_path / "alignctl.yaml").write_text(yaml.safe_dump(
        {"model": {"factory": "nets.py:make"}, "data": {"path": "data.pt"}}))  # fmt: skip
    ck = tmp_path / "checkpoints"
    ck.mkdir()
    model = make()
    torch.save(model.state_dict(), ck / "step_1.pt")
    report = alignctl.analyze(alignctl.open_run(tmp_path), metrics="fast", cache=None)
    want = alignctl.measure(model, x, metrics="centroid_alignment", dtype=torch.float64)
    got = report["checkpoints"][0]["metrics"]["centroid_alignment"]
    np.testing.assert_allclose(got, float(want["centroid_alignment"].mean()), rtol=1e-5)


def test_the_monitor_probe_never_changes_its_test_inputs():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(6, 6, generator=g) * 255, torch.arange(6) % 3
    test_x = x.clone()
    probe = Probe(x, y, test=(test_x, y))
    first = probe.measure(make(), 1)
    second = probe.measure(make(), 2)
    assert torch.equal(test_x, x)
    assert first["test_accuracy"] == second["test_accuracy"]
