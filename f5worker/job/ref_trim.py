"""Cut a long reference at a sentence end that its transcript and its audio agree on. Pure numpy.

F5-TTS takes a reference clip and its transcript and speaks new text at the clip's pace: the
new audio's length is the reference's seconds per byte of transcript times the new text's
bytes. A clip cut anywhere else than where its transcript can be cut too (upstream clips at
12 s, mid-word if it must, and keeps the whole transcript) leaves text that the audio no longer
holds: the model is told words it cannot hear, and the pace it derives is wrong.

The rule, conservative by design (no cut is better than a wrong one):

1. Pauses: runs of at least MIN_PAUSE_S of 10 ms frames whose RMS is below the pause level
   (PAUSE_BELOW_SPEECH_DB under the clip's loud frames, never below FLOOR_DBFS).
2. Sentence ends: after `.`, `!`, `?`, `…` (followed by a space or the end) or their CJK
   full-width forms, closing quotes and brackets included.
3. Each sentence end is placed in the audio by the proportion of the transcript's bytes before
   it, measured in speaking time (the clip's time without its pauses, where no text is spoken).
4. A sentence end and a pause agree when the pause is the only one within the tolerance of
   the placed end (MIN_TOLERANCE_S, or TOLERANCE_SHARE of the speaking time if more), and no
   other sentence end claims that pause.
5. The cut keeps the audio up to just inside the latest agreeing pause whose kept part is at
   most the bound and at least MIN_KEEP_S, and the transcript up to that sentence end. With no
   agreeing pause nothing is cut (the caller decides what then).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

FRAME_S = 0.01
MIN_PAUSE_S = 0.2  # longer than a stop consonant's closure: a pause between words, not in one
PAUSE_BELOW_SPEECH_DB = 30.0
FLOOR_DBFS = -60.0
MAX_BLIP_S = 0.05  # a click or breath this short inside a pause does not end it
MIN_TOLERANCE_S = 0.5
TOLERANCE_SHARE = 0.08
MIN_KEEP_S = 3.0  # the shortest reference the model still takes a voice from well
SENTENCE_END = re.compile(r"(?:[.!?…]+[\"'”’»)\]]*(?=\s|$)|[。！？]+[」』”’）]*)")


@dataclass(frozen=True)
class Pause:
    start: int  # first silent sample
    end: int  # first sample after the pause
    speaking_s: float  # seconds of speech (pauses excluded) before it

    def cut(self, rate: int) -> int:
        """Where to end a clip at this pause: inside it, just after the sound. The caller trims
        the silence off again, and a long pause must not push a clip that fits over a bound."""
        return self.start + min((self.end - self.start) // 2, round(MIN_PAUSE_S / 2 * rate))


def sentence_ends(text: str) -> list[int]:
    """Character offsets just after each sentence end, the transcript's last one excluded."""
    stripped = text.rstrip()
    ends = [m.end() for m in SENTENCE_END.finditer(stripped)]
    return [e for e in ends if stripped[e:].strip()]


def find_pauses(samples: np.ndarray, rate: int) -> tuple[list[Pause], float]:
    """The clip's pauses (rule 1) and its total speaking time in seconds."""
    window = max(1, int(rate * FRAME_S))
    n = len(samples) // window
    if n == 0:
        return [], 0.0
    frames = samples[: n * window].reshape(n, window)
    rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
    speech_level = float(np.percentile(rms, 95))
    level = max(speech_level * 10 ** (-PAUSE_BELOW_SPEECH_DB / 20), 10 ** (FLOOR_DBFS / 20))
    quiet = _bridge(rms < level, round(MAX_BLIP_S / FRAME_S))
    quiet = np.concatenate([[False], quiet, [False]])
    edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))
    runs = zip(edges[::2], edges[1::2], strict=True)  # [start, end) in frames
    min_frames = round(MIN_PAUSE_S / FRAME_S)
    pauses, paused = [], 0
    for start, end in runs:
        if end - start < min_frames or start == 0 or end == n:
            continue  # too short, or an edge (edges are trimmed elsewhere, not pauses)
        pauses.append(Pause(int(start) * window, int(end) * window, int(start - paused) * FRAME_S))
        paused += end - start
    return pauses, (n - paused) * FRAME_S


def _bridge(quiet: np.ndarray, max_frames: int) -> np.ndarray:
    """Quiet frames with runs of at most max_frames loud ones between quiet ones made quiet."""
    out = quiet.copy()
    loud = np.concatenate([[False], ~quiet, [False]])
    edges = np.flatnonzero(np.diff(loud.astype(np.int8)))
    for start, end in zip(edges[::2], edges[1::2], strict=True):
        if end - start <= max_frames and start > 0 and end < len(quiet):
            out[start:end] = True
    return out


def cut_at_sentence(
    samples: np.ndarray, rate: int, text: str, max_seconds: float
) -> tuple[np.ndarray, str] | None:
    """(samples, text) cut at the latest agreeing sentence end within max_seconds, or None.

    `samples` is the reference's sound, its silent edges already trimmed.
    """
    ends = sentence_ends(text)
    if not ends:
        return None
    pauses, speaking = find_pauses(samples, rate)
    if not pauses or speaking <= 0:
        return None
    total = len(text.strip().encode())
    tolerance = max(MIN_TOLERANCE_S, TOLERANCE_SHARE * speaking)
    claims: dict[int, list[int]] = {}
    for end in ends:
        placed = len(text[:end].lstrip().encode()) / total * speaking
        near = [i for i, p in enumerate(pauses) if abs(p.speaking_s - placed) <= tolerance]
        if len(near) == 1:
            claims.setdefault(near[0], []).append(end)
    best: tuple[np.ndarray, str] | None = None
    for i, claimed in sorted(claims.items()):
        if len(claimed) != 1:
            continue  # two sentence ends near one pause: which one it is is a guess
        keep = pauses[i].cut(rate)
        if MIN_KEEP_S * rate <= keep <= max_seconds * rate:
            best = samples[:keep], text[: claimed[0]].strip()
    return best
