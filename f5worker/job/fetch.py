"""Reference audio bytes from a request: base64, an https URL or an s3:// object. Never torch.

Every source is bounded in size (MAX_REF_BYTES) and, for URLs, in total time; what comes back is
checked by decoding it (voices.voice_from_bytes), never by trusting a Content-Type. Nothing is
written to disk.

URLs go through the RunPod SDK's SSRF guard (runpod.serverless.utils.rp_ssrf.safe_get): the host
must resolve to public addresses only (no 169.254.169.254 metadata, no 10/8, no loopback), the
connection is pinned to the checked address (no DNS rebinding) and every redirect hop is checked
again. On top of it this module accepts only https, caps the total time (a server that drips one
byte a second cannot hold a job) and maps every failure to BAD_REF_AUDIO. Tests serve audio from
127.0.0.1 over http: they inject FetchPolicy(allow_http_loopback=True) and set the SDK's own
escape hatch RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS=true; production has neither.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from f5worker.errors import BadRefAudio, StorageError
from f5worker.job.voices import MAX_REF_BYTES
from f5worker.s3 import AccessDenied, ObjectMissing, read_object

URL_TOTAL_TIMEOUT_S = 20.0
URL_CONNECT_TIMEOUT_S = 5.0
URL_MAX_REDIRECTS = 3
READ_CHUNK = 64 * 1024
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_WHITESPACE = re.compile(rb"\s+")
_DATA_URL = re.compile(rb"^data:[\w/+.-]*(;[\w=.-]+)*;base64,")


@dataclass(frozen=True)
class FetchPolicy:
    max_bytes: int = MAX_REF_BYTES
    total_timeout_s: float = URL_TOTAL_TIMEOUT_S
    connect_timeout_s: float = URL_CONNECT_TIMEOUT_S
    allow_http_loopback: bool = False  # tests only: plain http to 127.0.0.1 / ::1 / localhost


class RefAudioFetcher:
    """Turn a request's ref_audio string into encoded audio bytes."""

    def __init__(
        self,
        policy: FetchPolicy | None = None,
        s3_client_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.policy = policy or FetchPolicy()
        self._s3_client_factory = s3_client_factory
        self._s3_client: Any = None

    def fetch(self, ref: str, kind: str) -> bytes:
        """kind is TTSRequest.ref_kind: "base64", "url" or "s3"."""
        if kind == "s3":
            return self._from_s3(ref)
        if kind == "url":
            return self._from_url(ref)
        return decode_base64(ref, self.policy.max_bytes)

    # -- URLs ---------------------------------------------------------------------------------

    def _from_url(self, url: str) -> bytes:
        from requests import RequestException, Timeout
        from runpod.serverless.utils.rp_ssrf import SSRFError, safe_get
        from urllib3.exceptions import HTTPError as Urllib3Error

        self._check_scheme(url)
        policy = self.policy
        deadline = time.monotonic() + policy.total_timeout_s
        try:
            response = safe_get(
                url,
                stream=True,
                timeout=(policy.connect_timeout_s, policy.total_timeout_s),  # type: ignore[arg-type]
                max_bytes=policy.max_bytes,
                max_redirects=URL_MAX_REDIRECTS,
            )
            with response:
                if response.status_code != 200:
                    raise BadRefAudio(f"ref_audio URL answered HTTP {response.status_code}")
                return _read_capped(response.raw, policy.max_bytes, deadline, policy)
        except SSRFError as exc:
            if "size cap" in str(exc):
                raise BadRefAudio(f"ref_audio is larger than {policy.max_bytes} bytes") from None
            raise BadRefAudio(
                "ref_audio URL is not allowed: its host must resolve to public addresses"
            ) from None
        except (Timeout, TimeoutError):
            raise BadRefAudio(
                f"ref_audio URL did not answer within {policy.total_timeout_s:g} s"
            ) from None
        except (RequestException, Urllib3Error, OSError) as exc:
            raise BadRefAudio(
                f"ref_audio URL could not be fetched ({type(exc).__name__})"
            ) from None

    def _check_scheme(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme == "https" and parts.hostname:
            return
        if parts.scheme == "http" and self.policy.allow_http_loopback and _loopback(parts.hostname):
            return
        raise BadRefAudio("ref_audio URL must be https://host/path")

    # -- S3 -----------------------------------------------------------------------------------

    def _from_s3(self, ref: str) -> bytes:
        bucket, key = parse_s3_url(ref)
        limit = self.policy.max_bytes
        try:
            data = read_object(self._s3(), bucket, key, limit)
        except (ObjectMissing, AccessDenied) as exc:  # the requester's to fix
            raise BadRefAudio(f"ref_audio s3 object cannot be read: {exc.reason}") from exc
        except StorageError as exc:
            raise StorageError(
                f"reading ref_audio from s3://{bucket} failed: {exc.reason}"
            ) from exc
        if data is None:
            raise BadRefAudio(f"ref_audio is larger than {limit} bytes")
        return data

    def _s3(self) -> Any:
        if self._s3_client is None:
            if self._s3_client_factory is None:
                raise BadRefAudio("s3:// references are not enabled on this worker")
            self._s3_client = self._s3_client_factory()
        return self._s3_client


def _read_capped(raw: Any, max_bytes: int, deadline: float, policy: FetchPolicy) -> bytes:
    """Read a body in pieces, within max_bytes (after content decoding) and the deadline.

    read1 returns whatever one socket read brings, so a server that drips bytes is caught at
    the deadline; requests' iter_content would block until a whole chunk had arrived. Content
    encodings (gzip) are decoded a bounded piece at a time, so a gzip bomb stops at max_bytes.
    """
    parts: list[bytes] = []
    size = 0
    while part := raw.read1(READ_CHUNK, decode_content=True):
        size += len(part)
        if size > max_bytes:
            raise BadRefAudio(f"ref_audio is larger than {max_bytes} bytes")
        if time.monotonic() > deadline:
            raise BadRefAudio(f"ref_audio URL took longer than {policy.total_timeout_s:g} s")
        parts.append(part)
    return b"".join(parts)


def parse_s3_url(ref: str) -> tuple[str, str]:
    """s3://bucket/key -> (bucket, key); BAD_REF_AUDIO for anything else."""
    rest = ref[len("s3://") :] if ref.startswith("s3://") else ""
    bucket, _, key = rest.partition("/")
    if not _BUCKET.fullmatch(bucket) or not key or len(key) > 1024:
        raise BadRefAudio("ref_audio must look like s3://bucket/key")
    return bucket, key


def decode_base64(data: str, max_bytes: int = MAX_REF_BYTES) -> bytes:
    """Base64 as sent by curl users: line breaks (from `base64` without -w0) and a data: URL
    prefix are accepted; anything else that is not base64 is BAD_REF_AUDIO."""
    raw = _WHITESPACE.sub(b"", data.encode("ascii", "replace"))
    raw = _DATA_URL.sub(b"", raw, count=1)
    if len(raw) > (max_bytes + 2) // 3 * 4:
        raise BadRefAudio(f"ref_audio is larger than {max_bytes} bytes")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise BadRefAudio("ref_audio is not valid base64") from None


def _loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False
