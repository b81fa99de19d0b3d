"""A new user's workflows, as README.md tells them: a plain PyTorch loop with the monitor,
their own factory model and .npz data, the CLI on checkpoints saved their way."""

import torch

import alignctl


def _separable(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g)
    return x, (x[:, 0] > 0).long()


def test_monitor_does_not_stop_on_the_first_measurement_that_fits():
    # A loop whose network fits its probe between the first and the second measurement: the
    # second is the first fitted one, so the recommendation has no trend since the fit ("stop
    # ... confirm on later checkpoints"). Acting on it ends training exactly where the reason
    # asks for more checkpoints; the stop must wait for a second measurement since the fit.
    x, y = _separable()
    net = torch.nn.Linear(2, 2)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.copy_(torch.tensor([1.0, 0.0]))  # always class 0: about half right
    mon = alignctl.Monitor(net, x[:32], y[:32], every=10, out=None, stop_when="stop",
                           test=(x[32:], y[32:]))  # fmt: skip
    assert not mon.step(0)
    assert mon.entries[0]["verdict"] == "learning"
    with torch.no_grad():  # "training": now a perfect classifier
        net.weight.copy_(torch.tensor([[-5.0, 0.0], [5.0, 0.0]]))
        net.bias.zero_()
    stopped = mon.step(10)
    assert mon.entries[1]["verdict"] == "generalising"
    assert mon.recommendation()["action"] == "stop"  # analyze's answer is unchanged
    assert not stopped and not mon.should_stop
    assert mon.step(20)  # flat since the fit: now a trend, and the stop is taken
    assert "stopping at step 20" in mon.stop_reason
