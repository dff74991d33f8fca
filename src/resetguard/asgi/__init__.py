"""Server side of ASGI: stop the work when the client hangs up.

:class:`CancelOnDisconnect` wraps any ASGI 3 application (Starlette, FastAPI, …); it needs
nothing beyond the standard library. Handlers can await or poll
:func:`current_disconnect`; streaming bodies wrapped with :func:`stream` are closed on
disconnect; :func:`cancel_on_disconnect` opts single routes in.

Example::

    from fastapi import FastAPI
    from resetguard.asgi import CancelOnDisconnect

    api = FastAPI()
    app = CancelOnDisconnect(api)
"""

from __future__ import annotations

from ._middleware import CancelOnDisconnect, cancel_on_disconnect, stream
from ._signal import DisconnectSignal, current_disconnect

__all__ = [
    "CancelOnDisconnect",
    "DisconnectSignal",
    "cancel_on_disconnect",
    "current_disconnect",
    "stream",
]
