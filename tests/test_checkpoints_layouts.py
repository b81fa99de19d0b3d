"""Checkpoints as training code writes them: other modules' state beside the model's, tied
weights saved by safetensors, EMA / averaged copies and how to choose them (issue 11)."""

from __future__ import annotations

import pytest
import safetensors.torch
import torch

from alignctl.errors import InputError
from alignctl.runs.checkpoints import CheckpointRef, load_weights, read_weights


def _mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


def _state(seed: int) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in _mlp(seed).state_dict().items()}


def _same(model: torch.nn.Module, sd: dict) -> bool:
    got = model.state_dict()
    return sorted(got) == sorted(sd) and all(torch.equal(got[k], sd[k].float()) for k in sd)


def _load(obj, tmp_path, name="c.ckpt", **options):
    """Save ``obj`` with torch.save, read it as alignctl does, load into a fresh MLP."""
    path = tmp_path / name
    torch.save(obj, path)
    ck = read_weights(CheckpointRef(path, path.stem, None), **options)
    model = _mlp(99)
    notes = ck.notes + load_weights(
        model, ck.state, path.name, aliases=ck.aliases, mode=ck.mode, prefix=ck.prefix
    )
    return model, notes


# ------------------------------------------------------------ other modules beside the model

OTHERS = {
    "class-weighted loss": {"criterion.weight": torch.tensor([1.0, 2.0, 0.5])},
    "loss_fn with buffers": {"loss_fn.pos_weight": torch.ones(3), "loss_fn.scale": torch.ones(1)},
    "torchmetrics state": {
        "metrics.train_acc.tp": torch.zeros(3, dtype=torch.long),
        "metrics.val_acc.fn": torch.zeros(3, dtype=torch.long),
    },
    "teacher of another shape": {"teacher.0.weight": torch.zeros(4, 8)},
}


@pytest.mark.parametrize("others", sorted(OTHERS))
@pytest.mark.parametrize("prefix", ["model.", "net.", "model.backbone.", ""])
def test_model_keys_beside_other_modules_load_with_a_note(tmp_path, prefix, others):
    sd = _state(1)
    state = {f"{prefix}{k}": v for k, v in sd.items()} | OTHERS[others]
    model, notes = _load({"state_dict": state, "global_step": 5}, tmp_path)
    assert _same(model, sd)
    ignored = [n for n in notes if "ignored" in n]
    assert len(ignored) == 1, notes
    for key in OTHERS[others]:
        assert key in ignored[0]
    if prefix:
        assert f"under {prefix!r}" in ignored[0]


def test_criterion_with_prefix_reported_keys_exactly(tmp_path):
    # The case: Lightning module {model: MLP, criterion: CrossEntropyLoss(weight=w)}.
    class Lit(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = _mlp(3)
            self.criterion = torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 3.0]))

    lit = Lit()
    model, notes = _load({"state_dict": lit.state_dict()}, tmp_path)
    assert _same(model, lit.model.state_dict())
    assert notes == [
        "loaded the model's keys under 'model.'; ignored 1 other key(s) of criterion. "
        "(criterion.weight)"
    ]


def test_when_nothing_fits_the_culprit_is_named(tmp_path):
    sd = {f"model.{k}": v for k, v in _state(1).items()}
    sd["model.2.weight"] = torch.zeros(5, 16)  # the real culprit
    sd["criterion.weight"] = torch.ones(3)
    with pytest.raises(InputError) as info:
        _load({"state_dict": sd}, tmp_path)
    msg = str(info.value)
    assert "shape mismatch for model.2.weight: checkpoint (5, 16) vs model (3, 16)" in msg
    assert "criterion.weight" in msg and "more)" not in msg and "\n" not in msg
    del sd["model.2.weight"]
    with pytest.raises(InputError, match=r"missing keys under prefix 'model\.' 2\.weight"):
        _load({"state_dict": sd}, tmp_path)


@pytest.mark.parametrize("prefix", ["", "model."])
def test_a_further_layer_is_never_ignored(tmp_path, prefix):
    # A Sequential's next layer (a deeper checkpoint) is not "another module": strict.
    sd = {f"{prefix}{k}": v for k, v in _state(1).items()}
    sd[f"{prefix}4.weight"] = torch.zeros(3, 3)
    with pytest.raises(InputError, match=rf"unexpected keys {prefix}4\.weight"):
        _load({"state_dict": sd}, tmp_path)


def test_bare_extra_key_is_unexpected(tmp_path):
    sd = _state(1) | {"extra": torch.zeros(2)}
    with pytest.raises(InputError, match="unexpected keys extra"):
        _load(sd, tmp_path)


def test_two_different_copies_need_a_choice(tmp_path):
    a, b = _state(1), _state(2)
    state = {f"student.{k}": v for k, v in a.items()} | {f"teacher.{k}": v for k, v in b.items()}
    with pytest.raises(InputError, match=r"'student', 'teacher'.*--state-key"):
        _load({"state_dict": state}, tmp_path)
    model, _ = _load({"state_dict": state}, tmp_path, state_key="teacher")
    assert _same(model, b)
    with pytest.raises(InputError, match=r"no key or prefix 'nope'"):
        _load({"state_dict": state}, tmp_path, state_key="nope")


# ------------------------------------------------------------ tied weights (safetensors)


class TiedLM(torch.nn.Module):
    def __init__(self, tie: bool = True) -> None:
        super().__init__()
        self.wte = torch.nn.Embedding(7, 4)
        self.lm_head = torch.nn.Linear(4, 7, bias=False)
        if tie:
            self.lm_head.weight = self.wte.weight

    def forward(self, x):
        return self.lm_head(self.wte(x))


def _read_st(path):
    return read_weights(CheckpointRef(path, path.stem, None))


def test_save_model_tie_alias_is_followed(tmp_path):
    torch.manual_seed(0)
    src = TiedLM()
    path = tmp_path / "tied.safetensors"
    safetensors.torch.save_model(src, str(path))
    ck = _read_st(path)
    dropped = set(src.state_dict()) - set(ck.state)
    assert len(dropped) == 1 and ck.aliases  # safetensors 0.8 drops one name, records it
    for tie in (True, False):  # into a tied model, and into one whose copies are separate
        model = TiedLM(tie)
        load_weights(model, ck.state, path.name, aliases=ck.aliases)
        assert torch.equal(model.wte.weight, src.wte.weight)
        assert torch.equal(model.lm_head.weight, src.wte.weight)
        x = torch.tensor([[1, 2, 3]])
        assert torch.equal(model(x), src(x))


def test_tie_of_the_model_fills_a_key_saved_once(tmp_path):
    # transformers' save_pretrained style: the tied copy is simply absent, no metadata.
    torch.manual_seed(0)
    src = TiedLM()
    sd = {k: v.detach().clone() for k, v in src.state_dict().items() if k != "lm_head.weight"}
    path = tmp_path / "model.safetensors"
    safetensors.torch.save_file({f"model.{k}": v for k, v in sd.items()}, str(path))
    model = TiedLM()
    ck = _read_st(path)
    load_weights(model, ck.state, path.name, aliases=ck.aliases)
    assert torch.equal(model.lm_head.weight, src.wte.weight)
    with pytest.raises(InputError, match="missing keys under prefix 'model.' lm_head.weight"):
        load_weights(TiedLM(tie=False), ck.state, path.name, aliases=ck.aliases)


def test_save_model_alias_under_a_prefix(tmp_path):
    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = TiedLM()
            self.criterion = torch.nn.CrossEntropyLoss(weight=torch.ones(7))

    torch.manual_seed(1)
    src = Wrapper()
    path = tmp_path / "w.safetensors"
    safetensors.torch.save_model(src, str(path))
    ck = _read_st(path)
    model = TiedLM(tie=False)
    notes = load_weights(model, ck.state, path.name, aliases=ck.aliases)
    assert torch.equal(model.lm_head.weight, src.model.wte.weight)
    assert any("criterion.weight" in n for n in notes)


# ------------------------------------------------------------ EMA / averaged weights


def _averaged(seed: int):
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    net = _mlp(seed)
    avg = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(0.9))
    for s in (seed + 10, seed + 11):
        net.load_state_dict(_state(s))
        avg.update_parameters(net)
    return net, avg


def test_averaged_model_state_dict_loads(tmp_path):
    _, avg = _averaged(1)
    expected = {k: v.clone() for k, v in avg.module.state_dict().items()}
    model, notes = _load(avg.state_dict(), tmp_path, name="swa.pt")
    assert _same(model, expected)
    assert any("averaged model" in n for n in notes)
    path = tmp_path / "swa.safetensors"
    safetensors.torch.save_file(avg.state_dict(), str(path))
    model = _mlp(5)
    load_weights(model, _read_st(path).state, path.name)
    assert _same(model, expected)


EMA_KEYS = ["ema", "model_ema", "state_dict_ema", "ema_state_dict", "ema_model"]


@pytest.mark.parametrize("key", EMA_KEYS)
def test_raw_by_default_ema_when_asked(tmp_path, key):
    raw, ema = _state(1), _state(2)
    obj = {"state_dict": raw, key: ema, "epoch": 3}
    model, notes = _load(obj, tmp_path)
    assert _same(model, raw)
    assert any(f"EMA weights under {key!r}" in n and "--weights ema" in n for n in notes)
    model, notes = _load(obj, tmp_path, weights="ema")
    assert _same(model, ema)
    model, _ = _load(obj, tmp_path, state_key=key)
    assert _same(model, ema)


def test_ema_nested_and_averaged_copy_at_top_level(tmp_path):
    net, avg = _averaged(3)
    expected = {k: v.clone() for k, v in avg.module.state_dict().items()}
    obj = {"model": net.state_dict(), "ema": {"module": avg.state_dict(), "decay": 0.9}}
    model, _ = _load(obj, tmp_path, weights="ema")
    assert _same(model, expected)


@pytest.mark.parametrize("ema_prefix", ["ema.", "model_ema.module.", "swa_model.module."])
def test_ema_copy_inside_the_state_dict(tmp_path, ema_prefix):
    raw, ema = _state(1), _state(2)
    state = {f"model.{k}": v for k, v in raw.items()}
    state |= {f"{ema_prefix}{k}": v for k, v in ema.items()}
    if ema_prefix.endswith("module."):
        state[ema_prefix.replace("module.", "n_averaged")] = torch.tensor(7)
    model, notes = _load({"state_dict": state}, tmp_path)
    assert _same(model, raw)
    assert any("EMA weights" in n and "--weights ema" in n for n in notes), notes
    model, notes = _load({"state_dict": state}, tmp_path, weights="ema")
    assert _same(model, ema)
    assert any(f"EMA weights under {ema_prefix!r}" in n for n in notes), notes


def test_no_ema_copy_is_an_error_when_asked(tmp_path):
    with pytest.raises(InputError, match="no EMA copy found.*drop --weights ema"):
        _load({"state_dict": _state(1)}, tmp_path, weights="ema")


def test_any_state_key(tmp_path):
    a, b = _state(1), _state(2)
    model, notes = _load({"net": a, "step": 4}, tmp_path)  # the one tensor dict: used, noted
    assert _same(model, a) and any("'net'" in n for n in notes)
    with pytest.raises(InputError, match=r"several state dicts \('gen', 'disc'\).*--state-key"):
        _load({"gen": a, "disc": b}, tmp_path)
    model, _ = _load({"gen": a, "disc": b}, tmp_path, state_key="disc")
    assert _same(model, b)


# ------------------------------------------------------------ choosing: CLI, config, API


def _ema_run(tmp_path, extra_config: dict | None = None):
    import numpy as np
    import yaml

    from alignctl.runs.models import build_model

    spec = {"arch": "mlp", "in_features": 4, "hidden": [8], "out_features": 3}
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    g = np.random.default_rng(0)
    np.savez(run / "data.npz", x_train=g.normal(size=(16, 4)).astype("float32"),
             y_train=np.arange(16) % 3)  # fmt: skip
    cfg = {"model": spec, "data": {"path": "data.npz"}, **(extra_config or {})}
    (run / "alignctl.yaml").write_text(yaml.safe_dump(cfg))
    states = {}
    for name in ("raw", "ema", "net"):
        torch.manual_seed(len(states) + 1)
        states[name] = build_model(spec, run).state_dict()
    obj = {"state_dict": states["raw"], "state_dict_ema": states["ema"],
           "teacher": states["net"], "global_step": 3}  # fmt: skip
    torch.save(obj, run / "checkpoints" / "s_3.pt")
    return run, states


def _first_weight(run, **options) -> torch.Tensor:
    from alignctl.runs.run import open_run

    r = open_run(run, **options)
    model = r.build_model()
    r.load_checkpoint(model, r.checkpoints[0])
    return next(iter(model.state_dict().values())), r


def test_choose_by_api_config_and_cli(tmp_path):
    import json

    from typer.testing import CliRunner

    from alignctl.cli.assemble import app

    run, states = _ema_run(tmp_path)
    first = next(iter(states["raw"]))
    w, r = _first_weight(run)
    assert torch.equal(w, states["raw"][first])
    assert any("'state_dict_ema'" in n and "--weights ema" in n for n in r.notes)
    assert torch.equal(_first_weight(run, weights="ema")[0], states["ema"][first])
    assert torch.equal(_first_weight(run, state_key="teacher")[0], states["net"][first])
    run2, _ = _ema_run(tmp_path / "b", {"checkpoint": {"weights": "ema"}})
    assert torch.equal(_first_weight(run2)[0], states["ema"][first])
    assert torch.equal(_first_weight(run2, weights="raw")[0], states["raw"][first])  # CLI wins
    runner = CliRunner()
    outs = {}
    for opts in ([], ["--weights", "ema"], ["--state-key", "teacher"]):
        res = runner.invoke(app, ["analyze", str(run), "--json", "-", "--metrics", "fast", *opts])
        assert res.exit_code == 0, res.stderr
        outs[tuple(opts)] = json.loads(res.stdout)["checkpoints"][0]["metrics"]
    assert len({json.dumps(m, sort_keys=True) for m in outs.values()}) == 3  # three weights
    for bad, msg in ((["--weights", "best"], "unknown --weights 'best'; valid: raw, ema"),
                     (["--state-key", "nope"], "no key or prefix 'nope'")):  # fmt: skip
        res = runner.invoke(app, ["analyze", str(run), "--quiet", *bad])
        assert res.exit_code == 2 and res.stderr.startswith("error: ") and msg in res.stderr


@pytest.mark.parametrize(
    "section, message",
    [
        ({"weights": "best"}, "checkpoint.weights must be raw or ema"),
        ({"state_key": 3}, "checkpoint.state_key must be a key name"),
        ({"state_key": ""}, "checkpoint.state_key must be a key name"),
        ({"weigths": "ema"}, "unknown key(s) in"),
        ("ema", "checkpoint must be a mapping"),
    ],
)
def test_checkpoint_config_section_is_validated(tmp_path, section, message):
    from alignctl.runs.config import config_from_dict

    with pytest.raises(InputError) as info:
        config_from_dict({"checkpoint": section}, tmp_path, source="alignctl.yaml")
    assert message in str(info.value)
    cfg = config_from_dict({"checkpoint": {"weights": "ema", "state_key": "net"}}, tmp_path)
    assert cfg.checkpoint == {"weights": "ema", "state_key": "net"}
    assert cfg.to_dict()["checkpoint"] == {"weights": "ema", "state_key": "net"}
    assert "checkpoint" not in config_from_dict({}, tmp_path).to_dict()


def test_an_ignored_copy_never_marks_the_checkpoint_diverged(tmp_path):
    run, states = _ema_run(tmp_path)
    path = run / "checkpoints" / "s_3.pt"
    obj = torch.load(path, weights_only=True)
    obj["state_dict_ema"] = {k: torch.full_like(v, float("nan")) for k, v in states["ema"].items()}
    torch.save(obj, path)
    from typer.testing import CliRunner

    from alignctl.cli.assemble import app

    res = CliRunner().invoke(app, ["analyze", str(run), "--json", "-", "--metrics", "fast"])
    assert res.exit_code == 0, res.stderr
    assert '"diverged": false' in res.stdout
    res = CliRunner().invoke(app, ["analyze", str(run), "--json", "-", "--weights", "ema"])
    assert res.exit_code == 0 and '"diverged": true' in res.stdout
