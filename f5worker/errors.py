"""The worker's error family: every failure a client can see has a stable code.

Each error knows whether a retry may succeed and whether the worker itself is broken (fatal), so
the handler can turn any of them into RunPod's error payload without a traceback or user text.
Subclasses also derive from the matching builtin so callers can catch them idiomatically.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

# An error travels in a RunPod result and a log line: bounded, but long enough for a complete
# list a caller must act on (the models a worker serves, say), whose names are copied whole.
MAX_MESSAGE_CHARS = 2048
MAX_LIST_BYTES = 1536  # of a list inside a message (describe_names)


def safe_text(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Bounded and valid UTF-8: lone surrogates (legal in JSON, not in UTF-8) become escapes,
    so the SDK can always serialise the message, and nothing sent can make it megabytes long."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_names(names: Iterable[object], budget: int = MAX_LIST_BYTES) -> str:
    """Names, sorted, each whole (so a caller can copy it), as many as fit in `budget` bytes of
    UTF-8; the rest are counted. A name too long for the budget alone is cut (only input a
    client sent can be that long, and echoing it in full would only amplify it)."""
    shown: list[str] = []
    unique = sorted({safe_text(str(n), budget) for n in names})
    used = 0
    for name in unique:
        cost = len(name.encode()) + (2 if shown else 0)
        if shown and used + cost > budget:
            break
        shown.append(name)
        used += cost
    rest = len(unique) - len(shown)
    return ", ".join(shown) + (f" and {rest} more" if rest else "")


class WorkerError(Exception):
    """Base of all coded errors. `message` must never contain user text or secrets; it is made
    safe to serialise and bounded here, whatever a caller passes."""

    code: ClassVar[str] = "INTERNAL_ERROR"
    retryable: ClassVar[bool] = False
    fatal: ClassVar[bool] = False
    # The HTTP status the load-balancing mode answers with. Only INTERNAL_ERROR is a 500:
    # every other failure says what went wrong in its status (the tests hold every class to it).
    http_status: ClassVar[int] = 500

    def __init__(self, message: str) -> None:
        message = safe_text(str(message))
        super().__init__(message)
        self.message = message

    def to_payload(self) -> dict[str, Any]:
        """The dict a handler returns; the SDK turns its `error` key into a failed job."""
        payload: dict[str, Any] = {
            "error": f"{self.code}: {self.message}",
            "error_code": self.code,
            "retryable": self.retryable,
        }
        if self.fatal:
            payload["refresh_worker"] = True
        return payload


def error_classes() -> list[type[WorkerError]]:
    """Every coded error class defined so far (the tree under WorkerError), base first."""
    found: list[type[WorkerError]] = []
    todo: list[type[WorkerError]] = [WorkerError]
    while todo:
        cls = todo.pop(0)
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def http_status_of(code: str) -> int:
    """The HTTP status of a code carried in a payload (a failed job's item); 500 if unknown."""
    for cls in error_classes():
        if cls.code == code:
            return cls.http_status
    return WorkerError.http_status


class InvalidInput(WorkerError, ValueError):
    code = "INVALID_INPUT"
    http_status = 400


class TextTooLong(InvalidInput):
    code = "TEXT_TOO_LONG"
    http_status = 413


class UnsupportedFormat(InvalidInput):
    code = "UNSUPPORTED_FORMAT"
    http_status = 400


class BadRefAudio(InvalidInput):
    code = "BAD_REF_AUDIO"
    http_status = 400


class ConsentRequired(InvalidInput):
    """voice.add without a `consent` record where the operator requires one."""

    code = "CONSENT_REQUIRED"
    http_status = 400


class AsrDisabled(InvalidInput):
    """A request that needs the ASR companion (`verify`, `captions: words`) on a worker that
    runs without one (ASR_MODEL=none)."""

    code = "ASR_DISABLED"
    http_status = 400


class VoiceNotFound(WorkerError, LookupError):
    code = "VOICE_NOT_FOUND"
    http_status = 404


class VoiceExists(WorkerError, ValueError):
    """voice.add with a name the library already holds: delete it first (no silent replace)."""

    code = "VOICE_EXISTS"
    http_status = 409


class VoiceChanged(WorkerError):
    """voice.delete of a voice that another worker replaced while it was being deleted: nothing
    was deleted. A retry would delete the new version, so it is the caller's to decide."""

    code = "VOICE_CHANGED"
    http_status = 409  # replaced by another writer while this one deleted it


class VoiceLimitReached(WorkerError):
    """voice.add to a library that holds VOICE_MAX_COUNT voices already."""

    code = "VOICE_LIMIT_REACHED"
    http_status = 409


class VoiceWritesDisabled(WorkerError):
    """voice.add or voice.delete where the operator switched writes off (or there is no
    library): not the caller's input to fix, and a retry gives the same answer."""

    code = "VOICE_WRITES_DISABLED"
    http_status = 403  # the operator made the voice library read-only


class ModelNotFound(WorkerError, LookupError):
    """A job asked for a model this worker does not serve; the message lists the ones it does."""

    code = "MODEL_NOT_FOUND"
    http_status = 404


class OutputTooLarge(WorkerError):
    code = "OUTPUT_TOO_LARGE"
    http_status = 413


class StorageError(WorkerError, OSError):
    """An S3 or hub failure; the message names bucket and key, never credentials."""

    code = "STORAGE_ERROR"
    http_status = 502  # S3 (voice library, references, output bucket) or the hub failed
    retryable = True
    reason: str = ""  # the S3 error code or exception type, where one is known


class ConfigError(WorkerError, ValueError):
    """A bad environment value, raised at start-up rather than at the first job."""

    code = "CONFIG_ERROR"
    http_status = 503


class ModelError(WorkerError):
    """The model directory is missing, incomplete or does not load."""

    code = "MODEL_ERROR"
    http_status = 503


class ASRUnavailable(WorkerError):
    """The ASR companion cannot serve a request that needs it: ASR_MODEL=none, or its model is
    found nowhere or does not load (the message names the places looked in). Only requests that
    need a transcript get it; synthesis with a `ref_text` never does."""

    code = "ASR_UNAVAILABLE"
    http_status = 503


class SynthesisFailed(WorkerError):
    """The model could not synthesize this input; the same input fails the same way."""

    code = "SYNTHESIS_FAILED"
    http_status = 422


class JobCancelled(WorkerError):
    """The job was cancelled (by RunPod, or an HTTP client that went away) between chunks."""

    code = "CANCELLED"
    http_status = 499  # nginx's "client closed request": the client went away, nobody reads it


class RequestTooLarge(InvalidInput):
    """An HTTP request body over the server's bound (before any JSON is parsed)."""

    code = "REQUEST_TOO_LARGE"
    http_status = 413


class Overloaded(WorkerError):
    """Every slot of an HTTP worker is busy and its small wait queue is full."""

    code = "OVERLOADED"
    http_status = 429
    retryable = True


class RequestTimeout(WorkerError):
    """An HTTP client too slow sending its request: the body did not arrive within
    HTTP_BODY_TIMEOUT_S (its headers within HTTP_HEADER_TIMEOUT_S are the server's: a bare 408)."""

    code = "REQUEST_TIMEOUT"
    http_status = 408
    retryable = True


class UnsupportedMediaType(InvalidInput):
    """A POST body that is not `application/json`: refused before it is read, so a web page's
    simple (form or text/plain) request cannot start a job."""

    code = "UNSUPPORTED_MEDIA_TYPE"
    http_status = 415


class Unauthorized(WorkerError):
    """HTTP_AUTH_TOKEN is set and the request's bearer token is missing or wrong."""

    code = "UNAUTHORIZED"
    http_status = 401


class TooManyConnections(WorkerError):
    """An HTTP worker at HTTP_MAX_CONNECTIONS open connections, none of them idle."""

    code = "TOO_MANY_CONNECTIONS"
    http_status = 503
    retryable = True


class NotReady(WorkerError):
    """An HTTP worker is still starting (model loading, warm-up)."""

    code = "INITIALIZING"
    http_status = 503
    retryable = True


class RouteNotFound(WorkerError, LookupError):
    """An HTTP path this worker does not serve."""

    code = "NOT_FOUND"
    http_status = 404


class MethodNotAllowed(WorkerError):
    """An HTTP method a served path does not take."""

    code = "METHOD_NOT_ALLOWED"
    http_status = 405


class InternalError(WorkerError):
    code = "INTERNAL_ERROR"
    http_status = 500
    retryable = True


class GPUError(WorkerError):
    """CUDA is broken or out of memory for good: the worker should be replaced."""

    code = "GPU_ERROR"
    http_status = 503
    retryable = True
    fatal = True
