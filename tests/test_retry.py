from __future__ import annotations

import asyncio
import inspect
import logging
import math
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

import resetguard
from resetguard import Backoff, Kind, Retry

from ._faketime import FakeTime


def reset() -> ConnectionResetError:
    return ConnectionResetError(104, "Connection reset by peer")


class Flaky:
    """Fails with the given exceptions in order, then returns 'ok'."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self, *args: object, **kwargs: object) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


# --------------------------------------------------------------------------- success path


def test_success_path_never_sleeps_or_classifies() -> None:
    t = FakeTime()
    fn = Flaky()
    wrapped = resetguard.retry(**t.options())(fn)
    assert wrapped() == "ok"
    assert fn.calls == 1
    assert t.sleeps == []


def test_decorator_preserves_signature_and_metadata() -> None:
    def add(a: int, b: int = 2) -> int:
        """Adds."""
        return a + b

    plain_signature = inspect.signature(add)
    add = resetguard.retry()(add)
    assert add(1) == 3
    assert add.__name__ == "add"
    assert add.__doc__ == "Adds."
    assert inspect.signature(add) == plain_signature


# --------------------------------------------------------------------------- retries


def test_retries_connection_faults_with_backoff_schedule() -> None:
    t = FakeTime()
    fn = Flaky(reset(), BrokenPipeError(32, "Broken pipe"))
    b = Backoff(initial=0.1, multiplier=2, cap=10, jitter="none")
    assert resetguard.retry(backoff=b, **t.options())(fn)() == "ok"
    assert fn.calls == 3
    assert t.sleeps == [0.1, 0.2]


def test_full_jitter_uses_injected_random() -> None:
    t = FakeTime()
    fn = Flaky(reset())
    resetguard.retry(**t.options())(fn)()  # default full jitter, random() = 0.5
    assert t.sleeps == [pytest.approx(0.05)]


def test_gives_up_after_attempts_and_reraises_the_same_exception_with_history() -> None:
    t = FakeTime()
    errors = [reset(), reset(), reset()]
    fn = Flaky(*errors)
    with pytest.raises(ConnectionResetError) as info:
        resetguard.retry(**t.options())(fn)()
    assert info.value is errors[2]
    hist = resetguard.history(info.value)
    assert [a.number for a in hist] == [1, 2, 3]
    assert [a.exception for a in hist] == errors
    assert hist[-1].delay is None
    assert all(a.failure is not None and a.failure.kind is Kind.RESET for a in hist)
    assert "gave up after 3 attempt(s): attempts exhausted" in info.value.__notes__[0]


def test_context_of_user_exception_is_preserved() -> None:
    def fails() -> None:
        try:
            raise reset()
        except ConnectionResetError:
            raise RuntimeError("wrapped by the app") from None

    def chained() -> None:
        try:
            raise OSError(104, "inner")
        except OSError as inner:
            raise ConnectionError("outer") from inner

    t = FakeTime()
    with pytest.raises(ConnectionError) as info:
        resetguard.retry(**t.options())(chained)()
    assert isinstance(info.value.__cause__, OSError)
    assert len(resetguard.history(info.value)) == 3
    with pytest.raises(RuntimeError):
        resetguard.retry(**t.options())(fails)()


@pytest.mark.parametrize("exc", [KeyError("k"), ValueError("v"), OSError(2, "No such file")])
def test_non_connection_faults_are_not_retried(exc: BaseException) -> None:
    t = FakeTime()
    fn = Flaky(exc)
    with pytest.raises(type(exc)):
        resetguard.retry(**t.options())(fn)()
    assert fn.calls == 1
    assert t.sleeps == []


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt(), SystemExit(1)])
def test_interrupts_are_never_retried_or_swallowed(interrupt: BaseException) -> None:
    fn = Flaky(interrupt)
    with pytest.raises(type(interrupt)):
        resetguard.retry(backoff=Backoff.none())(fn)()
    assert fn.calls == 1


def test_zero_delay_never_calls_sleep() -> None:
    t = FakeTime()
    fn = Flaky(reset(), reset())
    assert resetguard.retry(backoff=Backoff.none(), **t.options())(fn)() == "ok"
    assert fn.calls == 3
    assert t.sleeps == []


def test_testing_switch_turns_waits_off() -> None:
    from resetguard.testing import no_waits

    t = FakeTime()
    fn = Flaky(reset(), reset())
    with no_waits():
        assert resetguard.retry(backoff=Backoff.constant(5), **t.options())(fn)() == "ok"
    assert t.sleeps == []
    assert resetguard.testing.waits_enabled()


# --------------------------------------------------------------------------- safety


def test_non_idempotent_is_not_retried_after_a_send() -> None:
    t = FakeTime()
    fn = Flaky(reset())  # a reset with no phase: the write may have happened
    with pytest.raises(ConnectionResetError) as info:
        resetguard.retry(idempotent=False, **t.options())(fn)()
    assert fn.calls == 1
    assert "outcome unknown" in info.value.__notes__[0]


def test_non_idempotent_is_retried_when_nothing_was_sent() -> None:
    t = FakeTime()
    fn = Flaky(ConnectionRefusedError(111, "Connection refused"))
    assert resetguard.retry(idempotent=False, **t.options())(fn)() == "ok"
    assert fn.calls == 2


def test_on_predicate_with_non_idempotent_needs_proof_of_no_send() -> None:
    class AppError(Exception):
        pass

    t = FakeTime()
    fn = Flaky(AppError())
    with pytest.raises(AppError):
        resetguard.retry(on=AppError, idempotent=False, **t.options())(fn)()
    assert fn.calls == 1


@pytest.mark.parametrize(
    "on",
    [KeyError, (KeyError, IndexError), lambda exc: isinstance(exc, KeyError)],
)
def test_on_accepts_type_tuple_and_predicate(on: object) -> None:
    t = FakeTime()
    fn = Flaky(KeyError("a"), KeyError("b"))
    assert resetguard.retry(on=on, **t.options())(fn)() == "ok"
    assert fn.calls == 3


def test_kinds_limits_what_is_retried() -> None:
    t = FakeTime()
    fn = Flaky(ConnectionRefusedError(111, "refused"))
    with pytest.raises(ConnectionRefusedError):
        resetguard.retry(kinds={"reset"}, **t.options())(fn)()
    assert fn.calls == 1


# --------------------------------------------------------------------------- deadline


def test_deadline_clamps_the_wait_then_gives_up() -> None:
    t = FakeTime()
    fn = Flaky(reset(), reset(), reset())
    policy = dict(t.options(), deadline=1.5, attempts=5, backoff=Backoff.constant(1.0))
    with pytest.raises(ConnectionResetError) as info:
        resetguard.retry(**policy)(fn)()
    assert t.sleeps == [1.0, 0.5]  # the second wait is clamped to what remains
    assert fn.calls == 3
    assert "deadline reached" in info.value.__notes__[0]


def test_deadline_counts_the_first_attempt() -> None:
    t = FakeTime()

    def slow_then_reset() -> None:
        t.now += 2.0
        raise reset()

    with pytest.raises(ConnectionResetError):
        resetguard.retry(deadline=1.0, **t.options())(slow_then_reset)()
    assert t.sleeps == []


def test_server_requested_delay_overrides_backoff_and_is_clamped() -> None:
    class Busy(ConnectionResetError):
        retry_after = 7.0

    t = FakeTime()
    fn = Flaky(Busy(104, "busy"), Busy(104, "busy"))
    opts = dict(t.options(), deadline=10.0, retry_after=lambda e: getattr(e, "retry_after", None))
    assert resetguard.retry(**opts)(fn)() == "ok"
    assert t.sleeps == [7.0, 3.0]


# --------------------------------------------------------------------------- hooks & logs


def test_hooks_receive_frozen_events() -> None:
    t = FakeTime()
    retries: list[resetguard.RetryScheduled] = []
    giveups: list[resetguard.GaveUp] = []
    everything: list[resetguard.Event] = []
    resetguard.add_hook(everything.append)
    try:
        fn = Flaky(reset(), reset(), reset())
        with pytest.raises(ConnectionResetError):
            resetguard.retry(on_retry=retries.append, on_giveup=giveups.append, **t.options())(fn)()
    finally:
        resetguard.remove_hook(everything.append)
    assert [e.attempt for e in retries] == [1, 2]
    assert retries[0].max_attempts == 3
    assert len(giveups) == 1
    assert giveups[0].reason == "attempts"
    assert giveups[0].attempts == 3
    kinds = [type(e).__name__ for e in everything]
    assert kinds.count("AttemptFailed") == 3
    assert kinds.count("RetryScheduled") == 2
    assert kinds.count("GaveUp") == 1
    with pytest.raises(AttributeError):
        retries[0].delay = 0  # type: ignore[misc]


def test_retry_success_event_after_a_retry() -> None:
    t = FakeTime()
    seen: list[resetguard.Event] = []
    resetguard.add_hook(seen.append)
    try:
        resetguard.retry(**t.options())(Flaky(reset()))()
    finally:
        resetguard.remove_hook(seen.append)
    done = [e for e in seen if isinstance(e, resetguard.RetrySucceeded)]
    assert len(done) == 1
    assert done[0].attempts == 2


def test_log_message(caplog: pytest.LogCaptureFixture) -> None:
    t = FakeTime()
    caplog.set_level(logging.INFO, logger="resetguard.retry")
    fn = Flaky(reset())
    opts = dict(t.options(), backoff=Backoff.constant(0.18))

    @resetguard.retry(**opts)
    def fetch() -> str:
        return fn()

    fetch()
    assert any(
        r.getMessage().startswith("connection reset, retrying in 180 ms (attempt 2/3)")
        for r in caplog.records
    )


# --------------------------------------------------------------------------- retrying()


def test_retrying_block() -> None:
    t = FakeTime()
    fn = Flaky(reset(), reset())
    numbers = []
    for attempt in resetguard.retrying(**t.options()):
        with attempt:
            numbers.append(attempt.number)
            fn()
    assert numbers == [1, 2, 3]
    assert len(t.sleeps) == 2


def test_retrying_reraises_when_giving_up() -> None:
    t = FakeTime()
    tries = []

    def block() -> None:
        for attempt in resetguard.retrying(**t.options()):
            with attempt:
                tries.append(attempt.number)
                raise KeyError("not retried")

    with pytest.raises(KeyError):
        block()
    assert tries == [1]


def test_retrying_requires_with() -> None:
    with pytest.raises(RuntimeError, match="with attempt"):
        for _attempt in resetguard.retrying():
            pass


def test_async_retrying_block() -> None:
    t = FakeTime()
    fn = Flaky(reset())

    async def main() -> list[int]:
        numbers = []
        async for attempt in resetguard.retrying(**t.options()):
            async with attempt:
                numbers.append(attempt.number)
                fn()
        return numbers

    assert asyncio.run(main()) == [1, 2]


# --------------------------------------------------------------------------- async


def test_async_function_retried_on_asyncio() -> None:
    t = FakeTime()
    fn = Flaky(reset(), reset())

    @resetguard.retry(**t.options())
    async def fetch(x: int) -> str:
        await asyncio.sleep(0)
        return fn() + str(x)

    assert asyncio.run(fetch(1)) == "ok1"
    assert fn.calls == 3
    assert len(t.sleeps) == 2
    assert inspect.iscoroutinefunction(fetch)


def test_async_cancellation_is_not_retried() -> None:
    calls = 0

    @resetguard.retry(backoff=Backoff.none())
    async def slow() -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(10)

    async def main() -> None:
        task = asyncio.create_task(slow())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert calls == 1


def test_async_real_sleep_in_asyncio() -> None:
    fn = Flaky(reset())

    @resetguard.retry(backoff=Backoff.constant(0.01))
    async def fetch() -> str:
        return fn()

    assert asyncio.run(fetch()) == "ok"


def test_trio_driver_uses_trio_sleep() -> None:
    trio = pytest.importorskip("trio")
    fn = Flaky(reset(), reset())

    @resetguard.retry(backoff=Backoff.constant(0.01))
    async def fetch() -> str:
        await trio.sleep(0)
        return fn()

    assert trio.run(fetch) == "ok"
    assert fn.calls == 3


def test_policy_call_and_acall() -> None:
    t = FakeTime()
    policy = Retry(**t.options())  # type: ignore[arg-type]
    assert policy.call(Flaky(reset())) == "ok"

    async def coro() -> str:
        return "async"

    assert asyncio.run(policy.acall(coro)) == "async"
    assert resetguard.call(int, "7") == 7


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"attempts": 0}, ValueError, "attempts"),
        ({"attempts": 2.5}, TypeError, "2.5"),
        ({"deadline": -1}, ValueError, "deadline"),
        ({"deadline": math.nan}, ValueError, "nan"),
        ({"on": 5}, TypeError, "5"),
        ({"on": (KeyError, "x")}, TypeError, "'x'"),
        ({"on": int}, TypeError, "int"),
        ({"kinds": {"resett"}}, ValueError, "resett"),
        ({"kinds": "reset"}, TypeError, "reset"),
        ({"idempotent": "no"}, TypeError, "no"),
        ({"backoff": 1.0}, TypeError, "1.0"),
        ({"sleep": 3}, TypeError, "sleep"),
        ({"attemps": 3}, TypeError, "attemps"),
    ],
)
def test_bad_retry_arguments_name_the_value(
    kwargs: dict[str, object], error: type, names: str
) -> None:
    with pytest.raises(error, match=names):
        resetguard.retry(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"initial": -0.1}, "initial"),
        ({"initial": math.nan}, "nan"),
        ({"cap": math.inf}, "cap"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"jitter": "fulll"}, "fulll"),
        ({"initial": 2, "cap": 1}, "cap"),
    ],
)
def test_bad_backoff_arguments_name_the_value(kwargs: dict[str, object], names: str) -> None:
    with pytest.raises(ValueError, match=names):
        Backoff(**kwargs)  # type: ignore[arg-type]


def test_retry_without_parentheses_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="parentheses"):
        resetguard.retry(lambda: None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- backoff


def test_backoff_jitters() -> None:
    half = lambda: 0.5  # noqa: E731
    assert Backoff(jitter="equal").delay(2, 0, half) == pytest.approx(0.15)
    assert Backoff(jitter="full").delay(2, 0, half) == pytest.approx(0.1)
    assert Backoff(jitter="none", cap=0.3).delay(5, 0, half) == 0.3
    d = Backoff(jitter="decorrelated", initial=0.1, cap=10).delay(2, 1.0, half)
    assert d == pytest.approx(0.1 + (3.0 - 0.1) * 0.5)
    assert Backoff(jitter="none").delay(10_000, 0, half) == 10.0  # no overflow


# --------------------------------------------------------------------------- real sockets


@pytest.fixture
def rst_then_serve() -> Iterator[tuple[int, list[int]]]:
    """A loopback server that RSTs its first two connections, then answers b'pong'."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.05)
    accepted: list[int] = []
    stop = threading.Event()

    def serve() -> None:
        import struct

        for _ in range(200):  # bounded: at most 10 s of 50 ms accept timeouts
            if stop.is_set() or len(accepted) >= 10:
                return
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            accepted.append(1)
            with conn:
                conn.recv(100)
                if len(accepted) <= 2:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                else:
                    conn.sendall(b"pong")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield srv.getsockname()[1], accepted
    stop.set()
    srv.close()
    thread.join(5)


def test_real_reset_from_a_loopback_server_is_retried(
    rst_then_serve: tuple[int, list[int]],
) -> None:
    port, accepted = rst_then_serve

    @resetguard.retry(backoff=Backoff.constant(0.01))
    def ping() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"ping")
            data = s.recv(100)
            if not data:
                raise ConnectionResetError(104, "closed")
            return data

    assert ping() == b"pong"
    assert len(accepted) == 3


def test_real_refused_connection_gives_up_with_history(unused_port: int) -> None:
    @resetguard.retry(attempts=2, backoff=Backoff.constant(0.01), idempotent=False)
    def connect() -> None:
        socket.create_connection(("127.0.0.1", unused_port), timeout=2).close()

    with pytest.raises(ConnectionRefusedError) as info:
        connect()
    hist = resetguard.history(info.value)
    assert len(hist) == 2
    assert hist[0].failure is not None
    assert hist[0].failure.kind is Kind.REFUSED


# --------------------------------------------------------------------------- purity


def test_import_resetguard_is_stdlib_only() -> None:
    code = (
        "import sys; before = set(sys.modules); import resetguard, resetguard.testing; "
        "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
        "bad = sorted(m for m in new if m not in sys.stdlib_module_names and m != 'resetguard'); "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_giving_up_leaves_no_reference_cycle() -> None:
    """The history attached to an exception must not lead back to it (GC-free failures)."""
    import gc

    @resetguard.retry(backoff=Backoff.none())
    def down() -> None:
        raise ConnectionResetError(104, "Connection reset by peer")

    @resetguard.retry(backoff=Backoff.none())
    def recovers(state: list[int]) -> None:
        state.append(1)
        if len(state) == 1:
            raise ConnectionResetError(104, "Connection reset by peer")

    gc.collect()
    gc.disable()
    try:
        for _ in range(50):
            with pytest.raises(ConnectionResetError) as info:
                down()
            assert len(resetguard.history(info.value)) == 3
            assert resetguard.history(info.value)[-1].exception is info.value
            del info
            recovers([])
        assert gc.collect() == 0
    finally:
        gc.enable()
