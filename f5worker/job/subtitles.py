"""SubRip (SRT) and WebVTT text from caption segments. Pure Python.

Both formats end a cue at a blank line, so segment text is one line already (captions._clean).
A line holding `-->` is a timing line to both formats' readers (ffmpeg's SRT reader starts a new
cue there, dropping the one before), so text can never carry one: WebVTT cue text is HTML-like
and `&`, `<` and `>` are escaped (`-->` becomes `--&gt;`); SRT has no escapes, so any run of
dashes before `>` is shortened to one (`->`, which reads the same and times nothing).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from f5worker.job.captions import Segment


def srt(segments: Sequence[Segment], first_number: int = 1) -> str:
    """Numbered cues, `HH:MM:SS,mmm --> HH:MM:SS,mmm`; numbering starts at first_number so the
    items of a stream can be joined into one file."""
    cues = [
        f"{n}\n{_stamp(s.start, ',')} --> {_stamp(s.end, ',')}\n{_srt_text(s.text)}\n"
        for n, s in enumerate(segments, first_number)
    ]
    return "\n".join(cues)


def vtt(segments: Sequence[Segment]) -> str:
    cues = [
        f"{_stamp(s.start, '.')} --> {_stamp(s.end, '.')}\n{_escape(s.text)}\n" for s in segments
    ]
    return "\n".join(["WEBVTT\n", *cues])


def _stamp(seconds: float, decimal: str) -> str:
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{ms:03d}"


_ARROW = re.compile(r"-{2,}>")


def _srt_text(text: str) -> str:
    return _ARROW.sub("->", text)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
