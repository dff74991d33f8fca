"""HTTP clients that never surface a reset they could have absorbed safely.

httpx (:class:`Client`, :class:`AsyncClient`, :class:`RetryTransport`,
:class:`AsyncRetryTransport`), requests (:class:`Session`, :class:`RetryAdapter`) and
aiohttp (:class:`RetrySession`), all under one :class:`HTTPPolicy`. Importing this package
imports none of those libraries: each adapter is loaded on first use.

Example::

    from resetguard.http import Client

    with Client() as client:
        client.get("https://example.org/")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._idle import IdleLimits, OriginIdle
from ._rules import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_STATUS_CODES,
    IDEMPOTENT_METHODS,
    HTTPPolicy,
)
from ._run import RetryableStatus, outcome_unknown

if TYPE_CHECKING:
    from ._aiohttp import RetrySession
    from ._httpx import AsyncClient, AsyncRetryTransport, Client, RetryTransport
    from ._requests import RetryAdapter, Session

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_STATUS_CODES",
    "IDEMPOTENT_METHODS",
    "AsyncClient",
    "AsyncRetryTransport",
    "Client",
    "HTTPPolicy",
    "IdleLimits",
    "OriginIdle",
    "RetryAdapter",
    "RetrySession",
    "RetryTransport",
    "RetryableStatus",
    "Session",
    "outcome_unknown",
]

_LAZY = {
    "AsyncClient": "_httpx",
    "AsyncRetryTransport": "_httpx",
    "Client": "_httpx",
    "RetryTransport": "_httpx",
    "RetryAdapter": "_requests",
    "Session": "_requests",
    "RetrySession": "_aiohttp",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'resetguard.http' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
