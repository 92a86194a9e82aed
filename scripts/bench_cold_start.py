#!/usr/bin/env python3
"""Cold start: process start -> first successful job, with the model in a local S3 server.

Starts SeaweedFS on 127.0.0.1, publishes a model there with upload_models_to_s3, then starts
the real worker (`model_cache_init.py` with the SDK's local API) several times:
- cold: empty MODEL_CACHE_DIR, so the model is synced from S3;
- warm: the same cache dir again, so the sync only checks what is there.
For each it reports the seconds to the first successful /runsync and each start-up step as the
worker logs it. The named alternative is the sequential start-up: the sum of the step durations
(what running diagnostics, flash-attn, sync, import and engine load one after another costs);
the ratio wall-time / sum shows what running the S3 sync beside the imports saves.

    .venv/bin/python scripts/bench_cold_start.py [--model full|demo] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench_common import REPO, build_full_arch_model, command_line, machine_facts, table

sys.path.insert(0, str(REPO))

from f5worker.config import Settings
from f5worker.models.demo import build_demo_model
from f5worker.models.s3_upload import upload_models_to_s3
from f5worker.models.sources import ModelSources
from f5worker.s3 import make_client
from f5worker.testing.s3_servers import free_ports, s3_env, seaweedfs

BUCKET = "bench-cold-start"
STEPS = ("diagnostics", "flash_attn", "model", "import", "engine")
JOB = {"input": {"text": "The first job after a cold start.", "seed": 1, "nfe_step": 2}}


def main() -> int:
    args = _parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-cold-", dir=args.work_dir))
    try:
        return _run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # two 1.4 GB caches per repeat


def _run(args: argparse.Namespace, work: Path) -> int:
    name = "F5TTS_v1_Base" if args.model == "full" else "demo"
    source = _build_model(args.model, args.model_dir or work / "src")
    rows: list[list[Any]] = []
    with seaweedfs(work / "weed") as endpoint:
        env = {**s3_env(endpoint, BUCKET), "MODEL_NAME": name, "DEVICE": "cpu"}
        size_gb = _publish(env, name, source)
        results: dict[str, list[dict[str, float]]] = {"cold": [], "warm": []}
        for i in range(args.repeats):
            cache = work / f"cache{i}"
            for scenario in ("cold", "warm"):
                run_env = {**env, "MODEL_CACHE_DIR": str(cache)}
                results[scenario].append(_start_once(run_env, work / f"{scenario}{i}.log"))
        rows = [_row(scenario, runs) for scenario, runs in results.items()]
    headers = [
        "start",
        "first job s",
        *[f"{s} s" for s in STEPS],
        "sum of steps s",
        "ready s",
        "ready / sum",
    ]
    print(f"# cold start, model {name} ({size_gb:.2f} GB in SeaweedFS on 127.0.0.1)")
    print(f"# medians of {args.repeats} runs; {machine_facts()}")
    print(table(headers, rows))
    print(f"\nreproduce: {command_line()}")
    return 0


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        choices=("full", "demo"),
        default="full",
        help="full: F5TTS_v1_Base's architecture with random weights (1.3 GB)",
    )
    parser.add_argument("--model-dir", type=Path, help="reuse an already built model dir")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work-dir", type=Path, default=None)
    return parser.parse_args()


def _build_model(kind: str, out: Path) -> Path:
    if kind == "full":
        return build_full_arch_model(out)
    return build_demo_model(out)


def _publish(env: dict[str, str], name: str, model_dir: Path) -> float:
    settings = Settings.from_env(env)
    os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")})
    client = make_client(settings.s3_endpoint_url, settings.aws_region)
    client.create_bucket(Bucket=BUCKET)
    s3 = ModelSources.from_settings(settings).s3
    upload_models_to_s3(s3, settings.model_name, model_dir, client=client)
    return sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file()) / 1e9


def _start_once(env: dict[str, str], log_path: Path) -> dict[str, float]:
    """Start the worker, time it to its first successful job, read its step timeline."""
    [port] = free_ports(1)
    cmd = [
        sys.executable,
        "model_cache_init.py",
        "--rp_serve_api",
        "--rp_api_host",
        "127.0.0.1",
        "--rp_api_port",
        str(port),
    ]
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        _first_job(proc, f"http://127.0.0.1:{port}", log_path)
        first_job = time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return {"first_job": first_job, **_timeline(log_path.read_text())}


def _first_job(proc: subprocess.Popen, url: str, log_path: Path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    body = json.dumps(JOB).encode()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited:\n{log_path.read_text()[-3000:]}")
        request = urllib.request.Request(
            f"{url}/runsync", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                reply = json.loads(response.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
            continue
        if reply.get("status") != "COMPLETED" or "audio_base64" not in reply["output"][0]:
            raise RuntimeError(f"first job failed: {str(reply)[:500]}")
        return
    raise TimeoutError(f"no successful job in {timeout} s")


def _timeline(log: str) -> dict[str, float]:
    steps = {m[1]: float(m[2]) for m in re.finditer(r"step (\w+) took ([\d.]+) s", log)}
    ready = re.search(r"ready: total=([\d.]+)s", log)
    if ready is None or set(STEPS) - set(steps):
        raise RuntimeError(f"no complete timeline in the worker log:\n{log[-3000:]}")
    return {**steps, "ready": float(ready[1])}


def _row(scenario: str, runs: list[dict[str, float]]) -> list[Any]:
    med = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    step_sum = sum(med[s] for s in STEPS)
    return [
        scenario,
        med["first_job"],
        *[med[s] for s in STEPS],
        step_sum,
        med["ready"],
        med["ready"] / step_sum,
    ]


if __name__ == "__main__":
    raise SystemExit(main())
