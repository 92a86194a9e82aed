"""Hostile job inputs, generated per class of the adversarial review (#11).

Each case is (class, id, job input). Everything is generated from fixed seeds, so a failure
names a case that reproduces. "{http}" in a value is replaced by the reference-audio server's
URL and "{bucket}" by the worker's voice-library bucket when the case runs. CANARY is put into
every text a case sends, so the log check can tell whether user text reached the INFO log.
"""

from __future__ import annotations

import base64
import io
import random
import string
from collections.abc import Iterator
from typing import Any

import numpy as np
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from f5worker.testing.audio import noise, wav_b64, wav_bytes

CANARY = "Canaryqx7"
FAST = {"nfe_step": 1, "seed": 1}
Case = tuple[str, str, Any]


def speak(text: str, **extra: Any) -> dict[str, Any]:
    return {"text": f"{CANARY} {text}", **FAST, **extra}


def ref(data: str, **extra: Any) -> dict[str, Any]:
    fields = {"ref_audio": data, "ref_text": f"{CANARY} reference words.", **extra}
    return speak("Hello.", **fields)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- 1. text the chunker cannot split ----------------------------------------------------------


def unsplittable(rng: random.Random) -> Iterator[Case]:
    alphabets = {
        "latin": string.ascii_letters,
        "cjk": "".join(chr(c) for c in range(0x4E00, 0x4E00 + 400)),
        "cyrillic": "".join(chr(c) for c in range(0x430, 0x450)),
        "arabic": "".join(chr(c) for c in range(0x627, 0x64A)),
        "digits": string.digits,
        "emoji": "😀😃😄😁😆🙂🙃😉",
    }
    for i in range(24):
        name, letters = rng.choice(list(alphabets.items()))
        size = rng.choice([300, 800, 1500])
        spaced = rng.random() < 0.5
        words = ("".join(rng.choices(letters, k=rng.randint(3, 12))) for _ in range(size))
        text = (" " if spaced else "").join(words)[:size]
        yield "chunker", f"run-{name}-{size}-{'spaced' if spaced else 'solid'}-{i}", speak(text)
    for marks in (50, 500, 4000):
        zalgo = "".join("e" + "\u0301\u0308\u0323" * (marks // 3) for _ in range(3))
        yield "chunker", f"combining-{marks}", speak(zalgo)
    yield "chunker", "zwj-emoji", speak("👩\u200d👩\u200d👧\u200d👦" * 300)
    yield "chunker", "url", speak("https://example.com/" + "segment/" * 300)
    yield "chunker", "variation-selectors", speak("❤\ufe0f" * 800)
    yield "chunker", "only-punctuation", speak("." * 3000)
    yield "chunker", "whitespace-and-one-letter", speak(" \t\n" * 1500 + "a")
    yield "chunker", "audio-over-limit", speak("Hello there. " * 380, speed=0.3)
    yield "chunker", "speed-3-long", speak("Words without end " * 250, speed=3.0)


# -- 2. numbers and strings the schema must map to INVALID_INPUT --------------------------------


def schema_values(rng: random.Random) -> Iterator[Case]:
    numeric = ("speed", "cfg_strength", "sway_sampling_coef", "cross_fade_duration")
    integers = ("nfe_step", "seed", "sample_rate")
    huge = [10**400, -(10**400), 2**63, 2**64 + 1, 10**20, -(2**31) - 1, 1e308, -1e308, 5e-324]
    for field in numeric + integers:
        for value in huge:
            yield "schema", f"{field}={str(value)[:12]}", speak("Hi.", **{field: value})
    surrogates = ["\ud800", "\udfff", "a\udc80b", "\ud83d"]
    for i, s in enumerate(surrogates):
        yield "schema", f"text-surrogate-{i}", {"text": f"{CANARY} {s}", **FAST}
        yield "schema", f"voice-surrogate-{i}", speak("Hi.", voice=s)
        yield "schema", f"key-surrogate-{i}", {**speak("Hi."), s: 1}
        yield "schema", f"ref-text-surrogate-{i}", ref(wav_b64(noise(1)), ref_text=s)
        yield "schema", f"ref-language-surrogate-{i}", ref(wav_b64(noise(1)), ref_language=s)
    yield "schema", "keys-many", {**speak("Hi."), **{f"k{i}" * 30: i for i in range(30000)}}
    yield "schema", "key-huge", {**speak("Hi."), "x" * 1_000_000: 1}
    yield (
        "schema",
        "openai-keys-many",
        {
            "openai_route": "/v1/audio/speech",
            "openai_input": {"input": CANARY, **{f"o{i}": i for i in range(20000)}},
        },
    )
    yield (
        "schema",
        "openai-model-surrogate",
        {
            "openai_route": "/v1/audio/speech",
            "openai_input": {"input": f"{CANARY} hi", "model": "\ud800", "voice": "alloy"},
        },
    )
    yield from _json_values(rng)


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_FIELDS = (
    "text",
    "voice",
    "format",
    "speed",
    "nfe_step",
    "seed",
    "return",
    "stream",
    "ref_text",
    "ref_language",
)


def _json_values(rng: random.Random) -> Iterator[Case]:
    """Any JSON value in any field (hypothesis draws them, derandomized)."""
    drawn: list[Any] = []

    @settings(
        max_examples=60,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.sampled_from(_FIELDS), _JSON)
    def draw(field: str, value: Any) -> None:
        drawn.append({**speak("Hi."), field: value})

    draw()
    for i, case in enumerate(drawn):
        yield "schema", f"json-{i}", case
    yield "schema", "input-array", [speak("Hi.")]
    yield "schema", "input-number", 1e308
    yield "schema", "input-deep", _deep(rng, 200)


def _deep(rng: random.Random, depth: int) -> Any:
    value: Any = CANARY
    for _ in range(depth):
        value = [value] if rng.random() < 0.5 else {"a": value}
    return {**speak("Hi."), "voice": value}


# -- 3. decompression bombs in reference audio --------------------------------------------------


def _encode(frames: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, frames, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def bombs(rng: random.Random) -> Iterator[Case]:
    for channels in (9, 16, 64, 128, 255):
        frames = np.full((4800, channels), 0.01, np.float32)
        data = _encode(frames, 48000, "OGG", "VORBIS")
        yield "bombs", f"ogg-{channels}ch", ref(b64(data))
    for channels in (9, 32):
        data = _encode(np.full((800, channels), 0.01, np.float32), 8000, "WAV", "PCM_16")
        yield "bombs", f"wav-{channels}ch", ref(b64(data))
    long_quiet = _encode(np.zeros((8000 * 61, 1), np.float32), 8000, "OGG", "VORBIS")
    yield "bombs", "ogg-61s-silent", ref(b64(long_quiet))
    long_8ch = _encode(np.full((8000 * 59, 8), 0.05, np.float32), 8000, "FLAC", "PCM_16")
    yield "bombs", "flac-8ch-59s", ref(b64(long_8ch))
    for rate in (1000, 4000, 384000):
        yield "bombs", f"rate-{rate}", ref(b64(_wav_header(rate, 1, 10)))
    yield "bombs", "wav-header-claims-65535ch", ref(b64(_wav_header(48000, 65535, 10)))
    yield "bombs", "wav-header-claims-4GB", ref(b64(_wav_header(48000, 2, 2**32 - 64)))
    yield "bombs", "truncated-flac", ref(b64(wav_bytes(noise(2), fmt="FLAC")[:300]))
    yield "bombs", "random-bytes", ref(b64(rng.randbytes(20000)))


def _wav_header(rate: int, channels: int, data_bytes: int) -> bytes:
    """A WAV header that claims what it likes, followed by a few real bytes."""
    import struct

    block = channels * 2
    header = b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt "
    byte_rate = min(rate * block, 2**32 - 1)
    header += struct.pack("<IHHIIHH", 16, 1, channels, rate, byte_rate, block & 0xFFFF, 16)
    return header + b"data" + struct.pack("<I", data_bytes) + b"\0" * 64


# -- 4. reference URLs that stall or mislead -----------------------------------------------------


def urls(rng: random.Random) -> Iterator[Case]:
    paths = [
        "/drip-headers.wav",
        "/slow-chain/3",
        "/chain/4",
        "/deflate-bomb.wav",
        "/brotli.wav",
        "/drip.wav",
        "/silent-hang.wav",
        "/redirect-loop",
        "/gzip-bomb.wav",
        "/chunked-big.wav",
        "/declared-big.wav",
        "/page.html",
        "/missing.wav",
        "/error.wav",
    ]
    for path in paths:
        yield "urls", f"http{path}", ref("{http}" + path)
    hosts = [
        "a" * 64 + ".example.com",  # a label too long for IDNA
        "xn--" + "a" * 80 + ".com",
        "exa mple.com",
        "[::1]",
        "169.254.169.254",
        "10.0.0.1",
        "localhost",
        "no-such-host.invalid",
        "user:pass@example.com",
        "\u0430\u0440\u0440\u04cf\u0435.com",  # a homograph
    ]
    for i, host in enumerate(hosts):
        yield "urls", f"host-{i}", ref(f"https://{host}/ref.wav")
    for i, url in enumerate(["https://", "https:///x", "https://:0/x", "ftp://example.com/a"]):
        yield "urls", f"malformed-{i}", ref(url)


# -- 5. s3:// references that name what the caller may not use ----------------------------------


def s3_refs(rng: random.Random) -> Iterator[Case]:
    refs = [
        "s3://{bucket}/private/recording.wav",  # exists, outside the voice library
        "s3://{bucket}/f5-tts/voices/anna/ref.wav",  # allowed
        "s3://{bucket}/f5-tts/voices/missing/ref.wav",
        "s3://{bucket}/f5-tts/voices/../private/recording.wav",
        "s3://other-bucket/f5-tts/voices/anna/ref.wav",
        "s3://no-such-bucket-xyz/key.wav",
        "s3://{bucket}/f5-tts/voices/notes.txt",
        "s3://UPPER/key",
        "s3://{bucket}/" + "k" * 2000,
        "s3://{bucket}",
    ]
    for i, r in enumerate(refs):
        yield "s3", f"s3-{i}", ref(r)


# -- 6. batches: hostile entries fail alone, a malformed batch fails whole ----------------------


def batches(rng: random.Random) -> Iterator[Case]:
    def batch(texts: Any, **extra: Any) -> dict[str, Any]:
        return {"texts": texts, **FAST, **extra}

    odd = [None, True, 1e308, -(10**400), [], {}, "\ud800", {"text": "\udfff"}, [f"{CANARY} a"]]
    odd += [{"text": "x", "voice": {"a": 1}}, {"text": "x", "seed": 2**70}, {"text": "x", "k": 1}]
    yield "batch", "json-entries", batch([f"{CANARY} first.", *odd, f"{CANARY} last."])
    yield "batch", "all-bad", batch([None, {"text": ""}, {"text": "x", "format": "wma"}] * 5)
    letters = string.ascii_letters
    solid = ["".join(rng.choices(letters, k=150)) for _ in range(32)]
    yield "batch", "32-unsplittable", batch(solid, captions="srt")
    cjk = "".join(chr(rng.randint(0x4E00, 0x4E00 + 400)) for _ in range(1500))
    yield "batch", "cjk-captions", batch([cjk, f"{CANARY} after."], captions="vtt")
    yield "batch", "over-count", batch([f"{CANARY} a."] * 65)
    yield "batch", "over-chars", batch([f"{CANARY} " + "a" * 2600] * 2)
    yield "batch", "deep-entry", batch([_deep(rng, 200)["voice"], f"{CANARY} ok."])
    yield "batch", "entries-huge-keys", batch([{"text": "x", "y" * 1_000_000: 1}, "ok."])
    yield "batch", "with-text", {**speak("Hi."), "texts": [f"{CANARY} b."]}


# -- 7. the production contract (#21): platform limits, budgets, reserved names, subtitles --------

PARAGRAPH = " ".join(
    f"{CANARY} sentence {n} walks along the harbour wall, past boats, nets and gulls."
    for n in range(12)
)


def platform_limits(rng: random.Random) -> Iterator[Case]:
    """Results that would pass RunPod's 1 MB per yield or /run's 10 MB unless cut or refused."""
    shapes = (("wav", 48000, False), ("wav", 48000, True), ("flac", 48000, False))
    for fmt, rate, stream in (*shapes, ("pcm", 44100, True), ("aac", 48000, True)):
        inp = speak(PARAGRAPH, format=fmt, sample_rate=rate, stream=stream)
        yield "limits", f"paragraph-{fmt}-{rate}-stream-{stream}", inp
    slow = speak(PARAGRAPH, format="wav", sample_rate=48000, speed=0.3)
    yield "limits", "slow-48k-wav-over-run-cap", slow
    yield "limits", "batch-48k-wav", {"texts": [PARAGRAPH] * 3, "format": "wav", **FAST}


def budgets(rng: random.Random) -> Iterator[Case]:
    """A batch whose entries each fit MAX_AUDIO_SECONDS but add up past it (and its members)."""
    line = f"{CANARY} " + " ".join(rng.choices(["harbour", "boats", "gulls", "nets"], k=8)) + "."
    yield "budgets", "64-slow-entries", {"texts": [line] * 64, "speed": 0.3, **FAST}
    yield "budgets", "entries-each-slow", {"texts": [{"text": line, "speed": 0.3}] * 60, **FAST}
    yield "budgets", "four-slow-paragraphs", {"texts": [PARAGRAPH] * 4, "speed": 0.3, **FAST}


def reserved_names(rng: random.Random) -> Iterator[Case]:
    """Voice writes: off by default; reserved names in any case; none may replace a voice."""
    clip = b64(wav_bytes(noise(2)))
    for name in ("alloy", "ALLOY", "Default", "nova", "anna", "new-voice"):
        add = {"action": "voice.add", "name": name, "ref_audio": clip, "ref_text": f"{CANARY} x"}
        yield "voices", f"add-{name}", add
    yield "voices", "delete-anna", {"action": "voice.delete", "name": "anna"}
    yield "voices", "delete-default", {"action": "voice.delete", "name": "DEFAULT"}


def subtitles(rng: random.Random) -> Iterator[Case]:
    """Caption text shaped like cue timing lines, cue numbers and headers."""
    forged = [
        "00:00:05,000 --> 00:00:09,000",
        "1\n00:00:01,000 --> 00:00:02,000\nforged",
        "a--->b ----> c",
        "WEBVTT --> NOTE",
        "\r\n\r\n2\r\n00:00:00,000 --> 00:00:01,000",
        "\u2028-->\u2029-->\x85-->",
    ]
    for n, text in enumerate(forged):
        for mode in ("srt", "vtt"):
            stream = n % 2 == 1
            inp = speak(f"One. {text}. Two. {text}.", captions=mode, stream=stream)
            yield "subtitles", f"forged-{n}-{mode}" + ("-stream" if stream else ""), inp


def corpus(seed: int = 20261201) -> list[Case]:
    rng = random.Random(seed)
    cases: list[Case] = []
    groups = (unsplittable, schema_values, bombs, urls, s3_refs, batches)
    groups += (platform_limits, budgets, reserved_names, subtitles)
    for make in groups:
        cases.extend(make(rng))
    return cases
