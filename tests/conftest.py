import os

import pytest
import torch

# Output free of colour codes.
os.environ.setdefault("NO_COLOR", "1")


@pytest.fixture(autouse=True)
def no_default_cache(monkeypatch):
    """``analyze`` caches in the run folder by default; tests share run folders and some
    change the code's behaviour (monkeypatched measurements) without changing its source, so
    the default cache is off here: tests/test_cache.py turns it on where it is the subject."""
    monkeypatch.setenv("ALIGNCTL_CACHE", "off")


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The test models are tiny: on 2 shared cores a second intra-op thread only adds waiting."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
