"""JobControl: progress after each chunk and a cancel honoured before the next one, for whole
and streamed jobs alike (Worker.pieces is the one place both pass through)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from f5worker.config import Settings
from f5worker.job.prepared import JobControl
from f5worker.job.worker import Worker
from f5worker.serve.queue import QueueHandler
from f5worker.startup.compose import make_worker

TEXT = (
    "The first sentence sets the scene in a quiet town by the sea. "
    "The second one adds a market, boats, and gulls that argue over bread. "
    "A third sentence follows the fisherman home through narrow streets. "
    "The fourth ends the day with lamps being lit along the harbour wall."
)


@pytest.fixture(scope="module")
def worker(engine) -> Worker:
    return make_worker(engine, Settings(worker_version="control-1"))


def test_prepare_splits_once_and_raises_input_errors_before_synthesis(worker):
    job = worker.prepare({"text": TEXT, "nfe_step": 2})
    assert len(job.chunks) >= 2
    assert job.stamp("v")["model"] == job.model.name
    with pytest.raises(Exception) as err:
        worker.prepare({"text": TEXT, "nfe_step": 0})
    assert getattr(err.value, "code", "") == "INVALID_INPUT"


@pytest.mark.parametrize("stream", [False, True])
def test_progress_counts_every_chunk(worker, stream):
    seen: list[tuple[int, int]] = []
    control = JobControl(progress=lambda done, total: seen.append((done, total)))
    items = list(worker.run({"input": {"text": TEXT, "nfe_step": 2, "stream": stream}}, control))
    assert "error" not in items[-1]
    total = seen[-1][1]
    assert total >= 2
    assert seen == [(i, total) for i in range(1, total + 1)]


@pytest.mark.parametrize("stream", [False, True])
def test_cancel_stops_before_the_next_chunk(worker, stream):
    done: list[int] = []
    control = JobControl(cancelled=lambda: bool(done), progress=lambda n, _total: done.append(n))
    items = list(worker.run({"input": {"text": TEXT, "nfe_step": 2, "stream": stream}}, control))
    assert done == [1]  # one chunk made, then nothing more
    assert items[-1]["error_code"] == "CANCELLED"
    assert items[-1]["retryable"] is False
    assert len(items) == (2 if stream else 1)  # a stream keeps the chunk it already sent


def test_a_cancelled_handler_task_stops_the_job_at_the_next_chunk(worker):
    """What the SDK does on a RunPod cancel: it cancels the handler's task. The step under way
    (here held inside its first chunk's progress report) finishes that chunk, then stops."""
    seen: list[int] = []
    in_chunk, resume = threading.Event(), threading.Event()

    def progress(done: int, _total: int) -> None:
        seen.append(done)
        in_chunk.set()
        resume.wait(60)

    handler = QueueHandler(worker, max_concurrency=1)

    async def cancel_mid_job() -> None:
        job = {"id": "c", "input": {"text": TEXT, "nfe_step": 2}}
        items = handler.stream(job, JobControl(progress=progress))
        task = asyncio.create_task(anext(items))
        await asyncio.to_thread(in_chunk.wait, 60)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await items.aclose()

    asyncio.run(cancel_mid_job())
    resume.set()
    handler._pool.submit(lambda: None).result(timeout=60)  # one thread: after the job's step
    assert seen == [1]
