"""Pipecat's OpenAI TTS service (`pipecat.services.openai.tts.OpenAITTSService`), unmodified, as
the TTS of a voice agent pointed at the HTTP mode: the snippet of docs/http.md's voice-agent
section.

Run by `make test-agents` in its own environment (requirements-agents.txt: pipecat-ai pins
older soundfile/soxr/protobuf than the image; decision 031), never by a plain `pytest`.

The service sends `model` (default gpt-4o-mini-tts), `voice` (default `alloy`; it refuses any
name but OpenAI's stock ones before sending), `response_format: "pcm"`, and `instructions` and
`speed` when set; it labels the raw bytes with its own `sample_rate`, which must be 24000. The
service runs inside a Pipecat pipeline (Pipecat's own test harness, `run_test`), fed a
TTSSpeakFrame as an agent's LLM output would be. The worker is testing/agents.py's: the bearer
token, a library voice `narrator`, VOICE_ALIASES=alloy=narrator. The demo model's audio is
noise: what is checked is the frames' rate and channels, that they are not silent, and that
their length is what the worker makes for that text and voice (a voice has its own pace).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from pipecat.frames.frames import ErrorFrame, Frame, TTSAudioRawFrame, TTSSpeakFrame
from pipecat.pipeline.task import PipelineParams
from pipecat.services.openai.tts import OpenAITTSService
from pipecat.tests.utils import run_test

from f5worker.testing.agents import NARRATOR, RATE, TOKEN, AgentWorker, Heard, agent_worker, heard

pytestmark = pytest.mark.slow  # a server and an S3 server

TEXT = "Hello from the agent. The worker speaks this for Pipecat."


@pytest.fixture(scope="module")
def agent(engine) -> Iterator[AgentWorker]:
    with agent_worker(engine) as worker:
        yield worker


def speak(agent: AgentWorker, text: str, **settings: Any) -> tuple[Heard, list[Frame]]:
    """The service in a pipeline, fed `text` as an agent's LLM output: (what it sent
    downstream as audio, what it sent upstream: errors)."""
    tts = OpenAITTSService(
        base_url=agent.base_url,
        api_key=TOKEN,
        sample_rate=RATE,
        settings=OpenAITTSService.Settings(**settings),
    )
    down, up = asyncio.run(
        run_test(
            tts,
            frames_to_send=[TTSSpeakFrame(text)],
            pipeline_params=PipelineParams(audio_out_sample_rate=RATE),
        )
    )
    audio = [
        (frame.sample_rate, frame.num_channels, frame.audio)
        for frame in down
        if isinstance(frame, TTSAudioRawFrame)
    ]
    return heard(audio), list(up)


def test_pipecats_default_voice_alloy_speaks_as_the_aliased_library_voice(agent):
    """The service's defaults (gpt-4o-mini-tts, `alloy`, pcm) on a worker with
    VOICE_ALIASES=alloy=narrator: 24 kHz mono audio at the narrator's pace, counted as an
    alias's audio by the worker."""
    narrator_s = agent.speech_seconds(TEXT, NARRATOR)
    assert abs(narrator_s - agent.speech_seconds(TEXT, "default")) > 0.5  # the voices tell apart
    before = agent.audio_seconds_by_voice().get("alias", 0.0)
    got, errors = speak(agent, TEXT)
    assert errors == []
    assert got.rates == {RATE} and got.channels == {1}
    assert got.rms_dbfs > -40, got.rms_dbfs  # sound, not silence
    assert got.seconds == pytest.approx(narrator_s, abs=1 / RATE)  # every byte, in order
    counted = agent.audio_seconds_by_voice()["alias"] - before
    assert counted == pytest.approx(got.seconds, abs=0.01)


def test_a_stock_name_without_an_alias_is_the_default_voice(agent):
    got, errors = speak(agent, TEXT, voice="nova")
    assert errors == [] and got.rates == {RATE}
    assert got.seconds == pytest.approx(agent.speech_seconds(TEXT, "default"), abs=1 / RATE)


def test_instructions_are_accepted_and_speed_is_applied(agent):
    """Pipecat sends `instructions` and `speed` when set: the first is accepted (F5-TTS takes
    its style from the reference), the second changes the pace."""
    got, errors = speak(agent, TEXT, instructions="Speak warmly.", speed=1.5)
    assert errors == [] and got.rates == {RATE}
    assert got.seconds == pytest.approx(agent.speech_seconds(TEXT, NARRATOR, 1.5), abs=1 / RATE)


def test_pipecat_refuses_a_library_voices_own_name_which_is_why_aliases_exist(agent):
    """Pipecat checks the voice against OpenAI's stock names before sending anything: naming
    the library voice itself never reaches the worker. VOICE_ALIASES is the way in."""
    before = agent.audio_seconds_by_voice()
    got, errors = speak(agent, TEXT, voice=NARRATOR)
    assert got.samples.size == 0
    assert errors and all(isinstance(e, ErrorFrame) for e in errors)
    # the refusal, then Pipecat's own note that the turn made no audio
    assert f"voice {NARRATOR!r} is not supported" in errors[0].error
    assert agent.audio_seconds_by_voice() == before
