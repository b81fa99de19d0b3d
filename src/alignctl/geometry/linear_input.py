"""Networks whose input enters through one linear layer: J = J_h W without forming J.

If x reaches the output only through h = W x + b (an ``nn.Linear``, possibly after a
flatten), the chain rule gives J = J_h W with J_h = df/dh (C x k). The C vector-Jacobian
products then stop at h, skipping the product with W (k x d) in every one of them: for an
MLP 784-196-... that is two thirds of the work. :class:`alignctl.metrics.Quantities` computes
every metric from J_h and W. Whether x flows anywhere else (a skip connection, a norm of x)
is checked on the autograd graph, not assumed; when it does, the caller uses the full path.
"""

from __future__ import annotations

import torch
from torch import nn

_VIEWS = {"ViewBackward0", "ReshapeAliasBackward0", "UnsafeViewBackward0", "AsStridedBackward0"}


def _shares_storage(t: torch.Tensor, x: torch.Tensor) -> bool:
    return (
        t.numel() == x.numel() and t.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
    )


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


def find_input_linear(f, probe: torch.Tensor) -> nn.Linear | None:
    """The ``nn.Linear`` through which, and only through which, ``probe`` reaches ``f``'s output."""
    if not isinstance(f, nn.Module):
        return None
    x = probe.detach().clone().requires_grad_(True)
    calls: dict[nn.Module, list] = {}

    def hook(mod, args, out):
        if args and args[0].dim() == 2 and _shares_storage(args[0], x):
            calls.setdefault(mod, []).append(out)

    handles = [m.register_forward_hook(hook) for m in f.modules() if isinstance(m, nn.Linear)]
    try:
        with torch.enable_grad():
            out = f(x)
    finally:
        for h in handles:
            h.remove()
    if len(calls) != 1:
        return None
    ((layer, outs),) = calls.items()
    if len(outs) != 1 or out.grad_fn is None or outs[0].grad_fn is None:
        return None
    acc = x.view_as(x).grad_fn.next_functions[0][0]  # x's gradient accumulator
    users = _consumers(out.grad_fn)
    node = acc
    while True:  # follow x through views only, each used exactly once, up to the layer
        nxt = users.get(node, [])
        if len(nxt) != 1:
            return None
        node = nxt[0]
        if node is outs[0].grad_fn:
            return layer
        if type(node).__name__ not in _VIEWS:
            return None


def layer_jacobian(f, layer: nn.Linear, inp: torch.Tensor, vjp_rows, outputs):
    """(J_h (m, C, k), W x (m, k)) for a chunk of inputs, with one forward pass and C
    vector-Jacobian products that stop at the layer's output."""
    held = []

    def hook(mod, args, out):
        leaf = out.detach().requires_grad_(True)  # the graph now starts at h
        held.append(leaf)
        return leaf

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            out = outputs(f(inp), inp.shape[0])
    finally:
        handle.remove()
    (h,) = held
    eye = torch.eye(out.shape[1], dtype=out.dtype, device=out.device)
    jh = torch.stack(vjp_rows(out, h, [e.expand_as(out) for e in eye]), dim=1)
    wx = h.detach() if layer.bias is None else inp.reshape(inp.shape[0], -1) @ layer.weight.T
    return jh, wx.detach()
