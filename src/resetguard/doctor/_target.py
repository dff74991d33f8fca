"""Parsing of what the doctor is pointed at: targets, durations, and credential redaction.

Every string that leaves this package (report, JSON, error message) goes through
:func:`redact` first, so a DSN's password can never be printed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["Target", "TargetKind", "parse_duration", "parse_target", "redact"]

TargetKind = Literal["http", "tcp", "postgresql", "mysql", "redis"]

_SCHEMES: dict[str, tuple[TargetKind, int]] = {
    "http": ("http", 80),
    "https": ("http", 443),
    "postgresql": ("postgresql", 5432),
    "postgres": ("postgresql", 5432),
    "mysql": ("mysql", 3306),
    "mysql+pymysql": ("mysql", 3306),
    "mariadb": ("mysql", 3306),
    "redis": ("redis", 6379),
    "rediss": ("redis", 6379),
}

# user:password@ in any URL-like string; also key=value passwords in libpq-style DSNs.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^@/\s?#]*)@")
_KV_PASSWORD = re.compile(r"(?i)(?<![?&])\b(password|passwd|pwd)\s*=\s*('[^']*'|[^\s&#]+)")
_QUERY_PASSWORD = re.compile(r"(?i)([?&](?:password|passwd|pwd)=)[^&#\s]*")


def redact(text: str) -> str:
    """Replace every password in ``text`` (URL userinfo, ``password=`` pairs) with ``***``.

    Example::

        >>> redact("postgresql://app:s3cret@db:5432/prod")
        'postgresql://app:***@db:5432/prod'
    """

    def _userinfo(match: re.Match[str]) -> str:
        userinfo = match.group("userinfo")
        user, sep, _password = userinfo.partition(":")
        if sep:
            return f"{match.group('scheme')}{user}:***@"
        if match.group("scheme").lower().startswith("redis"):
            # redis://SECRET@host: a bare userinfo is the password (AUTH without a user).
            return f"{match.group('scheme')}***@"
        return match.group(0)

    text = _USERINFO.sub(_userinfo, text)
    text = _QUERY_PASSWORD.sub(r"\1***", text)
    return _KV_PASSWORD.sub(lambda m: f"{m.group(1)}=***", text)


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """A parsed doctor target. ``raw`` holds credentials: never print it, print ``display``.

    Example::

        >>> parse_target("redis://:pw@127.0.0.1:6379/0").display
        'redis://:***@127.0.0.1:6379/0'
    """

    kind: TargetKind
    scheme: str
    host: str
    port: int
    path: str = "/"
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    database: str | None = None
    query: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    raw: str = field(repr=False)
    display: str

    @property
    def tls(self) -> bool:
        """Whether the connection is wrapped in TLS (``https://``, ``rediss://``)."""
        return self.scheme in ("https", "rediss")

    def param(self, name: str) -> str | None:
        """The last value of query parameter ``name``, or ``None``."""
        found = None
        for key, value in self.query:
            if key == name:
                found = value
        return found


def parse_target(text: str) -> Target:
    """Parse an ``http(s)://`` URL, ``host:port``, or a PostgreSQL/MySQL/Redis DSN.

    Raises :class:`ValueError` (message redacted) for anything else.

    Example::

        >>> t = parse_target("https://example.com/health")
        >>> (t.kind, t.host, t.port, t.path)
        ('http', 'example.com', 443, '/health')
    """
    if not isinstance(text, str):
        raise TypeError(f"target must be a str, got {type(text).__name__}")
    shown = redact(text.strip())
    text = text.strip()
    if not text:
        raise ValueError("target must not be empty")
    if "://" not in text:
        return _parse_host_port(text, shown)
    scheme = text.split("://", 1)[0].lower()
    if scheme not in _SCHEMES:
        known = ", ".join(f"{s}://" for s in _SCHEMES)
        raise ValueError(f"unsupported target scheme {scheme + '://'!r} in {shown!r} (use {known})")
    kind, default_port = _SCHEMES[scheme]
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"invalid target {shown!r}: {redact(str(exc))}") from None
    host = parts.hostname
    if not host:
        raise ValueError(f"target {shown!r} has no host")
    if port == 0:
        raise ValueError(f"target {shown!r} has port 0")
    path = parts.path or "/"
    if kind == "http" and parts.query:
        path = f"{path}?{parts.query}"
    database = None
    if kind in ("postgresql", "mysql", "redis"):
        database = unquote(parts.path.lstrip("/")) or None
    if kind == "redis" and database is not None and not database.isdigit():
        raise ValueError(f"redis database must be a number, got {database!r} in {shown!r}")
    query = tuple(parse_qsl(parts.query, keep_blank_values=True)) if kind != "http" else ()
    return Target(
        kind=kind,
        scheme=scheme,
        host=host,
        port=port or default_port,
        path=path,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        database=database,
        query=query,
        raw=text,
        display=shown,
    )


def _parse_host_port(text: str, shown: str) -> Target:
    if text.startswith("["):  # [::1]:8080
        host, sep, port_text = text[1:].partition("]:")
    else:
        host, sep, port_text = text.rpartition(":")
    if not sep or not host or (":" in host and not text.startswith("[")):
        raise ValueError(
            f"target {shown!r} is neither a URL/DSN (scheme://...) nor host:port "
            "(write IPv6 as [::1]:port)"
        )
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"invalid port {port_text!r} in target {shown!r}")
    return Target(kind="tcp", scheme="tcp", host=host, port=int(port_text), raw=text, display=shown)


_DURATION = re.compile(r"^\s*(?P<num>\d+(?:\.\d+)?|\.\d+)\s*(?P<unit>ms|s|m|h)?\s*$", re.IGNORECASE)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``"1.5s"``, ``"500ms"``, ``"2m"``, ``"1h"`` or a bare number of seconds.

    Raises :class:`ValueError` naming the value for anything else, including zero.

    Example::

        >>> parse_duration("500ms"), parse_duration("2m"), parse_duration("1.5")
        (0.5, 120.0, 1.5)
    """
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"invalid duration {text!r} (examples: 1.5s, 500ms, 2m, 30)")
    seconds = float(match.group("num")) * _UNITS[(match.group("unit") or "s").lower()]
    if seconds <= 0 or not math.isfinite(seconds):
        raise ValueError(f"duration must be > 0, got {text!r}")
    return seconds
