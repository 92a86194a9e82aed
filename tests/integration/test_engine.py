"""The engine with the demo model: real f5-tts code paths, random weights."""

from pathlib import Path

import numpy as np
import pytest
import torch

from f5worker.audio import Audio, Voice
from f5worker.engine.f5tts import F5TTSEngine
from f5worker.engine.plan import BatchPlan, SynthesisParams
from f5worker.errors import InvalidInput, ModelError
from f5worker.job.voices import default_voice

FAST = SynthesisParams(seed=7, nfe_step=4)
PAGE = " ".join(["Streaming splits this page into several chunks of speech."] * 8)
BATCHED = BatchPlan(max_batch=8, first_chunk_alone=True)


@pytest.fixture(scope="module")
def batched_engine(demo_model_dir: Path) -> F5TTSEngine:
    """The GPU default plan (padded batches, first chunk alone), here on the CPU."""
    return F5TTSEngine.load(demo_model_dir, device="cpu", plan=BATCHED)


def test_loads_the_demo_model_on_cpu(engine):
    assert engine.spec.name == "demo" and engine.device.type == "cpu"
    assert engine.sample_rate == 24000
    assert engine.plan == BatchPlan(max_batch=2, concurrent=True), "CPU default (measured)"


def test_output_is_finite_mono_24k(engine):
    audio = engine.synthesize("A short sentence to speak.", default_voice(), FAST)
    assert audio.sample_rate == 24000 and audio.samples.ndim == 1
    assert audio.samples.dtype == np.float32 and np.isfinite(audio.samples).all()
    assert 0.5 < audio.duration_s < 10


def resampled_voice(rate: int) -> Voice:
    """The default voice as a reference recorded at another sample rate."""
    import soxr

    voice = default_voice()
    samples = soxr.resample(voice.audio.samples, voice.audio.sample_rate, rate).astype(np.float32)
    return Voice(Audio(samples, rate), voice.text, "resampled")


def quiet_voice() -> Voice:
    """Below upstream's target loudness (RMS 0.1): normalised in, scaled back out."""
    voice = default_voice()
    return Voice(Audio(voice.audio.samples * 0.05, voice.audio.sample_rate), voice.text, "quiet")


UPSTREAM_CASES = {
    "defaults": ({}, default_voice),
    "cfg 0": ({"cfg_strength": 0.0}, default_voice),
    "speed 1.6": ({"speed": 1.6}, default_voice),
    "speed 0.7, sway 0": ({"speed": 0.7, "sway_sampling_coef": 0.0}, default_voice),
    "16 kHz reference": ({}, lambda: resampled_voice(16000)),
    "quiet reference": ({}, quiet_voice),
    "7 steps (quality fast, pruned schedule)": ({"nfe_step": 7}, default_voice),
}


@pytest.mark.parametrize("case", list(UPSTREAM_CASES))
def test_one_chunk_matches_upstream_infer_batch_process_bit_for_bit(engine, case):
    """The restated sampler (sampler.py: own RNG, own Euler loop, cached reference) computes
    exactly what upstream's pipeline computes for the same seed and settings."""
    from f5_tts.infer.utils_infer import infer_batch_process

    overrides, make_voice = UPSTREAM_CASES[case]
    voice, text, seed = make_voice(), "Exactly what upstream computes.", 11
    params = SynthesisParams(**{"seed": seed, "nfe_step": 4, **overrides})
    ours = engine.synthesize(text, voice, params)
    torch.manual_seed(seed)  # upstream draws its noise from the global RNG
    ref = (torch.from_numpy(voice.audio.samples).unsqueeze(0), voice.audio.sample_rate)
    theirs, rate, _ = next(
        infer_batch_process(
            ref,
            voice.text + " ",  # what upstream's preprocess_ref_audio_text returns
            [text],
            engine.model,
            engine.vocoder,
            nfe_step=params.nfe_step,
            cfg_strength=params.cfg_strength,
            sway_sampling_coef=params.sway_sampling_coef,
            speed=params.speed,
            progress=None,
            device="cpu",
        )
    )
    assert rate == ours.sample_rate
    assert np.array_equal(ours.samples, theirs)


@pytest.mark.parametrize("plan", ["side by side", "batched"])
def test_same_seed_same_samples_other_seed_other_samples(engine, batched_engine, plan):
    eng = engine if plan == "side by side" else batched_engine
    voice, params = default_voice(), SynthesisParams(seed=7, nfe_step=2)
    a = eng.synthesize(PAGE, voice, params)
    b = eng.synthesize(PAGE, voice, params)
    c = eng.synthesize(PAGE, voice, SynthesisParams(seed=8, nfe_step=2))
    assert np.array_equal(a.samples, b.samples)
    assert not np.array_equal(a.samples, c.samples)


def test_chunks_side_by_side_are_exactly_chunks_one_at_a_time(engine):
    """The CPU default runs two chunks at a time in threads; each is computed alone."""
    voice = default_voice()
    assert len(engine.split_text(PAGE, voice, 1.0)) >= 3
    one_by_one = engine.with_plan(BatchPlan(max_batch=1)).synthesize(PAGE, voice, FAST)
    side_by_side = engine.synthesize(PAGE, voice, FAST)
    assert np.array_equal(side_by_side.samples, one_by_one.samples)


def test_batched_chunks_sound_as_they_would_one_at_a_time(engine, batched_engine):
    """Padding is masked out of attention, so a padded batch changes only float rounding."""
    voice = default_voice()
    chunks = engine.split_text(PAGE + " And a short end.", voice, 1.0)
    assert len(chunks) > 2 and len({len(c) for c in chunks}) > 1, "needs unequal lengths"
    one_by_one = engine.synthesize(PAGE + " And a short end.", voice, FAST)
    batched = batched_engine.synthesize(PAGE + " And a short end.", voice, FAST)
    assert one_by_one.samples.shape == batched.samples.shape
    scale = float(np.abs(one_by_one.samples).max())
    np.testing.assert_allclose(batched.samples, one_by_one.samples, rtol=0, atol=1e-4 * scale)


def test_each_chunk_gets_its_own_noise(engine):
    """Identical chunks in one request must not come out identical (upstream's batch seeds
    every item alike)."""
    voice = default_voice()
    ref = engine._reference(voice)
    seeds = [FAST.seed, FAST.seed + 1]
    first, second = engine._generate_group(ref, ["Same words twice."] * 2, FAST, seeds)
    assert first.shape == second.shape and not np.array_equal(first, second)


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


@pytest.mark.parametrize(
    ("model_dir", "kwargs", "problem"),
    [
        ("empty", {}, "no valid model.json"),
        ("demo", {"dtype": "float8"}, "unknown dtype"),
    ],
)
def test_bad_load_arguments_are_model_errors(tmp_path, demo_model_dir, model_dir, kwargs, problem):
    path = demo_model_dir if model_dir == "demo" else tmp_path
    with pytest.raises(ModelError, match=problem):
        F5TTSEngine.load(path, device="cpu", **kwargs)


@pytest.mark.parametrize("plan", ["side by side", "batched"])
def test_stream_pieces_concatenate_to_the_full_utterance(engine, batched_engine, plan):
    eng = engine if plan == "side by side" else batched_engine
    voice = default_voice()
    params = SynthesisParams(seed=5, nfe_step=2)
    pieces = list(eng.synthesize_stream(PAGE, voice, params))
    assert len(pieces) == len(eng.split_text(PAGE, voice, 1.0)) > 1
    full = eng.synthesize(PAGE, voice, params)
    assert np.array_equal(np.concatenate([p.samples for p in pieces]), full.samples)


@pytest.mark.parametrize(
    ("plan", "chunks", "groups"),
    [
        (BatchPlan(max_batch=1), 3, [[0], [1], [2]]),
        (BatchPlan(max_batch=8, first_chunk_alone=True), 1, [[0]]),
        (BatchPlan(max_batch=8, first_chunk_alone=True), 5, [[0], [1, 2, 3, 4]]),
        (BatchPlan(max_batch=8, first_chunk_alone=False), 5, [[0, 1, 2, 3, 4]]),
        (BatchPlan(max_batch=2, first_chunk_alone=True), 6, [[0], [1, 2], [3, 4], [5]]),
        (BatchPlan(max_batch=2, concurrent=True), 4, [[0], [1, 2], [3]]),
    ],
)
def test_batch_plan_groups(plan, chunks, groups):
    assert [list(g) for g in plan.groups(chunks)] == groups


def test_reference_is_prepared_once_per_voice(demo_model_dir):
    eng = F5TTSEngine.load(demo_model_dir, device="cpu", ref_cache_size=1)
    voice = default_voice()
    other = Voice(voice.audio, "Another transcript of the same audio.")
    for v, expected in [(voice, (0, 1)), (voice, (1, 1)), (other, (1, 2)), (voice, (1, 3))]:
        eng.synthesize("Cache me.", v, SynthesisParams(seed=1, nfe_step=1))
        assert eng.reference_cache_stats == expected  # size 1: `other` evicted `voice`


def test_bfloat16_runs_on_cpu(demo_model_dir):
    eng = F5TTSEngine.load(demo_model_dir, device="cpu", dtype="bfloat16")
    assert next(eng.model.parameters()).dtype == torch.bfloat16
    audio = eng.synthesize("Half precision.", default_voice(), FAST)
    assert audio.samples.dtype == np.float32 and np.isfinite(audio.samples).all()


def test_model_work_runs_on_the_torch_thread(engine, monkeypatch):
    """Job threads never run torch operators themselves (torch_thread.py): sampling and the
    reference's mel happen on the torch thread, whoever calls."""
    import threading

    from f5worker.engine import f5tts as engine_module
    from f5worker.engine import torch_thread

    seen = []
    for name in ("_sample", "_prepare_reference"):
        original = getattr(engine_module.F5TTSEngine, name)

        def spy(self, *args, _original=original, **kwargs):
            seen.append(torch_thread.is_current())
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(engine_module.F5TTSEngine, name, spy)
    voice = Voice(default_voice().audio, "A reference no other test has prepared.")
    result = []
    job = threading.Thread(
        target=lambda: result.append(engine.synthesize("Spoken from a job thread.", voice, FAST))
    )
    job.start()
    job.join()
    assert result and seen == [True, True]


# -- text upstream's chunker cannot split, and the bound on one request's audio ---------------

UNSPLITTABLE = {
    "no punctuation": " ".join(["word"] * 300),
    "no spaces": "a" * 1200,
    "CJK without punctuation": "中文没有标点符号" * 50,
    "combining marks": "e" + "\u0301" * 3000 + " and more words",
    "one long URL": "https://example.com/" + "path/" * 250,
}


@pytest.mark.parametrize("case", list(UNSPLITTABLE))
def test_text_upstream_cannot_split_is_spoken_in_bounded_chunks(engine, case):
    voice, text = default_voice(), UNSPLITTABLE[case]
    chunks = engine.split_text(text, voice, 1.0)
    per_chunk = [engine.estimate_seconds([c], voice, 1.0) for c in chunks]
    assert max(per_chunk) < 22, "a chunk longer than upstream's generation budget"
    audio = engine.synthesize(text, voice, SynthesisParams(seed=1, nfe_step=1))
    assert np.isfinite(audio.samples).all()
    fades = (len(chunks) - 1) * 0.15
    assert audio.duration_s == pytest.approx(sum(per_chunk) - fades, abs=0.05 * len(chunks))


def test_audio_over_the_limit_is_refused_before_any_model_work(engine):
    """MAX_AUDIO_SECONDS bounds a job's time and memory; the refusal is not retryable."""
    import copy
    import time

    from f5worker.errors import TextTooLong

    limited = copy.copy(engine)
    limited.max_audio_s = 30
    started = time.perf_counter()
    with pytest.raises(TextTooLong, match="limit is 30 s") as info:
        limited.synthesize("A sentence of ordinary length. " * 20, default_voice(), FAST)
    assert time.perf_counter() - started < 1 and info.value.retryable is False


def test_a_transcript_far_too_short_for_its_audio_cannot_make_a_huge_chunk(engine):
    """Upstream's rule would give one letter of a one-letter transcript minutes of audio."""
    voice = Voice(default_voice().audio, "A", "sparse")
    chunks = engine.split_text("Hello there, how are you today?", voice, 3.0)
    assert all(engine.estimate_seconds([c], voice, 3.0) <= 30.0 for c in chunks)
