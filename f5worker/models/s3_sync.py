"""Sync down: make the newest version of a model in the S3 cache a local version directory.

Locally each version gets its own directory, `<MODEL_CACHE_DIR>/<model>/versions/<version>/`,
held by the process that serves it and never changed under it (models/store.py): two endpoints
on one volume following different prefixes, or a rollout moving latest.json, cannot touch the
files another worker is about to load. Model files arrive by parallel ranged GETs
(models/ranged.py) into unique temp files beside their targets, hashed while they arrive, and are
renamed into place only after their size and sha256 check out, so a failed or corrupt transfer
never leaves a partial file where a good one is expected.

The S3 layout and finding the newest version are models/s3_layout.py's; the upload is
models/s3_upload.py's. Never imports torch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from f5worker.errors import StorageError
from f5worker.files import TEMP_SUFFIX
from f5worker.models.fill import Filled, complete, fill_version
from f5worker.models.local_cache import LOCK_TIMEOUT_S, disk_free, model_lock, remember
from f5worker.models.manifest import MANIFEST_NAME, FileEntry, Manifest, read_manifest
from f5worker.models.ranged import (
    HashingSink,
    RangedConfig,
    RangeFailed,
    RangeMismatch,
    Target,
    download_ranges,
)
from f5worker.models.s3_layout import cache_client, cache_location, find_latest, model_prefix
from f5worker.models.sources import ModelSources
from f5worker.models.store import CURRENT, ModelStore, inside, source_pointer
from f5worker.s3 import describe

log = logging.getLogger(__name__)

MiB = 1024 * 1024
# Chosen by scripts/bench_s3_sync.py --sweep (docs/decisions/002-own-ranged-get-s3-engine.md).
SYNC_RANGES = RangedConfig(part_size=16 * MiB, concurrency=16, read_size=1 * MiB)
Record = dict[str, dict[str, object]]


@dataclass(frozen=True)
class ModelPaths:
    """Where the model is and how the S3 cache answered.

    status: "hit" (model_dir, a version directory this process now holds, matches the newest
    version in S3), "miss" (S3 holds no entry; model_dir is the model's directory in the cache,
    where the source's version will go), "local" (S3 failed, and the complete local version in
    model_dir, held too, is used instead).
    """

    model_dir: Path
    status: str
    version: str | None = None
    downloaded_bytes: int = 0
    reused_files: int = 0

    @property
    def hit(self) -> bool:
        return self.status == "hit"


def sync_models_from_s3(
    sources: ModelSources,
    name: str,
    *,
    client: Any | None = None,
    ranges: RangedConfig = SYNC_RANGES,
    free_bytes: Callable[[Path], int] = disk_free,
    lock_timeout: float = LOCK_TIMEOUT_S,
) -> ModelPaths:
    """Make `<MODEL_CACHE_DIR>/<name>/versions/<version>` the newest version of model `name` in
    the S3 cache sources.s3 (a StorageError when it is None: the cache is off).

    Files already present and verified are kept, files of other local versions with the same
    bytes linked, the rest downloaded in parallel, verified and renamed into place; a new
    version's directory appears complete, by one rename. The returned directory is held by this
    process until it exits, so no other sync prunes it. When S3 fails but a complete local
    copy exists, that copy is used with a WARNING. An unsafe cache root or model directory (a
    symlink, or another user's) is refused before anything else.
    """
    location = cache_location(sources.s3)
    bucket = location.bucket
    store = ModelStore.checked(sources.cache_dir, name)
    prefix = model_prefix(location, name)
    client = cache_client(location, client)
    pointer = source_pointer(f"s3://{bucket}/{prefix}")
    try:
        found = find_latest(client, bucket, prefix)
    except StorageError as err:
        return _local_fallback(store, pointer, err)
    if found is None:
        log.info("S3 cache miss: no manifest under s3://%s/%s", bucket, prefix)
        return ModelPaths(store.home, "miss")
    version, manifest = found
    if manifest.model != store.name:
        raise StorageError(
            f"s3://{bucket}/{prefix}{version}/{MANIFEST_NAME} describes model "
            f"{manifest.model!r}, not {store.name!r}"
        )
    store.version_dir(version)  # a bad name fails before the lock
    with model_lock(sources.cache_dir, store.name, lock_timeout) as locked:
        started = time.perf_counter()

        def download(entries: tuple[FileEntry, ...], target: Path, record: Record) -> None:
            _download_files(client, bucket, f"{prefix}{version}/", entries, target, ranges, record)

        filled = fill_version(
            store,
            version,
            manifest,
            download,
            free_bytes=free_bytes,
            make_room=(lambda: store.prune(keep=0)) if locked else None,
        )
        store.point(version, CURRENT, pointer)
        if locked:
            store.prune()
    _log_sync(manifest, version, filled, time.perf_counter() - started)
    return ModelPaths(
        filled.model_dir, "hit", version, filled.downloaded_bytes, filled.kept + filled.linked
    )


def _log_sync(manifest: Manifest, version: str, filled: Filled, seconds: float) -> None:
    if not filled.changed:
        log.info(
            "S3 cache hit: model %s version %s already complete in %s (%d files, %.2f s)",
            manifest.model,
            version,
            filled.model_dir,
            filled.kept,
            seconds,
        )
        return
    log.info(
        "S3 cache hit: model %s version %s: downloaded %d files (%.1f MB) in %.2f s "
        "(%.0f MB/s), kept %d verified files, linked %d from other versions, into %s",
        manifest.model,
        version,
        filled.downloaded,
        filled.downloaded_bytes / 1e6,
        seconds,
        filled.downloaded_bytes / 1e6 / max(seconds, 1e-9),
        filled.kept,
        filled.linked,
        filled.model_dir,
    )


def _local_fallback(store: ModelStore, pointer: str, err: StorageError) -> ModelPaths:
    """S3 failed: serve the version this S3 location last gave, else `current`, if complete."""
    for version in dict.fromkeys(v for v in (store.pointer(pointer), store.pointer()) if v):
        if not store.has_version(version):
            continue
        held_before = store.holds(version)
        model_dir = store.hold(version)
        if complete(model_dir, store.name):
            manifest = read_manifest(model_dir)
            files = len(manifest.files) if manifest else 0
            log.warning(
                "S3 model cache unavailable (%s); starting from the complete local copy in %s",
                err.message,
                model_dir,
            )
            return ModelPaths(model_dir, "local", version, 0, files)
        if not held_before:
            store.release(version)
    raise err


def _download_files(
    client: Any,
    bucket: str,
    version_prefix: str,
    entries: tuple[FileEntry, ...],
    model_dir: Path,
    config: RangedConfig,
    record: dict[str, dict[str, object]],
) -> None:
    """Parallel ranged GETs for every entry; each file is verified (size + sha256), fsynced and
    renamed into place as soon as its last range lands, so a failure elsewhere keeps it."""
    temps: dict[str, tuple[FileEntry, Path, Path]] = {}
    targets: list[Target] = []
    lock = threading.Lock()

    def commit(target: Target) -> None:
        entry, dest, tmp = temps[target.key]
        _verify_sink(target, entry, bucket)
        try:
            os.fsync(target.sink.fd)
            os.fchmod(target.sink.fd, 0o644)  # mkstemp's 0600 would hide it from volume users
            os.replace(tmp, dest)
        except OSError as exc:
            raise StorageError(f"cannot write {dest}: {exc.strerror}") from exc
        with lock:
            remember(record, model_dir, entry)

    try:
        for entry in entries:
            dest = inside(model_dir, entry.path)
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=TEMP_SUFFIX, dir=dest.parent)
            key = version_prefix + entry.path
            temps[key] = (entry, dest, Path(tmp))
            targets.append(Target(key, entry.size, HashingSink(fd)))
        try:
            download_ranges(client, bucket, targets, config, on_done=commit)
        except RangeFailed as exc:
            cause = exc.cause  # a size mismatch is our own message: sizes, nothing secret
            reason = str(cause) if isinstance(cause, RangeMismatch) else describe(cause)
            if exc.attempts > 1:
                reason += f" after {exc.attempts} attempts"
            raise StorageError(f"download s3://{bucket}/{exc.key} failed: {reason}") from exc
    finally:
        for target in targets:
            with contextlib.suppress(OSError):
                os.close(target.sink.fd)
        for _, _, temp in temps.values():
            temp.unlink(missing_ok=True)


def _verify_sink(target: Target, entry: FileEntry, bucket: str) -> None:
    where = f"s3://{bucket}/{target.key}"
    actual = os.fstat(target.sink.fd).st_size
    if actual != entry.size or target.sink.size != entry.size:
        raise StorageError(f"{where}: expected {entry.size} bytes, got {actual}")
    if target.sink.inconsistent:
        raise StorageError(f"{where}: object changed while it was being downloaded")
    if target.sink.hexdigest() != entry.sha256:
        raise StorageError(f"{where}: sha256 does not match the manifest")
