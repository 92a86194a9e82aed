"""hub.fetch_from_hub against a local stand-in for huggingface.co (FakeHub on 127.0.0.1)."""

from __future__ import annotations

import json
import os
from importlib.resources import files

import pytest
import yaml

from f5worker.config import Settings
from f5worker.errors import StorageError
from f5worker.model_ref import HubModel
from f5worker.models import local_cache
from f5worker.models.hub import fetch_from_hub
from f5worker.models.local_cache import verify_local_copy
from f5worker.models.manifest import read_manifest
from f5worker.models.sources import ModelSources
from f5worker.testing.s3_servers import FakeHub, free_ports

TOKEN = "hf_test_token_never_shown"
CKPT = os.urandom(300_000)
VOCOS_BIN = os.urandom(50_000)
REPOS = {
    "SWivid/F5-TTS": {
        "F5TTS_v1_Base/model_1250000.safetensors": CKPT,
        "F5TTS_v1_Base/vocab.txt": b"hub\nvocab\n",
        "F5TTS_Base/model_1200000.safetensors": CKPT[:1000],
    },
    "someone/fine-tune": {
        "model.safetensors": CKPT[:2000],
        "README.md": b"---\nlicense: apache-2.0\n---\n# A fine-tune of F5-TTS\n",
    },
    "someone/no-card": {"model.safetensors": CKPT[:2000]},
    "charactr/vocos-mel-24khz": {
        "config.yaml": b"sample_rate: 24000\n",
        "pytorch_model.bin": VOCOS_BIN,
    },
}


@pytest.fixture
def online(monkeypatch):
    """tests/conftest.py sets HF_HUB_OFFLINE=1 for the whole run; these tests talk to FakeHub."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def fake_hub(online):
    with FakeHub(REPOS) as hub:
        yield hub


def sources_for(tmp_path) -> ModelSources:
    return ModelSources.from_settings(
        Settings(model_cache_dir=tmp_path / "cache", hf_home=tmp_path / "hf")
    )


def upstream_yaml(name: str) -> dict:
    return yaml.safe_load(files("f5_tts").joinpath(f"configs/{name}.yaml").read_text())["model"]


def test_fetch_writes_the_model_dir_layout_with_spec_and_manifest(tmp_path, fake_hub, monkeypatch):
    model_dir = fetch_from_hub(
        sources_for(tmp_path), "F5TTS_v1_Base", endpoint=fake_hub.url, token=TOKEN
    )
    assert model_dir == tmp_path / "cache" / "F5TTS_v1_Base"
    assert {p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file()} == {
        ".verified.json",
        "manifest.json",
        "model.json",
        "model_1250000.safetensors",
        "vocab.txt",
        "vocos/config.yaml",
        "vocos/pytorch_model.bin",
    }
    assert (model_dir / "model_1250000.safetensors").read_bytes() == CKPT
    assert (model_dir / "vocab.txt").read_bytes() == b"hub\nvocab\n"
    assert (model_dir / "vocos/pytorch_model.bin").read_bytes() == VOCOS_BIN
    spec = json.loads((model_dir / "model.json").read_text())
    expected = upstream_yaml("F5TTS_v1_Base")
    assert spec["backbone"] == "DiT" and spec["arch"] == expected["arch"]
    assert spec["mel_spec"] == expected["mel_spec"]
    assert spec["checkpoint"] == "model_1250000.safetensors" and spec["vocoder_dir"] == "vocos"
    manifest = read_manifest(model_dir)
    assert manifest.model == "F5TTS_v1_Base"
    assert manifest.source == {
        "kind": "hub",
        "repo": "SWivid/F5-TTS",
        "revision": fake_hub.commits["SWivid/F5-TTS"],
        "files": ["F5TTS_v1_Base/model_1250000.safetensors", "F5TTS_v1_Base/vocab.txt"],
        "vocoder_repo": "charactr/vocos-mel-24khz",
        "vocoder_revision": fake_hub.commits["charactr/vocos-mel-24khz"],
    }
    # The hub's own cache went to HF_HOME/hub; every file is recorded as verified.
    assert (tmp_path / "hf" / "hub" / "models--SWivid--F5-TTS").is_dir()
    monkeypatch.setattr(local_cache, "sha256_file", lambda p: pytest.fail(f"re-hashed {p}"))
    assert verify_local_copy(model_dir, manifest)
    # Every file came from one resolved commit, not a moving branch.
    downloads = [path for method, path in fake_hub.requests if method == "GET"]
    assert downloads and all("/resolve/main/" not in path for path in downloads)


def test_models_without_a_hub_vocab_use_the_one_in_the_wheel(tmp_path, fake_hub):
    model_dir = fetch_from_hub(sources_for(tmp_path), "F5TTS_Base", endpoint=fake_hub.url)
    wheel_vocab = files("f5_tts.infer").joinpath("examples/vocab.txt").read_bytes()
    assert (model_dir / "vocab.txt").read_bytes() == wheel_vocab
    assert (
        json.loads((model_dir / "model.json").read_text())["arch"]
        == upstream_yaml("F5TTS_Base")["arch"]
    )


@pytest.mark.parametrize(
    ("repo", "licence"), [("someone/fine-tune", "apache-2.0"), ("someone/no-card", "unknown")]
)
def test_a_fine_tunes_licence_comes_from_its_card(tmp_path, fake_hub, repo, licence):
    model = HubModel(repo=repo, checkpoint="model.safetensors", config="F5TTS_v1_Base")
    model_dir = fetch_from_hub(sources_for(tmp_path), "ft", endpoint=fake_hub.url, model=model)
    assert json.loads((model_dir / "model.json").read_text())["license"] == licence


def test_a_released_checkpoint_has_upstreams_licence(tmp_path, fake_hub):
    model_dir = fetch_from_hub(sources_for(tmp_path), "F5TTS_Base", endpoint=fake_hub.url)
    assert json.loads((model_dir / "model.json").read_text())["license"] == "cc-by-nc-4.0"


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_ports(1)[0]}"


@pytest.mark.parametrize(
    ("model", "endpoint", "message"),
    [
        (
            "E2TTS_Base",
            "fake",
            "hub resolve SWivid/E2-TTS/E2TTS_Base/model_1200000.safetensors@main failed: "
            "RemoteEntryNotFoundError (HTTP 404)",
        ),
        (
            "F5TTS_v1_Base",
            "closed",
            "hub resolve SWivid/F5-TTS/F5TTS_v1_Base/model_1250000.safetensors@main failed: "
            "ConnectError",
        ),
        ("my_finetune", "fake", "no hub source is known for MODEL_NAME=my_finetune; known: "),
    ],
)
def test_hub_failures_are_storage_errors_naming_repo_and_file(
    tmp_path, fake_hub, model, endpoint, message
):
    url = fake_hub.url if endpoint == "fake" else closed_port_url()
    with pytest.raises(StorageError) as info:
        fetch_from_hub(sources_for(tmp_path), model, endpoint=url, token=TOKEN)
    assert info.value.code == "STORAGE_ERROR" and info.value.message.startswith(message)
    assert TOKEN not in info.value.message
    assert read_manifest(tmp_path / "cache" / model) is None


def test_offline_mode_fails_fast_without_a_request(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with FakeHub(REPOS) as hub, pytest.raises(StorageError, match="OfflineModeIsEnabled"):
        fetch_from_hub(sources_for(tmp_path), "F5TTS_v1_Base", endpoint=hub.url)
    assert hub.requests == []


def test_a_fetch_cut_short_leaves_no_manifest_even_over_an_old_one(tmp_path, online):
    model_dir = tmp_path / "cache" / "F5TTS_v1_Base"
    model_dir.mkdir(parents=True)
    (model_dir / "manifest.json").write_text('{"model": "F5TTS_v1_Base", "files": []}')
    repos = {"SWivid/F5-TTS": REPOS["SWivid/F5-TTS"]}  # the vocoder repo is missing
    with FakeHub(repos) as hub, pytest.raises(StorageError, match="charactr/vocos-mel-24khz"):
        fetch_from_hub(sources_for(tmp_path), "F5TTS_v1_Base", endpoint=hub.url)
    assert not (model_dir / "manifest.json").exists()
    assert not list(model_dir.rglob("*.part"))


def test_a_cached_vocoder_is_used_without_asking_the_hub(tmp_path, online):
    """An image can bake charactr/vocos-mel-24khz into HF_HOME's hub cache (or RunPod caches
    it): a fetch then asks the hub for the model's own files only."""
    commit = "c" * 40
    vocos = tmp_path / "hf" / "hub" / "models--charactr--vocos-mel-24khz"
    (vocos / "refs").mkdir(parents=True)
    (vocos / "refs" / "main").write_text(commit)
    for name, data in REPOS["charactr/vocos-mel-24khz"].items():
        (vocos / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
        (vocos / "snapshots" / commit / name).write_bytes(data)
    with FakeHub({"SWivid/F5-TTS": REPOS["SWivid/F5-TTS"]}) as hub:
        model_dir = fetch_from_hub(sources_for(tmp_path), "F5TTS_v1_Base", endpoint=hub.url)
    assert (model_dir / "vocos/pytorch_model.bin").read_bytes() == VOCOS_BIN
    assert read_manifest(model_dir).source["vocoder_revision"] == commit
    assert not [path for _, path in hub.requests if "vocos" in path]
