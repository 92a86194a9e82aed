"""The sentence splitter: deltas cut anywhere -> the same sentences, each once it is complete."""

from __future__ import annotations

import pytest

from f5worker.job.sentences import MAX_CHARS, SentenceSplitter

# text -> the sentences, in order (the last one from flush)
CASES = [
    ("Hello there. How are you? Fine!", ["Hello there.", "How are you?", "Fine!"]),
    ("It costs 3.14 euros. Cheap", ["It costs 3.14 euros.", "Cheap"]),  # no space: no end
    ('He said "stop." Then left.', ['He said "stop."', "Then left."]),  # closing quote kept
    ("Wait... what?! Yes", ["Wait...", "what?!", "Yes"]),
    ("你好。今天天气很好！再见", ["你好。", "今天天气很好！", "再见"]),  # CJK: no space needed
    ("A list:\n- one\n- two", ["A list:", "- one", "- two"]),  # line breaks end sentences
    ("  \n  ", []),
    ("No end at all", ["No end at all"]),
]


@pytest.mark.parametrize(("text", "sentences"), CASES)
def test_every_cut_of_the_deltas_gives_the_same_sentences(text, sentences):
    whole = SentenceSplitter()
    assert whole.feed(text) + whole.flush() == sentences
    for size in (1, 2, 3, 7):  # the text as deltas of `size` characters
        splitter = SentenceSplitter()
        got = [s for i in range(0, len(text), size) for s in splitter.feed(text[i : i + size])]
        assert got + splitter.flush() == sentences


def test_a_sentence_comes_out_with_the_delta_that_completes_it():
    splitter = SentenceSplitter()
    assert splitter.feed("Hello") == []
    assert splitter.feed(" there.") == []  # "there.3" could still follow
    assert splitter.feed(" How") == ["Hello there."]
    assert splitter.pending == "How"  # the whitespace went with the sentence
    assert splitter.feed(" are you?\n") == ["How are you?"]
    assert splitter.flush() == []


def test_a_run_without_a_sentence_end_is_cut_at_a_clause_then_at_a_space():
    splitter = SentenceSplitter(max_chars=40)
    out = splitter.feed("one two three, four five six seven eight nine ten eleven")
    # the clause mark within the bound, then the last space within it
    assert out == ["one two three,", "four five six seven eight nine ten"]
    out += splitter.feed(" twelve thirteen fourteen fifteen sixteen seventeen")
    assert all(len(s) <= 40 for s in out)
    words = "one two three, four five six seven eight nine ten eleven twelve thirteen fourteen"
    assert " ".join(out + splitter.flush()) == f"{words} fifteen sixteen seventeen"


def test_one_unbroken_word_is_cut_at_the_bound():
    splitter = SentenceSplitter(max_chars=20)
    assert splitter.feed("x" * 50) == ["x" * 20, "x" * 20]
    assert splitter.flush() == ["x" * 10]


def test_the_default_bound_keeps_an_unpunctuated_stream_moving():
    splitter = SentenceSplitter()
    words = " ".join(["word"] * 200)
    out = splitter.feed(words)
    assert out and all(len(s) <= MAX_CHARS for s in out)
