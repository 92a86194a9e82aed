#!/usr/bin/env python3
"""Benchmark the S3 model-cache sync against `aws s3 cp`, `s5cmd cp` and a ranged-GET ceiling.

Starts SeaweedFS on 127.0.0.1, uploads a model-like file set (one large safetensors file and
small ones; 1.4 GB by default), then times in one run, as medians of several runs:
  ours cold     sync_models_from_s3 into an empty dir (ranged GETs, sha256, fsync, rename)
  ours warm     sync_models_from_s3 again, every file present and recorded as verified
  s3transfer    boto3's transfer manager feeding the same streaming-hash sink (engine we tried)
  post-hash     boto3 download_file per file, then sha256 over each file
  aws s3 cp     `aws s3 cp --recursive` (awscli defaults)
  s5cmd cp      `s5cmd cp` (defaults)
  ceiling       plain parallel ranged GETs (16 threads, 16 MiB ranges), no verification
Each runs in its own process, timed wall-clock from start to exit, so interpreter start and
imports count for every tool alike. Loopback has no latency, so the same set is repeated through
a throttling proxy (a separate process) that caps each connection and delays each request,
like a real S3 link where parallelism matters. Written files land in the page cache; nothing
drops caches (the machine is shared), which favours every tool equally.

    .venv/bin/python scripts/bench_s3_sync.py                 # 1.4 GB, 3 runs
    .venv/bin/python scripts/bench_s3_sync.py --size-mb 200   # a quick run
    .venv/bin/python scripts/bench_s3_sync.py --sweep         # chunk size x concurrency grid
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MiB = 1024 * 1024
BUCKET = "bench"
MODEL = "bench"
BIN = Path(sys.executable).parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1400, help="total size of the file set")
    parser.add_argument("--runs", type=int, default=3, help="runs per cold method (median)")
    parser.add_argument("--warm-runs", type=int, default=5)
    parser.add_argument("--rate-mb", type=float, default=50.0, help="throttle: MB/s per connection")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="throttle: ms per request")
    parser.add_argument("--sweep", action="store_true", help="chunk size x concurrency grid")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--serve-proxy", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--dest", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--chunk-mb", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_proxy:
        return serve_proxy(args.serve_proxy, args.rate_mb * 1e6, args.latency_ms / 1000)
    if args.child:
        return run_child(args)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench-s3-"))
    try:
        return orchestrate(args, work)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)


# --- the orchestrator ------------------------------------------------------------------------


def orchestrate(args: argparse.Namespace, work: Path) -> int:
    from f5worker.testing.s3_servers import client_for, s3_env, seaweedfs

    load_before = os.getloadavg()[0]
    src = make_file_set(work / "src", args.size_mb * MiB)
    total = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    with seaweedfs(work / "weed") as endpoint:
        env = {**os.environ, **s3_env(endpoint, BUCKET), "AWS_DEFAULT_REGION": "us-east-1"}
        env["AWS_REQUEST_CHECKSUM_CALCULATION"] = "when_required"  # awscli, as for our client
        env["AWS_RESPONSE_CHECKSUM_VALIDATION"] = "when_required"
        version = publish(src, endpoint, client_for(endpoint))
        rows: list[tuple[str, str, list[float]]] = []
        proxy = start_proxy(endpoint, args.rate_mb, args.latency_ms)
        try:
            links = {"loopback": endpoint, "throttled": proxy[1]}
            for link, url in links.items():
                if args.sweep:
                    rows += sweep(link, url, env, work, args.runs)
                else:
                    rows += compare(link, url, env, work, version, args)
        finally:
            proxy[0].kill()
            proxy[0].wait()
    print_table(rows, total, args, (load_before, os.getloadavg()[0]))
    return 0


def make_file_set(src: Path, size: int) -> Path:
    """One checkpoint (96 %), a vocoder (4 %) and the small files, like F5TTS_v1_Base."""
    from f5worker.models.manifest import build_manifest, write_manifest

    big, vocoder = int(size * 0.96), int(size * 0.04)
    files = {
        "model_1250000.safetensors": big,
        "vocos/pytorch_model.bin": vocoder,
        "vocab.txt": 11_000,
        "vocos/config.yaml": 500,
        "model.json": 600,
    }
    for rel, n in files.items():
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            block = os.urandom(min(n, 8 * MiB))
            written = 0
            while written < n:  # repeated random blocks: incompressible, fast to make
                written += fh.write(block[: n - written])
    write_manifest(src, build_manifest(src, MODEL, {"kind": "bench"}))
    return src


def publish(src: Path, endpoint: str, client) -> str:
    from f5worker.config import Settings
    from f5worker.models.s3_upload import upload_models_to_s3
    from f5worker.models.sources import ModelSources

    client.create_bucket(Bucket=BUCKET)
    settings = Settings(s3_bucket=BUCKET, model_cache_dir=src.parent / "up")
    s3 = ModelSources.from_settings(settings).s3
    return upload_models_to_s3(s3, MODEL, src, client=client).version


def start_proxy(endpoint: str, rate_mb: float, latency_ms: float) -> tuple[subprocess.Popen, str]:
    args = [sys.executable, __file__, "--serve-proxy", endpoint, "--rate-mb", str(rate_mb)]
    proc = subprocess.Popen(
        [*args, "--latency-ms", str(latency_ms)], stdout=subprocess.PIPE, text=True
    )
    return proc, proc.stdout.readline().strip()


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return seconds, proc.stdout


def child_cmd(engine: str, url: str, dest: Path, **extra: int | None) -> list[str]:
    cmd = [sys.executable, __file__, "--child", engine, "--endpoint", url, "--dest", str(dest)]
    for name, value in extra.items():
        if value is not None:
            cmd += [f"--{name.replace('_', '-')}", str(value)]
    return cmd


def rounds(runs: int, dest: Path, methods: dict[str, list[str]], env) -> dict[str, list[float]]:
    """Each round runs every method once, in a rotating order, into an emptied dest, so load
    from other processes on a shared machine spreads over all methods instead of hitting one."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    names = list(methods)
    for i in range(runs):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            shutil.rmtree(dest, ignore_errors=True)
            times[name].append(timed(methods[name], env)[0])
    return times


def compare(link: str, url: str, env, work: Path, version: str, args) -> list:
    dest = work / "dest"
    remote = f"s3://{BUCKET}/f5-tts/{MODEL}/{version}/"
    aws = [str(BIN / "aws"), "s3", "cp", "--recursive", remote, str(dest)]
    aws += ["--endpoint-url", url, "--only-show-errors"]
    methods = {
        "ours cold": child_cmd("ours", url, dest),
        "s3transfer": child_cmd("s3transfer", url, dest),
        "post-hash": child_cmd("post-hash", url, dest),
        "aws s3 cp": aws,
        "s5cmd cp": [str(BIN / "s5cmd"), "--endpoint-url", url, "cp", remote + "*", f"{dest}/"],
        "ceiling": child_cmd("ceiling", url, dest),
    }
    times = rounds(args.runs, dest, methods, env)
    # Warm: the last round's cold sync refills dest, then sync again with every file present.
    timed(child_cmd("ours", url, dest), env)
    warm_wall, warm_call = [], []
    for _ in range(args.warm_runs):
        seconds, out = timed(child_cmd("ours", url, dest), env)
        warm_wall.append(seconds)
        warm_call.append(json.loads(out)["seconds"])
    rows = [(link, name, t) for name, t in times.items()]
    rows.insert(1, (link, "ours warm", warm_wall))
    rows.insert(2, (link, "ours warm (sync call)", warm_call))
    return rows


def sweep(link: str, url: str, env, work: Path, runs: int) -> list:
    dest = work / "dest"
    methods = {
        f"ours {part} MiB x {conc}": child_cmd("ours", url, dest, chunk_mb=part, concurrency=conc)
        for part in (8, 16, 32, 64)
        for conc in (8, 16, 32)
    }
    return [(link, name, t) for name, t in rounds(runs, dest, methods, env).items()]


def print_table(rows: list, total: int, args: argparse.Namespace, load: tuple) -> None:
    medians = {(link, name): statistics.median(times) for link, name, times in rows}
    print(
        f"\nS3 sync of {total / 1e6:.0f} MB ({total / MiB:.0f} MiB) from SeaweedFS on 127.0.0.1; "
        f"throttled = {args.rate_mb:g} MB/s per connection + {args.latency_ms:g} ms per request; "
        f"{os.cpu_count()} CPUs, load average {load[0]:.1f} before / {load[1]:.1f} after; "
        "wall time per process, median\n"
    )
    print("| link | method | runs | median s | MB/s | vs aws s3 cp | vs ceiling |")
    print("|---|---|---|---|---|---|---|")
    for link, name, times in rows:
        median = medians[(link, name)]
        aws = medians.get((link, "aws s3 cp"))
        ceiling = medians.get((link, "ceiling"))
        cold = "warm" not in name
        rate = f"{total / 1e6 / median:.0f}" if cold else "-"
        vs_aws = f"{aws / median:.2f}x" if aws and cold else "-"
        vs_ceiling = f"{ceiling / median:.0%}" if ceiling and cold else "-"
        print(
            f"| {link} | {name} | {len(times)} | {median:.2f} | {rate} | {vs_aws} | {vs_ceiling} |"
        )
    print("\nreproduce: .venv/bin/python scripts/bench_s3_sync.py " + shlex.join(sys.argv[1:]))


# --- the engines, each in its own process -------------------------------------------------------


def run_child(args: argparse.Namespace) -> int:
    from f5worker.s3 import make_client

    started = time.perf_counter()
    client = make_client(args.endpoint, "us-east-1", max_pool_connections=64)
    engine = {
        "ours": child_ours,
        "s3transfer": child_s3transfer,
        "post-hash": child_posthash,
        "ceiling": child_ceiling,
    }
    nbytes = engine[args.child](client, args)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "bytes": nbytes}))
    return 0


def child_ours(client, args: argparse.Namespace) -> int:
    from dataclasses import replace

    from f5worker.config import Settings
    from f5worker.models.s3_sync import SYNC_RANGES, sync_models_from_s3
    from f5worker.models.sources import ModelSources

    ranges = SYNC_RANGES
    if args.chunk_mb:
        ranges = replace(ranges, part_size=args.chunk_mb * MiB)
    if args.concurrency:
        ranges = replace(ranges, concurrency=args.concurrency)
    settings = Settings(s3_bucket=BUCKET, model_cache_dir=args.dest, s3_endpoint_url=args.endpoint)
    sources = ModelSources.from_settings(settings)
    return sync_models_from_s3(sources, MODEL, client=client, ranges=ranges).downloaded_bytes


def _remote_files(client) -> tuple[str, list]:
    from f5worker.models.s3_layout import find_latest

    version, manifest = find_latest(client, BUCKET, f"f5-tts/{MODEL}/")
    return f"f5-tts/{MODEL}/{version}/", list(manifest.files)


class _Seekable:
    """The file-like face s3transfer writes through (seek + write from its IO thread)."""

    def __init__(self, sink) -> None:
        self.sink = sink
        self.pos = 0

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = offset
        return offset

    def tell(self) -> int:
        return self.pos

    def write(self, data: bytes) -> int:
        self.sink.write_at(self.pos, data)
        self.pos += len(data)
        return len(data)


def child_s3transfer(client, args: argparse.Namespace) -> int:
    """boto3's transfer manager (16 MiB parts, 16 threads) into the same hashing sink."""
    from boto3.s3.transfer import TransferConfig, create_transfer_manager

    from f5worker.models.ranged import HashingSink

    prefix, entries = _remote_files(client)
    config = TransferConfig(
        multipart_threshold=16 * MiB,
        multipart_chunksize=16 * MiB,
        max_concurrency=16,
        io_chunksize=MiB,
        preferred_transfer_client="classic",
    )
    with create_transfer_manager(client, config) as manager:
        jobs = []
        for entry in entries:
            dest = args.dest / entry.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            sink = HashingSink(os.open(dest, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644))
            future = manager.download(BUCKET, prefix + entry.path, _Seekable(sink))
            jobs.append((entry, sink, future))
        for entry, sink, future in jobs:
            future.result()
            if sink.hexdigest() != entry.sha256:
                raise SystemExit(f"{entry.path}: sha256 mismatch")
            os.fsync(sink.fd)
            os.close(sink.fd)
    return sum(e.size for e in entries)


def child_posthash(client, args: argparse.Namespace) -> int:
    """boto3's download_file (parallel ranged GETs into the file) and sha256 afterwards."""
    from boto3.s3.transfer import TransferConfig

    from f5worker.models.manifest import sha256_file

    prefix, entries = _remote_files(client)
    config = TransferConfig(
        multipart_threshold=16 * MiB, multipart_chunksize=16 * MiB, max_concurrency=16
    )
    for entry in entries:
        dest = args.dest / entry.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(BUCKET, prefix + entry.path, str(dest), Config=config)
        if sha256_file(dest) != entry.sha256:
            raise SystemExit(f"{entry.path}: sha256 mismatch")
    return sum(e.size for e in entries)


def child_ceiling(client, args: argparse.Namespace) -> int:
    """What the link and this CPU allow: 16 threads of ranged GETs, pwrite, nothing else."""
    prefix, entries = _remote_files(client)
    jobs = []
    fds = {}
    for entry in entries:
        dest = args.dest / entry.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        fds[entry.path] = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        for start in range(0, max(entry.size, 1), 16 * MiB):
            jobs.append((entry, start, min(start + 16 * MiB, entry.size) - 1))

    def fetch(job) -> None:
        entry, start, end = job
        body = client.get_object(
            Bucket=BUCKET, Key=prefix + entry.path, Range=f"bytes={start}-{end}"
        )
        stream, pos = body["Body"], start
        while chunk := stream.read(MiB):
            os.pwrite(fds[entry.path], chunk, pos)
            pos += len(chunk)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(fetch, jobs))
    for fd in fds.values():
        os.close(fd)
    return sum(e.size for e in entries)


def serve_proxy(upstream: str, rate: float, latency: float) -> int:
    from f5worker.testing.s3_servers import TcpProxy

    proxy = TcpProxy(upstream, rate=rate, latency=latency)
    print(proxy.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
