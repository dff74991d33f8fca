"""The control API: Toxiproxy's HTTP API, same paths, JSON bodies and status codes.

Endpoints (all JSON)::

    GET    /proxies                      200 {name: proxy}
    POST   /proxies                      201 proxy | 400 missing field | 409 exists | 500 bind
    POST   /populate                     201 {"proxies": [...]} | 400
    GET    /proxies/{p}                  200 proxy | 404
    POST   /proxies/{p}  (PATCH too)     200 proxy
    DELETE /proxies/{p}                  204
    GET    /proxies/{p}/toxics           200 [toxic]
    POST   /proxies/{p}/toxics           200 toxic | 400 bad type/stream/body | 409 exists
                                         ("stream": "both": 200 [toxic, toxic], an extension)
    GET    /proxies/{p}/toxics/{t}       200 toxic | 404
    POST   /proxies/{p}/toxics/{t} (PATCH too)  200 toxic
    DELETE /proxies/{p}/toxics/{t}       204
    POST   /reset                        204
    GET    /version                      200 {"version": ...}
    GET    /metrics                      200 Prometheus text format

Errors are ``{"error": message, "status": code}``. Requests whose ``User-Agent`` starts
with ``Mozilla/`` get 403, as in Toxiproxy, so a web page cannot drive the API.
The server is a small HTTP/1.1 implementation on asyncio streams (keep-alive,
``Content-Length`` and chunked bodies); it runs on the proxies' event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

from ._proxy import Engine, Proxy, ProxyError
from ._toxics import Toxic, ToxicError, toxic_from_json, toxics_from_json

__all__ = ["TOXIPROXY_API_VERSION", "ApiServer", "render_metrics", "start_api"]

_log = logging.getLogger("resetguard.proxy.api")

TOXIPROXY_API_VERSION = "2.12.0"  # the Toxiproxy release whose API this one follows
_MAX_BODY = 1 << 20  # bytes
_MAX_HEAD = 1 << 16  # bytes of request line + headers
_REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    411: "Length Required",
    413: "Payload Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


_Response = tuple[int, bytes, str]


def _json(status: int, obj: Any) -> _Response:
    return status, json.dumps(obj).encode(), "application/json"


def _error(status: int, message: str) -> _Response:
    return _json(status, {"error": message, "status": status})


class ApiServer:
    """The running API: its listening socket and its open client connections."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> tuple[str, int]:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return host, port

    def close(self) -> None:
        """Stop listening and close every client connection (keep-alive ones too)."""
        if self.server is not None:
            self.server.close()
        for writer in list(self.writers):
            writer.close()

    async def wait_closed(self) -> None:
        if self.server is not None:
            await self.server.wait_closed()


async def start_api(engine: Engine, host: str, port: int) -> ApiServer:
    """Serve the API for ``engine``'s proxies on ``host:port`` (on the running loop)."""
    api = ApiServer()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        api.writers.add(writer)
        try:
            await _serve_connection(engine, reader, writer)
        finally:
            api.writers.discard(writer)

    api.server = await asyncio.start_server(handle, host, port, reuse_address=True, limit=_MAX_HEAD)
    return api


async def _serve_connection(
    engine: Engine, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while True:
            try:
                request = await _read_request(reader)
            except _HttpError as exc:
                status, body, ctype = _error(exc.status, str(exc))
                _write(writer, status, body, ctype, close=True)
                break
            if request is None:
                break
            method, target, headers, body, keep_alive = request
            status, out, ctype = _dispatch(engine, method, target, headers, body)
            _write(writer, status, out, ctype, close=not keep_alive, head=method == "HEAD")
            await writer.drain()
            if not keep_alive:
                break
    except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        pass
    except Exception:  # pragma: no cover - a bug must not kill the API server
        _log.exception("API connection failed")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _read_request(
    reader: asyncio.StreamReader,
) -> tuple[str, str, dict[str, str], bytes, bool] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise _HttpError(400, "incomplete request") from None
        return None
    except asyncio.LimitOverrunError:
        raise _HttpError(431, "request head too large") from None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _HttpError(400, "malformed request line")
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise _HttpError(400, "malformed header line")
        headers[name.strip().lower()] = value.strip()
    connection = headers.get("connection", "").lower()
    keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
    body = b""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        total = 0
        while True:
            size_line = await reader.readuntil(b"\r\n")
            try:
                size = int(size_line.split(b";")[0].strip(), 16)
            except ValueError:
                raise _HttpError(400, "malformed chunk size") from None
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers
                break
            total += size
            if total > _MAX_BODY:
                raise _HttpError(413, "request body too large")
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(chunks)
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise _HttpError(400, "malformed Content-Length") from None
        if length > _MAX_BODY:
            raise _HttpError(413, "request body too large")
        body = await reader.readexactly(length)
    return method, target, headers, body, keep_alive


def _write(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes,
    ctype: str,
    *,
    close: bool,
    head: bool = False,
) -> None:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    if status != 204:
        lines.append(f"Content-Type: {ctype}")
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode()
    if status != 204 and not head:
        data += body
    writer.write(data)


# -- routing ----------------------------------------------------------------------------------


def _dispatch(
    engine: Engine, method: str, target: str, headers: dict[str, str], body: bytes
) -> _Response:
    if headers.get("user-agent", "").startswith("Mozilla/"):
        return 403, b"User agent not allowed\n", "text/plain; charset=utf-8"
    path = urlsplit(target).path
    segments = [unquote(s) for s in path.split("/")[1:]]
    if method == "HEAD":
        method = "GET"
    route = _route(segments)
    if route is None:
        return 404, b"404 page not found\n", "text/plain; charset=utf-8"
    handlers, args = route
    handler = handlers.get(method)
    if handler is None:
        return 405, b"", "text/plain; charset=utf-8"
    try:
        return handler(engine, body, *args)
    except ProxyError as exc:
        return _error(exc.status, str(exc))
    except ToxicError as exc:
        return _error(400, str(exc))


_Handler = Callable[..., _Response]


def _route(segments: list[str]) -> tuple[dict[str, _Handler], tuple[str, ...]] | None:
    n = len(segments)
    if n == 1 and segments[0] == "proxies":
        return {"GET": _proxy_index, "POST": _proxy_create}, ()
    if n == 1 and segments[0] == "populate":
        return {"POST": _populate}, ()
    if n == 1 and segments[0] == "reset":
        return {"POST": _reset}, ()
    if n == 1 and segments[0] == "version":
        return {"GET": _version}, ()
    if n == 1 and segments[0] == "metrics":
        return {"GET": _metrics}, ()
    if n >= 2 and segments[0] == "proxies" and segments[1]:
        if n == 2:
            return (
                {
                    "GET": _proxy_show,
                    "POST": _proxy_update,
                    "PATCH": _proxy_update,
                    "DELETE": _proxy_delete,
                },
                (segments[1],),
            )
        if n == 3 and segments[2] == "toxics":
            return {"GET": _toxic_index, "POST": _toxic_create}, (segments[1],)
        if n == 4 and segments[2] == "toxics" and segments[3]:
            return (
                {
                    "GET": _toxic_show,
                    "POST": _toxic_update,
                    "PATCH": _toxic_update,
                    "DELETE": _toxic_delete,
                },
                (segments[1], segments[3]),
            )
    return None


def _decode(body: bytes, kind: type) -> Any:
    try:
        value = json.loads(body.decode("utf-8") or "null")
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProxyError(f"bad request body: {exc}", 400) from None
    if not isinstance(value, kind):
        raise ProxyError(f"bad request body: expected a JSON {kind.__name__}", 400)
    return value


def _field(obj: dict[str, Any], key: str, kind: type, where: str = "") -> Any:
    value = obj.get(key)
    if value is not None and (
        not isinstance(value, kind) or isinstance(value, bool) != (kind is bool)
    ):
        raise ProxyError(f"bad request body: {key}{where} must be a {kind.__name__}", 400)
    return value


def _toxics_field(obj: dict[str, Any], where: str = "") -> tuple[Toxic, ...] | None:
    raw = obj.get("toxics")
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise ProxyError(f"bad request body: toxics{where} must be a list", 400)
    return tuple(toxic for t in raw for toxic in toxics_from_json(t))


def _proxy_json(proxy: Proxy) -> dict[str, Any]:
    return proxy.to_json()


def _proxy_index(engine: Engine, body: bytes) -> _Response:
    return _json(200, {name: _proxy_json(p) for name, p in engine.proxies.items()})


def _proxy_create(engine: Engine, body: bytes) -> _Response:
    obj = _decode(body, dict)
    name = _field(obj, "name", str)
    upstream = _field(obj, "upstream", str)
    listen = _field(obj, "listen", str) or ""
    enabled = _field(obj, "enabled", bool)
    if not name:
        raise ProxyError("missing required field: name", 400)
    if not upstream:
        raise ProxyError("missing required field: upstream", 400)
    toxics = _toxics_field(obj) or ()
    proxy = engine.create(
        name, listen, upstream, enabled=True if enabled is None else enabled, toxics=toxics
    )
    return _json(201, _proxy_json(proxy))


def _populate(engine: Engine, body: bytes) -> _Response:
    entries = _decode(body, list)
    checked = []
    for i, entry in enumerate(entries, 1):
        where = f" at proxy {i}"
        if not isinstance(entry, dict):
            raise ProxyError(f"bad request body: proxy {i} must be a JSON object", 400)
        name = _field(entry, "name", str, where)
        upstream = _field(entry, "upstream", str, where)
        if not name:
            raise ProxyError(f"missing required field: name{where}", 400)
        if not upstream:
            raise ProxyError(f"missing required field: upstream{where}", 400)
        enabled = _field(entry, "enabled", bool, where)
        checked.append(
            {
                "name": name,
                "listen": _field(entry, "listen", str, where) or "",
                "upstream": upstream,
                "enabled": True if enabled is None else enabled,
                "toxics": _toxics_field(entry, where),
            }
        )
    try:
        proxies = engine.populate(checked)
    except ProxyError as exc:
        done = exc.populated
        return _json(
            exc.status,
            {"error": str(exc), "status": exc.status, "proxies": [_proxy_json(p) for p in done]},
        )
    return _json(201, {"proxies": [_proxy_json(p) for p in proxies]})


def _proxy_show(engine: Engine, body: bytes, name: str) -> _Response:
    return _json(200, _proxy_json(engine.get(name)))


def _proxy_update(engine: Engine, body: bytes, name: str) -> _Response:
    engine.get(name)
    obj = _decode(body, dict)
    proxy = engine.update(
        name,
        listen=_field(obj, "listen", str) or None,
        upstream=_field(obj, "upstream", str) or None,
        enabled=_field(obj, "enabled", bool),
    )
    return _json(200, _proxy_json(proxy))


def _proxy_delete(engine: Engine, body: bytes, name: str) -> _Response:
    engine.remove(name)
    return 204, b"", ""


def _toxic_index(engine: Engine, body: bytes, name: str) -> _Response:
    proxy = engine.get(name)
    return _json(200, [t.to_json() for t in proxy.toxics.values()])


def _toxic_create(engine: Engine, body: bytes, name: str) -> _Response:
    proxy = engine.get(name)
    obj = _decode(body, dict)
    toxics = toxics_from_json(obj)
    if len(toxics) == 1:
        proxy.add_toxic(toxics[0])
        return _json(200, toxics[0].to_json())
    # "stream": "both" (an extension): both toxics or neither, answered as a list.
    for toxic in toxics:
        if toxic.name in proxy.toxics:
            raise ProxyError("toxic already exists", 409)
    for toxic in toxics:
        proxy.add_toxic(toxic)
    return _json(200, [t.to_json() for t in toxics])


def _get_toxic(proxy: Proxy, toxic_name: str) -> Toxic:
    toxic = proxy.toxics.get(toxic_name)
    if toxic is None:
        raise ProxyError("toxic not found", 404)
    return toxic


def _toxic_show(engine: Engine, body: bytes, name: str, toxic_name: str) -> _Response:
    return _json(200, _get_toxic(engine.get(name), toxic_name).to_json())


def _toxic_update(engine: Engine, body: bytes, name: str, toxic_name: str) -> _Response:
    proxy = engine.get(name)
    base = _get_toxic(proxy, toxic_name)
    toxic = toxic_from_json(_decode(body, dict), base=base)
    proxy.update_toxic(toxic)
    return _json(200, toxic.to_json())


def _toxic_delete(engine: Engine, body: bytes, name: str, toxic_name: str) -> _Response:
    engine.get(name).remove_toxic(toxic_name)
    return 204, b"", ""


def _reset(engine: Engine, body: bytes) -> _Response:
    engine.reset()
    return 204, b"", ""


def _version(engine: Engine, body: bytes) -> _Response:
    from .. import __version__

    return _json(200, {"version": TOXIPROXY_API_VERSION, "resetguard": __version__})


def _metrics(engine: Engine, body: bytes) -> _Response:
    return 200, render_metrics(engine).encode(), "text/plain; version=0.0.4; charset=utf-8"


# -- metrics -----------------------------------------------------------------------------------


def _labels(**labels: str) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in labels.items()) + "}"


def render_metrics(engine: Engine) -> str:
    """Prometheus text exposition of every proxy's and toxic's counters.

    ``resetguard_proxy_received_bytes_total`` / ``..._sent_bytes_total`` (also under
    Toxiproxy's names ``toxiproxy_proxy_*``), ``resetguard_proxy_connections_total``,
    ``resetguard_proxy_connections_active``, ``resetguard_proxy_toxic_connections_total``
    and ``resetguard_proxy_toxic_bytes_total``.
    """
    out: list[str] = []

    def family(name: str, kind: str, help_: str, samples: list[tuple[str, int]]) -> None:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(f"{name}{labels} {value}" for labels, value in samples)

    proxies = list(engine.proxies.values())
    totals = {p.name: p.stats for p in proxies}  # each sums over open connections: once
    for prefix in ("resetguard", "toxiproxy"):
        for index, (kind, what) in enumerate((("received", "read from"), ("sent", "written to"))):
            samples = []
            for p in proxies:
                for d, direction in enumerate(("upstream", "downstream")):
                    labels = _labels(
                        direction=direction, listener=p.listen, proxy=p.name, upstream=p.upstream
                    )
                    samples.append((labels, totals[p.name][d][index]))
            family(
                f"{prefix}_proxy_{kind}_bytes_total",
                "counter",
                f"Bytes {what} the sockets of a proxy, per direction.",
                samples,
            )
    family(
        "resetguard_proxy_connections_total",
        "counter",
        "Client connections accepted by a proxy.",
        [(_labels(proxy=p.name), p.connections_total) for p in proxies],
    )
    family(
        "resetguard_proxy_connections_active",
        "gauge",
        "Client connections open through a proxy.",
        [(_labels(proxy=p.name), len(p.conns)) for p in proxies],
    )
    toxic_rows = [
        (_labels(proxy=p.name, toxic=t.name, type=t.type, stream=t.stream), p.toxic_stats[t.name])
        for p in proxies
        for t in p.toxics.values()
    ]
    family(
        "resetguard_proxy_toxic_connections_total",
        "counter",
        "Connections a toxic was applied to (after its toxicity draw).",
        [(labels, stat[0]) for labels, stat in toxic_rows],
    )
    family(
        "resetguard_proxy_toxic_bytes_total",
        "counter",
        "Bytes that entered a toxic.",
        [(labels, stat[1]) for labels, stat in toxic_rows],
    )
    return "\n".join(out) + "\n"
