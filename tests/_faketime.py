"""A fake clock for engine tests: sleeping advances time instantly and is recorded."""

from __future__ import annotations


class FakeTime:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)

    def options(self) -> dict[str, object]:
        return {
            "clock": self.clock,
            "sleep": self.sleep,
            "async_sleep": self.async_sleep,
            "random": lambda: 0.5,
        }
