import base64
import io

import numpy as np
import pytest
import soundfile as sf

from audio import Audio
from errors import BadRefAudio
from voices import MAX_REF_SECONDS, default_voice, prepare_reference, voice_from_base64


def wav_b64(samples: np.ndarray, rate: int = 24000) -> str:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV")
    return base64.b64encode(buf.getvalue()).decode()


def noise(seconds: float, rate: int = 24000) -> np.ndarray:
    return (np.random.default_rng(0).standard_normal(int(seconds * rate)) * 0.2).astype(np.float32)


def test_default_voice_is_the_wheels_reference():
    voice = default_voice()
    assert voice.name == "default" and voice.text.startswith("Some call me nature")
    assert voice.audio.sample_rate == 24000 and 3 < voice.audio.duration_s < MAX_REF_SECONDS


def test_reference_is_trimmed_and_clipped():
    rate = 24000
    samples = np.concatenate([np.zeros(rate), noise(20), np.zeros(rate)])
    out = prepare_reference(Audio(samples, rate))
    assert out.duration_s == pytest.approx(MAX_REF_SECONDS + 0.05, abs=0.02)
    assert np.abs(out.samples[:100]).max() > 0  # leading silence removed


@pytest.mark.parametrize(
    ("b64", "fragment"),
    [
        ("@@not base64@@", "not valid base64"),
        (base64.b64encode(b"garbage").decode(), "decoded"),
        (wav_b64(np.zeros(24000, np.float32)), "silent"),
        (wav_b64(noise(0.1)), "shorter"),
    ],
)
def test_bad_reference_audio(b64, fragment):
    with pytest.raises(BadRefAudio) as info:
        voice_from_base64(b64, "text")
    assert fragment in info.value.message


def test_good_reference_keeps_its_rate():
    voice = voice_from_base64(wav_b64(noise(2, 16000), 16000), "hi there")
    assert voice.audio.sample_rate == 16000 and voice.text == "hi there"
