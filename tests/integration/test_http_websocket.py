"""WS /v1/audio/speech/stream on 127.0.0.1 through a real WebSocket client (the `websockets`
package): deltas in, each sentence's audio out in order and before the input is done, coded
error events, the handshake's bearer check, a client that leaves, and an idle session closed.

The server is the real app under uvicorn in this process (f5worker.testing.http) serving a
Worker on the session's demo engine; its header deadline is 1 s, so a session that outlives it
also shows the deadline is off once the connection is a WebSocket.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from f5worker.job.schema import MAX_TEXT_CHARS
from f5worker.job.worker import Worker
from f5worker.serve.http.service import Service
from f5worker.startup.compose import make_worker
from f5worker.testing.http import http_settings, serving

CONFIG = {"type": "session.config", "voice": "alloy", "quality": "fast", "seed": 3}
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SENTENCES = ["Hello there, listener.", "This is the second sentence.", "And a last one"]
LONG = " ".join(f"This is sentence number {i} of a long text, spoken slowly." for i in range(30))


class CountingWorker(Worker):
    """The real worker, counting the pieces its engine makes (what a cancel must stop)."""

    made = 0

    def pieces(self, job, control):
        for piece in super().pieces(job, control):
            type(self).made += 1
            yield piece


@pytest.fixture(scope="module")
def served(engine) -> Iterator[tuple[str, Service]]:
    settings = http_settings(
        max_concurrency=2,
        http_header_timeout_s=1,
        http_ws_idle_timeout_s=2,
        http_ws_max_message_bytes=2048,
        http_auth_token=TOKEN,
    )
    service = Service(settings)
    service.ready(make_worker(engine, settings, worker_cls=CountingWorker))
    with serving(service) as url:
        yield url, service


def ws_url(url: str) -> str:
    return url.replace("http://", "ws://") + "/v1/audio/speech/stream"


@contextlib.contextmanager
def open_session(url: str, config: dict[str, Any] | None = CONFIG) -> Iterator[ClientConnection]:
    with connect(ws_url(url), additional_headers=AUTH, open_timeout=10, max_size=None) as ws:
        if config is not None:
            ws.send(json.dumps(config))
        yield ws


def deltas(text: str) -> list[str]:
    """Words with their trailing space, as an LLM's tokens arrive."""
    words = text.split(" ")
    return [w + " " for w in words[:-1]] + [words[-1]]


def receive_until(ws: ClientConnection, kind: str, timeout_s: float = 120) -> list[Any]:
    """Events (dicts) and audio (bytes) up to and including the first event of `kind`."""
    got: list[Any] = []
    while True:
        message = ws.recv(timeout=timeout_s)
        got.append(json.loads(message) if isinstance(message, str) else message)
        if isinstance(got[-1], dict) and got[-1]["type"] in (kind, "error"):
            return got


def test_each_sentence_is_spoken_in_order_and_the_first_before_the_input_is_done(served):
    url, _ = served
    with open_session(url) as ws:
        for d in deltas(SENTENCES[0] + " " + SENTENCES[1][:8]):  # the first one is complete
            ws.send(json.dumps({"type": "input.text", "text": d}))
        first = receive_until(ws, "audio.done")  # no input.done sent yet
        assert first[0]["type"] == "audio.start"
        assert first[0]["sentence_text"] == SENTENCES[0]
        assert (first[0]["format"], first[0]["sample_rate"]) == ("pcm", 24000)
        assert any(isinstance(m, bytes) and m for m in first)
        for d in deltas(SENTENCES[1][8:] + " " + SENTENCES[2]):
            ws.send(json.dumps({"type": "input.text", "text": d}))
        ws.send(json.dumps({"type": "input.done"}))
        rest = receive_until(ws, "session.done")
        ws.send(json.dumps({"type": "session.close"}))
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 1000
    messages = first + rest
    events = [m for m in messages if isinstance(m, dict)]
    assert [(e["type"], e.get("sentence_index")) for e in events] == [
        ("audio.start", 0),
        ("audio.done", 0),
        ("audio.start", 1),
        ("audio.done", 1),
        ("audio.start", 2),
        ("audio.done", 2),
        ("session.done", None),
    ]
    assert [e["sentence_text"] for e in events if e["type"] == "audio.start"] == SENTENCES
    assert events[-1] == {"type": "session.done", "utterance_index": 0, "total_sentences": 3}
    per_sentence = _audio_per_sentence(messages)
    for done, audio in zip(
        [e for e in events if e["type"] == "audio.done"], per_sentence, strict=True
    ):
        assert done["total_bytes"] == len(audio) > 0
        assert done["audio_s"] == pytest.approx(len(audio) / 2 / 24000, abs=1e-3)
        assert 0 < done["first_audio_s"] <= done["total_s"]
    # each sentence is the speech route's request for that sentence: the same audio, bit for bit
    body = {"input": SENTENCES[1], "response_format": "pcm", **CONFIG}
    body.pop("type")
    answer = httpx.post(f"{url}/v1/audio/speech", json=body, headers=AUTH, timeout=120)
    assert answer.content == per_sentence[1]


def _audio_per_sentence(messages: list[Any]) -> list[bytes]:
    out: list[bytes] = []
    for m in messages:
        if isinstance(m, dict) and m["type"] == "audio.start":
            out.append(b"")
        elif isinstance(m, bytes):
            out[-1] += m
    return out


def test_a_second_utterance_on_the_same_connection_in_another_format(served):
    url, service = served
    cancelled = service.counters.cancelled
    with open_session(url) as ws:
        ws.send(json.dumps({"type": "input.text", "text": "One. Two"}))
        ws.send(json.dumps({"type": "input.done"}))
        assert receive_until(ws, "session.done")[-1]["total_sentences"] == 2
        ws.send(json.dumps({**CONFIG, "response_format": "wav"}))
        ws.send(json.dumps({"type": "input.text", "text": "Three."}))
        ws.send(json.dumps({"type": "input.done"}))
        second = receive_until(ws, "session.done")
    audio = b"".join(m for m in second if isinstance(m, bytes))
    assert audio[:4] == b"RIFF" and audio[8:12] == b"WAVE"  # the frames make one file
    assert second[-1] == {"type": "session.done", "utterance_index": 1, "total_sentences": 1}
    # the client closed with nothing pending: a session ended, not one abandoned
    _wait_for(lambda: service.admission.admitted == 0)
    assert service.counters.cancelled == cancelled


def text(delta: str) -> str:
    return json.dumps({"type": "input.text", "text": delta})


def config(**fields: Any) -> str:
    return json.dumps({**CONFIG, **fields})


BAD, BIG = "INVALID_INPUT", "REQUEST_TOO_LARGE"
TOO_MUCH = [text("a " * 1000)] * (MAX_TEXT_CHARS // 2000 + 1)  # each message within its bound
# what is sent, after the config or instead of it -> the error's code, the close code
ERRORS = [
    ("not json", ["{nope"], True, BAD, 1008),
    ("a JSON array", ["[1, 2]"], True, BAD, 1008),
    ("an unknown type", ['{"type": "input.audio"}'], True, BAD, 1008),
    ("an extra field", ['{"type": "input.done", "x": 1}'], True, BAD, 1008),
    ("text that is not a string", ['{"type": "input.text", "text": 5}'], True, BAD, 1008),
    ("a binary message", [b"\x00\x01"], True, BAD, 1008),
    ("text before the config", [text("Hi. ")], False, BAD, 1008),
    ("an oversized message", [text("a" * 3000)], True, BIG, 1009),
    ("a bad format", [config(response_format="ogg")], False, "UNSUPPORTED_FORMAT", 1008),
    ("a field the speech route lacks", [config(temperature=1)], False, BAD, 1008),
    ("input in the config", [config(input="Hi.")], False, BAD, 1008),
    ("a voice not there", [config(voice="nobody"), text("Hi. ")], False, "VOICE_NOT_FOUND", 1008),
    ("more text than one request may have", TOO_MUCH, True, "TEXT_TOO_LONG", 1009),
    ("a new config mid-utterance", [text("Hi"), config()], True, BAD, 1008),
]  # fmt: skip


@pytest.mark.parametrize(
    ("sent", "configured", "code", "close"),
    [case[1:] for case in ERRORS],
    ids=[case[0] for case in ERRORS],
)
def test_a_bad_message_gets_a_coded_error_event_then_the_close(
    served, sent, configured, code, close
):
    url, service = served
    with open_session(url, CONFIG if configured else None) as ws:
        for message in sent:
            ws.send(message)
        got = receive_until(ws, "error")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    error = got[-1]
    assert (error["type"], error["code"], ws.close_code) == ("error", code, close)
    assert error["message"] and "aaaa" not in error["message"]  # never the text itself
    _wait_for(lambda: service.admission.admitted == 0)


def test_the_handshake_needs_the_bearer_token(served):
    url, _ = served
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        with (
            pytest.raises(InvalidStatus) as refused,
            connect(ws_url(url), additional_headers=headers),
        ):
            pass
        response = refused.value.response
        assert response.status_code == 401
        assert json.loads(response.body)["error"]["code"] == "UNAUTHORIZED"


def test_a_client_that_leaves_stops_the_sentences_not_yet_made(served):
    url, service = served
    CountingWorker.made = 0
    cancelled = service.counters.cancelled
    with open_session(url) as ws:
        ws.send(json.dumps({"type": "input.text", "text": LONG}))
        ws.send(json.dumps({"type": "input.done"}))
        while not isinstance(ws.recv(timeout=120), bytes):  # the first sentence's audio: go
            pass
    _wait_for(
        lambda: service.counters.cancelled == cancelled + 1 and service.admission.admitted == 0
    )
    time.sleep(1.0)  # what would run next has had its chance
    # the piece in progress may finish (on CPU a pair side by side); no sentence after it starts
    assert CountingWorker.made <= 3 < LONG.count(".")


def test_an_idle_session_is_closed_with_request_timeout(served):
    url, service = served
    with open_session(url) as ws:
        started = time.monotonic()
        got = receive_until(ws, "error", timeout_s=30)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    assert got[-1]["code"] == "REQUEST_TIMEOUT"
    assert 2 <= time.monotonic() - started < 10
    _wait_for(lambda: service.admission.admitted == 0)


def _wait_for(condition, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_session_ends_at_its_longest_duration_however_busy_its_client(engine):
    settings = http_settings(http_ws_max_session_s=10, http_ws_idle_timeout_s=5)
    service = Service(settings)
    service.ready(make_worker(engine, settings))
    with serving(service) as url, connect(ws_url(url), open_timeout=10) as ws:
        ws.send(json.dumps(CONFIG))
        started = time.monotonic()
        got: list[Any] = []
        with pytest.raises(ConnectionClosed):
            while True:  # never idle: an empty delta every second
                with contextlib.suppress(ConnectionClosed):  # what was sent is still read
                    ws.send(json.dumps({"type": "input.text", "text": ""}))
                with contextlib.suppress(TimeoutError):
                    got.append(json.loads(ws.recv(timeout=1)))
        assert [e["code"] for e in got] == ["REQUEST_TIMEOUT"]
        assert ws.close_code == 1008
        assert 10 <= time.monotonic() - started < 20
        _wait_for(lambda: service.admission.admitted == 0)
