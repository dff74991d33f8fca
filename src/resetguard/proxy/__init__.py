"""A fault-injection TCP proxy: reproduce connection resets on demand.

Toxiproxy's toxics (``reset_peer``, ``latency``, ``bandwidth``, ``slow_close``,
``timeout``, ``slicer``, ``limit_data``) plus ``reset_at`` (RST after N bytes),
``idle_reset`` (the keep-alive race on demand) and ``down`` (refuse connections), each
per direction and with a probability, applied to open connections too. A control API
compatible with Toxiproxy's, a ``resetguard proxy`` command and pytest fixtures.
Standard library only (asyncio).

Example::

    from resetguard.proxy import FaultProxy, ResetPeer

    with FaultProxy("127.0.0.1:5432") as proxy:
        conn = psycopg.connect(host=proxy.host, port=proxy.port, ...)
        with proxy.toxic(ResetPeer()):
            conn.execute("select 1")        # -> server closed the connection unexpectedly

See docs/proxy.md.
"""

from __future__ import annotations

from ._proxy import ProxyError
from ._server import FaultProxy, FaultProxyServer, ToxicLike, as_toxics
from ._toxics import (
    STREAMS,
    Bandwidth,
    Down,
    IdleReset,
    Latency,
    LimitData,
    ResetAt,
    ResetPeer,
    Slicer,
    SlowClose,
    Timeout,
    Toxic,
    ToxicError,
    parse_toxic,
    toxic_from_json,
    toxic_types,
    toxics_from_json,
)

__all__ = [
    "STREAMS",
    "Bandwidth",
    "Down",
    "FaultProxy",
    "FaultProxyServer",
    "IdleReset",
    "Latency",
    "LimitData",
    "ProxyError",
    "ResetAt",
    "ResetPeer",
    "Slicer",
    "SlowClose",
    "Timeout",
    "Toxic",
    "ToxicError",
    "ToxicLike",
    "as_toxics",
    "parse_toxic",
    "toxic_from_json",
    "toxic_types",
    "toxics_from_json",
]
