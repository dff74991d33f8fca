"""Real errors that are NOT connection faults classify as None: retrying a SQL syntax
error, a duplicate key, a 404 or a wrong-type command would be wrong."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest

from resetguard._classify import classify

from ._servers import FaultHTTPServer
from .conftest import tag


def _raised(fn: Callable[[], object]) -> BaseException:
    try:
        fn()
    except Exception as exc:
        return exc
    raise AssertionError("expected an exception")


def _assert_not_fault(exc: BaseException, expected_type: str) -> None:
    assert f"{type(exc).__module__}.{type(exc).__qualname__}" == expected_type, repr(exc)
    assert classify(exc) is None, f"{exc!r} classified as {classify(exc)}"


@pytest.fixture
def http_server() -> Iterator[FaultHTTPServer]:
    with FaultHTTPServer() as srv:
        yield srv


@pytest.mark.postgres
def test_psycopg_server_errors(postgres_dsn: str) -> None:
    psycopg = pytest.importorskip("psycopg")
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        _assert_not_fault(_raised(lambda: conn.execute("SELEC 1")), "psycopg.errors.SyntaxError")
        conn.execute("CREATE TEMP TABLE rg_u (id int PRIMARY KEY)")
        conn.execute("INSERT INTO rg_u VALUES (1)")
        dup = _raised(lambda: conn.execute("INSERT INTO rg_u VALUES (1)"))
        _assert_not_fault(dup, "psycopg.errors.UniqueViolation")
        conn.execute("SET statement_timeout = 50")
        cancel = _raised(lambda: conn.execute("SELECT pg_sleep(1)"))
        _assert_not_fault(cancel, "psycopg.errors.QueryCanceled")
        assert not conn.closed  # and indeed the connection is fine


@pytest.mark.postgres
def test_asyncpg_and_sqlalchemy_server_errors(postgres_dsn: str) -> None:
    asyncpg = pytest.importorskip("asyncpg")
    sqlalchemy = pytest.importorskip("sqlalchemy")

    async def scenario() -> BaseException:
        conn = await asyncpg.connect(host="127.0.0.1", user="postgres", database="test")
        try:
            await conn.execute("SELEC 1")
        except Exception as exc:
            return exc
        finally:
            await conn.close()
        raise AssertionError("expected a syntax error")

    _assert_not_fault(asyncio.run(scenario()), "asyncpg.exceptions.PostgresSyntaxError")
    engine = sqlalchemy.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test")
    try:
        with engine.connect() as conn:
            exc = _raised(lambda: conn.execute(sqlalchemy.text("SELEC 1")))
        _assert_not_fault(exc, "sqlalchemy.exc.ProgrammingError")
    finally:
        engine.dispose()


@pytest.mark.mysql
def test_mysql_server_errors(mysql_params: dict[str, object]) -> None:
    pymysql = pytest.importorskip("pymysql")
    conn = pymysql.connect(**mysql_params, autocommit=True)
    try:
        with conn.cursor() as cur:
            syntax = _raised(lambda: cur.execute("SELEC 1"))
            _assert_not_fault(syntax, "pymysql.err.ProgrammingError")
            cur.execute("CREATE TEMPORARY TABLE rg_u (id int PRIMARY KEY)")
            cur.execute("INSERT INTO rg_u VALUES (1)")
            dup = _raised(lambda: cur.execute("INSERT INTO rg_u VALUES (1)"))
            _assert_not_fault(dup, "pymysql.err.IntegrityError")
    finally:
        conn.close()
    connector = pytest.importorskip("mysql.connector")
    cnx = connector.connect(
        host="127.0.0.1", port=3306, user="root", password="", database="test", use_pure=True
    )
    try:
        cur = cnx.cursor()
        exc = _raised(lambda: cur.execute("SELEC 1"))
        _assert_not_fault(exc, "mysql.connector.errors.ProgrammingError")
    finally:
        cnx.close()


@pytest.mark.redis
def test_redis_response_error(redis_url: str) -> None:
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(redis_url)
    key = tag("redis-nf")
    try:
        client.set(key, "a string")
        exc = _raised(lambda: client.lpush(key, "x"))
        _assert_not_fault(exc, "redis.exceptions.ResponseError")
        assert "WRONGTYPE" in str(exc)
    finally:
        client.delete(key)
        client.close()


def test_http_404s(http_server: FaultHTTPServer) -> None:
    url = f"{http_server.url}/404"
    httpx = pytest.importorskip("httpx")
    with httpx.Client(timeout=2) as client:
        exc = _raised(lambda: client.get(url).raise_for_status())
    _assert_not_fault(exc, "httpx.HTTPStatusError")
    requests = pytest.importorskip("requests")
    with requests.Session() as session:
        exc = _raised(lambda: session.get(url, timeout=2).raise_for_status())
    _assert_not_fault(exc, "requests.exceptions.HTTPError")
    exc = _raised(lambda: urllib.request.urlopen(url, timeout=2))
    assert isinstance(exc, urllib.error.HTTPError)
    exc.close()
    _assert_not_fault(exc, "urllib.error.HTTPError")
    aiohttp = pytest.importorskip("aiohttp")

    async def scenario() -> BaseException:
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            return _raised(resp.raise_for_status)

    _assert_not_fault(asyncio.run(scenario()), "aiohttp.client_exceptions.ClientResponseError")


def test_plain_python_errors_even_while_handling_a_reset() -> None:
    for exc in (KeyError("k"), ValueError("v"), RuntimeError("r"), ZeroDivisionError()):
        assert classify(exc) is None

    # A bug in an except-block must not be retried as if it were the reset it handled.
    def buggy_handler() -> None:
        try:
            raise ConnectionResetError(104, "Connection reset by peer")
        except ConnectionResetError:
            empty: dict[str, int] = {}
            empty["missing"]

    with pytest.raises(KeyError) as info:
        buggy_handler()
    assert isinstance(info.value.__context__, ConnectionResetError)
    assert classify(info.value) is None
