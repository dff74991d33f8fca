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
import statistics
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


def pingpong_interleaved(ports: list[int], rounds: int) -> list[tuple[float, float]]:
    """p50 and p99 round trip in µs of 100-byte messages, one connection per port; the
    round trips alternate between the ports so that machine noise hits all alike."""
    socks = []
    for port in ports:
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(s)
    times: list[list[int]] = [[] for _ in ports]
    clock = time.perf_counter_ns
    try:
        for i in range(rounds + 500):
            for s, samples in zip(socks, times, strict=True):
                t0 = clock()
                s.sendall(PING)
                got = 0
                while got < len(PING):
                    got += len(s.recv(4096))
                if i >= 500:
                    samples.append(clock() - t0)
    finally:
        for s in socks:
            s.close()
    out = []
    for samples in times:
        samples.sort()
        out.append((samples[len(samples) // 2] / 1000, samples[int(len(samples) * 0.99)] / 1000))
    return out


def _churn_once(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"ping")
        got = 0
        while got < 4:
            data = s.recv(16)
            if not data:
                break
            got += len(data)


def churn_interleaved(ports: list[int], seconds: float, workers: int = 2) -> list[float]:
    """Connections per second per port (connect, one 4-byte round trip, close) by
    ``workers`` threads that alternate between the ports; each port is charged the time
    spent on its own connections."""
    spent = [[0.0] * len(ports) for _ in range(workers)]
    counts = [[0] * len(ports) for _ in range(workers)]
    deadline = time.perf_counter() + seconds * len(ports)

    def worker(w: int) -> None:
        clock = time.perf_counter
        while clock() < deadline:
            for i, port in enumerate(ports):
                t0 = clock()
                _churn_once(port)
                spent[w][i] += clock() - t0
                counts[w][i] += 1

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rates = []
    for i in range(len(ports)):
        done = sum(counts[w][i] for w in range(workers))
        busy = sum(spent[w][i] for w in range(workers)) / workers  # wall time, per thread
        rates.append(done / busy)
    return rates


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


def run_rounds(
    setups: list[tuple[str, int, int, int | None]], args: argparse.Namespace
) -> list[dict[str, object]]:
    """Bulk: every setup in each of ``args.rounds`` rounds (the order rotates), medians.
    Latency and churn: operations alternate between the setups, so that noise from the
    rest of the machine hits every setup alike; medians over the rounds."""
    labels = [label for label, *_ in setups]
    samples: dict[str, dict[str, list[float]]] = {
        label: {"bulk1": [], "bulk4": [], "p50": [], "p99": [], "churn": []} for label in labels
    }
    echo_ports = [echo for _, _, echo, _ in setups]
    for rnd in range(args.rounds):
        order = setups[rnd % len(setups) :] + setups[: rnd % len(setups)]
        for label, bulk_port, _echo, _pid in order:
            samples[label]["bulk1"].append(bulk(bulk_port, 1, args.seconds))
            samples[label]["bulk4"].append(bulk(bulk_port, 4, args.seconds))
        latencies = pingpong_interleaved(echo_ports, args.pings)
        rates = churn_interleaved(echo_ports, args.seconds)
        for label, (p50, p99), rate in zip(labels, latencies, rates, strict=True):
            got = samples[label]
            got["p50"].append(p50)
            got["p99"].append(p99)
            got["churn"].append(rate)
            line = ", ".join(f"{k} {v[-1]:,.1f}" for k, v in got.items())
            print(f"  round {rnd + 1} {label}: {line}", file=sys.stderr, flush=True)
    rows = []
    direct = samples.get("direct")
    for label, _bulk, echo_port, pid in setups:
        row: dict[str, object] = {"label": label}
        for key, values in samples[label].items():
            row[key] = statistics.median(values)
        if direct is not None and label != "direct":
            for q in ("p50", "p99"):
                diffs = [a - b for a, b in zip(samples[label][q], direct[q], strict=True)]
                row[f"added_{q}"] = statistics.median(diffs)
        row["mem"] = idle_memory(echo_port, pid, args.idle)
        rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per bulk/churn sample")
    parser.add_argument("--pings", type=int, default=3000, help="ping-pongs per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds")
    parser.add_argument("--idle", type=int, default=2000, help="idle connections for memory")
    parser.add_argument("--out", type=Path, help="write the Markdown section here")
    parser.add_argument("--only", help="comma-separated substrings of the rows to run")
    args = parser.parse_args()

    upstream = subprocess.Popen(
        [sys.executable, __file__, "--_upstream"], stdout=subprocess.PIPE, text=True
    )
    procs: list[subprocess.Popen[bytes]] = []
    notes: list[str] = []
    try:
        assert upstream.stdout is not None
        up = json.loads(upstream.stdout.readline())
        with tempfile.TemporaryDirectory() as tmpdir:
            tmp = Path(tmpdir)
            kinds: list[tuple[str, object]] = [("direct", None)]
            if shutil.which("haproxy"):
                kinds += [("haproxy (default)", False), ("haproxy (splice)", True)]
            else:
                notes.append("haproxy rows skipped: no `haproxy` binary (apt-get install haproxy).")
            kinds.append(("resetguard (asyncio)", "asyncio"))
            try:
                import uvloop  # type: ignore[import-not-found,unused-ignore]  # noqa: F401

                kinds.append(("resetguard (uvloop)", "uvloop"))
            except ImportError:
                notes.append("uvloop row skipped: uvloop not installed (pip install uvloop).")
            if args.only:
                wanted = args.only.split(",")
                kinds = [k for k in kinds if k[0] == "direct" or any(w in k[0] for w in wanted)]
            setups: list[tuple[str, int, int, int | None]] = []
            for label, kind in kinds:
                if kind is None:
                    setups.append((label, up["bulk"], up["echo"], None))
                    continue
                ports = {"bulk": (_free_port(), up["bulk"]), "echo": (_free_port(), up["echo"])}
                if isinstance(kind, bool):
                    proc = _start_haproxy(ports, kind, tmp)
                else:
                    proc = _start_resetguard(ports, tmp, kind == "uvloop")
                procs.append(proc)
                _wait_port(ports["bulk"][0])
                _wait_port(ports["echo"][0])
                setups.append((label, ports["bulk"][0], ports["echo"][0], proc.pid))
            rows = run_rounds(setups, args)
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
    by_label = {str(r["label"]): r for r in rows}
    splice = by_label.get("haproxy (splice)")
    default = by_label.get("haproxy (default)")

    def num(row: dict[str, object], key: str) -> float:
        value = row[key]
        assert isinstance(value, float | int)
        return float(value)

    out = [
        "## Fault proxy (`resetguard proxy`)",
        "",
        f"`python benchmarks/proxy_bench.py` — {os.cpu_count()} cores, Python "
        f"{sys.version.split()[0]}, medians of {args.rounds} rounds. Bulk: server -> client "
        f"through the proxy, {args.seconds:g} s per sample, setups one after the other "
        "(order rotating by round). Latency: 100-byte ping-pong round trips "
        f"({args.pings} per setup and round) and churn: connect + one round trip + close "
        f"(2 client threads, {args.seconds:g} s per setup and round), both alternating "
        "between the setups operation by operation so that load from the rest of the "
        "machine hits all alike; added latency is the difference to direct within a round. "
        f"Memory: growth of the proxy process's RSS over {args.idle} idle connections.",
        "",
        "| setup | bulk 1 conn MB/s | bulk 4 conns MB/s | RTT p50 µs | RTT p99 µs "
        "| added p50 / p99 µs | churn conn/s | KiB per idle conn |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        added = "—"
        if "added_p50" in r:
            added = f"{num(r, 'added_p50'):+.0f} / {num(r, 'added_p99'):+.0f}"
        mem = "—" if r["mem"] is None else f"{num(r, 'mem'):.1f}"
        out.append(
            f"| {r['label']} | {num(r, 'bulk1'):,.0f} | {num(r, 'bulk4'):,.0f} "
            f"| {num(r, 'p50'):.0f} | {num(r, 'p99'):.0f} | {added} "
            f"| {num(r, 'churn'):,.0f} | {mem} |"
        )
    ours = [r for r in rows if str(r["label"]).startswith("resetguard")]
    ref = splice or default
    if ours and ref is not None:
        out.append("")
        for r in ours:
            parts = [
                f"bulk {num(r, 'bulk1') / num(ref, 'bulk1'):.0%} (1 conn) and "
                f"{num(r, 'bulk4') / num(ref, 'bulk4'):.0%} (4 conns) of {ref['label']}",
                f"churn {num(r, 'churn') / num(ref, 'churn'):.0%} of {ref['label']}",
            ]
            out.append(f"- {r['label']}: " + "; ".join(parts) + ".")
    for note in notes:
        out.append(f"- {note}")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["--_upstream"]:
        _serve_upstream()
    else:
        raise SystemExit(main())
