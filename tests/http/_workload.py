"""Workloads shared by the HTTP fault tests: requests spaced around the server's idle timeout."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ._server import FaultServer

Send = Callable[[str, str, dict[str, str], bytes | None], object]
ASend = Callable[[str, str, dict[str, str], bytes | None], Awaitable[object]]


@dataclass
class Outcome:
    errors: dict[str, list[BaseException]] = field(default_factory=dict)
    ids: dict[str, list[str]] = field(default_factory=dict)

    def add(self, method: str, rid: str, error: BaseException | None) -> None:
        self.ids.setdefault(method, []).append(rid)
        if error is not None:
            self.errors.setdefault(method, []).append(error)

    def count(self, method: str) -> int:
        return len(self.errors.get(method, []))

    def max_executions(self, server: FaultServer, method: str) -> int:
        return max((server.executions[r] for r in self.ids.get(method, [])), default=0)


def _plan(n: int, methods: tuple[str, ...], gap: tuple[float, float], seed: int):
    rnd = random.Random(seed)
    for i in range(n):
        yield methods[i % len(methods)], rnd.uniform(*gap)


def _request(method: str, key: bool) -> tuple[str, dict[str, str], bytes | None]:
    rid = uuid.uuid4().hex
    headers = {"X-Req-Id": rid}
    if key and method == "POST":
        headers["Idempotency-Key"] = rid
    return rid, headers, (b"payload" if method in ("POST", "PUT") else None)


def run(
    send: Send,
    *,
    n: int,
    path: str = "/ok",
    methods: tuple[str, ...] = ("GET", "POST"),
    gap: tuple[float, float] = (0.0, 0.0),
    seed: int = 7,
    key: bool = False,
    deadline: float = 30.0,
) -> Outcome:
    out = Outcome()
    end = time.monotonic() + deadline
    for method, pause in _plan(n, methods, gap, seed):
        if time.monotonic() > end:
            raise AssertionError("workload overran its time limit")
        rid, headers, body = _request(method, key)
        try:
            send(method, path, headers, body)
            out.add(method, rid, None)
        except Exception as exc:
            out.add(method, rid, exc)
        if pause:
            time.sleep(pause)
    return out


async def arun(
    send: ASend,
    *,
    n: int,
    path: str = "/ok",
    methods: tuple[str, ...] = ("GET", "POST"),
    gap: tuple[float, float] = (0.0, 0.0),
    seed: int = 7,
    key: bool = False,
    deadline: float = 30.0,
) -> Outcome:
    out = Outcome()
    end = time.monotonic() + deadline
    for method, pause in _plan(n, methods, gap, seed):
        if time.monotonic() > end:
            raise AssertionError("workload overran its time limit")
        rid, headers, body = _request(method, key)
        try:
            await send(method, path, headers, body)
            out.add(method, rid, None)
        except Exception as exc:
            out.add(method, rid, exc)
        if pause:
            await asyncio.sleep(pause)
    return out
