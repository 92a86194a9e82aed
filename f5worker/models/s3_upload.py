"""Upload: publish a local model directory as a new version of the S3 model cache.

An upload sends exactly the bytes it hashed: each file is read once from one descriptor, every
buffer hashed and that same buffer sent, and a file's object is created (its PUT sent, or its
multipart upload completed) only after all its bytes matched the manifest. A file replaced or
rewritten after it was verified is never published under a manifest it does not match.

The S3 layout is models/s3_layout.py's; the sync down is models/s3_sync.py's. The S3 calls and
their error mapping are f5worker.s3's. Never imports torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig

from f5worker.errors import StorageError
from f5worker.models.local_cache import check_model_name, verify_local_copy
from f5worker.models.manifest import (
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    ManifestError,
    manifest_version,
    read_manifest,
)
from f5worker.models.s3_layout import POINTER_NAME, cache_client, cache_location, model_prefix
from f5worker.models.sources import S3Location
from f5worker.models.store import inside
from f5worker.s3 import S3_ERRORS, exists, put_bytes, put_if_absent, storage_error

log = logging.getLogger(__name__)

MiB = 1024 * 1024
JSON = "application/json"
# Files up to multipart_threshold go up in one PUT, longer ones in parts of multipart_chunksize;
# at most max_concurrency buffers (here 8 x 16 MiB) are in memory at once.
UPLOAD_TRANSFER = TransferConfig(
    multipart_threshold=16 * MiB,
    multipart_chunksize=16 * MiB,
    max_concurrency=8,
)
MIN_PART_SIZE = 5 * MiB  # S3's smallest part but the last


@dataclass(frozen=True)
class UploadResult:
    version: str
    committed: bool  # False: the entry already existed or another uploader won the race
    uploaded_bytes: int = 0


def upload_models_to_s3(
    s3: S3Location | None,
    name: str,
    model_dir: Path,
    *,
    client: Any | None = None,
    transfer: TransferConfig = UPLOAD_TRANSFER,
) -> UploadResult:
    """Publish model_dir, a directory of model `name`, as a new entry of the S3 cache s3 (None:
    the cache is off, a StorageError): data files first, manifest last (IfNoneMatch="*"), then
    latest.json. A second uploader of the same version loses the manifest race cleanly.

    The files are verified against the manifest first, then hashed again as they are sent
    (_upload_files): a file that no longer matches aborts the upload with an ERROR log and
    commits nothing."""
    location = cache_location(s3)
    bucket = location.bucket
    name = check_model_name(name)
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
    client = cache_client(location, client)
    prefix = model_prefix(location, name)
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
    # Set by TransferConfig.__init__, but missing from boto3's stubs.
    workers = max(1, int(transfer.max_concurrency))  # type: ignore[attr-defined]
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
