"""The scheduler end to end, in HTTP mode (MAX_CONCURRENCY=3, the session's demo engine).

The test holds the engine's one thread with a call of its own, lets requests queue their work
behind it, then lets go and reads the order in which the engine made chunks (a recorder on the
engine's per-chunk `_generate`). Nothing is timed: every wait is for a state (what the
scheduler holds, what a client has received), bounded by a deadline.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pytest
from torch import device as torch_device

from f5worker.engine import sampler, torch_thread
from f5worker.engine.plan import BatchPlan, SynthesisParams
from f5worker.engine.scheduler import WorkTag
from f5worker.job.voices import default_voice
from f5worker.serve.http.service import Service
from f5worker.startup.compose import make_worker
from f5worker.testing.http import http_settings, serving

PAGE = " ".join(
    f"Sentence number {n} of the page, with a few more words to say." for n in range(12)
)
SENTENCE = "A short question for the worker."
BODY = {"model": "tts-1", "voice": "alloy", "response_format": "pcm", "quality": "fast", "seed": 2}


def _until(check: Callable[[], bool], what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Held:
    """The torch thread held by a call of the test's own until release()."""

    def __init__(self) -> None:
        self.running, self._release = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=torch_thread.run, args=(self._hold,))
        self._thread.start()
        assert self.running.wait(120)

    def _hold(self) -> None:
        self.running.set()
        self._release.wait(120)

    def release(self) -> None:
        self._release.set()
        self._thread.join(120)


@contextlib.contextmanager
def _serving(engine, policy: str) -> Iterator[tuple[str, list[str]]]:
    """(base URL, the texts of the chunks the engine made, in order) under one policy."""
    one_chunk_a_pass = engine.with_plan(BatchPlan(max_batch=1))
    made: list[str] = []
    generate = one_chunk_a_pass._generate

    def recording(ref, texts, params, seeds):
        made.extend(texts)
        return generate(ref, texts, params, seeds)

    one_chunk_a_pass._generate = recording
    settings = http_settings(max_concurrency=3, http_max_waiting=0, scheduler=policy)
    service = Service(settings)
    service.ready(make_worker(one_chunk_a_pass, settings))
    try:
        with serving(service) as url:
            yield url, made
    finally:
        torch_thread.use_policy("fair")


@pytest.fixture(params=["fair", "strict", "fifo"])
def served(request, engine) -> Iterator[tuple[str, list[str]]]:
    with _serving(engine, request.param) as got:
        yield got


def _listener_has(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Every streamed request's listener has `seconds` of audio left, whatever the clock says
    (the tests hold the engine for as long as they need; a real listener's audio would run)."""

    def buffered(tag: WorkTag, now: float) -> float | None:
        return seconds if tag.live and tag.heard_from is not None else None

    monkeypatch.setattr(WorkTag, "buffered", buffered)


def _page_started(url: str, got_first: threading.Event) -> threading.Thread:
    """A page streamed in a thread to its end; got_first is set at its first audio."""

    def read() -> None:
        with httpx.stream(
            "POST", f"{url}/v1/audio/speech", json={**BODY, "input": PAGE}, timeout=300
        ) as r:
            assert r.status_code == 200
            for data in r.iter_raw():
                if data:
                    got_first.set()

    thread = threading.Thread(target=read)
    thread.start()
    return thread


def _sentence_behind_the_page(url: str, made: list[str]) -> list[str]:
    """A page streaming; the engine held while its next chunk and then a new request's first
    chunk queue; the chunks made after the hold, in order."""
    got_first = threading.Event()
    page = _page_started(url, got_first)
    assert got_first.wait(120)
    held = Held()
    # Behind the held thread: the page's next chunk, then a new request's first.
    _until(lambda: torch_thread.scheduler().pending() == 1, "the page's next chunk")
    page_chunks = len(made)
    sentence: dict[str, object] = {}
    asked = threading.Thread(
        target=lambda: sentence.update(
            r=httpx.post(f"{url}/v1/audio/speech", json={**BODY, "input": SENTENCE}, timeout=120)
        )
    )
    asked.start()
    _until(lambda: torch_thread.scheduler().pending() == 2, "the sentence's first chunk")
    held.release()
    asked.join(120)
    assert sentence["r"].status_code == 200  # type: ignore[attr-defined]
    page.join(300)
    return [t.strip() for t in made[page_chunks:]]


def test_a_sentence_goes_before_a_running_pages_next_chunk(served, request, monkeypatch):
    _listener_has(monkeypatch, 3600.0)  # the page's listener has audio to spare
    after = _sentence_behind_the_page(*served)
    if request.node.callspec.params["served"] in ("fair", "strict"):
        assert after[0] == SENTENCE  # the new request's first audio did not wait for the page
    else:
        assert after[0] != SENTENCE  # first come, first served
        assert SENTENCE in after


@pytest.mark.parametrize("policy", ["fair", "strict"])
def test_a_streamed_page_about_to_run_dry_goes_first_under_fair(engine, policy, monkeypatch):
    """Decision 035: the page's listener has 0.1 s of audio left, less than its next chunk
    takes, so under fair its continuation goes before the sentence's first chunk (strict:
    after). The engine told the page's tag its audio and its pass time (the HTTP route made
    it live); only the clock's reading is fixed here."""
    _listener_has(monkeypatch, 0.1)
    due = torch_thread.scheduler().due
    with _serving(engine, policy) as (url, made):
        after = _sentence_behind_the_page(url, made)
    if policy == "fair":
        assert after[0] != SENTENCE and SENTENCE in after
        assert torch_thread.scheduler().due > due
    else:
        assert after[0] == SENTENCE


def test_a_client_that_leaves_has_its_pending_chunk_dropped_unrun(served):
    url, made = served
    dropped = torch_thread.scheduler().dropped
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({**BODY, "input": PAGE}).encode()
    head = (
        f"POST /v1/audio/speech HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection((host, int(port)), timeout=120)
    sock.sendall(head + body)
    got_first = threading.Event()

    def read() -> None:  # drains what comes, so the server is never held up by its socket
        with contextlib.suppress(OSError):
            while sock.recv(1 << 16):
                got_first.set()

    reader = threading.Thread(target=read)
    reader.start()
    assert got_first.wait(120)
    held = Held()
    _until(lambda: torch_thread.scheduler().pending() == 1, "the page's next chunk")
    made_before = len(made)
    sock.shutdown(socket.SHUT_RDWR)  # the client leaves
    sock.close()
    reader.join(120)
    # While the held call lets nothing run, the page's pending chunk is dropped.
    _until(lambda: torch_thread.scheduler().pending() == 0, "the pending chunk dropped")
    held.release()
    assert torch_thread.scheduler().dropped == dropped + 1
    assert len(made) == made_before  # nothing of the page was made after the client left


def test_a_sentence_runs_between_two_steps_of_a_page_chunk_in_progress(engine, monkeypatch):
    """Pre-emption inside a pass (decision 033): the page's second chunk is held three steps
    into its sampling until the sentence has queued; the sentence's whole pass then runs
    before the page's chunk takes its next step, and neither changes what the other makes."""
    one_chunk_a_pass = engine.with_plan(BatchPlan(max_batch=1))
    voice, params = default_voice(), SynthesisParams(seed=3, nfe_step=6)
    alone = one_chunk_a_pass.synthesize(SENTENCE, voice, params).samples
    page_alone = [p.samples for p in one_chunk_a_pass.synthesize_stream(PAGE, voice, params)]

    real_steps = sampler.euler_steps
    log: list[tuple[int, int]] = []  # (pass, step), as the torch thread runs them
    passes = itertools.count()

    def logged(*args, **kwargs):
        n, steps = next(passes), real_steps(*args, **kwargs)
        for i in itertools.count():
            try:
                next(steps)
            except StopIteration as done:
                return done.value
            log.append((n, i))
            if (n, i) == (1, 2):  # the page's second chunk: hold it until the sentence queues
                _until(lambda: torch_thread.scheduler().pending() == 1, "the sentence")
            yield

    monkeypatch.setattr(sampler, "euler_steps", logged)
    page: list[np.ndarray] = []

    def stream_page() -> None:
        tag = WorkTag("page")
        page.extend(
            p.samples for p in one_chunk_a_pass.synthesize_stream(PAGE, voice, params, tag=tag)
        )

    page_thread = threading.Thread(target=stream_page)
    page_thread.start()
    _until(lambda: (1, 2) in log, "the page's second chunk three steps in")
    sentence = one_chunk_a_pass.synthesize(SENTENCE, voice, params).samples
    page_thread.join(300)

    order = [n for n, _ in log]
    nfe = order.count(0)  # the page's first chunk ran alone
    at = order.index(2)  # the sentence's pass, numbered after the page's second
    assert order[at - 3 : at] == [1, 1, 1]
    assert order[at : at + nfe] == [2] * nfe  # the sentence ran whole, in one go
    assert order[at + nfe] == 1  # then the page's chunk went on where it was
    np.testing.assert_array_equal(sentence, alone)
    assert len(page) == len(page_alone)
    assert all(np.array_equal(a, b) for a, b in zip(page, page_alone, strict=True))


@pytest.mark.parametrize(
    ("plan", "tolerance"),
    [
        (BatchPlan.for_device(torch_device("cpu")), 0.0),  # side by side: exact
        (BatchPlan(max_batch=4), 1e-5),  # CUDA's padded, masked pass, here on CPU
    ],
    ids=["cpu-plan", "padded-masked"],
)
def test_two_requests_share_one_pass_each_with_its_own_seed(engine, plan, tolerance):
    """Batching across requests (decision 034): two requests' sentences queued behind a held
    thread run as one pass; each comes out as it does alone (within the padded batch's float
    rounding), so a request's audio does not depend on who it was batched with."""
    batched = engine.with_plan(plan)
    voice = default_voice()
    texts = {3: SENTENCE, 4: "And another sentence, a little longer than the first one was."}
    alone = {
        seed: batched.synthesize(text, voice, SynthesisParams(seed=seed, nfe_step=4)).samples
        for seed, text in texts.items()
    }
    sched = torch_thread.scheduler()
    merged_before = sched.batched
    torch_thread.use_batching(4)
    made: dict[int, np.ndarray] = {}
    try:
        held = Held()
        threads = [
            threading.Thread(
                target=lambda s=seed, t=text: made.update(
                    {s: batched.synthesize(t, voice, SynthesisParams(seed=s, nfe_step=4)).samples}
                )
            )
            for seed, text in texts.items()
        ]
        for thread in threads:
            thread.start()
        _until(lambda: sched.pending() == 2, "both requests queued")
        held.release()
        for thread in threads:
            thread.join(120)
    finally:
        torch_thread.use_batching(1)
    assert sched.batched == merged_before + 1
    for seed, wave in made.items():
        assert wave.shape == alone[seed].shape
        assert float(np.abs(wave - alone[seed]).max()) <= tolerance
