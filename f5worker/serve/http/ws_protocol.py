"""The messages of `WS /v1/audio/speech/stream`: what a client may send, what the worker sends.

Shaped after vLLM-Omni's streaming speech WebSocket (docs/http.md "Text as it is written" lists
the differences). Client messages are JSON text frames:
- `session.config`: the speech fields of `POST /v1/audio/speech` but `input` (model, voice,
  response_format, speed, and the extensions ref_audio/ref_text/seed/quality); first, and again
  between utterances to change them. response_format defaults to `pcm` here.
- `input.text` `{"text": "..."}`: a delta of the text, as an LLM writes it.
- `input.done`: the end of an utterance: what is pending is its last sentence; the connection
  stays open for the next one.
- `session.close`: the end of the session (closing the socket is the same).
The worker sends `audio.start`, the audio as binary frames, `audio.done` per sentence,
`session.done` per utterance, and `error` (always the last message before the close).
Every parse failure is a coded error (errors.py); this module holds no state.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from f5worker.errors import InvalidInput, RequestTooLarge, WorkerError, describe_names
from f5worker.job import openai_compat
from f5worker.job.schema import parse_request
from f5worker.serve.http.body import MAX_BODY_BYTES

ROUTE = "/v1/audio/speech/stream"
CONFIG, TEXT, DONE, CLOSE = "session.config", "input.text", "input.done", "session.close"
TYPES = (CONFIG, TEXT, DONE, CLOSE)
DEFAULT_FORMAT = "pcm"

# WebSocket close codes (RFC 6455 7.4.1) by the HTTP status of the error that ended a session.
NORMAL, POLICY, TOO_BIG, INTERNAL, TRY_AGAIN = 1000, 1008, 1009, 1011, 1013


@dataclass(frozen=True)
class ClientMessage:
    kind: str  # one of TYPES
    text: str = ""  # input.text's delta
    config: dict[str, Any] = field(default_factory=dict)  # session.config's speech fields


def parse(message: Mapping[str, Any], max_bytes: int) -> ClientMessage:
    """One ASGI `websocket.receive` message -> a ClientMessage, or a coded error. A message is
    at most `max_bytes` (UTF-8), but a session.config, which may carry a base64 reference clip,
    may be as large as a speech request's body."""
    raw = message.get("text")
    if raw is None:
        raise InvalidInput("send JSON text messages; binary messages are not accepted")
    size = len(raw.encode("utf-8", "surrogatepass"))
    if size > MAX_BODY_BYTES:
        raise RequestTooLarge(f"a message is larger than {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw)
    except ValueError:
        raise InvalidInput("a message is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidInput("a message must be a JSON object")
    kind = body.get("type")
    if kind not in TYPES:
        raise InvalidInput(f"a message's type must be one of {', '.join(TYPES)}")
    if kind != CONFIG and size > max_bytes:
        raise RequestTooLarge(f"a {kind} message is larger than {max_bytes} bytes")
    if kind == CONFIG:
        return ClientMessage(kind, config=session_config(body))
    if kind == TEXT:
        text = body.get("text")
        if not isinstance(text, str):
            raise InvalidInput("input.text needs `text`, a string")
        _only(body, ("type", "text"))
        return ClientMessage(kind, text=text)
    _only(body, ("type",))
    return ClientMessage(kind)


def session_config(body: dict[str, Any]) -> dict[str, Any]:
    """A session.config's speech fields, checked as a speech request's would be (unknown fields,
    format, speed, quality, seed ...), so a bad one fails before any text is sent."""
    config = {k: v for k, v in body.items() if k != "type"}
    if "input" in config:
        raise InvalidInput("session.config takes no `input`: send the text as input.text")
    if config.get("response_format") is None:
        config["response_format"] = DEFAULT_FORMAT
    parse_request(job_input(config, "."))
    return config


def job_input(config: dict[str, Any], sentence: str) -> dict[str, Any]:
    """One sentence as the worker's raw input: the speech route's body, with this text."""
    body = {**config, "input": sentence}
    return {"openai_route": openai_compat.SPEECH_ROUTE, "openai_input": body}


def _only(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    extra = sorted(k for k in body if k not in allowed)
    if extra:
        raise InvalidInput(f"unknown field(s) in {body['type']}: {describe_names(extra)}")


# -- what the worker sends ----------------------------------------------------------------------


def error_event(err: WorkerError) -> dict[str, Any]:
    return {"type": "error", "code": err.code, "message": err.message, "retryable": err.retryable}


def close_code(err: WorkerError) -> int:
    status = err.http_status
    if status == 413:
        return TOO_BIG
    if status in (429, 503):
        return TRY_AGAIN
    if status >= 500:
        return INTERNAL
    return POLICY
