"""The worker's error family: every failure a client can see has a stable code.

Each error knows whether a retry may succeed and whether the worker itself is broken (fatal), so
the handler can turn any of them into RunPod's error payload without a traceback or user text.
Subclasses also derive from the matching builtin so callers can catch them idiomatically.
"""

from __future__ import annotations

from typing import Any, ClassVar


class WorkerError(Exception):
    """Base of all coded errors. `message` must never contain user text or secrets."""

    code: ClassVar[str] = "INTERNAL_ERROR"
    retryable: ClassVar[bool] = False
    fatal: ClassVar[bool] = False

    def __init__(self, message: str) -> None:
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


class InvalidInput(WorkerError, ValueError):
    code = "INVALID_INPUT"


class TextTooLong(InvalidInput):
    code = "TEXT_TOO_LONG"


class UnsupportedFormat(InvalidInput):
    code = "UNSUPPORTED_FORMAT"


class BadRefAudio(InvalidInput):
    code = "BAD_REF_AUDIO"


class VoiceNotFound(WorkerError, LookupError):
    code = "VOICE_NOT_FOUND"


class OutputTooLarge(WorkerError):
    code = "OUTPUT_TOO_LARGE"


class StorageError(WorkerError, OSError):
    """An S3 or hub failure; the message names bucket and key, never credentials."""

    code = "STORAGE_ERROR"
    retryable = True
    reason: str = ""  # the S3 error code or exception type, where one is known


class ConfigError(WorkerError, ValueError):
    """A bad environment value, raised at start-up rather than at the first job."""

    code = "CONFIG_ERROR"


class ModelError(WorkerError):
    """The model directory is missing, incomplete or does not load."""

    code = "MODEL_ERROR"


class InternalError(WorkerError):
    code = "INTERNAL_ERROR"
    retryable = True


class GPUError(WorkerError):
    """CUDA is broken or out of memory for good: the worker should be replaced."""

    code = "GPU_ERROR"
    retryable = True
    fatal = True
