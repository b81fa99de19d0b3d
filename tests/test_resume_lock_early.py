"""`alignctl train --resume RUN` takes the run folder's lock before it imports torch: a
`analyze --follow RUN` started with it must see a writer within its window (GONE_AFTER, 5 s),
and on a loaded machine Python and torch's import alone took 2.4 s before the lock."""

import subprocess
import sys

from test_training import _cli_run

PROBE = """
import sys
from alignctl.train import lock

acquire = lock.RunLock.acquire


def spy(self):
    if self._fd is None:
        print("torch imported at the lock:", "torch" in sys.modules, file=sys.stderr)
    return acquire(self)


lock.RunLock.acquire = spy
from alignctl.cli import main

sys.argv = ["alignctl", *sys.argv[1:]]
main()
"""


def test_the_resume_lock_comes_before_torch(tmp_path):
    r = subprocess.run(_cli_run(tmp_path, "run", epochs=1), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    args = ["train", "--resume", str(tmp_path / "run"), "--epochs", "2", "--quiet"]
    r = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "torch imported at the lock: False" in r.stderr.splitlines(), r.stderr
