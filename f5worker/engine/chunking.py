"""Text -> chunks the model can speak, each within a byte budget. Pure Python; no torch.

Upstream's chunk_text splits only after punctuation (`. , ; : ! ?` and their CJK forms), so a
long run without any (a URL, a list of words, unpunctuated CJK, a word made long by combining
marks) becomes one chunk of any length: longer than the model's positional tables (a crash) or
a single 80-second generation. Here upstream's chunks are kept as they are when they fit, and
any chunk over the budget is split again: at whitespace first, then between grapheme clusters
(never before a combining mark, a joiner or a variation selector), so every chunk fits.

Runs of combining marks are capped (MAX_COMBINING per base character) before anything else: no
script needs more (Vietnamese stacks two, Hebrew with cantillation four), and "Zalgo" text would
otherwise make a single unsplittable cluster longer than any budget.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator

MAX_COMBINING = 8
_ZWJ = "\u200d"
_SPACE = re.compile(r"\s+")


def cap_combining_marks(text: str, limit: int = MAX_COMBINING) -> str:
    """Drop combining marks beyond `limit` in a row (after NFC, which folds most into one)."""
    out: list[str] = []
    run = 0
    for ch in unicodedata.normalize("NFC", text):
        if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me"):
            run += 1
            if run > limit:
                continue
        else:
            run = 0
        out.append(ch)
    return "".join(out)


def bound_chunks(chunks: list[str], max_bytes: int) -> list[str]:
    """Every chunk within max_bytes of UTF-8 (at least one code point, so at least 4 bytes);
    chunks that fit are kept as they are."""
    max_bytes = max(max_bytes, 4)
    out: list[str] = []
    for chunk in chunks:
        if _size(chunk) <= max_bytes:
            out.append(chunk)
        else:
            out.extend(_split_words(chunk, max_bytes))
    return [c for c in out if c.strip()]


def shorten_first(
    chunks: list[str], max_bytes: int, split: Callable[[str, int], list[str]]
) -> list[str]:
    """The first chunk cut at its first punctuation within max_bytes, so a stream's first
    audio comes sooner.

    Upstream's socket server re-splits its first chunk with chunk_text at a quarter of the
    budget; here only the head is cut off and the rest of that chunk stays one chunk, so the
    request gains one chunk, not several. Like upstream, the cut is only where `split`
    (chunk_text: after punctuation) allows: a first sentence without a comma stays whole
    rather than breaking a phrase in two, which the listener would hear.
    """
    if not chunks or _size(chunks[0]) <= max_bytes:
        return chunks
    head, *tail = [p for p in split(chunks[0], max_bytes) if p.strip()] or [""]
    if not tail:
        return chunks
    first = chunks[0]
    rest = first[len(head) :].strip() if first.startswith(head) else " ".join(tail)
    return [head, rest, *chunks[1:]] if rest else [head, *chunks[1:]]


def _split_words(text: str, max_bytes: int) -> Iterator[str]:
    """Greedy packing of whitespace-separated words; a word over the budget is split alone."""
    yield from _pack(_SPACE.split(text.strip()), max_bytes, " ", _split_clusters)


def _split_clusters(word: str, max_bytes: int) -> Iterator[str]:
    yield from _pack(list(_clusters(word)), max_bytes, "", _split_code_points)


def _split_code_points(cluster: str, max_bytes: int) -> Iterator[str]:
    """Only for a cluster longer than the whole budget (after the cap, a budget under ~40
    bytes): cut between code points, the last resort that still bounds every chunk."""
    yield from _pack(list(cluster), max_bytes, "", lambda cp, _n: iter([cp]))


def _pack(
    pieces: list[str],
    max_bytes: int,
    sep: str,
    split_piece: Callable[[str, int], Iterator[str]],
) -> Iterator[str]:
    current = ""
    for piece in pieces:
        if not piece:
            continue
        joined = f"{current}{sep}{piece}" if current else piece
        if _size(joined) <= max_bytes:
            current = joined
            continue
        if current:
            yield current
        if _size(piece) <= max_bytes:
            current = piece
        else:
            *whole, current = list(split_piece(piece, max_bytes)) or [""]
            yield from whole
    if current:
        yield current


def _clusters(word: str) -> Iterator[str]:
    """Approximate extended grapheme clusters: a base character with the marks, joiners and
    variation selectors that follow it (and the character a zero-width joiner joins)."""
    cluster = ""
    for ch in word:
        joins = cluster.endswith(_ZWJ) or _extends(ch)
        if cluster and not joins:
            yield cluster
            cluster = ""
        cluster += ch
    if cluster:
        yield cluster


def _extends(ch: str) -> bool:
    return (
        ch == _ZWJ
        or unicodedata.category(ch) in ("Mn", "Me", "Mc")
        or "\ufe00" <= ch <= "\ufe0f"  # variation selectors
        or "\U0001f3fb" <= ch <= "\U0001f3ff"  # skin-tone modifiers
    )


def _size(text: str) -> int:
    return len(text.encode("utf-8"))
