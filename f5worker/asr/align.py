"""Word timings for a text from the words a recogniser heard in its audio. Pure Python.

The text's words (split at whitespace; a token of punctuation alone stays with the word before
it) are aligned to the recogniser's timed words by the fewest edits over normalised words
(cer.normalise, spaces dropped inside a word so `well-known` meets `well-known` however either
side splits it): an insertion or deletion costs 1, pairing two words costs their character
distance over the longer one's length (0 when equal), so a misheard word still pairs with the
word it stands for and similar words pair before dissimilar ones. A paired text word takes its
heard word's times. A text word paired with nothing (the recogniser missed it, or the model
never said it) gets times interpolated between its timed neighbours, shared out by characters,
and is flagged `estimated`. Heard words paired with no text word (a repeat, a stray syllable)
time nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from f5worker.asr.cer import distance, normalise
from f5worker.asr.transcript import Word


@dataclass(frozen=True)
class TimedWord:
    """A word of the text and where it is spoken, in seconds of the transcribed audio."""

    text: str  # as the text writes it, with its punctuation
    start: float
    end: float
    estimated: bool = False  # not heard: its times are interpolated between its neighbours


def text_words(text: str) -> list[str]:
    """The text's words as captions show them: whitespace-separated, a token that is only
    punctuation (a dash, a lone quote) joined to the word before it (or after it, first)."""
    out: list[str] = []
    pending = ""  # punctuation before the first word
    for token in text.split():
        if _key(token):
            out.append(f"{pending} {token}".strip() if pending else token)
            pending = ""
        elif out:
            out[-1] = f"{out[-1]} {token}"
        else:
            pending = f"{pending} {token}".strip()
    if pending and not out:
        return []  # nothing to speak
    return out


def align(text: str, heard: Sequence[Word], start: float, end: float) -> list[TimedWord]:
    """The words of `text`, timed by `heard` (the recogniser's words of the audio), every time
    within [start, end]: the audio's span, which also bounds interpolation at either edge."""
    tokens = text_words(text)
    usable = [w for w in heard if _key(w.text)]
    pairs = _pairs([_key(t) for t in tokens], [_key(w.text) for w in usable])
    timed: list[tuple[float, float] | None] = [None] * len(tokens)
    for i, j in pairs:
        w = usable[j]
        a = min(max(w.start, start), end)
        timed[i] = (a, min(max(w.end, a), end))
    return _interpolate(tokens, timed, start, end)


def _key(word: str) -> str:
    return normalise(word).replace(" ", "")


def _pairs(text: Sequence[str], heard: Sequence[str]) -> list[tuple[int, int]]:
    """(text index, heard index) of the paired words of a least-cost alignment, in order."""
    n, m = len(text), len(heard)
    cost = [[0.0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        cost[i][0] = float(i)
    for j in range(m + 1):
        cost[0][j] = float(j)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i][j] = min(
                cost[i - 1][j - 1] + _mismatch(text[i - 1], heard[j - 1]),
                cost[i - 1][j] + 1.0,
                cost[i][j - 1] + 1.0,
            )
    pairs: list[tuple[int, int]] = []
    i, j = n, m
    while i > 0 and j > 0:  # back from the end, preferring a pair on equal cost
        if cost[i][j] == cost[i - 1][j - 1] + _mismatch(text[i - 1], heard[j - 1]):
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif cost[i][j] == cost[i - 1][j] + 1.0:
            i -= 1
        else:
            j -= 1
    return pairs[::-1]


def _mismatch(a: str, b: str) -> float:
    """0 for the same word, up to 1 for words with nothing in common."""
    return 0.0 if a == b else distance(a, b) / max(len(a), len(b))


def _interpolate(
    tokens: Sequence[str], timed: Sequence[tuple[float, float] | None], start: float, end: float
) -> list[TimedWord]:
    """Each run of untimed words shares the gap between its timed neighbours by characters."""
    out: list[TimedWord] = []
    i = 0
    while i < len(tokens):
        times = timed[i]
        if times is not None:
            out.append(TimedWord(tokens[i], *times))
            i += 1
            continue
        run_end = i
        while run_end < len(tokens) and timed[run_end] is None:
            run_end += 1
        left = out[-1].end if out else start
        after = timed[run_end] if run_end < len(tokens) else None
        right = max(after[0] if after is not None else end, left)
        weights = [max(len(_key(t)), 1) for t in tokens[i:run_end]]
        total, done = sum(weights), 0
        for token, weight in zip(tokens[i:run_end], weights, strict=True):
            a = left + (right - left) * done / total
            done += weight
            out.append(TimedWord(token, a, left + (right - left) * done / total, True))
        i = run_end
    return out
