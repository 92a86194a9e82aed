"""Which model directory to serve, and where it comes from.

In order: MODEL_DIR (a local directory, used as is); the S3 cache (sync_models_from_s3); a
complete local copy; the model's source, which is the Hugging Face hub, or the demo generator
when MODEL_NAME=demo (DESIGN.md section 5). Whatever came from a source, or from a local copy
that S3 lacks, is uploaded to S3 by a daemon thread while the worker serves; its errors are
logged and never stop serving. With no S3 cache configured and the hub unreachable the worker
serves the demo model, with one WARNING. With an S3 cache configured the operator asked for a
real model, so an unreachable hub on a miss fails start-up instead of serving noise.

Whatever comes from the cache is a version directory, `<MODEL_CACHE_DIR>/<model>/versions/<v>/`
(models/store.py), held by this process until it exits: the engine loads it after the model
lock is released, and no other worker on the volume changes or prunes it meanwhile. A source
writes into a private staging directory that becomes the version only once complete. An unsafe
cache root or model directory (a symlink, another user's) fails start-up before anything else.
Never imports torch (the demo generator is imported only when it runs).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from f5worker.config import DEMO_MODEL, Settings
from f5worker.errors import ModelError, StorageError
from f5worker.models.local_cache import check_model_name, model_lock
from f5worker.models.manifest import read_manifest
from f5worker.models.spec import SPEC_NAME
from f5worker.models.store import ModelStore, add_built_version, serve_local

log = logging.getLogger(__name__)

Fetch = Callable[[Settings, Path], Path]


def _ready() -> None:
    """The default wait_for_backend: nothing else is importing torch."""


@dataclass(frozen=True)
class PreparedModel:
    """model_dir to serve (a version directory held for the process's life, or MODEL_DIR);
    origin says where it came from; upload is the background S3 upload thread when one was
    started (join it to wait for the entry to land)."""

    model_dir: Path
    origin: str  # model_dir | s3 | local | hub | demo | demo-fallback
    upload: threading.Thread | None = None


def resolve_model_dir(settings: Settings, wait_for_backend: Callable[[], None] = _ready) -> Path:
    return prepare_model(settings, wait_for_backend=wait_for_backend).model_dir


def prepare_model(
    settings: Settings,
    fetch: Fetch | None = None,
    wait_for_backend: Callable[[], None] = _ready,
) -> PreparedModel:
    """Find or fetch the model; `fetch` replaces the hub download (tests, other sources): it
    writes the model and its manifest into the directory it is given. `wait_for_backend` is
    called before the demo generator imports torch and f5-tts, so start-up can tell waiting for
    its own import of them apart from work."""
    if settings.model_dir is not None:
        if not (settings.model_dir / SPEC_NAME).is_file():
            raise ModelError(f"MODEL_DIR={settings.model_dir} has no {SPEC_NAME}")
        return PreparedModel(settings.model_dir, "model_dir")
    name = check_model_name(settings.model_name)
    store = ModelStore.checked(settings.model_cache_dir, name)
    if settings.is_demo:
        log.warning("MODEL_NAME=demo: serving the demo model, whose audio is noise")
    if settings.s3_bucket:
        found = _from_s3(settings)
        if found is not None:
            return found
    with model_lock(settings.model_cache_dir, name) as locked:
        local = _ensure_local(settings, store, locked, fetch or _hub_fetch, wait_for_backend)
    if local is None:
        demo = ModelStore.checked(settings.model_cache_dir, DEMO_MODEL)
        with model_lock(settings.model_cache_dir, DEMO_MODEL) as locked:
            return PreparedModel(
                ensure_demo_model(demo, wait_for_backend, locked=locked), "demo-fallback"
            )
    origin, model_dir = local
    upload = start_background_upload(settings, model_dir) if settings.s3_bucket else None
    return PreparedModel(model_dir, origin, upload)


def _ensure_local(
    settings: Settings,
    store: ModelStore,
    locked: bool,
    fetch: Fetch,
    wait_for_backend: Callable[[], None],
) -> tuple[str, Path] | None:
    """Under the model lock: where the local copy came from and its held version directory, or
    None when the hub failed and the caller should serve the demo model instead."""
    served = serve_local(store, locked=locked)  # under the lock: another may have just fetched
    if served is not None:
        return "local", served
    if settings.is_demo:
        return "demo", add_built_version(
            store, lambda d: _build_demo(d, wait_for_backend), locked=locked
        )
    try:
        model_dir = add_built_version(store, lambda d: fetch(settings, d), locked=locked)
    except StorageError as err:
        if settings.s3_bucket:
            raise
        log.warning(
            "model %s is not cached and the hub is unreachable (%s); serving the demo "
            "model instead, whose audio is noise",
            settings.model_name,
            err.message,
        )
        return None
    return "hub", model_dir


def _from_s3(settings: Settings) -> PreparedModel | None:
    """A served model on a hit (or S3 down but a complete local copy); None on a miss."""
    from f5worker.models.s3_cache import sync_models_from_s3

    try:
        result = sync_models_from_s3(settings)
    except StorageError as err:
        log.warning(
            "S3 model cache unavailable (%s); fetching the model from its source", err.message
        )
        return None
    if result.status == "miss":
        return None
    return PreparedModel(result.model_dir, "s3" if result.hit else "local")


def _hub_fetch(settings: Settings, dest: Path) -> Path:
    from f5worker.models.hub import fetch_from_hub

    return fetch_from_hub(settings, dest)


def _build_demo(path: Path, wait_for_backend: Callable[[], None] = _ready) -> Path:
    wait_for_backend()
    from f5worker.models.demo import build_demo_model
    from f5worker.models.local_cache import record_all

    out = build_demo_model(path)
    manifest = read_manifest(out)
    if manifest is not None:
        record_all(out, manifest)  # it was just hashed: spare the next start a re-hash
    return out


def ensure_demo_model(
    store: ModelStore, wait_for_backend: Callable[[], None] = _ready, *, locked: bool = False
) -> Path:
    """The demo model's held version directory, built first when there is none."""
    served = serve_local(store, locked=locked)
    if served is not None:
        return served
    return add_built_version(store, lambda d: _build_demo(d, wait_for_backend), locked=locked)


def start_background_upload(settings: Settings, model_dir: Path) -> threading.Thread:
    """Upload model_dir to the S3 cache on a daemon thread; errors are logged, never raised."""
    thread = threading.Thread(
        target=_upload_logged, args=(settings, model_dir), name="s3-cache-upload", daemon=True
    )
    thread.start()
    return thread


def _upload_logged(settings: Settings, model_dir: Path) -> None:
    from f5worker.models.s3_cache import upload_models_to_s3

    try:
        upload_models_to_s3(settings, model_dir)
    except StorageError as err:
        log.error("background S3 upload failed; serving continues: %s", err.message)
    except Exception:  # a bug must not kill serving either; keep its traceback for operators
        log.exception("background S3 upload failed unexpectedly; serving continues")
