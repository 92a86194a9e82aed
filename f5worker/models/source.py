"""Which model directory to serve, and where it comes from.

One chain for every model reference (model_ref.py), each step logged with its time:
a local directory (MODEL_DIR for the default model, or a reference that is an absolute path),
used as is; RunPod's cached models (models/runpod_cache.py, read in place, nothing downloaded);
the S3 cache (sync_models_from_s3); a complete local copy in MODEL_CACHE_DIR; the model's
source, which is the Hugging Face hub, or the demo generator for `demo` (docs/design.md,
"The demo model").
A reference's storage key (its directory and S3 key segment) is derived from the whole
reference, so two models never share an entry. Whatever came from a source, or from a local copy
that S3 lacks, is uploaded to S3 by a daemon thread while the worker serves; its errors are
logged and never stop serving. A model found nowhere is a ModelError (not retryable: the places
were just looked in) naming the reference and every place looked in, with the source's own
failure (start-up fails for the default model; a job gets the error for another), never noise
in its place: the demo model stands in only for the default model when
the operator named no model at all and configured no S3 cache (`make run` offline), with one
WARNING.

Whatever comes from the cache is a version directory, `<MODEL_CACHE_DIR>/<model>/versions/<v>/`
(models/store.py), held by this process until it exits: the engine loads it after the model
lock is released, and no other worker on the volume changes or prunes it meanwhile. A source
writes into a private staging directory that becomes the version only once complete. An unsafe
cache root or model directory (a symlink, another user's) fails start-up before anything else.
What the chain reads is a ModelSources (models/sources.py) and the reference: every step is
keyed on the reference's storage key, passed to it, not on the app's settings.
Never imports torch (the demo generator is imported only when it runs).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from f5worker.errors import ModelError, StorageError
from f5worker.model_ref import DEMO as DEMO_MODEL
from f5worker.model_ref import ModelRef
from f5worker.models.fill import add_built_version, serve_local
from f5worker.models.local_cache import check_model_name, model_lock
from f5worker.models.manifest import read_manifest
from f5worker.models.sources import ModelSources, S3Location
from f5worker.models.spec import SPEC_NAME
from f5worker.models.store import ModelStore

log = logging.getLogger(__name__)

Fetch = Callable[[ModelSources, str, Path], Path]  # (sources, model name, directory to fill)


def _ready() -> None:
    """The default wait_for_backend: nothing else is importing torch."""


@dataclass(frozen=True)
class PreparedModel:
    """model_dir to serve (a version directory held for the process's life, or MODEL_DIR);
    origin says where it came from; upload is the background S3 upload thread when one was
    started (join it to wait for the entry to land)."""

    model_dir: Path
    origin: str  # model_dir | runpod_cache | s3 | local | hub | demo | demo-fallback
    upload: threading.Thread | None = None


def resolve_model_dir(
    sources: ModelSources,
    default_model: ModelRef,
    wait_for_backend: Callable[[], None] = _ready,
) -> Path:
    """The default model's directory (MODEL_DIR when set)."""
    return prepare_model(
        sources, default_model, default=True, wait_for_backend=wait_for_backend
    ).model_dir


@contextmanager
def _step(name: str, step: str) -> Iterator[list[str]]:
    """Log one source step of one model with its time and outcome (the caller appends it)."""
    outcome: list[str] = []
    started = time.perf_counter()
    try:
        yield outcome
    except Exception as exc:
        outcome.append(f"failed ({type(exc).__name__})")
        raise
    finally:
        log.info(
            "model %s: %s %s in %.2f s",
            name,
            step,
            outcome[-1] if outcome else "miss",
            time.perf_counter() - started,
        )


def prepare_model(
    sources: ModelSources,
    ref: ModelRef,
    *,
    default: bool = False,
    fetch: Fetch | None = None,
    wait_for_backend: Callable[[], None] = _ready,
) -> PreparedModel:
    """Find or fetch the model ref; `default` says it is the worker's default model, the one
    MODEL_DIR and the demo fallback (sources.model_dir, sources.demo_fallback) apply to.
    `fetch` replaces the hub download (tests, other sources): it writes the model and its
    manifest into the directory it is given. `wait_for_backend` is called before the demo
    generator imports torch and f5-tts, so start-up can tell waiting for its own import of them
    apart from work."""
    if default and sources.model_dir is not None:
        if not (sources.model_dir / SPEC_NAME).is_file():
            raise ModelError(f"MODEL_DIR={sources.model_dir} has no {SPEC_NAME}")
        return PreparedModel(sources.model_dir, "model_dir")
    if ref.local_dir is not None:
        if not (ref.local_dir / SPEC_NAME).is_file():
            raise ModelError(f"model {ref.name}: {ref.local_dir} has no {SPEC_NAME}")
        return PreparedModel(ref.local_dir, "model_dir")
    name = check_model_name(ref.key)  # the cache and S3 steps key on it
    store = ModelStore.checked(sources.cache_dir, name)
    if ref.is_demo:
        log.warning("MODEL_NAME=demo: serving the demo model, whose audio is noise")
    if ref.hub is not None:
        with _step(name, "runpod_cache") as outcome:
            from f5worker.models.runpod_cache import serve_from_runpod_cache

            try:
                served = serve_from_runpod_cache(sources, ref)
            except StorageError as err:  # its vocoder is nowhere: S3 may hold the whole model
                log.warning("model %s: RunPod's cached copy is unusable: %s", name, err.message)
                outcome.append("unusable")
                served = None
            if served is not None:
                outcome.append("hit")
                return PreparedModel(served, "runpod_cache")
    if sources.s3 is not None:
        with _step(name, "s3") as outcome:
            found = _from_s3(sources, name)
            if found is not None:
                outcome.append("hit" if found.origin == "s3" else "down, local copy")
                return found
    hub_fetch = fetch or (lambda s, n, d: _hub_fetch(s, n, d, ref))
    may_fall_back = default and sources.demo_fallback and sources.s3 is None
    with (
        _step(name, "local/source") as outcome,
        model_lock(sources.cache_dir, name) as locked,
    ):
        local: tuple[str, Path] | None
        try:
            local = _ensure_local(sources, ref, store, locked, hub_fetch, wait_for_backend)
        except StorageError as err:
            if not may_fall_back:
                raise _nowhere(ref, sources, err) from err
            log.warning(
                "model %s is not cached and the hub is unreachable (%s); serving the demo "
                "model instead, whose audio is noise",
                name,
                err.message,
            )
            local = None
        outcome.append(local[0] if local else "hub unreachable")
    if local is None:
        demo = ModelStore.checked(sources.cache_dir, DEMO_MODEL)
        with model_lock(sources.cache_dir, DEMO_MODEL) as locked:
            return PreparedModel(
                ensure_demo_model(demo, wait_for_backend, locked=locked), "demo-fallback"
            )
    origin, model_dir = local
    upload = None
    if sources.s3 is not None:
        upload = start_background_upload(sources.s3, name, model_dir)
    return PreparedModel(model_dir, origin, upload)


def _ensure_local(
    sources: ModelSources,
    ref: ModelRef,
    store: ModelStore,
    locked: bool,
    fetch: Fetch,
    wait_for_backend: Callable[[], None],
) -> tuple[str, Path]:
    """Under the model lock: where the local copy came from and its held version directory.
    A source that fails raises its StorageError."""
    served = serve_local(store, locked=locked)  # under the lock: another may have just fetched
    if served is not None:
        return "local", served
    if ref.is_demo:
        return "demo", add_built_version(
            store, lambda d: _build_demo(d, wait_for_backend), locked=locked
        )
    return "hub", add_built_version(store, lambda d: fetch(sources, store.name, d), locked=locked)


def _nowhere(ref: ModelRef, sources: ModelSources, err: StorageError) -> ModelError:
    """The model is in no place the chain looks: name the reference and every place, and the
    source's own failure. A ModelError, not retried at once: every place was just looked in (a
    job naming the model again looks again, once the model pool's memory of it expires)."""
    places = ["MODEL_CACHE_DIR"]
    if ref.hub is not None:
        places.insert(0, "RunPod's cached models")
    if sources.s3 is not None:
        places.append("the S3 cache")
    label = ref.name if ref.name == ref.text else f"{ref.name} ({ref.text})"
    return ModelError(f"model {label} is not in {', '.join(places)}; {err.message}")


def _from_s3(sources: ModelSources, name: str) -> PreparedModel | None:
    """A served model on a hit (or S3 down but a complete local copy); None on a miss."""
    from f5worker.models.s3_sync import sync_models_from_s3

    try:
        result = sync_models_from_s3(sources, name)
    except StorageError as err:
        log.warning(
            "S3 model cache unavailable (%s); fetching the model from its source", err.message
        )
        return None
    if result.status == "miss":
        return None
    return PreparedModel(result.model_dir, "s3" if result.hit else "local")


def _hub_fetch(sources: ModelSources, name: str, dest: Path, ref: ModelRef | None = None) -> Path:
    from f5worker.models.hub import fetch_from_hub

    return fetch_from_hub(sources, name, dest, model=ref.hub if ref else None)


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


def start_background_upload(s3: S3Location, name: str, model_dir: Path) -> threading.Thread:
    """Upload model_dir (model `name`) to the S3 cache on a daemon thread; errors are logged,
    never raised."""
    thread = threading.Thread(
        target=_upload_logged, args=(s3, name, model_dir), name="s3-cache-upload", daemon=True
    )
    thread.start()
    return thread


def _upload_logged(s3: S3Location, name: str, model_dir: Path) -> None:
    from f5worker.models.s3_upload import upload_models_to_s3

    try:
        upload_models_to_s3(s3, name, model_dir)
    except StorageError as err:
        log.error("background S3 upload failed; serving continues: %s", err.message)
    except Exception:  # a bug must not kill serving either; keep its traceback for operators
        log.exception("background S3 upload failed unexpectedly; serving continues")
