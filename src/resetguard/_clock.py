"""Real time, and the process-wide testing switch that turns every wait off."""

from __future__ import annotations

import asyncio
import random as _random
import sys
import time
from collections.abc import Awaitable, Callable

__all__ = ["async_sleep", "monotonic", "set_waits", "uniform", "waits_enabled"]

monotonic: Callable[[], float] = time.monotonic
uniform: Callable[[], float] = _random.random


class _Switch:
    __slots__ = ("enabled",)

    def __init__(self) -> None:
        self.enabled = True


_switch = _Switch()


def waits_enabled() -> bool:
    """False while the testing switch has turned waits off."""
    return _switch.enabled


def set_waits(enabled: bool) -> None:
    """Turn every resetguard wait on or off (see :func:`resetguard.testing.no_waits`)."""
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {enabled!r}")
    _switch.enabled = enabled


def _in_trio() -> bool:
    trio = sys.modules.get("trio")
    if trio is None:
        return False
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


def async_sleep(seconds: float) -> Awaitable[None]:
    """Sleep in whichever event loop runs us: trio when inside trio, else asyncio."""
    if _in_trio():
        trio = sys.modules["trio"]
        result: Awaitable[None] = trio.sleep(seconds)
        return result
    return asyncio.sleep(seconds)
