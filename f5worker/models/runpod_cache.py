"""RunPod's cached models: a hub repo RunPod put on the host before the worker started.

With an endpoint's Model setting, RunPod downloads a hub repo into
`/runpod-volume/huggingface-cache/hub/models--ORG--NAME/` in huggingface_hub's own cache layout
(models/hf_cache.py), unbilled. Setting RUNPOD_HF_CACHE_DIR moves the root.

Read in place: the model directory served is a small private directory of symlinks to the
snapshot's files plus a model.json, so the engine's one loading path (model.json with relative
paths) works unchanged and nothing is copied, downloaded or hashed. Why not a version in
MODEL_CACHE_DIR: a version must carry a manifest whose sha256 the store checks (1.3 GB of
hashing at every start, seconds) and whose files the store may repair or prune; RunPod's cache
is read-only to us, keyed by commit, and owned by RunPod, so it is trusted as the hub's own cache
is. Why not absolute paths in model.json: model.json travels to S3 and other hosts, where
absolute paths would point nowhere, and ModelSpec deliberately refuses them.

The vocoder (charactr/vocos-mel-24khz) comes from the same root when RunPod cached it too, else
from HF_HOME's hub cache (an image can bake it there), else from the hub (54 MB, logged).
Never imports torch.
"""

from __future__ import annotations

import logging
import tempfile
from importlib.resources import files
from pathlib import Path, PurePosixPath

from f5worker.model_ref import ARCH_FILE_SUFFIX, ModelRef
from f5worker.models.hf_cache import find_snapshot
from f5worker.models.hub import VOCODER_DIR, VOCODER_FILES, model_spec, vocoder_snapshot
from f5worker.models.licence import CARD_NAME, UNKNOWN, from_card
from f5worker.models.sources import ModelSources
from f5worker.models.spec import SPEC_NAME

log = logging.getLogger(__name__)


def serve_from_runpod_cache(sources: ModelSources, ref: ModelRef) -> Path | None:
    """A model directory reading ref's files in place from RunPod's cache, or None (a miss)."""
    hub = ref.hub
    if hub is None or not sources.runpod_hf_cache_dir.is_dir():
        return None
    arch_file = hub.config if hub.config.endswith(ARCH_FILE_SUFFIX) else None
    wanted = [p for p in (hub.checkpoint, hub.vocab, arch_file) if p]
    snapshot = find_snapshot(sources.runpod_hf_cache_dir, hub.repo, hub.revision, wanted)
    if snapshot is None:
        return None
    vocoder, _ = vocoder_snapshot(sources)
    out = Path(tempfile.mkdtemp(prefix=f"f5worker-{ref.key}-"))
    checkpoint = PurePosixPath(hub.checkpoint).name
    (out / checkpoint).symlink_to((snapshot / hub.checkpoint).resolve())
    vocab = (
        (snapshot / hub.vocab).resolve()
        if hub.vocab
        else Path(str(files("f5_tts.infer").joinpath("examples/vocab.txt")))
    )
    (out / "vocab.txt").symlink_to(vocab)
    (out / VOCODER_DIR).mkdir()
    for filename in VOCODER_FILES:
        (out / VOCODER_DIR / filename).symlink_to((vocoder / filename).resolve())
    text = (snapshot / arch_file).read_text() if arch_file else None
    card = snapshot / CARD_NAME
    license = hub.license or (from_card(card.read_text(errors="replace")) if card.is_file() else "")
    spec = model_spec(ref.key, hub.config, checkpoint, text, license or UNKNOWN)
    (out / SPEC_NAME).write_text(spec.to_json())
    log.info(
        "model %s read in place from RunPod's cache (snapshot %s)", ref.key, snapshot.name[:12]
    )
    return out
