"""The database faults F1-F6, driven the same way for every driver.

A scenario opens the driver's object (connection, pool, engine), warms it up, and hands
:func:`run_sync` / :func:`run_async` a ``call(sql)`` that runs one statement through it,
plus how to kill its session and how to see that a statement is executing. What the
research did, made short: statements sleep ~1 s instead of 3 s, the kill comes as soon as
the server shows the statement executing (instead of after 1 s), idle timeouts are
per-session and sub-second where the server allows it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ._servers import FaultProxy


@dataclass
class Env:
    kill: Callable[[], object]  # server-side kill of the scenario's session(s)
    wait_active: Callable[[], object]  # returns once the slow statement is executing
    proxy: FaultProxy | None  # the RST proxy the driver connects through (F6)
    idle_wait: float  # F4: how long to stay idle so the server's idle timeout fires
    settle: float = 0.1  # F1/F3: let the FIN reach the client before the next call


def _background(target: Callable[[], object]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:  # reported by the caller after join()
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def _fault_action(fault: str, env: Env) -> Callable[[], object]:
    if fault == "F2":

        def kill_when_active() -> None:
            env.wait_active()
            env.kill()

        return kill_when_active
    if fault == "F6":
        proxy = env.proxy
        assert proxy is not None, "F6 needs the RST proxy"

        def reset_when_active() -> None:
            env.wait_active()
            assert proxy.reset_all() >= 1, "the proxy had no connection to reset"

        return reset_when_active
    raise ValueError(f"not an in-flight fault: {fault!r}")


def run_sync(
    fault: str, env: Env, call: Callable[[str], object], insert_sql: str, slow_sql: str
) -> BaseException | None:
    """Inflict ``fault`` and return what the next / in-flight statement raised."""
    if fault in ("F1", "F3"):
        env.kill()
        time.sleep(env.settle)
    elif fault == "F4":
        time.sleep(env.idle_wait)
    if fault in ("F1", "F3", "F4"):
        try:
            call(insert_sql)
        except Exception as exc:
            return exc
        return None
    thread, errors = _background(_fault_action(fault, env))
    try:
        call(slow_sql)
    except Exception as exc:
        return exc
    finally:
        thread.join(5.0)
        if errors:
            raise errors[0]
    return None


async def run_async(
    fault: str,
    env: Env,
    call: Callable[[str], Awaitable[Any]],
    insert_sql: str,
    slow_sql: str,
) -> BaseException | None:
    """The asyncio twin of :func:`run_sync`; the admin work runs in a worker thread."""
    if fault in ("F1", "F3"):
        await asyncio.to_thread(env.kill)
        await asyncio.sleep(env.settle)
    elif fault == "F4":
        await asyncio.sleep(env.idle_wait)
    if fault in ("F1", "F3", "F4"):
        try:
            await call(insert_sql)
        except Exception as exc:
            return exc
        return None
    side = asyncio.ensure_future(asyncio.to_thread(_fault_action(fault, env)))
    try:
        await call(slow_sql)
    except Exception as exc:
        return exc
    finally:
        await asyncio.wait_for(side, 5.0)
    return None
