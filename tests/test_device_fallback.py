"""A model that cannot run on the accelerator (a tensor its forward creates on the CPU, a module
held outside its submodules): ``device="auto"`` measures it on the CPU with a note, an explicit
device is one input error, and other errors pass through untouched.

Seen on a CUDA machine (tests/test_models_real.py's TokenNet: ``torch.arange(n)`` in forward; a
wrapper calling a Hugging Face ViT held in a closure). CI has no GPU, so the accelerator is the
meta device here and the model raises torch's CUDA messages verbatim when it meets it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import alignctl
import alignctl.geometry.placement as placement
from alignctl.errors import InputError
from alignctl.geometry.devices import is_device_mismatch

CUDA_MESSAGES = [
    "Expected all tensors to be on the same device, but got index is on cpu, different from "
    "other tensors on cuda:0 (when checking argument in method wrapper_CUDA__index_select)",
    "Input type (torch.cuda.FloatTensor) and weight type (torch.FloatTensor) should be the same",
    "Expected all tensors to be on the same device, but found at least two devices, cuda:0 "
    "and cpu!",
    "indices should be either on cpu or on the same device as the indexed tensor (cpu)",
    "Tensor on device cpu is not on the expected device meta!",
]


class CpuOnly(nn.Module):
    """Runs on the CPU; on any other device raises what torch raises there."""

    def __init__(self, message: str):
        super().__init__()
        self.message = message
        self.body = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))

    def forward(self, x):
        if x.device.type != "cpu":
            raise RuntimeError(self.message)
        return self.body(x)


@pytest.fixture
def accelerator(monkeypatch):
    """``auto`` and ``cuda`` resolve to the meta device (an accelerator the model cannot use)."""
    real = placement.resolve_device

    def resolve(device="auto"):
        return torch.device("meta") if device in (None, "auto", "cuda") else real(device)

    monkeypatch.setattr(placement, "resolve_device", resolve)


@pytest.mark.parametrize("message", CUDA_MESSAGES)
def test_torch_device_messages_are_recognised(message):
    assert is_device_mismatch(RuntimeError(message))


@pytest.mark.parametrize(
    "error",
    [RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x6 and 5x8)"),
     RuntimeError("CUDA out of memory"), ValueError("Expected all tensors to be on the same "
                                                   "device"),
     RuntimeError("Input type (torch.cuda.FloatTensor) and weight type (torch.cuda.DoubleTensor)"
                  " should be the same"),
     RuntimeError("Input type (torch.FloatTensor) and weight type (torch.DoubleTensor) should "
                  "be the same")],
)  # fmt: skip
def test_other_errors_are_not_device_mismatches(error):
    assert not is_device_mismatch(error)


@pytest.mark.parametrize(("message", "device"),
                         [(CUDA_MESSAGES[0], "auto"), (CUDA_MESSAGES[1], None)])  # fmt: skip
def test_auto_measures_on_the_cpu_with_a_note(accelerator, message, device):
    torch.manual_seed(0)
    model, x, y = CpuOnly(message), torch.randn(5, 6), torch.tensor([0, 1, 2, 0, 1])
    want = alignctl.measure(model, x, y, device="cpu")
    notes, outputs = [], []
    got = alignctl.measure(model, x, y, notes=notes, outputs=outputs, device=device)
    assert set(got) == set(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k
    assert any("does not run on meta" in n and "measured on the CPU" in n for n in notes), notes
    assert len(outputs) == 1 and outputs[0].device.type == "cpu"  # nothing of the failed try


def test_an_explicit_device_is_one_input_error(accelerator):
    model = CpuOnly(CUDA_MESSAGES[0])
    with pytest.raises(InputError, match="does not run on meta: Expected all tensors") as e:
        alignctl.measure(model, torch.randn(3, 6), device="cuda")
    assert "\n" not in str(e.value) and "device=" in str(e.value)


def test_other_runtime_errors_pass_through(accelerator):
    model = CpuOnly("mat1 and mat2 shapes cannot be multiplied (4x6 and 5x8)")
    # not retried on the CPU: the model's own error, named (geometry/plan.py: applied)
    with pytest.raises(InputError, match="cannot be applied to x.*shapes cannot be") as e:
        alignctl.measure(model, torch.randn(3, 6))
    assert isinstance(e.value.__cause__, RuntimeError)


def test_the_callers_model_is_not_moved(accelerator):
    model = CpuOnly(CUDA_MESSAGES[1])
    alignctl.measure(model, torch.randn(3, 6))
    assert all(p.device.type == "cpu" for p in model.parameters())


@pytest.mark.parametrize("sketch", [0, 4])
def test_a_sample_with_non_finite_input_has_nan_metrics_only(sketch):
    """A NaN or inf input has no Jacobian: NaN for every metric of that sample (its ratios read
    0 before), the other samples exactly as measured alone; a note says so."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    x, y = torch.randn(5, 6), torch.tensor([0, 1, 2, 0, 1])
    x[1, 2], x[3, 0] = float("nan"), float("inf")
    notes, errors = [], {}
    got = alignctl.measure(model, x, y, notes=notes, sketch=sketch, errors=errors)
    keep = torch.tensor([0, 2, 4])
    alone = alignctl.measure(model, x[keep], y[keep], sketch=sketch)
    for k, v in got.items():
        assert torch.isnan(v[[1, 3]]).all(), k
        if sketch == 0:
            torch.testing.assert_close(v[keep], alone[k], rtol=1e-5, atol=1e-6)
    assert all(torch.isnan(e[[1, 3]]).all() for e in errors.values())
    assert any("2 sample(s) with non-finite inputs" in n for n in notes)
