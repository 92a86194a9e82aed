"""A worker set up as a voice agent's operator runs it, for the voice-agent framework tests, and
what those tests check a framework's audio against.

LiveKit Agents is tested in tests/integration/test_voice_agents.py (`make test`), Pipecat in
tests/agents/ (its own environment, `make test-agents`: decision 031). Both drive the
framework's own OpenAI TTS service, unmodified, against `agent_worker`: the HTTP mode in this
process (testing/http.py) on the session's demo engine, configured as docs/http.md's
voice-agent section says: HTTP_AUTH_TOKEN (the framework's `api_key`), a voice library on a moto
S3 server holding `narrator` (added over /runsync, as an operator would), VOICE_ALIASES mapping
the stock name `alloy` to it (Pipecat sends only stock names), and DEFAULT_QUALITY=fast (neither
framework can send `quality`). This module never imports a framework: each lives in its own
test environment.

The demo model's audio is noise, so what is compared is the length of what the framework heard
against the length the worker makes for the same text and voice (the same whatever the seed,
which a framework cannot send): a voice is told apart by its pace, which comes from its
reference (seconds of reference per character of its transcript).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from f5worker.job.voices import VoiceLibrary
from f5worker.serve.http.service import Service
from f5worker.startup.compose import make_worker
from f5worker.testing.audio import noise, wav_b64
from f5worker.testing.http import http_settings, serving
from f5worker.testing.s3_servers import client_for, moto_server

TOKEN = "agent-token"  # HTTP_AUTH_TOKEN: what the framework is given as its OpenAI api_key
NARRATOR = "narrator"
ALIASES = (("alloy", NARRATOR),)  # VOICE_ALIASES=alloy=narrator
RATE = 24000  # the pcm the worker sends and both frameworks' OpenAI services expect
BUCKET = "agents"
# 1.5 s of reference for 22 characters: the narrator speaks about twice as fast as the default
# voice, so a request that reached it is told from one that did not by its length alone.
NARRATOR_CLIP = (noise(1.5, RATE, seed=5), "I narrate every story.")


@dataclass(frozen=True)
class Heard:
    """What a framework produced: its frames' rates and channel counts, and the samples."""

    rates: frozenset[int]
    channels: frozenset[int]
    samples: np.ndarray  # int16, mono

    @property
    def seconds(self) -> float:
        return self.samples.size / RATE

    @property
    def rms_dbfs(self) -> float:
        """Loudness of the whole; digital silence is -inf."""
        power = float(np.mean(np.square(self.samples.astype(np.float64) / 32768.0)))
        return 10 * np.log10(power) if power > 0 else float("-inf")


def heard(frames: list[tuple[int, int, bytes]]) -> Heard:
    """(sample rate, channels, 16-bit little-endian pcm) per frame -> what was heard."""
    pcm = b"".join(data for _, _, data in frames)
    return Heard(
        rates=frozenset(rate for rate, _, _ in frames),
        channels=frozenset(channels for _, channels, _ in frames),
        samples=np.frombuffer(pcm, dtype="<i2"),
    )


@dataclass(frozen=True)
class AgentWorker:
    url: str  # the server's root; a framework's base_url is url + "/v1"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def speech_seconds(self, text: str, voice: str, speed: float = 1.0) -> float:
        """How long the worker makes `text` in `voice` (a library voice or `default`), from a
        plain pcm request: the length a framework must hear for the same input."""
        body = {"input": text, "voice": voice, "response_format": "pcm", "speed": speed}
        response = httpx.post(
            f"{self.base_url}/audio/speech", json=body, headers=_auth(), timeout=120
        )
        response.raise_for_status()
        return len(response.content) / 2 / RATE

    def audio_seconds_by_voice(self) -> dict[str, float]:
        """f5worker_audio_seconds_total summed by its `voice` class (`alias`, `library`,
        `default`, `ref_audio`): which way the worker resolved the voices it was sent."""
        text = httpx.get(f"{self.url}/metrics", headers=_auth(), timeout=30).text
        totals: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "f5worker_audio_seconds_total":
                    kind = sample.labels["voice"]
                    totals[kind] = totals.get(kind, 0.0) + sample.value
        return totals


@contextlib.contextmanager
def agent_worker(engine: Any, **overrides: Any) -> Iterator[AgentWorker]:
    """The HTTP mode on `engine`, configured for voice agents (see the module's docstring)."""
    with moto_server(BUCKET) as s3_url:
        settings = http_settings(
            http_auth_token=TOKEN,
            voice_aliases=ALIASES,
            voice_writes=True,  # so that the operator's voice.add below may add `narrator`
            default_quality="fast",
            **overrides,
        )
        voices = VoiceLibrary(
            BUCKET, "f5-tts", client_factory=lambda: client_for(s3_url), writes=True
        )
        service = Service(settings)
        service.ready(make_worker(engine, settings, voices=voices))
        with serving(service) as url:
            _add_narrator(url)
            yield AgentWorker(url)


def _add_narrator(url: str) -> None:
    clip, text = NARRATOR_CLIP
    job = {"action": "voice.add", "name": NARRATOR, "ref_audio": wav_b64(clip, RATE)}
    response = httpx.post(
        f"{url}/runsync", json={"input": {**job, "ref_text": text}}, headers=_auth(), timeout=60
    )
    response.raise_for_status()
    [item] = response.json()["output"]
    if "error" in item:
        raise RuntimeError(f"voice.add failed: {item['error']}")


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}
