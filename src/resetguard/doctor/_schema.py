"""The JSON Schema (draft 2020-12) of ``resetguard doctor --json`` output, schema_version 1."""

from __future__ import annotations

from typing import Any

__all__ = ["JSON_SCHEMA"]

_NUMBER_OR_NULL: dict[str, Any] = {"type": ["number", "null"]}
_STRING: dict[str, Any] = {"type": "string"}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": list(properties),
        "additionalProperties": False,
        "properties": properties,
    }


JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "resetguard doctor report",
    **_object(
        {
            "schema_version": {"const": 1},
            "tool": {"const": "resetguard doctor"},
            "resetguard_version": _STRING,
            "target": _STRING,
            "kind": {"enum": ["http", "tcp", "postgresql", "mysql", "redis"]},
            "status": {"enum": ["healthy", "problems", "error"]},
            "exit_code": {"enum": [0, 1, 2]},
            "server_idle_timeout_s": _NUMBER_OR_NULL,
            "server_idle_timeout_source": {"enum": ["measured", "configured", "advertised", None]},
            "idle_close": {"enum": ["fin", "rst", None]},
            "idle_limit_s": {"type": "number"},
            "timings": {"type": "object", "additionalProperties": {"type": "number"}},
            "facts": {"type": "object"},
            "host": _object(
                {
                    "tcp_keepalive_time_s": {"type": ["integer", "null"]},
                    "tcp_keepalive_intvl_s": {"type": ["integer", "null"]},
                    "tcp_keepalive_probes": {"type": ["integer", "null"]},
                }
            ),
            "client_defaults": {
                "type": "array",
                "items": _object(
                    {
                        "client": _STRING,
                        "setting": _STRING,
                        "idle_expiry_s": _NUMBER_OR_NULL,
                        "safe": {"type": ["boolean", "null"]},
                    }
                ),
            },
            "findings": {
                "type": "array",
                "items": _object(
                    {
                        "id": _STRING,
                        "severity": {"enum": ["critical", "warning", "info"]},
                        "title": _STRING,
                        "detail": _STRING,
                        "fix": _STRING,
                    }
                ),
            },
            "recommendations": {
                "type": "array",
                "items": _object(
                    {
                        "client": _STRING,
                        "summary": _STRING,
                        "language": {"enum": ["python", "shell"]},
                        "code": _STRING,
                    }
                ),
            },
        }
    ),
}
