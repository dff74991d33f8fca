"""Every toxic observed from a real stdlib socket client, through real loopback sockets."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import random
import socket
import struct
import threading
import time
from collections.abc import Callable

import pytest
from proxy_helpers import TcpServer, echo, have_ipv6

from resetguard.proxy import (
    Bandwidth,
    Down,
    FaultProxy,
    IdleReset,
    Latency,
    LimitData,
    ProxyError,
    ResetAt,
    ResetPeer,
    Slicer,
    SlowClose,
    Timeout,
)

Factory = Callable[..., FaultProxy]


def connect(proxy: FaultProxy, timeout: float = 5.0) -> socket.socket:
    s = socket.create_connection(proxy.address, timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def roundtrip(s: socket.socket, payload: bytes = b"ping") -> bytes:
    s.sendall(payload)
    got = b""
    while len(got) < len(payload):
        data = s.recv(65536)
        if not data:
            break
        got += data
    return got


def read_all(s: socket.socket) -> bytes:
    chunks = []
    while True:
        data = s.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def sender(
    payload: bytes, *, close: bool = True, on_request: bool = False
) -> Callable[[socket.socket], None]:
    """A server that sends ``payload`` on connect (or on the first bytes received),
    then closes (or waits for EOF)."""

    def handler(conn: socket.socket) -> None:
        if on_request:
            conn.recv(100)
        conn.sendall(payload)
        if not close:
            while conn.recv(65536):
                pass

    return handler


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


# -- plain forwarding -----------------------------------------------------------------------------


def test_forwards_both_ways(fault_proxy: Factory, echo_server: TcpServer) -> None:
    proxy = fault_proxy(echo_server.address)
    with connect(proxy) as s:
        assert roundtrip(s, b"hello") == b"hello"


@pytest.mark.skipif(not have_ipv6(), reason="no IPv6 loopback")
def test_ipv6_listen_and_upstream(
    fault_proxy: Factory, tcp_server: Callable[..., TcpServer]
) -> None:
    server = tcp_server(echo, family=socket.AF_INET6)
    proxy = fault_proxy(server.address, listen="[::1]:0")
    assert proxy.listen.startswith("[::1]:")
    with socket.create_connection(proxy.address, timeout=5) as s:
        assert roundtrip(s, b"six") == b"six"


def test_large_transfer_is_intact(fault_proxy: Factory, echo_server: TcpServer) -> None:
    payload = os.urandom(8 << 20)
    proxy = fault_proxy(echo_server.address)
    with connect(proxy, timeout=30) as s:
        t = threading.Thread(target=lambda: (s.sendall(payload), s.shutdown(socket.SHUT_WR)))
        t.start()
        got = read_all(s)
        t.join()
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()


def test_large_transfer_through_byte_toxics_is_intact(
    fault_proxy: Factory, echo_server: TcpServer
) -> None:
    payload = os.urandom(2 << 20)
    proxy = fault_proxy(
        echo_server.address,
        toxics=[
            Slicer(average_size=3000, size_variation=1000),
            Latency(latency=1, stream="upstream"),
        ],
    )
    with connect(proxy, timeout=30) as s:
        t = threading.Thread(target=lambda: (s.sendall(payload), s.shutdown(socket.SHUT_WR)))
        t.start()
        got = read_all(s)
        t.join()
    assert got == payload


def test_flow_control_resumes_after_a_toxic_releases_held_bytes(
    fault_proxy: Factory, echo_server: TcpServer
) -> None:
    """More than the high-water mark held by a latency toxic pauses reading; the bytes
    it then releases must resume it."""
    payload = os.urandom(4 << 20)
    proxy = fault_proxy(echo_server.address, toxics=[Latency(latency=50, stream="upstream")])
    with connect(proxy, timeout=20) as s:
        t = threading.Thread(target=lambda: (s.sendall(payload), s.shutdown(socket.SHUT_WR)))
        t.start()
        got = read_all(s)
        t.join()
    assert got == payload


def test_half_close_is_passed_on(fault_proxy: Factory, echo_server: TcpServer) -> None:
    proxy = fault_proxy(echo_server.address)
    with connect(proxy) as s:
        s.sendall(b"last words")
        s.shutdown(socket.SHUT_WR)  # the echo server answers, then half-closes too
        assert read_all(s) == b"last words"


# -- reset_peer -----------------------------------------------------------------------------------


def test_reset_peer_gives_econnreset(fault_proxy: Factory, echo_server: TcpServer) -> None:
    proxy = fault_proxy(echo_server.address)
    with connect(proxy) as s:
        assert roundtrip(s) == b"ping"
        proxy.add_toxic(ResetPeer())  # applies to the open connection
        s.sendall(b"ping")
        with pytest.raises(ConnectionResetError) as info:
            s.recv(100)
        assert info.value.errno == errno.ECONNRESET


def test_reset_peer_upstream_resets_both_sides(
    fault_proxy: Factory, tcp_server: Callable[..., TcpServer]
) -> None:
    server_saw: list[BaseException | bytes] = []
    done = threading.Event()

    def handler(conn: socket.socket) -> None:
        try:
            server_saw.append(conn.recv(100))
        except OSError as exc:
            server_saw.append(exc)
        done.set()

    server = tcp_server(handler)
    proxy = fault_proxy(server.address, toxics=["reset_peer:upstream"])
    with connect(proxy) as s:
        s.sendall(b"request")
        with pytest.raises(ConnectionResetError):
            s.recv(100)
    assert done.wait(5)
    assert isinstance(server_saw[0], ConnectionResetError)


def test_reset_peer_timeout_delays_the_reset(fault_proxy: Factory, echo_server: TcpServer) -> None:
    proxy = fault_proxy(echo_server.address, toxics=[ResetPeer(timeout=300)])
    with connect(proxy) as s:
        start = time.monotonic()
        s.sendall(b"ping")
        with pytest.raises(ConnectionResetError):
            s.recv(100)
        assert time.monotonic() - start >= 0.28


# -- latency, bandwidth, slicer, slow_close -------------------------------------------------------


def test_latency_adds_the_delay(fault_proxy: Factory, echo_server: TcpServer) -> None:
    proxy = fault_proxy(echo_server.address)
    with connect(proxy) as s:
        roundtrip(s)
        start = time.monotonic()
        roundtrip(s)
        base = time.monotonic() - start
        with proxy.toxic("latency:both:latency=100ms"):
            start = time.monotonic()
            assert roundtrip(s) == b"ping"
            slow = time.monotonic() - start
        start = time.monotonic()
        roundtrip(s)
        after = time.monotonic() - start
    assert slow >= 0.195  # 100 ms each way
    assert slow < 1.0
    assert base < 0.1
    assert after < 0.1


def test_latency_jitter_stays_in_range(fault_proxy: Factory, echo_server: TcpServer) -> None:
    proxy = fault_proxy(echo_server.address, toxics=[Latency(latency=60, jitter=40)])
    with connect(proxy) as s:
        times = []
        for _ in range(8):
            start = time.monotonic()
            roundtrip(s)
            times.append(time.monotonic() - start)
    assert min(times) >= 0.019
    assert max(times) < 0.5


def test_removing_latency_releases_held_data_at_once(
    fault_proxy: Factory, echo_server: TcpServer
) -> None:
    proxy = fault_proxy(echo_server.address, toxics=[Latency(latency=5000)])
    with connect(proxy) as s:
        s.sendall(b"held")
        time.sleep(0.1)
        start = time.monotonic()
        proxy.remove_toxic("latency_downstream")
        assert s.recv(100) == b"held"
        assert time.monotonic() - start < 1.0


def test_bandwidth_limits_the_rate(
    fault_proxy: Factory, tcp_server: Callable[..., TcpServer]
) -> None:
    payload = b"b" * 100_000
    server = tcp_server(sender(payload))
    proxy = fault_proxy(server.address, toxics=[Bandwidth(rate=400)])  # 400 KB/s
    with connect(proxy) as s:
        start = time.monotonic()
        got = read_all(s)
        elapsed = time.monotonic() - start
    assert got == payload
    assert 0.2 <= elapsed < 2.0  # 100 KB at 400 KB/s = 0.25 s


def test_slicer_cuts_data_into_pieces(
    fault_proxy: Factory, tcp_server: Callable[..., TcpServer]
) -> None:
    payload = bytes(range(256)) * 4
    server = tcp_server(sender(payload))
    proxy = fault_proxy(server.address, toxics=[Slicer(average_size=100, delay=20_000)])
    with connect(proxy) as s:
        pieces = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            pieces.append(data)
    assert b"".join(pieces) == payload
    assert len(pieces) >= 6
    assert max(len(p) for p in pieces) <= 200


def test_slow_close_delays_the_fin(
    fault_proxy: Factory, tcp_server: Callable[..., TcpServer]
) -> None:
    server = tcp_server(sender(b"bye"))
    proxy = fault_proxy(server.address, toxics=[SlowClose(delay=300)])
    with connect(proxy) as s:
        start = time.monotonic()
        assert s.recv(100) == b"bye"
        assert time.monotonic() - start < 0.25
        assert s.recv(100) == b""
        assert time.monotonic() - start >= 0.28


# -- timeout --------------------------------------------------------------------------------------


def test_timeout_blackholes_then_closes(fault_proxy: Factory, echo_server: TcpServer) -> None:
    proxy = fault_proxy(echo_server.address, toxics=[Timeout(timeout=300, stream="upstream")])
    with connect(proxy) as s:
        start = time.monotonic()
        s.sendall(b"lost")
        assert s.recv(100) == b""  # no echo: the request never arrived; then FIN
        assert time.monotonic() - start >= 0.28


def test_timeout_zero_never_closes_until_removed(
    fault_proxy: Factory, echo_server: TcpServer
) -> None:
    proxy = fault_proxy(echo_server.address, toxics=[Timeout()])
    with connect(proxy, timeout=0.3) as s:
        s.sendall(b"lost")
        with pytest.raises(socket.timeout):
            s.recv(100)
        s.settimeout(5)
        proxy.remove_toxic("timeout_downstream")  # bytes were lost: the stream is ended
        assert s.recv(100) == b""


# -- limit_data, reset_at -------------------------------------------------------------------------


def test_limit_data_truncates_exactly(
    fault_proxy: Factory, tcp_server: Callable[..., TcpServer]
) -> None:
    payload = os.urandom(100_000)
    server = tcp_server(sender(payload, close=False))
    proxy = fault_proxy(server.address, toxics=[LimitData(bytes=12_345)])
    with connect(proxy) as s:
        assert read_all(s) == payload[:12_345]


def test_limit_data_upstream_truncates_the_request(
    fault_proxy: Factory, tcp_server: Callable[..., TcpServer]
) -> None:
    received = []
    done = threading.Event()

    def handler(conn: socket.socket) -> None:
        received.append(read_all(conn))
        done.set()

    server = tcp_server(handler)
    proxy = fault_proxy(server.address, toxics=["limit_data:upstream:bytes=10"])
    with connect(proxy) as s:
        s.sendall(b"0123456789abcdef")
        assert s.recv(100) == b""
    assert done.wait(5)
    assert received == [b"0123456789"]


def test_reset_at_delivers_n_bytes_then_rst(
    fault_proxy: Factory, tcp_server: Callable[..., TcpServer]
) -> None:
    payload = os.urandom(50_000)
    server = tcp_server(sender(payload, close=False, on_request=True))
    proxy = fault_proxy(server.address, toxics=[ResetAt(bytes=30_000)])
    with connect(proxy) as s:
        s.sendall(b"go")
        time.sleep(0.2)
        got = b""
        error = None
        while error is None:
            try:
                data = s.recv(65536)
            except ConnectionResetError as exc:
                error = exc
            else:
                assert data, "expected a reset, got FIN"
                got += data
    assert got == payload[:30_000]


# -- idle_reset: the keep-alive race --------------------------------------------------------------


@pytest.mark.parametrize("close", ["rst", "fin"])
def test_idle_reset_on_next_write(fault_proxy: Factory, echo_server: TcpServer, close: str) -> None:
    proxy = fault_proxy(
        echo_server.address, toxics=[IdleReset(idle=150, close=close, stream="upstream")]
    )
    with connect(proxy) as s:
        assert roundtrip(s) == b"ping"
        time.sleep(0.05)
        assert roundtrip(s) == b"ping"  # not idle long enough
        time.sleep(0.25)
        s.sendall(b"stale")  # the write on the idle connection triggers the close
        if close == "rst":
            with pytest.raises(ConnectionResetError):
                s.recv(100)
        else:
            assert s.recv(100) == b""


def test_idle_reset_timer_reaps_only_idle_connections(
    fault_proxy: Factory, echo_server: TcpServer
) -> None:
    proxy = fault_proxy(echo_server.address, toxics=["idle_reset:idle=200ms:trigger=timer"])
    with connect(proxy) as idle, connect(proxy) as busy:
        roundtrip(idle)
        for _ in range(8):
            assert roundtrip(busy) == b"ping"
            time.sleep(0.05)
        with pytest.raises(ConnectionResetError):
            idle.recv(100)
        assert roundtrip(busy) == b"ping"


# -- down, toxicity, open connections -------------------------------------------------------------


def test_down_refuses_new_connections_and_keeps_open_ones(
    fault_proxy: Factory, echo_server: TcpServer
) -> None:
    proxy = fault_proxy(echo_server.address)
    with connect(proxy) as s:
        assert roundtrip(s) == b"ping"  # accepted (not waiting in the listen backlog)
        with proxy.toxic(Down()):
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(proxy.address, timeout=2)
            assert roundtrip(s) == b"ping"
        with connect(proxy) as again:
            assert roundtrip(again) == b"ping"


def test_down_from_the_start_keeps_the_port(fault_proxy: Factory, echo_server: TcpServer) -> None:
    proxy = fault_proxy(echo_server.address, toxics=["down"])
    assert proxy.port != 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(proxy.address, timeout=2)
    proxy.remove_toxic("down_downstream")
    with connect(proxy) as s:
        assert roundtrip(s) == b"ping"


def test_toxicity_zero_never_applies(fault_proxy: Factory, echo_server: TcpServer) -> None:
    proxy = fault_proxy(echo_server.address, toxics=[ResetPeer(toxicity=0.0)])
    for _ in range(20):
        with connect(proxy) as s:
            assert roundtrip(s) == b"ping"


def test_toxicity_is_drawn_per_connection(echo_server: TcpServer) -> None:
    with FaultProxy(
        echo_server.address, toxics=[ResetPeer(toxicity=0.5)], random=random.Random(7)
    ) as proxy:
        outcomes = []
        for _ in range(40):
            with connect(proxy) as s:
                try:
                    outcomes.append(roundtrip(s) == b"ping")
                except ConnectionResetError:
                    outcomes.append(False)
    assert 8 <= outcomes.count(True) <= 32


def test_update_toxic_applies_to_open_connections(
    fault_proxy: Factory, echo_server: TcpServer
) -> None:
    proxy = fault_proxy(echo_server.address, toxics=[Latency(latency=10)])
    with connect(proxy) as s:
        roundtrip(s)
        proxy.update_toxic("latency_downstream", latency=250)
        start = time.monotonic()
        roundtrip(s)
        assert time.monotonic() - start >= 0.24
    assert proxy.toxics == (Latency(latency=250),)


def test_duplicate_toxic_name_is_refused(fault_proxy: Factory, echo_server: TcpServer) -> None:
    proxy = fault_proxy(echo_server.address, toxics=[Latency()])
    with pytest.raises(ProxyError) as info:
        proxy.add_toxic(Latency(latency=5))
    assert info.value.status == 409
    with pytest.raises(ProxyError) as info:
        proxy.remove_toxic("nope")
    assert info.value.status == 404


# -- robustness -----------------------------------------------------------------------------------


def _send_and_read(address: tuple[str, int]) -> bytes:
    with socket.create_connection(address, timeout=5) as s:
        s.sendall(b"x")
        return s.recv(10)


def test_unreachable_upstream_resets_the_client(fault_proxy: Factory, unused_port: int) -> None:
    proxy = fault_proxy(f"127.0.0.1:{unused_port}")
    for _ in range(3):
        # the reset may even beat connect() back to the client
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            _send_and_read(proxy.address)
    wait_for(lambda: proxy.connections == 0)


def test_client_vanishing_mid_stream_leaves_the_proxy_working(
    fault_proxy: Factory, tcp_server: Callable[..., TcpServer]
) -> None:
    def firehose(conn: socket.socket) -> None:
        block = b"z" * 65536
        while True:
            conn.sendall(block)

    server = tcp_server(firehose)
    proxy = fault_proxy(server.address)
    for _ in range(5):
        s = connect(proxy)
        s.recv(1000)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # RST with the proxy mid-write
    wait_for(lambda: proxy.connections == 0)
    assert all(isinstance(e, ConnectionError) for e in server.errors)
    with connect(proxy) as s:
        assert len(s.recv(1000)) > 0


def test_pipes_never_carry_bytes_into_another_connection(
    fault_proxy: Factory, tcp_server: Callable[..., TcpServer]
) -> None:
    """Connections aborted mid-splice leave bytes in their pipe; such a pipe must be
    dropped, not handed to the next connection by the pool."""

    def firehose(conn: socket.socket) -> None:
        block = b"z" * 65536
        while True:
            conn.sendall(block)

    noisy = fault_proxy(tcp_server(firehose).address)
    quiet = fault_proxy(tcp_server(sender(b"clean")).address)
    for _ in range(10):
        s = connect(noisy)
        s.recv(10)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        with connect(quiet) as c:
            assert read_all(c) == b"clean"


def test_upstream_vanishing_mid_stream_resets_the_client(
    fault_proxy: Factory, tcp_server: Callable[..., TcpServer]
) -> None:
    def vanish(conn: socket.socket) -> None:
        conn.sendall(b"partial")
        time.sleep(0.05)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    server = tcp_server(vanish)
    proxy = fault_proxy(server.address)
    with connect(proxy) as s:
        assert s.recv(100) == b"partial"
        with pytest.raises(ConnectionResetError):
            s.recv(100)
    wait_for(lambda: proxy.connections == 0)


def test_disable_enable_and_reset_connections(fault_proxy: Factory, echo_server: TcpServer) -> None:
    proxy = fault_proxy(echo_server.address)
    s = connect(proxy)
    assert roundtrip(s) == b"ping"
    proxy.disable()
    assert not proxy.enabled
    assert s.recv(100) == b""
    s.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(proxy.address, timeout=2)
    proxy.enable()
    with connect(proxy) as s:
        assert roundtrip(s) == b"ping"
        assert proxy.reset_connections() == 1
        with pytest.raises(ConnectionResetError):
            s.recv(100)


def test_stop_closes_everything(echo_server: TcpServer) -> None:
    with FaultProxy(echo_server.address) as proxy:
        address = proxy.address
        s = connect(proxy)
        assert roundtrip(s) == b"ping"
    assert s.recv(100) == b""
    s.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=2)


def test_async_form(echo_server: TcpServer) -> None:
    async def main() -> None:
        async with FaultProxy(echo_server.address, toxics=["latency:latency=50"]) as proxy:
            reader, writer = await asyncio.open_connection(*proxy.address)
            start = time.monotonic()
            writer.write(b"async")
            assert await reader.readexactly(5) == b"async"
            assert time.monotonic() - start >= 0.045
            with proxy.toxic("reset_peer"):
                writer.write(b"again")
                with pytest.raises(ConnectionResetError):
                    await reader.read(100)
            writer.close()
            await asyncio.gather(writer.wait_closed(), return_exceptions=True)

    asyncio.run(main())


def test_stats_count_bytes_and_connections(fault_proxy: Factory, echo_server: TcpServer) -> None:
    proxy = fault_proxy(echo_server.address)
    with connect(proxy) as s:
        roundtrip(s, b"x" * 1000)
    wait_for(lambda: proxy.connections == 0)
    stats = proxy.stats()
    assert stats["upstream_received"] == stats["upstream_sent"] == 1000
    assert stats["downstream_received"] == stats["downstream_sent"] == 1000
    assert stats["connections_total"] == 1
    # An open connection counts too, on top of the closed one.
    with connect(proxy) as s:
        roundtrip(s, b"y" * 500)
        stats = proxy.stats()
        assert stats["upstream_received"] == stats["upstream_sent"] == 1500
        assert stats["downstream_received"] == stats["downstream_sent"] == 1500
        assert stats["connections_active"] == 1
    wait_for(lambda: proxy.connections == 0)
    assert proxy.stats()["downstream_sent"] == 1500  # folded in once when it closed
