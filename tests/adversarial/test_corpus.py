"""The adversarial corpus (#11) thrown at a live worker: the demo model behind the SDK's local
API, a voice library on moto, a reference-audio server that misbehaves, fake secrets in the
environment. Each case must give valid audio or a coded, bounded, non-retryable error (or a
retryable STORAGE_ERROR for an outage), within a time and memory bound measured from the worker
process, and the worker must answer a good job afterwards. At the end the worker's log must hold
no secret and no user text. `pytest tests/adversarial -s` prints the per-class figures.
"""

from __future__ import annotations

import base64
import io
import json
import time
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import soundfile as sf
import srt
import webvtt

from f5worker.errors import MAX_MESSAGE_CHARS
from f5worker.serve.limits import MAX_YIELD_BYTES, join_parts
from f5worker.testing.audio import noise, wav_bytes
from f5worker.testing.s3_servers import client_for, moto_server, s3_env
from f5worker.testing.web import audio_server
from f5worker.testing.worker import LiveWorker, live_worker, runsync
from tests.adversarial.corpus import CANARY, corpus

pytestmark = pytest.mark.slow

BUCKET = "adversarial"
URL_TIMEOUT_S = 2
MAX_JOB_S = 90.0  # the demo model on 2 shared cores; an unbounded job takes far longer
MAX_JOB_GROWTH_MB = 600.0  # resident memory a single job may add to the worker
SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "adversarial-aws-secret-never-logged",
    "BUCKET_SECRET_ACCESS_KEY": "adversarial-bucket-secret-never-logged",
    "HF_TOKEN": "hf_adversarialTokenNeverLogged",
    "FLASH_ATTN_WHEEL_URL": "https://example.com/fa.whl?X-Amz-Signature=sigNeverLogged0123",
}
WHEEL_SHA256 = "0" * 64  # required with FLASH_ATTN_WHEEL_URL; FLASH_ATTN=off never uses it
CODES = {
    "INVALID_INPUT",
    "TEXT_TOO_LONG",
    "UNSUPPORTED_FORMAT",
    "BAD_REF_AUDIO",
    "VOICE_NOT_FOUND",
    "OUTPUT_TOO_LARGE",
    "SYNTHESIS_FAILED",
    "VOICE_EXISTS",  # a reserved voice name
    "VOICE_WRITES_DISABLED",  # voice writes are off by default
}
CASES = corpus()

MAX_ERROR_CHARS = MAX_MESSAGE_CHARS + 40  # "<CODE>: " + the bounded message


@dataclass
class Figures:
    tried: dict[str, int] = field(default_factory=dict)
    slowest: tuple[float, str] = (0.0, "")
    hungriest: tuple[float, str] = (0.0, "")
    peak_mb: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)


FIGURES = Figures()


@pytest.fixture(scope="module")
def live(demo_model_dir: Path, tmp_path_factory) -> Iterator[tuple[LiveWorker, str]]:
    log_path = tmp_path_factory.mktemp("adversarial") / "worker.log"
    with moto_server(BUCKET) as s3_url:
        s3 = client_for(s3_url)
        s3.put_object(Bucket=BUCKET, Key="private/recording.wav", Body=wav_bytes(noise(2)))
        s3.put_object(Bucket=BUCKET, Key="f5-tts/voices/anna/ref.wav", Body=wav_bytes(noise(2)))
        s3.put_object(Bucket=BUCKET, Key="f5-tts/voices/anna/ref.txt", Body=b"I am Anna.")
        s3.put_object(Bucket=BUCKET, Key="f5-tts/voices/notes.txt", Body=b"not audio")
        env = {
            **s3_env(s3_url, BUCKET),
            **SECRETS,
            "FLASH_ATTN_WHEEL_SHA256": WHEEL_SHA256,
            "MODEL_DIR": str(demo_model_dir),
            "REF_AUDIO_URL_TIMEOUT_S": str(URL_TIMEOUT_S),
            "MAX_AUDIO_SECONDS": "600",
            "FLASH_ATTN": "off",
            "LOG_LEVEL": "INFO",
            # The SSRF guard's escape hatch: the misbehaving server is on 127.0.0.1.
            "RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS": "true",
        }
        with (
            audio_server(wav_bytes(noise(0.5)), 10 * 1024 * 1024) as http_url,
            live_worker(env, log_path) as worker,
        ):
            yield worker, http_url
            _check_log(worker.log_path.read_text())
    _report()


def fill(value, http_url: str):
    if isinstance(value, str):
        return value.replace("{http}", http_url).replace("{bucket}", BUCKET)
    if isinstance(value, dict):
        return {fill(k, http_url): fill(v, http_url) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, http_url) for v in value]
    return value


@pytest.mark.parametrize(("kind", "case", "inp"), CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_hostile_input(live, kind, case, inp):
    worker, http_url = live
    before_kb, _ = worker.memory_kb()
    worker.reset_peak()
    started = time.perf_counter()
    try:
        reply = runsync(worker.url, fill(inp, http_url), timeout=MAX_JOB_S * 2)
    except urllib.error.HTTPError as exc:
        # The SDK's local API validates that `input` is an object before any handler runs
        # (RunPod's own API does the same); anything else must reach the handler.
        assert exc.code == 422 and not isinstance(inp, dict), exc
        reply = {"status": "COMPLETED", "output": [{"sdk": "refused"}]}
    elapsed = time.perf_counter() - started
    _, peak_kb = worker.memory_kb()  # this job's peak, since reset_peak
    _record(kind, case, elapsed, (peak_kb - before_kb) / 1024, peak_kb / 1024)
    assert worker.alive(), "the worker died"
    assert reply["status"] == "COMPLETED", reply
    outcome = _check_output(reply["output"])
    FIGURES.outcomes[outcome] = FIGURES.outcomes.get(outcome, 0) + 1
    assert elapsed < MAX_JOB_S, f"{case} took {elapsed:.1f} s"
    assert (peak_kb - before_kb) / 1024 < MAX_JOB_GROWTH_MB
    good = runsync(worker.url, {"text": "Still serving.", "nfe_step": 1, "seed": 2})
    assert "audio_base64" in good["output"][0], good


def _check_output(items: list) -> str:
    """Valid audio items, or a coded error as the last item; returns the outcome's name. Every
    item fits one of RunPod's yields (the SDK posts each one); parts are joined as a client
    joins them, then each item's audio must decode and its subtitles hold exactly its cues."""
    assert isinstance(items, list) and items
    assert all(len(json.dumps(item).encode()) < MAX_YIELD_BYTES for item in items)
    items = join_parts(items)
    last = items[-1]
    if last.get("sdk") == "refused":
        return "SDK_REFUSED"
    if "error" in last:
        _check_error(last)
        return last["error_code"]
    failed = 0
    for item in items:
        if "item_error" in item:  # a batch entry that failed alone: as coded as a job error
            _check_error(item["item_error"])
            failed += 1
            continue
        if "action" in item:  # a voice action that succeeded (voice.list, say)
            continue
        assert _decoded_samples(item) > 0
        _check_subtitles(item)
    return "audio" if not failed else "batch with failed entries"


def _check_subtitles(item: dict) -> None:
    """No caption text can add or drop a cue (a forged timing line would)."""
    if "srt" in item:
        assert len(list(srt.parse(item["srt"]))) == len(item["segments"])
    if "vtt" in item:
        assert len(webvtt.from_buffer(io.StringIO(item["vtt"]))) == len(item["segments"])


def _decoded_samples(item: dict) -> int:
    """Samples in an item's audio, decoded by a reader that knows its format."""
    data = base64.b64decode(item["audio_base64"])
    if item["format"] == "pcm":
        return len(data) // 2
    if item["format"] == "aac":  # libsndfile has no AAC: ffmpeg's decoder, through PyAV
        import av

        with av.open(io.BytesIO(data)) as container:
            frames = list(container.decode(audio=0))
        assert frames[0].sample_rate == item["sample_rate"]
        return sum(f.samples for f in frames)
    samples, rate = sf.read(io.BytesIO(data), dtype="float32")
    assert rate == item["sample_rate"]
    return len(samples)


def _check_error(payload: dict) -> None:
    assert payload["error_code"] in CODES or payload["error_code"] == "STORAGE_ERROR", payload
    assert payload["retryable"] is (payload["error_code"] == "STORAGE_ERROR"), payload
    assert payload["error"].startswith(payload["error_code"] + ": ")
    assert len(payload["error"]) <= MAX_ERROR_CHARS and CANARY not in payload["error"]
    json.dumps(payload, ensure_ascii=False).encode("utf-8")


def _record(kind: str, case: str, seconds: float, growth_mb: float, peak_mb: float) -> None:
    FIGURES.tried[kind] = FIGURES.tried.get(kind, 0) + 1
    FIGURES.slowest = max(FIGURES.slowest, (seconds, case))
    FIGURES.hungriest = max(FIGURES.hungriest, (growth_mb, case))
    FIGURES.peak_mb = max(FIGURES.peak_mb, peak_mb)


def _check_log(text: str) -> None:
    for name, secret in SECRETS.items():
        assert secret not in text, f"{name} reached the log"
    assert "sigNeverLogged0123" not in text
    info = [line for line in text.splitlines() if " DEBUG " not in line]
    assert not [line for line in info if CANARY in line], "user text reached the log"


def _report() -> None:
    tried = ", ".join(f"{k} {v}" for k, v in sorted(FIGURES.tried.items()))
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(FIGURES.outcomes.items()))
    lines = [
        f"adversarial: {sum(FIGURES.tried.values())} inputs ({tried})",
        f"adversarial: outcomes: {outcomes}",
        f"adversarial: slowest {FIGURES.slowest[1]} {FIGURES.slowest[0]:.2f} s; "
        f"most memory {FIGURES.hungriest[1]} +{FIGURES.hungriest[0]:.0f} MB; "
        f"worker peak RSS {FIGURES.peak_mb:.0f} MB",
    ]
    Path("adversarial-figures.txt").write_text("\n".join(lines) + "\n")
