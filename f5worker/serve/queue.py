"""The RunPod queue adapter: hand a ready Worker to the RunPod SDK.

The SDK decides once per handler function, not per request, whether a handler streams
(inspect.isasyncgenfunction), so the handler given to it is the async generator
`QueueHandler.handle`, with `return_aggregate_stream`: /run and /runsync return the list of
items, and /stream returns them as they come. worker-vllm, RunPod's most used worker, makes the
same choice. The SDK's single-job test mode (`python handler.py`, `--test_input`) and its
realtime route call handlers without generator support; there the handler is
`QueueHandler.collected`, which returns the same list in one piece.

Each step of a job (Worker.run's next item) runs in a thread pool of MAX_CONCURRENCY threads,
so the SDK's event loop stays free and concurrent jobs overlap their downloads, encoding and
uploads while the engine serialises the GPU work.

Progress and cancel (QueueHandler): after each text chunk the job's progress, "<done>/<total>
chunks", is posted as RunPod's progress update, which a client sees as the `output` of an
IN_PROGRESS job on /status. The SDK's `progress_update(job, progress)` posts
{"status": "IN_PROGRESS", "output": progress} to the job-done URL from a new thread and returns
at once; it cannot be waited for, so two updates could arrive out of order and the last one
after the result. The same post (rp_http.send_result, which progress_update calls) is made here
on one sender thread per job (progress.py), through one HTTP session per job, and flushed before
the result; a post still under way when the flush wait ends is cancelled. The SDK's local API
(`make run`) runs a job inside its /status request and has no job-done URL: there nothing is
posted. A cancel or timeout makes the SDK (runpod >= 1.12, its stop channel) cancel the job's
task; QueueHandler.stream then stops the job at its next chunk boundary.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from f5worker.config import Settings
from f5worker.job.prepared import JobControl
from f5worker.serve.limits import fit_item
from f5worker.serve.progress import ProgressPost, ProgressSender

if TYPE_CHECKING:  # the worker module imports torch; the adapter is given a ready one
    from f5worker.job.worker import Worker

_DONE = object()


class RunPodProgress:
    """Posts a job's progress to RunPod (what the SDK's progress_update posts), on the
    sender's event loop, through one session opened on first use. The sender bounds each post
    (progress.POST_TIMEOUT_S)."""

    def __init__(self, job: dict[str, Any]) -> None:
        self._job = job
        self._session: Any = None

    async def __call__(self, text: str) -> None:
        from runpod.http_client import AsyncClientSession
        from runpod.serverless.modules import rp_http

        if self._session is None:
            self._session = AsyncClientSession()
        data = {"status": "IN_PROGRESS", "output": text}
        await rp_http.send_result(self._session, data, self._job)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def runpod_progress_post(job: dict[str, Any]) -> ProgressPost | None:
    """This job's progress post to RunPod; None where the SDK has no job-done URL to post to
    (its local API and single-job test mode)."""
    from runpod.serverless.modules import rp_http

    if not rp_http.JOB_DONE_URL.startswith(("http://", "https://")):
        return None
    return RunPodProgress(job)


class QueueHandler:
    """The SDK's handlers around a ready Worker: its jobs stepped on a pool of MAX_CONCURRENCY
    threads, each job's progress posted to RunPod."""

    def __init__(
        self,
        worker: Worker,
        progress_post: Callable[[dict[str, Any]], ProgressPost | None] = runpod_progress_post,
        max_concurrency: int | None = None,
    ) -> None:
        self.worker = worker
        self._progress_post = progress_post
        size = max_concurrency or worker.settings.max_concurrency
        self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="tts-job")

    async def handle(self, job: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The streaming handler: `stream` with the job's progress posted as it goes."""
        post = self._progress_post(job)
        if post is None:
            async for item in self.stream(job):
                yield item
            return
        sender = ProgressSender(post, name=f"progress-{str(job.get('id', '-'))[:40]}")
        flushed = False
        try:
            async for item in self.stream(job, JobControl(progress=sender)):
                if "error" in item:  # the last item: the SDK sends the result right after it
                    await asyncio.to_thread(sender.close)
                    flushed = True
                yield item
            await asyncio.to_thread(sender.close)
            flushed = True
        finally:
            if not flushed:  # stopped: no result follows, so nothing is worth waiting for
                sender.close(flush=False)

    async def stream(
        self, job: dict[str, Any], control: JobControl | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Worker.run stepped in the pool, each item yielded as soon as it exists, in parts
        where it would not fit in one of RunPod's yields (limits.fit_item).

        A stop (the SDK cancels this task on a RunPod cancel or timeout, or its consumer goes
        away) sets a flag the job reads before each chunk: the step under way ends after its
        chunk, so the engine is free for the next job, and the job is closed then."""
        stop = threading.Event()
        base = control or JobControl()
        items = self.worker.run(
            job,
            dataclasses.replace(base, cancelled=lambda: stop.is_set() or base.cancelled()),
        )
        step: Future[Any] | None = None
        try:
            while True:
                step = self._pool.submit(next, items, _DONE)
                item = await asyncio.wrap_future(step)
                if item is _DONE:
                    return
                for part in fit_item(item):
                    yield part
        finally:
            stop.set()
            if step is not None and not step.done():
                # Still in its chunk: close the job from the pool thread once the step ends.
                step.add_done_callback(lambda _step: items.close())
            else:
                items.close()

    async def collected(self, job: dict[str, Any]) -> Any:
        """For SDK modes that cannot stream: the list of items, or the error payload alone."""
        loop = asyncio.get_running_loop()
        items = await loop.run_in_executor(self._pool, lambda: list(self.worker.run(job)))
        if items and "error" in items[-1]:
            return items[-1]
        return items


def sdk_can_stream(argv: list[str]) -> bool:
    """Whether the SDK will run jobs through a path that supports generator handlers.

    The local API (--rp_serve_api) and the RunPod worker loop do; the single-job test mode
    (--test_input, or no RUNPOD_WEBHOOK_GET_JOB) and the realtime route call the handler once
    and would return the generator object unrun.
    """
    from runpod.serverless import _get_realtime_port
    from runpod.serverless.modules.worker_state import IS_LOCAL_TEST

    if "--rp_serve_api" in argv:
        return True
    if _get_realtime_port() or any(a.startswith("--test_input") for a in argv):
        return False
    return not IS_LOCAL_TEST


def sdk_config(worker: Worker, settings: Settings, streaming: bool) -> dict[str, Any]:
    """The SDK's start config. A generator handler cannot ask for a refresh per job (only
    run_job reads `refresh_worker` from a result), but the SDK reads config["refresh_worker"]
    after every job, so a fatal error sets it: the SDK marks the job stopPod and stops taking
    jobs, and RunPod replaces the worker."""
    handler = QueueHandler(worker)
    config: dict[str, Any] = {
        "handler": handler.handle if streaming else handler.collected,
        "return_aggregate_stream": True,
        "concurrency_modifier": lambda _current: settings.max_concurrency,
    }
    worker.on_fatal = lambda: config.__setitem__("refresh_worker", True)
    return config


def start_sdk(
    worker: Worker,
    settings: Settings,
    start: Callable[[dict[str, Any]], None] | None = None,
    argv: list[str] | None = None,
) -> None:
    """Hand the ready worker to the RunPod SDK, which reads its own --rp_* arguments."""
    if start is None:
        import runpod
        from runpod.serverless.modules.rp_logger import RunPodLogger

        RunPodLogger().set_level(settings.sdk_log_level)
        start = runpod.serverless.start
    streaming = sdk_can_stream(sys.argv[1:] if argv is None else argv)
    start(sdk_config(worker, settings, streaming))
