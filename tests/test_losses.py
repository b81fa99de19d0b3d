"""Losses and accuracy against formulas written out by hand (SETUPS.md, "public reference code")."""

import math

import pytest
import torch

from alignctl.errors import InputError
from alignctl.evaluation.losses import (
    LOSSES,
    accuracy,
    cross_entropy,
    get_loss,
    logistic,
    mse,
    predictions,
    signed_labels,
    stablemax,
)

OUT = torch.tensor([[1.0, -1.0, 0.0], [-3.0, 2.0, 0.5]])
Y = torch.tensor([0, 2])


def test_stablemax_hand_computed():
    # s(x) = x + 1 (x >= 0), 1 / (1 - x) (x < 0):
    # row 0: s = (2, 1/2, 1), sum 3.5, y = 0 -> -log(2 / 3.5)
    # row 1: s = (1/4, 3, 3/2), sum 4.75, y = 2 -> -log(1.5 / 4.75)
    expected = (-math.log(2 / 3.5) - math.log(1.5 / 4.75)) / 2
    got = stablemax(OUT, Y)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_stablemax_is_computed_in_float64():
    # float32 would round 1e8 + 1 to 1e8 and log(1) = 0 exactly; float64 keeps the 1e-8 loss
    out = torch.tensor([[1e8, -1.0]])  # float32 input, 1e8 exact in float32
    got = stablemax(out, torch.tensor([0])).item()
    expected = math.log1p(0.5 / (1e8 + 1))
    assert got == pytest.approx(expected, rel=1e-4)
    assert got > 0


def test_stablemax_gradient_is_finite_at_and_around_zero():
    out = torch.tensor([[0.0, -50.0, 30.0]], requires_grad=True)
    stablemax(out, torch.tensor([1])).backward()
    assert torch.isfinite(out.grad).all()
    assert out.grad.abs().sum() > 0


def test_cross_entropy_manual():
    logp = OUT - OUT.exp().sum(1, keepdim=True).log()
    expected = -(logp[0, 0] + logp[1, 2]) / 2
    assert cross_entropy(OUT, Y).item() == pytest.approx(expected.item(), rel=1e-6)


def test_mse_multiclass_manual():
    # one-hot targets: row 0 (1,0,0), row 1 (0,0,1); squared error summed over classes, then mean
    row0 = (1 - 1) ** 2 + (-1 - 0) ** 2 + (0 - 0) ** 2
    row1 = (-3 - 0) ** 2 + (2 - 0) ** 2 + (0.5 - 1) ** 2
    assert mse(OUT, Y).item() == pytest.approx((row0 + row1) / 2)


F_SCALAR = [0.5, -2.0, 1.5]


@pytest.mark.parametrize("labels", [[1, 0, 0], [1, -1, -1]])
@pytest.mark.parametrize("shape", [(3,), (3, 1)])
def test_scalar_losses_manual(labels, shape):
    out = torch.tensor(F_SCALAR).reshape(shape)
    y = torch.tensor(labels)
    s = [1.0, -1.0, -1.0]  # the labels' signs
    want_mse = sum((f - t) ** 2 for f, t in zip(F_SCALAR, s, strict=True)) / 3
    want_log = sum(math.log1p(math.exp(-t * f)) for f, t in zip(F_SCALAR, s, strict=True)) / 3
    assert mse(out, y).item() == pytest.approx(want_mse, rel=1e-6)
    assert logistic(out, y).item() == pytest.approx(want_log, rel=1e-6)


def test_signed_labels():
    assert signed_labels(torch.tensor([0, 1, 1])).tolist() == [-1.0, 1.0, 1.0]
    assert signed_labels(torch.tensor([-1, 1, -1])).tolist() == [-1.0, 1.0, -1.0]


def test_multiclass_predictions_and_accuracy():
    assert predictions(OUT).tolist() == [0, 1]
    assert accuracy(OUT, Y) == pytest.approx(0.5)
    assert accuracy(OUT, torch.tensor([0, 1])) == 1.0


@pytest.mark.parametrize("shape", [(4,), (4, 1)])
@pytest.mark.parametrize("neg", [0, -1])
def test_scalar_predictions_and_accuracy_both_conventions(shape, neg):
    out = torch.tensor([2.0, -0.5, -1.0, 0.3]).reshape(shape)
    y = torch.tensor([1, neg, 1, neg])
    assert predictions(out, y).tolist() == [1, neg, neg, 1]
    assert accuracy(out, y) == pytest.approx(0.5)  # samples 0, 1 right; 2, 3 wrong
    assert (predictions(out, y) == y).float().mean().item() == pytest.approx(0.5)


def test_accuracy_of_empty_set_is_nan():
    assert math.isnan(accuracy(torch.empty(0, 3), torch.empty(0, dtype=torch.long)))


def test_registry_and_unknown_loss():
    assert set(LOSSES.names()) == {"cross_entropy", "mse", "stablemax", "logistic"}
    assert get_loss("mse") is mse
    with pytest.raises(InputError, match="valid: cross_entropy, logistic, mse, stablemax"):
        get_loss("hinge")


@pytest.mark.parametrize("name", ["cross_entropy", "stablemax"])
@pytest.mark.parametrize("shape", [(4,), (4, 1)])
@pytest.mark.parametrize("labels", [[1, -1, 1, -1], [0, 0, 0, 0]])
def test_class_losses_reject_scalar_outputs(name, shape, labels):
    # a scalar-output model trained with cross_entropy (e.g. xor-cluster with loss changed in
    # alignctl.yaml) crashes with IndexError, or with all-zero labels silently trains on a
    # constant loss (log-softmax of one class is 0): it should be a one-line InputError
    with pytest.raises(InputError, match="logistic"):
        get_loss(name)(torch.zeros(shape), torch.tensor(labels))
