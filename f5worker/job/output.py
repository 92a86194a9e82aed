"""Where encoded audio goes: inline base64, or the output bucket behind a presigned URL.

RunPod stores a job's output with the job and caps it (10 MB for /run, 20 MB for /runsync; the
whole output list of a generator handler counts, serve/limits.py). The worker cannot tell which
route a job came by, so `ResultBudget` keeps the inline part of one job under
MAX_RESULT_B64_BYTES, inside the smaller cap with headroom for the JSON around it. With
`return: "auto"` and a bucket, an item larger than one RunPod yield (AUTO_URL_ABOVE_B64), or one
that would not fit the budget, goes to the bucket instead of being sent in parts; without a
bucket an over-budget job is OUTPUT_TOO_LARGE, never a truncated or silently dropped result.

The bucket follows RunPod's convention (runpod.serverless.utils.rp_upload): BUCKET_ENDPOINT_URL,
BUCKET_ACCESS_KEY_ID, BUCKET_SECRET_ACCESS_KEY, the region read from the endpoint's host, the
bucket name `%m-%y` unless one is configured, and objects under `<job id>/`. Uploads go from
memory through boto3's transfer manager (multipart for large files); nothing touches the disk.
"""

from __future__ import annotations

import base64
import io
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from f5worker.config.table import default as setting_default
from f5worker.errors import InvalidInput, OutputTooLarge, StorageError
from f5worker.job.codecs import MIME_TYPES
from f5worker.s3 import S3_ERRORS, ClientFactory, S3Client, storage_error

MAX_RESULT_B64_BYTES = 9_000_000  # RunPod's /run cap is 10 MB (/runsync: 20 MB)
AUTO_URL_ABOVE_B64 = 700_000  # `auto` with a bucket: an item this large is a URL, not parts
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


class OutputStore:
    """The output bucket: put bytes, get a presigned GET URL back."""

    def __init__(
        self,
        client_factory: ClientFactory,
        bucket: str | None = None,
        url_expiry_s: int = setting_default("bucket_url_expiry_s"),
    ) -> None:
        self._client_factory = client_factory
        self._client: S3Client | None = None
        self._bucket = bucket
        self.url_expiry_s = url_expiry_s

    @property
    def bucket(self) -> str:
        # rp_upload's default: one bucket per month, named like "11-26".
        return self._bucket or time.strftime("%m-%y")

    def put(self, key: str, data: bytes, content_type: str) -> str:
        from boto3.s3.transfer import TransferConfig

        bucket = self.bucket
        try:
            client = self._s3()
            client.upload_fileobj(
                io.BytesIO(data),
                bucket,
                key,
                ExtraArgs={"ContentType": content_type},
                Config=TransferConfig(multipart_threshold=16 * 1024 * 1024),
            )
            return str(
                client.generate_presigned_url(
                    "get_object",
                    Params={"Bucket": bucket, "Key": key},
                    ExpiresIn=self.url_expiry_s,
                )
            )
        except S3_ERRORS as exc:
            reason = storage_error("upload", bucket, key, exc).reason
            raise StorageError(f"upload to the output bucket failed: {reason}") from exc

    def _s3(self) -> S3Client:
        if self._client is None:
            self._client = self._client_factory()
        return self._client


def make_output_client(endpoint_url: str, access_key_id: str, secret_access_key: str) -> S3Client:
    """An S3 client for the output bucket, signing with SigV4 as rp_upload does.

    s3_utils.make_client leaves the signature to botocore, which presigns with the deprecated
    SigV2 for custom endpoints; SigV2 URLs are refused by newer AWS regions and by R2.
    """
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region_from_endpoint(endpoint_url),
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        config=Config(
            signature_version="s3v4",
            retries={"max_attempts": 3, "mode": "standard"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def region_from_endpoint(endpoint_url: str) -> str | None:
    """The region in an AWS / Backblaze / DigitalOcean endpoint host, as rp_upload reads it."""
    host = urlsplit(endpoint_url).hostname or ""
    if ".s3." in host:
        return host.split(".s3.", 1)[1].split(".")[0]
    if host.startswith("s3.") and host.count(".") >= 3:  # s3.<region>.amazonaws.com
        return host.split(".")[1]
    if host.endswith(".digitaloceanspaces.com"):
        return host.split(".")[-3]
    return None


@dataclass
class ResultBudget:
    """How many base64 bytes one job may still return inline."""

    limit: int = MAX_RESULT_B64_BYTES
    left: int = -1

    def __post_init__(self) -> None:
        if self.left < 0:
            self.left = self.limit

    def take(self, size: int) -> bool:
        if size > self.left:
            return False
        self.left -= size
        return True


class Delivery:
    """Deliver the encoded pieces of one job: inline while they fit, else per `return` mode."""

    def __init__(
        self,
        mode: str,
        fmt: str,
        job_id: str,
        store: OutputStore | None,
        budget: ResultBudget | None = None,
    ) -> None:
        if mode == "url" and store is None:
            raise InvalidInput("return url needs an output bucket; this worker has none")
        self.mode = mode
        self.fmt = fmt
        self.store = store
        self.budget = budget or ResultBudget()
        self._prefix = _UNSAFE_KEY_CHARS.sub("_", job_id)[:128] or "job"
        self._run = uuid.uuid4().hex[:8]  # two runs of one job id never overwrite each other

    @property
    def inline_only(self) -> bool:
        """Whether everything must fit inline: no bucket for what would not."""
        return self.mode == "base64" or (self.mode == "auto" and self.store is None)

    def __call__(self, data: bytes, index: int = 0) -> dict[str, Any]:
        if self.mode == "url":
            return self._upload(data, index)
        b64_size = (len(data) + 2) // 3 * 4
        to_bucket = self.mode == "auto" and self.store is not None
        if to_bucket and b64_size > AUTO_URL_ABOVE_B64:
            return self._upload(data, index)
        if self.budget.take(b64_size):
            return {"audio_base64": base64.b64encode(data).decode("ascii")}
        if to_bucket:
            return self._upload(data, index)
        raise OutputTooLarge(
            f"the result would exceed {self.budget.limit} bytes of base64 (RunPod's /run result "
            "cap is 10 MB); use a compressed format (mp3, opus), a lower sample_rate, shorter "
            'text, or `"return": "auto"` on a worker with an output bucket'
        )

    def _upload(self, data: bytes, index: int) -> dict[str, Any]:
        if self.store is None:  # unreachable: url without a store is refused in __init__
            raise InvalidInput("return url needs an output bucket; this worker has none")
        key = f"{self._prefix}/{self._run}-{index:03d}.{self.fmt}"
        url = self.store.put(key, data, MIME_TYPES[self.fmt])
        return {"audio_url": url, "url_expires_in": self.store.url_expiry_s}
