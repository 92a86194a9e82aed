"""Captions on real engine output: the segments cover the audio exactly, every chunk boundary
is a segment boundary where the engine's piece starts, and SRT / WebVTT parse with real parsers,
for whole and streamed jobs, with speed, pause shortening and resampling."""

from __future__ import annotations

import io
import itertools

import pytest
import srt
import webvtt

from f5worker.config import Settings
from f5worker.job.prepared import JobControl
from f5worker.job.worker import Worker
from f5worker.startup.compose import make_worker

TEXT = (
    "The first sentence sets the scene in a quiet town by the sea. "
    "The second one adds a market, boats, and gulls that argue over bread! "
    "Does a third sentence follow the fisherman home through narrow streets? "
    "The fourth ends the day with lamps being lit along the harbour wall. "
    "Night brings the sound of waves against the stones and a bell from the church. "
    "Before dawn the boats leave again, one by one, their engines low and steady."
)
JOB = {"text": TEXT, "nfe_step": 2, "seed": 11, "captions": "segments"}
FRAME_S = 256 / 24000  # one mel frame (hop 256 at 24 kHz)


@pytest.fixture(scope="module")
def worker(engine) -> Worker:
    return make_worker(engine, Settings(worker_version="captions-1"))


def run(worker: Worker, **changes) -> list[dict]:
    out = list(worker.run({"id": "c", "input": {**JOB, **changes}}))
    assert "error" not in out[-1], out[-1]
    return out


def check_cover(segments: list[dict], start: float, end: float) -> None:
    """Contiguous, in order, from start to end: their lengths sum to the audio's duration."""
    assert segments[0]["start"] == pytest.approx(start, abs=1e-3)
    assert all(s["start"] <= s["end"] for s in segments)
    assert all(a["end"] == b["start"] for a, b in itertools.pairwise(segments))
    total = sum(s["end"] - s["start"] for s in segments)
    assert total == pytest.approx(end - start, abs=FRAME_S)


def test_segments_cover_the_audio_and_chunks_start_where_pieces_do(worker):
    [item] = run(worker)
    segments = item["segments"]
    assert [s["text"] for s in segments][:2] == [
        "The first sentence sets the scene in a quiet town by the sea.",
        "The second one adds a market, boats, and gulls that argue over bread!",
    ]
    check_cover(segments, 0.0, item["duration_s"])
    job = worker.prepare(JOB)
    pieces = list(worker.pieces(job, JobControl()))
    assert len(pieces) >= 3
    starts = {s["start"] for s in segments}
    offset = 0
    for piece in pieces:
        assert round(offset / 24000, 3) in starts  # exact: each chunk starts a segment
        offset += len(piece.audio.samples)
    assert segments[-1]["end"] == round(offset / 24000, 3) == item["duration_s"]


@pytest.mark.parametrize(
    "changes",
    [
        {"speed": 1.7},
        {"speed": 0.6, "sample_rate": 44100, "format": "flac"},
        {"remove_silence": True, "sample_rate": 16000},
    ],
)
def test_speed_pauses_and_rates_keep_the_cover(worker, changes):
    [item] = run(worker, **changes)
    check_cover(item["segments"], 0.0, item["duration_s"])


def test_srt_and_vtt_parse_and_match_the_segments(worker):
    [with_srt] = run(worker, captions="srt")
    cues = list(srt.parse(with_srt["srt"]))
    segments = with_srt["segments"]
    assert [c.content for c in cues] == [s["text"] for s in segments]
    assert [c.end.total_seconds() for c in cues] == [s["end"] for s in segments]
    [with_vtt] = run(worker, captions="vtt")
    captions = webvtt.from_buffer(io.StringIO(with_vtt["vtt"]))
    assert [c.text for c in captions] == [s["text"] for s in with_vtt["segments"]]
    assert captions[-1].end_in_seconds == int(with_vtt["duration_s"])


def test_stream_items_carry_their_own_segments_in_utterance_time(worker):
    items = run(worker, stream=True, captions="srt")
    [whole] = run(worker)
    offset = 0.0
    for item in items:
        check_cover(item["segments"], offset, offset + item["duration_s"])
        offset += item["duration_s"]
    streamed = [s for item in items for s in item["segments"]]
    assert [s["text"] for s in streamed] == [s["text"] for s in whole["segments"]]
    for a, b in zip(streamed, whole["segments"], strict=True):
        assert a["start"] == pytest.approx(b["start"], abs=2e-3)
    numbers = [c.index for item in items for c in srt.parse(item["srt"])]
    assert numbers == list(range(1, len(streamed) + 1))  # the items join into one file


def test_no_captions_unless_asked(worker):
    [item] = list(worker.run({"input": {"text": "Hello there.", "nfe_step": 2}}))
    assert "segments" not in item and "srt" not in item
