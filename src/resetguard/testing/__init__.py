"""Helpers for testing code that uses resetguard.

Example::

    >>> import resetguard
    >>> from resetguard.testing import no_waits
    >>> with no_waits():
    ...     assert not resetguard.testing.waits_enabled()
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .._clock import set_waits, waits_enabled

__all__ = ["no_waits", "set_waits", "waits_enabled"]


@contextmanager
def no_waits() -> Iterator[None]:
    """Turn every resetguard backoff wait off inside the block (retries still happen).

    The previous state is restored on exit. Process-wide: meant for test suites.
    """
    previous = waits_enabled()
    set_waits(False)
    try:
        yield
    finally:
        set_waits(previous)
