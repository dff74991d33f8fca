"""The ``resetguard proxy`` configuration file.

JSON (any Python) or TOML (Python 3.11+, by the ``.toml`` suffix). Either Toxiproxy's
own format, a list of proxies::

    [{"name": "db", "listen": "127.0.0.1:15432", "upstream": "127.0.0.1:5432"}]

or an object with the API address and the proxies, each optionally with toxics given as
CLI spec strings or Toxiproxy toxic objects::

    {
      "api": "127.0.0.1:8474",
      "proxies": [
        {"name": "db", "listen": "127.0.0.1:15432", "upstream": "127.0.0.1:5432",
         "toxics": ["latency:latency=20ms",
                    {"type": "reset_peer", "stream": "upstream", "toxicity": 0.1}]}
      ]
    }

Every problem is reported as :class:`ConfigError` naming the file and the entry.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._exceptions import ResetGuardError
from ._proxy import parse_address
from ._server import as_toxics
from ._toxics import Toxic, ToxicError

__all__ = ["Config", "ConfigError", "ProxyConfig", "load_config", "parse_config"]

_PROXY_KEYS = frozenset({"name", "listen", "upstream", "enabled", "toxics"})
_UNSET: Any = object()


class ConfigError(ResetGuardError, ValueError):
    """The configuration file is unreadable or invalid."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyConfig:
    name: str
    listen: str
    upstream: str
    enabled: bool = True
    toxics: tuple[Toxic, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    api: str | None = field(default=_UNSET)  # _UNSET: not given in the file
    proxies: tuple[ProxyConfig, ...] = ()

    @property
    def api_given(self) -> bool:
        return self.api is not _UNSET


def load_config(path: str | Path) -> Config:
    """Read and check a configuration file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if path.suffix.lower() == ".toml":
        try:
            tomllib: Any = importlib.import_module("tomllib")
        except ImportError:  # pragma: no cover - Python 3.10
            raise ConfigError(f"{path}: TOML needs Python 3.11 or newer; use JSON") from None
        try:
            data: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: invalid JSON: {exc}") from None
    return parse_config(data, source=str(path))


def parse_config(data: Any, *, source: str = "config") -> Config:
    """Check already-decoded configuration data."""
    api: Any = _UNSET
    if isinstance(data, list):
        entries = data
    elif isinstance(data, dict):
        unknown = sorted(set(data) - {"api", "proxies"})
        if unknown:
            raise ConfigError(f"{source}: unknown key {unknown[0]!r} (keys: api, proxies)")
        entries = data.get("proxies", [])
        if not isinstance(entries, list):
            raise ConfigError(f"{source}: proxies must be a list")
        if "api" in data:
            api = data["api"]
            if api is not None and api is not False:
                if not isinstance(api, str):
                    raise ConfigError(f"{source}: api must be HOST:PORT, false or null")
                try:
                    parse_address(api, what="api")
                except ValueError as exc:
                    raise ConfigError(f"{source}: {exc}") from None
            else:
                api = None
    else:
        raise ConfigError(f"{source}: expected a list of proxies or an object")
    proxies = []
    names: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"{source}: proxies[{i}]"
        proxy = _proxy(entry, where, i)
        if proxy.name in names:
            raise ConfigError(f"{where}: duplicate proxy name {proxy.name!r}")
        names.add(proxy.name)
        proxies.append(proxy)
    return Config(api=api, proxies=tuple(proxies))


def _proxy(entry: Any, where: str, index: int) -> ProxyConfig:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be an object")
    unknown = sorted(set(entry) - _PROXY_KEYS)
    if unknown:
        keys = ", ".join(sorted(_PROXY_KEYS))
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (keys: {keys})")
    name = entry.get("name", f"proxy{index + 1}")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: name must be a non-empty string")
    values = {}
    for key, default in (("listen", "127.0.0.1:0"), ("upstream", None)):
        value = entry.get(key, default)
        if value is None:
            raise ConfigError(f"{where}: missing required field {key!r}")
        try:
            if not isinstance(value, str):
                raise ValueError(f"{key} must be HOST:PORT, got {value!r}")
            parse_address(value, what=key)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        values[key] = value
    enabled = entry.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}: enabled must be true or false")
    raw_toxics = entry.get("toxics", [])
    if not isinstance(raw_toxics, list):
        raise ConfigError(f"{where}: toxics must be a list")
    toxics: list[Toxic] = []
    for j, raw in enumerate(raw_toxics):
        try:
            toxics.extend(as_toxics(raw))
        except ToxicError as exc:
            raise ConfigError(f"{where}.toxics[{j}]: {exc}") from None
    seen: set[str] = set()
    for toxic in toxics:
        if toxic.name in seen:
            raise ConfigError(f"{where}: two toxics named {toxic.name!r} (set name=...)")
        seen.add(toxic.name)
    return ProxyConfig(
        name=name,
        listen=values["listen"],
        upstream=values["upstream"],
        enabled=enabled,
        toxics=tuple(toxics),
    )
