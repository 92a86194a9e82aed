"""Any F5 model (#12): hub fine-tunes (safetensors and .pt, own vocab, own arch yaml), RunPod's
cached-models layout, validation, several models per worker with per-job choice and LRU."""

from __future__ import annotations

import numpy as np
import pytest

from f5worker.config import Settings
from f5worker.engine.f5tts import F5TTSEngine
from f5worker.errors import ModelError
from f5worker.model_ref import parse_models, parse_reference
from f5worker.models.source import PreparedModel, prepare_model
from f5worker.models.sources import ModelSources
from f5worker.startup.compose import build_worker
from f5worker.testing import finetune
from f5worker.testing.s3_servers import FakeHub

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def repos():
    safet = finetune.finetune_files(seed=1)
    pt = finetune.finetune_files(seed=2, pt=True)
    return {
        finetune.REPO: {**safet, **pt},
        "charactr/vocos-mel-24khz": finetune.vocoder_files(),
    }


@pytest.fixture
def hub(repos, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with FakeHub(repos) as fake:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", fake.url)
        monkeypatch.setattr(
            huggingface_hub.constants,
            "HUGGINGFACE_CO_URL_TEMPLATE",
            fake.url + "/{repo_id}/resolve/{revision}/{filename}",
        )
        yield fake


def settings_for(tmp_path, models: str, **kw) -> Settings:
    refs = parse_models(models)
    return Settings(
        model_name=refs[0].key,
        models=refs,
        model_cache_dir=tmp_path / "cache",
        hf_home=tmp_path / "hf",
        runpod_hf_cache_dir=tmp_path / "runpod" / "hub",
        device="cpu",
        **kw,
    )


def prepare(settings: Settings, **kw) -> PreparedModel:
    """The default model of settings, prepared as start-up prepares it."""
    sources = ModelSources.from_settings(settings)
    return prepare_model(sources, settings.default_model, default=True, **kw)


SAFET = finetune.reference("model_1000.safetensors")
PT = finetune.reference("model_1000.pt")


@pytest.mark.parametrize("ref", [SAFET, PT], ids=["safetensors", "pt"])
def test_a_hub_finetune_with_its_own_vocab_and_arch_loads_and_speaks(tmp_path, hub, ref):
    settings = settings_for(tmp_path, f"ft={ref}")
    prepared = prepare(settings)
    assert prepared.origin == "hub"
    assert prepared.model_dir.parent.parent.name.startswith("hf--someone--f5-finetune-xx--")
    engine = F5TTSEngine.load(prepared.model_dir, "cpu")
    assert engine.model.transformer.text_embed.text_embed.num_embeddings == 181
    # A second start finds the local copy; nothing is downloaded.
    before = len(hub.requests)
    assert prepare(settings).origin == "local"
    assert len(hub.requests) == before


def test_a_finetune_with_upstream_vocab_fails_start_up_naming_checkpoint_and_arch(tmp_path, hub):
    ref = finetune.reference("model_1000.safetensors", vocab=False)
    prepared = prepare(settings_for(tmp_path, ref))
    with pytest.raises(ModelError) as info:
        F5TTSEngine.load(prepared.model_dir, "cpu")
    message = info.value.message
    assert "model_1000.safetensors" in message and "does not match its architecture" in message
    assert "text_embed" in message and "vocab of 180 symbols" in message
    assert "Traceback" not in message and info.value.__cause__ is None


def test_upstream_named_arch_that_does_not_fit_fails_cleanly(tmp_path, hub):
    ref = finetune.reference("model_1000.pt", arch="F5TTS_v1_Small")
    prepared = prepare(settings_for(tmp_path, ref))
    with pytest.raises(ModelError, match=r"does not match its architecture .*dim=768"):
        F5TTSEngine.load(prepared.model_dir, "cpu")


def build_runpod_cache(hub_url: str, root, repo: str, paths) -> None:
    """RunPod's layout, written by huggingface_hub itself (refs/main, snapshots/, blobs/)."""
    from huggingface_hub import hf_hub_download

    for path in paths:
        hf_hub_download(repo, path, cache_dir=root, endpoint=hub_url)


def test_runpod_cached_models_are_read_in_place_without_a_download(tmp_path, hub, repos):
    root = tmp_path / "runpod" / "hub"
    build_runpod_cache(hub.url, root, finetune.REPO, repos[finetune.REPO])
    build_runpod_cache(
        hub.url, root, "charactr/vocos-mel-24khz", ["config.yaml", "pytorch_model.bin"]
    )
    assert (root / f"models--{finetune.REPO.replace('/', '--')}" / "refs" / "main").is_file()
    before = len(hub.requests)
    prepared = prepare(settings_for(tmp_path, SAFET))
    assert prepared.origin == "runpod_cache"
    assert len(hub.requests) == before  # nothing downloaded
    ckpt = prepared.model_dir / "model_1000.safetensors"
    assert ckpt.is_symlink() and str(ckpt.resolve()).startswith(str(root))
    F5TTSEngine.load(prepared.model_dir, "cpu")


def test_two_models_per_job_choice_lru_and_unknown_model(tmp_path, hub):
    settings = settings_for(tmp_path, f"ft={SAFET},ftpt={PT}", max_resident_models=1)
    model_dir = prepare(settings).model_dir
    worker = build_worker(settings, model_dir)
    job = {"text": "Hello there.", "seed": 3, "nfe_step": 2, "format": "pcm", "return": "base64"}

    def run(**extra):
        items = list(worker.run({"id": "j", "input": {**job, **extra}}))
        return items[-1]

    first = run()
    assert first["model"] == "ft" and "model_load" not in first["timings"]
    other = run(model="ftpt")
    assert other["model"] == "ftpt" and other["timings"]["model_load"] > 0
    assert other["audio_base64"] != first["audio_base64"]
    assert worker.models.resident() == ["ftpt"]  # N=1: the default was evicted
    again = run(model="default")
    assert again["audio_base64"] == first["audio_base64"] and "model_load" in again["timings"]
    assert worker.models.evictions == 2
    missing = run(model="nope")
    assert missing["error_code"] == "MODEL_NOT_FOUND" and not missing["retryable"]
    assert "ft, ftpt" in missing["error"]
    # The OpenAI shape: its own model names mean the default; ours pick.
    openai = {
        "openai_route": "/v1/audio/speech",
        "openai_input": {"input": "Hi.", "model": "tts-1"},
    }
    assert list(worker.run({"id": "o", "input": openai}))[-1]["model"] == "ft"


def test_reference_keys_never_collide():
    a = parse_reference(SAFET, "MODELS")
    b = parse_reference(SAFET + "&revision=" + "a" * 40, "MODELS")
    assert a.key != b.key and a.key.startswith("hf--") and np.char.count(a.key, "--") == 3


def _child_env(tmp_path, hub_url: str, model: str) -> dict[str, str]:
    import os

    return {
        **os.environ,
        "MODEL_NAME": model,
        "MODEL_CACHE_DIR": str(tmp_path / "volume"),
        "HF_HOME": str(tmp_path / "hf"),
        "HF_ENDPOINT": hub_url,
        "HF_HUB_OFFLINE": "0",
        "RUNPOD_HF_CACHE_DIR": str(tmp_path / "none"),
        "DEVICE": "cpu",
        "FLASH_ATTN": "off",
    }


@pytest.mark.slow
def test_two_processes_fetch_one_hub_finetune_into_one_cache_dir(tmp_path, hub):
    import subprocess
    import sys

    from f5worker.testing import REPO

    env = _child_env(tmp_path, hub.url, SAFET)
    cmd = [sys.executable, "model_cache_init.py", "--fetch-model"]
    procs = [
        subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    logs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    outcomes = sorted("local/source hub" in log for log in logs)
    assert outcomes == [False, True], logs  # one fetched, the other found its copy
    checkpoint_gets = [p for m, p in hub.requests if m == "GET" and "model_1000.safetensors" in p]
    assert len(checkpoint_gets) == 1


@pytest.mark.slow
def test_start_up_with_a_mismatched_vocab_fails_cleanly(tmp_path, hub):
    import subprocess
    import sys

    from f5worker.testing import REPO

    env = _child_env(tmp_path, hub.url, finetune.reference("model_1000.pt", vocab=False))
    proc = subprocess.run(
        [sys.executable, "model_cache_init.py"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert "start-up failed: MODEL_ERROR: checkpoint model_1000.pt" in proc.stderr
    assert "vocab of 180 symbols" in proc.stderr and "Traceback" not in proc.stderr
