"""Fault classification: is this exception a connection fault, and which one?

:func:`classify` turns any exception into a :class:`Failure` (or ``None`` when it is not a
connection fault). It never imports the libraries it recognises: it reads module and class
names along the MRO, errnos, SQLSTATEs, MySQL codes and pymongo labels, and walks the
chain (``__cause__``, ``__context__`` even when suppressed, SQLAlchemy's ``.orig``, urllib3's
``.reason`` and ``args[0]``), because drivers hide the socket error in different places
(see ``shared/research/driver-faults.md``).

Example::

    >>> import resetguard
    >>> f = resetguard.classify(ConnectionResetError(104, "Connection reset by peer"))
    >>> f.kind, f.code
    (<Kind.RESET: 'reset'>, 'ECONNRESET')
    >>> resetguard.classify(KeyError("x")) is None
    True
"""

from __future__ import annotations

import enum
import errno as _errno
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import NamedTuple

__all__ = [
    "Classifier",
    "Failure",
    "Kind",
    "Phase",
    "classify",
    "register_classifier",
    "unregister_classifier",
]


class Kind(str, enum.Enum):
    """What went wrong with the connection."""

    RESET = "reset"  #: ECONNRESET: the peer sent a TCP RST
    BROKEN_PIPE = "broken_pipe"  #: EPIPE: we wrote to a connection the peer had closed
    ABORTED = "aborted"  #: ECONNABORTED
    REFUSED = "refused"  #: ECONNREFUSED, or the server refused the session (overload, startup)
    TIMEOUT = "timeout"  #: connect / read / write / pool timeout
    CLOSED = "closed"  #: peer closed (FIN / EOF / session terminated) before a full answer
    DNS = "dns"  #: name resolution failed
    TLS = "tls"  #: handshake or certificate failure
    UNREACHABLE = "unreachable"  #: EHOSTUNREACH / ENETUNREACH / ENETDOWN
    PROTOCOL = "protocol"  #: the peer spoke garbage (malformed response)

    def describe(self) -> str:
        """Human wording used in logs: ``connection reset``, ``broken pipe`` …"""
        return _KIND_TEXT[self]


_KIND_TEXT = {
    Kind.RESET: "connection reset",
    Kind.BROKEN_PIPE: "broken pipe",
    Kind.ABORTED: "connection aborted",
    Kind.REFUSED: "connection refused",
    Kind.TIMEOUT: "timeout",
    Kind.CLOSED: "connection closed by peer",
    Kind.DNS: "DNS failure",
    Kind.TLS: "TLS failure",
    Kind.UNREACHABLE: "host unreachable",
    Kind.PROTOCOL: "protocol error",
}


class Phase(str, enum.Enum):
    """How far the operation got before the connection failed.

    ``CONNECT`` means the operation certainly did not reach the server (the connection
    could not be made, or was found dead before anything of the operation was sent, or
    the server reports it had ended the session before the operation arrived): retrying it
    can never duplicate a write.
    """

    CONNECT = "connect"
    SEND = "send"  #: the request was partly written
    AWAIT = "await"  #: fully sent, nothing received
    RECEIVE = "receive"  #: part of the response was received
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    """A classified connection fault.

    Attributes:
        kind: what went wrong (:class:`Kind`).
        phase: how far the operation got (:class:`Phase`).
        reused: whether the connection had served earlier requests, when known.
        source: the outermost library that raised it (``"httpx"``, ``"psycopg"``, ``"stdlib"``…).
        code: the driver's code: errno name (``"ECONNRESET"``), SQLSTATE (``"57P01"``),
            MySQL error number (``"2013"``) or pymongo label; ``None`` when there is none.
        errno: the OS errno found anywhere in the chain, when there is one.
        exc_type: qualified class name of the classified exception.
    """

    kind: Kind
    phase: Phase = Phase.UNKNOWN
    reused: bool | None = None
    source: str = "stdlib"
    code: str | None = None
    errno: int | None = None
    exc_type: str = ""

    @property
    def nothing_sent(self) -> bool:
        """True when the operation certainly never reached the server."""
        return self.phase is Phase.CONNECT

    def describe(self) -> str:
        """``connection reset (ECONNRESET, psycopg)`` — the wording used in logs and reports."""
        source = "" if self.source == "stdlib" else self.source
        detail = ", ".join(x for x in (self.code, source) if x)
        return f"{self.kind.describe()} ({detail})" if detail else self.kind.describe()

    def with_(self, **changes: object) -> Failure:
        """A copy with some fields replaced, e.g. ``failure.with_(reused=True)``."""
        return replace(self, **changes)  # type: ignore[arg-type]


Classifier = Callable[[BaseException], "Failure | None"]

# --------------------------------------------------------------------------- registry

_user_classifiers: tuple[Classifier, ...] = ()
_user_lock = threading.Lock()


def register_classifier(classifier: Classifier) -> None:
    """Add a classifier consulted before the built-in rules, for every exception in a chain.

    It returns a :class:`Failure` for exceptions it recognises and ``None`` otherwise.

    Example::

        >>> import resetguard
        >>> class FlakyBackend(Exception): ...
        >>> def mine(exc):
        ...     if isinstance(exc, FlakyBackend):
        ...         return resetguard.Failure(kind=resetguard.Kind.CLOSED, source="mine")
        ...     return None
        >>> resetguard.register_classifier(mine)
        >>> resetguard.classify(FlakyBackend()).source
        'mine'
        >>> resetguard.unregister_classifier(mine)
    """
    global _user_classifiers
    if not callable(classifier):
        raise TypeError(f"classifier must be callable, got {classifier!r}")
    with _user_lock:
        _user_classifiers = (*_user_classifiers, classifier)


def unregister_classifier(classifier: Classifier) -> None:
    """Remove a classifier added with :func:`register_classifier`."""
    global _user_classifiers
    with _user_lock:
        if classifier not in _user_classifiers:
            raise ValueError(f"classifier {classifier!r} is not registered")
        _user_classifiers = tuple(c for c in _user_classifiers if c is not classifier)


# --------------------------------------------------------------------------- the walk

_MAX_NODES = 24


def _children(exc: BaseException) -> Iterator[BaseException]:
    if exc.__cause__ is not None:
        yield exc.__cause__
    # Drivers chain implicitly, and httpx even suppresses the context: read it anyway.
    if exc.__context__ is not None:
        yield exc.__context__
    # Instance attributes only: getattr() would run properties, and some warn or compute
    # (websockets' deprecated ConnectionClosed.reason). SQLAlchemy's .orig, urllib3's
    # .reason and aiohttp's ._os_error are all stored on the instance.
    attrs = getattr(exc, "__dict__", None)
    if attrs:
        for attr in ("orig", "reason", "_os_error", "last_attempt_exception"):
            value = attrs.get(attr)
            if isinstance(value, BaseException):
                yield value
    args = getattr(exc, "args", None)
    if args and isinstance(args[0], BaseException):
        yield args[0]


def _walk(exc: BaseException) -> Iterator[BaseException]:
    """Breadth-first over the chain, outermost first, each exception once, bounded."""
    seen: set[int] = set()
    queue = [exc]
    while queue and len(seen) < _MAX_NODES:
        node = queue.pop(0)
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        queue.extend(_children(node))


# --------------------------------------------------------------------------- one node


class _Hint(NamedTuple):
    """What one exception in the chain says. ``weak`` kinds may be refined by deeper nodes.

    A NamedTuple, not a frozen dataclass: one is built per node on the failure path and
    tuple construction is several times cheaper.
    """

    kind: Kind | None
    phase: Phase | None = None
    source: str | None = None
    code: str | None = None
    weak: bool = False
    errno: int | None = None


_NOT_A_FAULT = _Hint(None)  # a recognised exception that is definitely not a connection fault


# module.Qualname of each class of the MRO, per type: computing it was most of the cost.
# Bounded, so classes created at runtime cannot pile up.
_TYPE_NAMES: dict[type, tuple[str, ...]] = {}


def _names(exc: BaseException) -> tuple[str, ...]:
    cls = type(exc)
    names = _TYPE_NAMES.get(cls)
    if names is None:
        names = tuple(f"{c.__module__}.{c.__qualname__}" for c in cls.__mro__)
        if len(_TYPE_NAMES) < 1024:
            _TYPE_NAMES[cls] = names
    return names


_SHORT: dict[tuple[tuple[str, ...], tuple[str, ...]], frozenset[str]] = {}


def _short(names: tuple[str, ...], *roots: str) -> frozenset[str]:
    """Class names (no module) along the MRO whose package is one of ``roots`` (default:
    the package of the exception's own class); cached per type, as the names are."""
    key = (names, roots)
    found = _SHORT.get(key)
    if found is None:
        wanted = roots or (_root(names[0]),)
        found = frozenset(n.rsplit(".", 1)[-1] for n in names if _root(n) in wanted)
        if len(_SHORT) < 2048:
            _SHORT[key] = found
    return found


def _root(qualname: str) -> str:
    return qualname.split(".", 1)[0]


_ERRNO_KIND: dict[int, Kind] = {}
for _name, _kind in (
    ("ECONNRESET", Kind.RESET),
    ("EPIPE", Kind.BROKEN_PIPE),
    ("ESHUTDOWN", Kind.BROKEN_PIPE),
    ("ECONNABORTED", Kind.ABORTED),
    ("ECONNREFUSED", Kind.REFUSED),
    ("ETIMEDOUT", Kind.TIMEOUT),
    ("EHOSTUNREACH", Kind.UNREACHABLE),
    ("ENETUNREACH", Kind.UNREACHABLE),
    ("ENETDOWN", Kind.UNREACHABLE),
    ("EHOSTDOWN", Kind.UNREACHABLE),
    ("ENETRESET", Kind.RESET),
    ("ENOTCONN", Kind.CLOSED),
):
    if hasattr(_errno, _name):
        _ERRNO_KIND[getattr(_errno, _name)] = _kind
# Windows socket errors, as seen on OSError.winerror / errno in wrapped messages.
_ERRNO_KIND.update(
    {10054: Kind.RESET, 10053: Kind.ABORTED, 10061: Kind.REFUSED, 10060: Kind.TIMEOUT}
)

_CONNECT_ERRNO_KINDS = frozenset({Kind.REFUSED, Kind.UNREACHABLE})


def _errno_name(code: int) -> str:
    return _errno.errorcode.get(code, str(code))


def _from_errno(code: int, source: str | None = None, phase: Phase | None = None) -> _Hint | None:
    kind = _ERRNO_KIND.get(code)
    if kind is None:
        return None
    if phase is None and kind in _CONNECT_ERRNO_KINDS:
        phase = Phase.CONNECT
    return _Hint(kind, phase, source, _errno_name(code), errno=code)


# "[Errno 104]", redis' "Error 111 connecting", "errno=104", and the repr of a wrapped
# OSError ("ConnectionResetError(104, ...)", as aiohttp's ClientPayloadError message has it).
_ERRNO_IN_TEXT = re.compile(
    r"\[Errno (-?\d+)\]|\bError (\d+) (?:connecting|while)|errno[ =](\d+)"
    r"|\b(?:ConnectionReset|ConnectionAborted|ConnectionRefused|BrokenPipe)Error\((\d+),"
)


def _errno_from_text(text: str) -> int | None:
    m = _ERRNO_IN_TEXT.search(text)
    if not m:
        return None
    return int(next(g for g in m.groups() if g is not None))


def _stdlib(exc: BaseException, names: tuple[str, ...]) -> _Hint | None:
    # Ordered from most specific: RemoteDisconnected subclasses ConnectionResetError.
    if "http.client.RemoteDisconnected" in names:
        return _Hint(Kind.CLOSED, Phase.AWAIT, "stdlib")
    if "http.client.IncompleteRead" in names:
        return _Hint(Kind.CLOSED, Phase.RECEIVE, "stdlib")
    if "asyncio.exceptions.IncompleteReadError" in names:
        partial = getattr(exc, "partial", b"")
        return _Hint(Kind.CLOSED, Phase.RECEIVE if partial else None, "stdlib")
    if "ssl.SSLCertVerificationError" in names:
        return _Hint(Kind.TLS, Phase.CONNECT, "stdlib", "CERTIFICATE_VERIFY_FAILED")
    if "ssl.SSLEOFError" in names or "ssl.SSLZeroReturnError" in names:
        return _Hint(Kind.CLOSED, None, "stdlib", "SSL_EOF")
    if "ssl.SSLError" in names:
        return _Hint(Kind.TLS, None, "stdlib", getattr(exc, "reason", None) or None, weak=True)
    if "socket.gaierror" in names:
        code = getattr(exc, "errno", None)
        return _Hint(Kind.DNS, Phase.CONNECT, "stdlib", f"EAI {code}" if code else None)
    if isinstance(exc, OSError):
        code = exc.errno
        if isinstance(code, int):
            hint = _from_errno(code, "stdlib")
            if hint is not None:
                return hint
        if isinstance(exc, ConnectionRefusedError):
            return _Hint(Kind.REFUSED, Phase.CONNECT, "stdlib", "ECONNREFUSED")
        if isinstance(exc, ConnectionResetError):
            return _Hint(Kind.RESET, None, "stdlib", "ECONNRESET")
        if isinstance(exc, BrokenPipeError):
            return _Hint(Kind.BROKEN_PIPE, Phase.SEND, "stdlib", "EPIPE")
        if isinstance(exc, ConnectionAbortedError):
            return _Hint(Kind.ABORTED, None, "stdlib", "ECONNABORTED")
        if isinstance(exc, TimeoutError):
            return _Hint(Kind.TIMEOUT, None, "stdlib")
        if isinstance(exc, ConnectionError):
            return _Hint(Kind.CLOSED, None, "stdlib", weak=True)
        return None  # other OSErrors (ENOENT, EACCES…) are not connection faults
    if isinstance(exc, TimeoutError) or "asyncio.exceptions.TimeoutError" in names:
        return _Hint(Kind.TIMEOUT, None, "stdlib")
    if isinstance(exc, EOFError):
        return _Hint(Kind.CLOSED, None, "stdlib", weak=True)
    return None


# --- HTTP clients


def _httpx(exc: BaseException, names: tuple[str, ...], source: str) -> _Hint | None:
    short = _short(names)
    if "ConnectTimeout" in short:
        return _Hint(Kind.TIMEOUT, Phase.CONNECT, source)
    if "PoolTimeout" in short:
        return _Hint(Kind.TIMEOUT, Phase.CONNECT, source, "pool")
    if "WriteTimeout" in short:
        return _Hint(Kind.TIMEOUT, Phase.SEND, source)
    if "ReadTimeout" in short:
        return _Hint(Kind.TIMEOUT, None, source)
    if "TimeoutException" in short:
        return _Hint(Kind.TIMEOUT, None, source)
    if "ConnectError" in short:
        return _Hint(Kind.REFUSED, Phase.CONNECT, source, weak=True)
    if "WriteError" in short:
        return _Hint(Kind.BROKEN_PIPE, Phase.SEND, source, weak=True)
    if "ReadError" in short:
        return _Hint(Kind.RESET, None, source, weak=True)
    if "RemoteProtocolError" in short:
        text = str(exc)
        if "without sending a response" in text:
            return _Hint(Kind.CLOSED, Phase.AWAIT, source)
        if "without sending complete message body" in text or "incomplete" in text.lower():
            return _Hint(Kind.CLOSED, Phase.RECEIVE, source)
        return _Hint(Kind.PROTOCOL, None, source)
    if "CloseError" in short:
        return _Hint(Kind.CLOSED, None, source, weak=True)
    if "ProxyError" in short or "NetworkError" in short:
        return _Hint(Kind.CLOSED, None, source, weak=True)
    if "TransportError" in short and "ProtocolError" not in short:
        return _Hint(Kind.CLOSED, None, source, weak=True)
    return _NOT_A_FAULT  # HTTPStatusError, LocalProtocolError, decoding, redirects, URL errors


def _urllib3_requests(exc: BaseException, names: tuple[str, ...], source: str) -> _Hint | None:
    short = _short(names, "urllib3", "requests")
    if "NameResolutionError" in short:
        return _Hint(Kind.DNS, Phase.CONNECT, source)
    if "ConnectTimeout" in short or (
        "ConnectTimeoutError" in short and "NewConnectionError" not in short
    ):
        return _Hint(Kind.TIMEOUT, Phase.CONNECT, source)
    if "NewConnectionError" in short:
        return _Hint(Kind.REFUSED, Phase.CONNECT, source, weak=True)
    if "ReadTimeout" in short or "ReadTimeoutError" in short:
        return _Hint(Kind.TIMEOUT, None, source)
    if "EmptyPoolError" in short:
        return _Hint(Kind.TIMEOUT, Phase.CONNECT, source, "pool")
    if "ChunkedEncodingError" in short or "IncompleteRead" in short:
        return _Hint(Kind.CLOSED, Phase.RECEIVE, source, weak=True)
    if "SSLError" in short:
        return _Hint(Kind.TLS, None, source, weak=True)
    if "ProxyError" in short:
        return _Hint(Kind.CLOSED, None, source, weak=True)
    if "ProtocolError" in short or "ConnectionError" in short:
        return _Hint(Kind.CLOSED, None, source, weak=True)
    if "MaxRetryError" in short:
        return _Hint(Kind.CLOSED, None, source, weak=True)
    if "Timeout" in short or "TimeoutError" in short:
        return _Hint(Kind.TIMEOUT, None, source)
    return _NOT_A_FAULT  # HTTPError for a status, invalid URL, content decoding, ...


def _aiohttp(exc: BaseException, names: tuple[str, ...]) -> _Hint | None:
    short = _short(names, "aiohttp")
    src = "aiohttp"
    if "ClientConnectorCertificateError" in short or "ClientConnectorSSLError" in short:
        return _Hint(Kind.TLS, Phase.CONNECT, src)
    if "ServerFingerprintMismatch" in short or "ClientSSLError" in short:
        return _Hint(Kind.TLS, Phase.CONNECT, src)
    if "ClientConnectorDNSError" in short:
        return _Hint(Kind.DNS, Phase.CONNECT, src)
    if "ConnectionTimeoutError" in short:
        return _Hint(Kind.TIMEOUT, Phase.CONNECT, src)
    if "SocketTimeoutError" in short or "ServerTimeoutError" in short:
        return _Hint(Kind.TIMEOUT, None, src)
    if "ClientConnectorError" in short:  # ClientProxyConnectionError too
        code = getattr(exc, "errno", None)
        if isinstance(code, int) and (hint := _from_errno(code, src, Phase.CONNECT)):
            return hint
        return _Hint(Kind.REFUSED, Phase.CONNECT, src, weak=True)
    if "ClientPayloadError" in short:
        # The body was cut short; the message names the socket error when there was one
        # ("... ConnectionResetError(104, ...)"), which is the only trace of an RST here.
        code = _errno_from_text(str(exc))
        if code is not None and (hint := _from_errno(code, src, Phase.RECEIVE)):
            return hint
        return _Hint(Kind.CLOSED, Phase.RECEIVE, src)
    if "ServerDisconnectedError" in short:
        return _Hint(Kind.CLOSED, None, src)
    if "ClientConnectionResetError" in short:
        return _Hint(Kind.RESET, None, src, "ECONNRESET")
    if "ClientOSError" in short:
        code = getattr(exc, "errno", None)
        if isinstance(code, int) and (hint := _from_errno(code, src)):
            return hint
        return _Hint(Kind.CLOSED, None, src, weak=True)
    if "ClientConnectionError" in short:
        return _Hint(Kind.CLOSED, None, src, weak=True)
    return _NOT_A_FAULT  # ClientResponseError (status), InvalidURL, ContentTypeError, ...


def _websockets(exc: BaseException, names: tuple[str, ...]) -> _Hint | None:
    short = _short(names, "websockets")
    if "ConnectionClosedOK" in short:
        return _NOT_A_FAULT
    if "ConnectionClosedError" in short or "ConnectionClosed" in short:
        return _Hint(Kind.CLOSED, None, "websockets", weak=True)
    if "InvalidMessage" in short:
        return _Hint(Kind.CLOSED, Phase.AWAIT, "websockets", weak=True)
    return _NOT_A_FAULT


def _anyio(exc: BaseException, names: tuple[str, ...]) -> _Hint | None:
    short = _short(names, "anyio")
    if "BrokenResourceError" in short or "EndOfStream" in short:
        return _Hint(Kind.CLOSED, None, None, weak=True)
    return None


# --- databases

# SQLSTATEs (PostgreSQL) that are connection faults, with what they prove about the phase.
_SQLSTATE: dict[str, tuple[Kind, Phase | None]] = {
    "57P01": (Kind.CLOSED, None),  # admin_shutdown: pg_terminate_backend, fast shutdown
    "57P02": (Kind.CLOSED, None),  # crash_shutdown
    "57P03": (Kind.REFUSED, Phase.CONNECT),  # cannot_connect_now (starting up / recovery)
    "57P05": (Kind.CLOSED, Phase.CONNECT),  # idle_session_timeout: session ended before we spoke
    "25P03": (Kind.CLOSED, None),  # idle_in_transaction_session_timeout
    "53300": (Kind.REFUSED, Phase.CONNECT),  # too_many_connections
    "08000": (Kind.CLOSED, None),  # connection_exception
    "08003": (Kind.CLOSED, None),  # connection_does_not_exist
    "08006": (Kind.CLOSED, None),  # connection_failure
    "08001": (Kind.REFUSED, Phase.CONNECT),  # sqlclient_unable_to_establish_sqlconnection
    "08004": (Kind.REFUSED, Phase.CONNECT),  # sqlserver_rejected_establishment_of_sqlconnection
    "08007": (Kind.CLOSED, None),  # transaction_resolution_unknown
}

# libpq / driver messages without a SQLSTATE, most specific first.
_PG_TEXT: tuple[tuple[str, Kind, Phase | None], ...] = (
    ("the connection is closed", Kind.CLOSED, Phase.CONNECT),
    ("connection already closed", Kind.CLOSED, Phase.CONNECT),
    ("connection is closed", Kind.CLOSED, Phase.CONNECT),
    ("could not translate host name", Kind.DNS, Phase.CONNECT),
    ("timeout expired", Kind.TIMEOUT, Phase.CONNECT),
    ("connection timeout expired", Kind.TIMEOUT, Phase.CONNECT),
    ("connection refused", Kind.REFUSED, Phase.CONNECT),
    ("no route to host", Kind.UNREACHABLE, Phase.CONNECT),
    ("network is unreachable", Kind.UNREACHABLE, Phase.CONNECT),
    ("could not connect to server", Kind.REFUSED, Phase.CONNECT),
    ("connection failed", Kind.REFUSED, Phase.CONNECT),
    ("connection reset by peer", Kind.RESET, None),
    ("could not send data to server", Kind.BROKEN_PIPE, Phase.SEND),
    ("broken pipe", Kind.BROKEN_PIPE, Phase.SEND),
    ("server closed the connection unexpectedly", Kind.CLOSED, None),
    ("ssl syscall error", Kind.CLOSED, None),
    ("ssl connection has been closed unexpectedly", Kind.CLOSED, None),
    ("could not receive data from server", Kind.RESET, None),
    ("connection was closed in the middle of operation", Kind.CLOSED, Phase.AWAIT),
    ("consuming input failed", Kind.CLOSED, None),
    ("terminating connection", Kind.CLOSED, None),
    ("lost synchronization with server", Kind.PROTOCOL, None),
)


def _pg_text(text: str, source: str) -> _Hint | None:
    low = text.lower()
    for needle, kind, phase in _PG_TEXT:
        if needle in low:
            return _Hint(kind, phase, source)
    return None


def _postgres(exc: BaseException, names: tuple[str, ...], source: str) -> _Hint | None:
    short = _short(names)
    if source == "psycopg_pool":
        if "PoolTimeout" in short:
            return _Hint(Kind.TIMEOUT, Phase.CONNECT, source, "pool")
        return _NOT_A_FAULT
    state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    if isinstance(state, str) and state:
        if state in _SQLSTATE:
            kind, phase = _SQLSTATE[state]
            # "closed" is the generic kind: a socket error deeper in the chain is more
            # precise (asyncpg's client-side 08003 wraps the ConnectionResetError of an RST).
            return _Hint(kind, phase, source, state, weak=kind is Kind.CLOSED)
        if state.startswith("08"):
            return _Hint(Kind.CLOSED, None, source, state, weak=True)
        if source != "asyncpg":
            return _NOT_A_FAULT  # a server-reported SQL error: syntax, constraint, timeout…
    if "ConnectionTimeout" in short:
        return _Hint(Kind.TIMEOUT, Phase.CONNECT, source)
    if "ConnectionDoesNotExistError" in short:
        return _Hint(Kind.CLOSED, Phase.AWAIT, source, "08003")
    if isinstance(state, str) and state and source == "asyncpg":
        return _NOT_A_FAULT
    text_hint = _pg_text(str(exc), source)
    if text_hint is not None:
        return text_hint
    if short & {"OperationalError", "InterfaceError"} and source != "asyncpg":
        return None  # unknown operational error: let deeper nodes decide
    return _NOT_A_FAULT


# MySQL / MariaDB client and server error numbers that are connection faults.
_MYSQL: dict[int, tuple[Kind, Phase | None]] = {
    2002: (Kind.REFUSED, Phase.CONNECT),  # CR_CONNECTION_ERROR (socket)
    2003: (Kind.REFUSED, Phase.CONNECT),  # CR_CONN_HOST_ERROR
    2005: (Kind.DNS, Phase.CONNECT),  # CR_UNKNOWN_HOST
    # CR_SERVER_GONE_ERROR: raised when *writing* the command failed, so the server cannot
    # have received a complete command packet; MariaDB's wait_timeout surfaces as this.
    2006: (Kind.CLOSED, Phase.CONNECT),
    2013: (Kind.CLOSED, None),  # CR_SERVER_LOST during query: outcome unknown
    2055: (Kind.CLOSED, None),  # CR_SERVER_LOST_EXTENDED
    2012: (Kind.CLOSED, Phase.CONNECT),  # CR_SERVER_HANDSHAKE_ERR
    2026: (Kind.TLS, Phase.CONNECT),  # CR_SSL_CONNECTION_ERROR
    1040: (Kind.REFUSED, Phase.CONNECT),  # ER_CON_COUNT_ERROR: too many connections
    1053: (Kind.CLOSED, None),  # ER_SERVER_SHUTDOWN
    1077: (Kind.CLOSED, None),  # ER_NORMAL_SHUTDOWN
    1152: (Kind.CLOSED, None),  # ER_ABORTING_CONNECTION
    1927: (Kind.CLOSED, None),  # ER_CONNECTION_KILLED (MariaDB)
    4031: (Kind.CLOSED, Phase.CONNECT),  # ER_CLIENT_INTERACTION_TIMEOUT (MySQL 8.0.24+)
}


def _mysql(exc: BaseException, names: tuple[str, ...], source: str) -> _Hint | None:
    short = _short(names)
    code = getattr(exc, "errno", None)  # mysql-connector
    args: tuple[object, ...] = exc.args
    if not isinstance(code, int) and args and isinstance(args[0], int):
        code = args[0]  # PyMySQL / aiomysql: (code, message)
    text = str(getattr(exc, "msg", "") or (args[1] if len(args) > 1 else "") or exc)
    if isinstance(code, int) and code in _MYSQL:
        kind, phase = _MYSQL[code]
        return _Hint(kind, phase, source, str(code), weak=kind is Kind.CLOSED)
    low = text.lower()
    if (
        "connection not available" in low
        or "not connected" in low
        or (code == 0 and "InterfaceError" in short)
    ):
        # Raised before anything is written: the client knows the connection is gone.
        return _Hint(
            Kind.CLOSED, Phase.CONNECT, source, None if code in (None, -1, 0) else str(code)
        )
    if "lost connection" in low or "gone away" in low:
        return _Hint(Kind.CLOSED, None, source, weak=True)
    if short & {"OperationalError", "InterfaceError"} and not isinstance(code, int):
        return None
    return _NOT_A_FAULT  # ProgrammingError, IntegrityError, deadlocks, lock wait timeouts…


def _sqlalchemy(exc: BaseException, names: tuple[str, ...]) -> _Hint | None:
    short = _short(names, "sqlalchemy")
    if "DisconnectionError" in short:
        return _Hint(Kind.CLOSED, None, "sqlalchemy", weak=True)
    if "TimeoutError" in short:  # QueuePool limit reached
        return _Hint(Kind.TIMEOUT, Phase.CONNECT, "sqlalchemy", "pool")
    if "DBAPIError" in short:
        if getattr(exc, "connection_invalidated", False):
            return _Hint(Kind.CLOSED, None, "sqlalchemy", weak=True)
        return _Hint(None, None, "sqlalchemy")  # defer to .orig
    return _NOT_A_FAULT


def _redis(exc: BaseException, names: tuple[str, ...]) -> _Hint | None:
    short = _short(names, "redis")
    src = "redis"
    if short & {"AuthenticationError", "AuthorizationError", "MaxConnectionsError"}:
        return _NOT_A_FAULT
    if "BusyLoadingError" in short:
        return _Hint(Kind.REFUSED, Phase.CONNECT, src, "LOADING")
    if "TimeoutError" in short:
        return _Hint(Kind.TIMEOUT, None, src)
    if "ConnectionError" in short:
        text = str(exc)
        low = text.lower()
        code = _errno_from_text(text)
        phase = Phase.CONNECT if " connecting to " in low else None
        if code is not None and (hint := _from_errno(code, src, phase)):
            return hint
        if "closed by server" in low:
            return _Hint(Kind.CLOSED, phase, src)
        return _Hint(Kind.CLOSED, phase, src, weak=True)
    return _NOT_A_FAULT


def _pymongo(exc: BaseException, names: tuple[str, ...]) -> _Hint | None:
    short = _short(names, "pymongo")
    src = "pymongo"
    labels = getattr(exc, "_error_labels", None)
    has_label = getattr(exc, "has_error_label", None)
    no_writes = bool(callable(has_label) and has_label("NoWritesPerformed"))
    label_code = "NoWritesPerformed" if no_writes else None
    if labels and not label_code:
        label_code = ",".join(sorted(labels))
    if "NotPrimaryError" in short:
        return _NOT_A_FAULT
    if "ServerSelectionTimeoutError" in short:
        code = _errno_from_text(str(exc))
        kind = _ERRNO_KIND.get(code, Kind.TIMEOUT) if code is not None else Kind.TIMEOUT
        if code is None and "connection closed" in str(exc):
            kind = Kind.CLOSED
        return _Hint(kind, Phase.CONNECT, src, _errno_name(code) if code is not None else None)
    if "NetworkTimeout" in short:
        return _Hint(Kind.TIMEOUT, Phase.CONNECT if no_writes else None, src, label_code)
    if "AutoReconnect" in short or "ConnectionFailure" in short:
        phase = Phase.CONNECT if no_writes else None
        code = _errno_from_text(str(exc))
        if code is not None and (hint := _from_errno(code, src, phase)):
            return hint
        return _Hint(Kind.CLOSED, phase, src, label_code, weak=True)
    return _NOT_A_FAULT


_PG_ROOTS = frozenset({"psycopg", "psycopg2", "psycopg_pool", "asyncpg", "pg8000"})
_MYSQL_ROOTS = frozenset({"pymysql", "aiomysql", "mysql", "MySQLdb", "asyncmy"})
_URLLIB3_ROOTS = frozenset({"urllib3", "requests", "pip"})


def _hint(exc: BaseException) -> _Hint | None:
    names = _names(exc)
    root = _root(names[0])
    if root in ("builtins", "socket", "ssl", "http", "asyncio", "concurrent"):
        return _stdlib(exc, names)
    if root.startswith("httpx") or root.startswith("httpcore"):
        return _httpx(exc, names, "httpx")
    if root in _URLLIB3_ROOTS:
        return _urllib3_requests(exc, names, "requests" if root == "requests" else "urllib3")
    if root == "aiohttp":
        return _aiohttp(exc, names)
    if root in _PG_ROOTS:
        return _postgres(exc, names, "psycopg" if root == "psycopg2" else root)
    if root in _MYSQL_ROOTS:
        return _mysql(exc, names, "mysql-connector" if root == "mysql" else root)
    if root == "sqlalchemy":
        return _sqlalchemy(exc, names)
    if root == "redis":
        return _redis(exc, names)
    if root in ("pymongo", "bson"):
        return _pymongo(exc, names)
    if root == "websockets":
        return _websockets(exc, names)
    if root == "anyio":
        return _anyio(exc, names)
    if root == "trio" and "BrokenResourceError" in type(exc).__name__:
        return _Hint(Kind.CLOSED, None, "trio", weak=True)
    # Unknown classes (an app's own wrapper): OSError subclasses still carry an errno.
    if isinstance(exc, OSError | TimeoutError | EOFError):
        return _stdlib(exc, names)
    return None


# Built-in exception types that are never connection faults themselves: their context is
# whatever the user was handling when they raised, so it is not inspected.
_STOP_TYPES: tuple[type[BaseException], ...] = (
    ArithmeticError,
    AssertionError,
    AttributeError,
    ImportError,
    LookupError,
    NameError,
    TypeError,
    ValueError,
    RuntimeError,
    StopIteration,
    StopAsyncIteration,
    KeyboardInterrupt,
    SystemExit,
    GeneratorExit,
)


def classify(exc: BaseException) -> Failure | None:
    """Classify ``exc`` as a connection fault, or return ``None`` when it is not one.

    The whole chain is read: the outermost recognised library gives ``source`` and its
    driver code; the most specific kind and phase found anywhere in the chain win.

    Example::

        >>> import resetguard
        >>> resetguard.classify(BrokenPipeError(32, "Broken pipe")).kind.value
        'broken_pipe'
    """
    if _user_classifiers:
        for node in _walk(exc):
            for classifier in _user_classifiers:
                found = classifier(node)
                if found is not None:
                    return found
    cls = type(exc)
    if cls is RuntimeError and _is_uvloop_closed(exc):
        return _UVLOOP_CLOSED
    plain: tuple[type, int] | None = None
    if isinstance(exc, OSError):
        # A builtin OSError with an errno and nothing attached (no cause, context or
        # attributes such as .orig) classifies the same every time: cached (only builtin
        # classes are stored, so a hit needs no module check).
        code = exc.errno
        if (
            type(code) is int
            and exc.__cause__ is None
            and exc.__context__ is None
            and not exc.__dict__
        ):
            plain = (cls, code)
            cached = _PLAIN_CACHE.get(plain)
            if cached is not None:
                return cached
    elif isinstance(exc, _STOP_TYPES) and cls.__module__ == "builtins":
        return None
    failure = _classify_chain(exc)
    if (
        plain is not None
        and failure is not None
        and cls.__module__ == "builtins"
        and len(_PLAIN_CACHE) < 256
    ):
        _PLAIN_CACHE[plain] = failure
    return failure


# uvloop raises a plain RuntimeError when a transport's libuv handle is already closed
# (uvloop/handles/handle.pyx, _ensure_alive): a write to a connection the peer has gone
# from. Matched by its exact wording only, so any other RuntimeError stays None.
_UVLOOP_PREFIX = "unable to perform operation on <"
_UVLOOP_SUFFIX = "; the handler is closed"
_UVLOOP_CLOSED = Failure(
    kind=Kind.CLOSED,
    phase=Phase.SEND,
    source="uvloop",
    code="HANDLER_CLOSED",
    exc_type="builtins.RuntimeError",
)


def _is_uvloop_closed(exc: BaseException) -> bool:
    args = exc.args
    if len(args) != 1 or not isinstance(args[0], str):
        return False
    text = args[0]
    return text.startswith(_UVLOOP_PREFIX) and text.endswith(_UVLOOP_SUFFIX)


# Failure is immutable: a plain OSError's is reused (building a frozen dataclass is most of
# the cost of classifying it).
_PLAIN_CACHE: dict[tuple[type, int], Failure] = {}


def _classify_chain(exc: BaseException) -> Failure | None:
    kind: Kind | None = None
    weak_kind: Kind | None = None
    phase: Phase | None = None
    source: str | None = None
    code: str | None = None
    errno: int | None = None
    recognised = False
    for depth, node in enumerate(_walk(exc)):
        hint = _hint(node)
        if hint is None:
            continue
        if hint is _NOT_A_FAULT:
            if depth == 0:
                return None  # the outermost library says: not a connection problem
            continue
        recognised = True
        if source is None and hint.source not in (None, "stdlib"):
            source = hint.source
        if code is None and hint.code is not None and hint.source not in (None, "stdlib"):
            code = hint.code
        if errno is None and hint.errno is not None:
            errno = hint.errno
        if phase is None and hint.phase is not None:
            phase = hint.phase
        if hint.kind is not None:
            if hint.weak:
                weak_kind = weak_kind or hint.kind
            elif kind is None:
                kind = hint.kind
                if code is None and hint.code is not None:
                    code = hint.code
    if not recognised:
        return None
    if errno is None and kind is None:
        # Last resort, for a generic kind only: an errno quoted in the outermost message.
        # Not always: str() of some wrappers is costly (SQLAlchemy renders SQL and a link).
        errno = _errno_from_text(str(exc))
        if errno is not None and errno in _ERRNO_KIND:
            kind = _ERRNO_KIND[errno]
    final = kind or weak_kind
    if final is None:
        return None
    if code is None and errno is not None and errno in _errno.errorcode:
        code = _errno_name(errno)
    if phase is None and final in _CONNECT_ERRNO_KINDS:
        phase = Phase.CONNECT
    return Failure(
        kind=final,
        phase=phase or Phase.UNKNOWN,
        source=source or "stdlib",
        code=code,
        errno=errno,
        exc_type=f"{type(exc).__module__}.{type(exc).__qualname__}",
    )
