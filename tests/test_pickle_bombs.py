"""Memory bombs through torch's weights-only allowlist (``builtins.bytearray``): a pickle of a few
dozen bytes that asks for ``bytearray(2**40)``, or for a smaller one again and again through the
memo, is refused before torch loads it (alignctl.runs.pickle_scan), wherever alignctl reads a
torch pickle: checkpoints (zip and legacy format), data ``.pt`` files, DCP items and resume
state. Legitimate files, including one that stores a bytearray, load as before."""

from __future__ import annotations

import io
import pickle
import resource
import zipfile

import pytest
import torch
import yaml
from test_checkpoints_hostile import analyze_fails, make_run
from test_hostile_heldout4 import P2, G, S, torch_zip
from typer.testing import CliRunner

from alignctl.cli.assemble import app
from alignctl.errors import InputError
from alignctl.runs.pickle_scan import check_allocations

MEMO0 = b"q\x00"  # BINPUT 0
GET0 = b"h\x00"  # BINGET 0


def big(n: int) -> bytes:
    """A LONG1 constant (any size)."""
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def one_call(n: int) -> bytes:
    return P2 + G("builtins", "bytearray") + b"(" + big(n) + b"tR."


def repeated(n: int, times: int) -> bytes:
    """bytearray(n) ``times`` times in a list, the callable and n taken from the memo."""
    body = G("builtins", "bytearray") + MEMO0 + big(n) + b"q\x01" + b"0" + b"0"  # memoise, pop
    call = GET0 + b"(" + b"h\x01" + b"tR"
    return P2 + body + b"(" + call * times + b"l."


def stack_global(n: int) -> bytes:
    """Protocol 4: the module and name pushed as strings (memoised), then STACK_GLOBAL."""
    names = S("builtins") + b"\x94" + S("bytearray") + b"\x94" + b"\x93"
    return b"\x80\x04" + names + b"(" + big(n) + b"tR."


BOMBS = {
    "one call of 2**40": one_call(2**40),
    "one call of a 400-digit size": one_call(10**400),
    "2**27 bytes 4096 times via the memo": repeated(2**27, 4096),
    "STACK_GLOBAL with memoised names": stack_global(2**40),
}


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_bombs_in_a_checkpoint_are_refused_before_loading(tmp_path, name):
    run = make_run(tmp_path / "run", n_ckpts=1)
    torch_zip(run / "checkpoints" / "step_5.pt", BOMBS[name], {})
    before = _rss_mib()
    err = analyze_fails([str(run)], "bytearray", run)
    assert "could allocate" in err and "ALIGNCTL_MAX_READ_BYTES" in err
    assert _rss_mib() - before < 512  # nothing of the bomb was allocated


def test_the_scan_counts_calls_through_the_memo():
    """Each call below the budget, the sum over it: refused (one constant, 4096 calls)."""
    with pytest.raises(InputError, match="4096 calls"):
        check_allocations(torch_bytes(repeated(2**27, 4096)), "x")
    check_allocations(torch_bytes(repeated(2**10, 4096)), "x")  # 4 MiB in all: fine


def torch_bytes(pkl: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/version", "3\n")
    return buf.getvalue()


def test_a_legacy_format_bomb_is_refused(tmp_path):
    """Legacy (non-zip) torch files: magic, protocol and sys-info pickles, then the object."""
    head = b"".join(pickle.dumps(v, protocol=2) for v in (0x1950A86A20F9469CFC6C, 1001, {}))
    path = tmp_path / "legacy.pt"
    path.write_bytes(head + one_call(2**40))
    with pytest.raises(InputError, match="bytearray"):
        check_allocations(path, str(path))


def test_a_bomb_in_a_data_file_is_refused(tmp_path):
    run = make_run(tmp_path / "run", n_ckpts=1)
    torch_zip(run / "data.pt", one_call(2**40), {})
    cfg = yaml.safe_load((run / "alignctl.yaml").read_text())
    cfg["data"]["path"] = "data.pt"
    (run / "alignctl.yaml").write_text(yaml.safe_dump(cfg))
    analyze_fails([str(run)], "bytearray", run)


@pytest.mark.parametrize("legacy", [False, True])
def test_legitimate_files_load_as_before(tmp_path, legacy):
    """A checkpoint that stores a bytearray beside its weights, and big tensor sizes without
    one, pass the scan and analyse normally."""
    run = make_run(tmp_path / "run", n_ckpts=1)
    from test_checkpoints_hostile import _state

    obj = {"state_dict": _state(), "blob": bytearray(b"abc" * 100), "step": 7}
    torch.save(obj, run / "checkpoints" / "step_7.pt", _use_new_zipfile_serialization=not legacy)
    check_allocations(run / "checkpoints" / "step_7.pt", "x")
    check_allocations(torch_bytes(P2 + big(2**60) + b"."), "no allocator: any integer")
    r = CliRunner().invoke(app, ["analyze", str(run), "--quiet", "--metrics", "fast"])
    assert r.exit_code == 0, (r.stderr, r.exception)


def test_a_bomb_in_resume_state_is_refused(tmp_path):
    """``train --resume`` reads its own state files: a bomb there is refused, not loaded."""
    from alignctl.train.resume import _read_state

    path = tmp_path / "state.pt"
    path.write_bytes(torch_bytes(one_call(2**40)))
    with pytest.raises(Exception, match="bytearray"):
        _read_state(path, 0)


def test_messages_name_the_pickled_global_not_our_placeholder(tmp_path):
    """A dict mixing tensors with a pickled object named the placeholder class
    ("'args' is a Inert_argparse_Namespace"), an internal name, in its error."""
    import argparse

    run = make_run(tmp_path / "run", n_ckpts=1)
    bad = {"w": torch.zeros(2), "args": argparse.Namespace(lr=0.1)}
    (run / "checkpoints" / "step_0.safetensors").unlink()
    torch.save(bad, run / "checkpoints" / "step_9.pt")
    err = analyze_fails([str(run)], "args", run)
    assert "Inert" not in err and "argparse.Namespace" in err
