"""Two worker processes syncing the same cache dir at once: one downloads, the other waits and
then finds everything present and verified, downloading nothing."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from f5worker.config import Settings
from f5worker.models.manifest import build_manifest, write_manifest
from f5worker.testing import REPO
from f5worker.testing.s3_servers import TcpProxy, client_for, moto_server, s3_env
from s3_utils import upload_models_to_s3

pytestmark = pytest.mark.slow  # starts a server or a Python process

BUCKET = "shared-volume"
FILES = {"model.safetensors": os.urandom(2 * 1024 * 1024), "model.json": b"{}\n"}
CHILD = """
import json, logging, sys
from f5worker.config import Settings
from f5worker.models.ranged import RangedConfig
from s3_utils import sync_models_from_s3
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
parts = RangedConfig(part_size=1 << 20, concurrency=2)
result = sync_models_from_s3(Settings.from_env(), ranges=parts)
print(json.dumps({"status": result.status, "downloaded": result.downloaded_bytes,
                  "reused": result.reused_files}))
"""


def start(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD],
        cwd=REPO,
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until_locked(lock: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Until another process holds the flock on `lock` (probing it releases it at once)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if lock.exists():
            fd = os.open(lock, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    return
                raise
            finally:
                os.close(fd)
        time.sleep(0.02)
    raise TimeoutError(f"the first process never took {lock}")


def finish(proc: subprocess.Popen) -> tuple[dict, str]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1]), err


def test_second_process_waits_for_the_first_then_downloads_nothing(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name, data in FILES.items():
        (src / name).write_bytes(data)
    write_manifest(src, build_manifest(src, "m1", {"kind": "test"}))
    cache = tmp_path / "volume"
    with moto_server() as url:
        client_for(url).create_bucket(Bucket=BUCKET)
        settings = Settings(model_name="m1", s3_bucket=BUCKET, model_cache_dir=tmp_path / "up")
        upload_models_to_s3(settings, src, client=client_for(url))
        env = {"MODEL_NAME": "m1", "MODEL_CACHE_DIR": str(cache)}
        # The first worker's link is slow (150 kB/s per connection), so it holds the lock for
        # about 7 s, long enough for the second interpreter to start and ask for it even on a
        # busy machine.
        procs: list[subprocess.Popen] = []
        with TcpProxy(url, rate=150_000) as slow:
            try:
                procs.append(start({**env, **s3_env(slow.url, BUCKET)}))
                wait_until_locked(cache / ".m1.lock", procs[0])
                procs.append(start({**env, **s3_env(url, BUCKET)}))
                (first_result, _), (second_result, second_log) = map(finish, procs)
            finally:
                for proc in procs:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
    total = sum(map(len, FILES.values()))
    assert first_result == {"status": "hit", "downloaded": total, "reused": 0}
    assert second_result == {"status": "hit", "downloaded": 0, "reused": len(FILES)}
    assert "another process holds" in second_log and "acquired after waiting" in second_log
    version = (cache / "m1" / "current").read_text().strip()
    model_dir = cache / "m1" / "versions" / version
    assert (model_dir / "model.safetensors").read_bytes() == FILES["model.safetensors"]


# A worker that syncs, says where its model is, waits until told to load, then reads every file
# against the manifest: the engine's load, after other processes have synced meanwhile.
SYNC_THEN_LOAD = """
import hashlib, json, sys
from f5worker.config import Settings
from f5worker.models.manifest import read_manifest
from s3_utils import sync_models_from_s3
result = sync_models_from_s3(Settings.from_env())
manifest = read_manifest(result.model_dir)  # what this worker synced and means to load
print(json.dumps({"dir": str(result.model_dir), "version": result.version}), flush=True)
sys.stdin.readline()
bad = [e.path for e in manifest.files
       if hashlib.sha256((result.model_dir / e.path).read_bytes()).hexdigest() != e.sha256]
print(json.dumps({"bad": bad, "files": len(manifest.files)}), flush=True)
"""


def publish(url: str, tmp_path: Path, prefix: str, tag: str) -> str:
    src = tmp_path / f"src-{prefix}-{tag}"
    src.mkdir()
    for name, data in {**FILES, "vocab.txt": tag.encode() * 1000}.items():
        (src / name).write_bytes(data if name != "model.safetensors" else tag.encode() + data)
    write_manifest(src, build_manifest(src, "m1", {"kind": "test"}))
    settings = Settings(
        model_name="m1", s3_bucket=BUCKET, s3_prefix=prefix, model_cache_dir=tmp_path / "up"
    )
    return upload_models_to_s3(settings, src, client=client_for(url)).version


def test_workers_of_two_endpoints_and_a_rollout_never_lose_files_between_sync_and_load(tmp_path):
    cache = tmp_path / "volume"
    env = {"MODEL_NAME": "m1", "MODEL_CACHE_DIR": str(cache)}
    procs: list[subprocess.Popen] = []
    with moto_server() as url:
        client_for(url).create_bucket(Bucket=BUCKET)
        a1 = publish(url, tmp_path, "endpoint-a", "a1")
        publish(url, tmp_path, "endpoint-b", "b1")
        try:
            for prefix in ("endpoint-a", "endpoint-b"):
                procs.append(start_child(SYNC_THEN_LOAD, {**env, **s3_env(url, BUCKET, prefix)}))
                json.loads(procs[-1].stdout.readline())  # synced, not yet loaded
            # A rollout on endpoint a: its next worker syncs (and prunes) while the first waits.
            a2 = publish(url, tmp_path, "endpoint-a", "a2")
            procs.append(start_child(SYNC_THEN_LOAD, {**env, **s3_env(url, BUCKET, "endpoint-a")}))
            json.loads(procs[-1].stdout.readline())
            loads = []
            for proc in procs:
                out, err = proc.communicate("load\n", timeout=120)
                assert proc.returncode == 0, err[-3000:]
                loads.append(json.loads(out.strip().splitlines()[-1]))
        finally:
            for proc in procs:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
    assert loads == [{"bad": [], "files": len(FILES) + 1}] * 3
    versions = cache / "m1" / "versions"
    assert (versions / a1).is_dir() and (versions / a2).is_dir()
    assert (cache / "m1" / "current").read_text().strip() == a2


def start_child(code: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
