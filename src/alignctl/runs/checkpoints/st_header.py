"""The safetensors header's tensor entries checked as the format's own reader checks them.

A header maps names to ``{"dtype": str, "shape": [int >= 0, ...], "data_offsets": [begin,
end]}`` (plus an optional ``"__metadata__"`` of strings: the library refuses other values,
and a header that starts with a UTF-8 byte-order mark). The ``safetensors`` library refuses
a header whose shapes or offsets are not unsigned integers, or whose tensors, taken in the
order of their offsets, do not tile the data section exactly (from 0, each beginning where
the previous ended, each ``end - begin`` = its element count x item size; the format's
``Metadata::validate``). alignctl also reads headers itself (checkpoint streaming,
:mod:`.stream`; steps, :mod:`.peek`): the same file must not be refused by one reader and
read by another, where overlapping offsets would load one tensor's bytes into another and a
negative or non-integer shape would fail inside torch. Source: the safetensors format
description, https://github.com/huggingface/safetensors (README, "Format").
"""

from __future__ import annotations

import math

# bits per element of the dtypes the format names (sub-byte ones are packed)
_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "I16": 16,
         "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "I64": 64,
         "U64": 64, "F64": 64, "C64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}  # fmt: skip


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def tensor_problem(header: dict) -> str | None:
    """Why the tensor entries of ``header`` (``__metadata__`` left out) are not a valid
    safetensors layout, in a few words; None when they are. Data length: the largest end."""
    meta = header.get("__metadata__")
    if meta is not None and not (
        isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())
    ):
        return "__metadata__ is not a mapping of strings to strings"
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or not isinstance(info.get("dtype"), str):
            return f"tensor {name!r} has no dtype"
        shape, offsets = info.get("shape"), info.get("data_offsets")
        if not isinstance(shape, list) or not all(map(_count, shape)):
            return f"tensor {name!r}: shape {shape!r} is not a list of counts"
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_count, offsets))):
            return f"tensor {name!r}: data_offsets {offsets!r} are not two byte offsets"
        if any(math.prod(shape[: i + 1]) >= 2**63 for i in range(len(shape))):
            return f"tensor {name!r}: shape {shape} overflows a 64-bit element count"
        begin, end = offsets
        bits = _BITS.get(info["dtype"])
        if end < begin or (bits is not None and end - begin != math.prod(shape) * bits / 8):
            return (
                f"tensor {name!r}: data_offsets {offsets} do not hold its {shape} {info['dtype']}"
            )
        entries.append((begin, end, name))
    at = 0
    for begin, end, name in sorted(entries):
        if begin != at:
            how = "overlaps another tensor" if begin < at else "leaves a gap before it"
            return f"tensor {name!r} {how} (data_offsets [{begin}, {end}])"
        at = end
    return None
