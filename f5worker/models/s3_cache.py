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

Locally each version gets its own directory, `<MODEL_CACHE_DIR>/<model>/versions/<version>/`,
held by the process that serves it and never changed under it (models/store.py): two endpoints
on one volume following different prefixes, or a rollout moving latest.json, cannot touch the
files another worker is about to load. Model files arrive by parallel ranged GETs
(models/ranged.py) into unique temp files beside their targets, hashed while they arrive, and are
renamed into place only after their size and sha256 check out, so a failed or corrupt transfer
never leaves a partial file where a good one is expected.

An upload sends exactly the bytes it hashed: each file is read once from one descriptor, every
buffer hashed and that same buffer sent, and a file's object is created (its PUT sent, or its
multipart upload completed) only after all its bytes matched the manifest. A file replaced or
rewritten after it was verified is never published under a manifest it does not match. The S3
calls and their error mapping are f5worker.s3's. Never imports torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig

from f5worker.config import Settings
from f5worker.errors import StorageError
from f5worker.files import TEMP_SUFFIX
from f5worker.models.fill import Filled, complete, fill_version
from f5worker.models.local_cache import (
    LOCK_TIMEOUT_S,
    check_model_name,
    disk_free,
    model_lock,
    remember,
    verify_local_copy,
)
from f5worker.models.manifest import (
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    ManifestError,
    manifest_version,
    read_manifest,
)
from f5worker.models.ranged import (
    HashingSink,
    RangedConfig,
    RangeFailed,
    RangeMismatch,
    Target,
    download_ranges,
)
from f5worker.models.store import (
    CURRENT,
    VERSION_PATTERN,
    ModelStore,
    inside,
    source_pointer,
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
_VERSION = VERSION_PATTERN
# Chosen by scripts/bench_s3_sync.py --sweep (JOURNAL.md).
SYNC_RANGES = RangedConfig(part_size=16 * MiB, concurrency=16, read_size=1 * MiB)
# Files up to multipart_threshold go up in one PUT, longer ones in parts of multipart_chunksize;
# at most max_concurrency buffers (here 8 x 16 MiB) are in memory at once.
UPLOAD_TRANSFER = TransferConfig(
    multipart_threshold=16 * MiB,
    multipart_chunksize=16 * MiB,
    max_concurrency=8,
)
MIN_PART_SIZE = 5 * MiB  # S3's smallest part but the last
Record = dict[str, dict[str, object]]


# --- the model cache ------------------------------------------------------------------------


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


@dataclass(frozen=True)
class UploadResult:
    version: str
    committed: bool  # False: the entry already existed or another uploader won the race
    uploaded_bytes: int = 0


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
    """Make `<MODEL_CACHE_DIR>/<MODEL_NAME>/versions/<version>` the newest version in S3.

    Files already present and verified are kept, files of other local versions with the same
    bytes linked, the rest downloaded in parallel, verified and renamed into place; a new
    version's directory appears complete, by one rename. The returned directory is held by this
    process until it exits, so no other sync prunes it. When S3 fails but a complete local
    copy exists, that copy is used with a WARNING. An unsafe cache root or model directory (a
    symlink, or another user's) is refused before anything else.
    """
    bucket = _bucket(settings)
    store = ModelStore.checked(settings.model_cache_dir, settings.model_name)
    prefix = model_prefix(settings)
    client = _client(settings, client)
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
    with model_lock(settings.model_cache_dir, store.name, lock_timeout) as locked:
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
    then latest.json. A second uploader of the same version loses the manifest race cleanly.

    The files are verified against the manifest first, then hashed again as they are sent
    (_upload_files): a file that no longer matches aborts the upload with an ERROR log and
    commits nothing."""
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
        message = f"{model_dir} does not match its manifest; not uploading it"
        log.error("%s", message)
        raise StorageError(message)
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
    """Upload every manifest file, each object created only from bytes that matched the manifest.

    Files are read in manifest order on this thread, buffers sent by a pool; a full pool makes
    the reader wait, which bounds memory to max_concurrency buffers. The first failure in
    manifest order is raised; a mismatch aborts everything at once.
    """
    part_size = max(int(transfer.multipart_chunksize), MIN_PART_SIZE)
    single_max = max(int(transfer.multipart_threshold), part_size)
    workers = max(1, int(transfer.max_concurrency))
    slots = threading.BoundedSemaphore(workers)
    failed = threading.Event()  # a request failed: read no further, finish() raises it
    pool = ThreadPoolExecutor(workers, thread_name_prefix="s3-cache-upload")

    def done(future: Future[Any]) -> None:
        slots.release()
        if future.cancelled() or future.exception() is not None:
            failed.set()

    def submit(fn: Callable[..., Any], *args: Any) -> Future[Any]:
        slots.acquire()
        try:
            future = pool.submit(fn, *args)
        except BaseException:
            slots.release()
            raise
        future.add_done_callback(done)
        return future

    uploads: list[_FileUpload] = []
    try:
        for entry in manifest.files:
            if failed.is_set():
                break
            upload = _FileUpload(client, bucket, version_prefix + entry.path, entry)
            uploads.append(upload)
            upload.send(model_dir, single_max, part_size, submit, failed)
        for upload in uploads:
            upload.finish()
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        for upload in uploads:
            upload.abort()
        raise
    finally:
        pool.shutdown(wait=True)


@dataclass
class _FileUpload:
    """One file going up: a single PUT, or a multipart upload completed only once verified."""

    client: Any
    bucket: str
    key: str
    entry: FileEntry
    upload_id: str | None = None
    futures: list[Future[Any]] = field(default_factory=list)
    verified: bool = False  # every byte was read, hashed and matched the manifest
    done: bool = False

    def send(
        self,
        model_dir: Path,
        single_max: int,
        part_size: int,
        submit: Callable[..., Future[Any]],
        failed: threading.Event,
    ) -> None:
        """Read the file once, hashing each buffer and sending that same buffer; stops early
        (unverified, so never completed) once another request has failed."""
        path = inside(model_dir, self.entry.path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise StorageError(
                f"upload s3://{self.bucket}/{self.key} failed: cannot read {path}: {exc.strerror}"
            ) from exc
        try:
            digest = hashlib.sha256()
            if self.entry.size <= single_max:
                data = _read(fd, self.entry.size + 1)  # one byte more reveals a grown file
                digest.update(data)
                self._check(path, len(data), digest)
                self.verified = True
                self.futures.append(submit(self._put, data))
                return
            self.upload_id = self._call(
                "upload", self.client.create_multipart_upload, Bucket=self.bucket, Key=self.key
            )["UploadId"]
            read = 0
            while not failed.is_set() and (data := _read(fd, part_size)):
                digest.update(data)
                read += len(data)
                if read > self.entry.size:
                    break  # it grew: never sent past the manifest's size
                self.futures.append(submit(self._part, len(self.futures) + 1, data))
            if not failed.is_set():
                self._check(path, read, digest)
                self.verified = True
        finally:
            os.close(fd)

    def finish(self) -> None:
        """Wait for the file's requests; complete its multipart upload."""
        results = []
        for future in self.futures:
            try:
                results.append(future.result())
            except Exception as exc:  # any transfer failure, wrapped as the error it is
                raise storage_error("upload", self.bucket, self.key, exc) from exc
        if not self.verified:  # cut short by another file's failure, which was raised first
            raise StorageError(f"upload s3://{self.bucket}/{self.key} stopped unfinished")
        if self.upload_id is not None:
            self._call(
                "upload",
                self.client.complete_multipart_upload,
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": results},
            )
        self.done = True

    def abort(self) -> None:
        """Drop an unfinished multipart upload, so its parts never become an object."""
        if self.upload_id is not None and not self.done:
            with contextlib.suppress(*S3_ERRORS):
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=self.key, UploadId=self.upload_id
                )

    def _check(self, path: Path, size: int, digest: Any) -> None:
        if size == self.entry.size and digest.hexdigest() == self.entry.sha256:
            return
        message = (
            f"upload s3://{self.bucket}/{self.key} aborted: {path} no longer matches its "
            "manifest (changed after it was hashed); nothing committed"
        )
        log.error("%s", message)
        raise StorageError(message)

    def _put(self, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.key, Body=data)

    def _part(self, number: int, data: bytes) -> dict[str, Any]:
        reply = self.client.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=data
        )
        return {"PartNumber": number, "ETag": reply["ETag"]}

    def _call(self, action: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except S3_ERRORS as exc:
            raise storage_error(action, self.bucket, self.key, exc) from exc


def _read(fd: int, size: int) -> bytes:
    """Up to size bytes from fd (fewer only at the end of the file)."""
    chunks = []
    while size > 0 and (chunk := os.read(fd, min(size, 8 * MiB))):
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)
