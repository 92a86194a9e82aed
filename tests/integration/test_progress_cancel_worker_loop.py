"""Progress and cancel as RunPod runs the worker: the SDK's real worker loop (MAX_CONCURRENCY=1)
against the fake job API, which records progress posts and serves the stop channel that RunPod
uses for a cancel or a timeout."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from f5worker.serve.limits import join_parts
from f5worker.testing.worker import FakeRunPod, running_worker_loop

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)

SENTENCE = "The first sentence sets the scene in a quiet town by the sea, with boats and gulls. "
# About 20 chunks; mp3, as 4 minutes of wav could never be returned inline (OUTPUT_TOO_LARGE,
# refused before any model work).
LONG = {"text": SENTENCE * 40, "nfe_step": 8, "seed": 3, "format": "mp3"}
MEDIUM = {"text": SENTENCE * 8, "nfe_step": 2, "seed": 4}


@pytest.fixture(scope="module")
def worker_log(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cancel") / "worker.log"


@pytest.fixture(scope="module")
def runpod(demo_model_dir, worker_log) -> Iterator[FakeRunPod]:
    env = {"MODEL_DIR": str(demo_model_dir), "WORKER_VERSION": "cancel-1", "MAX_CONCURRENCY": "1"}
    with FakeRunPod() as fake, running_worker_loop(fake, env, worker_log):
        yield fake
    assert fake.violations == []  # nothing over RunPod's limits
    text = worker_log.read_text()
    assert "Traceback" not in text and SENTENCE.strip() not in text  # no user text logged


def counts(posts: list[tuple[float, str]]) -> list[tuple[int, int]]:
    """("3/8 chunks", ...) -> [(3, 8), ...]."""
    out = []
    for _, text in posts:
        done, total = text.removesuffix(" chunks").split("/")
        out.append((int(done), int(total)))
    return out


def test_progress_is_posted_in_order_and_before_the_result(runpod):
    runpod.submit("medium", MEDIUM)
    done = runpod.wait_done(["medium"])["medium"]
    # one result item (sent in parts where it is larger than one of RunPod's yields)
    assert "error" not in done and len(join_parts(done["output"])) == 1
    posts = runpod.progress["medium"]
    seen = counts(posts)
    total = seen[0][1]
    assert total >= 2 and all(t == total for _, t in seen)
    assert [d for d, _ in seen] == sorted(set(d for d, _ in seen))  # ordered, no repeats
    assert max(stamp for stamp, _ in posts) <= runpod.done_at["medium"]


def test_a_cancelled_job_frees_the_worker_for_the_next(runpod, worker_log):
    """Stopped after its first progress report, the long job ends at its next chunk boundary
    (the engine makes chunks in batches: at the end of the batch under way), and the next
    job is done well before the rest of the long job could have been made: the engine was
    freed, not run to the end. (Not "sooner than one batch": on an idle machine a batch of
    this model is shorter than the SDK's own stop-channel and job-take polling.)"""
    runpod.submit("long", LONG)
    runpod.wait_progress("long")
    first_at, _ = runpod.progress["long"][0]
    [(first_done, total)] = counts(runpod.progress["long"][:1])
    first_batch_s = first_at - runpod.taken_at["long"]
    rest_s = first_batch_s / first_done * (total - first_done)  # the long job's remaining work

    stopped_at = time.monotonic()
    runpod.stop("long")
    runpod.submit("short", {"text": "Short and sweet.", "nfe_step": 2, "seed": 5})
    short = runpod.wait_done(["short"])["short"]
    delay = runpod.done_at["short"] - stopped_at
    log.info(
        "cancel: stop -> next job taken in %.2f s, done in %.2f s; the long job's first batch "
        "took %.2f s; its progress: %s",
        runpod.taken_at["short"] - stopped_at,
        delay,
        first_batch_s,
        [(round(stamp - stopped_at, 2), text) for stamp, text in runpod.progress["long"]],
    )
    assert "error" not in short
    assert "long" not in runpod.done  # a stopped job posts no result: RunPod marks it
    last_done, _ = counts(runpod.progress["long"])[-1]
    assert last_done < total  # it stopped part-way
    assert delay < rest_s / 2, (delay, rest_s)
    assert "job long failed: CANCELLED" in worker_log.read_text()
    # Once stopped, the job reports nothing new (a post already under way may still land).
    assert sum(stamp > stopped_at for stamp, _ in runpod.progress["long"]) <= 1
