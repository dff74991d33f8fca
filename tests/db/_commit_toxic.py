"""A resetguard proxy toxic that resets a connection when given SQL bytes pass: at COMMIT.

``SqlReset(stream="upstream")`` watches the client's bytes for ``pattern`` (``COMMIT``, or
the comment ``/*rg-reset*/`` a test puts in a statement). When a chunk holds it:

* ``when="before"``: the chunk is dropped and both sides get an RST. The server never saw
  the statement (a COMMIT that never left: the server rolls the transaction back);
* ``when="after"``: the chunk goes to the server, and the server's next answer is dropped
  and both sides reset: the statement ran (a COMMIT that committed, its reply lost).

The client sees the same kind of error either way: that is the unknown outcome.
For the exactly-once stress, ``at_permille`` / ``elsewhere_permille`` make the reset a
per-chunk draw (at the pattern / on any other chunk), with ``when="random"`` choosing
before or after on each draw. Registered with the proxy's stage table at import: a
test-side toxic, built on the proxy's public ``Toxic`` base and its stage protocol.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from resetguard.proxy import Toxic, _stages

MARKER = "/*rg-reset*/"
_PATTERNS = ("COMMIT", MARKER)


def _choice(default: str, choices: tuple[str, ...]) -> Any:
    return field(default=default, metadata={"unit": "choice", "choices": choices})


def _permille(default: int) -> Any:
    return field(default=default, metadata={"unit": "permille", "choices": ()})


@dataclass(frozen=True, slots=True, kw_only=True)
class SqlReset(Toxic):
    TYPE: ClassVar[str] = "sql_reset"

    pattern: str = _choice("COMMIT", _PATTERNS)
    when: str = _choice("before", ("before", "after", "random"))
    at_permille: int = _permille(1000)
    elsewhere_permille: int = _permille(0)

    def _check(self) -> None:
        if self.stream != "upstream":
            raise ValueError("sql_reset watches the client's bytes: stream must be 'upstream'")


class _DropReply(_stages.Stage):
    """Put on the server-to-client link after the statement went through: the first
    answer is dropped and the connection reset."""

    def data(self, chunk: bytes) -> None:
        self.link.discard(len(chunk))
        self.link.conn.reset()


class _SqlResetStage(_stages.Stage):
    __slots__ = ("fired", "needle")
    spec: SqlReset

    def __init__(self, spec: Toxic, link: Any, counter: list[int]) -> None:
        _stages.Stage.__init__(self, spec, link, counter)
        self.fired = False
        # the statement itself, not a word that contains it ("SET AUTOCOMMIT = 0")
        word = re.escape(self.spec.pattern.encode())
        if self.spec.pattern.isalpha():
            word = rb"(?<![A-Za-z_])" + word + rb"(?![A-Za-z_])"
        self.needle = re.compile(word)

    def data(self, chunk: bytes) -> None:
        if self.fired:
            self.link.discard(len(chunk))
            return
        spec = self.spec
        chance = spec.at_permille if self.needle.search(chunk) else spec.elsewhere_permille
        if chance <= 0 or (chance < 1000 and self.link.random.random() * 1000 >= chance):
            self.nxt.feed(chunk)
            return
        self.fired = True
        when = spec.when
        if when == "random":
            when = "before" if self.link.random.random() < 0.5 else "after"
        if when == "before":
            self.link.discard(len(chunk))
            self.link.conn.reset()
            return
        self.link.other.add_stage("sql_reset_reply", _DropReply(spec, self.link.other, [0, 0]))
        self.nxt.feed(chunk)


_stages._STAGES[SqlReset] = _SqlResetStage  # a test-only toxic type
