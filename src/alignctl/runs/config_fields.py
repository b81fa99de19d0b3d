"""The field readers of ``alignctl.yaml`` (:mod:`alignctl.runs.config`): numbers, integers,
mappings and key sets, each an InputError naming the field (``where``) and the value seen.

YAML 1.1 reads ``1e-3`` (no dot) as a string, so numeric strings are accepted as numbers;
a float that is a whole number is accepted as an integer (``epochs: 1e3``).
"""

from __future__ import annotations

from alignctl.errors import InputError, short
from alignctl.runs.validate import is_finite_real


def number(v, where: str, *, lo: float | None = None, strict_lo: bool = False) -> float:
    # YAML 1.1 reads "1e-3" (no dot) as a string: accept numeric strings
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            raise InputError(f"{where} must be a number, got {short(v)}") from None
    if not is_finite_real(v):
        raise InputError(f"{where} must be a finite number, got {short(v)}")
    if lo is not None and (v <= lo if strict_lo else v < lo):
        raise InputError(f"{where} must be {'>' if strict_lo else '>='} {lo}, got {short(v)}")
    return float(v)


def integer(v, where: str, lo: int | None = None, optional: bool = False,
         hi: int | None = None) -> int | None:  # fmt: skip
    if v is None and optional:
        return None
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            raise InputError(f"{where} must be an integer, got {short(v)}") from None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise InputError(
            f"{where} must be an integer{' or null' if optional else ''}, got {short(v)}"
        )
    if lo is not None and v < lo:
        raise InputError(f"{where} must be >= {lo}, got {v}")
    if hi is not None and v > hi:
        raise InputError(f"{where} must be <= {hi}, got {short(v)}")
    return v


def mapping(v, where: str) -> dict:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise InputError(f"{where} must be a mapping, got {type(v).__name__}")
    return v


def known_keys(d: dict, valid, where: str) -> None:
    unknown = [short(k) if not isinstance(k, str) else short(k)[1:-1] for k in d if k not in valid]
    if unknown:
        raise InputError(
            f"unknown key(s) in {where}: {', '.join(unknown)}; valid: {', '.join(valid)}"
        )
