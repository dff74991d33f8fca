"""``resetguard doctor TARGET``: the command-line face of :func:`resetguard.doctor.diagnose`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_parser", "run"]

_EPILOG = """\
TARGET is an http(s):// URL, host:port, or a postgresql://, mysql:// or redis:// DSN.
Durations: 1.5s, 500ms, 2m, or plain seconds.
Exit codes: 0 healthy, 1 problems found, 2 bad usage or target could not be diagnosed.
Credentials in TARGET are never printed. Details: docs/doctor.md
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``doctor`` on the ``resetguard`` command line."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "doctor",
        help="measure how a server drops idle connections and print the client settings to use",
        description=(
            "Measure how a server or database drops connections (idle timeout, FIN or RST, "
            "keep-alive) and print the client settings that avoid resets."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", metavar="TARGET", help="URL, host:port or DSN to diagnose")
    parser.add_argument(
        "--idle-limit",
        default="30s",
        metavar="DURATION",
        help="longest wait for the server to close an idle connection (default: 30s)",
    )
    parser.add_argument(
        "--timeout",
        default="5s",
        metavar="DURATION",
        help="timeout of each network step: DNS, connect, TLS, response (default: 5s)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show progress on stderr (default: only when stderr is a terminal)",
    )
    parser.add_argument("--cafile", metavar="PATH", help="CA bundle to verify https:// targets")
    parser.add_argument(
        "--method",
        default="GET",
        type=str.upper,
        choices=("GET", "HEAD", "OPTIONS"),
        help="HTTP method of the probe requests (default: GET)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the doctor for parsed ``args``; returns the exit code."""
    from resetguard.cli import UsageError

    from ._diagnose import diagnose
    from ._progress import NullProgress, Progress, StreamProgress
    from ._render import render_text
    from ._target import parse_duration, parse_target

    try:
        idle_limit = parse_duration(args.idle_limit)
    except ValueError as exc:
        raise UsageError(f"--idle-limit: {exc}") from None
    try:
        timeout = parse_duration(args.timeout)
    except ValueError as exc:
        raise UsageError(f"--timeout: {exc}") from None
    try:
        parse_target(args.target)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    show = sys.stderr.isatty() if args.progress is None else args.progress
    progress: Progress = StreamProgress(sys.stderr) if show else NullProgress()
    try:
        report = diagnose(
            args.target,
            idle_limit=idle_limit,
            timeout=timeout,
            cafile=args.cafile,
            method=args.method,
            progress=progress,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    finally:
        if isinstance(progress, StreamProgress):
            progress.close()
    sys.stdout.write(report.to_json() + "\n" if args.json else render_text(report))
    sys.stdout.flush()
    return report.exit_code
