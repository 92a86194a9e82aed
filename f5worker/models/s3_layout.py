"""The S3 model cache's layout: where a model's versions and its pointer live, and finding one.

One entry per model version, never overwritten in place:

    s3://$S3_BUCKET/$S3_PREFIX/<model>/<version>/<file ...>        the model files
    s3://$S3_BUCKET/$S3_PREFIX/<model>/<version>/manifest.json     written last: the commit marker
    s3://$S3_BUCKET/$S3_PREFIX/<model>/latest.json                 {"version": ...}, written after

<version> is the first 16 hex digits of a sha256 over the manifest's (path, size, sha256) list,
so identical files always get the same version and two workers uploading the same model race
for the same manifest key, where `IfNoneMatch="*"` lets exactly one win. A reader follows
latest.json; when it is missing or stale (an uploader died between manifest and pointer) it lists
the versions and takes the newest committed manifest.

This module is what the sync down (models/s3_sync.py) and the upload (models/s3_upload.py) share:
the keys, the bucket and client of an S3Location, and finding the newest committed version. The
S3 calls and their error mapping are f5worker.s3's. Never imports torch.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from f5worker.errors import StorageError
from f5worker.models.local_cache import check_model_name
from f5worker.models.manifest import MANIFEST_NAME, Manifest, ManifestError
from f5worker.models.sources import S3Location
from f5worker.models.store import VERSION_PATTERN
from f5worker.s3 import S3_ERRORS, ObjectMissing, get_bytes, make_client, storage_error

log = logging.getLogger(__name__)

POINTER_NAME = "latest.json"
_VERSION = VERSION_PATTERN


def model_prefix(s3: S3Location, name: str) -> str:
    """`<S3_PREFIX>/<name>/`, with an empty S3_PREFIX meaning the bucket root."""
    parts = [p for p in (s3.prefix.strip("/"), check_model_name(name)) if p]
    return "/".join(parts) + "/"


def cache_location(s3: S3Location | None) -> S3Location:
    """s3, or a StorageError when the S3 model cache is off (no location, or no bucket)."""
    if s3 is None or not s3.bucket:
        raise StorageError("S3_BUCKET is not set; the S3 model cache is off")
    return s3


def cache_client(s3: S3Location, client: Any | None) -> Any:
    return client or make_client(s3.endpoint_url, s3.region)


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
