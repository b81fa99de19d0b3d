"""Networks whose input enters through one linear layer: J = J_h W without forming J.

If x reaches the output only through h = W x + b, the chain rule gives J = J_h W with
J_h = df/dh (C x k). The C vector-Jacobian products then stop at h, skipping the product with
W (k x d) in every one of them: for an MLP 784-196-... that is two thirds of the work.
:class:`alignctl.geometry.metrics.Quantities` computes every metric from J_h and W.

The shortcut is taken only when it is provably exact (:func:`find_input_linear`):

- the layer computes exactly ``F.linear(x, layer.weight, layer.bias)``: its class's
  ``forward``, ``__call__`` and ``_call_impl`` are ``nn.Linear``'s own (a subclass that masks
  or rescales its weight in ``forward`` is not) and the instance overrides none of them (a
  ``layer.forward = ...`` patch, as LoRA and offloading libraries do), it is not compiled in
  place (``layer.compile()``), it has no forward or forward-pre hooks (``weight_norm`` and
  ``spectral_norm`` are pre-hooks), no global module hooks are registered, and it is not
  parametrized (``torch.nn.utils.parametrize``);
- the weight and bias it is called with are the ones it holds, with the same values, after
  the forward pass too (``torch.func.functional_call`` swaps in other tensors for the call:
  hypernetworks, MAML);
- it is called exactly once per forward pass (a layer applied twice is not), on the whole
  input as one row per sample (not on tokens or patches);
- on the autograd graph, x reaches the layer's output only through views and copies, each
  used once, and nothing else takes x (a skip connection, a norm of x, an in-place op);
  ``as_strided`` is not one of them (it can reorder or repeat elements).

:func:`layer_forward` proves the rules again on every chunk (a forward's control flow may
depend on the data: a skip or a rescaling that only later samples take), and
:mod:`alignctl.geometry.verify` compares the shortcut with the generic path on the first batch
of every measurement, so a case these rules miss falls back instead of giving wrong numbers.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules import module as _module

_PASS = {"ViewBackward0", "ReshapeAliasBackward0", "UnsafeViewBackward0", "CloneBackward0"}
_CALL = ("forward", "__call__", "_call_impl")
NOT_TAKEN = (
    "the linear-input layer was not called exactly once, on x alone, with the weights it "
    "holds (or x reached the output around it) in some chunk: generic path taken"
)


def _plain_linear(m: nn.Module) -> bool:
    """An nn.Linear whose call is exactly F.linear(x, m.weight, m.bias)."""
    from torch.nn.utils import parametrize

    return (
        isinstance(m, nn.Linear)
        and type(m).forward is nn.Linear.forward
        and type(m).__call__ is nn.Module.__call__
        and type(m)._call_impl is nn.Module._call_impl
        and not any(k in vars(m) for k in _CALL)  # an instance's own forward wins the lookup
        and getattr(m, "_compiled_call_impl", None) is None
        and not m._forward_hooks
        and not m._forward_pre_hooks
        and not parametrize.is_parametrized(m)
    )


def _global_hooks() -> bool:
    return bool(
        getattr(_module, "_global_forward_hooks", None)
        or getattr(_module, "_global_forward_pre_hooks", None)
    )


def _params(m: nn.Module, values: bool = True) -> tuple:
    """(weight, bias) as the layer holds them during its call, with a copy of their values
    (``values=False``: their version counters, which in-place writes advance)."""
    return tuple(
        (t, None if t is None else t.detach().clone() if values else t._version)
        for t in (m.weight, m.bias)
    )


def _own_params(m: nn.Module, at_call: tuple) -> bool:
    """Whether the layer was called with the tensors it holds now, with the values (or
    versions) they have now (``functional_call`` swaps others in for the call; a forward may
    write them)."""
    for (t, val), now in zip(at_call, (m.weight, m.bias), strict=True):
        if t is not now or now is None:
            if t is not now:
                return False
            continue
        same = val == now._version if isinstance(val, int) else torch.equal(val, now.detach())
        if not same:
            return False
    return True


def _consumers(root) -> dict:
    """Autograd node -> list of the nodes that take its output (one entry per edge)."""
    seen, stack, users = {root}, [root], {}
    while stack:
        node = stack.pop()
        for nxt, _ in node.next_functions:
            if nxt is None:
                continue
            users.setdefault(nxt, []).append(node)
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return users


def _accumulator(x: torch.Tensor):
    """The autograd node of leaf ``x`` (its gradient accumulator), where every path from x
    starts."""
    return x.view_as(x).grad_fn.next_functions[0][0]


def find_input_linear(module: nn.Module, f, probe: torch.Tensor) -> nn.Linear | None:
    """The plain ``nn.Linear`` of ``module`` through which, and only through which, ``probe``
    reaches the output of ``f`` (module docstring); None when there is none."""
    if _global_hooks():
        return None
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        return None
    x = probe.detach().clone().requires_grad_(True)
    calls: dict[nn.Module, list] = {}

    def hook(mod, args, out):
        shape = tuple(args[0].shape) if args and isinstance(args[0], torch.Tensor) else None
        calls.setdefault(mod, []).append((shape, out, _params(mod, values=False)))

    handles = [m.register_forward_hook(hook) for m in linears]
    try:
        with torch.enable_grad():
            out = f(x)
    finally:
        for h in handles:
            h.remove()
    if out.grad_fn is None:
        return None
    acc = _accumulator(x)
    users = _consumers(out.grad_fn)
    node = acc
    while True:  # follow x through views and copies, each used exactly once, to a layer
        nxt = users.get(node, [])
        if len(nxt) != 1:
            return None
        node = nxt[0]
        for layer, seen in calls.items():
            if any(o.grad_fn is node for _, o, _ in seen):
                want = (x.shape[0], x[0].numel())  # one row per sample, all of x
                ok = len(seen) == 1 and seen[0][0] == want and _plain_linear(layer)
                return layer if ok and _own_params(layer, seen[0][2]) else None
        if type(node).__name__ not in _PASS:
            return None


def _only_input(arg, acc, want: tuple) -> bool:
    """Whether ``arg`` is all of x as one row per sample (``want``), reached from x's
    accumulator ``acc`` through views and copies only."""
    if not isinstance(arg, torch.Tensor) or tuple(arg.shape) != want or arg.grad_fn is None:
        return False
    node = arg.grad_fn
    while node is not acc:
        if type(node).__name__ not in _PASS or len(node.next_functions) != 1:
            return False
        node = node.next_functions[0][0]
    return True


def layer_forward(f, layer: nn.Linear, inp: torch.Tensor):
    """(f(inp) (m, C), h (m, k), W x (m, k)) with the graph starting at h = W x + b, a leaf
    that requires grad; None when the rules of the module docstring do not hold for this
    chunk: the layer not plain or not called exactly once, with other weights than it holds
    (:func:`_own_params`), on something other than x through views and copies, or x reaching
    the output by another path. They are proven again on every chunk, because a forward's
    control flow may depend on the data (a skip or a rescaling that only some samples take:
    the first chunk's check never sees them)."""
    held, params, args = [], [], []
    if _global_hooks() or not _plain_linear(layer):
        return None

    def hook(mod, margs, out):
        leaf = out.detach().requires_grad_(True)  # the graph now starts at h
        held.append(leaf)
        params.append(_params(mod))
        args.append(margs[0] if margs else None)
        return leaf

    x = inp.detach().requires_grad_(True)  # to see every other path from x to the output
    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            out = f(x)
    finally:
        handle.remove()
    if len(held) != 1 or not _own_params(layer, params[0]):
        return None
    acc = _accumulator(x)
    want = (x.shape[0], x[0].numel())
    if not _only_input(args[0], acc, want):
        return None
    if out.grad_fn is not None and acc in _consumers(out.grad_fn):  # a path around the layer
        return None
    (h,) = held
    flat = inp.reshape(inp.shape[0], -1)
    wx = h.detach() if layer.bias is None else flat @ layer.weight.detach().T
    return out, h, wx.detach()


def layer_jacobian(f, layer: nn.Linear, inp: torch.Tensor, vjp_rows, outputs=None):
    """(J_h (m, C, k), W x (m, k)) for a chunk of inputs, with one forward pass and C
    vector-Jacobian products that stop at the layer's output. None when the layer was not
    called exactly once (the caller then takes the generic path). ``outputs`` receives
    f(inp), detached."""
    got = layer_forward(f, layer, inp)
    if got is None:
        return None
    out, h, wx = got
    if outputs is not None:
        outputs.append(out.detach())
    eye = torch.eye(out.shape[1], dtype=out.dtype, device=out.device)
    jh = torch.stack(vjp_rows(out, h, [e.expand_as(out) for e in eye]), dim=1)
    return jh, wx
