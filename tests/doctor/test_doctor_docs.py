"""docs/doctor.md stays true: its Python examples run, its JSON example fits the schema,
and every finding id the code can emit is documented (and nothing else is)."""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

import resetguard.doctor._advice as advice
from resetguard.doctor import JSON_SCHEMA

DOC = Path(__file__).resolve().parents[2] / "docs" / "doctor.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_python_examples_print_what_they_say(index: int) -> None:
    code = _blocks("python")[index]
    expected = [
        line.split("# prints: ", 1)[1] for line in code.splitlines() if "# prints: " in line
    ]
    assert expected, "every Python example states its output"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, f"docs/doctor.md python block {index}", "exec"), {"__name__": "doc"})
    assert out.getvalue().splitlines() == expected


def test_json_example_matches_the_schema(schema_errors: Callable[[object], list[str]]) -> None:
    (block,) = _blocks("json")
    example = json.loads(block)
    assert schema_errors(example) == []
    assert set(example) == set(JSON_SCHEMA["properties"])


def test_every_finding_id_is_documented_and_vice_versa() -> None:
    source = Path(advice.__file__).read_text()
    emitted = set(re.findall(r'id="([a-z0-9-]+)"', source))
    emitted |= {f"{step}-failed" for step in ("dns", "connect", "tls", "http", "driver")}
    emitted |= {"slow-connect", "slow-tls"}
    assert 'id=f"slow-{key[:-2]}"' in source  # the two ids above come from this line
    text = DOC.read_text()
    section = text[
        text.index("## Findings and their fixes") : text.index("## Recommended settings")
    ]
    documented = set(re.findall(r"^\| `([a-z0-9-]+)` \|", section, flags=re.M))
    assert emitted == documented, (emitted - documented, documented - emitted)
