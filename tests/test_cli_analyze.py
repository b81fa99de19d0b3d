"""`alignctl analyze` through typer's CliRunner: exit codes, JSON schema, gates, outputs,
golden JSON of the shipped example, and JSON means against an independent float64 reference."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file
from typer.testing import CliRunner

from alignctl.cli.assemble import app

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "checkpoints" / "sparse-parity-grokalign"
GOLDEN = Path(__file__).parent / "golden" / "sparse-parity-grokalign.json"
runner = CliRunner()

FACTORY = '''
import torch
from torch import nn


class Net(nn.Module):
    """A user model: tanh MLP with a skip connection (no linear-input shortcut applies)."""

    def __init__(self, width=12):
        super().__init__()
        self.a, self.b, self.skip = nn.Linear(5, width), nn.Linear(width, 3), nn.Linear(5, 3)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x))) + self.skip(x)


def make(width=12):
    return Net(width)
'''


def user_run(root: Path, test_split=True) -> Path:
    """A run with a factory model, .npz data and three safetensors checkpoints."""
    root.mkdir(parents=True)
    (root / "net.py").write_text(FACTORY)
    g = np.random.default_rng(1)
    x = g.normal(size=(40, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    data = {"x_train": x[:30], "y_train": y[:30]}
    if test_split:
        data.update(x_test=x[30:], y_test=y[30:])
    np.savez(root / "data.npz", **data)
    cfg = {
        "model": {"factory": "net.py:make", "kwargs": {"width": 12}},
        "data": {"path": "data.npz"},
    }
    (root / "alignctl.yaml").write_text(yaml.safe_dump(cfg))
    (root / "checkpoints").mkdir()
    import importlib.util

    spec = importlib.util.spec_from_file_location("usernet", root / "net.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for step in (0, 5, 50):
        torch.manual_seed(step)
        sd = mod.make(12).state_dict()
        save_file(
            sd,
            str(root / "checkpoints" / f"model_{step}.safetensors"),
            metadata={"step": str(step)},
        )
    return root


def invoke(*args):
    return runner.invoke(app, ["analyze", *map(str, args)])


def test_json_schema_and_stdout_only_json(tmp_path):
    r = invoke(user_run(tmp_path / "r"), "--json", "-")
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)  # nothing else on stdout
    required = ("alignctl_version", "path", "device", "split", "n_samples", "checkpoints",
                "verdict", "recommendation", "gates", "passed")  # fmt: skip
    for key in required:
        assert key in report
    ck = report["checkpoints"][0]
    for key in ("name", "step", "metrics", "metrics_std", "train_accuracy", "test_accuracy",
                "verdict", "seconds"):  # fmt: skip
        assert key in ck
    assert [c["step"] for c in report["checkpoints"]] == [0, 5, 50]
    assert set(report["recommendation"]) >= {"action", "reason"}
    assert report["n_samples"] == 30 and report["split"] == "train"


def test_json_means_equal_float64_reference(tmp_path):
    import importlib.util

    from safetensors.torch import load_file

    root = user_run(tmp_path / "r")
    report = json.loads(invoke(root, "--json", "-", "--metrics", "full").stdout)
    spec = importlib.util.spec_from_file_location("usernet2", root / "net.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    d = np.load(root / "data.npz")
    x, y = torch.tensor(d["x_train"], dtype=torch.float64), d["y_train"]
    for ck in report["checkpoints"]:
        net = mod.make(12).double().eval()
        net.load_state_dict(load_file(str(root / "checkpoints" / f"{ck['name']}.safetensors")))
        names = ("centroid_alignment", "centroid_norm", "jacobian_alignment",
                 "jacobian_alignment_full", "jacobian_norm", "jacobian_pc1")  # fmt: skip
        vals = {k: [] for k in names}
        for i in range(len(x)):
            J = torch.autograd.functional.jacobian(lambda a, f=net: f(a[None])[0], x[i]).numpy()
            xi, mu = x[i].numpy(), J.sum(0)
            s = np.linalg.svd(J, compute_uv=False)
            vals["centroid_alignment"].append(xi @ mu / np.linalg.norm(xi) / np.linalg.norm(mu))
            vals["centroid_norm"].append(np.linalg.norm(mu))
            vals["jacobian_alignment"].append(
                xi @ J[y[i]] / np.linalg.norm(xi) / np.linalg.norm(J[y[i]])
            )
            vals["jacobian_alignment_full"].append(
                np.linalg.norm(J @ xi) ** 2 / np.linalg.norm(xi) ** 2 / (s**2).sum()
            )
            vals["jacobian_norm"].append(np.linalg.norm(J))
            vals["jacobian_pc1"].append(s[0] ** 2 / (s**2).sum())
        for k, v in vals.items():
            assert ck["metrics"][k] == pytest.approx(float(np.mean(v)), abs=1e-4), k


@pytest.mark.parametrize(
    "args, code, fragment",
    [
        (["--fail-under", "centroid_norm=0"], 0, None),
        (["--fail-under", "centroid_norm=1e9"], 1, "centroid_norm >= 1e+09"),
        (["--fail-over", "jacobian_norm=0"], 1, "jacobian_norm <= 0"),
        (["--require-verdict", "learning"], 0, None),
        # robust needs a measured adversarial accuracy: a usage error without --robustness
        (["--require-verdict", "robust"], 2, "robust needs --robustness"),
        (["--require-verdict", "generalising"], 1, "verdict at least generalising"),
        (["--fail-under", "bogus=1"], 2, "unknown metric"),
        (["--require-verdict", "awesome"], 2, "unknown verdict"),
    ],
)
def test_gate_exit_codes(tmp_path, args, code, fragment):
    r = invoke(user_run(tmp_path / "r"), "--quiet", *args)
    assert r.exit_code == code, (r.stdout, r.stderr)
    if fragment:
        assert fragment in r.stderr


def test_baseline_comparison(tmp_path):
    root = user_run(tmp_path / "r")
    base = tmp_path / "base.json"
    assert invoke(root, "--json", base, "--quiet").exit_code == 0
    assert (
        invoke(root, "--quiet", "--baseline", base, "--max-drop", "centroid_alignment=0").exit_code
        == 0
    )
    report = json.loads(base.read_text())
    report["checkpoints"][-1]["metrics"]["centroid_alignment"] += 0.5
    base.write_text(json.dumps(report))
    r = invoke(root, "--quiet", "--baseline", base, "--max-drop", "centroid_alignment=0.1")
    assert r.exit_code == 1 and "drop from baseline" in r.stderr
    # the message shows the quantity gated: the drop, beside the value and the baseline
    now = json.loads(invoke(root, "--json", "-").stdout)["checkpoints"][-1]["metrics"]
    was = report["checkpoints"][-1]["metrics"]["centroid_alignment"]
    line = next(x for x in r.stderr.splitlines() if x.startswith("gate failed:"))
    assert f"value {now['centroid_alignment']:.4g}" in line and f"baseline {was:.4g}" in line
    assert f"drop {was - now['centroid_alignment']:.4g}" in line


def test_outputs_csv_markdown_plot_and_step_summary(tmp_path, monkeypatch):
    root = user_run(tmp_path / "r")
    summary = tmp_path / "summary.md"
    summary.write_text("# earlier\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    r = invoke(root, "--csv", tmp_path / "t.csv", "--markdown", tmp_path / "t.md", "--plot",
               tmp_path / "t.png", "--quiet")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    lines = (tmp_path / "t.csv").read_text().splitlines()
    assert lines[0].startswith("name,step,train_accuracy") and len(lines) == 4
    assert "**Verdict:**" in (tmp_path / "t.md").read_text()
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = summary.read_text()
    assert text.startswith("# earlier") and "**Recommendation:**" in text


def test_table_on_stdout(tmp_path):
    r = invoke(user_run(tmp_path / "r"))
    assert r.exit_code == 0
    assert "verdict" in r.stdout and "recommendation" in r.stdout


def test_fast_metrics_and_samples(tmp_path):
    r = invoke(user_run(tmp_path / "r"), "--metrics", "fast", "--samples", "7", "--json", "-")
    report = json.loads(r.stdout)
    assert report["n_samples"] == 7
    assert set(report["checkpoints"][0]["metrics"]) == {
        "centroid_alignment",
        "centroid_inner",
        "centroid_norm",
    }


def test_no_test_split_gives_an_inferred_verdict(tmp_path):
    report = json.loads(invoke(user_run(tmp_path / "r", test_split=False), "--json", "-").stdout)
    last = report["checkpoints"][-1]
    assert last["test_accuracy"] is None
    if last["verdict"] in ("memorising", "generalising", "robust"):
        assert last["inferred"] and report["inferred"]


def test_robustness_adds_adversarial_accuracy(tmp_path):
    r = invoke(user_run(tmp_path / "r"), "--robustness", "--eps", "0.5", "--json", "-")
    ck = json.loads(r.stdout)["checkpoints"][-1]
    assert 0.0 <= ck["adversarial_accuracy"] <= ck["test_accuracy"] + 1e-9


def test_golden_json_of_the_shipped_example():
    r = invoke(EXAMPLE, "--json", "-", "--samples", "300")
    assert r.exit_code == 0, r.stderr
    got, want = json.loads(r.stdout), json.loads(GOLDEN.read_text())
    assert [c["step"] for c in got["checkpoints"]] == [c["step"] for c in want["checkpoints"]]
    assert got["verdict"] == want["verdict"]
    assert got["recommendation"]["action"] == want["recommendation"]["action"]
    for g, w in zip(got["checkpoints"], want["checkpoints"], strict=True):
        assert g["verdict"] == w["verdict"]
        assert g["train_accuracy"] == pytest.approx(w["train_accuracy"], abs=1e-6)
        assert g["test_accuracy"] == pytest.approx(w["test_accuracy"], abs=1e-6)
        for k, v in w["metrics"].items():
            assert g["metrics"][k] == pytest.approx(v, rel=1e-4, abs=1e-5), (g["step"], k)


def test_xor_runs_report_noise_accuracy_for_their_grokked_criterion(tmp_path):
    cfg = {
        "model": {"arch": "mlp", "in_features": 30, "hidden": [16], "out_features": 1,
                  "bias": False},
        "data": {"task": "xor-cluster", "n_train": 40, "n_test": 40, "dim": 30},
        "train": {"epochs": 2, "loss": "logistic", "optimizer": {"name": "sgd", "lr": 0.1}},
        "grokked": {"test_acc": 0.95, "noise_acc": 0.95},
    }  # fmt: skip
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert (
        runner.invoke(
            app, ["train", "--config", str(tmp_path / "c.yaml"), "--out", str(out), "--quiet"]
        ).exit_code
        == 0
    )
    report = json.loads(invoke(out, "--json", "-").stdout)
    assert all(0.0 <= c["noise_accuracy"] <= 1.0 for c in report["checkpoints"])
    logged = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert report["checkpoints"][-1]["noise_accuracy"] == pytest.approx(
        logged[-1]["noise_accuracy"]
    )


def test_require_verdict_with_every_output_and_the_step_summary(tmp_path, monkeypatch):
    """Issue 12: a verdict gate crashed every renderer that formats its value."""
    root = user_run(tmp_path / "r")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "s.md"))
    r = invoke(root, "--require-verdict", "learning", "--markdown", tmp_path / "t.md",
               "--csv", tmp_path / "t.csv")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert "verdict at least learning" in r.stdout
    for f in ("s.md", "t.md"):
        assert "verdict at least learning" in (tmp_path / f).read_text()


@pytest.mark.parametrize("fmt", ["json", "csv", "markdown", "table"])
def test_format_chooses_what_goes_to_stdout(tmp_path, fmt):
    r = invoke(user_run(tmp_path / "r"), "--format", fmt)
    assert r.exit_code == 0, r.stderr
    if fmt == "json":
        assert json.loads(r.stdout)["checkpoints"]
    elif fmt == "csv":
        assert r.stdout.startswith("name,step,")
    elif fmt == "markdown":
        assert r.stdout.startswith("### alignctl analyze")
    else:
        assert "verdict" in r.stdout and "recommendation" in r.stdout


def test_format_and_a_stdout_output_conflict(tmp_path):
    r = invoke(user_run(tmp_path / "r"), "--format", "json", "--csv", "-")
    assert r.exit_code == 2 and r.stderr.startswith("error:")
    r = invoke(user_run(tmp_path / "r2"), "--format", "yaml")
    assert r.exit_code == 2 and "table, markdown, csv, json" in r.stderr


@pytest.mark.parametrize("pad", [None, 7, 70])
@pytest.mark.parametrize("width", [60, 80, 120])
def test_piped_table_honours_columns(width, pad, tmp_path):
    run = EXAMPLE
    if pad is not None:  # the title holds the path: other lengths wrap its words elsewhere
        run = tmp_path / ("r" * pad)
        shutil.copytree(EXAMPLE, run)
    r = runner.invoke(app, ["analyze", str(run), "--samples", "50"],
                      env={"COLUMNS": str(width)})  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert max(len(x) for x in r.stdout.splitlines()) <= width and "…" not in r.stdout
    # the step column says what it counts (in the title, wrapped where the path puts it: a
    # checkout under a long path split "optimiser / steps")
    assert "optimiser steps" in " ".join(r.stdout.split())
    wide = runner.invoke(app, ["analyze", str(run), "--samples", "50", "--wide"],
                         env={"COLUMNS": str(width)})  # fmt: skip
    for header in ("PC1", "erank", "|mu|", "|J|_F"):
        assert header in wide.stdout


def test_no_color_on_a_terminal(tmp_path):
    root = user_run(tmp_path / "r")
    colour = re.compile(r"\x1b\[[0-9;]*(3[0-9]|9[0-7])[;m]")
    # a colour terminal: rich gives none to TERM=dumb (set by some CI runners) even when forced
    env = {"FORCE_COLOR": "1", "COLUMNS": "100", "TERM": "xterm-256color"}
    r = runner.invoke(app, ["analyze", str(root)], env={**env, "NO_COLOR": "1"})
    assert r.exit_code == 0 and not colour.search(r.stdout)
    r = runner.invoke(app, ["analyze", str(root)], env={**env, "NO_COLOR": None})
    assert colour.search(r.stdout)  # the same terminal without NO_COLOR has colour


def test_step_unit_says_what_the_step_counts(tmp_path):
    report = json.loads(invoke(EXAMPLE, "--json", "-", "--samples", "20").stdout)
    assert report["step_unit"] == "optimiser steps"
    root = user_run(tmp_path / "r")  # metadata "step" from another writer
    assert json.loads(invoke(root, "--json", "-").stdout)["step_unit"] == (
        "step from checkpoint metadata"
    )
    for f in (root / "checkpoints").iterdir():  # no metadata: the number in the name
        from safetensors.torch import load_file

        save_file(load_file(str(f)), str(f))
    report = json.loads(invoke(root, "--json", "-").stdout)
    assert report["step_unit"] == "number in checkpoint name"
    assert [c["step"] for c in report["checkpoints"]] == [0, 5, 50]
    header = invoke(root, "--format", "csv").stdout.splitlines()[0].split(",")
    assert "step_unit" in header


def test_the_title_and_json_name_the_path_analysed_not_only_the_run(tmp_path, monkeypatch):
    """`analyze RUN/checkpoints/step_2.safetensors` was titled with the config's folder, the
    same as the whole run: the JSON's `target` is the path given, `path` stays the run."""
    run = tmp_path / "run"
    shutil.copytree(EXAMPLE, run)
    monkeypatch.chdir(tmp_path)
    one = Path("run") / "checkpoints" / "step_00000002.safetensors"
    for target in (one, Path("run") / "checkpoints", Path("run")):
        res = runner.invoke(app, ["analyze", str(target), "--json", "-", "--samples", "8"])
        assert res.exit_code == 0, res.output
        report = json.loads(res.stdout)
        assert report["target"] == str(target) and report["path"] == "run"
        res = runner.invoke(app, ["analyze", str(target), "--samples", "8"],
                            env={"COLUMNS": "200"})  # fmt: skip
        assert res.exit_code == 0 and f"alignctl analyze {target}  (" in res.stdout
