"""Hard inputs, as a table: each gets its stable code, and the next valid job still succeeds.

In process on the demo engine, with a real voice library and s3:// references (moto server), real
reference URLs (an HTTP server on 127.0.0.1), then a subset through the SDK's real local API.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from f5worker.config import Settings
from f5worker.errors import MAX_MESSAGE_CHARS
from f5worker.job.fetch import S3_UNUSABLE, FetchPolicy, RefAudioFetcher
from f5worker.job.voices import VoiceLibrary
from f5worker.job.worker import Worker
from f5worker.startup.compose import make_worker
from f5worker.testing.audio import noise, wav_bytes
from f5worker.testing.s3_servers import client_for
from f5worker.testing.web import audio_server
from f5worker.testing.worker import runsync
from tests.cases.bad_inputs import (
    BUCKET,
    CASES,
    GOOD,
    OK,
    S3_ALLOW,
    fill,
    ref,
    table_worker,
)

MAX_ERROR_CHARS = MAX_MESSAGE_CHARS + 40  # "<CODE>: " + the bounded message


@pytest.fixture(scope="module")
def full(full_worker_urls) -> tuple[str, str]:
    return full_worker_urls


@pytest.fixture(scope="module")
def s3_url(full) -> str:
    return full[1]


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    with audio_server(wav_bytes(noise(0.5)), 64 * 1024) as url:
        yield url


@pytest.fixture(scope="module")
def worker(engine, s3_url) -> Worker:
    return table_worker(engine, s3_url)


def test_the_table_covers_every_code_and_enough_cases():
    codes = {code for _, _, code in CASES}
    assert len(CASES) >= 40
    assert codes == {
        "INVALID_INPUT",
        "TEXT_TOO_LONG",
        "UNSUPPORTED_FORMAT",
        "BAD_REF_AUDIO",
        "VOICE_NOT_FOUND",
        "OUTPUT_TOO_LARGE",
        "ASR_DISABLED",
    }


@pytest.mark.parametrize(("inp", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_then_a_good_job(worker, http_url, monkeypatch, inp, code):
    # Loopback URLs pass the SDK's SSRF guard only with its escape hatch (tests only).
    monkeypatch.setenv("RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS", "true")
    items = list(worker.run({"id": "bad", "input": fill(inp, http_url)}))
    error = items[-1]
    assert error["error_code"] == code, error
    assert error["error"].startswith(f"{code}: ") and "Traceback" not in error["error"]
    assert error["retryable"] is False and error["worker_version"] == "bad-1"
    # bounded, and serialisable as the UTF-8 JSON the SDK sends
    assert len(error["error"]) <= MAX_ERROR_CHARS
    json.dumps(error, ensure_ascii=False).encode("utf-8")
    [good] = list(worker.run({"id": "good", "input": GOOD}))
    assert "error" not in good and good["duration_s"] > 0


def test_storage_down_is_retryable_and_the_worker_keeps_serving(engine):
    dead = lambda: client_for("http://127.0.0.1:9")  # noqa: E731
    worker = make_worker(
        engine,
        Settings(),
        voices=VoiceLibrary(BUCKET, "f5-tts", client_factory=dead),
        fetcher=RefAudioFetcher(FetchPolicy(s3_allow=S3_ALLOW), s3_client_factory=dead),
    )
    for inp in ({**OK, "voice": "anna"}, ref(f"s3://{BUCKET}/f5-tts/voices/a.wav")):
        [error] = list(worker.run({"id": "s3-down", "input": inp}))
        assert error["error_code"] == "STORAGE_ERROR" and error["retryable"] is True
        [good] = list(worker.run({"id": "good", "input": GOOD}))
        assert "error" not in good


UNUSABLE_S3 = {
    "s3-missing-key",
    "s3-missing-bucket",
    "s3-outside-library",
    "s3-dot-segments",
    "s3-not-audio",
    "s3-silent",
}


def test_unusable_s3_objects_all_read_the_same(worker, http_url):
    """Missing, elsewhere, not allowed or not audio: the caller cannot tell which."""
    inputs = [fill(inp, http_url) for name, inp, _ in CASES if name in UNUSABLE_S3]
    assert len(inputs) == len(UNUSABLE_S3)
    errors = {list(worker.run({"id": "s3", "input": inp}))[-1]["error"] for inp in inputs}
    assert errors == {f"BAD_REF_AUDIO: {S3_UNUSABLE}"}


def test_library_voice_and_s3_reference_work(worker, s3_url):
    client = client_for(s3_url)
    client.put_object(Bucket=BUCKET, Key="refs/anna.wav", Body=wav_bytes(noise(1, 16000), 16000))
    for inp in ({**OK, "voice": "anna"}, ref(f"s3://{BUCKET}/refs/anna.wav")):
        [item] = list(worker.run({"id": "ok", "input": {**inp, "format": "mp3"}}))
        assert "error" not in item and item["duration_s"] > 0


# -- through the SDK's real local API ----------------------------------------------------------

JSON_CASES = [
    c for c in CASES if "{http}" not in str(c[1]) and c[0] not in ("speed-nan", "speed-inf")
]
API_CASES = [
    c
    for c in JSON_CASES
    if c[0]
    in {
        "text-missing",
        "text-number",
        "nfe-bool",
        "speed-zero",
        "unknown-field",
        "text-megabyte",
        "format-aiff",
        "ref-silent",
        "ref-ultra-short",
        "url-refused",
        "url-metadata",
        "s3-missing-key",
        "voice-unknown",
        "voice-silent",
        "openai-chat-route",
        "url-without-bucket",
        "speed-int-overflow",
        "text-lone-surrogate",
        "unknown-field-surrogate",
        "unknown-fields-many",
        "audio-over-limit",
    }
]


ENTRY_CASES = [
    ("not-text", 42, "INVALID_INPUT"),
    ("nested-list", [["Hello."]], "INVALID_INPUT"),
    ("empty", {"text": ""}, "INVALID_INPUT"),
    ("unknown-field", {"text": "Hi.", "speed": 2}, "INVALID_INPUT"),
    ("lone-surrogate", {"text": "Hi \ud800."}, "INVALID_INPUT"),
    ("format-wma", {"text": "Hi.", "format": "wma"}, "UNSUPPORTED_FORMAT"),
    ("voice-unknown", {"text": "Hi.", "voice": "nobody"}, "VOICE_NOT_FOUND"),
    ("voice-no-text", {"text": "Hi.", "voice": "textless"}, "VOICE_NOT_FOUND"),
    ("voice-silent", {"text": "Hi.", "voice": "silent"}, "BAD_REF_AUDIO"),
    ("audio-over-limit", {"text": "Hello there. " * 380, "seed": 1}, "TEXT_TOO_LONG"),
    ("too-large", {"text": "A longer sentence.", "format": "wav"}, "OUTPUT_TOO_LARGE"),
]


@pytest.mark.parametrize(
    ("entry", "code"), [c[1:] for c in ENTRY_CASES], ids=[c[0] for c in ENTRY_CASES]
)
def test_a_bad_entry_fails_alone_with_its_code(worker, entry, code):
    """The entries around it still get audio; the job itself is not failed."""
    batch = {"texts": ["Hi.", entry, "Bye."], "nfe_step": 2, "format": "mp3", "speed": 0.3}
    items = list(worker.run({"id": "batch", "input": batch}))
    assert [item["index"] for item in items] == [0, 1, 2]
    assert all("error" not in item for item in items)
    failed = items[1]["item_error"]
    assert (failed["error_code"], failed["retryable"]) == (code, False)
    assert failed["error"].startswith(f"{code}: ") and len(failed["error"]) <= MAX_ERROR_CHARS
    assert items[0]["duration_s"] > 0 and items[2]["duration_s"] > 0


@pytest.fixture(scope="module")
def api(full) -> str:
    return full[0]


@pytest.mark.slow
@pytest.mark.parametrize(("inp", "code"), [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_bad_input_through_the_local_api(api, inp, code):
    reply = runsync(api, fill(inp, ""))
    # The local API marks a generator handler's job COMPLETED; the error is the last item.
    assert reply["status"] == "COMPLETED"
    error = reply["output"][-1]
    assert error["error_code"] == code and error["worker_version"] == "api-1"
    good = runsync(api, GOOD)
    assert good["status"] == "COMPLETED" and "audio_base64" in good["output"][0]


@pytest.mark.slow
def test_library_voice_through_the_local_api(api):
    [item] = runsync(api, {**OK, "voice": "anna", "format": "flac"})["output"]
    assert "error" not in item and item["format"] == "flac" and item["duration_s"] > 0


@pytest.mark.slow
def test_a_batch_with_captions_through_the_local_api(api):
    """The README's batch example: a library voice, a bad entry, captions, all in one job."""
    texts = ["Welcome back.", {"text": "Two messages.", "voice": "anna"}, {"voice": "nobody"}]
    reply = runsync(api, {"texts": texts, "nfe_step": 2, "seed": 1, "captions": "srt"})
    assert reply["status"] == "COMPLETED"
    first, second, third = reply["output"]
    assert [first["index"], second["index"], third["index"]] == [0, 1, 2]
    assert second["segments"] == [
        {"text": "Two messages.", "start": 0.0, "end": second["duration_s"]}
    ]
    assert first["srt"].startswith("1\n00:00:00,000 --> ")
    assert third["item_error"]["error_code"] == "INVALID_INPUT"  # an entry needs its text
