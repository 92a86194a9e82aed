"""The handler on the demo engine: result shapes, formats, voices, seeds, logs, the SDK config."""

from __future__ import annotations

import asyncio
import base64
import inspect
import io
import json
import tempfile
import threading

import numpy as np
import pytest
import soundfile as sf

from f5worker.config import Settings
from f5worker.serve.queue import QueueHandler, sdk_can_stream, sdk_config, start_sdk
from f5worker.startup.compose import make_worker
from f5worker.testing.audio import noise, spoken_sentences, wav_b64

FAST = {"nfe_step": 2}


@pytest.fixture(scope="module")
def worker(engine):
    return make_worker(engine, Settings(worker_version="test-1", max_concurrency=4))


def job(**inp):
    return {"id": "job-1", "input": {**FAST, **inp}}


def run_one(worker, **inp) -> dict:
    items = list(worker.run(job(**inp)))
    assert len(items) == 1, items
    return items[0]


def samples_of(item: dict) -> np.ndarray:
    data = base64.b64decode(item["audio_base64"])
    if item["format"] == "pcm":
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768
    samples, rate = sf.read(io.BytesIO(data), dtype="float32")
    assert rate == item["sample_rate"]
    return samples


def test_success_shape(worker):
    out = run_one(worker, text="Hello there.", seed=3)
    assert set(out) == {
        "audio_base64",
        "format",
        "mime_type",
        "sample_rate",
        "duration_s",
        "seed",
        "model",
        "model_license",
        "voice",
        "quality",
        "nfe_step",
        "ref_audio_s",
        "timings",
        "worker_version",
        "usage",
    }
    assert out["model"] == "F5TTS_v1_Base"  # the Settings default names the one model
    assert out["model_license"] == "none (random weights, made here)"  # the demo's model.json
    samples = samples_of(out)
    assert out["sample_rate"] == 24000 and out["format"] == "wav"
    assert out["mime_type"] == "audio/wav"
    assert out["duration_s"] == pytest.approx(len(samples) / 24000, abs=1e-3)
    assert out["seed"] == 3 and out["worker_version"] == "test-1"
    assert (out["quality"], out["nfe_step"]) == ("best", 2)  # the explicit nfe_step wins
    assert set(out["timings"]) == {"voice", "synthesis", "encode"}
    usage = out["usage"]
    assert usage["characters"] == len("Hello there.") and usage["steps"] == 2  # one chunk
    assert usage["audio_s"] == out["duration_s"]
    assert usage["engine_s"] == pytest.approx(out["timings"]["synthesis"], abs=1e-3)
    assert usage["rtf"] == pytest.approx(usage["engine_s"] / usage["audio_s"], rel=1e-2)
    assert (usage["model"], usage["quality"]) == ("F5TTS_v1_Base", "best")
    assert usage["voice_cached"] is True and "first_audio_s" not in usage  # default: in memory
    assert isinstance(usage["reference_cached"], bool)
    again = run_one(worker, text="Hello there.", seed=3)["usage"]
    assert again["reference_cached"] is True  # the same voice: its reference was prepared


def test_the_quality_preset_sets_the_steps_and_the_operator_sets_the_default(engine):
    fast_by_default = make_worker(engine, Settings(worker_version="t", default_quality="fast"))
    text = {"text": "Hi there.", "seed": 1}
    (out,) = fast_by_default.run({"id": "q1", "input": text})
    assert (out["quality"], out["nfe_step"]) == ("fast", 7)
    (out,) = fast_by_default.run({"id": "q2", "input": {**text, "quality": "balanced"}})
    assert (out["quality"], out["nfe_step"]) == ("balanced", 16)


def test_fast_cuts_a_long_reference_at_a_sentence_end(worker):
    samples, rate, text = spoken_sentences(2)  # two sentences, about 10.3 s
    ref = {"text": "Hi.", "seed": 1, "ref_audio": wav_b64(samples, rate), "ref_text": text}
    best = run_one(worker, **ref, quality="best")
    fast = run_one(worker, **ref, quality="fast")
    assert 10 < best["ref_audio_s"] < 11 and 4.5 < fast["ref_audio_s"] < 6
    # the kept sentence has the pace of the whole: the output's length barely moves
    assert fast["duration_s"] == pytest.approx(best["duration_s"], rel=0.1)


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "ogg", "opus", "pcm"])
@pytest.mark.parametrize("rate", [None, 16000, 48000])
def test_each_format_and_rate_decodes_back(worker, fmt, rate):
    out = run_one(worker, text="Formats.", seed=1, format=fmt, sample_rate=rate)
    samples = samples_of(out)
    assert out["format"] == fmt and out["sample_rate"] == (rate or 24000)
    assert abs(len(samples) / out["sample_rate"] - out["duration_s"]) < 0.1  # codec padding
    assert np.isfinite(samples).all() and np.abs(samples).max() > 0


def test_resampling_keeps_the_duration(worker):
    base = run_one(worker, text="Same words.", seed=4)
    high = run_one(worker, text="Same words.", seed=4, sample_rate=44100)
    assert high["duration_s"] == pytest.approx(base["duration_s"], abs=1e-3)


def test_seed_is_chosen_and_reported_when_absent(worker):
    out = run_one(worker, text="Hello there.")
    again = run_one(worker, text="Hello there.", seed=out["seed"])
    assert out["audio_base64"] == again["audio_base64"]


@pytest.mark.parametrize(
    "voice_fields",
    [
        {"ref_audio": wav_b64(noise(2.0)), "ref_text": "Noise."},
        {"ref_audio": wav_b64(noise(2.0, rate=16000), rate=16000), "ref_text": "Noise."},
        {"voice": "default"},
        {"voice": "alloy", "seed": 1},  # unknown name: VOICE_NOT_FOUND (see bad inputs)
    ],
)
def test_voices(worker, voice_fields):
    out = list(worker.run(job(text="Hi.", **voice_fields)))[-1]
    if voice_fields.get("voice") == "alloy":
        assert out["error_code"] == "VOICE_NOT_FOUND"
    else:
        assert "error" not in out and out["duration_s"] > 0


def test_default_voice_by_name_is_the_default(worker):
    named = run_one(worker, text="Same.", seed=2, voice="default")
    plain = run_one(worker, text="Same.", seed=2)
    assert named["audio_base64"] == plain["audio_base64"]


def test_remove_silence_never_lengthens(worker):
    plain = run_one(worker, text="Pauses, maybe.", seed=5)
    trimmed = run_one(worker, text="Pauses, maybe.", seed=5, remove_silence=True)
    assert 0 < trimmed["duration_s"] <= plain["duration_s"]


def test_openai_route(worker):
    out = list(
        worker.run(
            {
                "id": "oa",
                "input": {
                    "openai_route": "/v1/audio/speech",
                    "openai_input": {"model": "tts-1", "input": "Hello.", "voice": "alloy"},
                },
            }
        )
    )
    assert len(out) == 1 and out[0]["format"] == "mp3" and out[0]["mime_type"] == "audio/mpeg"
    assert len(samples_of(out[0])) > 0


def test_unexpected_exception_is_internal_error(worker, monkeypatch, caplog):
    def boom(*_a, **_k):
        raise RuntimeError("secret user text inside")

    monkeypatch.setattr(worker.engine, "synthesize_waves", boom)
    out = list(worker.run(job(text="x")))
    assert len(out) == 1 and out[0]["error_code"] == "INTERNAL_ERROR"
    assert out[0]["retryable"] is True and "secret user text" not in out[0]["error"]


def test_user_text_never_reaches_info_logs(worker, caplog):
    caplog.set_level("INFO")
    run_one(worker, text="Confidential words here.")
    list(worker.run(job(text="Confidential words here.", speed=99)))
    info = "\n".join(r.getMessage() for r in caplog.records if r.levelname in ("INFO", "WARNING"))
    assert "Confidential" not in info
    assert "chars=24" in info and "failed: INVALID_INPUT" in info


def test_no_temp_files(worker, tmp_path, monkeypatch):
    """Upstream keeps one temp file per reference forever; this worker writes none."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    for i in range(5):
        ref = {"ref_audio": wav_b64(noise(1.5, seed=i)), "ref_text": "Noise."}
        run_one(worker, text=f"Job {i}.", format="mp3", **ref)
        list(worker.run(job(text="Bad.", ref_audio=wav_b64(np.zeros(9000)), ref_text="x")))
    assert list(tmp_path.iterdir()) == []


def test_concurrent_jobs_keep_their_own_seeds(worker):
    """Seeds are per job (the engine never touches the global RNG): a job's audio is the same
    alone or while other jobs with other seeds run beside it."""
    texts = [f"Sentence number {i} is here." for i in range(8)]
    alone = [run_one(worker, text=t, seed=100 + i)["audio_base64"] for i, t in enumerate(texts)]
    together: dict[int, str] = {}

    def go(i: int) -> None:
        together[i] = run_one(worker, text=texts[i], seed=100 + i)["audio_base64"]

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [together[i] for i in range(len(texts))] == alone


def test_async_handler_yields_what_run_yields(worker):
    async def collect():
        return [item async for item in QueueHandler(worker).stream(job(text="Async.", seed=9))]

    items = asyncio.run(collect())
    direct = run_one(worker, text="Async.", seed=9)
    assert len(items) == 1 and without_timings(items[0]) == without_timings(direct)


def without_timings(item: dict) -> dict:
    """What does not depend on the clock or on what the caches hold."""
    varying = ("engine_s", "rtf", "first_audio_s", "reference_cached")
    usage = {k: v for k, v in item.get("usage", {}).items() if k not in varying}
    return {k: v for k, v in item.items() if k != "timings"} | {"usage": usage}


@pytest.mark.parametrize(
    ("inp", "expected"),
    [
        ({"text": "Fine.", "seed": 1}, list),
        ({"text": "Fine.", "speed": 9}, dict),
    ],
)
def test_collected_handler_for_sdk_modes_without_streaming(worker, inp, expected):
    out = asyncio.run(QueueHandler(worker).collected({"id": "c", "input": {**FAST, **inp}}))
    assert isinstance(out, expected)
    if expected is dict:
        assert out["error_code"] == "INVALID_INPUT"  # run_job turns the error key into FAILED
    else:
        assert len(out) == 1 and "audio_base64" in out[0]


def test_sdk_config(worker):
    seen = {}
    start_sdk(worker, Settings(max_concurrency=3), start=seen.update, argv=["--rp_serve_api"])
    handler = seen["handler"]  # Worker.run stepped, with RunPod progress reports
    assert handler.__self__.worker is worker and inspect.isasyncgenfunction(handler)
    assert seen["return_aggregate_stream"] is True
    assert seen["concurrency_modifier"](1) == 3
    plain = sdk_config(worker, Settings(), streaming=False)["handler"]
    assert plain.__self__.worker is worker and plain.__name__ == "collected"
    assert inspect.iscoroutinefunction(plain)


def test_only_a_fatal_error_asks_the_sdk_for_a_new_worker(engine, monkeypatch):
    from f5worker.errors import GPUError, InternalError

    worker = make_worker(engine, Settings())
    config = sdk_config(worker, Settings(), streaming=True)
    for error, refresh in ((InternalError("transient"), False), (GPUError("broken"), True)):

        def fail(*_a, error=error, **_k):
            raise error

        monkeypatch.setattr(worker.engine, "synthesize_waves", fail)
        [payload] = list(worker.run(job(text="x")))
        assert payload.get("refresh_worker", False) is refresh
        assert config.get("refresh_worker", False) is refresh


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["--rp_serve_api", "--rp_api_port", "8000"], {}, True),
        (["--test_input", '{"input": {}}'], {}, False),
        (['--test_input={"input": {}}'], {}, False),
        ([], {"RUNPOD_REALTIME_PORT": "8080"}, False),
    ],
)
def test_sdk_can_stream(argv, env, expected, monkeypatch):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert sdk_can_stream(argv) is expected


def test_sdk_worker_loop_mode_follows_the_sdks_own_flag(monkeypatch):
    from runpod.serverless.modules import worker_state

    monkeypatch.setattr(worker_state, "IS_LOCAL_TEST", False)
    assert sdk_can_stream([]) is True
    monkeypatch.setattr(worker_state, "IS_LOCAL_TEST", True)
    assert sdk_can_stream([]) is False


def test_build_worker_loads_with_the_dtype_setting(demo_model_dir):
    """DTYPE reaches the engine: the weights are in that dtype and a job still succeeds."""
    import torch

    from f5worker.startup.compose import build_worker

    bf16 = build_worker(Settings(dtype="bfloat16", device="cpu"), demo_model_dir)
    assert next(bf16.engine.model.parameters()).dtype == torch.bfloat16
    assert not bf16.engine.compiled
    items = list(bf16.run(job(text="Half precision weights.")))
    assert items[0]["duration_s"] > 0.5


@pytest.mark.parametrize(("fmt", "mode"), [("wav", "base64"), ("pcm", "auto")])
def test_an_uncompressed_result_that_cannot_fit_is_refused_before_model_work(
    worker, monkeypatch, fmt, mode
):
    def no_model_work(*_a, **_k):
        raise AssertionError("the engine was asked to synthesize")

    monkeypatch.setattr(worker.engine, "synthesize_waves", no_model_work)
    text = "A sentence of ordinary length about the sea and the boats. " * 60
    payload = run_one(worker, text=text, format=fmt, sample_rate=48000, **{"return": mode})
    assert payload["error_code"] == "OUTPUT_TOO_LARGE"
    assert "compressed format" in payload["error"] and "sample_rate" in payload["error"]


def test_the_operator_states_the_default_models_licence(engine):
    stated = make_worker(engine, Settings(model_license="apache-2.0"))
    assert run_one(stated, text="Hi.")["model_license"] == "apache-2.0"


def test_each_job_logs_one_metrics_line_without_user_text(worker, caplog):
    secret = "Zanzibar quokka nine."
    caplog.set_level("INFO", logger="f5worker.job.worker")
    item = run_one(worker, text=secret, seed=4)
    list(worker.run(job(text=secret, format="nope")))  # a failed job logs its line too
    lines = [r.getMessage() for r in caplog.records if " metrics " in r.getMessage()]
    assert len(lines) == 2 and all(line.startswith("job job-1 metrics {") for line in lines)
    good, failed = (json.loads(line.split(" metrics ", 1)[1]) for line in lines)
    assert good["status"] == "ok" and good["code"] == "OK" and good["voice"] == "default"
    assert good["characters"] == len(secret) and good["audio_s"] == item["duration_s"]
    assert good["steps"] == item["usage"]["steps"] and good["model"] == "F5TTS_v1_Base"
    assert (failed["status"], failed["code"]) == ("error", "UNSUPPORTED_FORMAT")
    for line in lines:  # counted, never quoted
        assert "Zanzibar" not in line and "quokka" not in line and "nope" not in line
