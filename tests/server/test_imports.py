"""The server-side packages import nothing beyond the standard library."""

from __future__ import annotations

import subprocess
import sys

FOREIGN = ("starlette", "fastapi", "uvicorn", "hypercorn", "granian", "socketio", "engineio",
           "uvloop", "anyio", "httptools", "h11")  # fmt: skip


def test_server_packages_import_only_the_standard_library() -> None:
    code = (
        "import sys, resetguard.asgi, resetguard.aio, resetguard.socketio\n"
        f"print(sorted(m for m in {FOREIGN!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
