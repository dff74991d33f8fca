"""Toxic specs: frozen values, validation, Toxiproxy JSON and the CLI spec syntax."""

from __future__ import annotations

import dataclasses

import pytest

from resetguard.proxy import (
    Bandwidth,
    Down,
    IdleReset,
    Latency,
    LimitData,
    ResetAt,
    ResetPeer,
    Slicer,
    SlowClose,
    Timeout,
    Toxic,
    ToxicError,
    parse_toxic,
    toxic_from_json,
    toxic_types,
    toxics_from_json,
)
from resetguard.proxy._config import parse_config

EXAMPLES: list[Toxic] = [
    Latency(latency=100, jitter=10),
    Bandwidth(rate=100, stream="upstream"),
    SlowClose(delay=50),
    Timeout(timeout=0),
    ResetPeer(timeout=500, toxicity=0.5),
    Slicer(average_size=10, size_variation=5, delay=100),
    LimitData(bytes=1000, name="cut"),
    ResetAt(bytes=7),
    IdleReset(idle=2000, close="fin", trigger="timer", stream="upstream"),
    Down(),
]


def test_registry_covers_every_type() -> None:
    assert sorted(toxic_types()) == sorted(t.type for t in EXAMPLES)


def test_defaults_follow_toxiproxy() -> None:
    t = Latency()
    assert (t.name, t.stream, t.toxicity, t.latency, t.jitter) == (
        "latency_downstream",
        "downstream",
        1.0,
        0,
        0,
    )
    assert ResetPeer(stream="upstream").name == "reset_peer_upstream"
    assert IdleReset(idle=1).attributes == {"idle": 1, "close": "rst", "trigger": "data"}


def test_frozen() -> None:
    t = Latency(latency=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.latency = 2  # type: ignore[misc]
    assert t.replace(latency=2).latency == 2
    assert t.replace(latency=2).name == "latency_downstream"


@pytest.mark.parametrize("toxic", EXAMPLES, ids=lambda t: t.type)
def test_json_round_trip(toxic: Toxic) -> None:
    body = toxic.to_json()
    assert set(body) == {"attributes", "name", "type", "stream", "toxicity"}
    assert toxic_from_json(body) == toxic


@pytest.mark.parametrize("toxic", EXAMPLES, ids=lambda t: t.type)
def test_spec_round_trip(toxic: Toxic) -> None:
    assert parse_toxic(toxic.to_spec()) == (toxic,)


def test_json_defaults_and_update_merge() -> None:
    t = toxic_from_json({"type": "latency", "attributes": {"latency": 100}})
    assert t == Latency(latency=100)
    updated = toxic_from_json({"attributes": {"jitter": 5}, "toxicity": 0.25}, base=t)
    assert updated == Latency(latency=100, jitter=5, toxicity=0.25)
    assert toxic_from_json({"type": "latency", "attributes": {"latency": 100.0}}).latency == 100


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"type": "nope"}, "invalid toxic type 'nope'"),
        ({"type": "latency", "stream": "sideways"}, "stream was invalid"),
        ({"type": "latency", "attributes": {"latency": "100"}}, "latency must be a whole number"),
        ({"type": "latency", "attributes": {"latency": 1.5}}, "latency must be a whole number"),
        ({"type": "latency", "attributes": {"latency": -1}}, "latency must be a whole number >= 0"),
        ({"type": "latency", "attributes": {"delay": 1}}, "unknown attribute 'delay'"),
        ({"type": "bandwidth"}, "missing required attribute 'rate'"),
        ({"type": "bandwidth", "attributes": {"rate": 0}}, "rate must be at least 1"),
        ({"type": "slicer", "attributes": {"average_size": 0}}, "average_size must be at least 1"),
        (
            {"type": "slicer", "attributes": {"average_size": 5, "size_variation": 5}},
            "size_variation (5) must be smaller than average_size (5)",
        ),
        ({"type": "latency", "toxicity": 1.5}, "toxicity must be a number from 0 to 1"),
        ({"type": "latency", "toxicity": "x"}, "toxicity must be a number from 0 to 1"),
        ({"type": "idle_reset", "attributes": {"idle": 5, "close": "x"}}, "close must be 'rst'"),
        ({"type": "idle_reset", "attributes": {"idle": 0}}, "idle must be at least 1"),
        ({"type": "down", "toxicity": 0.5}, "down: toxicity must be 1"),
        ({"type": "latency", "attributes": []}, "attributes must be a JSON object"),
    ],
)
def test_json_errors_name_the_bad_part(body: dict[str, object], fragment: str) -> None:
    with pytest.raises(ToxicError) as info:
        toxic_from_json(body)
    assert fragment in str(info.value)


def test_abstract_base_refused() -> None:
    with pytest.raises(ToxicError, match="abstract"):
        Toxic()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("reset_peer", (ResetPeer(),)),
        (
            "reset_peer:downstream:timeout=500:toxicity=0.5",
            (ResetPeer(timeout=500, toxicity=0.5),),
        ),
        (
            "latency:upstream:latency=2s:jitter=250ms",
            (Latency(stream="upstream", latency=2000, jitter=250),),
        ),
        ("slicer:average_size=10:delay=2ms", (Slicer(average_size=10, delay=2000),)),
        ("limit_data:bytes=1_000:name=cut", (LimitData(bytes=1000, name="cut"),)),
        (
            "idle_reset:upstream:idle=1.5s:close=fin",
            (IdleReset(stream="upstream", idle=1500, close="fin"),),
        ),
        (
            "latency:both:latency=5",
            (Latency(stream="upstream", latency=5), Latency(stream="downstream", latency=5)),
        ),
        (
            "latency:both:latency=5:name=slow",
            (
                Latency(stream="upstream", latency=5, name="slow_upstream"),
                Latency(stream="downstream", latency=5, name="slow_downstream"),
            ),
        ),
        ("down", (Down(),)),
    ],
)
def test_parse_spec(spec: str, expected: tuple[Toxic, ...]) -> None:
    assert parse_toxic(spec) == expected


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("", "empty toxic spec"),
        ("bogus", "invalid toxic type 'bogus'"),
        ("latency:sideways", "stream must be upstream, downstream or both, got 'sideways'"),
        ("latency:latency", "stream must be upstream, downstream or both, got 'latency'"),
        ("latency:downstream:latency=abc", "attribute 'latency' must be a whole number of ms"),
        ("latency:latency=1us", "attribute 'latency' must be a whole number of ms, got '1us'"),
        ("limit_data:bytes=10ms", "attribute 'bytes' must be a whole number of bytes"),
        ("latency:latency=5:latency=6", "'latency' given twice"),
        ("latency:jiter=5", "unknown key 'jiter' for latency"),
        ("latency:=5", "expected KEY=VALUE, got '=5'"),
        ("latency:latency=", "expected KEY=VALUE, got 'latency='"),
        ("latency:toxicity=lots", "toxicity must be a number from 0 to 1, got 'lots'"),
        ("latency:toxicity=2", "toxicity must be a number from 0 to 1"),
        ("bandwidth", "missing required attribute 'rate'"),
        ("idle_reset:idle=5:trigger=later", "attribute 'trigger' must be data or timer"),
    ],
)
def test_bad_specs_name_the_bad_part(spec: str, fragment: str) -> None:
    with pytest.raises(ToxicError) as info:
        parse_toxic(spec)
    assert fragment in str(info.value)
    if spec:
        assert repr(spec) in str(info.value)


def test_toxics_from_json_expands_both_like_the_cli() -> None:
    body = {"type": "latency", "stream": "both", "attributes": {"latency": 100}}
    assert toxics_from_json(body) == parse_toxic("latency:both:latency=100")
    named = toxics_from_json({**body, "name": "slow"})
    assert named == parse_toxic("latency:both:latency=100:name=slow")
    assert toxics_from_json({"type": "latency"}) == (toxic_from_json({"type": "latency"}),)
    with pytest.raises(ToxicError, match="toxics_from_json"):
        toxic_from_json(body)


def test_config_file_accepts_stream_both_in_toxic_objects() -> None:
    config = parse_config(
        [
            {
                "name": "db",
                "upstream": "127.0.0.1:5432",
                "toxics": [{"type": "reset_peer", "stream": "both", "toxicity": 0.5}],
            }
        ]
    )
    toxics = config.proxies[0].toxics
    assert [(t.name, t.stream, t.toxicity) for t in toxics] == [
        ("reset_peer_upstream", "upstream", 0.5),
        ("reset_peer_downstream", "downstream", 0.5),
    ]
