"""WhisperTranscriber on a real (random-weight) CTranslate2 Whisper: loading once, decoding,
word times, languages, and every failure as a coded error. Random weights decode garbage, so
the checks are on structure: languages, words in time order inside the audio, the time it took."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from f5worker.asr.engine import RETRY_AFTER_S, WhisperTranscriber, compute_type_for
from f5worker.asr.transcript import Transcriber
from f5worker.errors import ASRUnavailable, InvalidInput, ModelError
from f5worker.testing.tiny_whisper import LANGUAGES


def noise(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * rate)) * 0.1).astype(np.float32)


class Counting:
    """A locate() that counts its calls and can fail."""

    def __init__(self, model_dir: Path | None, error: Exception | None = None) -> None:
        self.model_dir, self.error, self.calls = model_dir, error, 0

    def __call__(self) -> Path:
        self.calls += 1
        time.sleep(0.05)  # a chain that takes a while: concurrent first uses overlap
        if self.error is not None:
            raise self.error
        assert self.model_dir is not None
        return self.model_dir


@pytest.fixture
def asr(tiny_whisper_dir) -> WhisperTranscriber:
    return WhisperTranscriber(lambda: tiny_whisper_dir, "cpu", cpu_threads=1)


def test_it_is_a_transcriber(asr):
    seam: Transcriber = asr
    assert seam is asr


@pytest.mark.parametrize("rate", [24_000, 16_000, 44_100])
def test_word_times_are_ordered_inside_the_audio_at_any_rate(asr, rate):
    started = time.perf_counter()
    got = asr.transcribe(noise(3.0, rate), rate, words=True)
    assert time.perf_counter() - started < 30  # the tiny model: well under a second when idle
    assert got.language in LANGUAGES and got.text and got.seconds > 0
    assert got.words and got.text.split() == [w.text for w in got.words]
    assert all(0.0 <= w.start <= w.end <= 3.0 + 0.5 for w in got.words)
    assert all(a.start <= b.start for a, b in zip(got.words, got.words[1:], strict=False))
    assert all(0.0 <= w.probability <= 1.0 for w in got.words)


def test_a_given_language_is_used_and_words_only_when_asked(asr):
    got = asr.transcribe(noise(2.0, 24_000), 24_000, language="de")
    assert got.language == "de" and got.words == ()


def test_the_token_budget_grows_with_the_audio(asr):
    """Random weights never stop on their own: the budget (one word per token here) is what
    ends decoding of a window."""
    short = asr.transcribe(noise(1.0, 16_000), 16_000).text.split()
    long = asr.transcribe(noise(8.0, 16_000), 16_000).text.split()
    assert 0 < len(short) <= 16 + 12 * 1 < len(long) <= 16 + 12 * 8


def test_empty_and_tiny_inputs_give_empty_transcripts(asr):
    assert asr.transcribe(np.zeros(0, np.float32), 24_000).text == ""
    assert asr.transcribe(np.zeros(100, np.float32), 24_000, words=True).words == ()


@pytest.mark.parametrize(
    ("samples", "rate", "language"),
    [
        (np.zeros((2, 100), np.float32), 24_000, None),  # stereo
        (np.zeros(100, np.int16), 24_000, None),  # not floating point
        (np.zeros(100, np.float32), 0, None),
        (np.zeros(100, np.float32), 24_000, "xx"),  # no such language
    ],
)
def test_bad_input_is_invalid_input(asr, samples, rate, language):
    with pytest.raises(InvalidInput):
        asr.transcribe(samples, rate, language=language)


def test_concurrent_first_uses_load_once(tiny_whisper_dir):
    locate = Counting(tiny_whisper_dir)
    asr = WhisperTranscriber(locate, "cpu", cpu_threads=1)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(asr.transcribe(noise(1, 16_000), 16_000)))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert locate.calls == 1 and len(results) == 4 and asr.load_seconds is not None


def test_a_failed_load_is_remembered_then_retried(tiny_whisper_dir):
    now = [0.0]
    locate = Counting(None, ModelError("model x is not in MODEL_CACHE_DIR"))
    asr = WhisperTranscriber(locate, "cpu", clock=lambda: now[0])
    for _ in range(3):
        with pytest.raises(ASRUnavailable, match="MODEL_ERROR: model x is not in"):
            asr.transcribe(noise(1, 16_000), 16_000)
    assert locate.calls == 1
    now[0] += RETRY_AFTER_S + 1
    locate.error, locate.model_dir = None, tiny_whisper_dir
    assert asr.transcribe(noise(1, 16_000), 16_000, language="en").language == "en"
    assert locate.calls == 2


def test_a_directory_that_does_not_load_is_asr_unavailable(tmp_path, tiny_whisper_dir):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_whisper_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.bin").write_bytes(b"not a model")
    asr = WhisperTranscriber(lambda: broken, "cpu")
    with pytest.raises(ASRUnavailable, match="does not load"):
        asr.load()


def test_a_failed_preload_is_a_warning_not_a_crash(caplog):
    asr = WhisperTranscriber(Counting(None, ASRUnavailable("nowhere")), "cpu")
    asr.load_in_background().join(10)
    assert "not preloaded: ASR_UNAVAILABLE: nowhere" in caplog.text
    assert not asr.loaded


@pytest.mark.parametrize(
    ("device", "requested", "expected"),
    [("cuda", "auto", "float16"), ("cpu", "auto", "int8"), ("cpu", "float32", "float32")],
)
def test_compute_type_follows_the_device(device, requested, expected):
    assert compute_type_for(device, requested) == expected


@pytest.mark.slow
def test_transcribing_imports_neither_torch_nor_onnxruntime(tiny_whisper_dir):
    """The companion is CTranslate2 only: onnxruntime (faster-whisper's VAD, left out of the
    image) and torch are never needed to transcribe."""
    code = (
        "import sys, numpy as np\n"
        "from pathlib import Path\n"
        "from f5worker.asr.engine import WhisperTranscriber\n"
        f"asr = WhisperTranscriber(lambda: Path({str(tiny_whisper_dir)!r}), 'cpu')\n"
        "asr.transcribe(np.zeros(16000, np.float32), 16000, words=True)\n"
        "print(sorted(m for m in ('torch', 'onnxruntime') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
