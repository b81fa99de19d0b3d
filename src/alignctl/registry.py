"""A tiny name -> object registry, the plug-in mechanism for tasks, models, regularisers
and metrics (in the spirit of timm's ``register_model``): an entry is one file that
decorates its factory with ``@REGISTRY.register("name")``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from alignctl.errors import InputError

T = TypeVar("T")
NAME_SEPARATORS = ",:;="  # --metrics a,b; --reg NAME:k=v; race --regs a;b


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding ``obj`` under ``name``: a non-empty printable string without
        blanks or the characters that separate names on the command line (``,:;=``); else,
        or when the name is taken, an InputError (a name of another kind broke every later
        "valid: ..." listing, whose sort compares the names)."""
        if (
            not isinstance(name, str)
            or not name
            or not name.isprintable()
            or any(c.isspace() or c in NAME_SEPARATORS for c in name)
        ):
            shown = repr(name) if isinstance(name, str) else type(name).__name__
            raise InputError(f"a {self.kind} name is a string without blanks or any of "
                             f"{NAME_SEPARATORS!r}, not {shown[:80]}")  # fmt: skip

        def deco(obj: T) -> T:
            if name in self._entries:
                raise InputError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise InputError(
                f"unknown {self.kind} {name!r}; valid: {', '.join(sorted(self._entries))}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
