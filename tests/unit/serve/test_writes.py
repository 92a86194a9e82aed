"""The write-progress deadline: a send that cannot finish cuts the stream and closes its body."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from f5worker.serve.http.writes import BoundedStreamingResponse, WriteTimedOut

SCOPE = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "headers": []}


def test_a_client_that_stops_reading_cuts_the_stream_and_closes_its_body():
    closed: list[str] = []
    writes: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"x" * 1000
        finally:
            closed.append("closed")  # app.py's _finishing: cancel the job, release the slot

    async def scenario() -> None:
        sent = 0

        async def send(message: dict) -> None:
            nonlocal sent
            sent += 1
            if sent > 3:  # the client's buffers are full: never returns
                await asyncio.sleep(3600)

        async def receive() -> dict:
            await asyncio.sleep(3600)
            return {}

        response = BoundedStreamingResponse(
            body(), write_timeout_s=0.1, on_write=lambda: writes.append(1)
        )
        with pytest.raises(WriteTimedOut):
            await asyncio.wait_for(response(SCOPE, receive, send), 5)

    asyncio.run(scenario())
    assert closed == ["closed"] and len(writes) == 3


def test_a_reading_client_gets_the_whole_stream():
    async def scenario() -> list[dict]:
        sent: list[dict] = []

        async def body() -> AsyncIterator[bytes]:
            for _ in range(3):
                yield b"abc"

        async def send(message: dict) -> None:
            sent.append(message)

        async def receive() -> dict:
            await asyncio.sleep(3600)
            return {}

        await BoundedStreamingResponse(body(), write_timeout_s=1)(SCOPE, receive, send)
        return sent

    sent = asyncio.run(scenario())
    assert b"".join(m.get("body", b"") for m in sent[1:]) == b"abcabcabc"
