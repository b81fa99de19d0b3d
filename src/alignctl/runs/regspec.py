"""The syntax of a regulariser spec, shared by the command line (``--reg``, ``--regs``) and
``alignctl.yaml``'s ``train.regularisers`` list, so that one setting reads the same everywhere.

A spec is ``NAME`` or ``NAME:key=value,key=value`` (``grokalign:subsample=0.0625,every=2``);
values are read as numbers where they are numbers (``true``/``false`` as booleans), else kept
as names. In ``alignctl.yaml`` an entry is that string or a mapping ``{name: NAME, key:
value}``; a string value of a mapping is read as the command line reads it (YAML 1.1 reads
``1e-3`` as a string), and a whole number written as a float (``2.0``, ``1e1``) is an integer
wherever the regulariser's parameter is one (:func:`alignctl.train.regularisers.build_regulariser`).
What a regulariser accepts is its own (its constructor); this module only reads the text.
"""

from __future__ import annotations

from alignctl.errors import InputError

ALIASES = {"lambda": "lam"}  # spec names that are Python keywords


def spec_value(text: str):
    """A spec's value: ``true``/``false`` a bool, else an int, a float, or the text."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_reg_spec(text: str) -> dict:
    """``"grokalign:lambda=0.01,n_proj=2"`` ->
    ``{"name": "grokalign", "lambda": 0.01, "n_proj": 2}``. A parameter given twice (or as
    both spellings, ``lambda`` and ``lam``; ``name`` is given before the colon) is an
    InputError: which value was meant cannot be told."""
    name, _, params = str(text).strip().partition(":")
    name = name.strip()
    if not name:
        raise InputError(f"empty regulariser in {text!r}; expected NAME or NAME:key=value,...")
    spec: dict = {"name": name}
    for item, key, sep, value in _pieces(params):
        if not sep or not key or not value:
            raise InputError(
                f"malformed regulariser parameter {item!r} in {text!r}; expected key=value"
            )
        if key in spec:
            raise InputError(f"regulariser {name}: {key} given twice in {text!r}")
        spec[key] = spec_value(value)
    canonical_params({k: v for k, v in spec.items() if k != "name"}, name, f" in {text!r}")
    return spec


def tidy_spec(text: str) -> str:
    """One spelling per setting (a race's row label and folder): blanks around the name, the
    pieces and their ``=`` dropped, empty pieces left out (``"grokalign: a = 1, b=2,"`` ->
    ``"grokalign:a=1,b=2"``), so a setting spelled two ways is not trained twice."""
    name, _, params = text.strip().partition(":")
    pieces = [key + sep + value for _, key, sep, value in _pieces(params)]
    return name.strip() + (":" + ",".join(pieces) if pieces else "")


def _pieces(params: str):
    """(piece, key, "=" or "", value) of each non-empty comma piece, blanks stripped."""
    for item in filter(None, (p.strip() for p in params.split(","))):
        key, sep, value = item.partition("=")
        yield item, key.strip(), sep, value.strip()


def read_spec_values(spec: dict) -> dict:
    """A mapping spec's string values read as :func:`parse_reg_spec` reads them (its name
    kept as given)."""
    return {k: v if k == "name" or not isinstance(v, str) else spec_value(v.strip())
            for k, v in spec.items()}  # fmt: skip


def canonical_params(params: dict, name, where: str = "") -> dict:
    """``params`` keyed by constructor names (``lambda`` -> ``lam``); one parameter under
    both spellings is an InputError naming it."""
    out: dict = {}
    given: dict = {}
    for k, v in params.items():
        c = ALIASES.get(k, k)
        if c in out:
            raise InputError(
                f"regulariser {name}: {given[c]} given twice (as {given[c]} and {k}){where}"
            )
        out[c], given[c] = v, k
    return out
