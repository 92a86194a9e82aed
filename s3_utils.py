"""The S3 functions the worker's tooling and its start-up self-check look for here.

download_from_s3 and upload_to_s3 are the S3 primitives (f5worker.s3); sync_models_from_s3
(f5worker.models.s3_sync) and upload_models_to_s3 (f5worker.models.s3_upload) are the
model-cache protocol.
"""

from f5worker.models.s3_sync import sync_models_from_s3
from f5worker.models.s3_upload import upload_models_to_s3
from f5worker.s3 import download_from_s3, make_client, upload_to_s3

__all__ = [
    "download_from_s3",
    "make_client",
    "sync_models_from_s3",
    "upload_models_to_s3",
    "upload_to_s3",
]
