import pytest

from f5worker import errors
from f5worker.errors import (
    AsrDisabled,
    ASRUnavailable,
    BadRefAudio,
    ConfigError,
    GPUError,
    InternalError,
    InvalidInput,
    JobCancelled,
    OutputTooLarge,
    StorageError,
    TextTooLong,
    UnsupportedFormat,
    VoiceChanged,
    VoiceExists,
    VoiceLimitReached,
    VoiceNotFound,
    VoiceWritesDisabled,
    WorkerError,
)

CASES = [
    (InvalidInput, "INVALID_INPUT", False, ValueError),
    (TextTooLong, "TEXT_TOO_LONG", False, ValueError),
    (UnsupportedFormat, "UNSUPPORTED_FORMAT", False, ValueError),
    (BadRefAudio, "BAD_REF_AUDIO", False, ValueError),
    (AsrDisabled, "ASR_DISABLED", False, ValueError),
    (VoiceNotFound, "VOICE_NOT_FOUND", False, LookupError),
    (VoiceExists, "VOICE_EXISTS", False, ValueError),
    (VoiceChanged, "VOICE_CHANGED", False, Exception),
    (VoiceLimitReached, "VOICE_LIMIT_REACHED", False, Exception),
    (VoiceWritesDisabled, "VOICE_WRITES_DISABLED", False, Exception),
    (OutputTooLarge, "OUTPUT_TOO_LARGE", False, Exception),
    (StorageError, "STORAGE_ERROR", True, OSError),
    (ConfigError, "CONFIG_ERROR", False, ValueError),
    (JobCancelled, "CANCELLED", False, Exception),
    (InternalError, "INTERNAL_ERROR", True, Exception),
    (GPUError, "GPU_ERROR", True, Exception),
    (ASRUnavailable, "ASR_UNAVAILABLE", False, Exception),
]


@pytest.mark.parametrize(("cls", "code", "retryable", "builtin"), CASES)
def test_payload_shape(cls, code, retryable, builtin):
    err = cls("something went wrong")
    assert isinstance(err, WorkerError) and isinstance(err, builtin)
    payload = err.to_payload()
    assert payload["error"] == f"{code}: something went wrong"
    assert payload["error_code"] == code
    assert payload["retryable"] is retryable
    assert ("refresh_worker" in payload) is (cls is GPUError)


def test_codes_are_unique_across_the_class_tree():
    # A subclass that keeps its parent's code (S3's ObjectMissing is a STORAGE_ERROR) adds none.
    codes = [c.code for c in errors.error_classes()[1:] if "code" in vars(c)]
    assert len(codes) == len(set(codes))
