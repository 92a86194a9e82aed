"""The RunPod queue adapter: hand a ready Worker to the RunPod SDK.

The SDK decides once per handler function, not per request, whether a handler streams
(inspect.isasyncgenfunction), so the handler given to it is the async generator
`Worker.handle`, with `return_aggregate_stream`: /run and /runsync return the list of items, and
/stream returns them as they come. worker-vllm, RunPod's most used worker, makes the same choice.
The SDK's single-job test mode (`python handler.py`, `--test_input`) and its realtime route call
handlers without generator support; there the handler is `Worker.handle_collected`, which
returns the same list in one piece.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from f5worker.config import Settings
from f5worker.job.worker import Worker, build_worker


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
    config: dict[str, Any] = {
        "handler": worker.handle if streaming else worker.handle_collected,
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


def serve(settings: Settings, model_dir: Path, attn_backend: str = "torch") -> None:
    start_sdk(build_worker(settings, model_dir, attn_backend), settings)
