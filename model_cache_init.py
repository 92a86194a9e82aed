"""The container's start command: diagnostics -> model directory -> handler, in one process.

`python model_cache_init.py` serves RunPod jobs; `--rp_serve_api --rp_api_port N` serves the
SDK's local HTTP API instead; `--diagnose` prints the environment report and exits 0/1.
Arguments this script does not know are left for the RunPod SDK. It never re-executes Python.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import diagnostics
from config import Settings
from errors import WorkerError
from log_setup import configure_logging
from model_source import resolve_model_dir

log = logging.getLogger("model_cache_init")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--diagnose", action="store_true")
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    sys.argv = [sys.argv[0], *rest]
    try:
        settings = Settings.from_env(os.environ)
    except WorkerError as err:
        configure_logging()
        log.error("start-up failed: %s", err.message)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        return _start(settings, diagnose_only=args.diagnose)
    except WorkerError as err:
        log.error("start-up failed: %s: %s", err.code, err.message)
        return 1


def _start(settings: Settings, diagnose_only: bool) -> int:
    timeline: dict[str, float] = {}
    mark = time.perf_counter()
    facts = diagnostics.collect(settings, os.environ)
    diagnostics.log_report(facts)
    missing = [v for k, v in facts.items() if k.startswith("functions.") and v != "ok"]
    if missing:
        log.error("start-up failed: missing functions: %s", "; ".join(missing))
        return 1
    if diagnose_only:
        return 0
    timeline["diagnostics"] = time.perf_counter() - mark

    mark = time.perf_counter()
    model_dir = resolve_model_dir(settings)
    timeline["model"] = time.perf_counter() - mark

    import handler  # imports torch and f5-tts: the slow part of a cold start

    mark = time.perf_counter()
    worker = handler.build_worker(settings, model_dir)
    timeline["engine"] = time.perf_counter() - mark
    log.info("ready: %s", " ".join(f"{k}={v:.2f}s" for k, v in timeline.items()))
    handler.start_sdk(worker, settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
