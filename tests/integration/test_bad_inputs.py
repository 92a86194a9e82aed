"""Hard inputs, as a table: each gets its stable code, and the next valid job still succeeds.

In process on the demo engine, with a real voice library and s3:// references (moto server), real
reference URLs (an HTTP server on 127.0.0.1), then a subset through the SDK's real local API.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import numpy as np
import pytest

from f5worker.config import S3Scope, Settings
from f5worker.job.fetch import S3_UNUSABLE, FetchPolicy, RefAudioFetcher
from f5worker.job.schema import MAX_TEXT_CHARS
from f5worker.job.voices import MAX_REF_BYTES, VoiceLibrary
from f5worker.job.worker import Worker
from f5worker.startup.compose import make_worker
from f5worker.testing.audio import noise, wav_b64, wav_bytes
from f5worker.testing.s3_servers import client_for
from f5worker.testing.web import audio_server
from f5worker.testing.worker import LIBRARY_BUCKET, runsync

BUCKET = LIBRARY_BUCKET
# What the worker's Settings give (its voice library), and refs/ as if from REF_AUDIO_S3_ALLOW.
S3_ALLOW = (S3Scope(BUCKET, "f5-tts/voices/"), S3Scope(BUCKET, "refs/"))
GOOD = {"text": "Still serving.", "nfe_step": 2, "seed": 1, "format": "mp3"}
OK = {"text": "Hello.", "nfe_step": 2}


def ref(b64: str) -> dict:
    return {**OK, "ref_audio": b64, "ref_text": "Reference words."}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def openai(**body) -> dict:
    return {"openai_route": "/v1/audio/speech", "openai_input": {"input": "Hi.", **body}}


# (case id, job input, expected code). "{http}" is the local audio server, "{s3}" the bucket.
CASES = [
    # wrong shapes and types
    ("input-null", None, "INVALID_INPUT"),
    ("input-string", "Hello", "INVALID_INPUT"),
    ("input-list", [OK], "INVALID_INPUT"),
    ("text-missing", {"nfe_step": 2}, "INVALID_INPUT"),
    ("text-number", {"text": 42}, "INVALID_INPUT"),
    ("text-empty", {"text": " "}, "INVALID_INPUT"),
    ("text-object", {"text": {"en": "hi"}}, "INVALID_INPUT"),
    ("nfe-string", {**OK, "nfe_step": "8"}, "INVALID_INPUT"),
    ("nfe-bool", {**OK, "nfe_step": True}, "INVALID_INPUT"),
    ("nfe-fraction", {**OK, "nfe_step": 2.5}, "INVALID_INPUT"),
    ("speed-string", {**OK, "speed": "fast"}, "INVALID_INPUT"),
    ("seed-fraction", {**OK, "seed": 1.5}, "INVALID_INPUT"),
    ("format-number", {**OK, "format": 3}, "INVALID_INPUT"),
    ("stream-string", {**OK, "stream": "yes"}, "INVALID_INPUT"),
    ("remove-silence-int", {**OK, "remove_silence": 1}, "INVALID_INPUT"),
    # out of range
    ("nfe-zero", {**OK, "nfe_step": 0}, "INVALID_INPUT"),
    ("nfe-huge", {**OK, "nfe_step": 1000}, "INVALID_INPUT"),
    ("speed-zero", {**OK, "speed": 0}, "INVALID_INPUT"),
    ("speed-nan", {**OK, "speed": float("nan")}, "INVALID_INPUT"),
    ("speed-inf", {**OK, "speed": float("inf")}, "INVALID_INPUT"),
    ("cfg-high", {**OK, "cfg_strength": 11}, "INVALID_INPUT"),
    ("sway-high", {**OK, "sway_sampling_coef": 2}, "INVALID_INPUT"),
    ("fade-negative", {**OK, "cross_fade_duration": -0.1}, "INVALID_INPUT"),
    ("seed-negative", {**OK, "seed": -1}, "INVALID_INPUT"),
    ("seed-huge", {**OK, "seed": 2**40}, "INVALID_INPUT"),
    ("rate-odd", {**OK, "sample_rate": 11025}, "INVALID_INPUT"),
    ("return-unknown", {**OK, "return": "email"}, "INVALID_INPUT"),
    # numbers and strings JSON allows that Python cannot hold as a float or as UTF-8
    ("speed-int-overflow", {**OK, "speed": 10**400}, "INVALID_INPUT"),
    ("cfg-int-overflow", {**OK, "cfg_strength": -(10**400)}, "INVALID_INPUT"),
    ("nfe-int-huge", {**OK, "nfe_step": 10**400}, "INVALID_INPUT"),
    ("text-lone-surrogate", {**OK, "text": "Hello \ud800 there."}, "INVALID_INPUT"),
    ("ref-text-lone-surrogate", {**ref(wav_b64(noise(1))), "ref_text": "\udfff"}, "INVALID_INPUT"),
    ("unknown-field-surrogate", {**OK, "\udcff": 1}, "INVALID_INPUT"),
    ("unknown-fields-many", {**OK, **{f"field{i}" * 20: 1 for i in range(20000)}}, "INVALID_INPUT"),
    # unknown fields, impossible combinations
    ("unknown-field", {**OK, "voice_id": "x"}, "INVALID_INPUT"),
    ("misspelt-text", {"txt": "Hello."}, "INVALID_INPUT"),
    ("voice-and-ref", {**ref(wav_b64(noise(1))), "voice": "default"}, "INVALID_INPUT"),
    ("ref-without-text", {**OK, "ref_audio": wav_b64(noise(1))}, "INVALID_INPUT"),
    ("url-without-bucket", {**OK, "return": "url"}, "INVALID_INPUT"),
    ("stream-url", {**OK, "stream": True, "return": "url"}, "INVALID_INPUT"),
    # huge text, formats, output size
    ("text-too-long", {**OK, "text": "a" * (MAX_TEXT_CHARS + 1)}, "TEXT_TOO_LONG"),
    ("text-megabyte", {**OK, "text": "word " * 200_000}, "TEXT_TOO_LONG"),
    ("audio-over-limit", {**OK, "text": "Hello there. " * 384, "speed": 0.3}, "TEXT_TOO_LONG"),
    ("format-aiff", {**OK, "format": "aiff"}, "UNSUPPORTED_FORMAT"),
    ("opus-44k", {**OK, "format": "opus", "sample_rate": 44100}, "UNSUPPORTED_FORMAT"),
    ("too-large", {**OK, "text": "A longer sentence.", "return": "base64"}, "OUTPUT_TOO_LARGE"),
    # reference audio
    ("ref-not-base64", ref("@@@ not base64 @@@"), "BAD_REF_AUDIO"),
    ("ref-garbage", ref(b64(b"\x00\x01 garbage bytes" * 10)), "BAD_REF_AUDIO"),
    ("ref-empty", ref(""), "BAD_REF_AUDIO"),
    ("ref-header-only", ref(b64(wav_bytes(noise(1))[:44])), "BAD_REF_AUDIO"),
    ("ref-silent", ref(wav_b64(np.zeros(48000, np.float32))), "BAD_REF_AUDIO"),
    ("ref-ultra-short", ref(wav_b64(noise(0.1))), "BAD_REF_AUDIO"),
    (
        "ref-255-channels",
        ref(b64(wav_bytes(np.full((4800, 255), 0.01, np.float32), 48000, "OGG"))),
        "BAD_REF_AUDIO",
    ),
    ("ref-too-long", ref(b64(wav_bytes(noise(61, rate=8000), rate=8000))), "BAD_REF_AUDIO"),
    ("ref-4khz", ref(b64(wav_bytes(noise(2, rate=4000), rate=4000))), "BAD_REF_AUDIO"),
    ("ref-oversized", ref(b64(b"\0" * (MAX_REF_BYTES + 1))), "BAD_REF_AUDIO"),
    ("ref-over-field-limit", ref("A" * 14_000_004), "BAD_REF_AUDIO"),
    ("url-refused", ref("http://127.0.0.1:9/ref.wav"), "BAD_REF_AUDIO"),
    ("url-not-audio", ref("{http}/page.html"), "BAD_REF_AUDIO"),
    ("url-404", ref("{http}/missing.wav"), "BAD_REF_AUDIO"),
    ("url-too-big", ref("{http}/chunked-big.wav"), "BAD_REF_AUDIO"),
    ("url-plain-http", ref("http://example.com/ref.wav"), "BAD_REF_AUDIO"),
    ("url-metadata", ref("https://169.254.169.254/latest/meta-data/"), "BAD_REF_AUDIO"),
    ("s3-missing-key", ref("s3://{s3}/f5-tts/voices/nope.wav"), "BAD_REF_AUDIO"),
    ("s3-missing-bucket", ref("s3://no-such-bucket-here/a.wav"), "BAD_REF_AUDIO"),
    ("s3-outside-library", ref("s3://{s3}/notes.txt"), "BAD_REF_AUDIO"),
    ("s3-dot-segments", ref("s3://{s3}/f5-tts/voices/../notes.txt"), "BAD_REF_AUDIO"),
    ("s3-bad-bucket-name", ref("s3://Bad_Bucket/a.wav"), "BAD_REF_AUDIO"),
    ("s3-no-key", ref("s3://{s3}"), "BAD_REF_AUDIO"),
    ("s3-not-audio", ref("s3://{s3}/f5-tts/voices/silent/ref.txt"), "BAD_REF_AUDIO"),
    ("s3-silent", ref("s3://{s3}/f5-tts/voices/silent/ref.wav"), "BAD_REF_AUDIO"),
    # named voices
    ("voice-unknown", {**OK, "voice": "nobody"}, "VOICE_NOT_FOUND"),
    ("voice-path", {**OK, "voice": "../f5-tts"}, "INVALID_INPUT"),
    ("voice-silent", {**OK, "voice": "silent"}, "BAD_REF_AUDIO"),
    ("voice-no-text", {**OK, "voice": "textless"}, "VOICE_NOT_FOUND"),
    # the OpenAI shape
    (
        "openai-chat-route",
        {"openai_route": "/v1/chat/completions", "openai_input": {}},
        "INVALID_INPUT",
    ),
    ("openai-aiff", openai(response_format="aiff"), "UNSUPPORTED_FORMAT"),
    ("openai-unknown-field", openai(style="Whisper."), "INVALID_INPUT"),
    ("openai-speed", openai(speed=4.0), "INVALID_INPUT"),
    ("openai-unknown-voice", openai(voice="nobody"), "VOICE_NOT_FOUND"),
    # captions, and batches malformed as a whole (a bad entry alone: test_a_bad_entry_...)
    ("captions-unknown", {**OK, "captions": "ass"}, "INVALID_INPUT"),
    ("captions-bool", {**OK, "captions": True}, "INVALID_INPUT"),
    ("texts-string", {"texts": "Hello.", "nfe_step": 2}, "INVALID_INPUT"),
    ("texts-object", {"texts": {"text": "Hello."}}, "INVALID_INPUT"),
    ("texts-empty", {"texts": []}, "INVALID_INPUT"),
    ("texts-too-many", {"texts": ["a"] * 65}, "INVALID_INPUT"),
    ("texts-and-text", {**OK, "texts": ["a"]}, "INVALID_INPUT"),
    ("texts-stream", {"texts": ["a"], "stream": True}, "INVALID_INPUT"),
    ("texts-too-long", {"texts": ["a" * 2600, {"text": "b" * 2600}]}, "TEXT_TOO_LONG"),
    ("texts-url-without-bucket", {"texts": ["a"], "return": "url"}, "INVALID_INPUT"),
    ("texts-bad-voice", {"texts": ["a"], "voice": "../x"}, "INVALID_INPUT"),
]


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


def table_worker(engine, s3_url: str, settings: Settings | None = None) -> Worker:
    """The worker the table's cases expect: its voice library and s3:// references on the S3
    server at s3_url, loopback reference URLs allowed, a 64 KB result limit."""
    return make_worker(
        engine,
        settings or Settings(worker_version="bad-1"),
        voices=VoiceLibrary(BUCKET, "f5-tts", client_factory=lambda: client_for(s3_url)),
        fetcher=RefAudioFetcher(
            FetchPolicy(
                max_bytes=64 * 1024, total_timeout_s=2, allow_http_loopback=True, s3_allow=S3_ALLOW
            ),
            s3_client_factory=lambda: client_for(s3_url),
        ),
        max_result_b64=64 * 1024,  # so that one sentence of WAV is OUTPUT_TOO_LARGE
    )


def fill(value, http_url: str):
    """Put the servers' addresses into a case's input."""
    if isinstance(value, str):
        return value.replace("{http}", http_url).replace("{s3}", BUCKET)
    if isinstance(value, dict):
        return {k: fill(v, http_url) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, http_url) for v in value]
    return value


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
    assert len(error["error"]) <= 500
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
    assert failed["error"].startswith(f"{code}: ") and len(failed["error"]) <= 500
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
