"""Word timings of a result item (`captions: "words"`): each chunk's words aligned to what the
ASR companion heard in that chunk's own waveform (asr/align.py), placed where that waveform
lies in the item's audio. Pure numpy.

Each chunk is transcribed alone, before the cross-fade (verify.py), so its word times count
from the start of its own waveform. That waveform starts where its piece starts (Piece.lead
later only for a chunk shorter than the cross-fade) and runs on into the next piece by the
fade it holds back; a word spoken there keeps its time, as the sound is there in the output,
and only the item's own edges clip it. Then, as for sentence captions (captions.py), times
map through the samples pause shortening kept and scale to the delivered rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from f5worker.asr.align import align
from f5worker.job.captions import Placement, Span, through_mask, to_segments
from f5worker.job.prepared import Piece


def word_fields(
    pieces: Sequence[Piece], sample_rate: int, placed: Placement
) -> list[dict[str, Any]]:
    """The `words` of an item made of `pieces` (as the engine made them, at `sample_rate`):
    [{text, start, end, estimated}] in seconds of the delivered item, timed as `placed` says
    the item was shaped. Pieces nothing listened to (no check) time no words."""
    total = sum(len(p.audio.samples) for p in pieces)
    spans: list[Span] = []
    estimated: list[bool] = []
    start = 0
    for piece in pieces:
        if piece.check is not None:
            origin = start + piece.lead
            for word in align(
                piece.text, piece.check.transcript.words, 0.0, piece.wave / sample_rate
            ):
                a = _clip(origin + round(word.start * sample_rate), 0, total)
                b = _clip(origin + round(word.end * sample_rate), a, total)
                spans.append(Span(word.text, a, b))
                estimated.append(word.estimated)
        start += len(piece.audio.samples)
    segments = to_segments(
        through_mask(spans, placed.keep), placed.kept, placed.duration_s, placed.offset_s
    )
    return [s.as_dict() | {"estimated": e} for s, e in zip(segments, estimated, strict=True)]


def _clip(value: int, low: int, high: int) -> int:
    return min(max(value, low), high)
