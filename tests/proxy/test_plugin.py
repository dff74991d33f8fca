"""The pytest plugin: lazy import, the fault_proxy factory, the toxics marker."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest
from proxy_helpers import TcpServer

from resetguard.proxy import FaultProxy, FaultProxyServer, Latency, LimitData

pytestmark = pytest.mark.toxics("latency:latency=1")


def test_importing_the_plugin_is_light() -> None:
    code = (
        "import sys; import resetguard.pytest_plugin; "
        "heavy = [m for m in ('resetguard.proxy', 'httpx', 'psycopg') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.toxics(LimitData(bytes=3), "slicer:average_size=1")
def test_marker_toxics_apply_to_every_proxy(
    fault_proxy: Callable[..., FaultProxy], echo_server: TcpServer
) -> None:
    first = fault_proxy(echo_server.address)
    second = fault_proxy(echo_server.address, toxics=["reset_at:upstream:bytes=9"])
    assert [t.type for t in first.toxics] == ["latency", "limit_data", "slicer"]
    assert [t.type for t in second.toxics] == ["latency", "limit_data", "slicer", "reset_at"]


def test_factory_proxies_live_on_the_session_server(
    fault_proxy: Callable[..., FaultProxy],
    fault_proxy_server: FaultProxyServer,
    echo_server: TcpServer,
) -> None:
    proxy = fault_proxy(echo_server.address, name="plugin_teardown_check")
    assert proxy.toxics == (Latency(latency=1),)
    assert "plugin_teardown_check" in fault_proxy_server.proxies
    assert fault_proxy_server.api_url is not None


def test_factory_proxies_are_removed_after_the_test(fault_proxy_server: FaultProxyServer) -> None:
    assert "plugin_teardown_check" not in fault_proxy_server.proxies
