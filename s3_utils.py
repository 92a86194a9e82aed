"""The S3 functions the worker's tooling and its start-up self-check look for here.

download_from_s3 and upload_to_s3 are the S3 primitives (f5worker.s3); sync_models_from_s3 and
upload_models_to_s3 are the model-cache protocol (f5worker.models.s3_sync, .s3_upload), here
taking the worker's Settings: its S3 cache, MODEL_CACHE_DIR and MODEL_NAME.

    settings = Settings.from_env()
    paths = sync_models_from_s3(settings)  # MODEL_NAME's newest S3 version, in MODEL_CACHE_DIR
    upload_models_to_s3(settings, model_dir)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig

from f5worker.config import Settings
from f5worker.models import s3_sync, s3_upload
from f5worker.models.local_cache import LOCK_TIMEOUT_S, disk_free
from f5worker.models.ranged import RangedConfig
from f5worker.models.s3_sync import SYNC_RANGES, ModelPaths
from f5worker.models.s3_upload import UPLOAD_TRANSFER, UploadResult
from f5worker.models.sources import ModelSources
from f5worker.s3 import download_from_s3, make_client, upload_to_s3

__all__ = [
    "download_from_s3",
    "make_client",
    "sync_models_from_s3",
    "upload_models_to_s3",
    "upload_to_s3",
]


def sync_models_from_s3(
    settings: Settings,
    *,
    client: Any | None = None,
    ranges: RangedConfig = SYNC_RANGES,
    free_bytes: Callable[[Path], int] = disk_free,
    lock_timeout: float = LOCK_TIMEOUT_S,
) -> ModelPaths:
    """MODEL_NAME's newest version in the S3 cache, as a local version in MODEL_CACHE_DIR
    (f5worker.models.s3_sync.sync_models_from_s3)."""
    return s3_sync.sync_models_from_s3(
        ModelSources.from_settings(settings),
        settings.model_name,
        client=client,
        ranges=ranges,
        free_bytes=free_bytes,
        lock_timeout=lock_timeout,
    )


def upload_models_to_s3(
    settings: Settings,
    model_dir: Path,
    *,
    client: Any | None = None,
    transfer: TransferConfig = UPLOAD_TRANSFER,
) -> UploadResult:
    """Publish model_dir as a new version of MODEL_NAME in the S3 cache
    (f5worker.models.s3_upload.upload_models_to_s3)."""
    return s3_upload.upload_models_to_s3(
        ModelSources.from_settings(settings).s3,
        settings.model_name,
        model_dir,
        client=client,
        transfer=transfer,
    )
