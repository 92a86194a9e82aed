"""`"stream": true`: one item per text chunk, in order, complete, first as early as possible;
directly on the generator and through the SDK's local API (which replays streams at the end)."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from collections.abc import Iterator

import numpy as np
import pytest
import soundfile as sf

from f5worker.config import Settings
from f5worker.errors import VoiceNotFound
from f5worker.job.voices import default_voice
from f5worker.job.worker import Worker
from f5worker.serve.queue import QueueHandler
from f5worker.startup.compose import make_worker
from f5worker.testing.worker import post, runsync

LONG = (
    "The first sentence sets the scene in a quiet town by the sea. "
    "The second one adds a market, boats, and gulls that argue over bread. "
    "A third sentence follows the fisherman home through narrow streets. "
    "The fourth ends the day with lamps being lit along the harbour wall. "
    "Night brings the sound of waves against the stones and a bell from the church. "
    "Before dawn the boats leave again, one by one, their engines low and steady. "
    "By nine the market is open and the square fills with voices and carts. "
    "At noon the heat settles over the roofs and the streets go quiet for an hour."
)
STREAM = {"text": LONG, "nfe_step": 2, "seed": 7, "stream": True}


@pytest.fixture(scope="module")
def worker(engine) -> Worker:
    return make_worker(engine, Settings(worker_version="stream-1"))


def items(worker: Worker, **inp) -> list[dict]:
    return list(worker.run({"id": "s", "input": inp}))


_CACHE: dict[tuple, list[dict]] = {}


def cached(worker: Worker, stream: bool, fmt: str, rate: int | None = None) -> list[dict]:
    """Long jobs are slow on a shared CPU: each distinct one runs once per module."""
    key = (id(worker), stream, fmt, rate)
    if key not in _CACHE:
        _CACHE[key] = items(worker, **{**STREAM, "stream": stream}, format=fmt, sample_rate=rate)
    return _CACHE[key]


def pcm(item: dict) -> bytes:
    return base64.b64decode(item["audio_base64"])


def test_the_text_is_long_enough_to_stream(engine):
    assert len(engine.split_text(LONG, default_voice(), 1.0)) >= 3


def test_one_item_per_chunk_in_order(worker, engine):
    out = cached(worker, True, "pcm")
    count = len(engine.split_text(LONG, default_voice(), 1.0))
    assert [i["chunk"] for i in out] == list(range(count))
    assert {i["chunks"] for i in out} == {count}
    assert {i["seed"] for i in out} == {7} and all(i["duration_s"] > 0 for i in out)
    assert "voice" in out[0]["timings"] and "synthesis" in out[-1]["timings"]


@pytest.mark.parametrize("rate", [None, 44100])
def test_pcm_chunks_concatenate_to_the_whole_utterance(worker, rate):
    streamed = cached(worker, True, "pcm", rate)
    [whole] = cached(worker, False, "pcm", rate)
    assert b"".join(pcm(i) for i in streamed) == pcm(whole)
    total = sum(i["duration_s"] for i in streamed)
    assert total == pytest.approx(whole["duration_s"], abs=0.005)


@pytest.mark.parametrize("fmt", ["wav", "opus"])
def test_every_chunk_is_a_complete_file(worker, fmt):
    for item in cached(worker, True, fmt):
        samples, rate = sf.read(io.BytesIO(pcm(item)), dtype="float32")
        assert rate == item["sample_rate"] and np.isfinite(samples).all()
        assert abs(len(samples) / rate - item["duration_s"]) < 0.1


def test_first_chunk_comes_before_the_last_is_computed(worker):
    async def timed() -> list[float]:
        start, stamps = time.perf_counter(), []
        async for _ in QueueHandler(worker).stream(
            {"id": "t", "input": {**STREAM, "format": "pcm"}}
        ):
            stamps.append(time.perf_counter() - start)
        return stamps

    stamps = asyncio.run(timed())
    assert len(stamps) >= 3 and stamps[0] < 0.9 * stamps[-1]


def test_a_failure_mid_stream_ends_the_stream_with_a_coded_error(worker, monkeypatch):
    real = worker.engine.synthesize_waves

    def fails_after_one(voice, params, chunks, tag=None, seen=None) -> Iterator:
        pieces = real(voice, params, chunks, tag, seen)
        yield next(pieces)
        raise RuntimeError("the GPU caught fire")

    monkeypatch.setattr(worker.engine, "synthesize_waves", fails_after_one)
    out = items(worker, **STREAM, format="pcm")
    assert out[0]["chunk"] == 0 and len(out) == 2
    assert out[-1]["error_code"] == "INTERNAL_ERROR" and "fire" not in out[-1]["error"]


def test_a_failure_before_the_first_chunk_is_the_only_item(worker, monkeypatch):
    def missing(*_a, **_k):
        raise VoiceNotFound("voice 'x' not found in the voice library")

    monkeypatch.setattr(worker.voices, "lookup", missing)
    [error] = items(worker, **STREAM, voice="x")
    assert error["error_code"] == "VOICE_NOT_FOUND"


# -- through the SDK's local API ---------------------------------------------------------------


@pytest.fixture(scope="module")
def api(full_worker_urls) -> str:
    """The session's fully configured worker (MAX_CONCURRENCY=4, voice library)."""
    return full_worker_urls[0]


@pytest.mark.slow
def test_runsync_returns_every_chunk_in_order(api, worker):
    reply = runsync(api, {**STREAM, "format": "pcm"})
    assert reply["status"] == "COMPLETED"
    direct = cached(worker, True, "pcm")
    assert [i["chunk"] for i in reply["output"]] == [i["chunk"] for i in direct]
    assert [pcm(i) for i in reply["output"]] == [pcm(i) for i in direct]


@pytest.mark.slow
def test_run_then_stream_replays_the_chunks(api):
    job = post(api, "/run", {"input": {**STREAM, "format": "pcm"}})
    assert job["status"] == "IN_PROGRESS"
    reply = post(api, f"/stream/{job['id']}")
    assert reply["status"] == "COMPLETED"
    chunks = [part["output"] for part in reply["stream"]]
    assert [c["chunk"] for c in chunks] == list(range(chunks[0]["chunks"]))


@pytest.mark.slow
def test_stream_error_through_the_local_api(api):
    reply = runsync(api, {**STREAM, "voice": "nobody"})
    assert reply["status"] == "COMPLETED" and len(reply["output"]) == 1
    assert reply["output"][0]["error_code"] == "VOICE_NOT_FOUND"
