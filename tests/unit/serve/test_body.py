"""Bounded JSON request bodies: JSON only, counted and timed while read, parsed or coded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from f5worker.errors import InvalidInput, RequestTimeout, RequestTooLarge, UnsupportedMediaType
from f5worker.serve.http.body import parse_json, read_json, require_json


async def chunks_of(*parts: bytes):
    for part in parts:
        yield part


@pytest.mark.parametrize(
    ("parts", "length", "error"),
    [
        ((b"x" * 10, b"y" * 10), None, RequestTooLarge),  # counted while reading
        ((b"{}",), "100", RequestTooLarge),  # refused from its Content-Length
        ((b"",), None, InvalidInput),
        ((b"{,}",), None, InvalidInput),
    ],
)
def test_bodies_are_bounded_and_parsed_or_coded(parts, length, error):
    with pytest.raises(error):
        asyncio.run(read_json(chunks_of(*parts), length, limit=16))


def test_json_that_python_accepts_reaches_the_schema():
    assert parse_json(b'{"speed": NaN, "text": "\\ud800"}')["text"] == "\ud800"


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON ;charset=UTF-8"],
)
def test_json_content_types_are_accepted(content_type):
    require_json(content_type)


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json-seq",
        "application/jsonx",
    ],
)
def test_other_content_types_are_415(content_type):
    with pytest.raises(UnsupportedMediaType) as caught:
        require_json(content_type)
    assert caught.value.http_status == 415


def test_a_body_that_does_not_arrive_in_time_is_a_request_timeout():
    async def trickle() -> AsyncIterator[bytes]:
        yield b'{"input"'
        await asyncio.sleep(10)
        yield b": {}}"

    async def scenario() -> float:
        started = time.monotonic()
        with pytest.raises(RequestTimeout):
            await read_json(trickle(), None, timeout_s=0.2)
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 2


def test_a_body_in_time_is_read():
    async def pieces() -> AsyncIterator[bytes]:
        for part in (b'{"input"', b": {}}"):
            await asyncio.sleep(0.01)
            yield part

    assert asyncio.run(read_json(pieces(), None, timeout_s=5)) == {"input": {}}
