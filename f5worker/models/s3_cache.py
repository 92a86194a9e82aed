"""The S3 model cache protocol: versions, the latest pointer, sync down and upload.

Layout (one entry per model version, never overwritten in place):

    s3://$S3_BUCKET/$S3_PREFIX/<model>/<version>/<file ...>        the model files
    s3://$S3_BUCKET/$S3_PREFIX/<model>/<version>/manifest.json     written last: the commit marker
    s3://$S3_BUCKET/$S3_PREFIX/<model>/latest.json                 {"version": ...}, written after

<version> is the first 16 hex digits of a sha256 over the manifest's (path, size, sha256) list,
so identical files always get the same version and two workers uploading the same model race
for the same manifest key, where `IfNoneMatch="*"` lets exactly one win. A reader follows
latest.json; when it is missing or stale (an uploader died between manifest and pointer) it lists
the versions and takes the newest committed manifest.

Model files arrive by parallel ranged GETs (models/ranged.py) into unique temp files beside
their targets, hashed while they arrive, and are renamed into place only after their size and
sha256 check out, so a failed or corrupt transfer never leaves a partial file where a good one is
expected. The S3 calls and their error mapping are f5worker.s3's. Never imports torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig, create_transfer_manager

from f5worker.config import Settings
from f5worker.errors import StorageError
from f5worker.files import TEMP_SUFFIX, fsync_dir
from f5worker.models.local_cache import (
    LOCK_TIMEOUT_S,
    check_free_space,
    check_model_name,
    disk_free,
    inspect,
    load_record,
    model_lock,
    remember,
    remove_stale_temps,
    save_record,
    verify_local_copy,
)
from f5worker.models.manifest import (
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    ManifestError,
    read_manifest,
    write_manifest,
)
from f5worker.models.ranged import (
    HashingSink,
    RangedConfig,
    RangeFailed,
    RangeMismatch,
    Target,
    download_ranges,
)
from f5worker.s3 import (
    S3_ERRORS,
    ObjectMissing,
    describe,
    exists,
    get_bytes,
    make_client,
    put_bytes,
    put_if_absent,
    storage_error,
)

log = logging.getLogger(__name__)

MiB = 1024 * 1024
JSON = "application/json"
POINTER_NAME = "latest.json"
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# Chosen by scripts/bench_s3_sync.py --sweep (JOURNAL.md).
SYNC_RANGES = RangedConfig(part_size=16 * MiB, concurrency=16, read_size=1 * MiB)
UPLOAD_TRANSFER = TransferConfig(
    multipart_threshold=64 * MiB,
    multipart_chunksize=64 * MiB,
    max_concurrency=8,
    preferred_transfer_client="classic",
)


# --- the model cache ------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelPaths:
    """Where the model is and how the S3 cache answered.

    status: "hit" (the directory now matches the newest version in S3), "miss" (S3 holds no
    entry; model_dir is where the source should put it), "local" (S3 failed, and the complete
    local copy in model_dir is used instead).
    """

    model_dir: Path
    status: str
    version: str | None = None
    downloaded_bytes: int = 0
    reused_files: int = 0

    @property
    def hit(self) -> bool:
        return self.status == "hit"


@dataclass(frozen=True)
class UploadResult:
    version: str
    committed: bool  # False: the entry already existed or another uploader won the race
    uploaded_bytes: int = 0


def manifest_version(manifest: Manifest) -> str:
    """Content address of a model: the same files always give the same version."""
    digest = hashlib.sha256()
    for entry in sorted(manifest.files, key=lambda f: f.path):
        digest.update(f"{entry.path}\0{entry.size}\0{entry.sha256}\n".encode())
    return digest.hexdigest()[:16]


def model_prefix(settings: Settings) -> str:
    """`<S3_PREFIX>/<model>/`, with an empty S3_PREFIX meaning the bucket root."""
    parts = [p for p in (settings.s3_prefix.strip("/"), check_model_name(settings.model_name)) if p]
    return "/".join(parts) + "/"


def _bucket(settings: Settings) -> str:
    if not settings.s3_bucket:
        raise StorageError("S3_BUCKET is not set; the S3 model cache is off")
    return settings.s3_bucket


def _client(settings: Settings, client: Any | None) -> Any:
    return client or make_client(settings.s3_endpoint_url, settings.aws_region)


def _read_manifest(client: Any, bucket: str, key: str) -> Manifest | None:
    data = get_bytes(client, bucket, key)
    if data is None:
        return None
    try:
        return Manifest.from_json(data)
    except ManifestError as exc:
        raise StorageError(f"s3://{bucket}/{key}: {exc}") from None


def find_latest(client: Any, bucket: str, prefix: str) -> tuple[str, Manifest] | None:
    """The newest committed version under prefix: latest.json first, listing as the fallback."""
    pointer_key = prefix + POINTER_NAME
    raw = get_bytes(client, bucket, pointer_key)
    if raw is not None:
        version = _pointer_version(raw)
        if version is None:
            log.warning("ignoring malformed s3://%s/%s", bucket, pointer_key)
        else:
            manifest = _read_manifest(client, bucket, f"{prefix}{version}/{MANIFEST_NAME}")
            if manifest is not None:
                return version, manifest
            log.warning(
                "s3://%s/%s names version %s, which has no manifest", bucket, prefix, version
            )
    for version in _versions_newest_first(client, bucket, prefix):
        manifest = _read_manifest(client, bucket, f"{prefix}{version}/{MANIFEST_NAME}")
        if manifest is not None:
            return version, manifest
    return None


def _pointer_version(raw: bytes) -> str | None:
    try:
        version = json.loads(raw).get("version")
    except (ValueError, AttributeError):
        return None
    return version if isinstance(version, str) and _VERSION.fullmatch(version) else None


def _versions_newest_first(client: Any, bucket: str, prefix: str) -> list[str]:
    """Versions whose manifest exists, newest manifest first (one LIST, one HEAD per version)."""
    try:
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, Delimiter="/"
        )
        names = [
            p["Prefix"][len(prefix) :].rstrip("/")
            for page in pages
            for p in page.get("CommonPrefixes", [])
        ]
    except S3_ERRORS as exc:
        raise storage_error("list", bucket, prefix, exc) from exc
    dated = []
    for name in filter(_VERSION.fullmatch, names):
        key = f"{prefix}{name}/{MANIFEST_NAME}"
        try:
            head = client.head_object(Bucket=bucket, Key=key)
        except S3_ERRORS as exc:
            error = storage_error("check", bucket, key, exc)
            if isinstance(error, ObjectMissing):
                continue  # an upload in progress or abandoned: not an entry
            raise error from exc
        dated.append((head["LastModified"], name))
    return [name for _, name in sorted(dated, reverse=True)]


def sync_models_from_s3(
    settings: Settings,
    *,
    client: Any | None = None,
    ranges: RangedConfig = SYNC_RANGES,
    free_bytes: Callable[[Path], int] = disk_free,
    lock_timeout: float = LOCK_TIMEOUT_S,
) -> ModelPaths:
    """Make `<MODEL_CACHE_DIR>/<MODEL_NAME>` match the newest version in S3.

    Files already present and verified are kept; the rest are downloaded in parallel, verified
    and renamed into place; the local manifest is written last. When S3 fails but a complete
    local copy exists, that copy is used with a WARNING.
    """
    bucket = _bucket(settings)
    name = check_model_name(settings.model_name)
    model_dir = settings.model_cache_dir / name
    prefix = model_prefix(settings)
    client = _client(settings, client)
    try:
        found = find_latest(client, bucket, prefix)
    except StorageError as err:
        return _local_fallback(model_dir, err)
    if found is None:
        log.info("S3 cache miss: no manifest under s3://%s/%s", bucket, prefix)
        return ModelPaths(model_dir, "miss")
    version, manifest = found
    if manifest.model != name:
        raise StorageError(
            f"s3://{bucket}/{prefix}{version}/{MANIFEST_NAME} describes model "
            f"{manifest.model!r}, not {name!r}"
        )
    with model_lock(settings.model_cache_dir, name, lock_timeout):
        return _sync_locked(
            client,
            bucket,
            f"{prefix}{version}/",
            version,
            manifest,
            model_dir,
            ranges,
            free_bytes,
        )


def _local_fallback(model_dir: Path, err: StorageError) -> ModelPaths:
    try:
        manifest = read_manifest(model_dir)
    except ManifestError:
        manifest = None
    if manifest is None or not verify_local_copy(model_dir, manifest):
        raise err
    log.warning(
        "S3 model cache unavailable (%s); starting from the complete local copy in %s",
        err.message,
        model_dir,
    )
    return ModelPaths(model_dir, "local", manifest_version(manifest), 0, len(manifest.files))


def _sync_locked(
    client: Any,
    bucket: str,
    version_prefix: str,
    version: str,
    manifest: Manifest,
    model_dir: Path,
    ranges: RangedConfig,
    free_bytes: Callable[[Path], int],
) -> ModelPaths:
    started = time.perf_counter()
    model_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(model_dir)
    for entry in manifest.files:
        _dest_path(model_dir, entry.path)  # reject an escaping path before touching anything
    record = load_record(model_dir)
    recorded = dict(record)
    state = inspect(model_dir, manifest.files, record)
    try:
        local_manifest = read_manifest(model_dir)
    except ManifestError:
        local_manifest = None
    if not state.missing and local_manifest == manifest:
        if record != recorded:
            save_record(model_dir, record)
        log.info(
            "S3 cache hit: model %s version %s already complete in %s (%d files, %.2f s)",
            manifest.model,
            version,
            model_dir,
            len(state.valid),
            time.perf_counter() - started,
        )
        return ModelPaths(model_dir, "hit", version, 0, len(state.valid))
    stale = _stale_files(model_dir, manifest)
    check_free_space(
        model_dir,
        state.missing_bytes,
        lambda p: free_bytes(p) + sum(f.stat().st_size for f in stale),
    )
    # From here until the new manifest lands the directory is not a complete copy.
    (model_dir / MANIFEST_NAME).unlink(missing_ok=True)
    for path in stale:
        path.unlink(missing_ok=True)
    try:
        _download_files(client, bucket, version_prefix, state.missing, model_dir, ranges, record)
    finally:
        save_record(model_dir, record)
    for directory in {model_dir, *((model_dir / e.path).parent for e in state.missing)}:
        fsync_dir(directory)
    write_manifest(model_dir, manifest)
    seconds = time.perf_counter() - started
    log.info(
        "S3 cache hit: model %s version %s: downloaded %d files (%.1f MB) in %.2f s "
        "(%.0f MB/s), kept %d verified files",
        manifest.model,
        version,
        len(state.missing),
        state.missing_bytes / 1e6,
        seconds,
        state.missing_bytes / 1e6 / max(seconds, 1e-9),
        len(state.valid),
    )
    return ModelPaths(model_dir, "hit", version, state.missing_bytes, len(state.valid))


def _dest_path(model_dir: Path, rel: str) -> Path:
    """model_dir/rel, refusing anything that resolves outside model_dir (e.g. via a symlink)."""
    dest = model_dir / rel
    if not dest.resolve().is_relative_to(model_dir.resolve()):
        raise StorageError(f"manifest path {rel!r} escapes {model_dir}")
    return dest


def _stale_files(model_dir: Path, manifest: Manifest) -> list[Path]:
    """Visible files the manifest does not name (an older version's leftovers)."""
    wanted = {f.path for f in manifest.files} | {MANIFEST_NAME}
    return [
        p
        for p in model_dir.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(model_dir).parts)
        and p.relative_to(model_dir).as_posix() not in wanted
    ]


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
            dest = _dest_path(model_dir, entry.path)
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
        for _, _, tmp in temps.values():
            tmp.unlink(missing_ok=True)


def _verify_sink(target: Target, entry: FileEntry, bucket: str) -> None:
    where = f"s3://{bucket}/{target.key}"
    actual = os.fstat(target.sink.fd).st_size
    if actual != entry.size or target.sink.size != entry.size:
        raise StorageError(f"{where}: expected {entry.size} bytes, got {actual}")
    if target.sink.inconsistent:
        raise StorageError(f"{where}: object changed while it was being downloaded")
    if target.sink.hexdigest() != entry.sha256:
        raise StorageError(f"{where}: sha256 does not match the manifest")


def upload_models_to_s3(
    settings: Settings,
    model_dir: Path,
    *,
    client: Any | None = None,
    transfer: TransferConfig = UPLOAD_TRANSFER,
) -> UploadResult:
    """Publish model_dir as a new cache entry: data files first, manifest last (IfNoneMatch="*"),
    then latest.json. A second uploader of the same version loses the manifest race cleanly."""
    bucket = _bucket(settings)
    name = check_model_name(settings.model_name)
    try:
        manifest = read_manifest(model_dir)
    except ManifestError as exc:
        raise StorageError(f"{model_dir}: {exc}") from None
    if manifest is None:
        raise StorageError(f"{model_dir} has no {MANIFEST_NAME}; nothing to upload")
    if manifest.model != name:
        raise StorageError(f"{model_dir} holds model {manifest.model!r}, not {name!r}")
    if not verify_local_copy(model_dir, manifest):
        raise StorageError(f"{model_dir} does not match its manifest; not uploading it")
    client = _client(settings, client)
    prefix = model_prefix(settings)
    version = manifest_version(manifest)
    manifest_key = f"{prefix}{version}/{MANIFEST_NAME}"
    uploaded = 0
    if exists(client, bucket, manifest_key):
        log.info("model %s version %s is already in s3://%s/%s", name, version, bucket, prefix)
        committed = False
    else:
        started = time.perf_counter()
        _upload_files(client, bucket, f"{prefix}{version}/", model_dir, manifest, transfer)
        uploaded = manifest.total_bytes
        committed = put_if_absent(client, bucket, manifest_key, manifest.to_json().encode(), JSON)
        log.info(
            "uploaded model %s version %s to s3://%s/%s (%.1f MB in %.1f s)%s",
            name,
            version,
            bucket,
            prefix,
            uploaded / 1e6,
            time.perf_counter() - started,
            "" if committed else "; another uploader committed it first",
        )
    pointer_key = prefix + POINTER_NAME
    if committed or not exists(client, bucket, pointer_key):
        put_bytes(
            client,
            bucket,
            pointer_key,
            json.dumps({"model": name, "version": version}).encode(),
            JSON,
        )
    return UploadResult(version, committed, uploaded)


def _upload_files(
    client: Any,
    bucket: str,
    version_prefix: str,
    model_dir: Path,
    manifest: Manifest,
    transfer: TransferConfig,
) -> None:
    with create_transfer_manager(client, transfer) as manager:
        pending = [
            (
                version_prefix + e.path,
                manager.upload(str(model_dir / e.path), bucket, version_prefix + e.path),
            )
            for e in manifest.files
        ]
        for key, future in pending:
            try:
                future.result()
            except Exception as exc:  # any transfer failure, wrapped as the error it is
                raise storage_error("upload", bucket, key, exc) from exc
