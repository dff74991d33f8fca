"""pytest fixtures for the fault-injection proxy (registered as the ``resetguard`` plugin).

Fixtures:

* ``fault_proxy`` — a factory: ``fault_proxy("127.0.0.1:5432")`` starts a proxy in
  front of that address and returns a :class:`resetguard.proxy.FaultProxy`; every proxy
  it made is removed when the test ends. Keyword arguments: ``listen``, ``name``,
  ``toxics``, ``enabled``.
* ``fault_proxy_server`` — the session's :class:`resetguard.proxy.FaultProxyServer`
  (one event loop in a background thread for the whole run), with the
  Toxiproxy-compatible API on a free loopback port (``fault_proxy_server.api_url``).

Marker: ``@pytest.mark.toxics(*specs)`` — every proxy ``fault_proxy`` makes in that test
starts with these toxics (CLI spec strings, toxic objects or Toxiproxy dicts)::

    @pytest.mark.toxics("latency:latency=100")
    def test_slow_db(fault_proxy):
        proxy = fault_proxy("127.0.0.1:5432")
        ...

Importing this module imports nothing but pytest: the proxy is imported when a fixture
is first used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from resetguard.proxy import FaultProxy, FaultProxyServer

__all__ = ["fault_proxy", "fault_proxy_server"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "toxics(*specs): toxics every proxy made by the fault_proxy fixture starts with "
        "(resetguard spec strings such as 'reset_peer:downstream', Toxic objects or dicts)",
    )


@pytest.fixture(scope="session")
def fault_proxy_server() -> Iterator[FaultProxyServer]:
    """One proxy server (background event loop + Toxiproxy-compatible API) per session."""
    from resetguard.proxy import FaultProxyServer

    server = FaultProxyServer(api="127.0.0.1:0").start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def fault_proxy(
    request: pytest.FixtureRequest, fault_proxy_server: FaultProxyServer
) -> Iterator[Callable[..., FaultProxy]]:
    """Factory: ``fault_proxy(upstream, *, listen=..., name=..., toxics=(), enabled=True)``."""
    from resetguard.proxy import as_toxics

    marked: list[Any] = []
    for marker in request.node.iter_markers("toxics"):
        marked[:0] = list(marker.args)  # closest marker last, so it is applied last
    base = as_toxics(marked) if marked else ()
    made: list[FaultProxy] = []

    def make(upstream: str | tuple[str, int], **kwargs: Any) -> FaultProxy:
        toxics = (*base, *as_toxics(kwargs.pop("toxics", ())))
        proxy = fault_proxy_server.create(upstream, toxics=toxics, **kwargs)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()
