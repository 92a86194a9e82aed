"""The handler on the demo engine: results, coded errors, and a worker that keeps serving."""

import base64
import io

import pytest
import soundfile as sf

from config import Settings
from handler import Worker, start_sdk
from tests.unit.test_voices import noise, wav_b64


@pytest.fixture(scope="module")
def worker(engine):
    return Worker(engine, Settings(worker_version="test-1"))


def job(**inp):
    return {"id": "job-1", "input": inp}


def test_success_shape(worker):
    out = worker.handle(job(text="Hello there.", seed=3, nfe_step=4))
    assert set(out) == {
        "audio_base64",
        "format",
        "sample_rate",
        "duration_s",
        "seed",
        "timings",
        "worker_version",
    }
    samples, rate = sf.read(io.BytesIO(base64.b64decode(out["audio_base64"])))
    assert rate == out["sample_rate"] == 24000 and out["format"] == "wav"
    assert out["duration_s"] == pytest.approx(len(samples) / rate, abs=1e-3)
    assert out["seed"] == 3 and out["worker_version"] == "test-1"
    assert set(out["timings"]) == {"voice", "synthesis", "encode"}


def test_seed_is_chosen_and_reported_when_absent(worker):
    out = worker.handle(job(text="Hello there.", nfe_step=2))
    again = worker.handle(job(text="Hello there.", nfe_step=2, seed=out["seed"]))
    assert out["audio_base64"] == again["audio_base64"]


def test_custom_voice(worker):
    out = worker.handle(
        job(text="Hi.", nfe_step=2, ref_audio=wav_b64(noise(2.0)), ref_text="Noise.")
    )
    assert "error" not in out and out["duration_s"] > 0


@pytest.mark.parametrize(
    ("inp", "code"),
    [
        ({}, "INVALID_INPUT"),
        ({"text": "x", "speed": 9}, "INVALID_INPUT"),
        ({"text": "x", "format": "aiff"}, "UNSUPPORTED_FORMAT"),
        ({"text": "x", "ref_audio": "bm90IGF1ZGlv", "ref_text": "t"}, "BAD_REF_AUDIO"),
    ],
)
def test_errors_are_coded_and_the_next_job_succeeds(worker, inp, code):
    out = worker.handle({"id": "bad", "input": inp})
    assert out["error_code"] == code and out["error"].startswith(f"{code}: ")
    assert out["retryable"] is False and "Traceback" not in out["error"]
    assert "error" not in worker.handle(job(text="Still serving.", nfe_step=2))


def test_unexpected_exception_is_internal_error(worker, monkeypatch, caplog):
    def boom(*_a, **_k):
        raise RuntimeError("secret user text inside")

    monkeypatch.setattr(worker.engine, "synthesize", boom)
    out = worker.handle(job(text="x"))
    assert out["error_code"] == "INTERNAL_ERROR" and out["retryable"] is True
    assert "secret user text" not in out["error"]


def test_user_text_never_reaches_info_logs(worker, caplog):
    caplog.set_level("INFO")
    worker.handle(job(text="Confidential words here.", nfe_step=2))
    assert "Confidential" not in caplog.text
    assert "chars=24" in caplog.text


def test_start_sdk_passes_handler_and_concurrency(worker):
    seen = {}
    start_sdk(worker, Settings(max_concurrency=3), start=seen.update)
    assert seen["handler"] == worker.handle
    assert seen["concurrency_modifier"](1) == 3
