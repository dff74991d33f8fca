"""asyncio, threads and TCP servers that take connection resets in their stride.

:func:`quiet_resets` demotes reset noise (loop exception handler, ``asyncio`` logger,
``threading.excepthook``) to counted debug events and lets every other error through.

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

__all__ = [
    "NOISE_KINDS",
    "AsyncioLogFilter",
    "NoiseCounter",
    "QuietResets",
    "ResetExceptionHandler",
    "ThreadResetHook",
    "quiet_resets",
    "reset_noise",
]
