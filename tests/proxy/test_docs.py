"""Every ```python block of docs/proxy.md runs: plain blocks are executed, a block after
``<!-- test: pytest -->`` is run as a test file by pytest (with the plugin)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "proxy.md"
_BLOCK = re.compile(r"(<!-- test: (?P<mode>\w+) -->\n)?```python\n(?P<code>.*?)```", re.S)


def _blocks() -> list[tuple[str, str, str]]:
    text = DOC.read_text(encoding="utf-8")
    out = []
    for m in _BLOCK.finditer(text):
        line = text.count("\n", 0, m.start("code")) + 1
        out.append((f"line{line}", m.group("mode") or "exec", m.group("code")))
    return out


BLOCKS = _blocks()


def test_the_doc_has_examples() -> None:
    modes = [mode for _, mode, _ in BLOCKS]
    assert modes.count("exec") >= 4
    assert modes.count("pytest") == 1


@pytest.mark.parametrize(("where", "mode", "code"), BLOCKS, ids=[b[0] for b in BLOCKS])
def test_example_runs(where: str, mode: str, code: str, postgres_dsn: str, tmp_path: Path) -> None:
    # The examples use the local PostgreSQL (postgres_dsn skips, or fails under CI, if
    # it is absent).
    if mode == "exec":
        exec(compile(code, f"{DOC}:{where}", "exec"), {"__name__": "__docs__"})
        return
    assert mode == "pytest"
    path = tmp_path / "test_docs_example.py"
    path.write_text(code, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b3 passed\b", result.stdout), result.stdout


def test_json_config_example_is_valid() -> None:
    from resetguard.proxy._config import parse_config

    blocks = re.findall(r"```json\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert blocks
    for block in blocks:
        config = parse_config(__import__("json").loads(block), source="docs")
        assert config.proxies


def test_toxic_specs_in_the_text_parse() -> None:
    from resetguard.proxy import ToxicError, parse_toxic

    text = DOC.read_text(encoding="utf-8")
    specs = set(re.findall(r"--toxic ([a-z_]+\S*)", text))
    specs |= set(re.findall(r"`((?:reset_peer|latency|idle_reset|limit_data)(?::[^`\s]+)+)`", text))
    assert len(specs) >= 5
    for spec in specs:
        if spec == "latency:latency=fast":  # the documented bad example
            with pytest.raises(ToxicError):
                parse_toxic(spec)
            continue
        assert parse_toxic(spec)
