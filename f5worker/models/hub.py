"""Fetch a released model from the Hugging Face hub into a model directory the engine loads.

Used on an S3 cache miss (and with no S3 cache, when nothing is cached locally). huggingface_hub
itself honours HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE; its download cache lives in
`$HF_HOME/hub` (sources.hf_home, under /tmp so it stays off a small volume). Each file is then
hard-linked (same filesystem, no extra disk) or copied into the model directory in the layout of
model_spec.py; model.json takes the architecture from the f5-tts package's own config yaml, and
the manifest is written last, so a fetch cut short never looks complete. The vocoder
(charactr/vocos-mel-24khz) is taken from RunPod's cached models or HF_HOME's hub cache when
either holds it, so only the model's own files need the hub. Never imports torch.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import time
from importlib.resources import files
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from f5worker.errors import ModelError, StorageError
from f5worker.model_ref import ARCH_FILE_SUFFIX, KNOWN_MODELS, HubModel
from f5worker.models.hf_cache import find_snapshot
from f5worker.models.licence import CARD_NAME, UNKNOWN, from_card
from f5worker.models.local_cache import TEMP_SUFFIX, check_model_name, record_all
from f5worker.models.manifest import MANIFEST_NAME, build_manifest, write_manifest
from f5worker.models.sources import ModelSources
from f5worker.models.spec import SPEC_NAME, ModelSpec

log = logging.getLogger(__name__)


VOCODER = HubModel(repo="charactr/vocos-mel-24khz", checkpoint="pytorch_model.bin", config="")
VOCODER_FILES = ("config.yaml", "pytorch_model.bin")
VOCODER_DIR = "vocos"
HUB_MODELS = KNOWN_MODELS  # the released checkpoints, by name (model_ref.py)


def fetch_from_hub(
    sources: ModelSources,
    name: str,
    dest: Path | None = None,
    *,
    endpoint: str | None = None,
    token: str | None = None,
    model: HubModel | None = None,
) -> Path:
    """Write model `name` (model, default: the released checkpoint of that name) into
    `<MODEL_CACHE_DIR>/<name>` (or dest) from the hub and return it.

    endpoint/token default to huggingface_hub's own (HF_ENDPOINT, HF_TOKEN); tests pass a
    local endpoint. Every failure is a StorageError naming repo and file, never the token.
    """
    name = check_model_name(name)
    model = model or HUB_MODELS.get(name)
    if model is None:
        raise StorageError(
            f"no hub source is known for MODEL_NAME={name}; known: {', '.join(sorted(HUB_MODELS))}"
        )
    dest = dest or sources.cache_dir / name
    dest.mkdir(parents=True, exist_ok=True)
    (dest / MANIFEST_NAME).unlink(missing_ok=True)  # incomplete until the new manifest lands
    hub = _Hub(sources.hf_home / "hub", endpoint, token)
    started = time.perf_counter()

    commit = hub.resolve(model.repo, model.checkpoint, model.revision)
    checkpoint = PurePosixPath(model.checkpoint).name
    _place(hub.download(model.repo, model.checkpoint, commit), dest / checkpoint)
    if model.vocab:
        _place(hub.download(model.repo, model.vocab, commit), dest / "vocab.txt")
    else:
        _place(Path(str(files("f5_tts.infer").joinpath("examples/vocab.txt"))), dest / "vocab.txt")
    vocoder, vocoder_commit = vocoder_snapshot(sources, hub)
    for filename in VOCODER_FILES:
        _place(vocoder / filename, dest / VOCODER_DIR / filename)

    config_text = None
    if model.config.endswith(ARCH_FILE_SUFFIX):
        config_text = hub.download(model.repo, model.config, commit).read_text()
    license = model.license or _card_license(hub, model.repo, commit)
    spec = model_spec(name, model.config, checkpoint, config_text, license)
    (dest / SPEC_NAME).write_text(spec.to_json())
    source = {
        "kind": "hub",
        "repo": model.repo,
        "revision": commit,
        "files": [
            model.checkpoint,
            *([model.vocab] if model.vocab else []),
            *([model.config] if config_text is not None else []),
        ],
        "vocoder_repo": VOCODER.repo,
        "vocoder_revision": vocoder_commit,
    }
    return _completed(dest, name, source, started)


def fetch_repo_files(
    sources: ModelSources,
    name: str,
    dest: Path,
    repo: str,
    revision: str,
    wanted: tuple[tuple[str, ...], ...],
    *,
    endpoint: str | None = None,
    token: str | None = None,
) -> Path:
    """Write files of hub repo `repo` at `revision` into dest as they are, with a manifest, and
    return dest: a model whose repo is its directory (the ASR companion's Whisper conversion).
    Each entry of `wanted` is one file, given as alternatives tried in order (`vocabulary.json`
    or `vocabulary.txt`); all come from the commit the first one resolves to."""
    name = check_model_name(name)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / MANIFEST_NAME).unlink(missing_ok=True)  # incomplete until the new manifest lands
    hub = _Hub(sources.hf_home / "hub", endpoint, token)
    started = time.perf_counter()
    commit = hub.resolve(repo, wanted[0][0], revision)
    fetched = []
    for alternatives in wanted:
        filename, path = hub.download_first(repo, alternatives, commit)
        _place(path, dest / filename)
        fetched.append(filename)
    source = {"kind": "hub", "repo": repo, "revision": commit, "files": fetched}
    return _completed(dest, name, source, started)


def _completed(dest: Path, name: str, source: dict[str, Any], started: float) -> Path:
    """Write the manifest last (the version is complete only then), log the fetch, return dest."""
    manifest = build_manifest(dest, name, source)
    write_manifest(dest, manifest)
    record_all(dest, manifest)
    log.info(
        "fetched %s from the hub (%s@%s, %.1f MB) in %.1f s",
        name,
        source["repo"],
        str(source["revision"])[:12],
        manifest.total_bytes / 1e6,
        time.perf_counter() - started,
    )
    return dest


def vocoder_snapshot(sources: ModelSources, hub: _Hub | None = None) -> tuple[Path, str]:
    """(directory holding the vocoder's files, its commit): from RunPod's cached models or
    HF_HOME's hub cache when either has it (an image can bake it there), else downloaded."""
    for root in (sources.runpod_hf_cache_dir, sources.hf_home / "hub"):
        found = find_snapshot(root, VOCODER.repo, VOCODER.revision, list(VOCODER_FILES))
        if found is not None:
            return found, found.name
    log.info("vocoder %s is not cached; downloading it from the hub", VOCODER.repo)
    hub = hub or _Hub(sources.hf_home / "hub", None, None)
    commit = hub.resolve(VOCODER.repo, VOCODER_FILES[0], VOCODER.revision)
    paths = [hub.download(VOCODER.repo, filename, commit) for filename in VOCODER_FILES]
    return paths[0].parent, commit


def model_spec(
    name: str, config: str, checkpoint: str, text: str | None = None, license: str = UNKNOWN
) -> ModelSpec:
    """model.json: backbone, arch and mel settings from upstream's yaml for `config`, or from
    `text`, a yaml in upstream's layout that a repo ships (arch=PATH.yaml)."""
    if text is None:
        text = files("f5_tts").joinpath(f"configs/{config}.yaml").read_text()
    try:
        model = yaml.safe_load(text)["model"]
        str(model["backbone"]), dict(model["arch"]), dict(model["mel_spec"])
    except Exception as exc:  # any malformed yaml: the model cannot be described
        raise ModelError(
            f"model {name}: {config} is not an F5-TTS config (model.backbone, model.arch, "
            f"model.mel_spec): {type(exc).__name__}"
        ) from None
    return ModelSpec(
        name=name,
        backbone=str(model["backbone"]),
        arch=dict(model["arch"]),
        checkpoint=checkpoint,
        vocab="vocab.txt",
        vocoder_dir=VOCODER_DIR,
        mel_spec=dict(model["mel_spec"]),
        license=license,
    )


def _card_license(hub: _Hub, repo: str, commit: str) -> str:
    """The repository card's licence; a repo without a card (or an unreadable one) is
    `unknown`, never a failed fetch."""
    try:
        card = hub.download(repo, CARD_NAME, commit)
        return from_card(card.read_text(errors="replace"))
    except (StorageError, OSError):
        return UNKNOWN


class _Hub:
    """The two huggingface_hub calls we make, with their failures mapped to StorageError."""

    def __init__(self, cache_dir: Path, endpoint: str | None, token: str | None) -> None:
        self.cache_dir = cache_dir
        self.endpoint = endpoint
        self.token = token

    def resolve(self, repo: str, filename: str, revision: str) -> str:
        """The commit a branch or tag points at, so every file comes from one snapshot."""
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        url = hf_hub_url(repo, filename, revision=revision, endpoint=self.endpoint)
        try:
            meta = get_hf_file_metadata(url, token=self.token, endpoint=self.endpoint)
        except Exception as exc:  # any hub failure: mapped to a StorageError below
            raise _hub_error("resolve", repo, filename, revision, exc) from exc
        if not meta.commit_hash:
            raise StorageError(f"hub {repo}/{filename}@{revision}: no commit in the response")
        return meta.commit_hash

    def download(self, repo: str, filename: str, commit: str) -> Path:
        from huggingface_hub import hf_hub_download

        try:
            path = hf_hub_download(
                repo,
                filename,
                revision=commit,
                cache_dir=self.cache_dir,
                endpoint=self.endpoint,
                token=self.token,
            )
        except Exception as exc:  # any hub failure: mapped to a StorageError below
            raise _hub_error("download", repo, filename, commit, exc) from exc
        return Path(str(path))

    def download_first(self, repo: str, names: tuple[str, ...], commit: str) -> tuple[str, Path]:
        """(name, path) of the first of `names` the repo holds at commit."""
        from huggingface_hub.errors import EntryNotFoundError

        for filename in names[:-1]:
            try:
                return filename, self.download(repo, filename, commit)
            except StorageError as err:
                if not isinstance(err.__cause__, EntryNotFoundError):
                    raise
        return names[-1], self.download(repo, names[-1], commit)


def _hub_error(
    action: str, repo: str, filename: str, revision: str, exc: Exception
) -> StorageError:
    """Type and HTTP status only: hub messages can quote request headers and URLs."""
    reason = type(exc).__name__
    response: Any = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if status:
        reason += f" (HTTP {status})"
    return StorageError(f"hub {action} {repo}/{filename}@{revision[:12]} failed: {reason}")


def _place(src: Path, dest: Path) -> None:
    """Put src at dest atomically: a hard link when both share a filesystem, else a copy."""
    real = src.resolve()  # the hub cache's snapshot entries are symlinks to blobs
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}"
    try:
        try:
            os.link(real, tmp)
        except OSError:
            shutil.copyfile(real, tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except OSError as exc:
        raise StorageError(f"cannot write {dest}: {exc.strerror}") from exc
    finally:
        tmp.unlink(missing_ok=True)
