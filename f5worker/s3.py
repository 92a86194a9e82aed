"""S3 primitives shared by the model cache, the voice library and s3:// references.

One client factory, one bounded read, atomic get/put, and one mapping from boto's many error
shapes to the worker's coded errors, so every caller tells "this object is not there" from
"storage is down" the same way:

- ObjectMissing (no such bucket or key) and AccessDenied (403, no credentials) are the caller's
  to interpret: a voice that is not there, a reference that cannot be used, a cache miss;
- every other failure is a retryable StorageError.

Messages name `s3://bucket/key` and the S3 error code or exception type, never a credential and
never botocore's own message (which can hold a presigned URL); the original exception is always
kept as `__cause__` for the worker log. Never imports torch.
"""

from __future__ import annotations

import errno
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from s3transfer.utils import S3_RETRYABLE_DOWNLOAD_ERRORS

from f5worker.errors import StorageError
from f5worker.files import TEMP_SUFFIX, commit_file, sha256_file

if TYPE_CHECKING:  # boto3's generated stubs (a dev dependency): the client's typed surface
    from mypy_boto3_s3 import S3Client
else:
    S3Client = Any
# How a component gets its S3 client: built on first need (tests pass one for moto).
ClientFactory = Callable[[], S3Client]

log = logging.getLogger(__name__)

MiB = 1024 * 1024
MISSING_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "404", "NotFound"})
DENIED_CODES = frozenset({"AccessDenied", "403", "AllAccessDisabled", "InvalidAccessKeyId"})
# A conditional write that found the object there (412) lost the race; one that ran into another
# write of the same key still under way (409 ConditionalRequestConflict) is to be retried.
LOST_RACE_CODES = frozenset({"PreconditionFailed"})
CONFLICT_CODES = frozenset({"ConditionalRequestConflict"})
CONFLICT_RETRIES = 4
CONFLICT_BACKOFF_S = 0.1  # doubled after each conflict: at most 1.5 s in all
# Errors worth another attempt: what s3transfer retries for a body cut off mid-way, plus resets.
RETRYABLE: tuple[type[BaseException], ...] = (*S3_RETRYABLE_DOWNLOAD_ERRORS, ConnectionError)
S3_ERRORS = (Boto3Error, BotoCoreError, ClientError, OSError)
DEFAULT_TRANSFER = TransferConfig(
    multipart_threshold=64 * MiB, multipart_chunksize=64 * MiB, max_concurrency=16
)


class ObjectMissing(StorageError, FileNotFoundError):
    """The bucket or the key does not exist. Not retryable: the same request finds nothing."""

    retryable = False


class AccessDenied(StorageError, PermissionError):
    """The worker's credentials may not read it (or there are none). Not retryable."""

    retryable = False


def make_client(
    endpoint_url: str | None = None,
    region: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    max_pool_connections: int = 32,
    max_attempts: int = 5,
    connect_timeout: float = 5.0,
) -> Any:
    """An S3 client; credentials default to boto3's chain (env, profile, instance role).

    The short connect timeout makes an unreachable endpoint fail in seconds, so start-up can
    fall back to a local copy instead of hanging for botocore's default 60 s per attempt.
    """
    options: dict[str, Any] = {
        "retries": {"max_attempts": max_attempts, "mode": "standard"},
        "max_pool_connections": max_pool_connections,
        "connect_timeout": connect_timeout,
        "read_timeout": 60,
    }
    if endpoint_url:
        # boto3 >= 1.36 adds CRC checksums that some S3-compatible stores (R2, B2, MinIO, older
        # Ceph) reject or mis-validate on ranged GETs; only send them where a request needs one.
        options["request_checksum_calculation"] = "when_required"
        options["response_checksum_validation"] = "when_required"
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        config=Config(**options),
    )


# --- errors ----------------------------------------------------------------------------------


def error_code(exc: ClientError) -> tuple[str, int]:
    """(S3 error code, HTTP status) of a ClientError."""
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return str(error.get("Code", "")), int(status or 0)


def storage_error(action: str, bucket: str, key: str, exc: BaseException) -> StorageError:
    """The coded error for a failed S3 call: ObjectMissing, AccessDenied or StorageError.
    Its `reason` is the S3 code or exception type alone, for callers that word their own."""
    kind, reason = _classify(exc)
    error = kind(f"{action} s3://{bucket}/{key} failed: {reason}")
    error.reason = reason
    return error


def _classify(exc: BaseException) -> tuple[type[StorageError], str]:
    client_error = _find(exc, ClientError)
    if client_error is not None:
        code, status = error_code(client_error)
        if code in MISSING_CODES or (status == 404 and not code):
            return ObjectMissing, code or "404"
        if code in DENIED_CODES or (status == 403 and not code):
            return AccessDenied, code or "403"
    if _find(exc, NoCredentialsError) is not None:
        return AccessDenied, "no credentials"
    return StorageError, describe(exc)


def describe(exc: BaseException) -> str:
    """The S3 error code or the exception type: never the message, which may hold a URL."""
    cause: BaseException | None = exc
    while cause is not None:  # boto3 and s3transfer wrap the error that matters
        if isinstance(cause, ClientError):
            return error_code(cause)[0] or "ClientError"
        last = getattr(cause, "last_exception", None)  # s3transfer's RetriesExceededError
        if isinstance(last, BaseException):
            return f"{type(cause).__name__} after retries: {describe(last)}"
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, OSError) and exc.errno is not None and exc.errno in errno.errorcode:
        return f"{type(exc).__name__} {errno.errorcode[exc.errno]}"
    return type(exc).__name__


def _find(exc: BaseException, kind: type[BaseException]) -> Any:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, kind):
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


# --- reads -----------------------------------------------------------------------------------


def read_object(client: S3Client, bucket: str, key: str, limit: int) -> bytes | None:
    """The object's bytes, or None when it is larger than `limit` (never more is read).
    Raises ObjectMissing, AccessDenied or StorageError (see the module docstring)."""
    try:
        obj = client.get_object(Bucket=bucket, Key=key)
        if int(obj.get("ContentLength", 0)) > limit:
            obj["Body"].close()
            return None
        with obj["Body"] as body:
            data = body.read(limit + 1)
    except S3_ERRORS as exc:
        raise storage_error("read", bucket, key, exc) from exc
    return None if len(data) > limit else data


def read_prefix(client: S3Client, bucket: str, key: str, limit: int) -> bytes | None:
    """At most the first `limit` bytes of the object (one ranged GET); None when it does not
    exist. An empty object is b"" (S3 answers a range on it with 416 InvalidRange)."""
    try:
        obj = client.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{limit - 1}")
        with obj["Body"] as body:
            return bytes(body.read(limit))  # bounded even where a store ignores the range
    except S3_ERRORS as exc:
        client_error = _find(exc, ClientError)
        if client_error is not None and error_code(client_error)[0] == "InvalidRange":
            return b""
        error = storage_error("read", bucket, key, exc)
        if isinstance(error, ObjectMissing):
            return None
        raise error from exc


def get_bytes(client: S3Client, bucket: str, key: str, attempts: int = 3) -> bytes | None:
    """A small object's bytes, or None when it does not exist.

    botocore retries a request that fails before its body arrives; a body cut off mid-way
    surfaces only when it is read, so that read is retried here.
    """
    attempt = 1
    while True:
        try:
            return client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except RETRYABLE as exc:
            if attempt >= attempts:
                raise storage_error("read", bucket, key, exc) from exc
            log.debug("re-reading s3://%s/%s after %s", bucket, key, type(exc).__name__)
            attempt += 1
        except S3_ERRORS as exc:
            error = storage_error("read", bucket, key, exc)
            if isinstance(error, ObjectMissing):
                return None
            raise error from exc


def exists(client: S3Client, bucket: str, key: str) -> bool:
    try:
        client.head_object(Bucket=bucket, Key=key)
        return True
    except S3_ERRORS as exc:
        error = storage_error("check", bucket, key, exc)
        if isinstance(error, ObjectMissing):
            return False
        raise error from exc


def download_from_s3(
    client: S3Client,
    bucket: str,
    key: str,
    dest: Path,
    *,
    size: int | None = None,
    sha256: str | None = None,
    transfer: TransferConfig = DEFAULT_TRANSFER,
) -> Path:
    """Download s3://bucket/key to dest atomically, verifying size and sha256 when given."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=TEMP_SUFFIX, dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            client.download_file(bucket, key, str(tmp), Config=transfer)
        except S3_ERRORS as exc:
            raise storage_error("download", bucket, key, exc) from exc
        _verify(tmp, bucket, key, size, sha256)
        commit_file(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _verify(path: Path, bucket: str, key: str, size: int | None, sha256: str | None) -> None:
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise StorageError(f"s3://{bucket}/{key}: expected {size} bytes, got {actual}")
    if sha256 is not None and sha256_file(path) != sha256:
        raise StorageError(f"s3://{bucket}/{key}: sha256 does not match the manifest")


# --- writes ----------------------------------------------------------------------------------


def upload_to_s3(
    client: S3Client,
    path: Path,
    bucket: str,
    key: str,
    *,
    extra_args: dict[str, Any] | None = None,
    transfer: TransferConfig = DEFAULT_TRANSFER,
) -> None:
    try:
        client.upload_file(str(path), bucket, key, ExtraArgs=extra_args, Config=transfer)
    except S3_ERRORS as exc:
        raise storage_error("upload", bucket, key, exc) from exc


def put_bytes(client: S3Client, bucket: str, key: str, body: bytes, content_type: str) -> None:
    try:
        client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
    except S3_ERRORS as exc:
        raise storage_error("upload", bucket, key, exc) from exc


def delete_if_match(client: S3Client, bucket: str, key: str, etag: str) -> bool:
    """Delete the object if its ETag is still `etag`: True when it is gone (deleted here or
    already), False when it changed. A store that answers 501 to `If-Match` on DELETE gets an
    unconditional delete; one that ignores the header deletes whatever is there."""
    try:
        client.delete_object(Bucket=bucket, Key=key, IfMatch=etag)
        return True
    except ClientError as exc:
        code, status = error_code(exc)
        if code in LOST_RACE_CODES or status == 412:
            return False
        error = storage_error("delete", bucket, key, exc)
        if isinstance(error, ObjectMissing):
            return True
        if code != "NotImplemented" and status != 501:
            raise error from exc
    except S3_ERRORS as exc:
        raise storage_error("delete", bucket, key, exc) from exc
    try:
        client.delete_object(Bucket=bucket, Key=key)
    except S3_ERRORS as exc:
        raise storage_error("delete", bucket, key, exc) from exc
    return True


def put_if_absent(client: S3Client, bucket: str, key: str, body: bytes, content_type: str) -> bool:
    """True if this call created the object; False if one was there (or won the race).

    Atomic where the store honours `If-None-Match: *` (AWS S3, MinIO, SeaweedFS, moto). A store
    that answers 501 gets check-then-put, which is not: two callers may both find the key free
    and both write it, both told True, and the later write is what remains.
    """
    for attempt in range(CONFLICT_RETRIES + 1):
        try:
            client.put_object(
                Bucket=bucket, Key=key, Body=body, ContentType=content_type, IfNoneMatch="*"
            )
            return True
        except ClientError as exc:
            code, status = error_code(exc)
            if code in LOST_RACE_CODES or status == 412:
                return False
            conflict = code in CONFLICT_CODES or status == 409
            if conflict and attempt < CONFLICT_RETRIES:
                log.debug("conditional write of s3://%s/%s conflicted; retrying", bucket, key)
                time.sleep(CONFLICT_BACKOFF_S * 2**attempt)
                continue
            if code != "NotImplemented" and status != 501:
                raise storage_error("upload", bucket, key, exc) from exc
            break
        except S3_ERRORS as exc:
            raise storage_error("upload", bucket, key, exc) from exc
    # A store without conditional writes (see the docstring for what is then not guaranteed).
    if exists(client, bucket, key):
        return False
    put_bytes(client, bucket, key, body, content_type)
    return True
