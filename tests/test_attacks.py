"""l_inf PGD (Madry et al.): constraints, a hand-computed step, and that it hurts a trained
model."""

import pytest
import torch
from torch import nn

from alignctl.evaluation.attacks import adversarial_accuracy, pgd
from alignctl.evaluation.losses import accuracy, cross_entropy


@pytest.fixture(scope="module")
def trained():
    """A 2-class MLP trained to separate two blobs at +-(1, 1), inputs in [-2, 2]."""
    torch.manual_seed(0)
    y = torch.randint(0, 2, (200,))
    x = ((y * 2 - 1).float().unsqueeze(1) + 0.3 * torch.randn(200, 2)).clamp(-2, 2)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(300):
        opt.zero_grad()
        cross_entropy(model(x), y).backward()
        opt.step()
    return model, x, y


def test_pgd_stays_in_the_eps_ball_and_the_input_range():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 3))
    x, y = torch.rand(10, 3, 2, 2), torch.randint(0, 3, (10,))
    adv = pgd(model, x, y, eps=0.3, alpha=0.2, steps=5, input_range=(0.0, 1.0))
    assert adv.shape == x.shape and not adv.requires_grad
    assert (adv - x).abs().max() <= 0.3 + 1e-6
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    assert (adv - x).abs().max() > 0.25  # it did move, up to the ball's edge
    assert cross_entropy(model(adv), y) > cross_entropy(model(x), y)


def test_one_step_without_random_start_by_hand():
    # f = w.x, logistic loss softplus(-y f): d/dx = -y w sigmoid(-y f), so the ascent step
    # is x - alpha * y * sign(w), then clipped to the eps-ball (eps < alpha here)
    model = nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[2.0, -1.0, 0.5]]))
    x = torch.tensor([[0.1, 0.2, 0.3], [0.0, -0.5, 1.0]])
    y = torch.tensor([1, -1])
    adv = pgd(model, x, y, eps=0.05, alpha=0.1, steps=1, random_start=False)
    sign_w = torch.tensor([1.0, -1.0, 1.0])
    want = x - 0.05 * y.float().unsqueeze(1) * sign_w
    torch.testing.assert_close(adv, want)


def test_random_start_is_reproducible_with_a_generator(trained):
    model, x, y = trained
    a = pgd(model, x, y, eps=0.5, alpha=0.1, steps=2, generator=torch.Generator().manual_seed(4))
    b = pgd(model, x, y, eps=0.5, alpha=0.1, steps=2, generator=torch.Generator().manual_seed(4))
    c = pgd(model, x, y, eps=0.5, alpha=0.1, steps=2, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_pgd_reduces_the_accuracy_of_a_trained_model(trained):
    model, x, y = trained
    clean = accuracy(model(x), y)
    assert clean > 0.95
    g = torch.Generator().manual_seed(0)
    small = adversarial_accuracy(model, x, y, eps=0.1, alpha=0.05, steps=5, generator=g)
    large = adversarial_accuracy(
        model, x, y, eps=1.5, alpha=0.3, steps=10, input_range=(-2, 2), generator=g
    )
    assert large <= small <= clean
    assert large < 0.2


def test_adversarial_accuracy_with_eps_zero_is_clean_accuracy_over_uneven_batches(trained):
    model, x, y = trained
    model_out = model(x).detach()
    # a batch of 7 does not divide 200: the last batch must be weighted by its size
    got = adversarial_accuracy(model, x, y, eps=0.0, alpha=0.0, steps=0, batch_size=7)
    assert got == pytest.approx(accuracy(model_out, y), abs=1e-6)
    flipped = y.clone()
    flipped[:3] = 1 - flipped[:3]  # three wrong labels in the first batch
    got = adversarial_accuracy(model, x, flipped, eps=0.0, alpha=0.0, steps=0, batch_size=7)
    assert got == pytest.approx(accuracy(model_out, flipped), abs=1e-6)


class Recorder(nn.Module):
    """Linear -> dropout that records the mode it ran in."""

    def __init__(self):
        super().__init__()
        self.lin, self.drop, self.modes = nn.Linear(4, 3), nn.Dropout(0.5), []

    def forward(self, x):
        self.modes.append(self.training)
        return self.drop(self.lin(x))


def test_modes_restored_and_parameter_grads_untouched():
    torch.manual_seed(0)
    model = Recorder()
    model.train()
    model.drop.eval()  # a mixed state must come back as it was
    model.lin.weight.grad = torch.full_like(model.lin.weight, 7.0)
    x, y = torch.randn(9, 4), torch.randint(0, 3, (9,))
    adversarial_accuracy(model, x, y, eps=0.1, alpha=0.05, steps=3, batch_size=4)
    assert model.modes and not any(model.modes)  # attacked and scored in eval mode
    assert model.training and model.lin.training and not model.drop.training
    assert torch.equal(model.lin.weight.grad, torch.full_like(model.lin.weight, 7.0))
    assert model.lin.bias.grad is None
    pgd(model, x, y, eps=0.1, alpha=0.05, steps=3)  # pgd alone: the caller's mode, no grads
    assert model.modes[-1] is True
    assert model.lin.bias.grad is None
