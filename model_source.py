"""Which model directory to serve: a configured local dir, the S3 cache, or the demo model."""

from __future__ import annotations

import logging
from pathlib import Path

from config import Settings
from errors import ModelError
from manifest import is_complete, read_manifest
from model_spec import SPEC_NAME

log = logging.getLogger(__name__)


def resolve_model_dir(settings: Settings) -> Path:
    if settings.model_dir is not None:
        if not (settings.model_dir / SPEC_NAME).is_file():
            raise ModelError(f"MODEL_DIR={settings.model_dir} has no {SPEC_NAME}")
        return settings.model_dir
    if not settings.is_demo:
        local = settings.model_cache_dir / settings.model_name
        manifest = read_manifest(local)
        if manifest is not None and is_complete(local, manifest):
            return local
        log.warning(
            "model %s is not cached and no S3 cache or hub is configured; serving the "
            "demo model instead, whose audio is noise",
            settings.model_name,
        )
    else:
        log.warning("MODEL_NAME=demo: serving the demo model, whose audio is noise")
    return ensure_demo_model(settings.model_cache_dir / "demo")


def ensure_demo_model(path: Path) -> Path:
    manifest = read_manifest(path)
    if manifest is not None and is_complete(path, manifest):
        return path
    from demo_model import build_demo_model

    return build_demo_model(path)
