"""Host-to-device copies (:mod:`alignctl.geometry.transfer`): pinned and non-blocking iff the
target is CUDA and CUDA is available; on the CPU exactly the ``Tensor.to`` call it replaced
(values, dtype, aliasing), without touching pinned memory. The CUDA path runs where a GPU is."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from alignctl.geometry.transfer import pins, to_device


@pytest.mark.parametrize(
    ("device", "available", "want"),
    [("cuda", True, True), ("cuda:1", True, True), (torch.device("cuda", 0), True, True),
     ("cuda", False, False), ("cpu", True, False), ("cpu", False, False), ("mps", True, False),
     ("meta", True, False)],
)  # fmt: skip
def test_pinned_iff_the_target_is_an_available_cuda_device(device, available, want):
    assert pins(device, cuda_available=available) is want


def test_the_default_asks_torch():
    assert pins("cuda") is torch.cuda.is_available()
    assert pins("cpu") is False


DTYPES = [None, torch.float32, torch.float64, torch.int64]


@given(dtype=st.sampled_from(DTYPES), copy=st.booleans(), src=st.sampled_from(
    [torch.float32, torch.uint8, torch.int64, torch.bool]), transpose=st.booleans())  # fmt: skip
def test_on_the_cpu_it_is_the_plain_to(dtype, copy, src, transpose):
    x = (torch.arange(12).reshape(3, 4) % 3).to(src)
    x = x.t() if transpose else x
    want = x.to(device="cpu", copy=copy) if dtype is None else x.to("cpu", dtype, copy=copy)
    got = to_device(x, "cpu", dtype, copy=copy)
    assert got.dtype == want.dtype and got.stride() == want.stride() and torch.equal(got, want)
    same = got.data_ptr() == x.data_ptr()
    assert same == (want.data_ptr() == x.data_ptr())  # a copy exactly when .to copies


def test_the_cpu_path_never_pins(monkeypatch):
    def refuse(self, *a, **k):
        raise AssertionError("pinned memory on a CPU path")

    monkeypatch.setattr(torch.Tensor, "pin_memory", refuse)
    x = torch.randn(5, 3)
    assert torch.equal(to_device(x, "cpu", torch.float64), x.double())
    assert torch.equal(to_device(x, torch.device("cpu"), copy=True), x)


def test_the_model_front_and_the_training_batches_go_through_it():
    """Every place that moves a batch to the device calls to_device (so CUDA gets the pinned,
    non-blocking copy): the front's raw, cast, lift and token fn, and the trainer's batches."""
    import inspect

    from alignctl.geometry.inputs import ModelFront
    from alignctl.train import step, trainer

    for fn in (ModelFront.raw, ModelFront.cast, ModelFront.lift, ModelFront.fn,
               step.StepMixin._batches, trainer.Trainer.__init__):  # fmt: skip
        code = inspect.getsource(fn)
        assert "to_device(" in code, fn.__qualname__


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_on_cuda_the_copy_is_pinned_and_equal():
    x = torch.randn(64, 7)
    got = to_device(x, "cuda", torch.float64)
    assert got.device.type == "cuda" and got.dtype == torch.float64
    assert torch.equal(got.cpu(), x.double())
    tokens = torch.arange(1, 25).reshape(8, 3)
    again = to_device(tokens, "cuda", copy=True)
    tokens.zero_()  # the copy is private (and landed before it is read: stream order)
    assert again.abs().sum() > 0
    pinned = x.pin_memory()
    assert torch.equal(to_device(pinned, "cuda").cpu(), x)
