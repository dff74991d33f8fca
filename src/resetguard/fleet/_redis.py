"""The Redis backend: breakers and budgets shared by every process that uses the same keys."""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import os
import random
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

from .._validate import check_positive
from . import _scripts

if TYPE_CHECKING:
    from .._breaker import CircuitBreaker, _LinkedBreaker
    from .._budget import RetryBudget, _LinkedBudget

__all__ = ["RedisBackend"]

_log = logging.getLogger("resetguard.fleet")

#: Seconds between two syncs: how long a trip seen by one process takes to reach the others.
DEFAULT_SYNC_INTERVAL = 1.0
#: Socket timeout of the clients made by :meth:`RedisBackend.from_url`: the most a caller
#: can wait on an unreachable or stalled Redis, once, before the backend decides locally.
DEFAULT_TIMEOUT = 0.05
#: Seconds a key lives after the last process touched it.
DEFAULT_KEY_TTL = 86400.0
#: Seconds a half-open probe holds its fleet-wide slot if its process never reports back.
DEFAULT_PROBE_LEASE = 30.0

_STATE_NAMES = ("closed", "open", "half_open")


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisBackend:
    """Shares :class:`~resetguard.CircuitBreaker` and :class:`~resetguard.RetryBudget` state
    through Redis, so that a fleet of processes acts as one.

    Pass it as ``backend=`` to breakers and budgets (same ``name`` and ``namespace`` in every
    process). Each process keeps its local object as a cache: successes never touch Redis;
    a background syncer (a thread, or a task with an asyncio client) flushes the counts and
    pulls the fleet's state every ``sync_interval`` seconds; a trip, a half-open probe claim
    and a retry's budget token are each one atomic Lua script (one round trip).

    If Redis does not answer, nothing fails: the backend logs one warning, every breaker and
    budget decides locally, and the syncer reconnects and re-shares the local state.

    Args:
        client: a ``redis.Redis`` (standalone, or a Sentinel's ``master_for(...)``),
            ``redis.cluster.RedisCluster`` or ``redis.asyncio.Redis`` that fails fast:
            ``socket_timeout`` and ``socket_connect_timeout`` set, and no retries
            (``retry=Retry(NoBackoff(), 0)``). :meth:`from_url` makes one.
        namespace: prefix of every key (``<namespace>:breaker:<name>``,
            ``<namespace>:budget:<name>``).
        sync_interval: seconds between two syncs.
        key_ttl: seconds a key outlives the last process that used it.
        probe_lease: seconds a half-open probe's slot stays taken if its process dies
            (keep it above your slowest call: a probe still running past it lets another
            process probe too).
        sync_client: with an asyncio ``client``, the sync client for the decisions the
            engine makes synchronously (default: one to the same host, port and db).

    Example::

        >>> import resetguard
        >>> from resetguard.fleet import RedisBackend
        >>> backend = RedisBackend.from_url("redis://127.0.0.1:6379/0", namespace="doc")
        >>> breaker = resetguard.CircuitBreaker("db", backend=backend)
        >>> breaker.statistics().backend
        'fleet'
        >>> backend.close()
    """

    def __init__(
        self,
        client: Any,
        *,
        namespace: str = "resetguard",
        sync_interval: float = DEFAULT_SYNC_INTERVAL,
        key_ttl: float = DEFAULT_KEY_TTL,
        probe_lease: float = DEFAULT_PROBE_LEASE,
        sync_client: Any = None,
    ) -> None:
        if not isinstance(namespace, str) or not namespace:
            raise ValueError(f"namespace must be a non-empty str, got {namespace!r}")
        if not callable(getattr(client, "register_script", None)):
            raise TypeError(f"client must be a redis-py client, got {client!r}")
        self.namespace = namespace
        self.sync_interval = check_positive("sync_interval", sync_interval)
        self.key_ttl = check_positive("key_ttl", key_ttl)
        self.probe_lease = check_positive("probe_lease", probe_lease)
        self.asynchronous = inspect.iscoroutinefunction(client.execute_command)
        _check_fails_fast(client, "client")
        if self.asynchronous:
            if sync_client is None:
                sync_client = _sync_twin(client)
            _check_fails_fast(sync_client, "sync_client")
            self._async_scripts = _register(client)
        elif sync_client is not None:
            raise ValueError("sync_client is only for an asyncio client")
        else:
            sync_client = client
        self.client = client
        self._sync_client = sync_client
        # Clients this backend made (from_url, the sync twin) are closed with it.
        self._owned: list[Any] = [] if sync_client is client else [sync_client]
        self._scripts = _register(sync_client)
        self._links: weakref.WeakSet[_Link] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._pass_lock = threading.Lock()  # one sync pass at a time: counts are sent once
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None
        #: False from a failed round trip until the syncer reaches Redis again; meanwhile
        #: callers never wait on Redis.
        self.reachable = True
        if hasattr(os, "register_at_fork"):
            # A forked worker (gunicorn --preload, multiprocessing) has no syncer thread.
            ref = weakref.ref(self)
            os.register_at_fork(after_in_child=lambda: _restart_in_child(ref))

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        asyncio: bool = False,
        **options: Any,
    ) -> RedisBackend:
        """A backend with its own fail-fast client (``timeout`` seconds, no retries).

        ``options`` are those of :class:`RedisBackend`; ``asyncio=True`` makes an asyncio
        client (and its sync twin for the decisions).
        """
        check_positive("timeout", timeout)
        import redis
        import redis.asyncio
        from redis.backoff import NoBackoff

        if asyncio:
            from redis.asyncio.retry import Retry as AsyncRetry

            client: Any = redis.asyncio.Redis.from_url(
                url,
                retry=AsyncRetry(NoBackoff(), 0),
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
            )
        else:
            from redis.retry import Retry

            client = redis.Redis.from_url(
                url,
                retry=Retry(NoBackoff(), 0),
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
            )
        backend = cls(client, **options)
        backend._owned.append(client)
        return backend

    def __repr__(self) -> str:
        state = "reachable" if self.reachable else "unreachable"
        return f"<RedisBackend namespace={self.namespace!r} {state}>"

    # ------------------------------------------------------------------ lifecycle

    def sync(self) -> bool:
        """Run one sync now, in this thread; True when Redis answered."""
        with self._pass_lock:
            return self._sync_pass(self._scripts, self._run)

    async def start(self) -> None:
        """Start the syncer task (asyncio clients; breakers made in a running loop do it)."""
        self._start_task()

    def close(self) -> None:
        """Stop the syncer and close the clients this backend made (the keys stay until
        their ttl). Breakers and budgets still linked to it decide locally from now on."""
        self._closed = True
        self.reachable = False
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5 * self.sync_interval + 1)
        if self._task is not None:
            self._task.cancel()
        for client in self._owned:
            if not inspect.iscoroutinefunction(client.execute_command):
                client.close()

    async def aclose(self) -> None:
        """:meth:`close`, then wait for the syncer task and close an asyncio client made
        by :meth:`from_url`."""
        self.close()
        task, self._task = self._task, None
        if task is not None:
            # Its cancellation is the result; a cancellation of aclose() itself propagates.
            await asyncio.gather(task, return_exceptions=True)
        for client in self._owned:
            if inspect.iscoroutinefunction(client.execute_command):
                await client.aclose()

    def key(self, kind: str, name: str) -> str:
        """The Redis key of a breaker (``kind="breaker"``) or budget (``"budget"``)."""
        return f"{self.namespace}:{kind}:{name}"

    # ------------------------------------------------------------------ links

    def _link_breaker(self, breaker: CircuitBreaker) -> _BreakerLink:
        link = _BreakerLink(self, breaker)
        self._add(link)
        return link

    def _link_budget(self, budget: RetryBudget) -> _BudgetLink:
        if self.key_ttl < budget.ttl:
            raise ValueError(
                f"key_ttl={self.key_ttl!r} is shorter than the budget's ttl={budget.ttl!r}"
            )
        link = _BudgetLink(self, budget)
        self._add(link)
        return link

    def _add(self, link: _Link) -> None:
        with self._lock:
            self._links.add(link)
            if self.asynchronous:
                try:
                    asyncio.get_running_loop()
                except RuntimeError:
                    return  # no loop yet: ``await backend.start()`` starts the syncer
                self._start_task()
            elif self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._sync_loop, name=f"resetguard-fleet-{self.namespace}", daemon=True
                )
                self._thread.start()

    # ------------------------------------------------------------------ round trips

    def _run(self, script: Any, key: str, args: Sequence[object]) -> Any:
        """One script call for a caller or the sync syncer; None if Redis failed."""
        try:
            return _checked(script(keys=[key], args=list(args)))
        except Exception as exc:  # any failure of Redis must fall back, never reach a caller
            self._lost(exc)
            return None

    def _decide(self, name: str, key: str, args: Sequence[object]) -> Any:
        """A caller's decision round trip: skipped while Redis is known unreachable."""
        if not self.reachable:
            return None
        return self._run(self._scripts[name], key, args)

    def _lost(self, exc: BaseException) -> None:
        if self._closed:
            return
        with self._lock:
            first, self.reachable = self.reachable, False
        if first:
            _log.warning(
                "resetguard.fleet %r: Redis does not answer (%s: %s); breakers and budgets "
                "decide locally until it does",
                self.namespace,
                type(exc).__name__,
                exc,
            )
            self._wake.set()

    # ------------------------------------------------------------------ the syncer

    def _sync_loop(self) -> None:
        while True:
            self._wake.wait(self.sync_interval)
            self._wake.clear()
            if self._closed:
                return
            try:
                self.sync()
            except Exception:  # the syncer must never die
                _log.exception("resetguard.fleet %r: sync failed", self.namespace)

    def _calls(self, resuming: bool) -> Iterator[tuple[_Link, str, str, Sequence[object]]]:
        """The round trips of one sync pass: (link, script name, key, args)."""
        for link in list(self._links):
            if resuming:
                link.forget()
            for name, key, args in link.sync_calls(resuming):
                yield link, name, key, args

    def _passed(self, resuming: bool, replies: list[tuple[_Link, str, Any]]) -> bool:
        """A sync pass went through: after an outage, Redis's state is shared again.

        The backend is reachable again before any reply is applied, so a breaker never
        shows a state the fleet decided while its backend still reads as unreachable.
        """
        if resuming:
            with self._lock:
                self.reachable = True
            _log.info("resetguard.fleet %r: Redis answers again; state shared", self.namespace)
        for link, name, reply in replies:
            link.synced(name, reply)
        return True

    def _sync_pass(self, scripts: dict[str, Any], run: Any) -> bool:
        resuming = not self.reachable
        replies: list[tuple[_Link, str, Any]] = []
        for link, name, key, args in self._calls(resuming):
            reply = run(scripts[name], key, args)
            if reply is None:
                link.failed()
                return False
            replies.append((link, name, reply))
        return self._passed(resuming, replies)

    def _start_task(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._async_loop())

    async def _async_loop(self) -> None:
        async def run(script: Any, key: str, args: Sequence[object]) -> Any:
            try:
                return _checked(await script(keys=[key], args=list(args)))
            except Exception as exc:
                self._lost(exc)
                return None

        while not self._closed:
            await asyncio.sleep(self.sync_interval)
            try:
                await self._async_pass(run)
            except Exception:
                _log.exception("resetguard.fleet %r: sync failed", self.namespace)

    async def _async_pass(self, run: Any) -> bool:
        # _sync_pass's steps with awaited round trips.
        resuming = not self.reachable
        replies: list[tuple[_Link, str, Any]] = []
        for link, name, key, args in self._calls(resuming):
            reply = await run(self._async_scripts[name], key, args)
            if reply is None:
                link.failed()
                return False
            replies.append((link, name, reply))
        return self._passed(resuming, replies)


class _Link:
    """One breaker's or budget's side of the backend."""

    __slots__ = ("__weakref__", "backend", "key")

    backend: RedisBackend
    key: str

    @property
    def reachable(self) -> bool:
        return self.backend.reachable

    def forget(self) -> None:
        """Redis comes back (maybe empty): take whatever state it has as new, and drop the
        counts made meanwhile."""

    def sync_calls(self, resuming: bool) -> list[tuple[str, str, list[object]]]:
        raise NotImplementedError

    def synced(self, name: str, reply: Any) -> None:
        raise NotImplementedError

    def failed(self) -> None:
        """The sync's round trip failed: its counts are sent again next time."""


class _BreakerLink(_Link):
    __slots__ = (
        "_flushed",
        "_flushing",
        "_gen",
        "_held",
        "_lock",
        "_period_args",
        "breaker",
        "claiming",
    )

    def __init__(self, backend: RedisBackend, breaker: CircuitBreaker) -> None:
        self.backend = backend
        # Made by _LinkedBreaker.__init__: the breaker is one (see CircuitBreaker.__new__).
        self.breaker = cast("_LinkedBreaker", breaker)
        self.key = backend.key("breaker", breaker.name)
        self.claiming = False
        self._lock = threading.Lock()
        self._gen = -1  # the fleet generation last followed
        self._held = 0  # fleet-wide probe slots this process holds
        self._flushed = (0, 0)  # successes and failures already sent
        self._flushing = (0, 0)
        policy = breaker.policy
        self._period_args = (
            _ms(policy.open_duration),
            policy.open_duration_multiplier,
            _ms(policy.open_duration_max),
        )

    def _args(self, *extra: object) -> list[object]:
        jitter = self.breaker.policy.jitter * random.random()
        return [_ms(self.backend.key_ttl), *self._period_args, repr(jitter), *extra]

    def _follow(self, reply: Any) -> None:
        """Apply a script's reply: the fleet moved on if its generation is new to us."""
        state, gen, left, streak = int(reply[1]), int(reply[2]), int(reply[3]), int(reply[4])
        with self._lock:
            if gen <= self._gen:
                return
            self._gen = gen
        reason = {
            0: "fleet: closed (a probe succeeded)",
            1: "fleet: opened",
            2: "fleet: a probe runs in another process",
        }[state]
        self.breaker._adopt(_STATE_NAMES[state], left / 1000, streak, reason)

    # -------------------------------------------------- called by the breaker (no lock held)

    def claim(self) -> tuple[bool, float] | None:
        policy = self.breaker.policy
        reply = self.backend._decide(
            "claim",
            self.key,
            self._args(
                policy.half_open_probes,
                _ms(self.backend.probe_lease),
                _ms(self.backend.sync_interval),
            ),
        )
        if reply is None:
            return None
        took, state = int(reply[0]), int(reply[1])
        if took:
            with self._lock:
                self._held += 1
                self._gen = max(self._gen, int(reply[2]))
            return True, 0.0
        if state == 0:
            self._follow(reply)
            return True, 0.0  # closed fleet-wide meanwhile: the call goes ahead
        return False, int(reply[5]) / 1000

    def tripped(self) -> None:
        left = self.breaker._fleet_counts()[4]
        reply = self.backend._decide("trip", self.key, self._args(_ms(left), 0))
        if reply is not None:
            self._follow(reply)

    def probe_done(self, outcome: int) -> None:
        with self._lock:
            if not self._held:
                return  # granted locally while Redis was away: the fleet holds no slot for it
            self._held -= 1
        reply = self.backend._decide(
            "probe_done", self.key, self._args(outcome, self.breaker.policy.success_threshold)
        )
        if reply is not None:
            self._follow(reply)

    # -------------------------------------------------- called by the syncer

    def forget(self) -> None:
        successes, failures = self.breaker._fleet_counts()[:2]
        with self._lock:
            self._gen = -1
            self._held = 0
            # What this process saw alone was decided alone: sent now, after what the fleet
            # saw since, it would be out of order (a stale trip after a fleet-wide recovery).
            self._flushed = (successes, failures)

    def sync_calls(self, resuming: bool) -> list[tuple[str, str, list[object]]]:
        successes, failures, consecutive, code, left = self.breaker._fleet_counts()
        calls: list[tuple[str, str, list[object]]] = []
        if resuming and code == 1 and left > 0:
            # Opened here while Redis was away: a Redis that lost the state learns it first.
            calls.append(("trip", self.key, self._args(_ms(left), 1)))
        sent_s, sent_f = self._flushed
        self._flushing = (successes, failures)
        threshold = self.breaker.policy.failure_threshold or 0
        calls.append(
            (
                "sync",
                self.key,
                self._args(successes - sent_s, failures - sent_f, consecutive, threshold),
            )
        )
        return calls

    def synced(self, name: str, reply: Any) -> None:
        if name == "sync":
            self._flushed = self._flushing
        self._follow(reply)


class _BudgetLink(_Link):
    __slots__ = ("_flushed", "_last", "_lock", "_static", "_wait_until", "budget")

    def __init__(self, backend: RedisBackend, budget: RetryBudget) -> None:
        self.backend = backend
        self.budget = cast("_LinkedBudget", budget)
        self.key = backend.key("budget", budget.name)
        self._lock = threading.Lock()
        self._flushed = 0  # deposits already sent
        self._last = 0  # deposits the syncer's round trip in progress carries
        self._wait_until: float | None = None  # monotonic; math.inf: only traffic refills it
        self._static = (
            _ms(budget.ttl / budget.buckets),
            budget.buckets,
            repr(budget.min_per_second * budget.ttl),
            repr(budget.ratio),
        )

    def _take_pending(self) -> int:
        total = self.budget._fleet_deposits()
        with self._lock:
            pending, self._flushed = total - self._flushed, total
        return pending

    def _give_back(self, pending: int) -> None:
        with self._lock:
            self._flushed -= pending

    def spend(self) -> tuple[bool, float] | None:
        if not self.backend.reachable:
            return None
        pending = self._take_pending()
        reply = self.backend._decide(
            "budget", self.key, [*self._static, pending, 1, _ms(self.backend.key_ttl)]
        )
        if reply is None:
            self._give_back(pending)
            return None
        self._note_wait(reply)
        return bool(int(reply[0])), float(reply[1])

    def _note_wait(self, reply: Any) -> None:
        wait = int(reply[2])
        self._wait_until = (
            None if wait == 0 else math.inf if wait < 0 else time.monotonic() + wait / 1000
        )

    @property
    def retry_after(self) -> float | None:
        """Seconds until the fleet's budget allows a retry, as of the last round trip."""
        until = self._wait_until
        if until is None:
            return None
        left = until - time.monotonic()
        return None if left <= 0 else left

    # -------------------------------------------------- called by the syncer

    def forget(self) -> None:
        # Retries made meanwhile were paid locally, from these very deposits: sending them
        # now would pay for them twice.
        self._take_pending()

    def sync_calls(self, resuming: bool) -> list[tuple[str, str, list[object]]]:
        pending = self._last = self._take_pending()
        return [("budget", self.key, [*self._static, pending, 0, _ms(self.backend.key_ttl)])]

    def synced(self, name: str, reply: Any) -> None:
        self._last = 0
        self._note_wait(reply)

    def failed(self) -> None:
        self._give_back(self._last)
        self._last = 0


def _checked(reply: Any) -> list[Any]:
    """Every script answers a list of at least three items; anything else (a proxy, a
    server that is not Redis) is a failure like a lost connection."""
    if not isinstance(reply, list) or len(reply) < 3:
        raise TypeError(f"unexpected reply from Redis: {reply!r:.100}")
    return reply


def _restart_in_child(ref: weakref.ref[RedisBackend]) -> None:
    backend = ref()
    if backend is None or backend._closed:
        return
    backend._lock = threading.Lock()
    backend._pass_lock = threading.Lock()
    backend._thread = None
    if not backend.asynchronous and len(backend._links):
        backend._thread = threading.Thread(
            target=backend._sync_loop, name=f"resetguard-fleet-{backend.namespace}", daemon=True
        )
        backend._thread.start()


def _register(client: Any) -> dict[str, Any]:
    return {
        "sync": client.register_script(_scripts.BREAKER_SYNC),
        "trip": client.register_script(_scripts.BREAKER_TRIP),
        "claim": client.register_script(_scripts.BREAKER_CLAIM),
        "probe_done": client.register_script(_scripts.BREAKER_PROBE_DONE),
        "budget": client.register_script(_scripts.BUDGET),
    }


def _check_fails_fast(client: Any, arg: str) -> None:
    """A caller may wait on Redis only as long as one socket timeout: no retries, no None."""
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None)
    if kwargs is None:  # RedisCluster: the settings every node's connections get
        kwargs = getattr(getattr(client, "nodes_manager", None), "connection_kwargs", None)
    if not isinstance(kwargs, dict):
        return
    for option in ("socket_timeout", "socket_connect_timeout"):
        if kwargs.get(option) is None:
            raise ValueError(
                f"{arg} has {option}=None: an unreachable Redis would block callers; "
                f"set it (e.g. {option}=0.05) or use RedisBackend.from_url"
            )
    retries = 0
    for retry in (kwargs.get("retry"), getattr(client, "retry", None)):
        if retry is not None and callable(getattr(retry, "get_retries", None)):
            retries = max(retries, retry.get_retries())
    if retries:
        raise ValueError(
            f"{arg} retries {retries} time(s): an unreachable Redis would block callers for "
            "the whole backoff; pass retry=Retry(NoBackoff(), 0) or use RedisBackend.from_url"
        )


def _sync_twin(client: Any) -> Any:
    """A sync client to the same server as an asyncio one (standalone TCP only)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    kwargs = client.connection_pool.connection_kwargs
    if "host" not in kwargs:
        raise ValueError("cannot derive a sync client from this asyncio client; pass sync_client=")
    return redis.Redis(
        host=kwargs["host"],
        port=kwargs.get("port", 6379),
        db=kwargs.get("db", 0),
        username=kwargs.get("username"),
        password=kwargs.get("password"),
        socket_timeout=kwargs.get("socket_timeout"),
        socket_connect_timeout=kwargs.get("socket_connect_timeout"),
        retry=Retry(NoBackoff(), 0),
    )
