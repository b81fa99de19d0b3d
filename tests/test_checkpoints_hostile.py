"""Hostile input files (issue 16, items 2 and 8): FIFOs and devices, folders we may not enter,
sparse 64 GiB files, shard indexes pointing outside their folder, zip bombs. Each: one
``error:`` line, exit 2, nothing changed, nothing read outside the run, bounded memory and
time (every file here is built in a temporary folder; device nodes are our own)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file
from typer.testing import CliRunner

from alignctl.cli.assemble import app
from alignctl.runs.limits import READ_BUDGET_ENV

MODEL = {"arch": "mlp", "in_features": 4, "hidden": [8], "out_features": 3}
GiB = 2**30


def _state() -> dict[str, torch.Tensor]:
    from alignctl.runs.models import build_model

    torch.manual_seed(0)
    return {k: v.contiguous() for k, v in build_model(MODEL, Path(".")).state_dict().items()}


def make_run(root: Path, n_ckpts: int = 2) -> Path:
    (root / "checkpoints").mkdir(parents=True)
    g = np.random.default_rng(0)
    np.savez(root / "data.npz", x_train=g.normal(size=(12, 4)).astype(np.float32),
             y_train=np.arange(12) % 3)  # fmt: skip
    cfg = {"model": MODEL, "data": {"path": "data.npz"}}
    (root / "alignctl.yaml").write_text(yaml.safe_dump(cfg))
    for step in range(n_ckpts):
        save_file(_state(), str(root / "checkpoints" / f"step_{step}.safetensors"))
    return root


def _snapshot(root: Path) -> dict:
    out = {}
    for p in root.rglob("*"):
        st = os.lstat(p)
        if stat.S_ISREG(st.st_mode) and st.st_size < 2**26:
            out[p] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[p] = (stat.S_IFMT(st.st_mode), st.st_size)
    return out


def analyze_fails(argv: list[str], fragment: str, root: Path) -> str:
    """Run ``analyze`` in process: exit 2, one error line naming ``fragment``, nothing changed."""
    before = _snapshot(root)
    r = CliRunner().invoke(app, ["analyze", *argv, "--quiet"])
    err = r.stderr.strip()
    assert r.exit_code == 2, (r.exit_code, r.stdout, r.stderr, r.exception)
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert "Traceback" not in r.stderr + r.stdout
    assert fragment.lower() in err.lower(), err
    assert _snapshot(root) == before
    return err


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def analyze_guarded(argv: list[str], seconds: int = 60) -> Result:
    """``analyze`` in process, interrupted if it blocks (opening a FIFO waits for a writer,
    a device never ends): a regression fails this test instead of hanging the suite."""

    def stop(*_):
        raise TimeoutError("analyze blocked on a file that is not a regular file")

    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        r = CliRunner().invoke(app, ["analyze", *argv, "--quiet"])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert not isinstance(r.exception, TimeoutError), "analyze blocked"
    return Result(r.exit_code, r.stdout, r.stderr)


def analyze_subprocesses(argvs: list[list[str]], prefix: list[str]) -> list[Result]:
    """Several ``analyze`` calls in one subprocess (one torch import) run under ``prefix``."""
    code = (
        "import json, sys\n"
        "from typer.testing import CliRunner\n"
        "from alignctl.cli.assemble import app\n"
        "out = []\n"
        "for argv in json.loads(sys.argv[1]):\n"
        "    r = CliRunner().invoke(app, ['analyze', *argv, '--quiet'])\n"
        "    out.append([r.exit_code, r.stdout, r.stderr])\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    cmd = [*prefix, sys.executable, "-c", code, json.dumps(argvs)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    return [Result(*r) for r in json.loads(done.stdout.strip().splitlines()[-1])]


# ------------------------------------------------------------------ not regular files


def _fifo(path: Path) -> Path:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    os.mkfifo(path)
    return path


def _char_device(path: Path) -> Path:
    try:  # our own node with /dev/zero's numbers, inside the temporary folder
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 5))
    except (OSError, AttributeError) as e:
        pytest.skip(f"cannot make a device node here: {e}")
    return path


MAKERS = {"fifo": (_fifo, "fifo"), "device": (_char_device, "character device")}


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_checkpoint_path_that_is_not_a_regular_file(tmp_path, kind):
    make, word = MAKERS[kind]
    root = make_run(tmp_path / "r")
    # In a subprocess with a timeout: opening a FIFO would block for ever, a device never ends.
    node = make(root / "checkpoints" / "step_9.pt")
    r = analyze_guarded([str(node)])
    assert r.returncode == 2 and r.stderr.startswith("error: ") and word in r.stderr.lower()
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_non_regular_files_inside_a_run(tmp_path, kind):
    make, word = MAKERS[kind]
    root = make_run(tmp_path / "r")
    make(root / "checkpoints" / "step_5.safetensors")
    r = analyze_guarded([str(root), "--json", "-", "--metrics", "fast"])
    assert r.returncode == 0, r.stderr  # skipped, with a note
    report = json.loads(r.stdout)
    assert [c["name"] for c in report["checkpoints"]] == ["step_0", "step_1"]
    assert any("step_5.safetensors" in n and word in n.lower() for n in report["notes"])
    for victim, what in (("alignctl.yaml", "config file"), ("data.npz", "data file")):
        other = make_run(tmp_path / f"{kind}-{victim}")
        (other / victim).unlink()
        make(other / victim)
        r = analyze_guarded([str(other)])
        assert r.returncode == 2 and word in r.stderr.lower() and what in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_hf_folder_whose_weights_are_a_fifo(tmp_path):
    folder = tmp_path / "checkpoint-10"
    folder.mkdir()
    _fifo(folder / "model.safetensors")
    r = analyze_guarded([str(folder), "--model", "mlp"])
    assert r.returncode == 2 and "fifo" in r.stderr.lower(), r.stderr


# ------------------------------------------------------------------ permissions


def _drop_caps() -> list[str]:
    """A command prefix that drops the capabilities with which root ignores file modes."""
    if os.geteuid() != 0:
        return []
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
    if not shutil.which("setpriv"):
        pytest.skip("setpriv not available: cannot drop the permission-bypass capabilities")
    with tempfile.TemporaryDirectory() as d:
        probe = Path(d) / "x"
        probe.write_text("x")
        probe.chmod(0)
        r = subprocess.run([*prefix, "cat", str(probe)], capture_output=True)
        if r.returncode == 0:
            pytest.skip("dropping capabilities had no effect here")
    return prefix


def test_mode_000_is_one_line(tmp_path):
    prefix = _drop_caps()
    cases = {}
    for what in ("run", "checkpoints", "file", "config", "data"):  # data: was internal error
        root = make_run(tmp_path / what)
        ck = root / "checkpoints"
        target = {"run": root, "checkpoints": ck, "config": root / "alignctl.yaml",
                  "file": ck / "step_1.safetensors", "data": root / "data.npz"}[what]  # fmt: skip
        target.chmod(0)
        cases[what] = (root, target)
    try:
        results = analyze_subprocesses([[str(root)] for root, _ in cases.values()], prefix)
    finally:
        for _, target in cases.values():
            target.chmod(0o755)
    for what, r in zip(cases, results, strict=True):
        assert r.returncode == 2, (what, r.returncode, r.stderr)
        assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1, what
        assert "permission denied" in r.stderr.lower(), (what, r.stderr)


# ------------------------------------------------------------------ sparse 64 GiB files


def _extend(path: Path, size: int = 64 * GiB) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(size)  # sparse: costs no disk and no time


@pytest.mark.parametrize("budget", ["default", "huge"])
@pytest.mark.parametrize("victim", ["step_1.safetensors", "step_1.pt", "alignctl.yaml",
                                    "data.npz", "index"])  # fmt: skip
def test_sparse_64_gib_files_are_refused_unread(tmp_path, monkeypatch, victim, budget):
    if budget == "huge":  # the structure check alone must refuse them too
        monkeypatch.setenv(READ_BUDGET_ENV, str(2**40))
    root = make_run(tmp_path / "r", n_ckpts=1)
    ck = root / "checkpoints"
    if victim == "step_1.pt":
        torch.save(_state(), ck / victim)
    elif victim == "index":
        (ck / "step_0.safetensors").rename(ck / "model-00001-of-00001.safetensors")
        wmap = {k: "model-00001-of-00001.safetensors" for k in _state()}
        (ck / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wmap}))
        victim = "model.safetensors.index.json"
    elif victim == "step_1.safetensors":
        save_file(_state(), str(ck / victim))
    path = ck / victim if (ck / victim).exists() else root / victim
    _extend(path)
    words = {"alignctl.yaml": "allowed", "model.safetensors.index.json": "allowed"}
    fragment = words.get(victim, "budget" if budget == "default" else path.name)
    if budget == "default" and os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") > 64 * GiB:
        fragment = path.name
    analyze_fails([str(root)], fragment, tmp_path)


# ------------------------------------------------------------------ shard indexes


@pytest.mark.parametrize(
    "index, fragment",
    [
        ({"metadata": [1, 2], "weight_map": "SHARD"}, "'metadata' must be a mapping, got list"),
        ({"metadata": "x", "weight_map": "SHARD"}, "'metadata' must be a mapping"),
        ({"weight_map": ["a"]}, "expected a mapping with a 'weight_map'"),
        ({"weight_map": {"w": "../outside.safetensors"}}, "outside its folder"),
        ({"weight_map": {"w": "/etc/hostname"}}, "outside its folder"),
        ({"weight_map": {"w": "sub/../../outside.safetensors"}}, "outside its folder"),
        ({"weight_map": {"w": "..\\outside.safetensors"}}, "outside its folder"),
        ({"weight_map": {"w": "notes.txt"}}, "not a .safetensors/.bin"),
        ({"weight_map": {"w": 3}}, "must be strings"),
        ([1, 2, 3], "expected a mapping"),
    ],
)
def test_hostile_shard_index(tmp_path, monkeypatch, index, fragment):
    root = make_run(tmp_path / "r", n_ckpts=0)
    folder = root / "checkpoints"
    shard = "model-00001-of-00001.safetensors"
    save_file(_state(), str(folder / shard))
    save_file(_state(), str(root / "outside.safetensors"))
    if isinstance(index, dict) and index.get("weight_map") == "SHARD":
        index["weight_map"] = {k: shard for k in _state()}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    opened: list[str] = []
    real_open = open

    def spy(file, *a, **k):
        opened.append(str(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr("builtins.open", spy)
    analyze_fails([str(root)], fragment, tmp_path)
    monkeypatch.undo()
    assert not [p for p in opened if "outside" in p or p.startswith("/etc")], opened


# ------------------------------------------------------------------ zip bombs


def _zeros_deflated(prefix: bytes, n_mib: int) -> tuple[bytes, int, int]:
    """A raw deflate stream of ``prefix`` + ``n_mib`` MiB of zeros, built from one repeated
    full-flush block (about 1 KiB per MiB), with its CRC and size; nothing big in memory."""
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    mib = bytes(2**20)
    head = co.compress(prefix) + co.flush(zlib.Z_FULL_FLUSH)
    block = co.compress(mib) + co.flush(zlib.Z_FULL_FLUSH)
    assert co.compress(mib) + co.flush(zlib.Z_FULL_FLUSH) == block  # position independent
    crc = zlib.crc32(prefix)
    for _ in range(n_mib):
        crc = zlib.crc32(mib, crc)
    return head + block * n_mib + co.flush(), crc, len(prefix) + n_mib * 2**20


def _bomb_zip(path: Path, members: dict[str, bytes], bomb_name: str, bomb) -> None:
    """A zip of ``members`` (stored) plus ``bomb_name``: a real deflated member declaring its
    true (huge) size. zipfile writes it stored; its headers are then patched to deflate."""
    data, crc, size = bomb
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, content in members.items():
            z.writestr(name, content)
        z.writestr(bomb_name, data)
    raw = bytearray(path.read_bytes())
    name = bomb_name.encode()
    for sig, method_at, crc_at, usize_at, name_at, len_at in (
        (b"PK\x03\x04", 8, 14, 22, 30, 26),
        (b"PK\x01\x02", 10, 16, 24, 46, 28),
    ):
        at = 0
        while (at := raw.find(sig, at)) >= 0:
            n = int.from_bytes(raw[at + len_at : at + len_at + 2], "little")
            if raw[at + name_at : at + name_at + n] == name:
                raw[at + method_at : at + method_at + 2] = (8).to_bytes(2, "little")
                raw[at + crc_at : at + crc_at + 4] = crc.to_bytes(4, "little")
                raw[at + usize_at : at + usize_at + 4] = size.to_bytes(4, "little")
            at += 4
    path.write_bytes(bytes(raw))
    with zipfile.ZipFile(path) as z:  # a valid zip, declaring what it really inflates to
        assert z.getinfo(bomb_name).file_size == size and z.getinfo(bomb_name).compress_type == 8


def _torch_members() -> tuple[dict[str, bytes], str]:
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(4)}, buf)
    with zipfile.ZipFile(buf) as z:
        members = {n: z.read(n) for n in z.namelist()}
    data = next(n for n in members if n.endswith("/data/0"))
    del members[data]
    return members, data


def _npy_header(shape: tuple) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f4", "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


@pytest.mark.parametrize("where", ["checkpoint .pt", "data .npz", "data .pt"])
def test_zip_bombs_are_refused_before_inflating(tmp_path, where):
    import resource

    root = make_run(tmp_path / "r", n_ckpts=1)
    bomb_mib = 1024
    if where == "data .npz":
        bomb = _zeros_deflated(_npy_header((bomb_mib * 2**18,)), bomb_mib)
        y = io.BytesIO()
        np.save(y, np.arange(12) % 3)
        target = root / "data.npz"
        _bomb_zip(target, {"y_train.npy": y.getvalue()}, "x_train.npy", bomb)
    else:
        members, data_name = _torch_members()
        target = root / ("checkpoints/step_5.pt" if where == "checkpoint .pt" else "data.pt")
        _bomb_zip(target, members, data_name, _zeros_deflated(b"", bomb_mib))
        if where == "data .pt":
            cfg = {"model": MODEL, "data": {"path": "data.pt"}}
            (root / "alignctl.yaml").write_text(yaml.safe_dump(cfg))
    assert target.stat().st_size < 2 * 2**20  # a ~1 MiB file declaring 1 GiB
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    err = analyze_fails([str(root)], "zip bomb", tmp_path)
    assert target.name in err and ("1 GiB" in err or "1.0 GiB" in err)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
    assert grown_mib < 256, f"peak memory grew {grown_mib:.0f} MiB"


def test_zip_declaring_more_than_it_stores(tmp_path):
    root = make_run(tmp_path / "r", n_ckpts=1)
    target = root / "checkpoints" / "step_5.pt"
    buf = io.BytesIO()
    torch.save(_state(), buf)
    raw = bytearray(buf.getvalue())
    at = raw.find(b"PK\x01\x02")  # first central entry: a stored member claims 3 GiB
    raw[at + 24 : at + 28] = (3 * GiB).to_bytes(4, "little")
    target.write_bytes(bytes(raw))
    analyze_fails([str(root)], "step_5.pt", tmp_path)
