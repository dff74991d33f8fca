"""Fixtures: real upstream servers on loopback for the proxy tests."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest
from proxy_helpers import TcpServer, echo


@pytest.fixture
def tcp_server() -> Iterator[Callable[..., TcpServer]]:
    """Factory of threaded servers: ``tcp_server(handler, family=AF_INET)``."""
    servers: list[TcpServer] = []

    def make(handler: Callable[[socket.socket], None], family: int = socket.AF_INET) -> TcpServer:
        host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        server = TcpServer(handler, family=family, host=host).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def echo_server(tcp_server: Callable[..., TcpServer]) -> TcpServer:
    return tcp_server(echo)
