"""Models and data as users write them (issue 11): every value against the float64 per-sample
torch.autograd.functional.jacobian reference of tests/test_geometry.py.

Kinds: fast paths that must be exact or not taken (weight-masking subclasses, a layer applied
twice, hooks, parametrizations, shared modules, torch.compile), outputs that are containers,
integer tokens into an nn.Embedding, integer images, in-place ops on the input, weights at
extreme scales, memory-sized chunks and thread counts.
"""

import collections
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_geometry import brute_force
from torch import nn

import alignctl
from alignctl import METRICS
from alignctl.errors import InputError

ALL = [m for m in METRICS.names() if not METRICS.get(m).opt_in]  # opt-in: own tests


def reference(model, x, y):
    """brute_force on a copy that sees a copy of x (in-place forwards) and its logits."""
    from alignctl.geometry.measure import copy_model

    class Ref(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = copy_model(m)

        def forward(self, a):
            out = self.m(a.clone())
            return out[0] if isinstance(out, tuple) else out

    return brute_force(Ref(model), x, y)


def check(model, x, y, *, f64=True, f32=True, ref=None, **kw):
    ref = ref if ref is not None else reference(model, x, y)
    if f64:
        got = alignctl.measure(model, x.double(), y, dtype=torch.float64, **kw)
        for name in ALL:
            np.testing.assert_allclose(
                got[name].numpy(), ref[name], rtol=1e-9, atol=1e-9, err_msg=name
            )
    if f32:
        got = alignctl.measure(model, x.float(), y, dtype=torch.float32, **kw)
        for name in ALL:
            np.testing.assert_allclose(
                got[name].numpy(), ref[name], rtol=2e-4, atol=2e-4, err_msg=name
            )


# ---- 1. fast paths: exact or not taken -------------------------------------------------


class MaskedLinear(nn.Linear):
    """MADE / pruning: the weight is masked in forward; ``self.weight`` is not what acts."""

    def __init__(self, i, o):
        super().__init__(i, o)
        self.register_buffer("mask", (torch.rand(o, i) > 0.5).float())

    def forward(self, x):
        return F.linear(x, self.weight * self.mask, self.bias)


class ScaledLinear(nn.Linear):
    def forward(self, input):
        return super().forward(input) * 3.0


class PlainSubclass(nn.Linear):
    """A subclass that keeps nn.Linear's forward: the shortcut is exact and may be taken."""


class Net(nn.Module):
    def __init__(self, first):
        super().__init__()
        self.fc1, self.fc2 = first, nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class Twice(nn.Module):
    """One square nn.Linear applied twice: head(relu(fc(relu(fc(x)))))."""

    def __init__(self):
        super().__init__()
        self.fc, self.head = nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.head(torch.relu(self.fc(torch.relu(self.fc(x)))))


class Shared(nn.Module):
    """The first layer also reads x on a second path (shared module)."""

    def __init__(self):
        super().__init__()
        self.fc, self.mix, self.head = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.fc(x)) + self.fc(torch.sin(x)))


def _hooked(kind):
    net = Net(nn.Linear(8, 16))
    if kind == "forward_hook":
        net.fc1.register_forward_hook(lambda m, a, out: out * 2.5)
    elif kind == "pre_hook":
        net.fc1.register_forward_pre_hook(lambda m, a: (a[0] * 0.5 + 1.0,))
    elif kind == "parametrize":
        from torch.nn.utils import parametrize

        class Mask(nn.Module):
            def forward(self, w):
                return w * torch.tril(torch.ones_like(w))

        parametrize.register_parametrization(net.fc1, "weight", Mask())
    elif kind == "weight_norm":
        net.fc1 = torch.nn.utils.parametrizations.weight_norm(net.fc1)
        with torch.no_grad():
            net.fc1.parametrizations.weight.original0.mul_(2.0)
    elif kind == "spectral_norm":
        net.fc1 = torch.nn.utils.spectral_norm(net.fc1)
        net.fc1.train()
        net(torch.randn(4, 8))  # power iteration: weight != weight_orig
    return net


FAST_PATH_CASES = {
    "masked_subclass": lambda: Net(MaskedLinear(8, 16)),
    "scaled_subclass": lambda: Net(ScaledLinear(8, 16)),
    "plain_subclass": lambda: Net(PlainSubclass(8, 16)),
    "applied_twice": Twice,
    "shared_module": Shared,
    **{k: (lambda k=k: _hooked(k)) for k in
       ("forward_hook", "pre_hook", "parametrize", "weight_norm", "spectral_norm")},
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(FAST_PATH_CASES))
def test_fast_path_is_exact_or_not_taken(case):
    torch.manual_seed(0)
    model = FAST_PATH_CASES[case]()
    x, y = torch.randn(7, 8), torch.randint(0, 3, (7,))
    # On CUDA torch's weight_norm computes a float64 weight 3.3e-8 away from the CPU's (seen
    # with torch 2.11+cu130 on an H200): the model differs from its CPU self there, so the
    # CPU reference holds for it on the CPU only.
    cpu_only = case == "weight_norm" and torch.cuda.is_available()
    check(model, x, y, **({"device": "cpu"} if cpu_only else {}))


def test_masked_subclass_does_not_take_the_shortcut():
    from alignctl.geometry.linear_input import find_input_linear

    torch.manual_seed(0)
    for case in ("masked_subclass", "applied_twice", "forward_hook", "parametrize"):
        model = FAST_PATH_CASES[case]()
        assert find_input_linear(model, model, torch.randn(1, 8)) is None, case
    model = FAST_PATH_CASES["plain_subclass"]()
    assert find_input_linear(model, model, torch.randn(1, 8)) is model.fc1


def test_global_module_hook_disables_the_shortcut():
    torch.manual_seed(1)
    model = Net(nn.Linear(8, 16))
    x, y = torch.randn(5, 8), torch.randint(0, 3, (5,))
    handle = nn.modules.module.register_module_forward_hook(
        lambda m, a, out: out * 1.5 if m is model.fc1 else None
    )
    try:
        check(model, x, y, f32=False)
    finally:
        handle.remove()


def test_run_time_check_falls_back_when_the_rules_miss_a_case(monkeypatch):
    """If the structural rules wrongly allowed the shortcut, the first-batch comparison with
    the generic path must catch it: right values, and a note saying what happened."""
    import alignctl.geometry.linear_input as linear_input

    monkeypatch.setattr(linear_input, "_plain_linear", lambda m: isinstance(m, nn.Linear))
    torch.manual_seed(0)
    model = Net(MaskedLinear(8, 16))
    x, y = torch.randn(9, 8), torch.randint(0, 3, (9,))
    ref = reference(model, x, y)
    notes = []
    got = alignctl.measure(model, x.double(), y, dtype=torch.float64, notes=notes)
    for name in ALL:
        np.testing.assert_allclose(got[name].numpy(), ref[name], rtol=1e-9, atol=1e-9)
    assert any("shortcut disagreed" in n for n in notes)


def test_plain_mlp_takes_the_verified_shortcut_without_notes():
    from alignctl.geometry.linear_input import find_input_linear

    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    x, y = torch.randn(6, 8), torch.randint(0, 3, (6,))
    assert find_input_linear(model, model, x[:1]) is model[0]
    notes = []
    check(model, x, y, notes=notes)
    assert notes == []


def test_spectrum_check_falls_back_to_float64(monkeypatch):
    import alignctl.geometry.verify as verify

    monkeypatch.setattr(verify, "SPECTRUM_TOL", -1.0)  # every comparison "fails"
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 4))
    x, y = torch.randn(5, 6), torch.randint(0, 4, (5,))
    notes = []
    check(model, x, y, f64=False, notes=notes)
    assert any("spectrum" in n for n in notes)


def test_compiled_model_is_measured_through_its_original_module():
    torch.manual_seed(4)
    model = Net(MaskedLinear(8, 16))
    compiled = torch.compile(model, backend="eager")
    x, y = torch.randn(5, 8), torch.randint(0, 3, (5,))
    check(compiled, x, y, ref=reference(model, x, y), f32=False)


# ---- 2. outputs that are containers -----------------------------------------------------


Pair = collections.namedtuple("Pair", ["features", "logits"])


@dataclasses.dataclass
class Out:
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None


def _container(kind):
    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 4))

        def forward(self, x):
            logits, feats = self.body(x), x * 2
            return {
                "tuple": lambda: (logits, feats),
                "list": lambda: [logits, feats],
                "dict": lambda: {"hidden": feats, "logits": logits},
                "namedtuple": lambda: Pair(feats, logits),
                "dataclass": lambda: Out(logits=logits),
                "model_output": lambda: _hf_output(logits),
            }[kind]()

    return Wrap()


def _hf_output(logits):
    from transformers.modeling_outputs import SequenceClassifierOutput

    return SequenceClassifierOutput(logits=logits)


@pytest.mark.parametrize(
    "kind", ["tuple", "list", "dict", "namedtuple", "dataclass", "model_output"]
)
def test_container_outputs_use_the_logits(kind):
    torch.manual_seed(5)
    model = _container(kind)
    x, y = torch.randn(6, 6), torch.randint(0, 4, (6,))
    check(model, x, y, ref=brute_force(_copy(model.body), x, y), f32=False)
    from alignctl.evaluation.accuracy import predict

    torch.testing.assert_close(predict(model, x, "cpu"), model.body(x).detach())


def _copy(m):
    from alignctl.geometry.measure import copy_model

    return copy_model(m)


def test_output_spec_chooses_a_key_or_an_index():
    torch.manual_seed(6)

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(5, 3), nn.Linear(5, 2)

        def forward(self, x):
            return {"aux": self.a(x), "main": self.b(x)}

    model = Two()
    x = torch.randn(4, 5)
    with pytest.raises(InputError, match="none is 'logits'.*--output"):
        alignctl.measure(model, x)
    got = alignctl.measure(model, x, output="main", metrics=["jacobian_norm"])
    ref = brute_force(_copy(model.b), x, torch.zeros(4, dtype=torch.long))
    np.testing.assert_allclose(got["jacobian_norm"].numpy(), ref["jacobian_norm"], rtol=1e-5)

    class Tup(nn.Module):
        def forward(self, x):
            return x.sum(1, keepdim=True), x[:, :2] * 3

    got = alignctl.measure(Tup(), x, output=1, metrics=["jacobian_norm"])
    torch.testing.assert_close(got["jacobian_norm"], torch.full((4,), 3 * 2**0.5))
    got = alignctl.measure(Tup(), x, output="1", metrics=["jacobian_norm"])
    torch.testing.assert_close(got["jacobian_norm"], torch.full((4,), 3 * 2**0.5))
    with pytest.raises(InputError, match="no output 5"):
        alignctl.measure(Tup(), x, output=5)


@pytest.mark.parametrize(
    "ret, message",
    [(lambda x: "text", "not a tensor of logits"), (lambda x: {"a": x}, "none is 'logits'"),
     (lambda x: (None, "s"), "not a tensor"), (lambda x: Out(loss=x.sum()), "not a tensor")],
)  # fmt: skip
def test_outputs_without_logits_are_one_line_input_errors(ret, message):
    class Odd(nn.Module):
        def forward(self, x):
            return ret(x)

    with pytest.raises(InputError, match=message) as e:
        alignctl.measure(Odd(), torch.randn(3, 4))
    assert "\n" not in str(e.value)


# ---- 3. integer tokens into an nn.Embedding ---------------------------------------------


class TokenNet(nn.Module):
    """nanoGPT-like: token and position embeddings, no embed/forward_embedded."""

    def __init__(self, vocab=7, length=3, d=4, classes=5):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(length, d)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(length * d, 8), nn.Tanh(),
                                  nn.Linear(8, classes))  # fmt: skip

    def forward(self, idx):
        pos = torch.arange(idx.shape[1])
        return self.head(self.wte(idx) + self.wpe(pos))


def test_tokens_are_differentiated_at_the_embedding_output():
    torch.manual_seed(7)
    model = TokenNet().double()
    tokens = torch.randint(0, 7, (6, 3))
    y = torch.randint(0, 5, (6,))
    before = tokens.clone()

    class AfterEmbedding(nn.Module):
        def forward(self, e):
            return model.head(e + model.wpe(torch.arange(3)))

    ref = brute_force(AfterEmbedding(), model.wte(tokens).detach(), y)
    got = alignctl.measure(model, tokens, y)
    for name in ALL:
        np.testing.assert_allclose(got[name].numpy(), ref[name], rtol=1e-9, atol=1e-9)
    assert torch.equal(tokens, before) and tokens.dtype == torch.long
    from alignctl.evaluation.accuracy import predict

    torch.testing.assert_close(predict(model, tokens, "cpu"), model(tokens).detach())


def test_integer_input_without_an_embedding_says_how_to_opt_in():
    class OneHot(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(10, 3)

        def forward(self, x):
            return self.fc(F.one_hot(x.long(), 5).flatten(1).float())

    with pytest.raises(InputError, match="embed.*forward_embedded") as e:
        alignctl.measure(OneHot(), torch.randint(0, 5, (4, 2)))
    assert "FloatTensor" not in str(e.value)


# ---- 4. integer images and 5. in-place ops on the input ----------------------------------


def _cnn():
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(3 * 5 * 5, 4))  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32, torch.int64])
def test_integer_images_are_continuous_data(dtype):
    torch.manual_seed(8)
    model = _cnn()
    x = torch.randint(0, 255, (5, 1, 5, 5)).to(dtype)
    y = torch.randint(0, 4, (5,))
    got = alignctl.measure(model, x, y)
    ref = reference(model, x.double(), y)
    for name in ALL:
        np.testing.assert_allclose(got[name].numpy(), ref[name], rtol=2e-4, atol=2e-4)
    assert x.dtype == dtype


class InPlace(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.op, self.body = op, nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 3))

    def forward(self, x):
        if self.op == "div":
            x /= 255
        elif self.op == "mul_":
            x.mul_(2)
        elif self.op == "clamp_":
            x.clamp_(0, 1)
        elif self.op == "setitem":
            x[:, 0] = 0
        elif self.op == "relu_":
            F.relu(x, inplace=True)
        return self.body(x)


@pytest.mark.parametrize("op", ["div", "mul_", "clamp_", "setitem", "relu_"])
def test_in_place_ops_on_the_input_never_change_the_data(op):
    from alignctl.evaluation.accuracy import predict

    torch.manual_seed(9)
    model = InPlace(op)
    x, y = torch.rand(6, 6) * 2 - 0.5, torch.randint(0, 3, (6,))
    before = x.clone()
    check(model, x, y)
    p1, p2 = predict(model, x, "cpu"), predict(model, x, "cpu")
    torch.testing.assert_close(p1, p2)
    assert torch.equal(x, before)


# ---- 6. extreme weight scales -----------------------------------------------------------


def _scaled_mlp(scale):
    torch.manual_seed(10)
    model = nn.Sequential(nn.Linear(8, 16, bias=False), nn.ReLU(), nn.Linear(16, 3, bias=False))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    return model


@pytest.mark.parametrize("scale", [1e-12, 1e12])
@pytest.mark.parametrize("metrics", [None, ["centroid_alignment", "centroid_norm"]])
def test_scale_invariant_metrics_at_extreme_weight_scales(scale, metrics):
    """Bias-free ReLU nets: J scales by scale^2, so alignments, PC1 and effective rank equal
    the unscaled net's and the norms scale by scale^2 (float32, one Gram matrix overflows or
    underflows without scaling)."""
    x, y = torch.randn(7, 8), torch.randint(0, 3, (7,))
    base = alignctl.measure(_scaled_mlp(1.0), x, y, metrics=metrics, dtype=torch.float64)
    notes = []
    got = alignctl.measure(_scaled_mlp(scale), x, y, metrics=metrics, notes=notes)
    for name, v in got.items():
        norms = ("jacobian_norm", "centroid_norm", "centred_norm", "centred_label_norm")
        want = base[name] * (scale**2 if name in norms else 1.0)
        if name in ("centroid_inner", "jacobian_inner"):
            want = base[name] * scale**2
        np.testing.assert_allclose(v.double().numpy(), want.numpy(), rtol=1e-4, atol=1e-5,
                                   err_msg=name)  # fmt: skip
        assert torch.isfinite(v).all()


def test_values_beyond_float32_are_measured_in_float64():
    model = _scaled_mlp(1e21)  # J ~ 1e42: not a float32 number, the weights are
    x, y = torch.randn(4, 8), torch.randint(0, 3, (4,))
    notes = []
    got = alignctl.measure(model, x, y, notes=notes)
    base = alignctl.measure(_scaled_mlp(1.0), x, y, dtype=torch.float64)
    assert any("float64" in n for n in notes)
    np.testing.assert_allclose(got["jacobian_pc1"].numpy(), base["jacobian_pc1"].numpy(),
                               rtol=1e-4)  # fmt: skip
    np.testing.assert_allclose(got["jacobian_norm"].numpy(),
                               base["jacobian_norm"].numpy() * 1e42, rtol=1e-4)  # fmt: skip


# ---- 7. memory: chunks sized by bytes ----------------------------------------------------


class Recorder(nn.Module):
    """A 3x96x96 CNN that records the batch sizes it sees (in a class attribute: on a GPU
    machine measure() runs a copy of the model, and the copy records there too)."""

    seen: list[int] = []

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4),
                                  nn.Flatten(), nn.Linear(16 * 24 * 24, 10))  # fmt: skip

    def forward(self, x):
        self.seen.append(x.shape[0])
        return self.body(x)


@pytest.mark.parametrize("metrics", [["centroid_alignment"], ["jacobian_norm"]])
def test_chunks_stay_within_the_memory_budget(metrics):
    import alignctl.geometry.memory as memory

    torch.manual_seed(11)
    model = Recorder()
    x = torch.rand(40, 3, 96, 96)
    budget = 16 * 2**20
    saved = {"peak": 0}

    def pack(t):
        saved["now"] = saved.get("now", 0) + t.untyped_storage().nbytes()
        saved["peak"] = max(saved["peak"], saved["now"])
        return t

    model.seen.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        alignctl.measure(model, x, metrics=metrics, max_memory="16MiB")
    chunks = [s for s in model.seen if s > 2]
    assert chunks and max(chunks) < 40  # 1024 before, whatever the input size
    per_input = 3 * 96 * 96 * 4
    assert max(chunks) * per_input * 3 <= budget
    assert memory.parse_bytes("16MiB") == budget
    model.seen.clear()
    alignctl.measure(model, x[:8], metrics=metrics)  # the 512 MiB default holds all 8
    assert max(model.seen) == 8


@pytest.mark.parametrize("bad", ["lots", "-5MiB", "0", "1k", "nan", True])
def test_bad_memory_budgets_are_input_errors(bad):
    with pytest.raises(InputError, match="memory budget"):
        alignctl.measure(nn.Linear(3, 2), torch.randn(2, 3), max_memory=bad)


# ---- 8. threads ---------------------------------------------------------------------------


def test_small_models_get_one_thread(monkeypatch):
    from alignctl.geometry.threads import SMALL_WORK, auto_threads, forward_work, num_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("alignctl.geometry.threads.cores", lambda: 8)
    mlp = nn.Sequential(nn.Linear(40, 1000), nn.ReLU(), nn.Linear(1000, 2))
    work = forward_work(mlp, torch.randn(1, 40))
    assert work == 40 * 1000 + 1000 + 1000 * 2
    assert auto_threads(work * 32) == 1
    assert auto_threads(SMALL_WORK * 3) == 3
    assert auto_threads(SMALL_WORK * 100) == 8
    saved = torch.get_num_threads()
    with num_threads(2):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == saved
