"""Progress display for the human report: stderr only, never mixed into ``--json`` output."""

from __future__ import annotations

import sys
from typing import Protocol, TextIO

__all__ = ["NullProgress", "Progress", "StreamProgress"]


class Progress(Protocol):
    """Receives what the doctor is doing; must be cheap and must not raise."""

    def step(self, text: str) -> None:
        """A new probing step starts."""

    def waiting(self, elapsed: float, limit: float) -> None:
        """Still watching an idle connection: ``elapsed`` of at most ``limit`` seconds."""


class NullProgress:
    """Shows nothing (the default for library use and for non-TTY stderr)."""

    def step(self, text: str) -> None:
        pass

    def waiting(self, elapsed: float, limit: float) -> None:
        pass


class StreamProgress:
    """Writes steps to ``stream`` (stderr); on a TTY the idle wait is an in-place counter."""

    def __init__(self, stream: TextIO | None = None, *, live: bool | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        isatty = getattr(self._stream, "isatty", None)
        self._live = bool(isatty and isatty()) if live is None else live
        self._open_line = False
        self._last_shown = -1

    def _end_line(self) -> None:
        if self._open_line:
            self._stream.write("\n")
            self._open_line = False

    def step(self, text: str) -> None:
        self._end_line()
        self._stream.write(f"  .. {text}\n")
        self._stream.flush()
        self._last_shown = -1

    def waiting(self, elapsed: float, limit: float) -> None:
        if self._live:
            self._stream.write(f"\r    idle for {elapsed:5.1f} s of at most {limit:g} s ")
            self._open_line = True
            self._stream.flush()
            return
        # Not a terminal (e.g. --progress into a log): one line every 5 s, no \r noise.
        whole = int(elapsed // 5)
        if whole > self._last_shown and elapsed >= 5:
            self._stream.write(f"    idle for {whole * 5} s of at most {limit:g} s\n")
            self._stream.flush()
        self._last_shown = max(self._last_shown, whole)

    def close(self) -> None:
        """Finish the in-place line, if any."""
        self._end_line()
        self._stream.flush()
