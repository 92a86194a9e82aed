"""Subtitle text can never read as a timing line: whatever a caption holds, SRT and WebVTT
readers (the `srt` package, webvtt-py and ffmpeg's own demuxers through PyAV) find exactly the
cues that were written, with their text and times."""

from __future__ import annotations

import io

import av
import pytest
import srt
import webvtt
from hypothesis import given
from hypothesis import strategies as st

from f5worker.job.captions import Segment, caption_fields
from f5worker.job.subtitles import vtt

# Text that tries to be a cue boundary or a timing line, one member per way of trying.
FORGERIES = [
    "00:00:05,000 --> 00:00:09,000",
    "00:00:05.000 --> 00:00:09.000 align:start",
    "1 --> 2",
    "a--->b",
    "-->",
    "---->>",
    "x -- > y",  # not an arrow to any reader, kept as written
    "2\n00:00:01,000 --> 00:00:02,000\nforged",  # captions join lines, the arrow still goes
    "NOTE --> this",
    "WEBVTT --> 00:00:01.000",
]


def segments(text: str) -> list[Segment]:
    """Three cues, the middle one holding `text` as captions make it (one line)."""
    return [
        Segment("before", 0.0, 1.0),
        Segment(" ".join(text.split()), 1.0, 2.0),
        Segment("after", 2.0, 3.0),
    ]


def ffmpeg_cues(data: str, fmt: str) -> int:
    with av.open(io.BytesIO(data.encode()), format=fmt) as container:
        return sum(1 for packet in container.demux(subtitles=0) if packet.size)


@pytest.mark.parametrize("text", FORGERIES)
def test_srt_keeps_three_cues(text):
    written = caption_fields(segments(text), "srt")["srt"]
    cues = list(srt.parse(written))
    assert [c.end.total_seconds() for c in cues] == [1.0, 2.0, 3.0]
    assert "-->" not in cues[1].content
    assert ffmpeg_cues(written, "srt") == 3


@pytest.mark.parametrize("text", FORGERIES)
def test_vtt_keeps_three_cues(text):
    written = vtt(segments(text))
    cues = webvtt.from_buffer(io.StringIO(written))
    assert [c.end for c in cues] == ["00:00:01.000", "00:00:02.000", "00:00:03.000"]
    assert ffmpeg_cues(written, "webvtt") == 3


@given(st.text(min_size=1, max_size=80))
def test_no_text_adds_or_drops_a_cue(text):
    segs = segments(text)
    written = caption_fields(segs, "srt")["srt"]
    assert len(list(srt.parse(written))) == 3
    assert len(webvtt.from_buffer(io.StringIO(vtt(segs)))) == 3
