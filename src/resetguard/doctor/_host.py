"""This host's TCP keepalive defaults (Linux ``/proc/sys/net/ipv4/tcp_keepalive_*``)."""

from __future__ import annotations

from pathlib import Path

from ._model import HostKeepalive

__all__ = ["read_host_keepalive"]

_PROC = Path("/proc/sys/net/ipv4")


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def read_host_keepalive(root: Path = _PROC) -> HostKeepalive:
    """The kernel defaults used by sockets that enable ``SO_KEEPALIVE`` without per-socket values.

    On systems without ``/proc`` (macOS, Windows) every field is ``None``.
    """
    return HostKeepalive(
        time_s=_read_int(root / "tcp_keepalive_time"),
        interval_s=_read_int(root / "tcp_keepalive_intvl"),
        probes=_read_int(root / "tcp_keepalive_probes"),
    )
