"""How a chunk's text is compared with what the recogniser heard: one normalisation, and the
character error rate (CER) over it. Pure Python.

The normalisation (`normalise`), applied to both sides alike:
- Unicode NFKC, so compatibility forms compare equal (full-width letters, ligatures, the
  recogniser's curly quote against the text's straight one), then case folding (`casefold`,
  which also folds German `ß` to `ss`);
- apostrophes inside words are dropped (`don't` -> `dont`: recognisers write them either way),
  every other punctuation character (Unicode category P*) becomes a space, so `well-known`
  and `well known` compare equal;
- whitespace (and control characters) collapsed to one space, none at either end;
- numbers stay as written: no number is spelled out on either side, digits are characters like
  any other. A text that writes `12` is compared with a transcript's `12` (Whisper-class models
  write digits), and a text that spells `twelve` with a transcript that says `12` counts as
  six characters wrong: spelled-out text is compared with spelled-out text only. Rewriting
  numbers would need a language-specific number grammar and would hide the model reading a
  number wrongly.
Unicode decides what is punctuation: `%`, `&` and `#` are (category Po) and go; symbols
(category S*: `$`, `+`, `=`, emoji) stay, each one character.

CER = Levenshtein distance between the normalised strings, in characters (insertions,
deletions and substitutions cost 1), divided by the normalised reference's length. It is 0 for
identical texts, not symmetric, and may pass 1 when the transcript holds more than the text.
"""

from __future__ import annotations

import re
import unicodedata

_APOSTROPHES = re.compile(r"(?<=\w)['\u2019\u02bc](?=\w)")
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """`text` as CER compares it (see the module docstring)."""
    # NFKC again after folding: folding may leave a sequence NFKC would compose.
    text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    text = _APOSTROPHES.sub("", text)
    text = "".join(" " if _is_break(c) else c for c in text)
    return _SPACE.sub(" ", text).strip()


def words(text: str) -> list[str]:
    """The normalised words of `text`, as word alignment compares them."""
    return normalise(text).split()


def distance(a: str, b: str) -> int:
    """Levenshtein distance in characters: the fewest insertions, deletions and substitutions
    that turn `a` into `b`. Two rows of the table, O(len(a) * len(b)) time."""
    if len(a) < len(b):
        a, b = b, a  # the shorter string is the row
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def cer(reference: str, hypothesis: str) -> float:
    """The character error rate of `hypothesis` (what was heard) against `reference` (the text
    that should have been spoken), both normalised. An empty reference scores 0 against an
    empty hypothesis and 1 against anything else."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return distance(ref, hyp) / len(ref)


def _is_break(char: str) -> bool:
    """Characters that separate words without being compared: punctuation, whitespace and
    control characters."""
    category = unicodedata.category(char)
    return category.startswith("P") or category in ("Cc", "Zs", "Zl", "Zp")
