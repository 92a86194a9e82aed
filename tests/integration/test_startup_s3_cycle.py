"""The whole cache cycle through the real start-up, with no stand-in at all (docs/design.md,
"The demo model"):
`model_cache_init.py --rp_serve_api` with MODEL_NAME=demo and an S3 cache on a local server.

First start: S3 miss -> the demo generator is the source -> serve -> background upload. Second
start, on an empty cache dir: S3 hit, the same files, and it serves a job.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from f5worker.models.manifest import read_manifest
from f5worker.testing.s3_servers import client_for, moto_server, s3_env, seaweedfs
from f5worker.testing.worker import running_worker

pytestmark = pytest.mark.slow  # starts a server or a Python process

BUCKET = "startup-cycle"
POINTER = "f5-tts/demo/latest.json"


@pytest.fixture(params=["moto", pytest.param("seaweedfs", marks=pytest.mark.slow)])
def endpoint(request, tmp_path_factory) -> Iterator[str]:
    if request.param == "moto":
        with moto_server() as url:
            yield url
    else:
        with seaweedfs(tmp_path_factory.mktemp("weed")) as url:
            yield url


@contextmanager
def worker(env: dict[str, str], log_path: Path) -> Iterator[str]:
    """`python model_cache_init.py --rp_serve_api` on a free port; yields its URL."""
    with running_worker(env, log_path, timeout=300, via_make=False) as url:
        yield url


def runsync(url: str) -> dict:
    payload = {"input": {"text": "Cache cycle.", "seed": 3, "nfe_step": 2}}
    request = urllib.request.Request(
        f"{url}/runsync",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        [item] = json.loads(response.read())[
            "output"
        ]  # the handler's items; one when not streaming
    return item


def served(model_home: Path) -> Path:
    """The version directory `current` names under a model's cache directory."""
    return model_home / "versions" / (model_home / "current").read_text().strip()


def files(model_dir: Path) -> dict[str, bytes]:
    return {
        p.relative_to(model_dir).as_posix(): p.read_bytes()
        for p in sorted(model_dir.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def test_demo_model_miss_upload_then_hit_through_the_real_start_up(endpoint, tmp_path):
    client = client_for(endpoint)
    client.create_bucket(Bucket=BUCKET)
    base = {
        **s3_env(endpoint, BUCKET),
        "MODEL_NAME": "demo",
        "HF_HUB_OFFLINE": "1",
        "DEVICE": "cpu",
        "FLASH_ATTN": "off",
        "PYTHONDONTWRITEBYTECODE": "1",
    }

    def pointer_landed() -> bool:
        return "Contents" in client.list_objects_v2(Bucket=BUCKET, Prefix=POINTER)

    first_log = tmp_path / "first.log"
    first_cache = tmp_path / "first-cache"
    with worker({**base, "MODEL_CACHE_DIR": str(first_cache)}, first_log) as url:
        deadline = time.monotonic() + 120
        while not pointer_landed() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert pointer_landed(), first_log.read_text()[-3000:]
        first_audio = runsync(url)
    text = first_log.read_text()
    assert "S3 cache miss: no manifest under s3://startup-cycle/f5-tts/demo/" in text
    assert "uploaded model demo version" in text and "background S3 upload failed" not in text

    second_log = tmp_path / "second.log"
    second_cache = tmp_path / "second-cache"
    with worker({**base, "MODEL_CACHE_DIR": str(second_cache)}, second_log) as url:
        second_audio = runsync(url)
    text = second_log.read_text()
    first_dir, second_dir = served(first_cache / "demo"), served(second_cache / "demo")
    count = len(read_manifest(first_dir).files)
    assert "S3 cache hit: model demo version" in text and f"downloaded {count} files" in text
    assert "S3 cache miss" not in text and "demo model written" not in text
    assert files(second_dir) == files(first_dir) and second_dir.name == first_dir.name
    # Same weights, same seed: the second worker speaks exactly like the first.
    assert first_audio["seed"] == second_audio["seed"] == 3
    assert base64.b64decode(second_audio["audio_base64"]) == base64.b64decode(
        first_audio["audio_base64"]
    )
