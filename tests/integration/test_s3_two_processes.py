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
from f5worker.models.s3_cache import upload_models_to_s3
from f5worker.testing import REPO
from f5worker.testing.s3_servers import TcpProxy, client_for, moto_server, s3_env

pytestmark = pytest.mark.slow  # starts a server or a Python process

BUCKET = "shared-volume"
FILES = {"model.safetensors": os.urandom(2 * 1024 * 1024), "model.json": b"{}\n"}
CHILD = """
import json, logging, sys
from f5worker.config import Settings
from f5worker.models.ranged import RangedConfig
from f5worker.models.s3_cache import sync_models_from_s3
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
        # The first worker's link is slow (1 MB/s per connection), so it holds the lock for
        # about a second while the second starts on a fast one.
        procs: list[subprocess.Popen] = []
        with TcpProxy(url, rate=1_000_000) as slow:
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
