"""Every script under benchmarks/ still runs: each in a fresh process with tiny arguments, exit 0,
no traceback, and its output carries the labels the README quotes for its figures (labels only:
no value and no time is judged; the figures of a tiny run mean nothing).

The list is generated from the folder: a new benchmark fails ``test_benchmark_runs`` until it
has an entry in SMOKE (or, with a reason, in GPU_ONLY or HELPERS). The README's benchmark
paths must exist (``test_readme_names_existing_benchmarks``). Cost: about 60 s of one core in
all (the distributed benchmark's two-process runs the largest share, ~12 s).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
README = " ".join((ROOT / "README.md").read_text().split())  # labels may wrap across lines

# name -> [(arguments, labels its output must contain), ...]; "{corpus}" is a tiny verdict
# corpus built once (the `corpus` fixture), "{race}" a race folder with one training log.
SMOKE = {
    "analyze_pipeline.py": [(["--checkpoints", "2"], ["start-up", "measure()",
                             "the rest (verdicts, report, output)"])],
    # the other cases are the same code on larger models (ViT-B/16, GPT-2: minutes)
    "architectures.py": [(["--samples", "1", "--only", "C=10, 3x32"], ["ResNet-18 shape"])],
    "checkpoint_memory.py": [(["12"], ["peak RSS", "checkpoints"]),
                             (["--big", "256"], ["peak RSS", "state-dict"])],
    "digits_mse_protocol.py": [(["train", "--epochs", "2"], ["fit"]),
                               (["race", "{race}"], ["fit"])],
    "distributed.py": [(["--reps", "1", "--checkpoints", "2", "--samples", "64",
                         "--train-epochs", "10"],
                        ["whole command", "checkpoint loop alone", "training loop alone"])],
    "geometry.py": [(["--smoke"], ["all metrics / one batched Jacobian",
                                   "speed-up over the per-sample", "centroid metrics",
                                   "generic path", "run-time verification of the fast paths",
                                   "peak memory"])],
    "large_c.py": [(["--smoke"], ["/ cost(C=10)", "held-out", "blocks", "probes", "coverage",
                                  "centroid metrics", "item 5"])],
    "local_complexity_signal.py": [(["--corpus", "{corpus}", "--samples", "16"],
                                    ["AUC for generalised", "piecewise-linear"])],
    "monitor_overhead.py": [(["--reps", "1", "--segment", "100", "--steps", "2",
                              "--framework-reps", "1"],
                             ["in-run ratio", "right after 100 training steps",
                              "repeated at once (warm caches)", "multiply-adds", "Lightning",
                              "Hugging Face", "floor"])],
    "sketch_floor.py": [(["--samples", "1", "--classes", "48"],
                         ["r_eff", "oracle", "products"])],
    "threads.py": [(["--reps", "1", "--epochs", "2"], ["load average"])],
    "train_step.py": [(["--smoke"], ["GrokAlign step", "every=2", "hoffman"])],
    "verdict_agreement.py": [(["--corpus", "{corpus}", "--samples", "16"],
                              ["== with a test split", "truth / verdict",
                               "== without a test split, leave-one-family-out",
                               "thresholds fitted on all families", "shipped defaults",
                               "right action with a test split",
                               "vs adversarial accuracy: Spearman"])],
    # the corpus fixture builds with it (--max-steps); here its listing (the README quotes no
    # label of it)
    "verdict_corpus.py": [(["--list"], [])],
    # one cheap held-out run (a Lightning Trainer, ~6 s) built and judged
    "verdict_heldout.py": [(["--out", "{tmp}", "--only", "imbalance5-mlp-sgdm"],
                            ["with a test split: right on", "without a test split: fitted",
                             "recommendation right: with a test split"])],
    "verdict_signals.py": [(["--corpus", "{corpus}", "--samples", "16"],
                            ["shipped rule alone", "+ fit tail long", "== grokking runs"])],
    "verdict_no_step0.py": [(["--corpus", "{corpus}", "--samples", "16"],
                             ["step 0", "stand-in", "fitted"])],
    "xor_step.py": [(["--smoke", "--combos", "subsample=0.0625,every=2", "--epochs", "2,1"],
                     ["every=4", "subsample=0.0625", "subsample=0.125", "autograd", "plain",
                      "wall-clock speed-up"])],
}  # fmt: skip
# Need CUDA: without it each says so in one line and exits 0 (tests/test_gpu_check.py runs
# gpu_e2e.py --device cpu; gpu_bench.py --device cpu is its dry run, minutes with XOR's step).
GPU_ONLY = {"gpu_agreement.py", "gpu_bench.py", "gpu_check.sh", "gpu_e2e.py"}
# Imported by verdict_corpus.py, no command of their own: they must import.
HELPERS = {
    "corpus_data.py",
    "corpus_models.py",
    "corpus_runs.py",
    "heldout_models.py",
    "heldout_runs.py",
}
CORPUS_RUNS = ["digits-mlp-adamw", "gmm-tanh", "parity01-baseline"]  # 3 families, 1 smooth


def run(argv: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1", "MPLBACKEND": "Agg"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=timeout)  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    r = run([sys.executable, str(BENCH / "verdict_corpus.py"), "--out", str(out), "--only",
             *CORPUS_RUNS, "--max-steps", "20"])  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert all(name in r.stdout for name in CORPUS_RUNS), r.stdout
    return out


@pytest.fixture
def tmp(tmp_path) -> Path:
    return tmp_path / "out"


@pytest.fixture
def race(tmp_path) -> Path:
    log = tmp_path / "none" / "seed_0" / "train_log.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text('{"epoch": 1, "train_accuracy": 1.0, "test_accuracy": 0.9}\n')
    return tmp_path


def scripts() -> list[str]:
    return sorted(p.name for p in BENCH.iterdir() if p.suffix in (".py", ".sh"))


@pytest.mark.parametrize("name", scripts())
def test_benchmark_runs(name, request):
    if name in HELPERS:
        spec = importlib.util.spec_from_file_location(name[:-3], BENCH / name)
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
        assert "__main__" not in (BENCH / name).read_text(), f"{name} is a command: add to SMOKE"
        return
    if name in GPU_ONLY:
        if torch.cuda.is_available():
            pytest.skip("with CUDA this is the GPU check itself (benchmarks/gpu_check.sh)")
        r = run(["bash" if name.endswith(".sh") else sys.executable, str(BENCH / name)])
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
        assert len(r.stdout.splitlines()) == 1 and "no CUDA device" in r.stdout, r.stdout
        return
    assert name in SMOKE, f"benchmarks/{name} has no smoke entry in {Path(__file__).name}"
    for args, labels in SMOKE[name]:
        args = [str(request.getfixturevalue(a[1:-1]))
                if a in ("{corpus}", "{race}", "{tmp}") else a for a in args]  # fmt: skip
        r = run([sys.executable, str(BENCH / name), *args])
        what = f"benchmarks/{name} {' '.join(args)}"
        assert r.returncode == 0, f"{what}: exit {r.returncode}\n{r.stderr[-3000:]}"
        assert "Traceback" not in r.stderr, f"{what}\n{r.stderr[-3000:]}"
        missing = [label for label in labels if label.lower() not in r.stdout.lower()]
        assert not missing, f"{what} no longer prints {missing}:\n{r.stdout[-3000:]}"


def test_smoke_labels_are_the_readmes():
    """The labels checked above are ones the README quotes: a label the README stopped using
    belongs out of SMOKE, not kept as a check of nothing."""
    for name, runs in SMOKE.items():
        for _, labels in runs:
            absent = [label for label in labels if label.lower() not in README.lower()]
            assert not absent, f"{name}: {absent} not in README.md"


def test_readme_names_existing_benchmarks():
    named = set(re.findall(r"benchmarks/([\w.-]+\.(?:py|sh))", README))
    assert named, "the README names no benchmark"
    assert not named - set(scripts()), f"README names missing benchmarks: {named - set(scripts())}"
    # every benchmark the README quotes is one this file runs
    assert named <= set(SMOKE) | GPU_ONLY


@pytest.mark.parametrize("name", ["verdict_agreement.py", "local_complexity_signal.py"])
def test_without_a_corpus_one_error_line(name, tmp_path):
    """No corpus where one is named: one ``error:`` line and exit 2 (it was a ZeroDivisionError
    traceback, and silent zeros)."""
    r = run([sys.executable, str(BENCH / name), "--corpus", str(tmp_path)])
    assert r.returncode == 2 and r.stdout == "", r.stderr[-3000:]
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: no corpus runs"), r.stderr
