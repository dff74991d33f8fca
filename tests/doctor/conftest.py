"""Loopback servers with known idle behaviour, for the doctor's tests.

``IdleHttpServer`` speaks just enough HTTP/1.1 and closes a connection that stayed idle
for ``idle_close`` seconds after its last response, with FIN or RST; it records when it
did, so tests compare the doctor's measurement with the server's own clock.
"""

from __future__ import annotations

import select
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

Mode = Literal["fin", "rst", "never", "close-each", "broken"]


@dataclass
class IdleHttpServer:
    """``mode``: fin/rst close idle connections after ``idle_close``; ``never`` keeps them;
    ``close-each`` answers with ``Connection: close``; ``broken`` says keep-alive but
    closes right after the response."""

    mode: Mode
    idle_close: float = 1.5
    keep_alive_header: str | None = None
    tls: ssl.SSLContext | None = None
    closes: list[tuple[str, float]] = field(default_factory=list)
    requests: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._acceptor = threading.Thread(target=self._accept, name="idle-http-accept")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> IdleHttpServer:
        self._acceptor.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._acceptor.join(5)
        self._listener.close()
        for thread in self._threads:
            thread.join(5)
        assert not any(t.is_alive() for t in [self._acceptor, *self._threads])

    def _accept(self) -> None:
        deadline = time.monotonic() + 120  # bound the server's life whatever happens
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._serve, args=(conn,), name="idle-http-conn")
            self._threads.append(thread)
            thread.start()

    def _close(self, conn: socket.socket, how: str, idle: float) -> None:
        if how == "rst":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        with self._lock:
            self.closes.append((how, idle))

    def _serve(self, conn: socket.socket) -> None:
        if self.tls is not None:
            conn.settimeout(5)
            try:
                conn = self.tls.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError):
                conn.close()  # the client refused our certificate: its retry comes next
                return
        buf = b""
        last = time.monotonic()
        end = last + 60
        try:
            while not self._stop.is_set() and time.monotonic() < end:
                pending = isinstance(conn, ssl.SSLSocket) and conn.pending() > 0
                if b"\r\n\r\n" in buf:
                    _head, buf = buf.split(b"\r\n\r\n", 1)
                    with self._lock:
                        self.requests += 1
                    self._respond(conn)
                    last = time.monotonic()
                    if self.mode in ("close-each", "broken"):
                        self._close(conn, "fin", 0.0)
                        return
                    continue
                wait = 0.05
                if self.mode in ("fin", "rst"):
                    remaining = last + self.idle_close - time.monotonic()
                    if remaining <= 0:
                        self._close(conn, self.mode, time.monotonic() - last)
                        return
                    wait = min(wait, remaining)
                readable, _, _ = select.select([conn], [], [], 0 if pending else wait)
                if readable or pending:
                    try:
                        data = conn.recv(65536)
                    except ssl.SSLWantReadError:
                        continue
                    except (ConnectionError, ssl.SSLError):
                        break
                    if not data:
                        break
                    buf += data
        finally:
            if conn.fileno() != -1:
                conn.close()

    def _respond(self, conn: socket.socket) -> None:
        body = b"hello from the idle server\n"
        headers = [
            "HTTP/1.1 200 OK",
            "Content-Type: text/plain",
            f"Content-Length: {len(body)}",
            "Server: idle-test",
        ]
        if self.mode == "close-each":
            headers.append("Connection: close")
        if self.keep_alive_header:
            headers.append(f"Keep-Alive: {self.keep_alive_header}")
        conn.sendall(("\r\n".join(headers) + "\r\n\r\n").encode() + body)


@pytest.fixture
def http_server() -> Iterator[type[IdleHttpServer]]:
    """Factory: ``http_server(mode, ...)`` starts a server that is stopped after the test."""
    started: list[IdleHttpServer] = []

    def make(*args: object, **kwargs: object) -> IdleHttpServer:
        server = IdleHttpServer(*args, **kwargs).start()  # type: ignore[arg-type]
        started.append(server)
        return server

    yield make  # type: ignore[misc]
    for server in started:
        server.stop()


@pytest.fixture
def private_redis(redis_url: str, unused_port: int) -> Iterator[str]:
    """A private redis-server (``timeout 1``) on a free port, so no global setting changes.

    Depends on ``redis_url`` so it skips (or fails under CI) like the other Redis tests.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server binary not found")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(unused_port),
            "--bind",
            "127.0.0.1",
            "--timeout",
            "1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", unused_port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            pytest.fail("private redis-server did not start")
        yield f"redis://127.0.0.1:{unused_port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 valid for 10 days: (cert path, key path)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl binary not found")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "10",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return str(cert), str(key)


@pytest.fixture
def server_tls(tls_cert: tuple[str, str]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_cert)
    return context


def check_schema(value: object, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Errors of ``value`` against the subset of JSON Schema that JSON_SCHEMA uses."""
    errors: list[str] = []
    types: dict[str, type | tuple[type, ...]] = {
        "object": dict,
        "array": list,
        "string": str,
        "number": (int, float),
        "integer": int,
        "boolean": bool,
        "null": type(None),
    }
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: {value!r} != {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']!r}")
    if "type" in schema:
        wanted = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        ok = any(
            isinstance(value, types[t])
            and not (t in ("number", "integer") and isinstance(value, bool))
            for t in wanted
        )
        if not ok:
            errors.append(f"{path}: {value!r} is not {wanted}")
            return errors
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path}: missing {key!r}")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                errors += check_schema(item, props[key], f"{path}.{key}")
            elif extra is False:
                errors.append(f"{path}: unexpected {key!r}")
            elif isinstance(extra, dict):
                errors += check_schema(item, extra, f"{path}.{key}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            errors += check_schema(item, schema["items"], f"{path}[{index}]")
    return errors


@pytest.fixture
def schema_errors() -> Callable[[object], list[str]]:
    """``schema_errors(obj)``: what is wrong with ``obj`` as a doctor JSON report."""
    from resetguard.doctor import JSON_SCHEMA

    return lambda value: check_schema(value, JSON_SCHEMA)
