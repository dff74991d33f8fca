"""Benchmark the fault proxy against a direct connection and haproxy (TCP mode), in one run.

Rows: direct, haproxy (default), haproxy (splice-request/splice-response), resetguard
proxy (asyncio) and, when uvloop is importable, resetguard proxy on uvloop. haproxy rows
are skipped with a note when the binary is absent (`apt-get install haproxy`).

Columns: bulk MB/s on 1 and 4 connections (server -> client), 100-byte ping-pong round
trip p50/p99 and the latency added over direct, connections per second under churn
(connect, 1 round trip, close), and memory per idle connection (RSS growth of the proxy
process over N idle connections).

Every process is started and stopped here by pid, on loopback ports only; each
measurement is bounded in time. Usage::

    python benchmarks/proxy_bench.py [--seconds 2] [--idle 2000] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BULK_BUF = 1 << 20
PING = b"x" * 100


# -- upstream servers (run in a child process) ---------------------------------------------------


def _serve_upstream() -> None:
    """Bulk source (threads, blocking sendall) + echo server (asyncio); prints ports."""
    bulk = socket.socket()
    bulk.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    bulk.bind(("127.0.0.1", 0))
    bulk.listen(128)
    payload = memoryview(b"\0" * BULK_BUF)

    def source(conn: socket.socket) -> None:
        with conn:
            try:
                while True:
                    conn.sendall(payload)
            except OSError:
                return

    def accept_bulk() -> None:
        while True:
            conn, _ = bulk.accept()
            threading.Thread(target=source, args=(conn,), daemon=True).start()

    threading.Thread(target=accept_bulk, daemon=True).start()

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t = transport
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def data_received(self, data: bytes) -> None:
            self.t.write(data)  # type: ignore[attr-defined]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, "127.0.0.1", 0, backlog=4096)
        echo_port = server.sockets[0].getsockname()[1]
        print(json.dumps({"bulk": bulk.getsockname()[1], "echo": echo_port}), flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


# -- helpers --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on port {port}")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- measurements ---------------------------------------------------------------------------------


def bulk(port: int, conns: int, seconds: float) -> float:
    """MB/s (10^6 bytes) received over ``conns`` connections for ``seconds``."""
    counts = [0] * conns
    stop = threading.Event()
    measuring = threading.Event()

    def reader(i: int) -> None:
        buf = bytearray(BULK_BUF)
        with socket.create_connection(("127.0.0.1", port)) as s:
            while not stop.is_set():
                n = s.recv_into(buf)
                if not n:
                    break
                if measuring.is_set():
                    counts[i] += n

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(conns)]
    for t in threads:
        t.start()
    time.sleep(0.3)  # warm up
    measuring.set()
    start = time.perf_counter()
    time.sleep(seconds)
    total = sum(counts)
    elapsed = time.perf_counter() - start
    stop.set()
    for t in threads:
        t.join()
    return total / elapsed / 1e6


def pingpong(port: int, rounds: int) -> tuple[float, float]:
    """p50 and p99 round trip in µs of 100-byte messages on one connection."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        times = []
        clock = time.perf_counter_ns
        for i in range(rounds + 500):
            t0 = clock()
            s.sendall(PING)
            got = 0
            while got < len(PING):
                got += len(s.recv(4096))
            if i >= 500:
                times.append(clock() - t0)
    times.sort()
    return times[len(times) // 2] / 1000, times[int(len(times) * 0.99)] / 1000


def churn(port: int, seconds: float, workers: int = 2) -> float:
    """Connections per second: connect, one 4-byte round trip, close."""
    counts = [0] * workers
    deadline = time.perf_counter() + seconds

    def worker(i: int) -> None:
        n = 0
        while time.perf_counter() < deadline:
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(b"ping")
                got = 0
                while got < 4:
                    data = s.recv(16)
                    if not data:
                        break
                    got += len(data)
            n += 1
        counts[i] = n

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


def idle_memory(port: int, pid: int | None, n: int) -> float | None:
    """KiB of proxy RSS per idle (established, one round trip done) connection."""
    if pid is None:
        return None
    time.sleep(0.2)
    before = _rss_kib(pid)
    socks = []
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"hi")
            s.recv(16)
            socks.append(s)
        time.sleep(0.3)
        after = _rss_kib(pid)
    finally:
        for s in socks:
            s.close()
    return (after - before) / n


# -- proxies under test ----------------------------------------------------------------------------


def _haproxy_config(ports: dict[str, tuple[int, int]], splice: bool) -> str:
    lines = [
        "global",
        "    maxconn 4000",
        "defaults",
        "    mode tcp",
        "    timeout connect 5s",
        "    timeout client 1h",
        "    timeout server 1h",
    ]
    if splice:
        lines += ["    option splice-request", "    option splice-response"]
    for name, (listen, upstream) in ports.items():
        lines += [
            f"frontend fe_{name}",
            f"    bind 127.0.0.1:{listen}",
            f"    default_backend be_{name}",
            f"backend be_{name}",
            f"    server s1 127.0.0.1:{upstream}",
        ]
    return "\n".join(lines) + "\n"


def _start_haproxy(
    ports: dict[str, tuple[int, int]], splice: bool, tmp: Path
) -> subprocess.Popen[bytes]:
    cfg = tmp / ("haproxy-splice.cfg" if splice else "haproxy.cfg")
    cfg.write_text(_haproxy_config(ports, splice))
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL)
    return proc


def _start_resetguard(
    ports: dict[str, tuple[int, int]], tmp: Path, uvloop: bool
) -> subprocess.Popen[bytes]:
    cfg = tmp / "resetguard.json"
    cfg.write_text(
        json.dumps(
            {
                "api": None,
                "proxies": [
                    {"name": n, "listen": f"127.0.0.1:{lp}", "upstream": f"127.0.0.1:{up}"}
                    for n, (lp, up) in ports.items()
                ],
            }
        )
    )
    cmd = [sys.executable, "-m", "resetguard.cli", "proxy", "--config", str(cfg), "-q"]
    if uvloop:
        cmd.append("--uvloop")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL)


def measure(
    label: str, bulk_port: int, echo_port: int, pid: int | None, args: argparse.Namespace
) -> dict[str, object]:
    row: dict[str, object] = {"label": label}
    row["bulk1"] = bulk(bulk_port, 1, args.seconds)
    row["bulk4"] = bulk(bulk_port, 4, args.seconds)
    row["p50"], row["p99"] = pingpong(echo_port, args.rounds)
    row["churn"] = churn(echo_port, args.seconds)
    row["mem"] = idle_memory(echo_port, pid, args.idle)
    print(f"  {label}: {row}", file=sys.stderr, flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per bulk/churn measurement")
    parser.add_argument("--rounds", type=int, default=5000, help="ping-pong round trips")
    parser.add_argument("--idle", type=int, default=2000, help="idle connections for memory")
    parser.add_argument("--out", type=Path, help="write the Markdown section here")
    parser.add_argument("--only", help="comma-separated row labels to run")
    args = parser.parse_args()

    upstream = subprocess.Popen(
        [sys.executable, __file__, "--_upstream"], stdout=subprocess.PIPE, text=True
    )
    procs: list[subprocess.Popen[bytes]] = []
    rows: list[dict[str, object]] = []
    notes: list[str] = []
    try:
        assert upstream.stdout is not None
        up = json.loads(upstream.stdout.readline())
        with tempfile.TemporaryDirectory() as tmpdir:
            tmp = Path(tmpdir)
            setups: list[tuple[str, object]] = [("direct", None)]
            if shutil.which("haproxy"):
                setups += [("haproxy (default)", False), ("haproxy (splice)", True)]
            else:
                notes.append("haproxy rows skipped: no `haproxy` binary (apt-get install haproxy).")
            setups.append(("resetguard (asyncio)", "asyncio"))
            try:
                import uvloop  # type: ignore[import-not-found,unused-ignore]  # noqa: F401

                setups.append(("resetguard (uvloop)", "uvloop"))
            except ImportError:
                notes.append("uvloop row skipped: uvloop not installed (pip install uvloop).")
            only = set(args.only.split(",")) if args.only else None
            for label, kind in setups:
                if only and not any(o in label for o in only):
                    continue
                if kind is None:
                    rows.append(measure(label, up["bulk"], up["echo"], None, args))
                    continue
                ports = {"bulk": (_free_port(), up["bulk"]), "echo": (_free_port(), up["echo"])}
                if isinstance(kind, bool):
                    proc = _start_haproxy(ports, kind, tmp)
                else:
                    proc = _start_resetguard(ports, tmp, kind == "uvloop")
                procs.append(proc)
                try:
                    _wait_port(ports["bulk"][0])
                    _wait_port(ports["echo"][0])
                    rows.append(measure(label, ports["bulk"][0], ports["echo"][0], proc.pid, args))
                finally:
                    _stop(proc)
    finally:
        for proc in procs:
            _stop(proc)
        _stop(upstream)
    text = render(rows, notes, args)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


def render(rows: list[dict[str, object]], notes: list[str], args: argparse.Namespace) -> str:
    direct = next((r for r in rows if r["label"] == "direct"), None)
    splice = next((r for r in rows if r["label"] == "haproxy (splice)"), None)
    default = next((r for r in rows if r["label"] == "haproxy (default)"), None)

    def ms(v: object) -> str:
        return f"{float(v):,.0f}"  # type: ignore[arg-type]

    out = [
        "## Fault proxy (`resetguard proxy`)",
        "",
        f"`python benchmarks/proxy_bench.py` — {os.cpu_count()} cores, Python "
        f"{sys.version.split()[0]}, {args.seconds:g} s per bulk/churn row, "
        f"{args.rounds} ping-pongs, {args.idle} idle connections. Bulk is server -> client "
        "through the proxy; latency is a 100-byte ping-pong round trip; churn is "
        "connect + one round trip + close with 2 client threads; memory is the proxy "
        "process's RSS growth per idle connection.",
        "",
        "| setup | bulk 1 conn MB/s | bulk 4 conns MB/s | RTT p50 µs | RTT p99 µs "
        "| added p50 / p99 µs | churn conn/s | KiB per idle conn |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        added = "—"
        if direct is not None and r is not direct:
            added = (
                f"+{float(r['p50']) - float(direct['p50']):.0f} / "  # type: ignore[arg-type]
                f"+{float(r['p99']) - float(direct['p99']):.0f}"  # type: ignore[arg-type]
            )
        mem = "—" if r["mem"] is None else f"{float(r['mem']):.1f}"  # type: ignore[arg-type]
        out.append(
            f"| {r['label']} | {ms(r['bulk1'])} | {ms(r['bulk4'])} | {float(r['p50']):.0f} | "  # type: ignore[arg-type]
            f"{float(r['p99']):.0f} | {added} | {ms(r['churn'])} | {mem} |"  # type: ignore[arg-type]
        )
    ours = [r for r in rows if str(r["label"]).startswith("resetguard")]
    if ours and (splice or default):
        out.append("")
        for r in ours:
            parts = []
            if splice:
                parts.append(
                    f"bulk {float(r['bulk1']) / float(splice['bulk1']):.0%} (1 conn) / "  # type: ignore[arg-type]
                    f"{float(r['bulk4']) / float(splice['bulk4']):.0%} (4 conns) of haproxy splice"  # type: ignore[arg-type]
                )
            ref = splice or default
            assert ref is not None
            parts.append(
                f"churn {float(r['churn']) / float(ref['churn']):.0%} of {ref['label']}"  # type: ignore[arg-type]
            )
            out.append(f"- {r['label']}: " + "; ".join(parts) + ".")
    for note in notes:
        out.append(f"- {note}")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["--_upstream"]:
        _serve_upstream()
    else:
        raise SystemExit(main())
