"""Fixtures shared by the HTTP tests."""

from __future__ import annotations

import pytest

from ._tls import make_cert


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (server and client): (cert path, key path)."""
    return make_cert(tmp_path_factory.mktemp("tls"))
