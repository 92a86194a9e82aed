"""The worker as RunPod runs it: the SDK's real worker loop against a fake of RunPod's job API.

What a client of a RunPod endpoint sees is what the worker posts to job-stream (each item of
/stream) and job-done (the final /run, /runsync and /status result), so these tests read those.
The error path differs from the local API's: a yielded error item makes the job FAILED here.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
import urllib.request
from collections.abc import Iterator

import pytest
import soundfile as sf

from f5worker.config import Settings
from f5worker.errors import GPUError
from f5worker.job.worker import Worker
from f5worker.serve.queue import sdk_config
from f5worker.startup.compose import make_worker
from f5worker.testing.audio import noise, wav_bytes
from f5worker.testing.s3_servers import client_for, moto_server, s3_env
from f5worker.testing.worker import FakeRunPod, running_worker_loop

pytestmark = pytest.mark.slow

BUCKET = "worker"
OUTPUT_BUCKET = time.strftime("%m-%y")  # RunPod's rp_upload names the bucket by month
SENTENCES = [
    "One short line.",
    "A second line that is a little longer than the first.",
    "The third line is longer again, with a clause or two, and a pause.",
]
STREAM_TEXT = " ".join(
    [
        "The first sentence sets the scene in a quiet town by the sea, with boats and gulls.",
        "The second adds a market square where traders argue over fish and bread all morning.",
        "A third follows the fisherman home through narrow streets as the lamps are lit.",
        "The fourth ends the day with waves on the stones and a bell from the old church.",
        "Before dawn the boats leave again, one by one, their engines low and steady.",
        "By nine the market is open and the square fills with voices, carts and music.",
        "At noon the heat settles over the roofs and the streets go quiet for an hour.",
    ]
)


@pytest.fixture(scope="module")
def runpod(demo_model_dir, tmp_path_factory) -> Iterator[FakeRunPod]:
    log = tmp_path_factory.mktemp("loop") / "worker.log"
    with moto_server(BUCKET, OUTPUT_BUCKET) as s3_url:
        s3 = client_for(s3_url)
        s3.put_object(Bucket=BUCKET, Key="f5-tts/voices/anna/ref.wav", Body=wav_bytes(noise(2)))
        s3.put_object(Bucket=BUCKET, Key="f5-tts/voices/anna/ref.txt", Body=b"I am Anna.")
        env = {
            "MODEL_DIR": str(demo_model_dir),
            "MAX_CONCURRENCY": "4",
            "WORKER_VERSION": "loop-1",
            **s3_env(s3_url, BUCKET, output_bucket=True),
        }
        with FakeRunPod() as fake, running_worker_loop(fake, env, log):
            yield fake
            assert fake.violations == []  # nothing this module sent is over RunPod's limits
        assert "Traceback" not in log.read_text()


def submit(runpod: FakeRunPod, job_id: str, **inp) -> dict:
    runpod.submit(job_id, {"nfe_step": 2, **inp})
    return runpod.wait_done([job_id])[job_id]


def test_a_plain_job_is_a_one_item_list(runpod):
    done = submit(runpod, "plain", text="Hello from the loop.", seed=1)
    [item] = done["output"]
    assert item["worker_version"] == "loop-1" and item["seed"] == 1
    samples, rate = sf.read(io.BytesIO(base64.b64decode(item["audio_base64"])))
    assert rate == 24000 and len(samples) / rate == pytest.approx(item["duration_s"], abs=1e-3)
    assert [part["output"] for part in runpod.streamed["plain"]] == done["output"]


def test_a_stream_posts_each_chunk_in_order_then_the_whole_list(runpod):
    inline = {"return": "base64"}  # with `auto` and a bucket, a large chunk would be a URL
    done = submit(runpod, "stream", text=STREAM_TEXT, seed=2, stream=True, format="pcm", **inline)
    parts = [part["output"] for part in runpod.streamed["stream"]]
    chunks = [p["chunk"] for p in parts if p.get("part", 0) == 0]
    assert len(chunks) >= 3 and chunks == list(range(parts[0]["chunks"]))
    assert done["output"] == parts  # return_aggregate_stream: /run and /runsync get them all
    whole = submit(runpod, "whole", text=STREAM_TEXT, seed=2, format="pcm", **inline)["output"]
    joined = b"".join(base64.b64decode(p["audio_base64"]) for p in parts)
    assert joined == b"".join(base64.b64decode(p["audio_base64"]) for p in whole)


@pytest.mark.parametrize(
    ("job_id", "inp", "code"),
    [
        ("bad-speed", {"text": "x", "speed": 99}, "INVALID_INPUT"),
        ("bad-voice", {"text": "x", "voice": "nobody", "stream": True}, "VOICE_NOT_FOUND"),
        ("bad-route", {"openai_route": "/v1/embeddings", "openai_input": {}}, "INVALID_INPUT"),
    ],
)
def test_a_coded_error_is_a_failed_job(runpod, job_id, inp, code):
    runpod.submit(job_id, inp)
    done = runpod.wait_done([job_id])[job_id]
    assert set(done) == {"error"} and done["error"].startswith(f"{code}: ")
    assert job_id not in runpod.streamed  # nothing reached /stream
    assert "error" not in submit(runpod, f"{job_id}-next", text="Next one.")["output"][0]


def test_a_batch_with_a_failing_entry_completes_with_every_item(runpod):
    """A failed entry's payload is nested (`item_error`): a top-level `error` would end the job
    in this loop and drop the entries after it."""
    texts = [
        "First line.",
        {"text": "Second.", "voice": "nobody"},
        {"text": "Third.", "voice": "anna"},
    ]
    done = submit(runpod, "batch", texts=texts, seed=2, captions="vtt")
    assert set(done) == {"output"}
    first, failed, third = done["output"]
    assert [first["index"], failed["index"], third["index"]] == [0, 1, 2]
    assert failed["item_error"]["error_code"] == "VOICE_NOT_FOUND"
    assert first["vtt"].startswith("WEBVTT") and third["segments"][0]["text"] == "Third."
    assert [part["output"] for part in runpod.streamed["batch"]] == done["output"]


def joined(items: list[dict]) -> dict[int, bytes]:
    """Each chunk's file (or the whole file: chunk 0), its parts' audio concatenated."""
    files: dict[int, bytes] = {}
    for item in items:
        chunk = item.get("chunk", 0)
        files[chunk] = files.get(chunk, b"") + base64.b64decode(item["audio_base64"])
    return files


@pytest.mark.parametrize("stream", [True, False])
def test_a_long_paragraph_at_48khz_fits_runpods_yields(runpod, stream):
    """About 2 MB of WAV per chunk at 48 kHz (4 MB and more for the whole): every post stays
    under one yield's 1 MB, in parts that decode back to each chunk's (or the whole) file."""
    job_id = f"long-48k-{stream}"
    inp = {"text": STREAM_TEXT, "seed": 3, "sample_rate": 48000, "stream": stream}
    inp["return"] = "base64"  # the worker has a bucket: `auto` would send URLs (next test)
    done = submit(runpod, job_id, **inp)
    posts = runpod.streamed[job_id]
    assert all(len(json.dumps(post).encode()) < 1_000_000 for post in posts)
    items = [post["output"] for post in posts]
    assert done["output"] == items and any(item.get("parts", 1) > 1 for item in items)
    for number, data in joined(items).items():
        samples, rate = sf.read(io.BytesIO(data))
        first = next(i for i in items if i.get("chunk", 0) == number and i.get("part", 0) == 0)
        assert rate == 48000 and len(samples) / rate == pytest.approx(first["duration_s"], abs=1e-3)


def test_auto_sends_a_chunk_too_large_for_a_yield_to_the_bucket(runpod):
    done = submit(runpod, "long-auto", text=STREAM_TEXT, seed=3, sample_rate=48000, stream=True)
    items = done["output"]
    assert all(len(json.dumps(item).encode()) < 1_000_000 for item in items)
    assert all("part" not in item for item in items) and any("audio_url" in i for i in items)


def test_url_return_mode_uploads_to_the_output_bucket(runpod):
    done = submit(
        runpod, "url", text="Upload me.", format="flac", voice="anna", **{"return": "url"}
    )
    [item] = done["output"]
    assert "audio_base64" not in item and item["url_expires_in"] == 3600
    with urllib.request.urlopen(item["audio_url"], timeout=10) as response:
        samples, rate = sf.read(io.BytesIO(response.read()))
        assert response.headers["Content-Type"] == "audio/flac"
    assert rate == 24000 and len(samples) / rate == pytest.approx(item["duration_s"], abs=1e-3)


def test_openai_route(runpod):
    runpod.submit(
        "openai",
        {
            "openai_route": "/v1/audio/speech",
            "openai_input": {"model": "tts-1", "input": "Hello.", "voice": "alloy"},
        },
    )
    [item] = runpod.wait_done(["openai"])["openai"]["output"]
    assert item["format"] == "mp3" and item["mime_type"] == "audio/mpeg"


def test_concurrent_jobs_none_lost_failed_or_mixed(runpod):
    """MAX_CONCURRENCY=4: the SDK takes jobs in batches and runs them at once; each result is
    byte-identical to the same job run alone afterwards."""
    jobs = {f"c{i}": {"text": SENTENCES[i % 3], "seed": 10 + i} for i in range(12)}
    for job_id, inp in jobs.items():
        runpod.submit(job_id, {"nfe_step": 2, "format": "pcm", **inp})
    together = runpod.wait_done(list(jobs))
    assert max(runpod.batch_sizes) > 1  # the SDK asked for several jobs at once
    for job_id, inp in jobs.items():
        alone = submit(runpod, f"{job_id}-alone", format="pcm", **inp)
        assert together[job_id]["output"][0]["audio_base64"] == alone["output"][0]["audio_base64"]
    durations = [together[f"c{i}"]["output"][0]["duration_s"] for i in range(3)]
    assert durations == sorted(durations) and durations[0] < durations[2]


# -- the SDK's job runner (rp_job.handle_job) driven in process ---------------------------------


@pytest.fixture
def transport(monkeypatch) -> dict[str, list]:
    """Replace only the SDK's HTTP transport (send_result, stream_result) by a recorder."""
    from runpod.serverless.modules import rp_job

    sent: dict[str, list] = {"stream": [], "done": []}

    async def stream_result(_session, data, _job):
        sent["stream"].append(data)

    async def send_result(_session, data, _job, is_stream=False):
        sent["done"].append(data)

    monkeypatch.setattr(rp_job, "stream_result", stream_result)
    monkeypatch.setattr(rp_job, "send_result", send_result)
    return sent


def handle_job(worker: Worker, inp: dict) -> dict:
    from runpod.serverless.modules import rp_job

    config = sdk_config(worker, Settings(), streaming=True)
    config["rp_args"] = {}  # in place, as runpod.serverless.start does
    asyncio.run(rp_job.handle_job(None, config, {"id": "j", "input": inp}))
    return config


def test_mid_stream_failure_in_the_sdks_job_runner(engine, monkeypatch, transport):
    worker = make_worker(engine, Settings())
    real = engine.synthesize_waves

    def fails_after_one(voice, params, chunks, tag=None, seen=None):
        pieces = real(voice, params, chunks, tag, seen)
        yield next(pieces)
        raise RuntimeError("secret detail")

    monkeypatch.setattr(worker.engine, "synthesize_waves", fails_after_one)
    config = handle_job(worker, {"text": STREAM_TEXT, "nfe_step": 2, "stream": True})
    assert {part["output"]["chunk"] for part in transport["stream"]} == {0}  # (in parts)
    assert transport["done"] == [{"error": "INTERNAL_ERROR: unexpected error; see the worker log"}]
    assert "refresh_worker" not in config


def test_a_fatal_gpu_error_refreshes_the_worker(engine, monkeypatch, transport):
    worker = make_worker(engine, Settings())

    def broken(*_a, **_k):
        raise GPUError("GPU out of memory twice in a row")

    monkeypatch.setattr(worker.engine, "synthesize_waves", broken)
    config = handle_job(worker, {"text": "Hello.", "nfe_step": 2})
    assert transport["done"] == [
        {"error": "GPU_ERROR: GPU out of memory twice in a row", "stopPod": True}
    ]
    assert config["refresh_worker"] is True  # rp_scale then stops taking jobs


def test_why_the_handler_never_raises():
    """The SDK's answer to a generator that raises: its traceback becomes the job's error."""
    from runpod.serverless.modules import rp_job

    async def raising(_job):
        yield {"chunk": 0}
        raise RuntimeError("internal detail")

    async def collect():
        return [out async for out in rp_job.run_job_generator(raising, {"id": "r"})]

    first, last = asyncio.run(collect())
    assert first == {"output": {"chunk": 0}}
    assert set(last) == {"error"} and "traceback" in last["error"]  # never for our handler
