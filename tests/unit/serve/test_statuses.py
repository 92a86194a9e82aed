"""Each error code's HTTP status, Retry-After and the OpenAI error shape."""

from __future__ import annotations

from f5worker import errors
from f5worker.serve.http.statuses import error_response, openai_body


def test_every_code_has_its_own_status_and_only_internal_errors_are_500():
    # Imported so that the error classes defined outside errors.py are in the tree too.
    import f5worker.job.voice_store
    import f5worker.s3
    import f5worker.startup.flash_attn  # noqa: F401

    classes = errors.error_classes()
    assert len(classes) > 20
    assert {c.code for c in classes if c.http_status == 500} == {"INTERNAL_ERROR"}
    assert all(400 <= c.http_status < 600 for c in classes)
    assert errors.http_status_of("SOMETHING_NEW") == 500
    assert errors.http_status_of("VOICE_NOT_FOUND") == 404


def test_busy_and_starting_say_when_to_retry():
    assert error_response(errors.Overloaded("busy"), "openai").headers["Retry-After"] == "1"
    assert error_response(errors.NotReady("wait"), "native").headers["Retry-After"] == "1"
    assert "Retry-After" not in error_response(errors.InvalidInput("no"), "native").headers


def test_the_openai_error_shape_carries_our_code():
    body = openai_body(errors.VoiceNotFound("no voice named x"))
    assert body == {
        "error": {
            "message": "no voice named x",
            "type": "invalid_request_error",
            "param": None,
            "code": "VOICE_NOT_FOUND",
        }
    }
    assert openai_body(errors.Overloaded("busy"))["error"]["type"] == "rate_limit_error"
    assert openai_body(errors.GPUError("gone"))["error"]["type"] == "server_error"
