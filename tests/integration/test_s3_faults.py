"""The sync over real HTTP (moto's threaded server) through a proxy that drops connections."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from f5worker.config import Settings
from f5worker.errors import StorageError
from f5worker.models.manifest import build_manifest, write_manifest
from f5worker.models.ranged import RangedConfig
from f5worker.testing.s3_servers import REGION, TcpProxy, client_for, moto_server
from s3_utils import sync_models_from_s3, upload_models_to_s3

pytestmark = pytest.mark.slow  # starts a server or a Python process

BUCKET = "fault-models"
MiB = 1024 * 1024
# moto reads the whole object for every ranged GET, so the objects stay small.
FILES = {"model.safetensors": os.urandom(3 * MiB + 11), "vocab.txt": b"a\nb\n", "model.json": b"{}"}
PARTS = RangedConfig(part_size=MiB, concurrency=4, read_size=128 * 1024, backoff_s=0.01)


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    """A moto server holding FILES as model m1."""
    with moto_server() as url:
        client = client_for(url)
        client.create_bucket(Bucket=BUCKET)
        src = tmp_path_factory.mktemp("src")
        for name, data in FILES.items():
            (src / name).write_bytes(data)
        write_manifest(src, build_manifest(src, "m1", {"kind": "test"}))
        upload_models_to_s3(settings_for(src.parent / "unused"), src, client=client)
        yield url


def settings_for(cache: Path) -> Settings:
    return Settings(model_name="m1", model_cache_dir=cache, s3_bucket=BUCKET, aws_region=REGION)


def visible(model_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in model_dir.iterdir() if not p.name.startswith(".")}


@pytest.mark.parametrize(
    ("cut_after", "cut_connections"),
    [
        (200, 2),  # inside the first responses' headers: botocore's own retry
        (64 * 1024, 3),  # early in a part's body
        (700_000, 3),  # most of each 1 MiB part written when it breaks: resumed from there
    ],
)
def test_connections_cut_mid_response_are_retried_and_the_result_is_exact(
    endpoint, tmp_path, cut_after, cut_connections
):
    with TcpProxy(endpoint, cut_after=cut_after, cut_connections=cut_connections) as proxy:
        result = sync_models_from_s3(
            settings_for(tmp_path), client=client_for(proxy.url), ranges=PARTS
        )
    assert proxy.cuts == cut_connections
    assert result.hit and result.downloaded_bytes == sum(map(len, FILES.values()))
    assert visible(result.model_dir) == {
        **FILES,
        "manifest.json": (result.model_dir / "manifest.json").read_bytes(),
    }
    assert [p.name for p in result.model_dir.glob(".*.part")] == []


def test_persistent_cuts_fail_clearly_leaving_no_temp_and_no_final_file(endpoint, tmp_path):
    # Every connection dies 64 KiB in: the pointer and manifest fit, the checkpoint never does.
    proxy = TcpProxy(endpoint, cut_after=64 * 1024, cut_connections=10**6)
    with proxy, pytest.raises(StorageError) as info:
        sync_models_from_s3(settings_for(tmp_path), client=client_for(proxy.url), ranges=PARTS)
    message = info.value.message
    assert message.startswith(f"download s3://{BUCKET}/f5-tts/m1/")
    assert message.endswith("/model.safetensors failed: IncompleteReadError after 5 attempts")
    model_dir = tmp_path / "m1"
    assert not (model_dir / "model.safetensors").exists()
    assert not (model_dir / "manifest.json").exists()
    assert [p.name for p in model_dir.glob(".*.part")] == []
