"""Batch jobs (`texts`) on the demo model: one item per entry in order, each what the same text
sent alone gives, a bad entry failing only its own item, progress and cancel over the batch."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from f5worker.config import Settings
from f5worker.engine.plan import BatchPlan, Line, SynthesisParams
from f5worker.job.fetch import FetchPolicy, RefAudioFetcher
from f5worker.job.prepared import JobControl
from f5worker.job.voices import default_voice
from f5worker.job.worker import Worker
from f5worker.startup.compose import make_worker
from f5worker.testing.audio import noise, wav_b64

BASE = {"nfe_step": 2, "seed": 4, "format": "pcm"}
LONG = (
    "The first sentence sets the scene in a quiet town by the sea. "
    "The second one adds a market, boats, and gulls that argue over bread. "
    "A third sentence follows the fisherman home through narrow streets. "
    "The fourth ends the day with lamps being lit along the harbour wall."
)
TEXTS = [
    "One short line.",
    {"text": "A second line, a little longer.", "seed": 9},
    {"text": LONG, "format": "wav"},
    "Bye.",
]


class CountingFetcher(RefAudioFetcher):
    def __init__(self) -> None:
        super().__init__(FetchPolicy())
        self.calls = 0

    def voice(self, ref, kind, text):
        self.calls += 1
        return super().voice(ref, kind, text)


@pytest.fixture(scope="module")
def fetcher() -> CountingFetcher:
    return CountingFetcher()


@pytest.fixture(scope="module")
def worker(engine, fetcher) -> Worker:
    return make_worker(engine, Settings(worker_version="batch-1"), fetcher=fetcher)


def run(worker: Worker, control: JobControl | None = None, **inp) -> list[dict]:
    return list(worker.run({"id": "b", "input": {**BASE, **inp}}, control))


@pytest.fixture(scope="module")
def batch(worker) -> list[dict]:
    return run(worker, texts=TEXTS, captions="segments")


def test_one_item_per_entry_in_order(batch):
    assert [item["index"] for item in batch] == [0, 1, 2, 3]
    assert [item["seed"] for item in batch] == [4, 9, 4, 4]
    assert [item["format"] for item in batch] == ["pcm", "pcm", "wav", "pcm"]
    assert all(item["duration_s"] > 0 and item["segments"] for item in batch)
    assert len(batch[2]["segments"]) == 4  # the long entry's four sentences


@pytest.mark.parametrize("index", [1, 2])
def test_an_entry_is_what_the_same_text_alone_gives(worker, batch, index):
    entry = TEXTS[index]
    alone = run(worker, text=entry["text"], **{k: v for k, v in entry.items() if k != "text"})
    assert "chunk" not in alone[0]
    assert batch[index]["audio_base64"] == alone[0]["audio_base64"]
    assert (
        batch[index]["segments"]
        == run(
            worker,
            text=entry["text"],
            captions="segments",
            **{k: v for k, v in entry.items() if k != "text"},
        )[0]["segments"]
    )


def test_a_bad_entry_fails_only_its_own_item(worker):
    texts = ["First.", {"text": "x", "voice": "nobody"}, 42, {"text": " "}, "Last."]
    items = run(worker, texts=texts)
    assert [item["index"] for item in items] == [0, 1, 2, 3, 4]
    assert "error" not in str(list(items[0])) and items[0]["duration_s"] > 0
    assert items[4]["duration_s"] > 0
    codes = [item.get("item_error", {}).get("error_code") for item in items]
    assert codes == [None, "VOICE_NOT_FOUND", "INVALID_INPUT", "INVALID_INPUT", None]
    # no item has a top-level `error`: RunPod's worker loop would end the job at it
    assert all("error" not in item for item in items)
    assert items[1]["item_error"]["retryable"] is False


def test_a_malformed_batch_fails_the_job(worker):
    [item] = run(worker, texts=["a"], text="b")
    assert item["error_code"] == "INVALID_INPUT"
    [item] = run(worker, texts=["a"], model="nonexistent")
    assert item["error_code"] == "MODEL_NOT_FOUND"
    [item] = run(worker, texts=["a", "b"], **{"return": "url"})  # this worker has no bucket
    assert item["error_code"] == "INVALID_INPUT"


def test_a_reference_clip_is_fetched_once_for_the_whole_batch(worker, fetcher):
    ref = {"ref_audio": wav_b64(noise(2)), "ref_text": "Some noise."}
    before = fetcher.calls
    items = run(worker, texts=["One.", "Two.", {"text": "Three.", "voice": "default"}], **ref)
    assert fetcher.calls - before == 1
    assert all("item_error" not in item for item in items)
    bad = {"ref_audio": base64.b64encode(b"not audio").decode(), "ref_text": "Noise."}
    before = fetcher.calls
    items = run(worker, texts=["One.", "Two.", {"text": "Three.", "voice": "default"}], **bad)
    assert fetcher.calls - before == 1  # a failed fetch is not repeated for each entry
    codes = [item.get("item_error", {}).get("error_code") for item in items]
    assert codes == ["BAD_REF_AUDIO", "BAD_REF_AUDIO", None]


def test_progress_counts_the_chunks_of_every_entry(worker):
    seen: list[tuple[int, int]] = []
    control = JobControl(progress=lambda done, total: seen.append((done, total)))
    items = run(worker, control, texts=["One.", LONG, "Three."])
    assert len(items) == 3 and all("item_error" not in i for i in items)
    total = seen[-1][1]
    assert total >= 4 and seen[-1] == (total, total)
    assert [done for done, _ in seen] == sorted({done for done, _ in seen})


def test_cancel_stops_the_batch_between_passes(worker):
    done: list[int] = []
    control = JobControl(cancelled=lambda: bool(done), progress=lambda n, _t: done.append(n))
    items = run(worker, control, texts=["One.", "Two.", "Three.", "Four.", "Five."])
    assert items[-1]["error_code"] == "CANCELLED"
    assert len(done) == 1 and done[0] < 5
    assert [item["index"] for item in items[:-1]] == list(range(len(items) - 1))


def test_the_engine_batches_lines_by_voice(engine):
    other = default_voice().__class__(default_voice().audio, "Another transcript.", "other")
    params = SynthesisParams(seed=3, nfe_step=2)
    lines = [
        Line(default_voice(), ["Alpha one."], params),
        Line(other, ["Beta one."], params),
        Line(default_voice(), ["Alpha two.", "Alpha three."], SynthesisParams(seed=8, nfe_step=2)),
        Line(default_voice(), ["Alpha four."], params),
    ]
    made = list(engine.synthesize_lines(lines))
    # one voice at a time, in order of first appearance; seeds are per chunk, so lines of
    # other seeds share a voice's passes
    assert [n for n, _ in made] == [0, 2, 3, 1]
    for n, pieces in made:
        line = lines[n]
        alone = list(engine.synthesize_stream("", line.voice, line.params, line.chunks))
        assert len(pieces) == len(alone)
        for a, b in zip(pieces, alone, strict=True):
            assert (a.samples == b.samples).all()


def test_the_cuda_plan_pads_lines_of_unequal_length(engine):
    """The GPU's plan (padded batches, padding masked), run here on the CPU: lines of different
    lengths in one pass come out as each would alone, to float rounding."""
    padded = engine.with_plan(BatchPlan())
    params = SynthesisParams(seed=5, nfe_step=2)
    texts = [["Short."], ["A much longer line than the first one, with a clause."], ["Mid line."]]
    lines = [Line(default_voice(), chunks, params) for chunks in texts]
    made = dict(padded.synthesize_lines(lines))
    assert sorted(made) == [0, 1, 2]
    for n, line in enumerate(lines):
        [alone] = list(engine.synthesize_stream("", line.voice, params, line.chunks))
        [piece] = made[n]
        scale = float(np.abs(alone.samples).max())
        assert piece.samples.shape == alone.samples.shape
        np.testing.assert_allclose(piece.samples, alone.samples, rtol=0, atol=1e-4 * scale)


def test_the_audio_budget_is_the_jobs_not_each_entrys(worker, monkeypatch):
    """Each entry fits MAX_AUDIO_SECONDS alone; together they do not: TEXT_TOO_LONG for the
    whole batch, before any model work."""
    alone = run(worker, text=LONG)[0]["duration_s"]
    monkeypatch.setattr(worker.engine, "max_audio_s", alone * 2.5)

    def no_model_work(*_a, **_k):
        raise AssertionError("the engine was asked to synthesize")

    monkeypatch.setattr(worker.engine, "synthesize_line_waves", no_model_work)
    [failed] = run(worker, texts=[LONG, LONG, LONG, LONG])
    assert failed["error_code"] == "TEXT_TOO_LONG" and "in all" in failed["error"]
    monkeypatch.undo()
    assert len(run(worker, texts=[LONG, LONG])) == 2  # within the budget: served
