"""The WebSocket route's messages: each client message parsed, or refused with its code."""

from __future__ import annotations

import json

import pytest

from f5worker.errors import (
    InternalError,
    InvalidInput,
    Overloaded,
    RequestTimeout,
    RequestTooLarge,
    TextTooLong,
    UnsupportedFormat,
    VoiceNotFound,
    WorkerError,
)
from f5worker.serve.http import ws_protocol as wire
from f5worker.serve.http.body import MAX_BODY_BYTES

LIMIT = 1024


def received(body: object) -> dict[str, object]:
    return {"type": "websocket.receive", "text": json.dumps(body)}


def test_the_four_client_messages():
    assert wire.parse(received({"type": "input.text", "text": "Hi"}), LIMIT) == (
        wire.ClientMessage("input.text", text="Hi")
    )
    assert wire.parse(received({"type": "input.done"}), LIMIT).kind == "input.done"
    assert wire.parse(received({"type": "session.close"}), LIMIT).kind == "session.close"
    config = wire.parse(received({"type": "session.config", "voice": "alloy", "seed": 1}), LIMIT)
    assert config.config == {"voice": "alloy", "seed": 1, "response_format": "pcm"}


def test_a_config_may_be_as_large_as_a_request_body_and_text_only_as_the_limit():
    ref = "A" * (LIMIT * 4)  # stands for a base64 clip: parsed, not fetched
    big = {"type": "session.config", "ref_audio": ref, "ref_text": "Hi."}
    assert wire.parse(received(big), LIMIT).config["ref_audio"] == ref
    with pytest.raises(RequestTooLarge):
        wire.parse(received({"type": "input.text", "text": "a" * LIMIT}), LIMIT)
    with pytest.raises(RequestTooLarge):
        wire.parse({"text": "x" * (MAX_BODY_BYTES + 1)}, LIMIT)


BAD = [
    ({"bytes": b"{}"}, InvalidInput),
    ({"text": "{nope"}, InvalidInput),
    ({"text": "[]"}, InvalidInput),
    (received({"text": "no type"}), InvalidInput),
    (received({"type": "response.create"}), InvalidInput),
    (received({"type": "input.text"}), InvalidInput),
    (received({"type": "input.text", "text": None}), InvalidInput),
    (received({"type": "input.text", "text": "x", "extra": 1}), InvalidInput),
    (received({"type": "input.done", "text": "x"}), InvalidInput),
    (received({"type": "session.config", "input": "x"}), InvalidInput),
    (received({"type": "session.config", "temperature": 0.7}), InvalidInput),
    (received({"type": "session.config", "response_format": "ogg"}), UnsupportedFormat),
    (received({"type": "session.config", "speed": 99}), InvalidInput),
    (received({"type": "session.config", "quality": "ultra"}), InvalidInput),
]


@pytest.mark.parametrize(("message", "error"), BAD)
def test_a_bad_message_is_refused_with_its_code(message, error):
    with pytest.raises(error):
        wire.parse(message, LIMIT)


def test_a_sentence_becomes_the_speech_routes_input():
    raw = wire.job_input({"voice": "alloy", "response_format": "pcm"}, "Hello.")
    assert raw == {
        "openai_route": "/v1/audio/speech",
        "openai_input": {"voice": "alloy", "response_format": "pcm", "input": "Hello."},
    }


@pytest.mark.parametrize(
    ("err", "code"),
    [
        (InvalidInput("x"), 1008),
        (VoiceNotFound("x"), 1008),
        (RequestTimeout("x"), 1008),
        (RequestTooLarge("x"), 1009),
        (TextTooLong("x"), 1009),
        (Overloaded("x"), 1013),
        (InternalError("x"), 1011),
    ],
)
def test_an_error_event_carries_the_code_and_the_close_says_its_class(err: WorkerError, code):
    event = wire.error_event(err)
    assert event == {"type": "error", "code": err.code, "message": "x", "retryable": err.retryable}
    assert wire.close_code(err) == code
