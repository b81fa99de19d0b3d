"""Output destinations (issue 16, kind 1): every output (--json, --csv, --markdown, --plot,
GITHUB_STEP_SUMMARY, train/race --out) is replaced atomically only when it is a regular file
or new; devices, FIFOs and descriptor links are written in place and keep their kind; every
failure is one ``error:`` line naming the output, exit 2, the old file intact.

Everything happens inside pytest's temporary folders: device nodes are made here with
``mknod`` (never the machine's /dev/null or /dev/stdout)."""

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alignctl.cli.assemble import app
from alignctl.runs import atomic

sys.path.insert(0, str(Path(__file__).parent))
from test_bad_input import make_run  # noqa: E402

SRC = str(Path(__file__).resolve().parents[1] / "src")
SUMMARY = "GITHUB_STEP_SUMMARY"
NAMES = {"--json": "r.json", "--csv": "r.csv", "--markdown": "r.md", "--plot": "r.png",
         SUMMARY: "summary.md"}  # fmt: skip
LABELS = sorted(NAMES)
TEXT_LABELS = ["--json", "--csv", "--markdown", SUMMARY]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("outputs") / "run")


def analyze(run_dir, dests: dict, *extra: str):
    """``alignctl analyze RUN --quiet`` with ``dests`` (label -> path) as its outputs."""
    args = ["analyze", str(run_dir), "--quiet", "--metrics", "fast", *extra]
    for label, path in dests.items():
        if label != SUMMARY:
            args += [label, str(path)]
    env = {SUMMARY: str(dests[SUMMARY]) if SUMMARY in dests else None}
    return CliRunner().invoke(app, args, env=env)


def one_error(r, *fragments: str) -> str:
    assert r.exit_code == 2, (r.exit_code, r.stdout, r.stderr, r.exception)
    assert "Traceback" not in r.stderr + r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(f"*{atomic.TMP_TAG}*")]


def mknod_or_skip(path: Path, kind=stat.S_IFCHR, dev=(1, 3)) -> Path:
    try:
        os.mknod(path, kind | 0o666, os.makedev(*dev))
    except (PermissionError, AttributeError, OSError) as e:
        pytest.skip(f"cannot make device nodes here: {e}")
    return path


def test_new_outputs_follow_the_umask_and_missing_folders_are_created(run_dir, tmp_path):
    dests = {label: tmp_path / "new" / "sub" / name for label, name in NAMES.items()}
    old = os.umask(0o027)
    try:
        r = analyze(run_dir, dests)
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.stderr
    for path in dests.values():
        st = os.stat(path)
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640, oct(st.st_mode)
    json.loads(dests["--json"].read_text())
    assert leftovers(tmp_path) == []


def test_replaced_files_keep_their_mode_links_stay_links_summary_is_appended(run_dir, tmp_path):
    dests = {label: tmp_path / name for label, name in NAMES.items()}
    for path in dests.values():
        path.write_text("old\n")
        path.chmod(0o604)
    real = tmp_path / "real.json"
    real.write_text("old\n")
    real.chmod(0o604)
    (tmp_path / "link.json").symlink_to("real.json")
    dests["--json"] = tmp_path / "link.json"
    r = analyze(run_dir, dests)
    assert r.exit_code == 0, r.stderr
    for label, path in dests.items():
        target = real if label == "--json" else path
        assert stat.S_IMODE(os.stat(target).st_mode) == 0o604
    assert os.readlink(tmp_path / "link.json") == "real.json"
    assert json.loads(real.read_text())["checkpoints"]
    summary = dests[SUMMARY].read_text()
    assert summary.startswith("old\n") and "alignctl analyze" in summary


def test_device_nodes_are_written_in_place_and_stay_devices(run_dir, tmp_path):
    nodes = {label: mknod_or_skip(tmp_path / f"null{i}") for i, label in enumerate(LABELS)}
    (tmp_path / "stdout").symlink_to(nodes["--json"])  # a /dev/stdout-style link
    dests = {**nodes, "--json": tmp_path / "stdout"}
    r = analyze(run_dir, dests)
    assert r.exit_code == 0, r.stderr
    for node in nodes.values():
        st = os.lstat(node)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3), node
    assert os.path.islink(tmp_path / "stdout")
    assert leftovers(tmp_path) == []


def test_full_device_is_a_full_disk_for_a_stream(run_dir, tmp_path):
    full = mknod_or_skip(tmp_path / "full", dev=(1, 7))  # writes fail with ENOSPC
    ok = tmp_path / "r.json"
    r = analyze(run_dir, {"--csv": full, "--json": ok})
    one_error(r, "--csv", "No space left")
    assert json.loads(ok.read_text())  # the other output was written
    assert stat.S_ISCHR(os.lstat(full).st_mode)


def test_fifo_and_a_link_to_it_are_streamed(run_dir, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    (tmp_path / "link").symlink_to(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    r = analyze(run_dir, {"--json": tmp_path / "link"})
    reader.join(30)
    assert r.exit_code == 0, r.stderr
    assert json.loads(got[0])["checkpoints"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and os.path.islink(tmp_path / "link")


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="no /proc")
def test_a_link_to_a_descriptor_writes_through_it(tmp_path):
    """``--json`` onto a link to /proc/self/fd/1 while stdout is a (temporary) file: the JSON
    arrives there, the link stays a link, the file is not replaced (a shell's redirection
    would be detached from it)."""
    out = tmp_path / "stdout.txt"
    (tmp_path / "fd1").symlink_to("/proc/self/fd/1")
    code = (
        "from alignctl.cli.common import write_output\n"
        f"write_output({str(tmp_path / 'fd1')!r}, 'data\\n', '--json')\n"
    )
    with open(out, "w") as fh:
        ino = os.fstat(fh.fileno()).st_ino
        subprocess.run([sys.executable, "-c", code], stdout=fh, check=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": SRC})  # fmt: skip
    assert out.read_text() == "data\n" and os.stat(out).st_ino == ino
    assert os.path.islink(tmp_path / "fd1")


def _break(kind: str, path: Path) -> Path:
    """A destination that cannot be written: its parent a file, or it a folder."""
    if kind == "parent is a file":
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "file").write_text("a file\n")
        return path.parent / "file" / path.name
    path.mkdir(parents=True)
    (path / "inside").write_text("kept\n")
    return path


@pytest.mark.parametrize("kind", ["parent is a file", "destination is a folder"])
@pytest.mark.parametrize("label", LABELS)
def test_unwritable_destination_fails_before_the_analysis(run_dir, tmp_path, monkeypatch, label,
                                                          kind):  # fmt: skip
    import alignctl.report.analysis as analysis

    monkeypatch.setattr(analysis, "analyze", lambda *a, **k: pytest.fail("analysis ran"))
    dests = {lb: tmp_path / "ok" / name for lb, name in NAMES.items()}
    dests[label] = _break(kind, tmp_path / "bad" / NAMES[label])
    before = {p: p.read_bytes() for p in (tmp_path / "bad").rglob("*") if p.is_file()}
    r = analyze(run_dir, dests)
    one_error(r, f"cannot write {label}", str(dests[label]))
    assert not (tmp_path / "ok").exists()  # nothing else written either
    assert {p: p.read_bytes() for p in (tmp_path / "bad").rglob("*") if p.is_file()} == before


def _enospc_in(folder: Path, monkeypatch):
    """A full disk in ``folder`` only: fsync (where a delayed-allocation filesystem reports
    ENOSPC) of any file there fails; other folders work."""
    real = os.fsync

    def fsync(fd):
        where = os.readlink(f"/proc/self/fd/{fd}")
        if where.startswith(str(folder)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="no /proc")
@pytest.mark.parametrize("label", LABELS)
def test_full_disk_on_one_output_writes_the_others_and_keeps_the_old_file(
    run_dir, tmp_path, monkeypatch, label
):
    full, ok = tmp_path / "full", tmp_path / "ok"
    full.mkdir()
    dests = {lb: ok / name for lb, name in NAMES.items()}
    dests[label] = full / NAMES[label]
    dests[label].write_text("old report\n")
    _enospc_in(full, monkeypatch)
    r = analyze(run_dir, dests)
    one_error(r, f"cannot write {label}", "No space left on device")
    assert dests[label].read_text() == "old report\n"
    assert leftovers(tmp_path) == []
    written = sorted(p.name for p in ok.iterdir())
    assert written == sorted(NAMES[lb] for lb in NAMES if lb != label)


def _script(tmp_path: Path, run_dir: Path, body: str) -> Path:
    """A Python script that runs CLI commands in one process (torch imported once) and prints
    one JSON line per command: exit code and stderr."""
    p = tmp_path / "cases.py"
    p.write_text(
        "import json, sys\nfrom typer.testing import CliRunner\n"
        "from alignctl.cli.assemble import app\n"
        "def run(*args, summary=None):\n"
        "    args = [str(a) for a in args]\n"
        "    r = CliRunner().invoke(app, args, env={'GITHUB_STEP_SUMMARY': summary})\n"
        "    print(json.dumps({'args': args, 'code': r.exit_code, 'err': r.stderr}))\n"
        f"RUN = {str(run_dir)!r}\n" + body
    )  # fmt: skip
    return p


def _results(proc) -> list[dict]:
    assert proc.returncode == 0, proc.stderr
    return [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]


def _check_one_line_exit_2(results, expected: int) -> None:
    assert len(results) == expected, results
    for res in results:
        lines = res["err"].strip().splitlines()
        assert res["code"] == 2 and len(lines) == 1 and lines[0].startswith("error: "), res


@pytest.mark.skipif(not hasattr(os, "geteuid") or shutil.which("setpriv") is None,
                    reason="needs setpriv to drop root's permission bypass")  # fmt: skip
def test_read_only_parent_without_privileges(run_dir, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "r.json").write_text("old\n")
    (ro / "summary.md").write_text("old summary\n")
    (ro / "summary.md").chmod(0o444)
    ro.chmod(0o555)
    (tmp_path / "locked.json").write_text("old\n")
    (tmp_path / "locked.json").chmod(0o444)  # read-only file in a writable folder
    body = (
        f"RO = {str(ro)!r}\n"
        "run('analyze', RUN, '-q', '--json', RO + '/r.json', summary=RO + '/summary.md')\n"
        f"run('analyze', RUN, '-q', '--csv', {str(tmp_path / 'locked.json')!r})\n"
        "for opt in ('--json', '--csv', '--markdown', '--plot'):\n"
        "    run('analyze', RUN, '-q', opt, RO + '/new/x')\n"
        "run('analyze', RUN, '-q', summary=RO + '/new.md')\n"
        "run('train', '--task', 'xor-cluster', '--epochs', '1', '--out', RO + '/run')\n"
        "run('race', '--task', 'xor-cluster', '--seeds', '1', '--out', RO + '/race')\n"
        "run('race', '--task', 'xor-cluster', '--seeds', '1', '--out', RO + '/../race',"
        " '--json', RO + '/race.json')\n"
    )
    cmd = [sys.executable, str(_script(tmp_path, run_dir, body))]
    if os.geteuid() == 0:  # root bypasses permissions: drop the capabilities that allow it
        cmd = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", *cmd]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": SRC})  # fmt: skip
    finally:
        ro.chmod(0o755)
    results = _results(proc)
    _check_one_line_exit_2(results, 10)
    assert "read-only" in results[1]["err"] and (tmp_path / "locked.json").read_text() == "old\n"
    assert "--json" in results[0]["err"] and "GITHUB_STEP_SUMMARY" in results[0]["err"]
    assert (ro / "r.json").read_text() == "old\n"
    assert (ro / "summary.md").read_text() == "old summary\n"
    assert sorted(p.name for p in ro.iterdir()) == ["r.json", "summary.md"]


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare to mount a tmpfs")
def test_real_full_disk_on_a_tiny_filesystem(run_dir, tmp_path):
    """A 64 KiB tmpfs (private mount namespace) filled up: every output fails with ENOSPC
    in one line, the old files are intact and no temporary file is left."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    body = (
        f"M = {str(mnt)!r}\n"
        "open(M + '/r.json', 'w').write('old\\n')\n"
        "open(M + '/summary.md', 'w').write('old summary\\n'.ljust(4096, '.'))  # a whole page\n"
        "try:\n"
        "    with open(M + '/filler', 'wb') as f:\n"
        "        while True:\n"
        "            f.write(b'x' * 512); f.flush()\n"
        "except OSError:\n"
        "    pass\n"
        "run('analyze', RUN, '-q', '--metrics', 'fast', '--json', M + '/r.json', '--csv',"
        " M + '/r.csv', '--markdown', M + '/r.md', '--plot', M + '/r.png',"
        " summary=M + '/summary.md')\n"
        "after = [sorted(__import__('os').listdir(M)), open(M + '/r.json').read(),"
        " open(M + '/summary.md').read()]\n"
        "print(json.dumps(after))\n"
    )
    script = _script(tmp_path, run_dir, body)
    shell = f"mount -t tmpfs -o size=64k tmpfs {mnt} && exec {sys.executable} {script}"
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("cannot unshare the mount namespace here")
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.run(["unshare", "--mount", "sh", "-c", shell], capture_output=True,
                          text=True, timeout=300, env=env)  # fmt: skip
    if "mount:" in proc.stderr:
        pytest.skip(f"cannot mount a tmpfs: {proc.stderr.strip()}")
    results = _results(proc)
    _check_one_line_exit_2(results, 1)
    err = results[0]["err"]
    for label in LABELS:
        assert f"cannot write {label}" in err, err
    assert err.count("No space left on device") == 5, err
    names, report, summary = json.loads(proc.stdout.splitlines()[-1])
    assert names == ["filler", "r.json", "summary.md"]  # no temporary file left
    assert report == "old\n" and summary == "old summary\n".ljust(4096, ".")


def _dead_pid() -> int:
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except OSError:
            pass
        pid += 1


def test_temporaries_of_killed_writers_are_removed_by_the_next_write(tmp_path):
    dest = tmp_path / "r.json"
    dead = tmp_path / f".r.json{atomic.TMP_TAG}{_dead_pid()}-abc"
    alive = tmp_path / f".r.json{atomic.TMP_TAG}{os.getppid()}-abc"  # a live writer's
    other = tmp_path / f".x.json{atomic.TMP_TAG}{_dead_pid()}-abc"  # another destination's
    for p in (dead, alive, other):
        p.write_text("partial")
    atomic.atomic_write_text(dest, "new\n")
    assert dest.read_text() == "new\n"
    assert not dead.exists() and alive.exists() and other.exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_a_write_leaves_the_old_file_and_no_temporary(tmp_path, signum):
    """The console script turns SIGTERM into an exception (SIGINT is one already): the
    temporary file is removed, the old file kept, the exit code conventional."""
    dest = tmp_path / "r.json"
    dest.write_text("old\n")
    code = (
        "import os, sys, time\n"
        "from alignctl.cli import assemble\n"
        "from alignctl.cli.common import cli_errors\n"
        "from alignctl.runs.atomic import atomic_write\n"
        "def writer(p):\n"
        "    p.write_text('partial')\n"
        f"    os.kill(os.getpid(), {int(signum)})\n"
        "    time.sleep(30)\n"
        f"assemble.app.command('w')(cli_errors(lambda: atomic_write({str(dest)!r}, writer)))\n"
        "sys.argv = ['alignctl', 'w']\n"
        "assemble.main()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": SRC})  # fmt: skip
    assert proc.returncode == (143 if signum == signal.SIGTERM else 130), proc.stderr
    assert "Traceback" not in proc.stderr
    assert dest.read_text() == "old\n" and leftovers(tmp_path) == []


def test_block_devices_and_sockets_are_refused(tmp_path, monkeypatch):
    import socket

    blk = mknod_or_skip(tmp_path / "blk", stat.S_IFBLK, (7, 200))
    sock_path = tmp_path / "s.sock"
    sock = socket.socket(socket.AF_UNIX)
    monkeypatch.chdir(tmp_path)  # a socket's path holds 107 bytes: a long TMPDIR would not fit
    sock.bind(sock_path.name)
    try:
        for p in (blk, sock_path):
            with pytest.raises(OSError):
                atomic.check_writable(p)
            with pytest.raises(OSError):
                atomic.atomic_write_text(p, "x")
        assert stat.S_ISBLK(os.lstat(blk).st_mode) and stat.S_ISSOCK(os.lstat(sock_path).st_mode)
    finally:
        sock.close()


@pytest.mark.parametrize("kind", ["parent is a file", "out is a file"])
def test_train_and_race_out_fail_in_one_line_before_any_work(tmp_path, kind):
    (tmp_path / "file").write_text("x\n")
    out = tmp_path / "file" / "run" if kind == "parent is a file" else tmp_path / "file"
    for cmd in (["train", "--task", "xor-cluster", "--epochs", "1"],
                ["race", "--task", "xor-cluster", "--seeds", "1"]):  # fmt: skip
        r = CliRunner().invoke(app, [*cmd, "--out", str(out)])
        one_error(r, "cannot write --out")
    assert (tmp_path / "file").read_text() == "x\n"


def test_race_outputs_are_checked_before_racing(tmp_path):
    (tmp_path / "taken").mkdir()
    args = ["race", "--task", "xor-cluster", "--seeds", "1", "--out", str(tmp_path / "o")]
    r = CliRunner().invoke(app, [*args, "--json", str(tmp_path / "taken")])
    one_error(r, "cannot write --json", "folder")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("pair", [("--plot", "--json"), ("--json", "--markdown")])
def test_two_outputs_naming_one_file_are_refused_before_any_work(run_dir, tmp_path, pair):
    """`--plot same.png --json same.png` wrote the JSON over the figure; a link to the other
    name is the same file too. The old file is kept."""
    old = tmp_path / "same.png"  # a name every output accepts
    old.write_text("old")
    (tmp_path / "alias").symlink_to(old)
    r = analyze(run_dir, {pair[0]: old, pair[1]: tmp_path / "alias"})
    one_error(r, pair[0], pair[1], "same file")
    assert old.read_text() == "old"
    cmp = CliRunner().invoke(app, ["compare", str(run_dir), str(run_dir), "-q", pair[0],
                                   str(old), pair[1], str(old)])  # fmt: skip
    one_error(cmp, "same file")
    assert old.read_text() == "old"
