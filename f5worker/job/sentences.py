"""Text that arrives in pieces (an LLM's deltas) -> whole sentences, each as soon as it is complete.

The engine's chunking (upstream's chunk_text, engine/chunking.py) splits after punctuation that
is followed by whitespace (`. , ; : ! ?`), or directly after its CJK forms. A sentence here ends
the same way, at the sentence-ending subset (`. ! ?`, `。！？`, an ellipsis), optionally followed by
closing quotes or brackets, or at a line break. A Latin terminator counts only once the
whitespace after it has arrived: a delta that ends in "3." may be followed by "14", and "e.g."
inside a word is no boundary. A run that never ends a sentence (an unpunctuated list, a URL) is
cut once it passes `max_chars`, at its last clause punctuation (`, ; :`) or else its last
whitespace, so the listener's wait stays bounded; the engine then chunks each sentence as it
chunks any text. What is still pending at the end of the input is the last sentence (flush).
Pure Python, no state but the pending text.
"""

from __future__ import annotations

import re

# A sentence end: a terminator, closing quotes/brackets, then whitespace (Latin) or nothing
# (CJK full-width forms, which are written without a following space); or a line break.
_CLOSERS = "\"'’”»)]}」』）】"
_END = re.compile(
    rf"[.!?…]+[{re.escape(_CLOSERS)}]*\s+"
    rf"|[。！？]+[{re.escape(_CLOSERS)}]*\s*"
    r"|\n\s*"
)
_CLAUSE = re.compile(r"[,;:]\s+|[，；：、]")
_SPACE = re.compile(r"\s+")
MAX_CHARS = 300  # a run without a sentence end is cut about here (about 20 s of speech at most)


class SentenceSplitter:
    """feed() the deltas in order; each call returns the sentences it completed, stripped."""

    def __init__(self, max_chars: int = MAX_CHARS) -> None:
        self.max_chars = max(max_chars, 8)
        self._pending = ""

    @property
    def pending(self) -> str:
        return self._pending

    def feed(self, delta: str) -> list[str]:
        self._pending += delta
        out: list[str] = []
        while True:
            cut = self._next_cut()
            if cut is None:
                break
            head, self._pending = self._pending[:cut], self._pending[cut:]
            if head.strip():
                out.append(head.strip())
        return out

    def flush(self) -> list[str]:
        """The rest of the input as the last sentence (none when only whitespace is left)."""
        rest, self._pending = self._pending.strip(), ""
        return [rest] if rest else []

    def _next_cut(self) -> int | None:
        """Where the first complete sentence of the pending text ends, or None."""
        found = _END.search(self._pending)
        if found is not None and found.end() <= self.max_chars:
            return found.end()
        if len(self._pending) <= self.max_chars:
            return None
        window = self._pending[: self.max_chars]
        for pattern in (_CLAUSE, _SPACE):
            ends = [m.end() for m in pattern.finditer(window) if window[: m.start()].strip()]
            if ends:
                return ends[-1]
        return self.max_chars  # one unbroken word: cut it where it passes the bound
