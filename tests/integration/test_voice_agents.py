"""LiveKit Agents' OpenAI TTS plugin (`livekit.plugins.openai.TTS`), unmodified, as the TTS of a
voice agent pointed at the HTTP mode: the snippet of docs/http.md#voice-agent-frameworks.

The plugin sends `model` (default gpt-4o-mini-tts), `voice` (default `ash`, any name passes),
`response_format` (default mp3), `speed` (always, 1.0) and `stream_format`: `sse` for every model
but tts-1/tts-1-hd, which get the audio body; it decodes what comes back into 24 kHz mono frames
(rtc.AudioFrame). The worker is testing/agents.py's: the bearer token, a library voice
`narrator`, VOICE_ALIASES=alloy=narrator. The demo model's audio is noise: what is checked is
the frames' rate and channels, that they are not silent, and that their length is what the
worker makes for that text and voice (a voice has its own pace). Pipecat: tests/agents/.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from livekit.agents import APIStatusError
from livekit.plugins import openai as livekit_openai

from f5worker.testing.agents import NARRATOR, RATE, TOKEN, AgentWorker, Heard, agent_worker, heard

pytestmark = pytest.mark.slow  # a server and an S3 server

TEXT = "Hello from the agent. The worker speaks this for LiveKit."
# mp3 and opus frames, and the decoder's priming, shift the decoded length by a frame or two.
CODEC_SLACK_S = 0.08


@pytest.fixture(scope="module")
def agent(engine) -> Iterator[AgentWorker]:
    with agent_worker(engine) as worker:
        yield worker


def synthesize(agent: AgentWorker, text: str, api_key: str = TOKEN, **options: Any) -> Heard:
    """What the plugin's ChunkedStream yields for `text`, as an AgentSession would play it."""

    async def frames() -> list[tuple[int, int, bytes]]:
        tts = livekit_openai.TTS(base_url=agent.base_url, api_key=api_key, **options)
        try:
            return [
                (event.frame.sample_rate, event.frame.num_channels, bytes(event.frame.data))
                async for event in tts.synthesize(text)
            ]
        finally:
            await tts.aclose()

    got = asyncio.run(frames())
    # When the audio ends on a frame boundary, LiveKit ends the segment with a marker of its own:
    # 10 ms of zeros ("synthetic silence", not counted in its duration). Not the worker's audio.
    if got and got[-1][2] == bytes(2 * RATE // 100):
        got.pop()
    return heard(got)


@pytest.mark.parametrize(
    "options",
    [
        {},  # the plugin's defaults: gpt-4o-mini-tts, `ash`, mp3 in OpenAI's SSE events
        {"model": "tts-1", "response_format": "pcm"},  # raw 24 kHz pcm in the audio body
        {"response_format": "opus"},
        {"model": "gpt-4o-mini-tts-2025-12-15", "response_format": "wav"},  # a dated snapshot
    ],
    ids=["defaults-mp3-sse", "tts-1-pcm-audio", "opus-sse", "snapshot-wav-sse"],
)
def test_livekit_hears_the_workers_audio_at_24khz(agent, options):
    got = synthesize(agent, TEXT, **options)
    assert got.rates == {RATE} and got.channels == {1}
    assert got.rms_dbfs > -40, got.rms_dbfs  # sound, not silence or a stray header
    # `ash` is a stock name without an alias: the default voice
    expected = agent.speech_seconds(TEXT, "default")
    assert got.seconds == pytest.approx(expected, abs=CODEC_SLACK_S)


def test_a_stock_name_the_operator_aliased_speaks_with_the_library_voice(agent):
    """VOICE_ALIASES=alloy=narrator: `alloy` is heard at the narrator's pace, not the default
    voice's, and the worker counts the audio as an alias's."""
    narrator_s = agent.speech_seconds(TEXT, NARRATOR)
    default_s = agent.speech_seconds(TEXT, "default")
    assert abs(narrator_s - default_s) > 0.5, (narrator_s, default_s)  # the voices tell apart
    before = agent.audio_seconds_by_voice().get("alias", 0.0)
    got = synthesize(agent, TEXT, voice="alloy", response_format="pcm")
    assert got.rates == {RATE} and got.rms_dbfs > -40
    assert got.seconds == pytest.approx(narrator_s, abs=1 / RATE)
    counted = agent.audio_seconds_by_voice()["alias"] - before
    assert counted == pytest.approx(got.seconds, abs=0.01)


def test_livekit_names_a_library_voice_directly_and_its_speed_is_applied(agent):
    """LiveKit passes any voice name (no alias needed) and always sends `speed`."""
    got = synthesize(agent, TEXT, voice=NARRATOR, speed=1.5, response_format="pcm")
    assert got.seconds == pytest.approx(agent.speech_seconds(TEXT, NARRATOR, 1.5), abs=1 / RATE)
    assert got.seconds < agent.speech_seconds(TEXT, NARRATOR) / 1.3


def test_a_wrong_api_key_is_refused_and_not_retried(agent):
    """The plugin's api_key is the worker's HTTP_AUTH_TOKEN: a wrong one is a 401, which LiveKit
    does not retry (it retries 408, 429 and 5xx)."""
    with pytest.raises(APIStatusError) as info:
        synthesize(agent, TEXT, api_key="wrong")
    assert info.value.status_code == 401 and not info.value.retryable
