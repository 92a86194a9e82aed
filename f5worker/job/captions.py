"""Sentence timings of synthesized audio: `segments` of {text, start, end} in seconds.

What is exact and what is estimated:
- chunk boundaries are exact: the engine makes one waveform per text chunk and cross-fades
  them; each chunk starts where its fade-in starts, which is where its piece starts (the pieces
  concatenate to the utterance, worker.Piece);
- within a chunk, times are estimated by F5's own duration rule: the model is given a length
  proportional to the chunk's UTF-8 bytes (infer_batch_process), so each sentence gets the share
  of its chunk's waveform that its bytes have of the chunk's bytes. The chunk's last sentence
  ends where the next chunk's fade-in starts, so the cross-fade belongs to the next chunk.
Speed changes the waveform's length, which these times are measured on, so it is accounted for
without a rule of its own; pause shortening removes samples, and times are mapped through the
mask of kept samples (codecs.pause_mask); resampling keeps seconds. Pure numpy; no torch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from f5worker.job import subtitles

# A sentence ends at . ! ? or an ellipsis followed by space (closing quotes and brackets stay
# with it), or at a CJK full stop, question or exclamation mark, which needs no space.
_SENTENCE_END = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019)\]]*\s+|[\u3002\uff01\uff1f]+\s*")


@dataclass(frozen=True)
class Span:
    """A sentence and its [start, end) in samples of the audio it was placed on."""

    text: str
    start: int
    end: int


@dataclass(frozen=True)
class Segment:
    text: str
    start: float
    end: float

    def as_dict(self) -> dict[str, object]:
        return {"text": self.text, "start": round(self.start, 3), "end": round(self.end, 3)}


def sentences(text: str) -> list[str]:
    """The chunk cut after each sentence end; the pieces partition the text exactly (trailing
    space stays with its sentence, as it counts in F5's byte budget too)."""
    out, pos = [], 0
    for match in _SENTENCE_END.finditer(text):
        if match.end() > pos:
            out.append(text[pos : match.end()])
            pos = match.end()
    if pos < len(text):
        out.append(text[pos:])
    return out


def chunk_spans(text: str, start: int, length: int, held_back: int) -> list[Span]:
    """The sentences of one chunk whose piece starts at `start` and has `length` samples.

    The chunk's own waveform is `length + held_back` samples (held_back: the fade-out tail the
    next piece carries), and F5 spreads the chunk's text over it evenly by bytes; a sentence
    past the piece's end is clipped to it."""
    parts = [p for p in sentences(text) if p.strip()] or [text]
    weights = np.cumsum([len(p.encode("utf-8")) for p in parts])
    wave = length + held_back
    edges = [start] + [start + min(round(wave * w / weights[-1]), length) for w in weights]
    edges[-1] = start + length
    return [Span(_clean(p), a, b) for p, a, b in zip(parts, edges[:-1], edges[1:], strict=True)]


def piece_spans(pieces: Sequence[tuple[str, int]], fade: int, ends_utterance: bool) -> list[Span]:
    """Spans of consecutive pieces (text, samples), laid end to end from sample 0. Every piece
    but the utterance's last holds back `fade` samples of its chunk."""
    out: list[Span] = []
    start = 0
    for i, (text, length) in enumerate(pieces):
        last = ends_utterance and i == len(pieces) - 1
        out += chunk_spans(text, start, length, 0 if last else fade)
        start += length
    return out


def through_mask(spans: Sequence[Span], keep: np.ndarray | None) -> list[Span]:
    """Where each span lands once the samples outside `keep` are removed (None: all kept)."""
    if keep is None:
        return list(spans)
    kept_before = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
    return [Span(s.text, int(kept_before[s.start]), int(kept_before[s.end])) for s in spans]


def to_segments(
    spans: Sequence[Span], samples: int, duration_s: float, offset_s: float = 0.0
) -> list[Segment]:
    """Sample positions -> seconds of the delivered audio, which lasts duration_s and may be at
    another rate (resampling keeps seconds, so positions scale by duration / samples)."""
    scale = duration_s / samples if samples else 0.0
    return [Segment(s.text, offset_s + s.start * scale, offset_s + s.end * scale) for s in spans]


@dataclass(frozen=True)
class Placement:
    """How the engine's pieces became one delivered item: the cross-fade each piece but the
    utterance's last held back, the samples pause shortening kept (None: all), how many there
    were, the item's duration and where it starts in the utterance."""

    fade: int
    keep: np.ndarray | None
    kept: int
    duration_s: float
    offset_s: float = 0.0
    ends_utterance: bool = True


def item_fields(
    mode: str, pieces: Sequence[tuple[str, int]], placed: Placement, first_number: int = 1
) -> dict[str, object]:
    """The caption fields of one result item made of `pieces` (text, samples as made)."""
    spans = through_mask(piece_spans(pieces, placed.fade, placed.ends_utterance), placed.keep)
    segments = to_segments(spans, placed.kept, placed.duration_s, placed.offset_s)
    return caption_fields(segments, mode, first_number)


def caption_fields(
    segments: Sequence[Segment], mode: str, first_number: int = 1
) -> dict[str, object]:
    """The result fields for captions `mode`: `segments`, and `srt` or `vtt` text."""
    fields: dict[str, object] = {"segments": [s.as_dict() for s in segments]}
    if mode == "srt":
        fields["srt"] = subtitles.srt(segments, first_number)
    elif mode == "vtt":
        fields["vtt"] = subtitles.vtt(segments)
    return fields


def _clean(text: str) -> str:
    """One line of text: subtitle cues end at a blank line, so no newline may stay."""
    return " ".join(text.split())
