#!/usr/bin/env python3
"""Start-up time per source of the model chain: to the model directory and to a ready engine.

One model, served as a hub fine-tune reference (`hf://bench/f5-SIZE/...`), reaches the worker
from each source of the chain in turn; every start is the real start command
(`model_cache_init.py --rp_serve_api`, CPU) on an empty MODEL_CACHE_DIR, timed from its own log:
- local: MODEL_DIR, the baked or local directory (the named alternative the ratios divide by);
- runpod_cache: RUNPOD_HF_CACHE_DIR holding the repo as huggingface_hub writes its cache (as
  RunPod's cached models do), read in place, hub unreachable;
- s3: an empty MODEL_CACHE_DIR synced from SeaweedFS on 127.0.0.1, hub unreachable;
- hub: a local fake of huggingface.co's file routes, with the S3 cache configured (a miss), so
  the worker fetches, serves, then uploads to S3 in the background (the upload's end is timed
  too, and that upload is the entry the next s3 start reads).
For the demo model and an F5TTS_v1_Base-sized one (its architecture, random weights, 1.3 GB).
The sources are started round-robin, so load from other processes falls on all of them alike.

    .venv/bin/python scripts/bench_sources.py [--sizes demo,full] [--repeats 3]
        [--full-repeats N] [--work-dir /work/bench-sources]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from bench_common import REPO, build_full_arch_model, command_line, machine_facts, table

sys.path.insert(0, str(REPO))

from f5worker.model_ref import parse_reference
from f5worker.models.demo import build_demo_model
from f5worker.models.spec import ModelSpec
from f5worker.testing.s3_servers import FakeHub, client_for, free_ports, s3_env, seaweedfs

BUCKET = "bench-sources"
VOCODER_REPO = "charactr/vocos-mel-24khz"
SOURCES = ("local", "runpod_cache", "s3", "hub")
START_TIMEOUT_S = 600.0
UPLOAD_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Size:
    """One model size: its local directory, its hub repo and the reference naming it there."""

    name: str
    model_dir: Path
    repo: str
    files: dict[str, bytes]  # path in the repo -> bytes
    reference: str

    @property
    def key(self) -> str:
        return parse_reference(self.reference, "MODEL_NAME").key


HEADERS = [
    "model",
    "source",
    "runs",
    "model dir s",
    "ready s",
    "ready / local",
    "process start to ready s",
    "hub: S3 upload done s",
]


def main() -> int:
    args = _parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    rows: list[list[Any]] = []
    for name in args.sizes.split(","):
        size = _size(name, args.work_dir)
        repeats = args.full_repeats if name == "full" and args.full_repeats else args.repeats
        runs = _measure(size, repeats, args.work_dir)
        rows += _rows(size, runs)
        print(table(HEADERS, _rows(size, runs)), flush=True)  # kept if a later size fails
    print(f"\n# start-up per model source, medians; {machine_facts()}")
    print(table(HEADERS, rows))
    print(f"\nreproduce: {command_line()}")
    return 0


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="demo,full", help="demo, full, or both")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--full-repeats", type=int, default=0, help="repeats for full (default: --repeats)"
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path("/work/bench-sources"),
        help="keeps the built models between runs (1.4 GB for full); caches are removed",
    )
    return parser.parse_args()


def _size(name: str, work: Path) -> Size:
    """The model built once into work/, and the same files as a hub repo."""
    if name == "full":
        model_dir = build_full_arch_model(work / "full-src")
        arch = "F5TTS_v1_Base"  # upstream's own config: the common fine-tune case
    elif name == "demo":
        model_dir = work / "demo-src"
        if not (model_dir / "model.json").is_file():
            build_demo_model(model_dir)
        arch = "config.yaml"  # the demo's tiny arch is none of upstream's: ship the yaml
    else:
        raise SystemExit(f"unknown size {name!r}: demo or full")
    spec = ModelSpec.load(model_dir)
    files = {
        spec.checkpoint: (model_dir / spec.checkpoint).read_bytes(),
        "vocab.txt": (model_dir / spec.vocab).read_bytes(),
    }
    if arch == "config.yaml":
        model = {"backbone": spec.backbone, "arch": spec.arch, "mel_spec": spec.mel_spec}
        files["config.yaml"] = yaml.safe_dump({"model": model}).encode()
    repo = f"bench/f5-{name}"
    reference = f"hf://{repo}/{spec.checkpoint}?vocab=vocab.txt&arch={arch}"
    return Size(name, model_dir, repo, files, reference)


def _vocoder_files(size: Size) -> dict[str, bytes]:
    vocos = size.model_dir / ModelSpec.load(size.model_dir).vocoder_dir
    return {f: (vocos / f).read_bytes() for f in ("config.yaml", "pytorch_model.bin")}


def _measure(size: Size, repeats: int, work: Path) -> dict[str, list[dict[str, float]]]:
    runs: dict[str, list[dict[str, float]]] = {s: [] for s in SOURCES}
    scratch = Path(tempfile.mkdtemp(prefix=f"{size.name}-", dir=work))
    repos = {size.repo: size.files, VOCODER_REPO: _vocoder_files(size)}
    try:
        with FakeHub(repos) as hub, seaweedfs(scratch / "weed") as endpoint:
            client_for(endpoint).create_bucket(Bucket=BUCKET)
            runpod_root = _runpod_cache(hub.url, scratch / "runpod" / "hub", repos)
            closed = f"http://127.0.0.1:{free_ports(1)[0]}"  # the hub, unreachable
            base = {"DEVICE": "cpu", "FLASH_ATTN": "off", "HF_HUB_OFFLINE": "0"}
            for i in range(repeats):
                prefix = f"{size.name}-{i}"  # each round's hub start misses, its s3 start hits
                envs = {
                    "local": {"MODEL_DIR": str(size.model_dir), "MODEL_NAME": size.reference},
                    "runpod_cache": {
                        "MODEL_NAME": size.reference,
                        "RUNPOD_HF_CACHE_DIR": str(runpod_root),
                    },
                    "hub": {
                        "MODEL_NAME": size.reference,
                        "HF_ENDPOINT": hub.url,
                        **s3_env(endpoint, BUCKET, prefix),
                    },
                    "s3": {"MODEL_NAME": size.reference, **s3_env(endpoint, BUCKET, prefix)},
                }
                for source in ("local", "runpod_cache", "hub", "s3"):
                    env = {
                        **base,
                        "HF_ENDPOINT": closed,
                        "RUNPOD_HF_CACHE_DIR": str(scratch / "no-runpod-cache"),
                        **envs[source],
                    }
                    pointer = f"{prefix}/{size.key}/latest.json" if source == "hub" else None
                    with _fresh_dirs(scratch, env) as run_env:
                        run = _start_once(run_env, scratch / f"{source}{i}.log", endpoint, pointer)
                    runs[source].append(run)
                    print(f"# {size.name} {source} run {i}: {run}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return runs


def _runpod_cache(hub_url: str, root: Path, repos: dict[str, dict[str, bytes]]) -> Path:
    """RunPod's cached-models layout, written by huggingface_hub itself from the fake hub."""
    from huggingface_hub import hf_hub_download

    for repo, files in repos.items():
        for path in files:
            hf_hub_download(repo, path, cache_dir=root, endpoint=hub_url)
    return root


@contextmanager
def _fresh_dirs(scratch: Path, env: dict[str, str]) -> Iterator[dict[str, str]]:
    """An empty MODEL_CACHE_DIR and HF_HOME per start, removed after (1.3 GB each for full)."""
    run = Path(tempfile.mkdtemp(prefix="run-", dir=scratch))
    try:
        yield {**env, "MODEL_CACHE_DIR": str(run / "models"), "HF_HOME": str(run / "hf")}
    finally:
        shutil.rmtree(run, ignore_errors=True)


def _start_once(
    env: dict[str, str], log_path: Path, endpoint: str, pointer: str | None
) -> dict[str, float]:
    """Start the worker; read its model step and ready time from its log; with `pointer`, also
    wait (from the same start) until its background upload's last object lands in S3."""
    [port] = free_ports(1)
    cmd = [sys.executable, "model_cache_init.py", "--rp_serve_api"]
    cmd += ["--rp_api_host", "127.0.0.1", "--rp_api_port", str(port)]
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        _wait(lambda: " ready: total=" in log_path.read_text(), proc, log_path, START_TIMEOUT_S)
        wall = time.perf_counter() - started
        result = {"wall": wall, **_timeline(log_path.read_text())}
        if pointer is not None:
            client = client_for(endpoint)
            _wait(lambda: _exists(client, pointer), proc, log_path, UPLOAD_TIMEOUT_S)
            result["upload_done"] = time.perf_counter() - started
        return result
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def _exists(client: Any, key: str) -> bool:
    return "Contents" in client.list_objects_v2(Bucket=BUCKET, Prefix=key)


def _wait(ready: Any, proc: subprocess.Popen, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited:\n{log_path.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout} s:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.1)


def _timeline(log: str) -> dict[str, float]:
    model = re.search(r"step model took ([\d.]+) s", log)
    ready = re.search(r" ready: total=([\d.]+)s", log)
    if model is None or ready is None:
        raise RuntimeError(f"no model step or ready line in the worker log:\n{log[-3000:]}")
    return {"model": float(model[1]), "ready": float(ready[1])}


def _rows(size: Size, runs: dict[str, list[dict[str, float]]]) -> list[list[Any]]:
    def med(source: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[source])

    local_ready = med("local", "ready")
    return [
        [
            size.name,
            source,
            len(runs[source]),
            med(source, "model"),
            med(source, "ready"),
            med(source, "ready") / local_ready,
            med(source, "wall"),
            med(source, "upload_done") if source == "hub" else "",
        ]
        for source in SOURCES
    ]


if __name__ == "__main__":
    raise SystemExit(main())
