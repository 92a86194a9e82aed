"""References without `ref_text` on the demo model (#23): the worker's ASR (here a scripted
one) transcribes the trimmed clip once per worker, the result says what was used, a clip
without words is BAD_REF_AUDIO, a worker without ASR refuses as before; voice.add stores the
transcript; the HTTP speech route takes `extra_body={"ref_audio": ...}` alone."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import soundfile as sf
from openai import OpenAI

from f5worker.config import Settings
from f5worker.job.ref_transcripts import NO_ASR
from f5worker.job.worker import Worker
from f5worker.serve.http.service import Service
from f5worker.startup.compose import make_worker
from f5worker.testing.asr import ScriptedTranscriber
from f5worker.testing.audio import noise, wav_b64
from f5worker.testing.http import http_settings, serving
from f5worker.testing.s3_servers import voice_library_settings

HEARD = "Some words the recogniser heard."
FAST = {"nfe_step": 2, "seed": 1}
BUCKET = "library"


def clip(seconds: float = 3, seed: int = 0) -> str:
    return wav_b64(noise(seconds, 16000, seed=seed), 16000)


def run(worker: Worker, inp: dict) -> list[dict]:
    return list(worker.run({"id": "r", "input": inp}))


def one(worker: Worker, inp: dict) -> dict:
    [item] = run(worker, inp)
    return item


def worker_with(engine, asr, settings: Settings | None = None) -> Worker:
    return make_worker(engine, settings or Settings(worker_version="asr-1"), asr=asr)


def test_a_clip_alone_is_transcribed_and_the_result_says_what_was_used(engine):
    asr = ScriptedTranscriber([HEARD], language="en")
    worker = worker_with(engine, asr)
    item = one(worker, {"text": "Hello there.", "ref_audio": clip(), **FAST})
    assert "error" not in item, item
    samples, rate = sf.read(io.BytesIO(base64.b64decode(item["audio_base64"])), dtype="float32")
    assert rate == engine.sample_rate and samples.size > 0 and np.isfinite(samples).all()
    assert (item["ref_text_used"], item["ref_text_source"], item["ref_language"]) == (
        HEARD,
        "asr",
        "en",
    )
    assert item["voice"] == "ref_audio" and item["timings"]["ref_transcribe"] >= 0
    [(heard_samples, heard_rate, language, words)] = asr.calls
    # The trimmed clip at its own rate (3 s of sound and the 50 ms tail), language detected.
    assert (heard_rate, language, words) == (16000, None, False)
    assert heard_samples == pytest.approx(3.05 * 16000, abs=200)


def test_the_same_clip_is_transcribed_once_for_two_jobs_and_a_batch(engine):
    asr = ScriptedTranscriber(lambda samples, rate: HEARD)
    worker = worker_with(engine, asr)
    ref = clip(seed=4)
    first = one(worker, {"text": "One.", "ref_audio": ref, **FAST})
    second = one(worker, {"text": "Two.", "ref_audio": ref, **FAST})
    assert first["ref_text_used"] == second["ref_text_used"] == HEARD
    assert "ref_transcribe" in first["timings"] and "ref_transcribe" not in second["timings"]
    batch = run(worker, {"texts": ["Three.", "Four."], "ref_audio": clip(seed=5), **FAST})
    assert [i["ref_text_used"] for i in batch] == [HEARD, HEARD]
    assert len(asr.calls) == 2  # one per distinct clip
    worker_with(engine, asr)  # another worker has a cache of its own
    assert worker.ref_transcripts.cached_count() == 2


def test_an_explicit_ref_text_wins_and_the_language_is_passed(engine):
    asr = ScriptedTranscriber([HEARD])
    worker = worker_with(engine, asr)
    sent = one(worker, {"text": "Hi.", "ref_audio": clip(), "ref_text": "My words.", **FAST})
    assert (sent["ref_text_used"], sent["ref_text_source"]) == ("My words.", "request")
    assert "ref_language" not in sent and "ref_transcribe" not in sent["timings"]
    assert asr.calls == []
    german = one(worker, {"text": "Hallo.", "ref_audio": clip(), "ref_language": "de", **FAST})
    assert german["ref_language"] == "de" and asr.calls[0][2] == "de"
    library = one(worker, {"text": "Hi.", **FAST})
    assert not any(k.startswith("ref_text") for k in library)  # no reference was sent


def test_a_stream_carries_the_transcript_on_every_item(engine):
    worker = worker_with(engine, ScriptedTranscriber([HEARD]))
    text = "First sentence here. " * 12
    items = run(worker, {"text": text, "ref_audio": clip(), "stream": True, **FAST})
    assert len(items) >= 2 and all(i["ref_text_used"] == HEARD for i in items)


@pytest.mark.parametrize("heard", ["", "[Music]", "♪ ♪"])
def test_a_clip_without_words_is_bad_ref_audio(engine, heard):
    worker = worker_with(engine, ScriptedTranscriber([heard]))
    item = one(worker, {"text": "Hi.", "ref_audio": clip(), **FAST})
    assert item["error_code"] == "BAD_REF_AUDIO" and "ref_text" in item["error"]
    assert "error" not in one(worker, {"text": "Still here.", **FAST})


def test_without_asr_a_clip_alone_is_refused_and_says_what_to_do(engine):
    worker = worker_with(engine, None)
    item = one(worker, {"text": "Hi.", "ref_audio": clip(), **FAST})
    assert item["error_code"] == "INVALID_INPUT" and item["error"] == f"INVALID_INPUT: {NO_ASR}"
    sent = one(worker, {"text": "Hi.", "ref_audio": clip(), "ref_text": "Words.", **FAST})
    assert sent["ref_text_used"] == "Words."


@pytest.fixture(scope="module")
def library_settings() -> Iterator[Settings]:
    with voice_library_settings(BUCKET, worker_version="asr-1") as settings:
        yield settings


def test_voice_add_from_a_clip_alone_stores_the_transcript(engine, library_settings):
    asr = ScriptedTranscriber(["I am Anna, and this is my voice."], language="en")
    worker = worker_with(engine, asr, library_settings)
    added = one(worker, {"action": "voice.add", "name": "anna", "ref_audio": clip()})
    assert added["voice"]["transcript"] == "I am Anna, and this is my voice."
    assert added["voice"]["transcript_source"] == "asr"
    other = worker_with(engine, None, library_settings)  # another worker, no ASR needed to use it
    got = one(other, {"action": "voice.get", "name": "anna"})["voice"]
    assert got["transcript"] == "I am Anna, and this is my voice."
    assert got["transcript_source"] == "asr"
    spoken = one(other, {"text": "Hello from Anna.", "voice": "anna", **FAST})
    assert "error" not in spoken and "ref_text_used" not in spoken
    one(worker, {"action": "voice.delete", "name": "anna"})


# -- the HTTP speech route ------------------------------------------------------------------


@pytest.fixture(scope="module")
def http_asr() -> ScriptedTranscriber:
    return ScriptedTranscriber(lambda samples, rate: HEARD)


@pytest.fixture(scope="module")
def url(engine, http_asr) -> Iterator[str]:
    settings = http_settings(max_concurrency=2)
    service = Service(settings)
    service.ready(make_worker(engine, settings, asr=http_asr))
    with serving(service) as base:
        yield base


def test_extra_body_ref_audio_alone_through_the_openai_client(url, http_asr):
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
    audio = client.audio.speech.create(
        model="tts-1",
        voice="alloy",
        input="My own voice.",
        response_format="pcm",
        extra_body={"quality": "fast", "seed": 3, "ref_audio": clip(seed=7)},
    ).read()
    assert len(audio) > 0 and len(http_asr.calls) == 1


def test_the_sse_done_event_carries_the_transcript(url, http_asr):
    body = {
        "input": "Hello.",
        "voice": "alloy",
        "response_format": "pcm",
        "stream_format": "sse",
        "quality": "fast",
        "ref_audio": clip(seed=8),
        "ref_language": "en",
    }
    response = httpx.post(f"{url}/v1/audio/speech", json=body, timeout=120)
    assert response.status_code == 200
    events = [json.loads(x[6:]) for x in response.text.splitlines() if x.startswith("data: ")]
    done = events[-1]
    assert done["type"] == "speech.audio.done"
    assert (done["ref_text_used"], done["ref_text_source"], done["ref_language"]) == (
        HEARD,
        "asr",
        "en",
    )
    assert "x-ref-text-used" not in response.headers  # the transcript is never a header


def test_a_clip_without_words_over_http_is_a_400(engine):
    settings = http_settings()
    service = Service(settings)
    service.ready(make_worker(engine, settings, asr=ScriptedTranscriber(["[Music]"])))
    with serving(service) as base:
        body = {"input": "Hello.", "ref_audio": clip(seed=9)}
        response = httpx.post(f"{base}/v1/audio/speech", json=body, timeout=120)
    assert response.status_code == 400
    assert response.headers["x-error-code"] == "BAD_REF_AUDIO"
