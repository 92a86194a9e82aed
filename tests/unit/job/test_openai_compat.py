"""The OpenAI speech shape RunPod forwards, mapped onto the native request."""

import pytest

from f5worker.errors import InvalidInput
from f5worker.job.schema import TTSRequest, parse_request

ROUTE = "/v1/audio/speech"


def openai(**body):
    return {"openai_route": ROUTE, "openai_input": body}


MAPPED = [
    (
        openai(model="tts-1", input="Hello.", voice="alloy"),
        TTSRequest(text="Hello.", voice="alloy", format="mp3", voice_fallback=True),
    ),
    (
        openai(model="tts-1-hd", input="Hi.", voice="Nova", response_format="wav", speed=1.5),
        TTSRequest(text="Hi.", voice="nova", format="wav", speed=1.5, voice_fallback=True),
    ),
    (
        openai(input="Hi.", voice="anna", response_format="opus"),
        TTSRequest(text="Hi.", voice="anna", format="opus"),
    ),
    (openai(input="Hi.", response_format="pcm"), TTSRequest(text="Hi.", format="pcm")),
    # OpenAI's dated snapshots, which the openai package lists: the default model too
    (
        openai(model="gpt-4o-mini-tts-2025-12-15", input="Hi.", response_format="pcm"),
        TTSRequest(text="Hi.", format="pcm"),
    ),
    (openai(model="TTS-1-HD-1106", input="Hi."), TTSRequest(text="Hi.", format="mp3")),
    # ... but only their shape: any other name is the operator's model (or MODEL_NOT_FOUND)
    (
        openai(model="gpt-4o-mini-tts-latest", input="Hi."),
        TTSRequest(text="Hi.", format="mp3", model="gpt-4o-mini-tts-latest"),
    ),
    # OpenAI's custom-voice object names a library voice, as the string does
    (
        openai(input="Hi.", voice={"id": "narrator"}),
        TTSRequest(text="Hi.", voice="narrator", format="mp3"),
    ),
    (
        openai(input="Hi.", voice={"id": "Alloy"}),
        TTSRequest(text="Hi.", voice="alloy", format="mp3", voice_fallback=True),
    ),
    (openai(input="Hi.", response_format="FLAC"), TTSRequest(text="Hi.", format="flac")),
    (openai(input="Hi.", response_format="aac"), TTSRequest(text="Hi.", format="aac")),
    (
        openai(input="Hi.", instructions="Speak softly.", seed=7, quality="fast"),
        TTSRequest(text="Hi.", format="mp3", seed=7, quality="fast"),
    ),
    (
        openai(input="Hi.", voice="alloy", ref_audio="UklGRg==", ref_text="Words."),
        TTSRequest(text="Hi.", format="mp3", ref_audio="UklGRg==", ref_text="Words."),
    ),
    (  # extra_body={"ref_audio": ...} alone: the worker transcribes the clip
        openai(input="Hi.", voice="alloy", ref_audio="UklGRg=="),
        TTSRequest(text="Hi.", format="mp3", ref_audio="UklGRg=="),
    ),
    (
        openai(input="Hi.", voice="nova", ref_audio="UklGRg==", ref_language="DE"),
        TTSRequest(text="Hi.", format="mp3", ref_audio="UklGRg==", ref_language="de"),
    ),
    (
        {"openai_route": ROUTE + "/", "openai_input": {"input": "Hi.", "voice": "default"}},
        TTSRequest(text="Hi.", voice="default", format="mp3"),
    ),
]


@pytest.mark.parametrize(("raw", "expected"), MAPPED)
def test_openai_input_maps_onto_the_native_request(raw, expected):
    assert parse_request(raw) == expected


BAD = [
    (
        {"openai_route": "/v1/chat/completions", "openai_input": {}},
        "INVALID_INPUT",
        "serves /v1/audio/speech",
    ),
    ({"openai_route": "/v1/audio/transcriptions"}, "INVALID_INPUT", "not supported"),
    ({"openai_route": 5, "openai_input": {}}, "INVALID_INPUT", "openai_route must be a string"),
    ({"openai_input": {"input": "Hi."}}, "INVALID_INPUT", "openai_route must be a string"),
    ({"openai_route": ROUTE}, "INVALID_INPUT", "openai_input must be a JSON object"),
    ({"openai_route": ROUTE, "openai_input": "Hi."}, "INVALID_INPUT", "JSON object"),
    ({**openai(input="Hi."), "text": "x"}, "INVALID_INPUT", "beside openai_route: text"),
    (openai(input="Hi.", instructions=["Whisper."]), "INVALID_INPUT", "instructions must be"),
    (openai(input="Hi.", style="calm"), "INVALID_INPUT", "openai_input field(s): style"),
    (openai(input="Hi.", stream_format="sse"), "INVALID_INPUT", "stream_format"),
    (openai(input="Hi.", response_format="aiff"), "UNSUPPORTED_FORMAT", "response_format"),
    (openai(input="Hi.", seed=-1), "INVALID_INPUT", "seed must be between"),
    (openai(input="Hi.", ref_language="en"), "INVALID_INPUT", "only used with ref_audio"),
    (openai(input="Hi.", ref_audio="UklGRg==", ref_language="x"), "INVALID_INPUT", "language"),
    (openai(input="Hi.", response_format="ogg"), "UNSUPPORTED_FORMAT", "response_format"),
    (openai(input="Hi.", response_format=3), "INVALID_INPUT", "format must be a string"),
    (openai(input="Hi.", speed=4.0), "INVALID_INPUT", "speed must be between 0.3 and 3"),
    (openai(input="Hi.", speed="fast"), "INVALID_INPUT", "speed must be a number"),
    (openai(input="Hi.", model=7), "INVALID_INPUT", "model must be a string"),
    (openai(input="Hi.", model="m" * 301), "INVALID_INPUT", "model must be a string"),
    (openai(voice="alloy"), "INVALID_INPUT", "text is required"),
    (openai(input=""), "INVALID_INPUT", "text must not be empty"),
    (openai(input="x" * 5001), "TEXT_TOO_LONG", "text is longer than 5000"),
    (openai(input="Hi.", voice=["alloy"]), "INVALID_INPUT", "voice must be a string"),
    (openai(input="Hi.", voice="../x"), "INVALID_INPUT", "voice must be 1-64"),
    (openai(input="Hi.", voice={"id": 5}), "INVALID_INPUT", 'object {"id": "<voice name>"}'),
    (openai(input="Hi.", voice={"name": "x"}), "INVALID_INPUT", "voice must be a string or"),
    (openai(input="Hi.", voice={"id": "../x"}), "INVALID_INPUT", "voice must be 1-64"),
]


@pytest.mark.parametrize(("raw", "code", "fragment"), BAD)
def test_bad_openai_input_gets_its_code(raw, code, fragment):
    with pytest.raises(InvalidInput) as info:
        parse_request(raw)
    assert info.value.code == code
    assert fragment in info.value.message


def test_verify_is_an_extension_field():
    req = parse_request(openai(input="Hi.", verify=True))
    assert req.verify is True and req.text == "Hi."
