"""Socket.IO servers (python-socketio): every disconnect recorded with its reason.

:func:`instrument` hooks a ``socketio.Server`` or ``socketio.AsyncServer``;
:func:`heartbeat` shows the ping settings and how long a frozen peer goes unnoticed.
python-socketio itself is not imported by this package.

Example::

    import socketio
    from resetguard.socketio import instrument

    sio = socketio.AsyncServer(async_mode="asgi", ping_interval=10, ping_timeout=5)
    probe = instrument(sio)
"""

from __future__ import annotations

from ._instrument import REASONS, Heartbeat, SocketIOInstrument, heartbeat, instrument

__all__ = ["Heartbeat", "REASONS", "SocketIOInstrument", "heartbeat", "instrument"]
