"""asyncio, threads and TCP servers that take connection resets in their stride.

:func:`quiet_resets` demotes reset noise (loop exception handler, ``asyncio`` logger,
``threading.excepthook``) to counted debug events and lets every other error through;
:func:`serve` runs a TCP server that classifies and counts how each client left.

Example::

    import asyncio
    from resetguard.aio import quiet_resets

    async def main() -> None:
        with quiet_resets():
            await asyncio.sleep(0)

    asyncio.run(main())
"""

from __future__ import annotations

from ._noise import (
    NOISE_KINDS,
    AsyncioLogFilter,
    NoiseCounter,
    QuietResets,
    ResetExceptionHandler,
    ThreadResetHook,
    quiet_resets,
    reset_noise,
)
from ._serve import OUTCOMES, TCPServer, serve

__all__ = [
    "AsyncioLogFilter",
    "NOISE_KINDS",
    "NoiseCounter",
    "OUTCOMES",
    "QuietResets",
    "ResetExceptionHandler",
    "TCPServer",
    "ThreadResetHook",
    "quiet_resets",
    "reset_noise",
    "serve",
]
