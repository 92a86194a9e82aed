"""The bad-input table: each hard input with the stable code it must get, and the worker that
the table's cases expect. Used by tests/integration/test_bad_inputs.py (the queue handler, the
SDK's local API) and tests/integration/test_http_native.py (the HTTP mode's native route).
"""

from __future__ import annotations

import base64

import numpy as np

from f5worker.config import S3Scope, Settings
from f5worker.job.fetch import FetchPolicy, RefAudioFetcher
from f5worker.job.schema import MAX_TEXT_CHARS
from f5worker.job.voices import MAX_REF_BYTES, VoiceLibrary
from f5worker.job.worker import Worker
from f5worker.startup.compose import make_worker
from f5worker.testing.audio import noise, wav_b64, wav_bytes
from f5worker.testing.s3_servers import client_for
from f5worker.testing.worker import LIBRARY_BUCKET

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
    # Without ref_text a clip is transcribed; the table's worker has no ASR (ASR_MODEL=none).
    ("ref-without-text-asr-off", {**OK, "ref_audio": wav_b64(noise(1))}, "INVALID_INPUT"),
    ("ref-blank-text-asr-off", {**ref(wav_b64(noise(1))), "ref_text": " \n"}, "INVALID_INPUT"),
    ("ref-language-word", {**ref(wav_b64(noise(1))), "ref_language": "English"}, "INVALID_INPUT"),
    ("ref-language-number", {**ref(wav_b64(noise(1))), "ref_language": 1}, "INVALID_INPUT"),
    ("ref-language-alone", {**OK, "ref_language": "en"}, "INVALID_INPUT"),
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
    ("openai-ref-language", openai(ref_audio="UklGRg==", ref_language="??"), "INVALID_INPUT"),
    ("openai-unknown-voice", openai(voice="nobody"), "VOICE_NOT_FOUND"),
    # captions, and batches malformed as a whole (a bad entry alone: test_a_bad_entry_...)
    ("captions-unknown", {**OK, "captions": "ass"}, "INVALID_INPUT"),
    ("captions-bool", {**OK, "captions": True}, "INVALID_INPUT"),
    # the ASR companion: asked for on a worker without one (the table's worker has none)
    ("verify-without-asr", {**OK, "verify": True}, "ASR_DISABLED"),
    ("words-without-asr", {**OK, "captions": "words"}, "ASR_DISABLED"),
    ("verify-batch-without-asr", {"texts": ["a"], "verify": True}, "ASR_DISABLED"),
    ("verify-string", {**OK, "verify": "yes"}, "INVALID_INPUT"),
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
