"""Integer inputs a model cannot take are named (geometry/indices.py): token ids outside an
embedding's rows (in the first two samples, which alignctl probes to recognise token models,
or later), negative ids, sequences longer than a position table, and models that read
integers without an embedding (``F.one_hot``, indexing). Before, torch's messages pointed
away from the data: ``Expected ... Long, Int; but got torch.FloatTensor`` (the failed probe
made the tokens look continuous, so they were cast), ``index out of range in self``,
``one_hot is only applicable to index tensor of type LongTensor``. Through ``alignctl.measure``,
the monitor's probe and ``alignctl analyze`` (one line, exit 2)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from typer.testing import CliRunner

import alignctl
from alignctl.cli.assemble import app
from alignctl.errors import InputError
from alignctl.geometry.indices import check_index
from alignctl.runs.checkpoints import write_checkpoint

METRICS = ["centroid_alignment", "jacobian_norm"]


class Tokens(nn.Module):
    """Token and position embeddings, mean-pooled: ids in [0, vocab), length <= positions."""

    def __init__(self, vocab=10, positions=4):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, 4), nn.Embedding(positions, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head((self.tok(x) + self.pos(torch.arange(x.shape[1]))).mean(1))


class OneHot(nn.Module):
    """Reads integers without an embedding: only the token protocol can differentiate it."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(40, 3)

    def forward(self, x):
        return self.head(F.one_hot(x, 10).float().flatten(1))


class Lookup(nn.Module):
    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.randn(10, 4))
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.table[x].flatten(1))


def measure_error(model, x) -> str:
    y = torch.zeros(len(x), dtype=torch.long)
    with pytest.raises(InputError) as e:
        alignctl.measure(model, x, y, metrics=METRICS)
    assert len(str(e.value).splitlines()) == 1
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())
    return str(e.value)


def ids(rows):
    return torch.tensor(rows, dtype=torch.long)


@pytest.mark.parametrize(
    "x, bad",
    [
        (ids([[11, 1, 2, 3]] * 5), 11),  # in the two samples alignctl probes
        (ids([[1, 1, 2, 3]] * 4 + [[1, 2, 3, 12]]), 12),  # only in a later sample
        (ids([[1, 2, 3, -1]] * 3), -1),
        (ids([[10, 10, 10, 10]] * 2), 10),  # the first id past the end
    ],
)
def test_token_ids_out_of_the_vocabulary_are_named(x, bad):
    torch.manual_seed(0)
    err = measure_error(Tokens(), x)
    assert f"token id {bad} is out of range" in err and "tok" in err and "10 rows" in err, err
    assert "Float" not in err and "Long" not in err, err


def test_a_sequence_longer_than_the_position_table_is_named():
    torch.manual_seed(0)
    err = measure_error(Tokens(positions=4), torch.randint(0, 10, (3, 6)))
    assert "embedding pos has 4 rows" in err and "index 5" in err and "positions" in err, err


@pytest.mark.parametrize("model", [OneHot, Lookup])
def test_integers_read_without_an_embedding_ask_for_the_protocol(model):
    torch.manual_seed(0)
    err = measure_error(model(), torch.randint(0, 10, (4, 4)))
    assert "without an nn.Embedding" in err and "embed(tokens)" in err, err


def test_integers_that_fail_both_ways_name_both_errors():
    torch.manual_seed(0)  # one_hot(x, 10) of ids up to 19: the integer error is the real one
    err = measure_error(OneHot(), torch.randint(10, 20, (4, 4)))
    assert "as floats" in err and "num_classes" in err, err


def test_a_failure_alike_for_floats_and_integers_is_left_as_it_is():
    class Shape(nn.Module):  # wants (n, 2, 2) whatever the dtype
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(4, 3)

        def forward(self, x):
            return self.head(x.view(len(x), 4).float())

    # the model's own error, named as such (geometry/plan.py: applied), not explained by dtype
    with pytest.raises(InputError, match=r"cannot be applied to x .*is invalid for input") as e:
        alignctl.measure(Shape(), torch.randint(0, 5, (4, 3)), metrics=["centroid_alignment"])
    assert "as floats" not in str(e.value)


def test_in_range_tokens_and_integer_images_still_measure():
    torch.manual_seed(0)
    x = torch.randint(0, 10, (5, 4))
    v = alignctl.measure(Tokens(), x, torch.zeros(5, dtype=torch.long), metrics=METRICS)
    assert all(torch.isfinite(t).all() for t in v.values())
    images = torch.randint(0, 256, (5, 1, 4, 4), dtype=torch.uint8)  # continuous: cast
    cnn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3))
    v = alignctl.measure(cnn, images, torch.zeros(5, dtype=torch.long), metrics=METRICS)
    assert all(torch.isfinite(t).all() for t in v.values())


@settings(max_examples=200, deadline=None)
@given(
    rows=st.integers(1, 50),
    values=st.lists(st.integers(-5, 60), min_size=0, max_size=12),
    dtype=st.sampled_from([torch.int64, torch.int32, torch.float32, torch.bool]),
)
def test_check_index_raises_exactly_when_the_embedding_would(rows, values, dtype):
    emb = nn.Embedding(rows, 2)
    idx = torch.tensor(values, dtype=torch.int64).to(dtype)
    try:
        emb(idx)
        torch_ok = True
    except (IndexError, RuntimeError):
        torch_ok = False
    if torch_ok:
        check_index("e", emb, idx)  # never refuses what torch takes
        return
    with pytest.raises(InputError) as e:
        check_index("e", emb, idx, tokens=idx)
    msg = str(e.value)
    assert "embedding e" in msg and len(msg.splitlines()) == 1
    if dtype in (torch.int64, torch.int32):
        bad = min(values) if min(values) < 0 else max(values)
        assert f"token id {bad} " in msg and f"{rows} rows" in msg, msg


def test_the_monitor_probe_names_the_token_id():
    from alignctl.integrations.probe import Probe

    torch.manual_seed(0)
    probe = Probe(ids([[1, 2, 3, 40]] * 4), ids([0, 1, 2, 0]), metrics=METRICS)
    with pytest.raises(InputError, match="token id 40 is out of range"):
        probe.measure(Tokens(), step=0)


@pytest.mark.parametrize(
    "x, expected",
    [
        (
            np.full((6, 5), 120),
            "token id 120 is out of range for the model's embedding transformer.wte",
        ),
        (np.ones((6, 17)), "embedding transformer.wpe has 16 rows"),
    ],
)
def test_analyze_a_gpt2_with_tokens_it_cannot_take_is_one_line(tmp_path, x, expected):
    pytest.importorskip("transformers")
    root = tmp_path / "run"
    root.mkdir()
    (root / "models.py").write_text(
        "import transformers as tf\n"
        "def gpt2():\n"
        "    return tf.GPT2ForSequenceClassification(tf.GPT2Config(vocab_size=96, n_positions=16,"
        " n_embd=16, n_layer=1, n_head=2, pad_token_id=0, num_labels=3))\n"
    )
    y = np.arange(len(x)) % 3
    np.savez(root / "data.npz", x_train=x.astype(np.int64), y_train=y)
    cfg = {"model": {"factory": "models.py:gpt2"}, "data": {"path": "data.npz"}}
    (root / "alignctl.yaml").write_text(yaml.safe_dump(cfg))
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpt2_factory", root / "models.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    write_checkpoint(root / "checkpoints/step_1.safetensors", mod.gpt2().state_dict(), {"step": 1})
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    r = CliRunner().invoke(app, ["analyze", str(root), "--no-cache", "--metrics", "standard"])
    assert r.exit_code == 2, r.stdout
    err = r.stderr.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert expected in err and "Float" not in err, err
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
