"""alignctl: training-run diagnostics from the geometry of a network's Jacobian (GrokAlign).

Heavy modules (torch) are imported lazily so that ``alignctl --help`` starts fast.
"""

from ._version import __version__

__all__ = ["__version__", "jacobian", "measure"]


def __getattr__(name: str):
    if name in ("jacobian", "measure"):
        from . import geometry

        return getattr(geometry, name)
    raise AttributeError(f"module 'alignctl' has no attribute {name!r}")
