"""The control API, driven with raw HTTP calls as Toxiproxy's README documents them."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from proxy_helpers import TcpServer

from resetguard.proxy import FaultProxyServer


@pytest.fixture
def api() -> Iterator[FaultProxyServer]:
    with FaultProxyServer(api="127.0.0.1:0") as server:
        yield server


class Api:
    def __init__(self, server: FaultProxyServer) -> None:
        assert server.api_address is not None
        host, port = server.api_address.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=5)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        hdrs = {"Content-Type": "application/json", "User-Agent": "toxiproxy-cli/2.12"}
        hdrs.update(headers or {})
        self.conn.request(method, path, body=data, headers=hdrs)
        resp = self.conn.getresponse()
        payload = resp.read()
        if resp.getheader("Content-Type", "").startswith("application/json"):
            return resp.status, json.loads(payload)
        return resp.status, payload


@pytest.fixture
def client(api: FaultProxyServer) -> Iterator[Api]:
    c = Api(api)
    yield c
    c.conn.close()


def _roundtrip(listen: str, payload: bytes = b"ping", timeout: float = 5) -> bytes:
    host, port = listen.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(payload)
        return s.recv(100)


def test_proxy_lifecycle(client: Api, echo_server: TcpServer) -> None:
    status, proxy = client.call(
        "POST",
        "/proxies",
        {"name": "redis", "listen": "127.0.0.1:0", "upstream": echo_server.address},
    )
    assert status == 201
    assert proxy["name"] == "redis"
    assert proxy["upstream"] == echo_server.address
    assert proxy["enabled"] is True
    assert proxy["toxics"] == []
    assert not proxy["listen"].endswith(":0")  # the real port is reported
    assert _roundtrip(proxy["listen"]) == b"ping"

    assert client.call("GET", "/proxies") == (200, {"redis": proxy})
    assert client.call("GET", "/proxies/redis") == (200, proxy)

    status, disabled = client.call("POST", "/proxies/redis", {"enabled": False})
    assert status == 200
    assert disabled["enabled"] is False
    with pytest.raises(ConnectionRefusedError):
        _roundtrip(proxy["listen"])
    status, enabled = client.call("PATCH", "/proxies/redis", {"enabled": True})
    assert (status, enabled["enabled"]) == (200, True)
    assert _roundtrip(enabled["listen"]) == b"ping"

    assert client.call("DELETE", "/proxies/redis") == (204, b"")
    assert client.call("GET", "/proxies/redis") == (
        404,
        {"error": "proxy not found", "status": 404},
    )
    assert client.call("DELETE", "/proxies/redis")[0] == 404


def test_proxy_errors(client: Api, echo_server: TcpServer) -> None:
    body = {"name": "p", "listen": "127.0.0.1:0", "upstream": echo_server.address}
    assert client.call("POST", "/proxies", body)[0] == 201
    assert client.call("POST", "/proxies", body) == (
        409,
        {"error": "proxy already exists", "status": 409},
    )
    assert client.call("POST", "/proxies", {"upstream": "127.0.0.1:1"}) == (
        400,
        {"error": "missing required field: name", "status": 400},
    )
    assert client.call("POST", "/proxies", {"name": "q"}) == (
        400,
        {"error": "missing required field: upstream", "status": 400},
    )
    status, err = client.call("POST", "/proxies", raw=b"{not json")
    assert status == 400
    assert err["error"].startswith("bad request body")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, err = client.call(
            "POST",
            "/proxies",
            {"name": "busy", "listen": f"127.0.0.1:{port}", "upstream": echo_server.address},
        )
    assert status == 500
    assert err["error"].startswith(f"listen tcp 127.0.0.1:{port}:")
    assert "in use" in err["error"]


def test_toxic_lifecycle(client: Api, echo_server: TcpServer) -> None:
    _, proxy = client.call(
        "POST", "/proxies", {"name": "p", "listen": "127.0.0.1:0", "upstream": echo_server.address}
    )
    status, toxic = client.call(
        "POST", "/proxies/p/toxics", {"type": "latency", "attributes": {"latency": 200}}
    )
    assert status == 200
    assert toxic == {
        "attributes": {"latency": 200, "jitter": 0},
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1.0,
    }
    start = time.monotonic()
    assert _roundtrip(proxy["listen"]) == b"ping"
    assert time.monotonic() - start >= 0.19

    assert client.call("GET", "/proxies/p/toxics") == (200, [toxic])
    assert client.call("GET", "/proxies/p/toxics/latency_downstream") == (200, toxic)
    assert client.call("GET", "/proxies/p")[1]["toxics"] == [toxic]

    status, updated = client.call(
        "PATCH",
        "/proxies/p/toxics/latency_downstream",
        {"attributes": {"jitter": 5}, "toxicity": 0.5},
    )
    assert status == 200
    assert updated["attributes"] == {"latency": 200, "jitter": 5}
    assert updated["toxicity"] == 0.5
    status, updated = client.call(
        "POST", "/proxies/p/toxics/latency_downstream", {"attributes": {"latency": 1}}
    )
    assert (status, updated["attributes"]["latency"], updated["toxicity"]) == (200, 1, 0.5)

    assert client.call("DELETE", "/proxies/p/toxics/latency_downstream") == (204, b"")
    assert client.call("GET", "/proxies/p/toxics/latency_downstream") == (
        404,
        {"error": "toxic not found", "status": 404},
    )
    assert client.call("DELETE", "/proxies/p/toxics/latency_downstream")[0] == 404
    assert client.call("GET", "/proxies/p/toxics") == (200, [])


def test_toxic_errors(client: Api, echo_server: TcpServer) -> None:
    client.call("POST", "/proxies", {"name": "p", "upstream": echo_server.address})
    toxic = {"name": "t", "type": "reset_peer", "stream": "upstream"}
    assert client.call("POST", "/proxies/p/toxics", toxic)[0] == 200
    assert client.call("POST", "/proxies/p/toxics", toxic) == (
        409,
        {"error": "toxic already exists", "status": 409},
    )
    status, err = client.call("POST", "/proxies/p/toxics", {"type": "bogus"})
    assert status == 400
    assert err["error"].startswith("invalid toxic type")
    assert client.call("POST", "/proxies/p/toxics", {"type": "latency", "stream": "sideways"}) == (
        400,
        {"error": "stream was invalid, can be either upstream or downstream", "status": 400},
    )
    status, err = client.call(
        "POST", "/proxies/p/toxics", {"type": "latency", "attributes": {"latency": "slow"}}
    )
    assert status == 400
    assert "latency must be a whole number" in err["error"]
    assert client.call("POST", "/proxies/nope/toxics", toxic)[0] == 404
    assert client.call("GET", "/proxies/nope/toxics")[0] == 404


def test_reset_populate_version(client: Api, echo_server: TcpServer) -> None:
    status, body = client.call(
        "POST",
        "/populate",
        [
            {"name": "a", "listen": "127.0.0.1:0", "upstream": echo_server.address},
            {
                "name": "b",
                "listen": "127.0.0.1:0",
                "upstream": echo_server.address,
                "enabled": False,
            },
        ],
    )
    assert status == 201
    assert [p["name"] for p in body["proxies"]] == ["a", "b"]
    assert [p["enabled"] for p in body["proxies"]] == [True, False]
    a_listen = body["proxies"][0]["listen"]
    client.call("POST", "/proxies/a/toxics", {"type": "timeout"})

    # the same listen/upstream again keeps the proxy as it is
    status, again = client.call(
        "POST", "/populate", [{"name": "a", "listen": a_listen, "upstream": echo_server.address}]
    )
    assert status == 201
    assert again["proxies"][0]["toxics"][0]["type"] == "timeout"

    assert client.call("POST", "/populate", [{"name": "c", "upstream": "127.0.0.1:1"}, {}]) == (
        400,
        {"error": "missing required field: name at proxy 2", "status": 400},
    )

    assert client.call("POST", "/reset") == (204, b"")
    _, proxies = client.call("GET", "/proxies")
    assert proxies["a"]["toxics"] == []
    assert proxies["b"]["enabled"] is True
    assert _roundtrip(a_listen) == b"ping"

    status, version = client.call("GET", "/version")
    assert status == 200
    assert version["version"].startswith("2.")


def test_populate_with_toxics_extension(client: Api, echo_server: TcpServer) -> None:
    status, body = client.call(
        "POST",
        "/populate",
        [
            {
                "name": "z",
                "upstream": echo_server.address,
                "toxics": [{"type": "limit_data", "attributes": {"bytes": 2}}],
            }
        ],
    )
    assert status == 201
    assert _roundtrip(body["proxies"][0]["listen"]) == b"pi"


def test_metrics(client: Api, echo_server: TcpServer) -> None:
    _, proxy = client.call("POST", "/proxies", {"name": "m", "upstream": echo_server.address})
    client.call("POST", "/proxies/m/toxics", {"type": "latency", "name": "slow"})
    assert _roundtrip(proxy["listen"], b"x" * 10) == b"x" * 10
    time.sleep(0.1)
    status, text = client.call("GET", "/metrics")
    assert status == 200
    lines = text.decode().splitlines()
    labels = (
        f'{{direction="upstream",listener="{proxy["listen"]}",proxy="m",'
        f'upstream="{echo_server.address}"}}'
    )
    assert f"resetguard_proxy_received_bytes_total{labels} 10" in lines
    assert f"toxiproxy_proxy_sent_bytes_total{labels} 10" in lines
    assert 'resetguard_proxy_connections_total{proxy="m"} 1' in lines
    assert 'resetguard_proxy_connections_active{proxy="m"} 0' in lines
    toxic = '{proxy="m",toxic="slow",type="latency",stream="downstream"}'
    assert f"resetguard_proxy_toxic_connections_total{toxic} 1" in lines
    assert f"resetguard_proxy_toxic_bytes_total{toxic} 10" in lines
    assert "# TYPE resetguard_proxy_connections_active gauge" in lines


def test_http_details(client: Api) -> None:
    status, body = client.call("GET", "/proxies", headers={"User-Agent": "Mozilla/5.0"})
    assert (status, body) == (403, b"User agent not allowed\n")
    assert client.call("GET", "/nowhere")[0] == 404
    assert client.call("PUT", "/proxies")[0] == 405
    assert client.call("DELETE", "/reset")[0] == 405
    # chunked request bodies work too
    client.conn.putrequest("POST", "/proxies")
    client.conn.putheader("Transfer-Encoding", "chunked")
    client.conn.endheaders()
    payload = json.dumps({"name": "chunky", "upstream": "127.0.0.1:9"}).encode()
    client.conn.send(b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload))
    resp = client.conn.getresponse()
    assert resp.status == 201
    resp.read()


def test_closing_the_server_closes_keep_alive_api_connections() -> None:
    server = FaultProxyServer(api="127.0.0.1:0").start()
    client = Api(server)
    assert client.call("GET", "/version")[0] == 200  # the connection stays open
    start = time.monotonic()
    server.close()
    assert time.monotonic() - start < 5
    client.conn.close()


def _names(client: Api, proxy: str) -> list[str]:
    status, toxics = client.call("GET", f"/proxies/{proxy}/toxics")
    assert status == 200
    return sorted(t["name"] for t in toxics)


def test_stream_both_makes_one_toxic_per_stream(client: Api, echo_server: TcpServer) -> None:
    _status, proxy = client.call("POST", "/proxies", {"name": "p", "upstream": echo_server.address})
    body = {"type": "latency", "stream": "both", "attributes": {"latency": 100}}
    status, made = client.call("POST", "/proxies/p/toxics", body)
    assert status == 200
    assert [(t["name"], t["stream"]) for t in made] == [
        ("latency_upstream", "upstream"),
        ("latency_downstream", "downstream"),
    ]
    assert all(t["attributes"] == {"latency": 100, "jitter": 0} for t in made)
    assert _names(client, "p") == ["latency_downstream", "latency_upstream"]
    start = time.monotonic()
    assert _roundtrip(proxy["listen"]) == b"ping"
    assert time.monotonic() - start >= 0.19  # 100 ms on the way in, 100 ms on the way out

    # With a name: <name>_upstream and <name>_downstream, as on the command line.
    status, made = client.call("POST", "/proxies/p/toxics", {**body, "name": "slow"})
    assert status == 200
    assert [t["name"] for t in made] == ["slow_upstream", "slow_downstream"]

    # All or nothing: one of the two names is taken, so neither is added.
    client.call("DELETE", "/proxies/p/toxics/slow_upstream")
    status, err = client.call("POST", "/proxies/p/toxics", {**body, "name": "slow"})
    assert (status, err["error"]) == (409, "toxic already exists")
    assert _names(client, "p") == ["latency_downstream", "latency_upstream", "slow_downstream"]


def test_stream_both_in_a_proxy_toxics_list(client: Api, echo_server: TcpServer) -> None:
    status, proxy = client.call(
        "POST",
        "/proxies",
        {
            "name": "q",
            "upstream": echo_server.address,
            "toxics": [{"type": "latency", "stream": "both", "attributes": {"latency": 5}}],
        },
    )
    assert status == 201
    assert sorted(t["stream"] for t in proxy["toxics"]) == ["downstream", "upstream"]


def test_toxiproxy_streams_keep_their_meaning(client: Api, echo_server: TcpServer) -> None:
    client.call("POST", "/proxies", {"name": "p", "upstream": echo_server.address})
    for stream in ("upstream", "downstream", None):
        body = {"type": "latency", "name": f"l_{stream}"}
        if stream is not None:
            body["stream"] = stream
        status, made = client.call("POST", "/proxies/p/toxics", body)
        assert status == 200
        assert isinstance(made, dict)  # one toxic object, as Toxiproxy answers
        assert made["stream"] == (stream or "downstream")
