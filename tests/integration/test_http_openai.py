"""The HTTP mode through real clients on 127.0.0.1: the official `openai` package, curl, httpx.

The server is the real app under uvicorn in this process (f5worker.testing.http), serving a
Worker on the session's demo engine; its audio is noise, so what is checked is that every
format decodes back to the utterance's length, not how it sounds.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import time
from collections.abc import Iterator

import av
import httpx
import numpy as np
import pytest
import soundfile as sf
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from f5worker.serve.http.service import Service
from f5worker.startup.compose import make_worker
from f5worker.testing.http import http_settings, serving

FAST = {"quality": "fast", "seed": 3}  # extension fields, sent with extra_body
TEXT = "Hello there. This is the worker speaking through the OpenAI client."
PARAGRAPH = " ".join(
    [
        "The first sentence of this paragraph is long enough to be worth shortening for a",
        "stream, and the rest follows it. Each sentence adds a little more to say, so the",
        "whole is split into several chunks by the engine. A listener hears the start while",
        "the rest is still being made, which is what a real-time endpoint is for. The last",
        "sentence closes the paragraph, a while after the first audio left the worker.",
    ]
)


@pytest.fixture(scope="module")
def service(engine) -> Service:
    settings = http_settings(max_concurrency=2)
    service = Service(settings)
    service.ready(make_worker(engine, settings))
    return service


@pytest.fixture(scope="module")
def url(service) -> Iterator[str]:
    with serving(service) as base:
        yield base


@pytest.fixture(scope="module")
def client(url) -> OpenAI:
    return OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)


def decoded_seconds(data: bytes, fmt: str, rate: int = 24000) -> float:
    if fmt == "pcm":
        return len(data) / 2 / rate
    with av.open(io.BytesIO(data)) as container:
        frames = [f for f in container.decode(audio=0)]
    return sum(f.samples for f in frames) / frames[0].sample_rate


@pytest.fixture(scope="module")
def pcm_seconds(client) -> float:
    """The utterance's length, from the same request as raw samples."""
    audio = client.audio.speech.create(
        model="tts-1", voice="alloy", input=TEXT, response_format="pcm", extra_body=FAST
    ).read()
    return decoded_seconds(audio, "pcm")


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav"])
def test_the_openai_client_streams_every_format_into_a_file(client, tmp_path, pcm_seconds, fmt):
    path = tmp_path / f"speech.{fmt}"
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=TEXT, response_format=fmt, extra_body=FAST
    ) as response:
        assert response.status_code == 200
        response.stream_to_file(path)
    # One file, whole: encoder delay and frame padding stay within a frame or two.
    assert decoded_seconds(path.read_bytes(), fmt) == pytest.approx(pcm_seconds, abs=0.08)


def test_streamed_wav_reads_with_soundfile_despite_its_unknown_length(client):
    data = client.audio.speech.create(
        model="tts-1", voice="alloy", input="Short.", response_format="wav", extra_body=FAST
    ).read()
    samples, rate = sf.read(io.BytesIO(data), dtype="float32")
    assert rate == 24000 and samples.size > 0 and np.isfinite(samples).all()


def test_sse_events_carry_the_audio_and_end_with_usage(client):
    with client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts",
        voice="alloy",
        input=PARAGRAPH,
        response_format="pcm",
        stream_format="sse",
        instructions="Speak calmly.",  # accepted; F5-TTS takes its style from the reference
        extra_body=FAST,
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [
            json.loads(line.removeprefix("data: "))
            for line in response.iter_lines()
            if line.startswith("data: ")
        ]
    *deltas, done = events
    assert len(deltas) >= 2 and {e["type"] for e in deltas} == {"speech.audio.delta"}
    pcm = b"".join(base64.b64decode(e["audio"]) for e in deltas)
    assert done["type"] == "speech.audio.done"
    usage = done["usage"]
    assert usage["input_tokens"] == len(PARAGRAPH)
    assert usage["output_tokens"] == pytest.approx(len(pcm) / 2 / 256, abs=2)
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    # the worker's own usage beside OpenAI's
    assert usage["characters"] == len(PARAGRAPH) and usage["steps"] >= 2 * 7  # fast: 7 a chunk
    assert usage["audio_s"] == pytest.approx(len(pcm) / 2 / 24000, abs=1e-3)
    assert usage["engine_s"] > 0 and usage["rtf"] == pytest.approx(
        usage["engine_s"] / usage["audio_s"], rel=1e-2
    )
    assert usage["first_audio_s"] > 0 and usage["quality"] == "fast"
    assert usage["voice_cached"] is True and isinstance(usage["reference_cached"], bool)


def test_the_first_bytes_of_a_paragraph_arrive_well_before_the_last(url):
    body = {"input": PARAGRAPH, "voice": "alloy", "response_format": "pcm", **FAST}
    started = time.perf_counter()
    with httpx.stream("POST", f"{url}/v1/audio/speech", json=body, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "audio/pcm"  # little-endian: not audio/L16
        parts = response.iter_raw()
        first = next(parts)
        first_s = time.perf_counter() - started
        rest = b"".join(parts)
    total_s = time.perf_counter() - started
    assert first and rest
    # The shortened first chunk is a fraction of a paragraph; 1/2 leaves room for a busy CPU.
    assert first_s < total_s / 2, (first_s, total_s)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_saves_a_playable_file(url, tmp_path):
    out = tmp_path / "speech.mp3"
    body = json.dumps({"input": "Hello from curl.", "response_format": "mp3", **FAST})
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "120", "-o", str(out), "-w", "%{http_code}",
         "-H", "Content-Type: application/json", "-d", body, f"{url}/v1/audio/speech"],
        capture_output=True, text=True, timeout=150, check=False,
    )  # fmt: skip
    assert result.stdout == "200", result.stderr
    assert decoded_seconds(out.read_bytes(), "mp3") > 0.5


def test_a_callers_own_voice_goes_in_extra_body(client):
    ref = base64.b64encode(_wav(np.random.default_rng(0).uniform(-0.3, 0.3, 48000))).decode()
    audio = client.audio.speech.create(
        model="tts-1",
        voice="alloy",
        input="My own voice.",
        response_format="pcm",
        extra_body={**FAST, "ref_audio": ref, "ref_text": "Some reference words here."},
    ).read()
    assert len(audio) > 0


def test_listings(client, url, service):
    models = client.models.list().data
    assert [m.id for m in models] == service.worker.models.names
    assert models[0].license == "none (random weights, made here)"  # the demo's model.json
    voices = httpx.get(f"{url}/v1/audio/voices").json()
    assert voices["object"] == "list" and voices["data"][0]["name"] == "default"


def test_openai_errors_get_openai_statuses(client):
    import openai

    with pytest.raises(openai.BadRequestError) as info:
        client.audio.speech.create(model="tts-1", voice="alloy", input="Hi.", speed=4.0)
    assert info.value.body["code"] == "INVALID_INPUT"
    with pytest.raises(openai.NotFoundError) as info:
        client.audio.speech.create(model="tts-1", voice="nobody", input="Hi.")
    assert info.value.body["code"] == "VOICE_NOT_FOUND"
    with pytest.raises(openai.BadRequestError):
        client.audio.speech.create(model="tts-1", voice="alloy", input="Hi.", stream_format="ws")  # type: ignore[arg-type]


def _wav(samples: np.ndarray, rate: int = 24000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples.astype(np.float32), rate, format="WAV")
    return buf.getvalue()


def test_unknown_paths_get_coded_404s(url):
    response = httpx.get(f"{url}/v1/chat/completions")
    assert response.status_code in (404, 405)
    assert response.json()["error"]["code"] in ("NOT_FOUND", "METHOD_NOT_ALLOWED")
    response = httpx.get(f"{url}/nothing")
    assert response.status_code == 404 and response.json()["error_code"] == "NOT_FOUND"


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_move_by_what_was_served(url):
    """A good speech request, a good /runsync job, a bad body (400), an unknown route (404):
    each counter moves by exactly its share, the audio seconds by the audio served."""
    speech = f"{url}/v1/audio/speech"
    body = {"input": "Counted once.", "voice": "alloy", "response_format": "pcm", **FAST}
    before = scrape(url)
    good = httpx.post(speech, json=body, timeout=120)
    assert good.status_code == 200
    assert good.headers["x-usage-characters"] == str(len("Counted once."))
    assert good.headers["x-model"] == "F5TTS_v1_Base" and good.headers["x-quality"] == "fast"
    assert good.headers["x-voice"] == "default" and int(good.headers["x-chunks"]) >= 1
    assert float(good.headers["x-first-audio-s"]) > 0
    job = {"input": {"text": "Natively.", **FAST}}
    native = httpx.post(f"{url}/runsync", json=job, timeout=120)
    [item] = native.json()["output"]
    assert item["usage"]["characters"] == len("Natively.") and item["usage"]["steps"] == 7
    bad = httpx.post(speech, json={"input": "x", "voice": "alloy", "speed": 9}, timeout=30)
    assert bad.status_code == 400 and bad.headers["x-error-code"] == "INVALID_INPUT"
    assert httpx.get(f"{url}/v1/nothing-here", timeout=30).status_code == 404
    after = scrape(url)

    def moved(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    requests = "f5worker_requests_total"
    assert moved(requests, route="/v1/audio/speech", status="200", code="OK") == 1
    assert moved(requests, route="/runsync", status="200", code="OK") == 1
    assert moved(requests, route="/v1/audio/speech", status="400", code="INVALID_INPUT") == 1
    assert moved(requests, route="other", status="404", code="NOT_FOUND") == 1
    speech_s = len(good.content) / 2 / 24000
    audio = "f5worker_audio_seconds_total"
    labels = {"model": "F5TTS_v1_Base", "voice": "default"}
    assert moved(audio, route="/v1/audio/speech", **labels) == pytest.approx(speech_s, abs=0.01)
    assert moved(audio, route="/runsync", **labels) == pytest.approx(item["duration_s"], abs=0.01)
    for route in ("/v1/audio/speech", "/runsync"):
        assert moved("f5worker_rtf_count", route=route) == 1
        assert moved("f5worker_first_audio_seconds_count", route=route) == 1
    assert moved("f5worker_request_seconds_count", route="/v1/audio/speech") == 2
    assert moved("f5worker_engine_busy_seconds_total") > 0
    assert after[("f5worker_admitted", ())] == 0
