"""The engine with the demo model: real f5-tts code paths, random weights."""

import numpy as np
import pytest

from engine import F5TTSEngine, SynthesisParams
from errors import InvalidInput, ModelError
from voices import default_voice

FAST = SynthesisParams(seed=7, nfe_step=4)


def test_loads_the_demo_model_on_cpu(engine):
    assert engine.spec.name == "demo" and engine.device.type == "cpu"
    assert engine.sample_rate == 24000


def test_output_is_finite_mono_24k(engine):
    audio = engine.synthesize("A short sentence to speak.", default_voice(), FAST)
    assert audio.sample_rate == 24000 and audio.samples.ndim == 1
    assert audio.samples.dtype == np.float32 and np.isfinite(audio.samples).all()
    assert 0.5 < audio.duration_s < 10


def test_same_seed_same_samples_other_seed_other_samples(engine):
    voice = default_voice()
    a = engine.synthesize("Determinism matters.", voice, FAST)
    b = engine.synthesize("Determinism matters.", voice, FAST)
    c = engine.synthesize("Determinism matters.", voice, SynthesisParams(seed=8, nfe_step=4))
    assert np.array_equal(a.samples, b.samples)
    assert not np.array_equal(a.samples, c.samples)


def test_output_depends_on_the_text(engine):
    voice = default_voice()
    a = engine.synthesize("The first text here.", voice, FAST)
    b = engine.synthesize("The other text here.", voice, FAST)
    assert a.samples.shape == b.samples.shape and not np.allclose(a.samples, b.samples)


def test_duration_grows_with_text_and_long_text_is_chunked(engine):
    voice = default_voice()
    short = engine.synthesize("One sentence.", voice, FAST)
    page = " ".join(["This sentence is part of a longer page of text to speak."] * 12)
    long = engine.synthesize(page, voice, FAST)
    assert long.duration_s > 5 * short.duration_s
    assert long.duration_s > 30  # beyond one generation: chunked and cross-faded


def test_speed_shortens_audio(engine):
    voice = default_voice()
    text = "Speed changes how long this sentence takes."
    slow = engine.synthesize(text, voice, SynthesisParams(seed=1, nfe_step=2, speed=0.5))
    fast = engine.synthesize(text, voice, SynthesisParams(seed=1, nfe_step=2, speed=2.0))
    assert slow.duration_s > 2 * fast.duration_s


def test_text_with_nothing_to_speak(engine):
    with pytest.raises(InvalidInput):
        engine.synthesize("   ", default_voice(), FAST)


def test_missing_model_dir_is_a_model_error(tmp_path):
    with pytest.raises(ModelError):
        F5TTSEngine.load(tmp_path, device="cpu")


def test_stream_pieces_concatenate_to_the_full_utterance(engine):
    voice = default_voice()
    text = " ".join(["Streaming splits this page into several chunks of speech."] * 8)
    params = SynthesisParams(seed=5, nfe_step=2)
    pieces = list(engine.synthesize_stream(text, voice, params))
    assert len(pieces) == len(engine.split_text(text, voice, 1.0)) > 1
    full = engine.synthesize(text, voice, params)
    assert np.array_equal(np.concatenate([p.samples for p in pieces]), full.samples)
