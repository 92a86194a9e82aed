"""RunPod's cached models read in place, on layouts written by hand the way huggingface_hub
writes them (refs/main -> a commit; snapshots/<commit>/<path>), with stand-in bytes: what is
found, what is linked, and what happens when a piece is missing. The hub is offline here
(tests/conftest.py), so any download attempt fails at once."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from f5worker.config import Settings
from f5worker.errors import ModelError
from f5worker.model_ref import parse_reference
from f5worker.models.runpod_cache import serve_from_runpod_cache
from f5worker.models.source import prepare_model
from f5worker.models.sources import ModelSources

REF = "hf://me/ft-xx/ckpts/model_100.safetensors?vocab=ckpts/vocab.txt&arch=F5TTS_v1_Base"
FILES = {"ckpts/model_100.safetensors": b"weights", "ckpts/vocab.txt": b"a\nb\n"}
VOCODER = {"config.yaml": b"sample_rate: 24000\n", "pytorch_model.bin": b"vocos"}


def cache_repo(root: Path, repo: str, files: dict[str, bytes], commit: str) -> None:
    base = root / ("models--" + repo.replace("/", "--"))
    (base / "refs").mkdir(parents=True, exist_ok=True)
    (base / "refs" / "main").write_text(commit)
    blobs = base / "blobs"
    blobs.mkdir(exist_ok=True)
    for i, (path, data) in enumerate(files.items()):
        (blobs / str(i)).write_bytes(data)
        link = base / "snapshots" / commit / path
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(blobs / str(i))


def settings_for(tmp_path: Path) -> Settings:
    return Settings(
        model_name=parse_reference(REF, "MODEL_NAME").key,
        models=(parse_reference(REF, "MODEL_NAME"),),
        model_cache_dir=tmp_path / "models",
        hf_home=tmp_path / "hf",
        runpod_hf_cache_dir=tmp_path / "runpod",
    )


def test_a_snapshot_is_served_through_links_and_a_model_json(tmp_path):
    cache_repo(tmp_path / "runpod", "me/ft-xx", FILES, "a" * 40)
    cache_repo(tmp_path / "runpod", "charactr/vocos-mel-24khz", VOCODER, "b" * 40)
    settings = settings_for(tmp_path)
    served = serve_from_runpod_cache(ModelSources.from_settings(settings), settings.default_model)
    assert (served / "model_100.safetensors").read_bytes() == b"weights"
    assert (served / "vocab.txt").read_bytes() == b"a\nb\n"
    assert (served / "vocos" / "pytorch_model.bin").read_bytes() == b"vocos"
    spec = json.loads((served / "model.json").read_text())
    assert spec["checkpoint"] == "model_100.safetensors" and spec["vocab"] == "vocab.txt"


@pytest.mark.parametrize("missing", ["ckpts/vocab.txt", "ckpts/model_100.safetensors"])
def test_a_snapshot_lacking_a_file_is_a_miss(tmp_path, missing):
    files = {k: v for k, v in FILES.items() if k != missing}
    cache_repo(tmp_path / "runpod", "me/ft-xx", files, "a" * 40)
    settings = settings_for(tmp_path)
    assert (
        serve_from_runpod_cache(ModelSources.from_settings(settings), settings.default_model)
        is None
    )


def test_a_cached_model_without_its_vocoder_falls_through_to_the_next_source(tmp_path, caplog):
    """The vocoder is in neither cache and the hub is down: the chain goes on (S3, the local
    copy, the hub) instead of failing on RunPod's copy, and the end names every place."""
    cache_repo(tmp_path / "runpod", "me/ft-xx", FILES, "a" * 40)
    settings = settings_for(tmp_path)
    with caplog.at_level(logging.INFO), pytest.raises(ModelError) as info:
        prepare_model(ModelSources.from_settings(settings), settings.default_model, default=True)
    key = settings.default_model.key
    messages = [r.getMessage() for r in caplog.records]
    for said in ("RunPod's cached copy is unusable: hub ", "runpod_cache unusable in "):
        assert any(m.startswith(f"model {key}: {said}") for m in messages), messages
    assert info.value.message.startswith(
        f"model {REF} is not in RunPod's cached models, MODEL_CACHE_DIR; hub resolve me/ft-xx/"
    )
