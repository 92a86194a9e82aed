"""Every source of the model chain through the real start-up (`model_cache_init.py`), with a
hub fine-tune reference as an operator writes it (#12): RunPod's cached models and the S3 cache
with the hub unreachable, MODELS_PRELOAD=all, and models found nowhere, which fail with a coded
error naming them and are never replaced by the demo model.

"Unreachable" is HF_ENDPOINT on a closed port with HF_HUB_OFFLINE=0: any attempt to reach the
hub would fail the start or the job, so a passing test shows that nothing was downloaded.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import pytest

from f5worker.model_ref import parse_reference
from f5worker.testing import REPO, finetune
from f5worker.testing.s3_servers import FakeHub, client_for, free_ports, moto_server, s3_env
from f5worker.testing.worker import running_worker, runsync

pytestmark = pytest.mark.slow

SAFET = finetune.reference("model_1000.safetensors")
PT = finetune.reference("model_1000.pt")
KEY = parse_reference(SAFET, "MODEL_NAME").key
VOCODER_REPO = "charactr/vocos-mel-24khz"
BUCKET = "model-sources"
JOB = {"text": "Hello there.", "seed": 3, "nfe_step": 2}


@pytest.fixture(scope="module")
def repos() -> dict[str, dict[str, bytes]]:
    return {
        finetune.REPO: {
            **finetune.finetune_files(seed=1),
            **finetune.finetune_files(seed=2, pt=True),
        },
        VOCODER_REPO: finetune.vocoder_files(),
    }


@pytest.fixture
def hub(repos) -> Iterator[FakeHub]:
    with FakeHub(repos) as fake:
        yield fake


@pytest.fixture
def closed() -> str:
    """A hub URL nothing answers on."""
    return f"http://127.0.0.1:{free_ports(1)[0]}"


def env_for(tmp_path: Path, hub_url: str, **extra: str) -> dict[str, str]:
    return {
        "MODEL_CACHE_DIR": str(tmp_path / "models"),
        "HF_HOME": str(tmp_path / "hf"),
        "HF_ENDPOINT": hub_url,
        "HF_HUB_OFFLINE": "0",
        "RUNPOD_HF_CACHE_DIR": str(tmp_path / "no-runpod-cache"),
        "DEVICE": "cpu",
        "FLASH_ATTN": "off",
        **extra,
    }


@contextmanager
def worker(env: dict[str, str], log_path: Path) -> Iterator[str]:
    with running_worker(env, log_path, timeout=300, via_make=False) as url:
        yield url


def last_item(url: str, **extra: Any) -> dict[str, Any]:
    """The job's last item: its audio, or its coded error (the local API says COMPLETED)."""
    return runsync(url, {**JOB, **extra})["output"][-1]


def audio(item: dict[str, Any]) -> bytes:
    assert "audio_base64" in item, item
    return base64.b64decode(item["audio_base64"])


def test_runpod_cached_models_serve_a_hub_finetune_in_place_with_the_hub_unreachable(
    tmp_path, hub, repos, closed, monkeypatch
):
    import huggingface_hub.constants
    from huggingface_hub import hf_hub_download

    # RunPod's layout, written by huggingface_hub itself, as RunPod's own download writes it.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    root = tmp_path / "runpod-volume" / "huggingface-cache" / "hub"
    for repo, files in repos.items():
        for path in files:
            hf_hub_download(repo, path, cache_dir=root, endpoint=hub.url)
    env = env_for(tmp_path, closed, MODEL_NAME=SAFET, RUNPOD_HF_CACHE_DIR=str(root))
    log_path = tmp_path / "worker.log"
    with worker(env, log_path) as url:
        item = last_item(url)
    assert item["model"] == SAFET and audio(item)
    text = log_path.read_text()
    assert f"model {KEY}: runpod_cache hit in " in text
    assert "read in place from RunPod's cache" in text and "downloading" not in text
    assert not list((tmp_path / "models").rglob("*.safetensors"))  # nothing copied


def test_a_hub_finetune_is_uploaded_then_served_from_s3_with_the_hub_unreachable(
    tmp_path, hub, closed
):
    with moto_server(BUCKET) as endpoint:
        s3 = s3_env(endpoint, BUCKET)
        first_log = tmp_path / "first.log"
        first_env = env_for(tmp_path / "first", hub.url, MODEL_NAME=SAFET, **s3)
        with worker(first_env, first_log) as url:
            first = last_item(url)
            wait_for_object(client_for(endpoint), f"f5-tts/{KEY}/latest.json", first_log)
        assert f"model {KEY}: local/source hub in " in first_log.read_text()
        gets = len(hub.requests)

        second_log = tmp_path / "second.log"
        second_env = env_for(tmp_path / "second", closed, MODEL_NAME=SAFET, **s3)
        with worker(second_env, second_log) as url:
            second = last_item(url)
    text = second_log.read_text()
    assert f"model {KEY}: s3 hit in " in text and "local/source" not in text
    assert len(hub.requests) == gets
    # The same files, the same seed: the second worker speaks exactly like the first.
    assert audio(second) == audio(first) and second["model"] == SAFET


def wait_for_object(client: Any, key: str, log_path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while "Contents" not in client.list_objects_v2(Bucket=BUCKET, Prefix=key):
        assert time.monotonic() < deadline, log_path.read_text()[-3000:]
        time.sleep(0.5)


def test_models_preload_all_loads_every_model_before_the_first_job(tmp_path, hub):
    env = env_for(
        tmp_path,
        hub.url,
        MODELS=f"ft={SAFET}, ftpt={PT}",
        MODELS_PRELOAD="all",
        MAX_RESIDENT_MODELS="2",
    )
    log_path = tmp_path / "worker.log"
    with worker(env, log_path) as url:
        other = last_item(url, model="ftpt")
        default = last_item(url)
    assert other["model"] == "ftpt" and "model_load" not in other["timings"]
    assert default["model"] == "ft" and audio(other) != audio(default)
    text = log_path.read_text()
    assert "on first use" not in text and "evicted" not in text
    assert text.count("warm-up took") == 2
    assert text.index("warm-up took", text.index("warm-up took") + 1) < text.index(" ready: ")


def test_another_model_found_nowhere_is_a_coded_error_and_the_worker_keeps_serving(
    tmp_path, demo_model_dir, closed
):
    missing = "hf://nobody/f5-missing/model_1.safetensors?vocab=vocab.txt"
    env = env_for(tmp_path, closed, MODELS=f"base={demo_model_dir}, xx={missing}")
    log_path = tmp_path / "worker.log"
    with worker(env, log_path) as url:
        # Asked again within FAILED_MODEL_TTL_S, the remembered failure answers at once.
        for said in (f"model xx ({missing}) is not in ", "model xx is unavailable (MODEL_ERROR: "):
            error = last_item(url, model="xx")
            assert error["error_code"] == "MODEL_ERROR" and "audio_base64" not in error
            assert error["retryable"] is False  # every place was just looked in
            assert error["error"].startswith(f"MODEL_ERROR: {said}")
            assert "hub resolve nobody/f5-missing/model_1.safetensors@main failed" in error["error"]
            served = last_item(url)
            assert served["model"] == "base" and audio(served)
    text = log_path.read_text()
    assert "serving the demo model" not in text and not (tmp_path / "models" / "demo").exists()


@pytest.mark.parametrize("s3", [False, True], ids=["no-s3", "s3"])
def test_a_default_model_found_nowhere_fails_start_up_naming_it(tmp_path, closed, s3):
    with moto_server(BUCKET) if s3 else nullcontext(None) as endpoint:
        extra = s3_env(endpoint, BUCKET) if endpoint else {}
        env = env_for(tmp_path, closed, MODEL_NAME=SAFET, **extra)
        done = subprocess.run(
            [sys.executable, "model_cache_init.py"],
            cwd=REPO,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert done.returncode == 1, done.stderr[-3000:]
    [line] = [x for x in done.stderr.splitlines() if "start-up failed" in x]
    places = "RunPod's cached models, MODEL_CACHE_DIR" + (", the S3 cache" if s3 else "")
    # The log cuts every URL-like text to its path: the query (vocab, arch) is left out there.
    named = SAFET.split("?")[0]
    assert f"start-up failed: MODEL_ERROR: model {named} is not in {places}; hub " in line
    assert "Traceback" not in done.stderr and "serving the demo model" not in done.stderr
    assert not (tmp_path / "models" / "demo").exists()
