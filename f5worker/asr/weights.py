"""Where the ASR model's directory comes from: the F5 models' source chain, for a Whisper
conversion in CTranslate2's format (faster-whisper's file set).

In order, each step logged with its time: a local directory (ASR_MODEL=/path), used as is;
RunPod's cached models (the repo in huggingface_hub's cache layout, read in place); then the
F5 chain itself (models/source.py's prepare_model), keyed on the reference's storage key: the
S3 cache, a verified version in MODEL_CACHE_DIR, the hub (these files, one commit), with the
background S3 upload of whatever came from the hub. The repo's directory is the model directory:
no model.json is written, since faster-whisper reads the files as the conversion ships them.
A model found nowhere is ASRUnavailable naming every place looked in. Never imports torch or
ctranslate2.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from f5worker.errors import ASRUnavailable, ModelError, StorageError
from f5worker.model_ref import AsrModelRef, ModelRef
from f5worker.models.hf_cache import find_snapshot
from f5worker.models.source import Fetch, prepare_model
from f5worker.models.sources import ModelSources

log = logging.getLogger(__name__)

# faster-whisper's files (its download_model's allow_patterns), config.json first: the hub
# resolves the revision on it. A file with alternatives: the first the repo holds.
WHISPER_FILES: tuple[tuple[str, ...], ...] = (
    ("config.json",),
    ("model.bin",),
    ("tokenizer.json",),
    ("vocabulary.json", "vocabulary.txt"),
    ("preprocessor_config.json",),
)


@dataclass(frozen=True)
class PreparedAsr:
    model_dir: Path
    origin: str  # model_dir | runpod_cache | s3 | local | hub
    upload: threading.Thread | None = None


def prepare_asr_model(
    sources: ModelSources, ref: AsrModelRef, fetch: Fetch | None = None
) -> PreparedAsr:
    """The ASR model's directory; `fetch` replaces the hub download (tests). ASRUnavailable
    when it is nowhere."""
    if ref.local_dir is not None:
        missing = _missing(ref.local_dir)
        if missing:
            raise ASRUnavailable(f"ASR model {ref.text}: the directory lacks {', '.join(missing)}")
        return PreparedAsr(ref.local_dir, "model_dir")
    assert ref.repo is not None  # a reference is a directory or a repo
    snapshot = _runpod_snapshot(sources, ref.repo, ref.revision)
    if snapshot is not None:
        log.info("ASR model %s read in place from RunPod's cache", ref.key)
        return PreparedAsr(snapshot, "runpod_cache")
    repo, revision = ref.repo, ref.revision

    def from_hub(s: ModelSources, name: str, dest: Path) -> Path:
        from f5worker.models.hub import fetch_repo_files

        return fetch_repo_files(s, name, dest, repo, revision, WHISPER_FILES)

    try:
        as_model = ModelRef(ref.text, ref.key, ref.text)
        prepared = prepare_model(sources, as_model, fetch=fetch or from_hub)
    except (ModelError, StorageError) as err:
        places = "RunPod's cached models, " + ("the S3 cache, " if sources.s3 else "")
        raise ASRUnavailable(
            f"ASR model {ref.text} is not in {places}MODEL_CACHE_DIR or the hub: {err.message}"
        ) from err
    return PreparedAsr(prepared.model_dir, prepared.origin, prepared.upload)


def _missing(directory: Path) -> list[str]:
    return [
        " or ".join(names)
        for names in WHISPER_FILES
        if not any((directory / name).is_file() for name in names)
    ]


def _runpod_snapshot(sources: ModelSources, repo: str, revision: str) -> Path | None:
    """The snapshot of repo in RunPod's cache holding every file, or None."""
    if not sources.runpod_hf_cache_dir.is_dir():
        return None
    for vocabulary in WHISPER_FILES[3]:
        wanted = [names[0] if len(names) == 1 else vocabulary for names in WHISPER_FILES]
        snapshot = find_snapshot(sources.runpod_hf_cache_dir, repo, revision, wanted)
        if snapshot is not None:
            return snapshot
    return None
