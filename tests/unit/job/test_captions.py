"""Captions without a model: sentence splitting, F5's byte rule within a chunk, exact chunk
boundaries, pause shortening, and SRT / WebVTT text read back by real parsers."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
import srt
import webvtt

from f5worker.job.captions import (
    Segment,
    Span,
    caption_fields,
    chunk_spans,
    piece_spans,
    sentences,
    through_mask,
    to_segments,
)
from f5worker.job.subtitles import vtt


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("One. Two! Three?", ["One. ", "Two! ", "Three?"]),
        ("No end here", ["No end here"]),
        ("Pi is 3.14 today. Yes.", ["Pi is 3.14 today. ", "Yes."]),
        ('He said "go." Then left.', ['He said "go." ', "Then left."]),
        ("Wait... what?", ["Wait... ", "what?"]),
        ("你好。今天好吗？好！", ["你好。", "今天好吗？", "好！"]),
        ("", []),
    ],
)
def test_sentences_partition_the_text(text, expected):
    assert sentences(text) == expected
    assert "".join(sentences(text)) == text


def test_a_chunk_is_shared_by_utf8_bytes():
    # "Abc. " is 5 bytes, "你好吗。" 12 (3 per character): 5 and 12 parts of 1700 samples
    [a, b] = chunk_spans("Abc. 你好吗。", 100, 1700, held_back=0)
    assert (a.text, a.start, a.end) == ("Abc.", 100, 100 + 500)
    assert (b.text, b.start, b.end) == ("你好吗。", 600, 1800)


def test_the_held_back_fade_belongs_to_the_next_chunk():
    # the chunk's waveform is 1000 samples; its piece keeps 800, the next piece carries 200
    first, second = chunk_spans("Aaaa. Bbbbb.", 0, 800, held_back=200)
    assert (first.start, first.end) == (0, 500)
    assert (second.start, second.end) == (500, 800)


def test_piece_spans_start_each_chunk_at_its_piece():
    spans = piece_spans([("One. Two.", 900), ("Three.", 600), ("Four.", 700)], 100, True)
    assert [s.text for s in spans] == ["One.", "Two.", "Three.", "Four."]
    assert spans[2].start == 900 and spans[3].start == 1500 and spans[-1].end == 2200
    assert all(a.end == b.start for a, b in itertools.pairwise(spans))


def test_times_map_through_removed_samples():
    keep = np.ones(1000, dtype=bool)
    keep[200:500] = False  # a pause cut out of the first sentence
    spans = [Span("a", 0, 600), Span("b", 600, 1000)]
    assert through_mask(spans, keep) == [Span("a", 0, 300), Span("b", 300, 700)]
    assert through_mask(spans, None) == spans


def test_seconds_scale_to_the_delivered_audio():
    spans = [Span("a", 0, 12000), Span("b", 12000, 24000)]
    [a, b] = to_segments(spans, 24000, 1.0, offset_s=2.0)
    assert (a.start, a.end, b.end) == (2.0, 2.5, 3.0)


SEGMENTS = [
    Segment("First line.", 0.0, 1.25),
    Segment("A <tag> & --> arrow.", 1.25, 3661.5),
]


def test_srt_reads_back_with_the_srt_package():
    fields = caption_fields(SEGMENTS, "srt", first_number=7)
    cues = list(srt.parse(fields["srt"]))
    assert [c.index for c in cues] == [7, 8]
    assert [c.content for c in cues] == ["First line.", "A <tag> & -> arrow."]  # no timing line
    assert [c.end.total_seconds() for c in cues] == [1.25, 3661.5]
    assert fields["segments"][1] == {"text": SEGMENTS[1].text, "start": 1.25, "end": 3661.5}


def test_vtt_reads_back_with_webvtt_py():
    captions = webvtt.from_buffer(io.StringIO(vtt(SEGMENTS)))
    assert [c.start for c in captions] == ["00:00:00.000", "00:00:01.250"]
    assert [c.end for c in captions] == ["00:00:01.250", "01:01:01.500"]
    assert captions[1].raw_text == "A &lt;tag&gt; &amp; --&gt; arrow."


def test_segments_mode_has_no_subtitle_text():
    assert set(caption_fields(SEGMENTS, "segments")) == {"segments"}
    assert set(caption_fields(SEGMENTS, "vtt")) == {"segments", "vtt"}
