import os
import random
import signal
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

# Output free of colour codes.
os.environ.setdefault("NO_COLOR", "1")

# Hypothesis: no wall-clock deadline (the suite shares 2 cores; hang guards are explicit where
# a test needs one, tests/test_fuzz.py) and no too_slow health check (data generation timed on
# a loaded machine). On CI (CI set, as GitHub Actions and most others do) the examples are the
# same on every run, so that a result is reproducible and nothing lands or fails by chance;
# developers' runs explore new ones. HYPOTHESIS_PROFILE=dev|ci chooses explicitly.
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", settings.get_profile("dev"), derandomize=True, print_blob=True)
ON_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if ON_CI else "dev"))

# Started with SIGINT or SIGTERM ignored (`cmd &` in a script, nohup), the suite would pass the
# ignored disposition on to every process it starts, and the Ctrl-C/SIGTERM tests would wait
# for an exit that never comes: the tests are about alignctl's handling, not the launcher's.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

# Variables of the environment the suite runs in that change what alignctl prints or does,
# removed for the whole session (module fixtures and the processes tests start included): each
# test that is about one of them sets it itself.
FOREIGN_ENV = (
    "COLUMNS", "LINES", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE",  # rich's width, colour
    "GITHUB_STEP_SUMMARY",  # set on GitHub Actions: analyze would append to the job's summary
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
)  # fmt: skip
for _name in [*FOREIGN_ENV, *(k for k in os.environ if k.startswith("ALIGNCTL_"))]:
    os.environ.pop(_name, None)


@pytest.fixture(autouse=True)
def no_default_cache(monkeypatch):
    """``analyze`` caches in the run folder by default; tests share run folders and some
    change the code's behaviour (monkeypatched measurements) without changing its source, so
    the default cache is off here: tests/test_cache.py turns it on where it is the subject."""
    monkeypatch.setenv("ALIGNCTL_CACHE", "off")


@pytest.fixture(autouse=True)
def seeded_rngs(request):
    """torch's, numpy's and Python's global generators seeded from the test's id: what a test
    draws does not depend on which tests ran before it (the order, ``-k``, a test added above)."""
    seed = zlib.crc32(request.node.nodeid.encode())
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The test models are tiny: on 2 shared cores a second intra-op thread only adds waiting."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
