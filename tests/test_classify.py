"""classify() on constructed exception chains: the walk, its bounds, registration, the
docs' examples. The real drivers' exceptions are tested in tests/driver_faults/."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest

from resetguard._classify import (
    Failure,
    Kind,
    Phase,
    classify,
    register_classifier,
    unregister_classifier,
)

DOC = Path(__file__).resolve().parent.parent / "docs" / "classify.md"


def foreign(module: str, name: str, *bases: type[BaseException]) -> type[BaseException]:
    """An exception class that looks like it comes from ``module`` (no import of it)."""
    return type(name, bases or (Exception,), {"__module__": module})


def raise_from(
    outer: BaseException, inner: BaseException, *, suppress: bool = False
) -> BaseException:
    try:
        try:
            raise inner
        except BaseException:
            if suppress:
                raise outer from None
            raise outer  # noqa: B904 - implicit chaining on purpose
    except BaseException as exc:
        return exc
    raise AssertionError


# --------------------------------------------------------------------------- stdlib


@pytest.mark.parametrize(
    ("exc", "kind", "phase", "code"),
    [
        (ConnectionResetError(104, "reset"), Kind.RESET, Phase.UNKNOWN, "ECONNRESET"),
        (BrokenPipeError(32, "pipe"), Kind.BROKEN_PIPE, Phase.UNKNOWN, "EPIPE"),
        (ConnectionAbortedError(103, "abort"), Kind.ABORTED, Phase.UNKNOWN, "ECONNABORTED"),
        (ConnectionRefusedError(111, "refused"), Kind.REFUSED, Phase.CONNECT, "ECONNREFUSED"),
        (OSError(113, "no route"), Kind.UNREACHABLE, Phase.CONNECT, "EHOSTUNREACH"),
        (OSError(101, "net unreachable"), Kind.UNREACHABLE, Phase.CONNECT, "ENETUNREACH"),
        (TimeoutError(), Kind.TIMEOUT, Phase.UNKNOWN, None),
        (ConnectionResetError(), Kind.RESET, Phase.UNKNOWN, "ECONNRESET"),
        (BrokenPipeError(), Kind.BROKEN_PIPE, Phase.SEND, "EPIPE"),
    ],
)
def test_stdlib_errnos(exc: BaseException, kind: Kind, phase: Phase, code: str | None) -> None:
    f = classify(exc)
    assert f is not None
    assert (f.kind, f.phase, f.code, f.source) == (kind, phase, code, "stdlib")


@pytest.mark.parametrize("exc", [OSError(2, "ENOENT"), PermissionError(13, "denied"), OSError()])
def test_other_oserrors_are_not_faults(exc: BaseException) -> None:
    assert classify(exc) is None


def test_failure_helpers() -> None:
    f = classify(ConnectionRefusedError(111, "refused"))
    assert f is not None
    assert f.nothing_sent
    assert f.describe() == "connection refused (ECONNREFUSED)"  # stdlib is the default source
    g = f.with_(reused=True)
    assert g.reused is True
    assert f.reused is None
    assert g.kind is f.kind
    assert Failure(kind=Kind.TIMEOUT, source="", code=None).describe() == "timeout"
    with pytest.raises(AttributeError):
        f.kind = Kind.RESET  # type: ignore[misc]


# --------------------------------------------------------------------------- the walk


def test_cause() -> None:
    assert classify(foreign("app.errors", "CallFailed")("x")) is None
    wrapper = foreign("app.errors", "CallFailed")("x")
    wrapper.__cause__ = ConnectionResetError(104, "reset")
    f = classify(wrapper)
    assert f is not None
    assert f.kind is Kind.RESET
    assert f.errno == 104


def test_suppressed_context_is_read() -> None:
    read_error = foreign("httpx", "ReadError")
    exc = raise_from(read_error(""), ConnectionResetError(104, "reset"), suppress=True)
    assert exc.__suppress_context__
    assert exc.__cause__ is None
    f = classify(exc)
    assert f is not None
    assert (f.kind, f.source, f.code, f.errno) == (Kind.RESET, "httpx", "ECONNRESET", 104)


def test_sqlalchemy_orig_and_connection_invalidated() -> None:
    sa_error = foreign(
        "sqlalchemy.exc", "OperationalError", foreign("sqlalchemy.exc", "DBAPIError")
    )
    admin_shutdown = foreign("psycopg.errors", "AdminShutdown")
    driver = admin_shutdown("terminating connection due to administrator command")
    driver.sqlstate = "57P01"  # type: ignore[attr-defined]
    exc = sa_error("(psycopg.errors.AdminShutdown) ...")
    exc.orig = driver  # type: ignore[attr-defined]
    exc.connection_invalidated = True  # type: ignore[attr-defined]
    f = classify(exc)
    assert f is not None
    assert (f.kind, f.phase, f.source, f.code) == (
        Kind.CLOSED,
        Phase.UNKNOWN,
        "sqlalchemy",
        "57P01",
    )
    # A wrapped server-reported SQL error is not a connection fault.
    syntax = foreign("psycopg.errors", "SyntaxError")("syntax error")
    syntax.sqlstate = "42601"  # type: ignore[attr-defined]
    prog = foreign("sqlalchemy.exc", "ProgrammingError", foreign("sqlalchemy.exc", "DBAPIError"))
    wrapped = prog("...")
    wrapped.orig = syntax  # type: ignore[attr-defined]
    assert classify(wrapped) is None


def test_args0() -> None:
    exc = foreign("somelib", "Failure")(ConnectionAbortedError(103, "aborted"))
    f = classify(exc)
    assert f is not None
    assert f.kind is Kind.ABORTED


def test_urllib3_reason_attribute() -> None:
    max_retry = foreign("urllib3.exceptions", "MaxRetryError")
    exc = max_retry("pool", "url")
    exc.reason = ConnectionRefusedError(111, "refused")  # type: ignore[attr-defined]
    f = classify(exc)
    assert f is not None
    assert (f.kind, f.phase, f.source) == (Kind.REFUSED, Phase.CONNECT, "urllib3")


def test_properties_are_not_evaluated() -> None:
    calls: list[str] = []

    class Noisy(Exception):
        __module__ = "websockets.exceptions"

        @property
        def reason(self) -> BaseException:
            calls.append("reason")
            return ConnectionResetError(104, "reset")

    classify(Noisy())
    assert calls == []


def test_forks_by_name() -> None:
    for module in ("httpx2._exceptions", "httpxyz", "httpcore._exceptions"):
        exc = foreign(module, "RemoteProtocolError")(
            "Server disconnected without sending a response."
        )
        f = classify(exc)
        assert f is not None
        assert (f.kind, f.phase, f.source) == (Kind.CLOSED, Phase.AWAIT, "httpx")


def test_outermost_not_a_fault_wins() -> None:
    status = foreign("httpx", "HTTPStatusError")
    exc = raise_from(status("404"), ConnectionResetError(104, "reset"))
    assert classify(exc) is None


def test_plain_error_context_not_inspected() -> None:
    exc = raise_from(KeyError("k"), ConnectionResetError(104, "reset"))
    assert exc.__context__ is not None
    assert classify(exc) is None


def test_cyclic_chain_is_bounded() -> None:
    a = foreign("app", "A")("a")
    b = foreign("app", "B")("b")
    a.__context__ = b
    b.__context__ = a
    b.__cause__ = a
    assert classify(a) is None
    c = foreign("app", "C")("c")
    b.__cause__ = c
    c.__context__ = ConnectionResetError(104, "reset")
    c.__cause__ = a
    f = classify(a)
    assert f is not None
    assert f.kind is Kind.RESET


def test_long_chain_is_cut() -> None:
    node: BaseException = ConnectionResetError(104, "reset")
    for i in range(200):
        outer = foreign("app", f"Layer{i}")(f"layer {i}")
        outer.__cause__ = node
        node = outer
    start = time.perf_counter()
    assert classify(node) is None  # the reset is 200 levels down: past the bound
    assert time.perf_counter() - start < 0.5
    shallow: BaseException = ConnectionResetError(104, "reset")
    for i in range(10):
        outer = foreign("app", f"Layer{i}")(f"layer {i}")
        outer.__cause__ = shallow
        shallow = outer
    f = classify(shallow)
    assert f is not None
    assert f.kind is Kind.RESET


def test_exception_group_is_not_a_fault() -> None:
    import builtins

    group_type = getattr(builtins, "ExceptionGroup", None)
    if group_type is None:
        pytest.skip("ExceptionGroup needs Python 3.11")
    assert classify(group_type("many", [ValueError("x")])) is None


# --------------------------------------------------------------------------- drivers by name


def test_pg_sqlstates() -> None:
    err = foreign("psycopg", "OperationalError")
    for state, kind, phase in (
        ("57P01", Kind.CLOSED, Phase.UNKNOWN),
        ("57P05", Kind.CLOSED, Phase.CONNECT),
        ("57P03", Kind.REFUSED, Phase.CONNECT),
        ("53300", Kind.REFUSED, Phase.CONNECT),
        ("08006", Kind.CLOSED, Phase.UNKNOWN),
    ):
        exc = err("x")
        exc.sqlstate = state  # type: ignore[attr-defined]
        f = classify(exc)
        assert f is not None, state
        assert (f.kind, f.phase, f.code) == (kind, phase, state), state
    exc = err("x")
    exc.sqlstate = "40001"  # type: ignore[attr-defined]
    assert classify(exc) is None


def test_asyncpg_08003_refined_by_reset() -> None:
    cdne = foreign("asyncpg.exceptions", "ConnectionDoesNotExistError")
    exc = cdne("connection was closed in the middle of operation")
    exc.sqlstate = "08003"  # type: ignore[attr-defined]
    exc.__cause__ = ConnectionResetError(104, "reset")
    f = classify(exc)
    assert f is not None
    assert (f.kind, f.phase, f.code) == (Kind.RESET, Phase.UNKNOWN, "08003")


def test_mysql_codes() -> None:
    op = foreign("pymysql.err", "OperationalError")
    f = classify(op(2013, "Lost connection to MySQL server during query"))
    assert f is not None
    assert (f.kind, f.phase, f.code) == (Kind.CLOSED, Phase.UNKNOWN, "2013")
    f = classify(op(2003, "Can't connect"))
    assert f is not None
    assert (f.kind, f.phase) == (Kind.REFUSED, Phase.CONNECT)
    assert classify(foreign("pymysql.err", "ProgrammingError")(1064, "syntax")) is None
    assert classify(op(1205, "Lock wait timeout exceeded")) is None


def test_redis_and_pymongo_text() -> None:
    conn_error = foreign("redis.exceptions", "ConnectionError")
    f = classify(conn_error("Error 111 connecting to 127.0.0.1:1. Connection refused."))
    assert f is not None
    assert (f.kind, f.phase, f.source) == (Kind.REFUSED, Phase.CONNECT, "redis")
    f = classify(conn_error("Connection closed by server."))
    assert f is not None
    assert (f.kind, f.phase) == (Kind.CLOSED, Phase.UNKNOWN)
    sste = foreign("pymongo.errors", "ServerSelectionTimeoutError")
    f = classify(sste("127.0.0.1:1: [Errno 104] Connection reset by peer, Timeout: 0.3s"))
    assert f is not None
    assert (f.kind, f.phase) == (Kind.RESET, Phase.CONNECT)


# --------------------------------------------------------------------------- registration


class Flaky(Exception):
    pass


def mine(exc: BaseException) -> Failure | None:
    if isinstance(exc, Flaky):
        return Failure(kind=Kind.CLOSED, phase=Phase.CONNECT, source="mine")
    return None


def test_register_and_unregister() -> None:
    assert classify(Flaky()) is None
    register_classifier(mine)
    try:
        f = classify(Flaky())
        assert f is not None
        assert f.source == "mine"
        deep = raise_from(foreign("app", "Outer")("outer"), Flaky())
        f = classify(deep)
        assert f is not None
        assert f.source == "mine"
        # Built-in rules still apply to what the user classifier does not know.
        f = classify(ConnectionResetError(104, "reset"))
        assert f is not None
        assert f.source == "stdlib"
    finally:
        unregister_classifier(mine)
    assert classify(Flaky()) is None
    with pytest.raises(ValueError, match="not registered"):
        unregister_classifier(mine)
    with pytest.raises(TypeError, match="callable"):
        register_classifier("not a function")  # type: ignore[arg-type]


def test_registration_is_thread_safe() -> None:
    def make(i: int):  # type: ignore[no-untyped-def]
        def c(exc: BaseException) -> Failure | None:
            return None

        c.__name__ = f"c{i}"
        return c

    classifiers = [make(i) for i in range(40)]

    def worker(chunk: list) -> None:  # type: ignore[type-arg]
        for c in chunk:
            register_classifier(c)
            classify(ConnectionResetError(104, "reset"))
            unregister_classifier(c)

    threads = [threading.Thread(target=worker, args=(classifiers[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    for c in classifiers:
        with pytest.raises(ValueError, match="not registered"):
            unregister_classifier(c)


# --------------------------------------------------------------------------- docs


BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def _doc_blocks() -> list[str]:
    return BLOCK.findall(DOC.read_text()) if DOC.exists() else []


@pytest.mark.parametrize("index", range(len(_doc_blocks())))
def test_docs_classify_examples_run(index: int) -> None:
    code = _doc_blocks()[index]
    exec(compile(code, f"docs/classify.md[{index}]", "exec"), {"__name__": f"classify_doc_{index}"})


def test_docs_classify_has_examples() -> None:
    assert len(_doc_blocks()) >= 3


def test_plain_oserror_results_are_reused_only_when_nothing_is_attached() -> None:
    first = classify(ConnectionResetError(104, "reset"))
    again = classify(ConnectionResetError(104, "other text"))
    assert first is not None
    assert again is first
    with_orig = ConnectionResetError(104, "reset")
    with_orig.reason = ConnectionRefusedError(111, "refused")  # type: ignore[attr-defined]
    f = classify(with_orig)
    assert f is not None
    assert f.kind is Kind.RESET
    assert f is not first
    chained = raise_from(ConnectionResetError(104, "reset"), TimeoutError())
    f = classify(chained)
    assert f is not None
    assert f.kind is Kind.RESET
    assert f is not first
