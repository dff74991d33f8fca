"""``import resetguard.http`` imports none of the HTTP client libraries."""

from __future__ import annotations

import subprocess
import sys

import pytest

import resetguard.http


def test_import_is_light():
    code = (
        "import sys, resetguard, resetguard.http\n"
        "libs = ('httpx', 'httpcore', 'requests', 'urllib3', 'aiohttp')\n"
        "heavy = [m for m in libs if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == ""


def test_lazy_names_resolve_and_unknown_names_fail():
    assert resetguard.http.Client.__module__ == "resetguard.http._httpx"
    assert resetguard.http.Session.__module__ == "resetguard.http._requests"
    assert resetguard.http.RetrySession.__module__ == "resetguard.http._aiohttp"
    assert set(resetguard.http.__all__) <= set(dir(resetguard.http))
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        resetguard.http.Nope  # noqa: B018
