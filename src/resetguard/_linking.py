"""How a breaker or budget with a shared-state backend becomes a linked instance.

An object built with ``backend=`` is an instance of a subclass that overrides only the
slow paths (``_LinkedBreaker`` / ``_LinkedBudget``): the in-process object's code stays
exactly what it always was, and pays nothing for the seam.
"""

from __future__ import annotations

from typing import Any

__all__ = ["new"]

_LINKED: dict[tuple[type[Any], type[Any]], type[Any]] = {}


def new(cls: type[Any], backend: object, linked: type[Any]) -> Any:
    """A new, uninitialised instance of ``cls``, or of ``cls`` mixed with ``linked`` when
    a ``backend`` is given (one such class per ``cls``, made on first use)."""
    if backend is not None and not issubclass(cls, linked):
        mixed = _LINKED.get((cls, linked))
        if mixed is None:
            mixed = _LINKED[cls, linked] = type(cls.__name__, (linked, cls), {"__slots__": ()})
        cls = mixed
    return object.__new__(cls)
