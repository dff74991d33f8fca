"""The Starlette and FastAPI applications the ASGI tests serve, and what their handlers saw.

Each long request carries ``?id=…``; its handler records when it started, how many work
steps it ran and when its cleanup (``finally``) ran, on the shared monotonic clock.
"""

import asyncio
import hashlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from resetguard.asgi import cancel_on_disconnect, current_disconnect, stream

STEPS = 200  # 200 steps of 10 ms: 2 s of work when nobody stops it
STEP = 0.01
# Work in a thread cannot be interrupted, only stopped between steps: shorter steps there.
THREAD_STEPS = 1000
THREAD_STEP = 0.002


@dataclass
class Record:
    started: threading.Event = field(default_factory=threading.Event)
    cleaned: threading.Event = field(default_factory=threading.Event)
    steps: int = 0
    cleaned_at: float = 0.0
    saw_signal: bool = False


class Records:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, Record] = {}

    def get(self, key: str) -> Record:
        with self._lock:
            return self._records.setdefault(key, Record())


RECORDS = Records()


def _key(request: Any) -> str:
    return str(request.query_params.get("id", ""))


async def async_work(request: Any) -> Any:
    from starlette.responses import PlainTextResponse

    rec = RECORDS.get(_key(request))
    rec.started.set()
    try:
        for _ in range(STEPS):
            await asyncio.sleep(STEP)
            rec.steps += 1
    finally:
        gone = current_disconnect()
        rec.saw_signal = bool(gone and gone.is_set())
        rec.cleaned_at = time.monotonic()
        rec.cleaned.set()
    return PlainTextResponse("done")


def sync_work(request: Any) -> Any:
    from starlette.responses import PlainTextResponse

    rec = RECORDS.get(_key(request))
    rec.started.set()
    gone = current_disconnect()
    try:
        for _ in range(THREAD_STEPS):
            if gone is not None and gone.is_set():
                break
            time.sleep(THREAD_STEP)
            rec.steps += 1
    finally:
        rec.saw_signal = bool(gone and gone.is_set())
        rec.cleaned_at = time.monotonic()
        rec.cleaned.set()
    return PlainTextResponse("done")


def _chunks(rec: Record) -> Iterator[bytes]:
    rec.started.set()
    try:
        for _ in range(THREAD_STEPS):
            yield b"x" * 64
            time.sleep(THREAD_STEP)
            rec.steps += 1
    finally:
        gone = current_disconnect()
        rec.saw_signal = bool(gone and gone.is_set())
        rec.cleaned_at = time.monotonic()
        rec.cleaned.set()


def streaming(request: Any) -> Any:
    from starlette.responses import StreamingResponse

    return StreamingResponse(stream(_chunks(RECORDS.get(_key(request)))))


async def _achunks(rec: Record) -> AsyncIterator[bytes]:
    rec.started.set()
    try:
        for _ in range(STEPS):
            yield b"x" * 64
            await asyncio.sleep(STEP)
            rec.steps += 1
    finally:
        rec.cleaned_at = time.monotonic()
        rec.cleaned.set()


async def async_streaming(request: Any) -> Any:
    from starlette.responses import StreamingResponse

    return StreamingResponse(stream(_achunks(RECORDS.get(_key(request)))))


async def echo(request: Any) -> Any:
    from starlette.responses import JSONResponse

    await asyncio.sleep(0.2)  # the watcher reads ahead meanwhile
    body = await request.body()
    return JSONResponse({"sha256": hashlib.sha256(body).hexdigest(), "length": len(body)})


async def ping(request: Any) -> Any:
    from starlette.responses import PlainTextResponse

    return PlainTextResponse("pong")


async def short_work(request: Any) -> Any:
    """Runs 30 steps whatever happens (not opted in when the app-wide cancel is off)."""
    from starlette.responses import PlainTextResponse

    rec = RECORDS.get(_key(request))
    rec.started.set()
    try:
        for _ in range(30):
            await asyncio.sleep(STEP)
            rec.steps += 1
    finally:
        gone = current_disconnect()
        rec.saw_signal = bool(gone and gone.is_set())
        rec.cleaned_at = time.monotonic()
        rec.cleaned.set()
    return PlainTextResponse("late answer")


opted_work = cancel_on_disconnect(async_work)
opted_sync_work = cancel_on_disconnect(sync_work)

ROUTES: dict[str, Callable[..., Any]] = {
    "/async": async_work,
    "/sync": sync_work,
    "/stream": streaming,
    "/astream": async_streaming,
    "/ping": ping,
    "/short": short_work,
    "/opted": opted_work,
    "/opted-sync": opted_sync_work,
}


def starlette_app(middleware: list[Any] | None = None) -> Any:
    from starlette.applications import Starlette
    from starlette.routing import Route

    routes = [Route(path, fn) for path, fn in ROUTES.items()]
    routes.append(Route("/echo", echo, methods=["POST"]))
    return Starlette(routes=routes, middleware=middleware)


def fastapi_app() -> Any:
    from fastapi import FastAPI, Request
    from fastapi.responses import PlainTextResponse, StreamingResponse

    api = FastAPI()

    @api.get("/async")
    async def f_async(request: Request) -> PlainTextResponse:
        return await async_work(request)  # type: ignore[no-any-return]

    @api.get("/sync")
    def f_sync(request: Request) -> PlainTextResponse:
        return sync_work(request)  # type: ignore[no-any-return]

    @api.get("/stream")
    def f_stream(id: str) -> StreamingResponse:
        return StreamingResponse(stream(_chunks(RECORDS.get(id))))

    @api.get("/astream")
    async def f_astream(id: str) -> StreamingResponse:
        return StreamingResponse(stream(_achunks(RECORDS.get(id))))

    @api.get("/ping")
    async def f_ping() -> PlainTextResponse:
        return PlainTextResponse("pong")

    @api.get("/opted")
    @cancel_on_disconnect
    async def f_opted(request: Request, id: str) -> PlainTextResponse:
        assert id
        return await async_work(request)  # type: ignore[no-any-return]

    @api.post("/echo")
    async def f_echo(request: Request) -> Any:
        return await echo(request)

    return api
