"""Cost of resetguard.classify() on real exception chains, in ns per call.

Run: python benchmarks/bench_classify.py [--quick]

The exceptions are produced for real, once, before timing: a ConnectionResetError from a
loopback RST, an httpx.ReadError from an httpx request to a server that RSTs (its
ConnectionResetError sits on a suppressed __context__), a SQLAlchemy OperationalError
wrapping psycopg's AdminShutdown from a pg_terminate_backend'ed session (needs the local
PostgreSQL; skipped when absent), and a KeyError. Reported: best-of-N ns per call.
"""

from __future__ import annotations

import argparse
import socket
import struct
import threading
import time
import timeit
from collections.abc import Callable

from resetguard._classify import classify


def _rst_server() -> tuple[socket.socket, threading.Thread]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(3)

    def serve() -> None:
        for _ in range(2):
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def real_exceptions() -> dict[str, BaseException]:
    found: dict[str, BaseException] = {}
    listener, thread = _rst_server()
    port = listener.getsockname()[1]
    sock = socket.create_connection(("127.0.0.1", port), timeout=2)
    sock.sendall(b"x")
    try:
        sock.recv(1)
    except ConnectionResetError as exc:
        found["ConnectionResetError"] = exc
    sock.close()
    try:
        import httpx

        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
        except httpx.ReadError as exc:
            found["httpx.ReadError chain"] = exc
    except ImportError:
        pass
    thread.join(3)
    listener.close()
    try:
        import psycopg
        from sqlalchemy import create_engine, text

        app = "rg-bench-classify"
        engine = create_engine(
            "postgresql+psycopg://postgres@127.0.0.1:5432/test",
            pool_size=1,
            connect_args={"application_name": app, "connect_timeout": 2},
        )
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        with psycopg.connect("host=127.0.0.1 dbname=test user=postgres", autocommit=True) as adm:
            adm.execute(
                "SELECT pg_terminate_backend(pid, 3000) FROM pg_stat_activity"
                " WHERE application_name = %s",
                (app,),
            )
        time.sleep(0.1)
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            found["SQLAlchemy OperationalError -> psycopg"] = exc
        engine.dispose()
    except Exception as exc:  # no PostgreSQL here: report without this case
        print(f"(skipping the SQLAlchemy case: {type(exc).__name__}: {exc})")
    found["KeyError"] = KeyError("user_id")
    return found


def bench(fn: Callable[[], object], number: int, repeat: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    args = parser.parse_args()
    number, repeat = (2_000, 3) if args.quick else (20_000, 7)
    cases = real_exceptions()
    # Calibration on this (shared, loaded) machine: compare ratios within one run.
    from resetguard._classify import Failure, Kind

    noop_ns = bench(lambda: None, number, repeat)
    failure_ns = bench(lambda: Failure(kind=Kind.RESET, code="ECONNRESET"), number, repeat)
    print(f"{'(calibration) empty call':42s} {noop_ns:9.0f}")
    print(f"{'(calibration) Failure(...) construction':42s} {failure_ns:9.0f}")
    print(f"{'exception':42s} {'ns/call':>9s}  classification")
    for name, exc in cases.items():
        failure = classify(exc)
        ns = bench(lambda exc=exc: classify(exc), number, repeat)  # type: ignore[misc]
        what = "None" if failure is None else f"{failure.kind.value}/{failure.phase.value}"
        print(f"{name:42s} {ns:9.0f}  {what} ({type(exc).__qualname__})")


if __name__ == "__main__":
    main()
