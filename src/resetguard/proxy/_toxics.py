"""Toxic specifications: frozen, validated values that say *what* a toxic does.

A toxic spec is pure data. The proxy turns each spec into a per-connection stage
(:mod:`._stages`) when the toxic is attached to a connection; the spec itself never
holds connection state, so one spec serves every connection and is safe to share
between threads.

Three ways to write one, all validated the same way::

    Latency(latency=100, jitter=10, stream="upstream")          # Python
    {"type": "latency", "stream": "upstream",                   # Toxiproxy JSON
     "attributes": {"latency": 100, "jitter": 10}}
    "latency:upstream:latency=100ms:jitter=10ms"                 # CLI spec

Units follow Toxiproxy: times are whole milliseconds (the slicer's ``delay`` is in
microseconds), sizes are bytes, the bandwidth ``rate`` is in KB/s (1 KB = 1000 bytes).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .._exceptions import ResetGuardError

__all__ = [
    "STREAMS",
    "Bandwidth",
    "Down",
    "IdleReset",
    "Latency",
    "LimitData",
    "ResetAt",
    "ResetPeer",
    "Slicer",
    "SlowClose",
    "Timeout",
    "Toxic",
    "ToxicError",
    "parse_toxic",
    "toxic_from_json",
    "toxics_from_json",
    "toxic_types",
]

STREAMS = ("upstream", "downstream")  # client -> server, server -> client

_BASE_FIELDS = frozenset({"name", "stream", "toxicity"})
_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
_UNIT_SECONDS = {"ms": 1e-3, "us": 1e-6}
_NUMBER_WITH_UNIT = re.compile(r"^([0-9][0-9_]*(?:\.[0-9]+)?)(us|ms|s)?$")


class ToxicError(ResetGuardError, ValueError):
    """A toxic spec, JSON body or attribute is invalid. The message names the bad part."""


def _attr(*, unit: str, default: Any = dataclasses.MISSING, choices: tuple[str, ...] = ()) -> Any:
    """A toxic attribute field; ``unit`` is ``ms``, ``us``, ``bytes``, ``KB/s`` or ``choice``."""
    meta = {"unit": unit, "choices": choices}
    if default is dataclasses.MISSING:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True, slots=True, kw_only=True)
class Toxic:
    """Fields shared by every toxic (Toxiproxy's "toxic fields").

    ``name`` defaults to ``"<type>_<stream>"``; ``stream`` is ``"upstream"`` (client to
    server) or ``"downstream"`` (server to client, the default); ``toxicity`` is the
    probability, drawn once per connection, that the toxic applies to that connection.
    """

    TYPE: ClassVar[str] = ""

    name: str = ""
    stream: str = "downstream"
    toxicity: float = 1.0

    def __post_init__(self) -> None:
        if type(self) is Toxic:
            raise ToxicError("Toxic is abstract: use Latency, ResetPeer, LimitData, ...")
        if self.stream not in STREAMS:
            raise ToxicError(
                f"{self.TYPE}: stream must be 'upstream' or 'downstream', got {self.stream!r}"
            )
        tox = self.toxicity
        if isinstance(tox, bool) or not isinstance(tox, (int, float)) or not 0.0 <= tox <= 1.0:
            raise ToxicError(f"{self.TYPE}: toxicity must be a number from 0 to 1, got {tox!r}")
        object.__setattr__(self, "toxicity", float(tox))
        if not isinstance(self.name, str):
            raise ToxicError(f"{self.TYPE}: name must be a string, got {self.name!r}")
        if not self.name:
            object.__setattr__(self, "name", f"{self.TYPE}_{self.stream}")
        for f in dataclasses.fields(self):
            if f.name in _BASE_FIELDS:
                continue
            value = getattr(self, f.name)
            choices = f.metadata["choices"]
            if choices:
                if value not in choices:
                    allowed = " or ".join(repr(c) for c in choices)
                    raise ToxicError(f"{self.TYPE}: {f.name} must be {allowed}, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ToxicError(
                    f"{self.TYPE}: {f.name} must be a whole number >= 0"
                    f" ({f.metadata['unit']}), got {value!r}"
                )
        self._check()

    def _check(self) -> None:
        """Cross-attribute validation of a concrete toxic (raise :class:`ToxicError`)."""

    @property
    def type(self) -> str:
        """The Toxiproxy type name, e.g. ``"reset_peer"``."""
        return self.TYPE

    @property
    def attributes(self) -> dict[str, Any]:
        """The type-specific attributes, as in Toxiproxy's ``attributes`` object."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in _BASE_FIELDS
        }

    @property
    def byte_level(self) -> bool:
        """Whether the toxic sits in the byte stream (``down`` does not)."""
        return True

    def to_json(self) -> dict[str, Any]:
        """The Toxiproxy JSON form: ``{attributes, name, type, stream, toxicity}``."""
        return {
            "attributes": self.attributes,
            "name": self.name,
            "type": self.TYPE,
            "stream": self.stream,
            "toxicity": self.toxicity,
        }

    def to_spec(self) -> str:
        """The CLI spec string that parses back to this toxic."""
        parts = [self.TYPE, self.stream]
        parts += [f"{k}={v}" for k, v in self.attributes.items()]
        if self.toxicity != 1.0:
            parts.append(f"toxicity={self.toxicity:g}")
        if self.name != f"{self.TYPE}_{self.stream}":
            parts.append(f"name={self.name}")
        return ":".join(parts)

    def replace(self, **changes: Any) -> Toxic:
        """A copy with ``changes`` applied and validated (``name`` kept unless given)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, slots=True, kw_only=True)
class Latency(Toxic):
    """Delay every chunk by ``latency`` ± ``jitter`` ms (a negative draw means no delay);
    order is kept, so a chunk never overtakes an earlier one."""

    TYPE: ClassVar[str] = "latency"
    latency: int = _attr(unit="ms", default=0)
    jitter: int = _attr(unit="ms", default=0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Bandwidth(Toxic):
    """Pass data at most ``rate`` KB/s (1 KB = 1000 bytes), in slices of 100 ms worth."""

    TYPE: ClassVar[str] = "bandwidth"
    rate: int = _attr(unit="KB/s")

    def _check(self) -> None:
        if self.rate < 1:
            raise ToxicError(
                "bandwidth: rate must be at least 1 KB/s, got 0 (use 'timeout' to stop data)"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class SlowClose(Toxic):
    """Hold back the end of the stream (FIN or close) for ``delay`` ms; data is unaffected."""

    TYPE: ClassVar[str] = "slow_close"
    delay: int = _attr(unit="ms", default=0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeout(Toxic):
    """Blackhole: drop all data, then close the connection after ``timeout`` ms
    (0 = never close). Removing the toxic closes the connections it blackholed."""

    TYPE: ClassVar[str] = "timeout"
    timeout: int = _attr(unit="ms", default=0)


@dataclass(frozen=True, slots=True, kw_only=True)
class ResetPeer(Toxic):
    """On the first data (or end of stream) in its direction, wait ``timeout`` ms, then
    reset both sides with a TCP RST (``SO_LINGER`` 0). Data seen meanwhile is dropped."""

    TYPE: ClassVar[str] = "reset_peer"
    timeout: int = _attr(unit="ms", default=0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Slicer(Toxic):
    """Cut each chunk into pieces of about ``average_size`` ± ``size_variation`` bytes,
    ``delay`` µs apart."""

    TYPE: ClassVar[str] = "slicer"
    average_size: int = _attr(unit="bytes")
    size_variation: int = _attr(unit="bytes", default=0)
    delay: int = _attr(unit="us", default=0)

    def _check(self) -> None:
        if self.average_size < 1:
            raise ToxicError("slicer: average_size must be at least 1 byte, got 0")
        if self.size_variation >= self.average_size:
            raise ToxicError(
                f"slicer: size_variation ({self.size_variation}) must be smaller than"
                f" average_size ({self.average_size})"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitData(Toxic):
    """Pass exactly ``bytes`` bytes in this direction, then close the connection (FIN)."""

    TYPE: ClassVar[str] = "limit_data"
    bytes: int = _attr(unit="bytes")


@dataclass(frozen=True, slots=True, kw_only=True)
class ResetAt(Toxic):
    """Pass exactly ``bytes`` bytes in this direction, let the peer receive them, then
    reset both sides (RST)."""

    TYPE: ClassVar[str] = "reset_at"
    bytes: int = _attr(unit="bytes")


@dataclass(frozen=True, slots=True, kw_only=True)
class IdleReset(Toxic):
    """Close a connection that stayed idle (no byte either way) for ``idle`` ms: the
    keep-alive race on demand.

    ``trigger="data"`` (default) waits for the first chunk that arrives in this toxic's
    direction after the idle period, drops it and closes: the peer has just written on
    a connection the other side considers dead. ``trigger="timer"`` closes as soon as the
    idle period ends, as a NAT or load balancer reaping idle flows does. ``close`` is
    ``"rst"`` (reset both sides) or ``"fin"`` (orderly close).
    """

    TYPE: ClassVar[str] = "idle_reset"
    idle: int = _attr(unit="ms")
    close: str = _attr(unit="choice", default="rst", choices=("rst", "fin"))
    trigger: str = _attr(unit="choice", default="data", choices=("data", "timer"))

    def _check(self) -> None:
        if self.idle < 1:
            raise ToxicError("idle_reset: idle must be at least 1 ms, got 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class Down(Toxic):
    """Refuse new connections (the listening socket is closed, so clients get
    ``ECONNREFUSED``) while the toxic exists; open connections are left alone.
    ``stream`` is ignored and ``toxicity`` must be 1."""

    TYPE: ClassVar[str] = "down"

    def _check(self) -> None:
        if self.toxicity != 1.0:
            raise ToxicError(f"down: toxicity must be 1 (all or nothing), got {self.toxicity:g}")

    @property
    def byte_level(self) -> bool:
        return False


_REGISTRY: dict[str, type[Toxic]] = {
    cls.TYPE: cls
    for cls in (
        Latency,
        Bandwidth,
        SlowClose,
        Timeout,
        ResetPeer,
        Slicer,
        LimitData,
        ResetAt,
        IdleReset,
        Down,
    )
}


def toxic_types() -> dict[str, type[Toxic]]:
    """The registry: Toxiproxy type name -> spec class."""
    return dict(_REGISTRY)


def _attr_fields(cls: type[Toxic]) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(cls) if f.name not in _BASE_FIELDS}


def _lookup(type_name: object) -> type[Toxic]:
    cls = _REGISTRY.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        known = ", ".join(sorted(_REGISTRY))
        raise ToxicError(f"invalid toxic type {type_name!r} (known: {known})")
    return cls


def _json_number(cls: type[Toxic], key: str, value: Any, unit: str) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ToxicError(f"{cls.TYPE}: {key} must be a whole number ({unit}), got {value!r}")
    return value


def _coerce_attributes(cls: type[Toxic], attributes: Mapping[str, Any]) -> dict[str, Any]:
    fields = _attr_fields(cls)
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        f = fields.get(key)
        if f is None:
            known = ", ".join(fields) or "none"
            raise ToxicError(f"{cls.TYPE}: unknown attribute {key!r} (attributes: {known})")
        out[key] = (
            value if f.metadata["choices"] else _json_number(cls, key, value, f.metadata["unit"])
        )
    return out


def _build(cls: type[Toxic], kwargs: dict[str, Any]) -> Toxic:
    missing = [
        name
        for name, f in _attr_fields(cls).items()
        if f.default is dataclasses.MISSING and name not in kwargs
    ]
    if missing:
        raise ToxicError(f"{cls.TYPE}: missing required attribute {missing[0]!r}")
    return cls(**kwargs)


def toxic_from_json(body: Mapping[str, Any], *, base: Toxic | None = None) -> Toxic:
    """Build a toxic from a Toxiproxy JSON object.

    With ``base``, ``body`` is an update (``POST/PATCH /proxies/{p}/toxics/{t}``): its
    ``attributes`` are merged into ``base``'s and ``toxicity`` replaces it; the type,
    name and stream stay. Unknown fields inside ``attributes`` are refused.
    """
    if not isinstance(body, Mapping):
        raise ToxicError(f"toxic must be a JSON object, got {type(body).__name__}")
    attributes = body.get("attributes")
    if attributes is None:
        attributes = {}
    if not isinstance(attributes, Mapping):
        raise ToxicError("attributes must be a JSON object")
    if base is not None:
        cls = type(base)
        merged = {**base.attributes, **_coerce_attributes(cls, attributes)}
        toxicity = body.get("toxicity", base.toxicity)
        return cls(name=base.name, stream=base.stream, toxicity=toxicity, **merged)
    cls = _lookup(body.get("type"))
    kwargs: dict[str, Any] = _coerce_attributes(cls, attributes)
    stream = body.get("stream") or "downstream"
    if stream == "both":
        raise ToxicError("stream 'both' makes two toxics: build them with toxics_from_json()")
    if stream not in STREAMS:  # Toxiproxy's own message, which its clients may look for
        raise ToxicError("stream was invalid, can be either upstream or downstream")
    kwargs["stream"] = stream
    kwargs["toxicity"] = body.get("toxicity", 1.0)
    kwargs["name"] = body.get("name") or ""
    return _build(cls, kwargs)


def toxics_from_json(body: Mapping[str, Any]) -> tuple[Toxic, ...]:
    """Build the toxics of one Toxiproxy JSON object: one, or two for ``"stream": "both"``.

    ``both`` is a resetguard extension, as on the command line: the same toxic on each
    stream, named ``<name>_upstream`` and ``<name>_downstream`` (``<type>_upstream`` ...
    without a name). ``upstream`` and ``downstream`` keep Toxiproxy's meaning.

    Example::

        >>> [t.name for t in toxics_from_json({"type": "latency", "stream": "both"})]
        ['latency_upstream', 'latency_downstream']
    """
    if not isinstance(body, Mapping) or body.get("stream") != "both":
        return (toxic_from_json(body),)
    name = body.get("name") or ""
    return tuple(
        toxic_from_json({**body, "stream": s, "name": f"{name}_{s}" if name else ""})
        for s in STREAMS
    )


def _parse_value(cls: type[Toxic], key: str, raw: str, f: dataclasses.Field[Any]) -> Any:
    unit = f.metadata["unit"]
    choices = f.metadata["choices"]
    if choices:
        if raw not in choices:
            allowed = " or ".join(choices)
            raise ToxicError(f"attribute {key!r} must be {allowed}, got {raw!r}")
        return raw
    m = _NUMBER_WITH_UNIT.match(raw)
    suffix = m.group(2) if m else None
    if m is None or (suffix is not None and unit not in _UNIT_SECONDS):
        what = f"a whole number of {unit}"
        if unit in _UNIT_SECONDS:
            what += " (or a duration such as 250ms, 2s, 500us)"
        raise ToxicError(f"attribute {key!r} must be {what}, got {raw!r}")
    number = float(m.group(1).replace("_", ""))
    if suffix is not None:
        number = number * _DURATION_UNITS[suffix] / _UNIT_SECONDS[unit]
    rounded = round(number)
    if not math.isclose(number, rounded, rel_tol=0, abs_tol=1e-9):
        raise ToxicError(f"attribute {key!r} must be a whole number of {unit}, got {raw!r}")
    return rounded


def parse_toxic(spec: str) -> tuple[Toxic, ...]:
    """Parse a CLI toxic spec: ``TYPE[:STREAM][:KEY=VALUE]...``.

    ``STREAM`` is ``upstream``, ``downstream`` (default) or ``both`` (two toxics, named
    ``<name>_upstream`` and ``<name>_downstream``). Keys are the toxic's attributes plus
    ``toxicity`` and ``name``. Time attributes take a plain number in the attribute's
    unit or a duration with ``us``, ``ms`` or ``s``::

        reset_peer:downstream:timeout=500ms:toxicity=0.5
        latency:both:latency=100:jitter=10
        idle_reset:upstream:idle=2s:close=fin

    Raises :class:`ToxicError` naming the bad part.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ToxicError("empty toxic spec")
    parts = spec.strip().split(":")
    try:
        cls = _lookup(parts[0])
    except ToxicError as exc:
        raise ToxicError(f"bad toxic spec {spec!r}: {exc}") from None
    rest = parts[1:]
    streams: tuple[str, ...] = ("downstream",)
    if rest and "=" not in rest[0]:
        if rest[0] == "both":
            streams = STREAMS
        elif rest[0] in STREAMS:
            streams = (rest[0],)
        else:
            raise ToxicError(
                f"bad toxic spec {spec!r}: stream must be upstream, downstream or both,"
                f" got {rest[0]!r}"
            )
        rest = rest[1:]
    fields = _attr_fields(cls)
    kwargs: dict[str, Any] = {}
    name = ""
    for part in rest:
        key, eq, raw = part.partition("=")
        key = key.strip()
        raw = raw.strip()
        if not eq or not key or not raw:
            raise ToxicError(f"bad toxic spec {spec!r}: expected KEY=VALUE, got {part!r}")
        if key in kwargs or (key == "name" and name):
            raise ToxicError(f"bad toxic spec {spec!r}: {key!r} given twice")
        try:
            if key == "toxicity":
                try:
                    kwargs["toxicity"] = float(raw)
                except ValueError:
                    raise ToxicError(
                        f"toxicity must be a number from 0 to 1, got {raw!r}"
                    ) from None
            elif key == "name":
                name = raw
            elif key in fields:
                kwargs[key] = _parse_value(cls, key, raw, fields[key])
            else:
                known = ", ".join([*fields, "toxicity", "name"])
                raise ToxicError(f"unknown key {key!r} for {cls.TYPE} (keys: {known})")
        except ToxicError as exc:
            raise ToxicError(f"bad toxic spec {spec!r}: {exc}") from None
    out = []
    for stream in streams:
        toxic_name = name
        if name and len(streams) > 1:
            toxic_name = f"{name}_{stream}"
        try:
            out.append(_build(cls, {**kwargs, "stream": stream, "name": toxic_name}))
        except ToxicError as exc:
            raise ToxicError(f"bad toxic spec {spec!r}: {exc}") from None
    return tuple(out)
