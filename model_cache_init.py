"""The container's start command: diagnostics -> flash-attn -> model -> handler, in one process.

The model step (S3 sync or hub fetch: I/O) runs on a thread while the main thread checks
flash-attn and imports torch and f5-tts (about 16 s cold), so a cold start costs about the
slower of the two rather than their sum; the engine loads once both are done.

`python model_cache_init.py` serves RunPod jobs; `--rp_serve_api --rp_api_port N` serves the
SDK's local HTTP API instead; `--diagnose` prints the environment report and exits 0/1;
`--fetch-model` only puts the model in MODEL_CACHE_DIR (the image build's BAKE_MODEL step).
Arguments this script does not know are left for the RunPod SDK. It never re-executes Python:
a re-exec would lose the imports already paid for and double the logs.

Each step logs its duration, and one `ready:` line with the whole timeline precedes serving.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import diagnostics
from config import Settings
from errors import WorkerError
from flash_attn_setup import ensure_flash_attn
from log_setup import configure_logging
from model_source import prepare_model, resolve_model_dir

log = logging.getLogger("model_cache_init")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--diagnose", action="store_true")
    parser.add_argument("--fetch-model", action="store_true")
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    sys.argv = [sys.argv[0], *rest]  # the SDK parses --rp_* from sys.argv itself
    try:
        settings = Settings.from_env(os.environ)
    except WorkerError as err:
        configure_logging()
        log.error("start-up failed: %s: %s", err.code, err.message)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        if args.diagnose:
            return _diagnose(settings)
        if args.fetch_model:
            prepared = prepare_model(settings)
            if prepared.upload is not None:  # a daemon thread: wait, or the exit would kill it
                prepared.upload.join()
            log.info("model ready at %s", prepared.model_dir)
            return 0
        return _start(settings)
    except WorkerError as err:
        log.error("start-up failed: %s: %s", err.code, err.message)
        return 1


def _diagnose(settings: Settings) -> int:
    facts = diagnostics.collect(settings, os.environ)
    sys.stdout.write(diagnostics.format_report(facts))
    missing = diagnostics.missing_required(facts)
    if missing:
        log.error("missing functions: %s", "; ".join(missing))
    return 1 if missing else 0


class Timeline:
    """`with timeline.step("name"):` logs the step's duration and keeps it for the summary."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.steps: dict[str, float] = {}
        self.started = clock()

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        mark = self.clock()
        try:
            yield
        finally:
            self.steps[name] = self.clock() - mark
            log.info("step %s took %.2f s", name, self.steps[name])

    def summary(self, **extra: str) -> str:
        total = self.clock() - self.started
        parts = [f"{k}={v:.2f}s" for k, v in self.steps.items()]
        # What running the model step beside the imports saved against running them in a row.
        parts.append(f"overlap_saved={max(0.0, sum(self.steps.values()) - total):.2f}s")
        parts += [f"{k}={v}" for k, v in extra.items()]
        return f"total={total:.2f}s " + " ".join(parts)


def _start(settings: Settings) -> int:
    timeline = Timeline()
    with timeline.step("diagnostics"):
        facts = diagnostics.collect(settings, os.environ)
        diagnostics.log_report(facts)
    missing = diagnostics.missing_required(facts)
    if missing:
        log.error("start-up failed: missing functions: %s", "; ".join(missing))
        return 1

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
    try:
        model_future = pool.submit(_model_step, timeline, settings)
        with timeline.step("flash_attn"):
            attn = ensure_flash_attn(
                settings.flash_attn, settings.flash_attn_wheel_url, settings.device
            )
        with timeline.step("import"):
            import engine  # torch and f5-tts: the slow part of a cold start
            import handler

            engine.import_backend()
        model_dir = model_future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)

    with timeline.step("engine"):
        worker = handler.build_worker(settings, model_dir, attn.backend)
    log.info("ready: %s", timeline.summary(attn=attn.backend, version=settings.worker_version))
    handler.start_sdk(worker, settings)
    return 0


def _model_step(timeline: Timeline, settings: Settings) -> Path:
    with timeline.step("model"):
        return resolve_model_dir(settings)


if __name__ == "__main__":
    raise SystemExit(main())
