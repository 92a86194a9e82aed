"""The start-up sequence: diagnostics -> flash-attn -> model -> engine -> serving, in one process.

The model step (S3 sync or hub fetch: I/O) runs on a thread while the main thread checks
flash-attn and imports torch and f5-tts (about 16 s cold), so a cold start costs about the
slower of the two rather than their sum; the engine loads once both are done.

`model_cache_init.py` (the image's CMD) calls main(), which serves RunPod jobs (SERVE_MODE=queue)
or HTTP requests as a load-balancing endpoint (SERVE_MODE=http, serve/http/serve.py);
`--rp_serve_api --rp_api_port N` serves the SDK's local HTTP API instead; `--diagnose` prints
the environment report and exits 0/1;
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
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from f5worker.config import Settings
from f5worker.errors import WorkerError
from f5worker.log_setup import configure_logging
from f5worker.models.source import prepare_model, resolve_model_dir
from f5worker.models.sources import ModelSources
from f5worker.redact import redact_urls
from f5worker.startup import diagnostics
from f5worker.startup.flash_attn import ensure_flash_attn
from f5worker.startup.timeline import Timeline

if TYPE_CHECKING:
    from f5worker.job.worker import Worker

log = logging.getLogger(__name__)


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
        log.error("start-up failed: %s: %s", err.code, redact_urls(err.message))
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        if args.diagnose:
            return _diagnose(settings)
        if args.fetch_model:
            sources = ModelSources.from_settings(settings)
            prepared = prepare_model(sources, settings.default_model, default=True)
            if prepared.upload is not None:  # a daemon thread: wait, or the exit would kill it
                prepared.upload.join()
            log.info("model ready at %s", prepared.model_dir)
            return 0
        return _start(settings)
    except WorkerError as err:
        log.error("start-up failed: %s: %s", err.code, redact_urls(err.message))
        return 1


def _diagnose(settings: Settings) -> int:
    facts = diagnostics.collect(settings, os.environ)
    sys.stdout.write(diagnostics.format_report(facts))
    missing = diagnostics.missing_required(facts)
    if missing:
        log.error("missing functions: %s", "; ".join(missing))
    return 1 if missing else 0


def _start(settings: Settings) -> int:
    """Serve in the configured mode. The queue mode builds the worker first and then hands it
    to the RunPod SDK; the http mode starts its server first (so /ping answers while the
    model loads) and builds the worker beside it."""
    if settings.serve_mode == "http":
        from f5worker.serve.http.serve import serve_http

        return serve_http(settings, lambda: _build_worker(settings))
    worker = _build_worker(settings)
    if worker is None:
        return 1
    from f5worker.serve import queue as runpod_queue

    runpod_queue.start_sdk(worker, settings)
    return 0


def _build_worker(settings: Settings) -> Worker | None:
    """The start-up timeline up to a warm worker; None when a required function is missing."""
    timeline = Timeline()
    with timeline.step("diagnostics"):
        facts = diagnostics.collect(settings, os.environ)
        diagnostics.log_report(facts)
    missing = diagnostics.missing_required(facts)
    if missing:
        log.error("start-up failed: missing functions: %s", "; ".join(missing))
        return None

    backend_ready = threading.Event()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
    try:
        model_future = pool.submit(_model_step, timeline, settings, backend_ready)
        try:
            with timeline.step("flash_attn"):
                attn = ensure_flash_attn(
                    settings.flash_attn,
                    settings.flash_attn_wheel_url,
                    settings.device,
                    wheel_sha256=settings.flash_attn_wheel_sha256,
                )
            with timeline.step("import"):
                # torch and f5-tts: the slow part of a cold start
                from f5worker.engine.loading import import_backend
                from f5worker.startup.compose import build_worker

                import_backend()
        finally:
            backend_ready.set()  # a model step waiting for it must not hang on a failure
        prepared = model_future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)

    default = settings.default_model.name
    with timeline.step("engine"):
        worker = build_worker(settings, prepared[default], attn.backend, prepared)
    log.info("ready: %s", timeline.summary(attn=attn.backend, version=settings.worker_version))
    return worker


def _model_step(
    timeline: Timeline, settings: Settings, backend_ready: threading.Event
) -> dict[str, Path]:
    """Model name -> directory: the default model's, and with MODELS_PRELOAD=all every
    other listed model's too (their files only; build_worker loads what fits). Only the default
    model is required: another that is nowhere is logged, and a job naming it retries it."""

    def wait_for_backend() -> None:
        # The demo generator builds with torch and f5-tts, which the main thread is importing.
        with timeline.waiting():
            backend_ready.wait()

    sources = ModelSources.from_settings(settings)
    default = settings.default_model
    with timeline.step("model"):
        prepared = {default.name: resolve_model_dir(sources, default, wait_for_backend)}
        if settings.models_preload == "all":
            for ref in settings.model_refs[1:]:
                try:
                    found = prepare_model(sources, ref, wait_for_backend=wait_for_backend)
                except WorkerError as err:
                    log.error("model %s not preloaded: %s: %s", ref.name, err.code, err.message)
                    continue
                prepared[ref.name] = found.model_dir
        return prepared
