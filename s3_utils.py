"""S3 transfers for the model cache and for job outputs. Never imports torch.

Downloads land in a unique temp file beside the target and are renamed into place only after
their size (and sha256, when known) check out, so a failed or corrupt transfer never leaves a
partial file where a good one is expected. Every failure is a StorageError naming bucket and key.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from errors import StorageError
from manifest import sha256_file

log = logging.getLogger(__name__)

MiB = 1024 * 1024
DEFAULT_TRANSFER = TransferConfig(
    multipart_threshold=64 * MiB, multipart_chunksize=64 * MiB, max_concurrency=16
)


def make_client(
    endpoint_url: str | None = None,
    region: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    max_pool_connections: int = 32,
) -> Any:
    """An S3 client; credentials default to boto3's chain (env, profile, instance role)."""
    options: dict[str, Any] = {
        "retries": {"max_attempts": 5, "mode": "standard"},
        "max_pool_connections": max_pool_connections,
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


def storage_error(action: str, bucket: str, key: str, exc: BaseException) -> StorageError:
    """Map a boto or OS error to a coded error; the message never carries credentials."""
    reason = type(exc).__name__
    cause: BaseException | None = exc
    while cause is not None:  # boto3 wraps upload errors in S3UploadFailedError
        if isinstance(cause, ClientError):
            reason = cause.response.get("Error", {}).get("Code", "ClientError")
            break
        cause = cause.__cause__ or cause.__context__
    return StorageError(f"{action} s3://{bucket}/{key} failed: {reason}")


def download_from_s3(
    client: Any,
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
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            client.download_file(bucket, key, str(tmp), Config=transfer)
        except (Boto3Error, BotoCoreError, ClientError, OSError) as exc:
            raise storage_error("download", bucket, key, exc) from exc
        _verify(tmp, bucket, key, size, sha256)
        _commit(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _verify(path: Path, bucket: str, key: str, size: int | None, sha256: str | None) -> None:
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise StorageError(f"s3://{bucket}/{key}: expected {size} bytes, got {actual}")
    if sha256 is not None and sha256_file(path) != sha256:
        raise StorageError(f"s3://{bucket}/{key}: sha256 does not match the manifest")


def _commit(tmp: Path, dest: Path) -> None:
    """fsync, then rename over dest: readers see the old file or the whole new one."""
    try:
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except OSError as exc:
        raise StorageError(f"cannot write {dest}: {exc.strerror}") from exc


def upload_to_s3(
    client: Any,
    path: Path,
    bucket: str,
    key: str,
    *,
    extra_args: dict[str, Any] | None = None,
    transfer: TransferConfig = DEFAULT_TRANSFER,
) -> None:
    try:
        client.upload_file(str(path), bucket, key, ExtraArgs=extra_args, Config=transfer)
    except (Boto3Error, BotoCoreError, ClientError, OSError) as exc:
        raise storage_error("upload", bucket, key, exc) from exc
