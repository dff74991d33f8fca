"""Databases that survive resets without losing or duplicating a write.

This part: Redis clients that retry only what is safe (:func:`redis_client`,
:func:`async_redis_client`), pymongo options and monitoring listeners
(:func:`mongo_client_options`, :func:`mongo_listeners`), and pool settings as data
(:func:`pool_settings`). Importing this package imports no driver: each is loaded on
first use.

Example::

    from resetguard.db import pool_settings

    print(pool_settings("sqlalchemy", server_idle_timeout=28800).render("mysql+pymysql://u@h/db"))
"""

from __future__ import annotations

from ._mongo import mongo_client_options, mongo_listeners
from ._redis import (
    DEFAULT_REDIS_POLICY,
    SAFE_COMMANDS,
    SERVER_BREAKER,
    async_redis_client,
    is_safe_command,
    redis_client,
)
from ._settings import (
    DRIVERS,
    Code,
    PoolSettings,
    Setting,
    format_seconds,
    pool_settings,
    safe_expiry,
)

__all__ = [
    "DEFAULT_REDIS_POLICY",
    "DRIVERS",
    "SAFE_COMMANDS",
    "SERVER_BREAKER",
    "Code",
    "PoolSettings",
    "Setting",
    "async_redis_client",
    "format_seconds",
    "is_safe_command",
    "mongo_client_options",
    "mongo_listeners",
    "pool_settings",
    "redis_client",
    "safe_expiry",
]
