"""Bounded JSON request bodies: counted while read, parsed or coded."""

from __future__ import annotations

import asyncio

import pytest

from f5worker.errors import InvalidInput, RequestTooLarge
from f5worker.serve.http.body import parse_json, read_json


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
