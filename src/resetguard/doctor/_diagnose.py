"""``diagnose()``: run the probe that fits the target and judge what it saw."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

from ._advice import judge, judge_failure
from ._db import DbObservation, TcpObservation, probe_db, probe_tcp
from ._host import read_host_keepalive
from ._http import HttpObservation, probe_http
from ._model import HostKeepalive, Report, Severity
from ._net import ProbeError
from ._progress import NullProgress, Progress
from ._target import parse_target, redact

__all__ = ["DEFAULT_IDLE_LIMIT", "DEFAULT_TIMEOUT", "diagnose"]

# Long enough to catch the common 5/15/30 s server and LB idle timeouts, short enough to wait for.
DEFAULT_IDLE_LIMIT = 30.0
DEFAULT_TIMEOUT = 5.0
_METHODS = ("GET", "HEAD", "OPTIONS")


def _check_seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
    return float(value)


def diagnose(
    target: str,
    *,
    idle_limit: float = DEFAULT_IDLE_LIMIT,
    timeout: float = DEFAULT_TIMEOUT,
    cafile: str | None = None,
    method: str = "GET",
    progress: Progress | None = None,
    host_keepalive: HostKeepalive | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Report:
    """Probe ``target`` and explain how it drops connections; never raises for network failures.

    ``target`` is an ``http(s)://`` URL, ``host:port``, or a ``postgresql://``, ``mysql://``
    or ``redis://`` DSN. ``idle_limit`` bounds the wait for the server's idle close;
    ``timeout`` bounds each network step. A target that cannot be reached gives a report
    with ``status == "error"`` (exit code 2); bad arguments raise ValueError/TypeError.

    Example::

        from resetguard.doctor import diagnose

        report = diagnose("http://127.0.0.1:8080/", idle_limit=10)
        print(report.server_idle_timeout_s, report.idle_close)  # e.g. 5.0 fin
    """
    parsed = parse_target(target)
    idle_limit = _check_seconds("idle_limit", idle_limit)
    timeout = _check_seconds("timeout", timeout)
    if method.upper() not in _METHODS:
        raise ValueError(f"method must be one of {', '.join(_METHODS)}, got {method!r}")
    if cafile is not None:
        # An unused CA bundle is an error, not a warning: whoever gives one expects the
        # certificate to be checked against it, and http:// checks nothing.
        if parsed.kind != "http":
            raise ValueError(f"cafile applies to https:// targets only, not {parsed.display!r}")
        if parsed.scheme != "https":
            raise ValueError(
                f"cafile applies to https:// targets only: {parsed.display!r} uses no TLS, "
                "so there is no certificate to check"
            )
        if not os.path.isfile(cafile):
            raise ValueError(f"cafile {cafile!r} does not exist or is not a file")
    progress = progress or NullProgress()
    host = host_keepalive if host_keepalive is not None else read_host_keepalive()
    from resetguard import __version__

    observation: HttpObservation | TcpObservation | DbObservation
    try:
        if parsed.kind == "http":
            observation = probe_http(
                parsed,
                idle_limit=idle_limit,
                timeout=timeout,
                cafile=cafile,
                method=method.upper(),
                version=__version__,
                clock=clock,
                progress=progress,
            )
        elif parsed.kind == "tcp":
            observation = probe_tcp(
                parsed, idle_limit=idle_limit, timeout=timeout, clock=clock, progress=progress
            )
        else:
            observation = probe_db(
                parsed, idle_limit=idle_limit, timeout=timeout, clock=clock, progress=progress
            )
    except ProbeError as exc:
        return Report(
            target=parsed.display,
            kind=parsed.kind,
            status="error",
            server_idle_timeout_s=None,
            server_idle_timeout_source=None,
            idle_close=None,
            idle_limit_s=idle_limit,
            host=host,
            findings=(judge_failure(exc.step, redact(str(exc))),),
            version=__version__,
        )
    judged = judge(parsed, observation, host, idle_limit=idle_limit)
    problems = any(f.severity is not Severity.INFO for f in judged.findings)
    return Report(
        target=parsed.display,
        kind=parsed.kind,
        status="problems" if problems else "healthy",
        server_idle_timeout_s=judged.server_idle_timeout_s,
        server_idle_timeout_source=judged.source,
        idle_close=judged.idle_close,
        idle_limit_s=idle_limit,
        timings=judged.timings,
        facts=judged.facts,
        host=host,
        client_defaults=judged.client_defaults,
        findings=judged.findings,
        recommendations=judged.recommendations,
        version=__version__,
    )
