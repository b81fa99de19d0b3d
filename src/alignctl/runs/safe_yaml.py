"""YAML for configs with limits: a hostile ``alignctl.yaml`` is refused in milliseconds.

``yaml.safe_load`` never runs code, but a 1 KB "billion laughs" document of nested anchors
expands to ~1e9 nodes for whatever walks it (a ``repr`` in an error message, a deep copy), and
20,000 nested brackets overflow the recursive composer (``RecursionError``). This loader is a
``SafeLoader`` that refuses, as :class:`InputError`:

- more than :data:`MAX_BYTES` of text (only that much is read from a file);
- nesting deeper than :data:`MAX_DEPTH` collections;
- more than :data:`MAX_ALIASES` alias nodes (``*name``, ``<<: *name``);
- a key written twice in one mapping (which value was meant cannot be told);
- a document whose expanded tree (aliases counted as copies) exceeds :data:`MAX_NODES`.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from alignctl.errors import InputError

MAX_BYTES = 1 << 20  # 1 MiB; a config is a few hundred bytes
MAX_DEPTH = 64
MAX_ALIASES = 100
MAX_NODES = 100_000


class _Refused(yaml.YAMLError):
    pass


class LimitedLoader(yaml.SafeLoader):
    """SafeLoader counting depth and aliases while composing (before anything is built)."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Refused(f"more than {MAX_ALIASES} aliases (*anchor references)")
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(f"nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        """A key written twice in one mapping is refused (SafeLoader keeps the last value, so
        ``subsample: 0.5`` then ``subsample: 0.25`` would silently mean 0.25); keys that a
        merge (``<<: *anchor``) brings in may be overridden, as YAML intends."""
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(
                    key_node, yaml.ScalarNode
                ):
                    continue
                key = self.construct_object(key_node)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        problem=f"key {key!r} given twice in one mapping",
                        problem_mark=key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):
        """An integer past ``int()``'s 4,300-digit limit is refused with its line (a ValueError,
        not a YAMLError, otherwise); one past the float range is refused, with its key, by
        :func:`alignctl.runs.validate.refuse_huge_integers`."""
        try:
            return super().construct_yaml_int(node)
        except ValueError:
            raise yaml.constructor.ConstructorError(
                problem="an integer of more than 4300 digits", problem_mark=node.start_mark
            ) from None


LimitedLoader.add_constructor("tag:yaml.org,2002:int", LimitedLoader.construct_yaml_int)


def expanded_size(node: yaml.Node, memo: dict[int, int] | None = None) -> int:
    """Nodes in ``node``'s tree with every alias expanded (memoised: linear in the graph).
    Composition has bounded the depth, so the recursion is bounded too."""
    memo = {} if memo is None else memo
    key = id(node)
    if key not in memo:
        memo[key] = 0  # a cycle (a recursive alias) counts once
        if isinstance(node, yaml.SequenceNode):
            total = 1 + sum(expanded_size(c, memo) for c in node.value)
        elif isinstance(node, yaml.MappingNode):
            total = 1 + sum(expanded_size(k, memo) + expanded_size(v, memo) for k, v in node.value)
        else:
            total = 1
        memo[key] = min(total, MAX_NODES + 1)
    return memo[key]


def load_text(text: str, source: str):
    """Parse ``text`` as one YAML document within the limits; InputError names ``source``."""
    if len(text) > MAX_BYTES:
        raise InputError(f"{source}: larger than {MAX_BYTES >> 20} MiB; not a config file")
    try:
        loader = LimitedLoader(text)  # the reader refuses unprintable characters here
    except yaml.YAMLError as e:
        raise InputError(f"{source}{_where(e)}: invalid YAML: {_problem(e)}") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if expanded_size(node) > MAX_NODES:
            raise _Refused(f"expands to more than {MAX_NODES} values (anchors and aliases)")
        return loader.construct_document(node)
    except _Refused as e:
        raise InputError(f"{source}: refused: {e}") from None
    except yaml.YAMLError as e:
        raise InputError(f"{source}{_where(e)}: invalid YAML: {_problem(e)}") from None
    except RecursionError:
        raise InputError(f"{source}: refused: nested too deeply") from None
    finally:
        loader.dispose()


def read_text(path: Path) -> str:
    """At most :data:`MAX_BYTES` (+1, to tell) of a regular file, as UTF-8."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block
        with os.fdopen(fd, "rb") as fh:
            import stat

            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise InputError(f"{path}: not a regular file")
            data = fh.read(MAX_BYTES + 1)
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from None
    if len(data) > MAX_BYTES:
        raise InputError(f"{path}: larger than {MAX_BYTES >> 20} MiB; not a config file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text (byte {e.start})") from None


def load_file(path: Path):
    return load_text(read_text(path), str(path))


def _where(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    return f", line {mark.line + 1}" if mark is not None else ""


def _problem(e: yaml.YAMLError) -> str:
    problem = getattr(e, "problem", None) or (str(e).splitlines() or ["?"])[0]
    mark, ctx = getattr(e, "problem_mark", None), getattr(e, "context", None)
    cmark = getattr(e, "context_mark", None)
    if ctx and cmark is not None and mark is not None and cmark.line != mark.line:
        problem += f" ({ctx} started on line {cmark.line + 1})"
    return problem
