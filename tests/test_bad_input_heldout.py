"""Held-out fuzz cases (a checker's pass after issue 16) that broke a promise: each is the
smallest case of its kind. Every case: exit 2, one ``error:`` line, no traceback, every file
that was there unchanged (bytes and kind)."""

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from alignctl.cli.assemble import app

sys.path.insert(0, str(Path(__file__).parent))
from test_bad_input import make_run  # noqa: E402
from test_outputs import one_error  # noqa: E402


def _state(root: Path) -> dict:
    """Path -> (kind, content hash or link target) of everything under ``root``."""
    out = {}
    for p in root.rglob("*"):
        st = p.lstat()
        body = os.readlink(p) if p.is_symlink() else None
        if body is None and p.is_file():  # a sparse 64 GiB file: its size and time
            big = st.st_size > 16 << 20
            body = (st.st_size, st.st_mtime_ns) if big else hashlib.sha256(p.read_bytes()).digest()
        out[p] = (st.st_mode & 0o170000, body)
    return out


def refused(tmp_path: Path, argv: list[str], *fragments: str, env=None) -> str:
    before = _state(tmp_path)
    line = one_error(CliRunner().invoke(app, argv, env=env), *fragments)
    assert _state(tmp_path) == before, "a file that was there changed"
    return line


# ---- an output naming a file the command reads would replace its input ----------------------

FIRST = "checkpoints/step_0.safetensors"
INPUTS = {
    "a checkpoint": lambda r, t: r / "checkpoints" / "step_10.safetensors",
    "the data file": lambda r, t: r / "data.npz",
    "alignctl.yaml": lambda r, t: r / "alignctl.yaml",
    "a link to a checkpoint": lambda r, t: _link(t / "x.json", r / FIRST),
}  # fmt: skip
OUTPUTS = ["--json", "--csv", "--markdown", "GITHUB_STEP_SUMMARY"]


def _link(link: Path, target: Path) -> Path:
    link.symlink_to(target)
    return link


@pytest.mark.parametrize("label", OUTPUTS)
@pytest.mark.parametrize("which", sorted(INPUTS))
def test_analyze_outputs_never_name_an_input(tmp_path, label, which):
    run = make_run(tmp_path / "r")
    dest = str(INPUTS[which](run, tmp_path))
    args = ["analyze", str(run), "--quiet", "--no-cache"]
    env = {"GITHUB_STEP_SUMMARY": dest} if label == "GITHUB_STEP_SUMMARY" else None
    refused(tmp_path, args + ([] if env else [label, dest]), label, "input", env=env)


def test_plot_onto_a_link_to_a_checkpoint_is_refused(tmp_path):
    run = make_run(tmp_path / "r")
    link = _link(tmp_path / "fig.png", run / "checkpoints" / "step_0.safetensors")
    refused(tmp_path, ["analyze", str(run), "--quiet", "--no-cache", "--plot", str(link)], "input")


def test_baseline_and_config_are_inputs_too(tmp_path):
    run = make_run(tmp_path / "r")
    base = tmp_path / "base.json"
    r = CliRunner().invoke(app, ["analyze", str(run), "--quiet", "--no-cache", "--json", str(base)])
    assert r.exit_code == 0, r.stderr
    drop = ["--baseline", str(base), "--max-drop", "test_accuracy=0.5"]
    refused(tmp_path, ["analyze", str(run), "--quiet", "--no-cache", *drop, "--json", str(base)],
            "--json", "input")  # fmt: skip
    cfg = run / "alignctl.yaml"
    refused(tmp_path, ["analyze", str(run), "--quiet", "--no-cache", "--config", str(cfg),
                       "--markdown", str(cfg)], "--markdown", "input")  # fmt: skip


def test_compare_and_geometry_outputs_never_name_an_input(tmp_path):
    run = make_run(tmp_path / "r")
    report = tmp_path / "a.json"
    r = CliRunner().invoke(
        app, ["analyze", str(run), "--quiet", "--no-cache", "--json", str(report)]
    )
    assert r.exit_code == 0, r.stderr
    other = tmp_path / "b.json"
    other.write_bytes(report.read_bytes())
    refused(tmp_path, ["compare", str(report), str(other), "--quiet", "--json", str(other)],
            "--json", "input")  # fmt: skip
    refused(tmp_path, ["compare", str(report), str(run), "--quiet", "--markdown",
                       str(run / "data.npz")], "--markdown", "input")  # fmt: skip
    ckpt = run / "checkpoints" / "step_10.safetensors"
    refused(tmp_path, ["geometry", str(run), "--out", str(tmp_path / "g.png"), "--resolution",
                       "16", "--json", str(ckpt)], "--json", "input")  # fmt: skip


def test_race_outputs_never_name_its_config(tmp_path):
    cfg = tmp_path / "race.yaml"
    cfg.write_text(
        json.dumps(
            {
                "model": {"arch": "mlp", "in_features": 4, "hidden": [4], "out_features": 2},
                "data": {"task": "sparse-parity"},
            }
        )
    )
    refused(tmp_path, ["race", "--config", str(cfg), "--out", str(tmp_path / "o"), "--seeds", "1",
                       "--json", str(cfg)], "--json", "input")  # fmt: skip


# ---- a name ending in / names a folder: Path() would drop the slash and write a file ---------


@pytest.mark.parametrize("label", ["--json", "--csv", "--markdown", "--plot"])
def test_a_trailing_slash_is_a_folder_not_a_file(tmp_path, label):
    run = make_run(tmp_path / "r")
    name = {"--plot": "fig.png"}.get(label, "out.txt")
    refused(tmp_path, ["analyze", str(run), "--quiet", "--no-cache", label, f"{tmp_path}/{name}/"],
            label, "folder")  # fmt: skip
    assert not (tmp_path / name).exists()


# ---- numbers that pass a check as one type and break it as another -------------------------

X = np.linspace(-1, 1, 24, dtype=np.float32).reshape(6, 4)
Y = np.arange(6) % 3


@pytest.mark.parametrize(
    ("arrays", "fragment"),
    [
        # finite in float64, inf once cast to the float32 the model reads
        ({"x_train": X.astype(np.float64) * 1e300, "y_train": Y}, "float32's range"),
        # .long() wrapped these into -1 and -2**63: the message named a label nobody wrote
        ({"x_train": X, "y_train": np.full(6, 2**64 - 1, dtype=np.uint64)}, "1.84467e+19"),
        ({"x_train": X, "y_train": np.full(6, 1e20)}, "1e+20"),
    ],
    ids=["x float64 1e300", "y uint64 max", "y float 1e20"],
)
def test_data_values_that_change_under_a_cast(tmp_path, arrays, fragment):
    run = make_run(tmp_path / "r", data=arrays)
    refused(tmp_path, ["analyze", str(run), "--quiet", "--no-cache"], fragment)


@pytest.mark.parametrize("bound", [".nan", ".inf", "true"])
def test_input_range_bounds_are_finite_numbers(tmp_path, bound):
    """``[.nan, 1]`` passed ``low < high`` (every comparison with NaN is False)."""
    cfg = (f"model: {{arch: mlp, in_features: 4, hidden: [8], out_features: 3}}\n"
           f"data: {{path: data.npz, input_range: [{bound}, 2]}}\n")  # fmt: skip
    run = make_run(tmp_path / "r", config=cfg)
    refused(tmp_path, ["analyze", str(run), "--quiet", "--no-cache"], "input_range")


def test_a_seed_torch_cannot_take_is_an_input_error(tmp_path):
    """train.seed 2**70 reached torch.manual_seed: "internal error ... this is a bug"."""
    cfg = ("model: {arch: mlp, in_features: 4, hidden: [8], out_features: 3}\n"
           "data: {path: data.npz}\n"
           "train: {seed: 1180591620717411303424, epochs: 1}\n")  # fmt: skip
    run = make_run(tmp_path / "r", config=cfg)
    line = refused(tmp_path, ["train", "--config", str(run / "alignctl.yaml"), "--out",
                              str(tmp_path / "out"), "--quiet"], "train.seed")  # fmt: skip
    assert "internal error" not in line


# ---- resources: what torch would take that the checks could not see --------------------------


def _zip64_patched(raw: bytes, how: str) -> bytes:
    """A torch.save zip (which carries zip64 records) that torch still reads but
    :mod:`zipfile` refuses: a zip64 locator naming disk 1, or a broken zip64 record."""
    raw = bytearray(raw)
    if how == "locator on disk 1":
        at = raw.rfind(b"PK\x06\x07")
        raw[at + 4 : at + 8] = (1).to_bytes(4, "little")
    else:
        at = raw.rfind(b"PK\x06\x06")
        raw[at : at + 4] = b"XXXX"
    return bytes(raw)


@pytest.mark.parametrize("how", ["locator on disk 1", "zip64 record broken"])
def test_a_zip_whose_directory_only_torch_reads_is_refused(tmp_path, how):
    """The bomb checks read the zip directory with zipfile; a zip it could not parse was left to
    torch's more lenient reader, so a 1 MiB bomb patched this way inflated 1 GiB unchecked."""
    import io
    import zipfile

    import torch

    buf = io.BytesIO()
    torch.save({"w": torch.zeros(4)}, buf)
    raw = _zip64_patched(buf.getvalue(), how)
    assert torch.load(io.BytesIO(raw), weights_only=True)["w"].shape == (4,)  # torch reads it
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(io.BytesIO(raw))
    run = make_run(tmp_path / "r")
    (run / "checkpoints" / "step_5.pt").write_bytes(raw)
    refused(tmp_path, ["analyze", str(run), "--quiet", "--no-cache"], "step_5.pt", "zip directory")


@pytest.mark.parametrize("n", ["0", "100000"])
def test_threads_beyond_what_torch_survives(tmp_path, n):
    """--threads 100000 killed analyze with SIGSEGV (libgomp could not create the threads)."""
    run = make_run(tmp_path / "r")
    refused(tmp_path, ["analyze", str(run), "--quiet", "--no-cache", "--threads", n], "threads")
    refused(tmp_path, ["train", "--task", "sparse-parity", "--epochs", "1", "--threads", n,
                       "--out", str(tmp_path / "t"), "--quiet"], "threads")  # fmt: skip


# ---- JSON nested past the recursion limit is malformed JSON, not an internal error ------------

DEEP = "[" * 100_000 + "]" * 100_000


def _st_with_header(header: str) -> bytes:
    raw = header.encode()
    return len(raw).to_bytes(8, "little") + raw


def test_a_safetensors_header_nested_100000_deep(tmp_path):
    run = make_run(tmp_path / "r", ckpts={"step_5.safetensors": _st_with_header(DEEP)})
    line = refused(tmp_path, ["analyze", str(run), "--quiet", "--no-cache"], "step_5")
    assert "internal error" not in line


def test_a_safetensors_metadata_value_nested_100000_deep(tmp_path):
    """Metadata values are decoded as JSON when they are JSON (the step): RecursionError."""
    header = json.dumps({"__metadata__": {"step": DEEP}, "w": {"dtype": "F32", "shape": [1],
                                                              "data_offsets": [0, 4]}})  # fmt: skip
    header += " " * (-len(header) % 8)
    run = make_run(tmp_path / "r", ckpts={"step_5.safetensors": _st_with_header(header) + bytes(4)})
    line = refused(tmp_path, ["analyze", str(run), "--quiet", "--no-cache"], "step_5")
    assert "internal error" not in line


def test_a_compared_report_nested_100000_deep(tmp_path):
    (tmp_path / "a.json").write_text(DEEP)
    (tmp_path / "b.json").write_text("{}")
    argv = ["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--quiet"]
    line = refused(tmp_path, argv, "a.json", "not a readable JSON report")
    assert "internal error" not in line


# ---- inputs that reached an "internal error" (a bug line) instead of an input error ----------


@pytest.mark.parametrize(
    ("report", "fragment"),
    [
        ('{"checkpoints": [{"step": "x", "metrics": {}}]}', "integer step"),  # TypeError
        ('{"checkpoints": [{"step": 0, "metrics": [1]}]}', "integer step"),
        (None, "64 MiB"),  # a sparse 64 GiB report: read whole, MemoryError
    ],
    ids=["step a string", "metrics a list", "sparse 64 GiB"],
)
def test_compare_refuses_reports_it_cannot_use(tmp_path, report, fragment):
    bad, good = tmp_path / "bad.json", tmp_path / "good.json"
    good.write_text('{"checkpoints": [{"step": 0, "metrics": {"jacobian_norm": 1.0}}]}')
    if report is None:
        bad.write_text("{}")
        os.truncate(bad, 64 << 30)
    else:
        bad.write_text(report)
    line = refused(tmp_path, ["compare", str(good), str(bad), "--quiet"], "bad.json", fragment)
    assert "internal error" not in line


FREEZE_CFG = {
    "model": {"arch": "mlp", "in_features": 10, "hidden": [16], "out_features": 2},
    "data": {"task": "sparse-parity", "n": 120, "n_bits": 10, "k": 3},
    "train": {"epochs": 1},
}


@pytest.mark.parametrize(("freeze", "fragment"), [(["nope."], "no parameter"), ([""], "every")])
def test_a_freeze_that_freezes_nothing_or_everything(tmp_path, freeze, fragment):
    """A typo froze nothing, silently (exit 0); "" froze all: torch's "empty parameter list"."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps({**FREEZE_CFG, "train": {"epochs": 1, "freeze": freeze}}))
    argv = ["train", "--config", str(cfg), "--out", str(tmp_path / "o"), "--quiet"]
    assert "internal error" not in refused(tmp_path, argv, "train.freeze", fragment)


def test_a_race_of_a_trillion_seeds_is_refused_before_listing_them(tmp_path):
    argv = ["race", "--task", "sparse-parity", "--out", str(tmp_path / "o"), "--seeds",
            str(10**12), "--quiet"]  # fmt: skip
    assert "internal error" not in refused(tmp_path, argv, "100,000")


def test_train_out_onto_a_broken_link_says_so_before_any_work(tmp_path):
    """It passed the up-front check (nothing there) and failed after building the run with
    "cannot create ...: File exists"."""
    (tmp_path / "out").symlink_to(tmp_path / "gone")
    argv = ["train", "--task", "sparse-parity", "--epochs", "1", "--out", str(tmp_path / "out")]
    refused(tmp_path, [*argv, "--quiet"], "--out", "broken symbolic link")


# ---- a SIGTERM is never lost -----------------------------------------------------------------


def test_a_sigterm_swallowed_by_a_library_still_exits_143(monkeypatch, capsys):
    """SIGTERM ~0.55 s after start landed in numpy's import inside torch's C initialisation,
    which swallows any exception: the command ran on and exited 0 (kill -TERM probe, 1 in 40
    moments); at ~0.7 s it landed in importlib's lock callback: "Exception ignored ...
    Traceback" on stderr, exit 0. The handler now records the signal, and a swallowed one
    still ends the command with 143 and no traceback."""
    import signal
    import types

    from alignctl.cli import assemble, process
    from alignctl.cli.common import Terminated

    def app():
        try:  # a library that swallows whatever its import raised
            process.terminate(signal.SIGTERM, None)
        except BaseException:  # noqa: BLE001, S110
            pass
        raise SystemExit(0)  # click's normal end

    monkeypatch.setattr(assemble, "app", app)
    monkeypatch.setattr(process, "TERMINATED", [])
    monkeypatch.setattr(signal, "signal", lambda *a: None)  # the test process keeps its own
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
    with pytest.raises(SystemExit) as e:
        assemble._run_app()
    assert e.value.code == 143 and capsys.readouterr().err.strip() == "terminated"

    def handled():  # a command that reports it itself (cli_errors): said once, not twice
        try:
            process.terminate(signal.SIGTERM, None)
        except Terminated:
            print("terminated", file=sys.stderr)
            raise SystemExit(143) from None

    monkeypatch.setattr(assemble, "app", handled)
    monkeypatch.setattr(process, "TERMINATED", [])
    with pytest.raises(SystemExit) as e:
        assemble._run_app()
    assert e.value.code == 143 and capsys.readouterr().err.strip() == "terminated"
    seen = []
    hook = process.quiet_terminated(seen.append)
    hook(types.SimpleNamespace(exc_value=Terminated()))  # dropped: no "Exception ignored"
    hook(types.SimpleNamespace(exc_value=ValueError("x")))  # anything else: as before
    assert len(seen) == 1


# ---- files alignctl may not read, names it cannot expand, files too big to read ---------------


def test_resume_of_a_run_whose_checkpoints_may_not_be_listed(tmp_path):
    """train --resume on a mode-000 checkpoints/ (root's bypass dropped): PermissionError as
    an internal error."""
    import subprocess

    from test_checkpoints_hostile import _drop_caps

    prefix = _drop_caps()
    run = tmp_path / "run"
    argv = ["train", "--task", "sparse-parity", "--epochs", "1", "--out", str(run), "--quiet"]
    assert CliRunner().invoke(app, argv).exit_code == 0
    (run / "checkpoints").chmod(0)
    try:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
        cmd = [*prefix, sys.executable, "-m", "alignctl", "train", "--resume", str(run), "-q"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    finally:
        (run / "checkpoints").chmod(0o755)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: cannot read") and "internal" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_home_folder_that_does_not_exist(tmp_path):
    cfg = ("model: {arch: mlp, in_features: 4, hidden: [8], out_features: 3}\n"
           "data: {path: ~no_such_user_qa13/data.npz}\n")  # fmt: skip
    run = make_run(tmp_path / "r", config=cfg)
    refused(tmp_path, ["analyze", str(run), "--quiet", "--no-cache"], "~no_such_user_qa13")


def test_a_sparse_64_gib_monitor_log_is_not_read(tmp_path):
    (tmp_path / "m").mkdir()
    log = tmp_path / "m" / "alignment.jsonl"
    log.write_text('{"step": 1}\n')
    os.truncate(log, 64 << 30)
    refused(tmp_path, ["analyze", str(tmp_path / "m"), "--quiet"], "alignment.jsonl", "64 GiB")


def test_a_run_json_that_does_not_parse_does_not_stop_a_follow():
    from alignctl.report.run_watcher import _interrupted

    assert _interrupted("[" * 100_000) is False and _interrupted("{") is False


def test_the_figure_link_in_markdown_is_the_figure(tmp_path):
    """``--plot "a b) ![x](y.png"``: the Markdown image pointed at y.png."""
    from urllib.parse import unquote

    from markdown_it import MarkdownIt

    run = make_run(tmp_path / "r")
    name = "a b) ![x](y.png"
    argv = ["analyze", str(run), "-q", "--no-cache", "--plot", str(tmp_path / name),
            "--markdown", str(tmp_path / "r.md")]  # fmt: skip
    assert CliRunner().invoke(app, argv).exit_code == 0
    tokens = MarkdownIt("commonmark").parse((tmp_path / "r.md").read_text())
    images = [c for t in tokens for c in (t.children or []) if c.type == "image"]
    assert [unquote(i.attrs["src"]) for i in images] == [name]


# ---- the environment ------------------------------------------------------------------------


def test_a_read_budget_of_1e400_is_a_usage_error(tmp_path):
    run = make_run(tmp_path / "r")
    argv = ["analyze", str(run), "--quiet", "--no-cache"]
    line = refused(
        tmp_path, argv, "ALIGNCTL_MAX_READ_BYTES", env={"ALIGNCTL_MAX_READ_BYTES": "1e400"}
    )
    assert "internal error" not in line


def test_stdout_that_cannot_encode_the_table(tmp_path):
    """PYTHONIOENCODING=ascii: the table's characters raised UnicodeEncodeError after the whole
    analysis: "internal error", exit 2, --json never written."""
    import subprocess

    run = make_run(tmp_path / "r")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src"),
           "PYTHONIOENCODING": "ascii"}  # fmt: skip
    cmd = [sys.executable, "-m", "alignctl", "analyze", str(run), "--no-cache", "--json",
           str(tmp_path / "r.json")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r.json").is_file() and "step" in done.stdout


@pytest.mark.parametrize("value", ["nan", "1e309", "true"])
def test_a_regulariser_parameter_is_named_as_the_user_wrote_it(tmp_path, value):
    """``--reg grokalign:lambda=nan`` said "lam must be a finite number" (the internal name)."""
    argv = ["train", "--task", "sparse-parity", "--epochs", "1", "--reg",
            f"grokalign:lambda={value}", "--out", str(tmp_path / "o"), "--quiet"]  # fmt: skip
    line = refused(tmp_path, argv, "grokalign: lambda must be")
    assert " lam " not in line
