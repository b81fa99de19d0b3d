"""alignctl analyze in a CI pipeline, where things move between jobs and machines (held-out,
round 4): a cache restored at another absolute path after a fresh clone (new mtimes and
inodes, read-only files, another working folder, HOME, TZ, locale, user) still hits; matrix
jobs writing one cache at once; a cache on a read-only folder; baselines from another
machine, edited by hand, from an older alignctl, or measured differently (another data set,
PGD attack, weights: said in a note, never silently compared); the output a pipeline reads
(no colour codes when redirected, any terminal width, files in folders that do not exist)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import alignctl
from alignctl.report.baseline import baseline_notes

SRC = str(Path(alignctl.__file__).resolve().parents[1])
EXAMPLE = Path(__file__).resolve().parents[1] / "examples/checkpoints/sparse-parity-grokalign"
FAST = ["--metrics", "fast", "--samples", "64"]


def cli(*args, cwd, env=None, check=True) -> subprocess.CompletedProcess:
    """The real CLI in a fresh process, one thread, the default cache on."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ALIGNCTL_")}
    base.update(PYTHONPATH=SRC, OMP_NUM_THREADS="1", **(env or {}))
    r = subprocess.run([sys.executable, "-m", "alignctl", *map(str, args)], cwd=cwd, env=base,
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    assert "Traceback" not in r.stderr, r.stderr
    if check:
        assert r.returncode == 0, r.stderr
    return r


def report(path: Path) -> dict:
    return json.loads(path.read_text())


def numbers(rep: dict) -> list:
    keys = ("metrics", "metrics_std", "train_accuracy", "test_accuracy", "verdict")
    return [[c[k] for k in keys] for c in rep["checkpoints"]]


# ---- the cache, restored elsewhere ----


def test_a_cache_restored_at_another_path_after_a_fresh_clone_still_hits(tmp_path):
    first = tmp_path / "runner-1" / "work" / "proj" / "run"
    shutil.copytree(EXAMPLE, first)
    cli("analyze", first, *FAST, "--json", tmp_path / "a.json", "-q", cwd=tmp_path)
    a = report(tmp_path / "a.json")
    assert a["cache"]["misses"] == len(a["checkpoints"])
    # another runner: the checkout (new mtimes, inodes) and the restored cache (read-only
    # files) at another absolute path under another name; another cwd, HOME, TZ, locale, user
    second = tmp_path / "runner-2" / "_w" / "renamed-run"
    shutil.copytree(first, second, copy_function=shutil.copy)  # copy: no times kept
    for f in (second / "checkpoints").iterdir():
        os.utime(f, (1e9, 1e9))
    for f in (second / ".alignctl-cache").iterdir():
        f.chmod(0o444)
    (tmp_path / "elsewhere").mkdir()
    env = {"HOME": str(tmp_path / "nohome"), "TZ": "Pacific/Kiritimati", "LC_ALL": "C",
           "LANG": "C", "USER": "runner", "LOGNAME": "runner",
           "HOSTNAME": "other-host"}  # fmt: skip
    cli("analyze", Path("..") / "runner-2" / "_w" / "renamed-run", *FAST, "--json",
        tmp_path / "b.json", "-q", cwd=tmp_path / "elsewhere", env=env)  # fmt: skip
    b = report(tmp_path / "b.json")
    assert b["cache"]["hits"] == len(b["checkpoints"]) and b["cache"]["misses"] == 0
    assert numbers(b) == numbers(a) and b["recommendation"] == a["recommendation"]


NETS = """import torch


def make():
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
"""


def _user_project(root: Path) -> Path:
    """A user's repository: a factory file, .npz data, a run whose config names both."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    (root / "run" / "checkpoints").mkdir(parents=True)
    (root / "qa4_ci_nets.py").write_text(NETS)
    rng = np.random.default_rng(0)
    np.savez(root / "data.npz", x_train=rng.normal(size=(40, 6)).astype("float32"),
             y_train=rng.integers(0, 3, 40), x_test=rng.normal(size=(20, 6)).astype("float32"),
             y_test=rng.integers(0, 3, 20))  # fmt: skip
    for step in (0, 5, 10):
        torch.manual_seed(step)
        net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
        save_file(net.state_dict(), root / "run" / "checkpoints" / f"step_{step:08d}.safetensors")
    (root / "run" / "alignctl.yaml").write_text(
        "model:\n  factory: ../qa4_ci_nets.py:make\ndata:\n  path: ../data.npz\n"
    )
    return root


@pytest.mark.parametrize(
    "args",
    [["run"], ["run/checkpoints", "--model", "qa4_ci_nets.py:make", "--data", "data.npz"]],
    ids=["config", "model-option"],
)
def test_a_user_factory_run_checked_out_elsewhere_still_hits(tmp_path, args):
    first = _user_project(tmp_path / "runner-1" / "proj")
    cli("analyze", *args, "--cache", "cache", "-q", "--json", "a.json", cwd=first)
    second = tmp_path / "runner-2" / "checkout"
    shutil.copytree(first, second, copy_function=shutil.copy)
    cli("analyze", *args, "--cache", "cache", "-q", "--json", "b.json", cwd=second)
    a, b = report(first / "a.json"), report(second / "b.json")
    assert a["cache"]["misses"] == 3 and b["cache"]["hits"] == 3, b["cache"]
    assert numbers(b) == numbers(a)
    # the factory's code is still what the key reads: other code, other numbers
    (second / "qa4_ci_nets.py").write_text(NETS.replace("ReLU", "Tanh"))
    cli("analyze", *args, "--cache", "cache", "-q", "--json", "c.json", cwd=second)
    assert report(second / "c.json")["cache"]["hits"] == 0


def test_matrix_jobs_writing_one_cache_at_once_leave_only_whole_entries(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(EXAMPLE, run)
    shared = tmp_path / "shared-cache"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIGNCTL_")}
    env.update(PYTHONPATH=SRC, OMP_NUM_THREADS="1")
    jobs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "alignctl",
                "analyze",
                str(run),
                *FAST,
                "-q",
                "--cache",
                str(shared),
                "--json",
                str(tmp_path / f"{i}.json"),
            ],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(3)
    ]
    for job in jobs:
        _, err = job.communicate(timeout=600)
        assert job.returncode == 0 and err == "", err
    reports = [report(tmp_path / f"{i}.json") for i in range(3)]
    assert all(numbers(r) == numbers(reports[0]) for r in reports)
    assert not [f for f in shared.iterdir() if not f.name.endswith(".json")]  # no temporaries
    cli("analyze", run, *FAST, "-q", "--cache", shared, "--json", tmp_path / "r.json",
        cwd=tmp_path)  # fmt: skip
    again = report(tmp_path / "r.json")
    assert again["cache"]["misses"] == again["cache"]["invalid"] == 0
    assert numbers(again) == numbers(reports[0])


def test_a_cache_from_another_alignctl_or_torch_version_or_device_is_not_read(tmp_path):
    from alignctl import open_run
    from alignctl.report import cache as cache_module

    run = tmp_path / "run"
    shutil.copytree(EXAMPLE, run)
    folder = tmp_path / "c"

    def hits(**patched) -> int:
        saved = {k: getattr(cache_module, k) for k in patched}
        try:
            for k, v in patched.items():
                setattr(cache_module, k, v)
            rep = alignctl.analyze(open_run(run), metrics="fast", samples=32, cache=folder)
        finally:
            for k, v in saved.items():
                setattr(cache_module, k, v)
        return rep["cache"]["hits"]

    n = len(open_run(run).checkpoints)
    assert hits() == 0 and hits() == n
    assert hits(__version__="0.0.0-other") == 0

    class OtherTorch:  # the same module, another version string
        __version__ = "9.9.9+other"

        def __getattr__(self, name):
            import torch

            return getattr(torch, name)

    assert hits(torch=OtherTorch()) == 0
    # the device is keyed as resolved: "auto" on a GPU runner is cuda, not this CPU's entry
    alignctl.analyze(open_run(run), metrics="fast", samples=32, cache=tmp_path / "d")
    devices = {json.loads(f.read_text())["material"]["options"]["device"]
               for f in (tmp_path / "d").iterdir()}  # fmt: skip
    assert devices == {"cpu"}


# ---- baselines ----


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("base")
    out = root / "base.json"
    cli("analyze", EXAMPLE, *FAST, "--no-cache", "--json", out, "-q", cwd=root)
    return root, report(out)


def gate(tmp_path, baseline: dict | str, *args, raw=False) -> subprocess.CompletedProcess:
    path = tmp_path / "baseline.json"
    path.write_text(baseline if raw else json.dumps(baseline))
    return cli("analyze", EXAMPLE, *FAST, "--no-cache", "--baseline", path, *args, "--json",
               tmp_path / "out" / "r.json", cwd=tmp_path, check=False)  # fmt: skip


def _reordered(rep):
    rev = {k: rep[k] for k in reversed(list(rep))}
    rev["checkpoints"] = [{k: c[k] for k in reversed(list(c))} for c in rep["checkpoints"]][::-1]
    return json.dumps(rev)


def _extra(rep):
    rep = json.loads(json.dumps(rep))
    rep["ci_run_id"] = 123
    rep["checkpoints"][-1]["extra"] = {"x": [1, None]}
    return json.dumps(rep)


def _older(rep):
    """The schema issue #4 first asked for, nothing more, from an older version."""
    keep = ("alignctl_version", "path", "device", "split", "n_samples", "verdict",
            "recommendation", "gates", "passed")  # fmt: skip
    old = {k: rep[k] for k in keep}
    old["checkpoints"] = [{k: c[k] for k in ("name", "step", "metrics", "metrics_std",
                                             "train_accuracy", "test_accuracy", "verdict",
                                             "seconds")} for c in rep["checkpoints"]]  # fmt: skip
    return json.dumps(old, indent=1).replace("\n", "\r\n")


@pytest.mark.parametrize("edit", [json.dumps, _reordered, _extra, _older])
def test_a_baseline_from_another_machine_or_edited_by_hand_compares_the_same(tmp_path, base, edit):
    _, rep = base
    r = gate(tmp_path, edit(rep), "--max-drop", "test_accuracy=0", "--max-rise",
             "centroid_norm=0", raw=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    gates = report(tmp_path / "out" / "r.json")["gates"]
    assert [g["passed"] for g in gates] == [True, True]
    assert all(g.get("drop", g.get("rise")) == 0.0 for g in gates)


def test_an_unchanged_value_is_a_change_of_zero_not_minus_zero(tmp_path, base):
    _, rep = base
    r = gate(tmp_path, rep, "--max-drop", "test_accuracy=0", "--max-drop", "centroid_norm=0")
    assert r.returncode == 0, r.stderr
    drops = [g["drop"] for g in report(tmp_path / "out" / "r.json")["gates"]]
    assert drops == [0.0, 0.0] and all(math.copysign(1, d) == 1 for d in drops), drops


def test_integer_baseline_values_are_numbers(tmp_path, base):
    _, rep = base
    rep = json.loads(json.dumps(rep))
    rep["checkpoints"][-1]["test_accuracy"] = 1
    rep["checkpoints"][-1]["metrics"]["centroid_norm"] = 0
    r = gate(tmp_path, rep, "--max-drop", "test_accuracy=0.01", "--max-rise", "centroid_norm=5")
    assert r.returncode == 1 and "baseline 1, drop" in r.stderr, r.stderr
    assert r.stderr.count("gate failed") == 1


def test_a_baseline_on_other_data_is_said(tmp_path, base):
    root, _ = base
    other = tmp_path / "other-task"
    shutil.copytree(EXAMPLE, other)
    cfg = yaml.safe_load((other / "alignctl.yaml").read_text())
    cfg["data"]["k"] = 4  # another parity: its test accuracy is about another task
    (other / "alignctl.yaml").write_text(yaml.safe_dump(cfg))
    cli("analyze", other, *FAST, "--no-cache", "-q", "--json", tmp_path / "o.json", cwd=root)
    r = gate(tmp_path, report(tmp_path / "o.json"), "--max-drop", "test_accuracy=1")
    assert r.returncode == 0, r.stderr
    notes = report(tmp_path / "out" / "r.json")["notes"]
    assert any("measured with data" in n for n in notes), notes
    assert any("measured with data" in line for line in r.stderr.splitlines())


def test_a_baseline_attacked_with_another_pgd_is_said(tmp_path, base):
    root, _ = base
    cli("analyze", EXAMPLE, *FAST, "--no-cache", "-q", "--robustness", "--eps", "0.5",
        "--json", tmp_path / "strong.json", cwd=root)  # fmt: skip
    r = gate(tmp_path, report(tmp_path / "strong.json"), "--robustness", "--max-drop",
             "adversarial_accuracy=0")  # fmt: skip
    assert r.returncode == 0, r.stderr  # a weaker attack "passes": it must be said why
    notes = report(tmp_path / "out" / "r.json")["notes"]
    assert any("PGD attack" in n and "0.5" in n for n in notes), notes


def test_the_same_measurement_on_another_machine_gives_no_note(tmp_path, base):
    _, rep = base
    rep = json.loads(json.dumps(rep))
    rep.update(path="/home/runner/work/x/run", target="/home/runner/work/x/run", device="cuda")
    r = gate(tmp_path, rep, "--max-drop", "test_accuracy=0", "--max-rise", "centroid_norm=0")
    assert r.returncode == 0, r.stderr
    assert report(tmp_path / "out" / "r.json")["notes"] == []
    assert "note:" not in r.stderr


@pytest.mark.parametrize(
    ("field", "theirs", "mine", "said"),
    [
        ("weights", "ema", "raw", "weights 'ema'"),
        ("state_key", "model_ema", None, "state key 'model_ema'"),
        ("output", "logits", 0, "output 'logits'"),
        ("data_sha256", "a" * 64, "b" * 64, "data 'aaaaaaaaaaaa'"),
    ],
)
def test_each_input_the_numbers_depend_on_is_compared(field, theirs, mine, said):
    on = {"data_sha256": "c" * 64, "weights": "raw", "state_key": None, "output": None}
    base = {"split": "train", "n_samples": 64, "measured_on": {**on, field: theirs}}
    mine_rep = {"split": "train", "n_samples": 64, "measured_on": {**on, field: mine}}
    for names in (["test_accuracy"], ["jacobian_norm"]):
        notes = baseline_notes(mine_rep, base, "b.json", names)
        assert len(notes) == 1 and said in notes[0], notes
    # a baseline from before the field existed: nothing to compare, nothing said
    assert baseline_notes(mine_rep, {"split": "train"}, "b.json", ["jacobian_norm"]) == []


# ---- what a pipeline step reads ----


@pytest.mark.parametrize(
    "env",
    [{}, {"NO_COLOR": "1"}, {"TERM": "dumb"}, {"COLUMNS": "40"}, {"COLUMNS": "400"},
     {"COLUMNS": "junk"}, {"GITHUB_ACTIONS": "true", "CI": "true"}],
)  # fmt: skip
def test_redirected_output_is_plain_text_at_any_width(tmp_path, env):
    out = tmp_path / "deep" / "er" / "r.json"
    r = cli("analyze", EXAMPLE, *FAST, "--no-cache", "--json", out, "--fail-under",
            "test_accuracy=0.9", cwd=tmp_path, env={"NO_COLOR": "", **env})  # fmt: skip
    assert "\x1b" not in r.stdout and "\x1b" not in r.stderr and "\r" not in r.stderr
    width = int(env["COLUMNS"]) if env.get("COLUMNS", "").isdigit() else 80
    assert max(len(line) for line in r.stdout.splitlines()) <= width
    assert report(out)["passed"] is True
    assert "generalising" in r.stdout and r.stderr == ""
