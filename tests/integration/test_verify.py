"""`verify` and `captions: "words"` on the demo model, with a scripted recogniser (its audio is
noise, so what it "hears" is scripted): a chunk that does not match its text is made again with
its next seed and the best try kept, streams are checked before they send, missed words are
flagged, and a worker without the companion refuses with a code."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from f5worker.config import Settings
from f5worker.job.prepared import JobControl
from f5worker.job.worker import Worker
from f5worker.startup.compose import make_worker
from f5worker.testing.asr import ScriptedTranscriber

TEXT = (
    "The first sentence sets the scene in a quiet town by the sea. "
    "The second one adds a market, boats, and gulls that argue over bread! "
    "Does a third sentence follow the fisherman home through narrow streets? "
    "The fourth ends the day with lamps being lit along the harbour wall. "
    "Night brings the sound of waves against the stones and a bell from the church. "
    "Before dawn the boats leave again, one by one, their engines low and steady."
)
BASE = {"nfe_step": 2, "seed": 40, "format": "pcm"}
WRONG = "completely different words"


def worker_with(engine, asr, **settings) -> Worker:
    worker = make_worker(engine, Settings(worker_version="verify-1", **settings))
    worker.asr = asr
    return worker


def run(worker: Worker, **inp) -> list[dict]:
    items = list(worker.run({"id": "v", "input": {**BASE, **inp}}))
    assert "error" not in items[-1], items[-1]
    return items


def pcm(item: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(item["audio_base64"]), np.int16)


@pytest.fixture(scope="module")
def chunks(engine) -> list[str]:
    found = make_worker(engine, Settings()).prepare({**BASE, "text": TEXT}).chunks
    assert len(found) >= 3
    return found


def test_a_bad_chunk_is_made_again_with_the_next_seed_and_the_result_says_so(engine):
    asr = ScriptedTranscriber([WRONG, "Hello there."])
    [item] = run(worker_with(engine, asr), text="Hello there.", verify=True)
    assert item["verification"] == [
        {
            "chunk": 0,
            "seed": 41,
            "cer": 0.0,
            "retries": 1,
            "passed": True,
            "transcript": "Hello there.",
        }
    ]
    assert item["seed"] == 40  # the job's seed; the chunk's own is in its entry
    # The kept audio is exactly what the next seed makes without verification.
    [plain] = run(worker_with(engine, None), text="Hello there.", seed=41)
    assert np.array_equal(pcm(item), pcm(plain))
    assert {"verify", "retry", "synthesis"} <= set(item["timings"])
    assert item["usage"]["steps"] == 2 * 2  # the chunk, made twice


def test_the_best_try_is_kept_when_none_passes(engine):
    asr = ScriptedTranscriber(["Hello", "Hello there", WRONG])  # the second is the closest
    [item] = run(worker_with(engine, asr), text="Hello there, friend.", verify=True)
    [entry] = item["verification"]
    assert (entry["seed"], entry["retries"], entry["passed"]) == (41, 2, False)
    assert entry["transcript"] == "Hello there"
    [plain] = run(worker_with(engine, None), text="Hello there, friend.", seed=41)
    assert np.array_equal(pcm(item), pcm(plain))


def test_every_chunk_is_verified_and_a_retry_takes_the_next_unused_seed(engine, chunks):
    n = len(chunks)
    asr = ScriptedTranscriber([chunks[0], WRONG, chunks[1], *chunks[2:]])
    [item] = run(worker_with(engine, asr, verify_retries=1), text=TEXT, verify=True)
    got = [(e["chunk"], e["seed"], e["retries"], e["passed"]) for e in item["verification"]]
    expected = [(i, 40 + i, 0, True) for i in range(n)]
    expected[1] = (1, 40 + 1 + n, 1, True)
    assert got == expected
    assert len(asr.calls) == n + 1 and all(rate == 24_000 for _, rate, _, _ in asr.calls)


def test_the_workers_default_verifies_and_a_request_may_say_no(engine):
    asr = ScriptedTranscriber(["Hello there."])
    worker = worker_with(engine, asr, verify=True)
    [item] = run(worker, text="Hello there.")
    assert item["verification"][0]["passed"] is True
    [item] = run(worker, text="Hello there.", verify=False)
    assert "verification" not in item and "verify" not in item["timings"]
    assert len(asr.calls) == 1


def test_a_stream_verifies_each_chunk_before_sending_it(engine, chunks):
    events: list[str] = []

    def hear(samples, rate):
        events.append("heard")
        calls = events.count("heard")
        return WRONG if calls == 1 else chunks[min(calls - 2, len(chunks) - 1)]

    worker = worker_with(engine, ScriptedTranscriber(hear))
    items = []
    for item in worker.run(
        {"id": "s", "input": {**BASE, "text": TEXT, "verify": True, "stream": True}}
    ):
        assert "error" not in item, item
        events.append(f"item {item['chunk']}")
        items.append(item)
    # chunk 0 heard twice (its first try did not match), then each chunk heard before it is sent
    expected = ["heard", "heard", "item 0"]
    for i in range(1, len(chunks)):
        expected += ["heard", f"item {i}"]
    assert events == expected
    assert [it["verification"][0]["chunk"] for it in items] == list(range(len(chunks)))
    assert items[0]["verification"][0]["seed"] == 40 + len(chunks)
    assert "retry" in items[0]["timings"] and "verify" in items[1]["timings"]


def test_batch_entries_are_verified_each(engine):
    asr = ScriptedTranscriber(["One line.", WRONG, "A second line."])
    [first, second] = run(
        worker_with(engine, asr), texts=["One line.", "A second line."], verify=True
    )
    assert (first["index"], first["verification"][0]["retries"]) == (0, 0)
    assert second["verification"][0] | {"transcript": ""} == {
        "chunk": 0,
        "seed": 41,
        "cer": 0.0,
        "retries": 1,
        "passed": True,
        "transcript": "",
    }
    assert "verify" in second["timings"] and "retry" in second["timings"]


def test_word_captions_flag_the_words_the_recogniser_missed(engine):
    text = "One two three, four five."
    asr = ScriptedTranscriber(["one two four five"])
    [item] = run(worker_with(engine, asr), text=text, captions="words")
    words = item["words"]
    assert [w["text"] for w in words] == ["One", "two", "three,", "four", "five."]
    assert [w["estimated"] for w in words] == [False, False, True, False, False]
    assert words[2]["start"] == words[1]["end"] and words[2]["end"] == words[3]["start"]
    assert all(0 <= w["start"] <= w["end"] <= item["duration_s"] for w in words)
    assert item["segments"][0]["text"] == text  # the sentence cues stay
    assert "verification" not in item  # transcribed for the words only
    assert asr.calls == [(asr.calls[0][0], 24_000, None, True)]


def test_word_captions_reuse_verifications_transcripts(engine, chunks):
    asr = ScriptedTranscriber(list(chunks))  # as text: the script times its words evenly
    items = run(worker_with(engine, asr), text=TEXT, captions="words", verify=True, stream=True)
    assert len(asr.calls) == len(chunks) and all(words for *_, words in asr.calls)
    spoken = [w["text"] for it in items for w in it["words"]]
    assert spoken == TEXT.split() and not any(w["estimated"] for it in items for w in it["words"])
    for it in items:  # each streamed item's words lie within it, timed from the utterance
        start = sum(x["duration_s"] for x in items[: it["chunk"]])
        assert all(
            start - 1e-3 <= w["start"] <= w["end"] <= start + it["duration_s"] + 1e-3
            for w in it["words"]
        )


@pytest.mark.parametrize(
    ("settings", "inp", "fragment"),
    [
        ({}, {"verify": True}, "verify needs the ASR companion"),
        ({}, {"captions": "words"}, 'captions "words" needs'),
        ({"verify": True}, {}, "VERIFY=on needs"),
    ],
)
def test_without_the_companion_verification_is_refused_with_a_code(engine, settings, inp, fragment):
    worker = worker_with(engine, None, **settings)
    [error] = list(worker.run({"id": "x", "input": {**BASE, "text": "Hi.", **inp}}))
    assert error["error_code"] == "ASR_DISABLED" and fragment in error["error"]
    assert error["retryable"] is False


def test_an_explicit_no_serves_on_a_worker_whose_default_cannot(engine):
    [item] = run(worker_with(engine, None, verify=True), text="Hi.", verify=False)
    assert item["duration_s"] > 0


def test_chunks_that_pass_are_sent_exactly_as_made(engine, chunks):
    """Verification only listens when every chunk matches: the same audio as without it."""
    [checked] = run(worker_with(engine, ScriptedTranscriber(list(chunks))), text=TEXT, verify=True)
    [plain] = run(worker_with(engine, None), text=TEXT)
    assert np.array_equal(pcm(checked), pcm(plain))
    assert [e["retries"] for e in checked["verification"]] == [0] * len(chunks)


def test_a_cancel_while_a_chunk_is_heard_drops_its_retry(engine):
    cancelled = []

    def hear(samples, rate):
        cancelled.append(True)  # the client leaves while the recogniser listens
        return WRONG

    worker = worker_with(engine, ScriptedTranscriber(hear))
    control = JobControl(cancelled=lambda: bool(cancelled))
    job = {"id": "c", "input": {**BASE, "text": "Hello there.", "verify": True}}
    [error] = list(worker.run(job, control))
    assert error["error_code"] == "CANCELLED" and len(cancelled) == 1  # no retry was heard


def test_the_http_speech_route_sends_the_verified_chunk(engine):
    """The OpenAI route streams what the queue sends: the retried chunk, not the first try."""
    from openai import OpenAI

    from f5worker.serve.http.service import Service
    from f5worker.testing.http import http_settings, serving

    settings = http_settings()
    service = Service(settings)
    asr = ScriptedTranscriber([WRONG, "Hello there."])
    service.ready(worker_with(engine, asr))
    with serving(service) as base:
        client = OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)
        extra = {"quality": "fast", "seed": 40, "verify": True}
        audio = client.audio.speech.create(
            model="tts-1",
            voice="alloy",
            input="Hello there.",
            response_format="pcm",
            extra_body=extra,
        ).read()
    assert len(asr.calls) == 2
    sent = np.frombuffer(audio, np.int16).astype(np.int32)
    kept, first = (
        pcm(
            run(
                worker_with(engine, None),
                text="Hello there.",
                seed=seed,
                quality="fast",
                nfe_step=None,
            )[0]
        )
        for seed in (41, 40)
    )
    # The stream's encoder scales and rounds to 16 bits its own way: the same to two steps.
    assert len(sent) == len(kept) and np.abs(sent - kept).max() <= 2
    assert np.abs(sent - first[: len(sent)]).max() > 100  # not the first try
