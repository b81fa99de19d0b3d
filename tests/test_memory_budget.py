"""The default chunk budget: 512 MiB on the CPU; on CUDA half the device's free memory. No GPU
can run here, so the CUDA query is replaced (the only mock: nothing real can answer it)."""

import torch

from alignctl.geometry import memory


def test_cpu_default_and_explicit_budgets():
    assert memory.default_budget("cpu") == memory.DEFAULT_MAX_MEMORY == 512 * 2**20
    assert memory.default_budget(None) == memory.DEFAULT_MAX_MEMORY
    assert memory.budget("64MiB", "cpu") == 64 * 2**20
    assert memory.budget(None, "cpu") == memory.DEFAULT_MAX_MEMORY


def test_cuda_default_is_half_the_free_memory(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda dev=None: (8 * 2**30, 80 * 2**30))
    assert memory.default_budget("cuda") == 4 * 2**30
    assert memory.budget(None, torch.device("cuda", 0)) == 4 * 2**30
    assert memory.budget("1GiB", "cuda") == 2**30  # an explicit budget wins
