"""The ASR model's source chain: a local directory, RunPod's cache, the hub (a local FakeHub),
the S3 cache with its background upload (moto), each answering with a directory that the real
faster-whisper loads; nowhere is ASR_UNAVAILABLE naming the places."""

from __future__ import annotations

from pathlib import Path

import pytest

from f5worker.asr.engine import WhisperTranscriber
from f5worker.asr.weights import WHISPER_FILES, prepare_asr_model
from f5worker.config import Settings
from f5worker.errors import ASRUnavailable
from f5worker.model_ref import parse_asr_model
from f5worker.models.hub import fetch_repo_files
from f5worker.models.manifest import read_manifest
from f5worker.models.sources import ModelSources
from f5worker.testing.s3_servers import FakeHub

REPO = "someone/faster-whisper-tiny-random"


def repo_files(model_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in model_dir.iterdir() if p.is_file()}


def sources_for(tmp_path: Path, **env: str) -> ModelSources:
    settings = Settings.from_env(
        {
            "MODEL_CACHE_DIR": str(tmp_path / "cache"),
            "HF_HOME": str(tmp_path / "hf"),
            "RUNPOD_HF_CACHE_DIR": str(tmp_path / "runpod"),
            **env,
        }
    )
    return ModelSources.from_settings(settings)


def hub_fetch(url: str, repo: str = REPO):
    return lambda s, name, dest: fetch_repo_files(
        s, name, dest, repo, "main", WHISPER_FILES, endpoint=url
    )


def loads_and_transcribes(model_dir: Path) -> None:
    import numpy as np

    asr = WhisperTranscriber(lambda: model_dir, "cpu", cpu_threads=1)
    got = asr.transcribe(np.zeros(8_000, np.float32), 16_000, language="en")
    assert got.language == "en" and asr.loaded


@pytest.fixture
def online(monkeypatch):
    """tests/conftest.py sets HF_HUB_OFFLINE=1 for the whole run; these tests talk to FakeHub."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


def test_a_local_directory_is_served_as_is(tmp_path, tiny_whisper_dir):
    ref = parse_asr_model(str(tiny_whisper_dir))
    prepared = prepare_asr_model(sources_for(tmp_path), ref)
    assert (prepared.model_dir, prepared.origin) == (tiny_whisper_dir, "model_dir")


def test_a_local_directory_lacking_files_names_them(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model.bin").write_bytes(b"x")
    with pytest.raises(ASRUnavailable) as info:
        prepare_asr_model(sources_for(tmp_path), parse_asr_model(str(tmp_path / "half")))
    assert "config.json" in info.value.message
    assert "vocabulary.json or vocabulary.txt" in info.value.message


def test_runpods_cached_repo_is_read_in_place(tmp_path, tiny_whisper_dir):
    commit = "a" * 40
    base = tmp_path / "runpod" / ("models--" + REPO.replace("/", "--"))
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(commit)
    snapshot = base / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, data in repo_files(tiny_whisper_dir).items():
        (snapshot / name).write_bytes(data)
    prepared = prepare_asr_model(sources_for(tmp_path), parse_asr_model(REPO))
    assert (prepared.model_dir, prepared.origin) == (snapshot, "runpod_cache")
    loads_and_transcribes(prepared.model_dir)


def test_the_hub_fills_a_verified_version_then_the_local_copy_serves(
    tmp_path, tiny_whisper_dir, online
):
    ref = parse_asr_model(REPO)
    with FakeHub({REPO: repo_files(tiny_whisper_dir)}) as hub:
        first = prepare_asr_model(sources_for(tmp_path), ref, fetch=hub_fetch(hub.url))
        second = prepare_asr_model(sources_for(tmp_path), ref, fetch=hub_fetch(hub.url))
    assert (first.origin, second.origin) == ("hub", "local")
    assert first.model_dir.is_relative_to(tmp_path / "cache" / ref.key)
    manifest = read_manifest(first.model_dir)
    assert manifest is not None and manifest.model == ref.key
    assert manifest.source["files"] == [
        "config.json",
        "model.bin",
        "tokenizer.json",
        "vocabulary.json",
        "preprocessor_config.json",
    ]
    loads_and_transcribes(second.model_dir)


def test_a_vocabulary_txt_is_taken_when_the_repo_has_no_json(tmp_path, tiny_whisper_dir, online):
    files = repo_files(tiny_whisper_dir)
    files["vocabulary.txt"] = files.pop("vocabulary.json")  # stands in for an older conversion
    with FakeHub({REPO: files}) as hub:
        got = prepare_asr_model(
            sources_for(tmp_path), parse_asr_model(REPO), fetch=hub_fetch(hub.url)
        )
    assert (got.model_dir / "vocabulary.txt").is_file()


def test_the_s3_cache_gets_the_hubs_copy_and_serves_the_next_worker(
    tmp_path, tiny_whisper_dir, online, s3
):
    ref = parse_asr_model(REPO)
    env = {"S3_BUCKET": "models", "AWS_REGION": "us-east-1"}
    with FakeHub({REPO: repo_files(tiny_whisper_dir)}) as hub:
        first = prepare_asr_model(sources_for(tmp_path / "w1", **env), ref, hub_fetch(hub.url))
        assert first.origin == "hub" and first.upload is not None
        first.upload.join(60)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="models")["Contents"]]
    assert any(k.startswith(f"f5-tts/{ref.key}/") and k.endswith("model.bin") for k in keys)
    second = prepare_asr_model(sources_for(tmp_path / "w2", **env), ref, fetch=_no_hub)
    assert second.origin == "s3"
    assert repo_files(second.model_dir).items() >= repo_files(tiny_whisper_dir).items()
    loads_and_transcribes(second.model_dir)


def test_nowhere_is_asr_unavailable_naming_every_place(tmp_path, online):
    with FakeHub({}) as hub, pytest.raises(ASRUnavailable) as info:
        prepare_asr_model(sources_for(tmp_path), parse_asr_model(REPO), hub_fetch(hub.url))
    message = info.value.message
    assert info.value.code == "ASR_UNAVAILABLE" and info.value.http_status == 503
    assert "RunPod's cached models" in message and "MODEL_CACHE_DIR" in message
    assert REPO in message and "HTTP 404" in message


def _no_hub(*_: object) -> Path:
    raise AssertionError("the S3 cache should have served it")
