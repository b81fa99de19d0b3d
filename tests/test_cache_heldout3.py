"""The analysis cache's key and code a user registered (qa_live): a metric
(``register_metric``) or an architecture (``register_model``) defined outside alignctl, whose
code changes between two analyses of the same run with the same cache."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_cache import make_run

import alignctl

SRC = str(Path(alignctl.__file__).resolve().parents[1])

USER_CODE = '''
import torch
from alignctl.geometry.metrics import register_metric
from alignctl.runs.models import register_model


@register_metric("user_norm", needs="centroid")
def user_norm(q):
    """A user's metric."""
    return q.mu_norm * {scale}


@register_model("user_mlp")
def user_mlp(in_features, hidden, out_features):
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(in_features, hidden[0]),
                               torch.nn.{activation}(), torch.nn.Linear(hidden[0], out_features))
'''

ANALYSE = """
import json, sys
import alignctl, usercode
run = alignctl.open_run(sys.argv[1])
r = alignctl.analyze(run, metrics=sys.argv[2].split(","), cache=sys.argv[3])
print(json.dumps([r["cache"]["hits"], [c["metrics"] for c in r["checkpoints"]]]))
"""


def _analyse(tmp_path, run, metrics, **code):
    (tmp_path / "usercode.py").write_text(USER_CODE.format(**code))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, str(tmp_path)])}
    out = subprocess.run(
        [sys.executable, "-c", ANALYSE, str(run), metrics, str(tmp_path / "cache")],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "metrics, change",
    [
        ("user_norm", {"scale": "2"}),  # the metric's code
        ("centroid_norm", {"activation": "Tanh"}),  # the architecture's code
    ],
)
def test_changed_user_code_is_never_read_from_the_cache(tmp_path, metrics, change):
    """qa_live: the key held a metric's name and the model section, but the code of a metric
    or an architecture registered outside alignctl only for a factory file: after the user
    edited it, a re-run with the same cache was all hits and reported the old code's numbers."""
    run = make_run(tmp_path / "r", n_checkpoints=2)
    cfg = yaml.safe_load((run / "alignctl.yaml").read_text())
    cfg["model"] = {"arch": "user_mlp", "in_features": 5, "hidden": [12], "out_features": 3}
    (run / "alignctl.yaml").write_text(yaml.safe_dump(cfg))
    code = {"scale": "1", "activation": "ReLU"}
    hits, before = _analyse(tmp_path, run, metrics, **code)
    assert hits == 0
    assert _analyse(tmp_path, run, metrics, **code) == [2, before]  # unchanged code: cached
    hits, after = _analyse(tmp_path, run, metrics, **{**code, **change})
    assert hits == 0 and after != before
