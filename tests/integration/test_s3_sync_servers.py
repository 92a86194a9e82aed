"""The S3 cache over real HTTP against two real servers: moto's and SeaweedFS (slow-marked).

The same cases run against both, since S3-compatible stores differ exactly where the cache is
delicate: ranged GETs, conditional writes (IfNoneMatch), delimiter listings.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from f5worker.config import Settings
from f5worker.errors import StorageError
from f5worker.models.manifest import (
    build_manifest,
    manifest_version,
    read_manifest,
    write_manifest,
)
from f5worker.models.ranged import RangedConfig
from f5worker.testing.s3_servers import REGION, client_for, moto_server, seaweedfs
from s3_utils import sync_models_from_s3, upload_models_to_s3

pytestmark = pytest.mark.slow  # starts a server or a Python process

MiB = 1024 * 1024
FILES = {
    "model.safetensors": os.urandom(2 * MiB + 5),
    "vocab.txt": b"a\nb\nc\n",
    "vocos/config.yaml": b"sample_rate: 24000\n",
    "vocos/pytorch_model.bin": os.urandom(300 * 1024),
    "model.json": b"{}\n",
}
PARTS = RangedConfig(part_size=512 * 1024, concurrency=4, read_size=128 * 1024, backoff_s=0.01)


@pytest.fixture(scope="module", params=["moto", pytest.param("seaweedfs", marks=pytest.mark.slow)])
def endpoint(request, tmp_path_factory) -> Iterator[str]:
    if request.param == "moto":
        with moto_server() as url:
            yield url
    else:
        with seaweedfs(tmp_path_factory.mktemp("weed")) as url:
            yield url


@pytest.fixture
def bucket(endpoint, request) -> str:
    """A fresh bucket per test, so the cases stay independent on one server."""
    test = request.node.name.split("[")[0].removeprefix("test_")[:40]
    name = "t-" + test.replace("_", "-").rstrip("-")
    client_for(endpoint).create_bucket(Bucket=name)
    return name


def settings_for(bucket: str, cache: Path, endpoint: str) -> Settings:
    return Settings(
        model_name="m1",
        model_cache_dir=cache,
        s3_bucket=bucket,
        s3_endpoint_url=endpoint,
        aws_region=REGION,
    )


def make_model(path: Path, files: dict[str, bytes] = FILES, **source: str) -> Path:
    for rel, data in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_bytes(data)
    write_manifest(path, build_manifest(path, "m1", {"kind": "test", **source}))
    return path


def tree(path: Path) -> dict[str, bytes]:
    return {
        p.relative_to(path).as_posix(): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def test_upload_cold_warm_tamper_cycle(endpoint, bucket, tmp_path):
    client = client_for(endpoint)
    src = make_model(tmp_path / "src")
    assert upload_models_to_s3(
        settings_for(bucket, tmp_path / "up", endpoint), src, client=client
    ).committed
    settings = settings_for(bucket, tmp_path / "cache", endpoint)

    cold = sync_models_from_s3(settings, client=client, ranges=PARTS)
    assert cold.hit and cold.downloaded_bytes == sum(map(len, FILES.values()))
    assert tree(cold.model_dir) == tree(src)

    warm = sync_models_from_s3(settings, client=client, ranges=PARTS)
    assert (warm.downloaded_bytes, warm.reused_files) == (0, len(FILES))

    (cold.model_dir / "model.safetensors").write_bytes(b"\0" * len(FILES["model.safetensors"]))
    fixed = sync_models_from_s3(settings, client=client, ranges=PARTS)
    assert fixed.downloaded_bytes == len(FILES["model.safetensors"])
    assert tree(fixed.model_dir) == tree(src)


def test_remote_corruption_is_rejected(endpoint, bucket, tmp_path):
    client = client_for(endpoint)
    src = make_model(tmp_path / "src")
    version = upload_models_to_s3(
        settings_for(bucket, tmp_path, endpoint), src, client=client
    ).version
    key = f"f5-tts/m1/{version}/model.safetensors"
    corrupt = bytearray(FILES["model.safetensors"])
    corrupt[MiB] ^= 1
    client.put_object(Bucket=bucket, Key=key, Body=bytes(corrupt))
    settings = settings_for(bucket, tmp_path / "cache", endpoint)
    with pytest.raises(StorageError) as info:
        sync_models_from_s3(settings, client=client, ranges=PARTS)
    assert info.value.message == f"s3://{bucket}/{key}: sha256 does not match the manifest"
    model_dir = tmp_path / "cache" / "m1"
    assert not (model_dir / "model.safetensors").exists()
    assert not (model_dir / "manifest.json").exists()
    assert list(model_dir.rglob("*.part")) == []


def test_concurrent_uploaders_commit_exactly_once(endpoint, bucket, tmp_path):
    dirs = [make_model(tmp_path / name, uploader=name) for name in ("a", "b", "c")]
    results = {}
    start = threading.Barrier(len(dirs))

    def upload(model_dir: Path) -> None:
        start.wait()
        settings = settings_for(bucket, tmp_path / "unused", endpoint)
        results[model_dir.name] = upload_models_to_s3(
            settings, model_dir, client=client_for(endpoint)
        )

    threads = [threading.Thread(target=upload, args=(d,)) for d in dirs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 3 and len({r.version for r in results.values()}) == 1
    winners = [name for name, r in results.items() if r.committed]
    assert len(winners) == 1
    client = client_for(endpoint)
    version = results[winners[0]].version
    body = client.get_object(Bucket=bucket, Key=f"f5-tts/m1/{version}/manifest.json")["Body"]
    assert json.loads(body.read())["source"]["uploader"] == winners[0]


def test_newest_version_is_found_by_listing_when_the_pointer_is_gone(endpoint, bucket, tmp_path):
    client = client_for(endpoint)
    old = make_model(tmp_path / "old")
    new = make_model(tmp_path / "new", {**FILES, "vocab.txt": b"new\n"})
    upload_models_to_s3(settings_for(bucket, tmp_path, endpoint), old, client=client)
    time.sleep(1.1)  # LastModified has a resolution of one second
    upload_models_to_s3(settings_for(bucket, tmp_path, endpoint), new, client=client)
    client.delete_object(Bucket=bucket, Key="f5-tts/m1/latest.json")
    result = sync_models_from_s3(settings_for(bucket, tmp_path / "cache", endpoint), client=client)
    assert result.version == manifest_version(read_manifest(new))
    assert (result.model_dir / "vocab.txt").read_bytes() == b"new\n"
