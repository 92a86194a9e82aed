"""model_source with the S3 cache: miss -> hub fetch -> serve -> background upload -> next start
is a hit, and the fallbacks around it. The hub is FakeHub on 127.0.0.1, reached through
HF_ENDPOINT exactly as the worker would reach huggingface.co."""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from f5worker.config import Settings
from f5worker.errors import ModelError
from f5worker.models import source as model_source
from f5worker.models.hub import fetch_from_hub
from f5worker.models.manifest import build_manifest, write_manifest
from f5worker.models.source import PreparedModel, prepare_model
from f5worker.models.sources import ModelSources
from f5worker.testing import REPO
from f5worker.testing.s3_servers import (
    REGION,
    FakeHub,
    client_for,
    free_ports,
    moto_server,
    s3_env,
)

pytestmark = pytest.mark.slow  # starts a server or a Python process

MODEL = "F5TTS_v1_Base"
REPOS = {
    "SWivid/F5-TTS": {
        "F5TTS_v1_Base/model_1250000.safetensors": os.urandom(1_500_000),
        "F5TTS_v1_Base/vocab.txt": b"a\nb\n",
    },
    "charactr/vocos-mel-24khz": {
        "config.yaml": b"sample_rate: 24000\n",
        "pytorch_model.bin": os.urandom(100_000),
    },
}
CHILD = """
import json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
from f5worker.config import Settings
from f5worker.models.source import prepare_model
from f5worker.models.sources import ModelSources
settings = Settings.from_env()
sources = ModelSources.from_settings(settings)
prepared = prepare_model(sources, settings.default_model, default=True)
if prepared.upload is not None:
    prepared.upload.join(120)
print(json.dumps({"origin": prepared.origin, "dir": str(prepared.model_dir)}))
"""


@pytest.fixture(scope="module")
def s3_url():
    with moto_server() as url:
        yield url


@pytest.fixture
def bucket(s3_url, request) -> str:
    name = "cycle-" + request.node.name.removeprefix("test_")[:30].replace("_", "-").rstrip("-")
    client_for(s3_url).create_bucket(Bucket=name)
    return name


@pytest.fixture
def online(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


def start_worker(env: dict[str, str], cache: Path) -> tuple[dict, str]:
    """The model step of a worker start, in its own process, with the real environment."""
    full = {
        **os.environ,
        **env,
        "MODEL_NAME": MODEL,
        "MODEL_CACHE_DIR": str(cache / "models"),
        "HF_HOME": str(cache / "hf"),
        "HF_HUB_OFFLINE": "0",
        "PYTHONPATH": str(REPO),
    }
    proc = subprocess.run(
        [sys.executable, "-c", CHILD],
        cwd=REPO,
        env=full,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def tree(path: Path) -> dict[str, bytes]:
    return {
        p.relative_to(path).as_posix(): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def test_miss_fetches_from_the_hub_uploads_and_the_next_start_is_a_hit(s3_url, bucket, tmp_path):
    env = s3_env(s3_url, bucket)
    with FakeHub(REPOS) as hub:
        env["HF_ENDPOINT"] = hub.url
        first, first_log = start_worker(env, tmp_path / "first")
        hub_calls = len(hub.requests)
        second, second_log = start_worker(env, tmp_path / "second")
        assert len(hub.requests) == hub_calls  # the second start never asked the hub
    assert first["origin"] == "hub" and hub_calls > 0
    assert "S3 cache miss" in first_log and f"uploaded model {MODEL} version" in first_log
    assert second["origin"] == "s3" and "S3 cache hit" in second_log
    assert tree(Path(second["dir"])) == tree(Path(first["dir"]))
    keys = {o["Key"] for o in client_for(s3_url).list_objects_v2(Bucket=bucket)["Contents"]}
    assert f"f5-tts/{MODEL}/latest.json" in keys


def settings_for(tmp_path: Path, bucket: str | None, endpoint: str | None, **kw) -> Settings:
    return Settings(
        model_name=kw.pop("model_name", MODEL),
        model_cache_dir=tmp_path / "models",
        hf_home=tmp_path / "hf",
        s3_bucket=bucket,
        s3_endpoint_url=endpoint,
        aws_region=REGION,
        **kw,
    )


def prepare(settings: Settings, **kw) -> PreparedModel:
    """The default model of settings, prepared as start-up prepares it."""
    sources = ModelSources.from_settings(settings)
    return prepare_model(sources, settings.default_model, default=True, **kw)


@pytest.fixture
def s3_credentials(monkeypatch):
    for name, value in s3_env("unused", "unused").items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)


def test_miss_with_a_complete_local_copy_serves_it_and_uploads_it(
    s3_url, bucket, tmp_path, s3_credentials
):
    local = tmp_path / "models" / "m1"
    local.mkdir(parents=True)
    (local / "model.json").write_text("{}")
    write_manifest(local, build_manifest(local, "m1", {"kind": "test"}))
    settings = settings_for(tmp_path, bucket, s3_url, model_name="m1")
    prepared = prepare(settings, fetch=lambda s, n, d: pytest.fail("fetched"))
    # The flat copy an older worker left is served as a version of its own (hard links).
    assert prepared.origin == "local" and prepared.model_dir.parent == local / "versions"
    assert tree(prepared.model_dir) == {
        "model.json": b"{}",
        "manifest.json": (local / "manifest.json").read_bytes(),
    }
    assert (local / "model.json").stat().st_ino == (prepared.model_dir / "model.json").stat().st_ino
    prepared.upload.join(60)
    assert prepare(settings_for(tmp_path / "b", bucket, s3_url, model_name="m1")).origin == "s3"


def test_with_s3_configured_an_unreachable_hub_fails_start_up(
    s3_url, bucket, tmp_path, s3_credentials, online
):
    closed = f"http://127.0.0.1:{free_ports(1)[0]}"
    fetch = functools.partial(fetch_from_hub, endpoint=closed)
    with pytest.raises(ModelError, match=r"hub resolve SWivid/F5-TTS/.* failed: ConnectError"):
        prepare(settings_for(tmp_path, bucket, s3_url), fetch=fetch)


def test_a_failing_background_upload_is_logged_and_serving_goes_on(
    s3_url, tmp_path, s3_credentials, online, caplog
):
    settings = settings_for(tmp_path, "no-such-bucket", s3_url)
    with FakeHub(REPOS) as hub, caplog.at_level(logging.WARNING):
        prepared = prepare(settings, fetch=functools.partial(fetch_from_hub, endpoint=hub.url))
        prepared.upload.join(60)
    assert prepared.origin == "hub" and (prepared.model_dir / "manifest.json").is_file()
    messages = [(r.levelname, r.threadName, r.getMessage()) for r in caplog.records]
    assert [m[0] for m in messages] == ["WARNING", "ERROR"]
    assert messages[0][2].startswith("S3 model cache unavailable (list s3://no-such-bucket/")
    assert "NoSuchBucket" in messages[0][2]
    assert messages[1][1] == "s3-cache-upload"
    assert messages[1][2].startswith("background S3 upload failed; serving continues: upload ")
    assert "NoSuchBucket" in messages[1][2]


def test_without_s3_an_unreachable_hub_serves_the_demo_with_one_warning(
    tmp_path, caplog, monkeypatch
):

    built = []

    def build(path: Path, _wait) -> Path:
        built.append(path)
        (path / "model.json").write_text("{}")
        write_manifest(path, build_manifest(path, "demo", {"kind": "demo"}))
        return path

    monkeypatch.setattr(model_source, "_build_demo", build)
    with caplog.at_level(logging.WARNING):
        prepared = prepare(settings_for(tmp_path, None, None, demo_fallback=True))
    assert prepared.origin == "demo-fallback" and len(built) == 1
    assert built[0].parent == prepared.model_dir.parent == tmp_path / "models/demo/versions"
    assert (prepared.model_dir / "model.json").is_file() and not built[0].exists()
    assert prepared.upload is None
    [record] = caplog.records
    assert record.levelname == "WARNING"
    assert record.getMessage().startswith(
        f"model {MODEL} is not cached and the hub is unreachable (hub resolve SWivid/F5-TTS/"
    )
    assert record.getMessage().endswith("serving the demo model instead, whose audio is noise")


def test_a_named_model_found_nowhere_fails_naming_it_and_never_serves_the_demo(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(model_source, "_build_demo", lambda *_: pytest.fail("built the demo"))
    with pytest.raises(ModelError) as info:
        prepare(settings_for(tmp_path, None, None))  # demo_fallback: MODEL_NAME was set
    assert info.value.message.startswith(
        f"model {MODEL} is not in RunPod's cached models, MODEL_CACHE_DIR; hub resolve SWivid/"
    )
    assert not (tmp_path / "models" / "demo").exists()
