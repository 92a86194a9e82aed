"""Reference audio bytes from a request: base64, an https URL or an s3:// object. Never torch.

Every source is bounded in size (MAX_REF_BYTES); what comes back is checked by decoding it
(voices.voice_from_bytes), never by trusting a Content-Type. Nothing is written to disk.

URLs are fetched by f5worker.safe_fetch (one deadline for the whole fetch, public addresses
only, redirects checked hop by hop, the body bounded); FetchPolicy carries its limits.

s3:// references are a confused deputy: the worker's credentials can read more than a caller
should. A reference may only name an object under the worker's own voice library
(s3://S3_BUCKET/S3_PREFIX/voices/) or under a bucket or bucket/prefix the operator lists in
REF_AUDIO_S3_ALLOW; anything else is refused before any S3 request. Every way an object cannot
be used (not allowed, missing, no such bucket, access denied, too large, not usable audio) gives
one identical message, so a caller learns nothing about buckets and keys; which one it was goes
to the worker log at DEBUG. A storage outage stays a retryable STORAGE_ERROR.

Every other failure is BAD_REF_AUDIO with a short message that never repeats the URL (whose
query string or user info can hold credentials).
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from dataclasses import dataclass

from f5worker.audio import Voice
from f5worker.config import S3_BUCKET_PATTERN, S3Scope, Settings, is_clean_s3_key
from f5worker.errors import BadRefAudio, StorageError
from f5worker.job.voices import MAX_REF_BYTES, voice_from_bytes
from f5worker.s3 import AccessDenied, ClientFactory, ObjectMissing, S3Client, read_object
from f5worker.safe_fetch import HttpsPolicy, fetch_https

log = logging.getLogger(__name__)

S3_UNUSABLE = "ref_audio s3 object cannot be used"
_WHITESPACE = re.compile(rb"\s+")
_DATA_URL = re.compile(rb"^data:[\w/+.-]*(;[\w=.-]+)*;base64,")


@dataclass(frozen=True)
class FetchPolicy(HttpsPolicy):
    """The limits of every ref_audio source: the URL fetch's (HttpsPolicy) and where s3:// may
    point."""

    max_bytes: int = MAX_REF_BYTES
    s3_allow: tuple[S3Scope, ...] = ()  # where s3:// references may point; () = nowhere

    @classmethod
    def from_settings(cls, settings: Settings) -> FetchPolicy:
        return cls(
            total_timeout_s=float(settings.ref_audio_url_timeout_s),
            allow_private_addresses=settings.allow_private_download_urls,
            s3_allow=s3_scopes(settings),
        )


def s3_scopes(settings: Settings) -> tuple[S3Scope, ...]:
    """The worker's own voice library (VoiceLibrary's layout), then REF_AUDIO_S3_ALLOW."""
    own: tuple[S3Scope, ...] = ()
    if settings.s3_bucket:
        prefix = "/".join(p for p in (settings.s3_prefix, "voices") if p)
        own = (S3Scope(settings.s3_bucket, f"{prefix}/"),)
    return own + settings.ref_audio_s3_allow


class RefAudioFetcher:
    """Turn a request's ref_audio string into encoded audio bytes."""

    def __init__(
        self,
        policy: FetchPolicy | None = None,
        s3_client_factory: ClientFactory | None = None,
    ) -> None:
        self.policy = policy or FetchPolicy()
        self._s3_client_factory = s3_client_factory
        self._s3_client: S3Client | None = None

    def fetch(self, ref: str, kind: str) -> bytes:
        """kind is TTSRequest.ref_kind: "base64", "url" or "s3"."""
        if kind == "s3":
            return self._from_s3(ref)
        if kind == "url":
            return fetch_https(ref, self.policy)
        return decode_base64(ref, self.policy.max_bytes)

    def voice(self, ref: str, kind: str, text: str) -> Voice:
        """fetch, then decode. Why an s3 object is not usable audio is kept from the caller,
        like every other reason it cannot be used (see the module docstring)."""
        data = self.fetch(ref, kind)
        if kind != "s3":
            return voice_from_bytes(data, text)
        try:
            return voice_from_bytes(data, text)
        except BadRefAudio as exc:
            log.debug("ref_audio s3 object is not usable audio: %s", exc.message)
            raise BadRefAudio(S3_UNUSABLE) from None

    # -- S3 -----------------------------------------------------------------------------------

    def _from_s3(self, ref: str) -> bytes:
        bucket, key = parse_s3_url(ref)
        if self._s3_client_factory is None:
            raise BadRefAudio("s3:// references are not enabled on this worker")
        where = f"s3://{bucket}/{key[:200]}"
        if not self.s3_allowed(bucket, key):
            log.debug("ref_audio %s refused: outside the allowed buckets and prefixes", where)
            raise BadRefAudio(S3_UNUSABLE)
        limit = self.policy.max_bytes
        try:
            data = read_object(self._s3(), bucket, key, limit)
        except (ObjectMissing, AccessDenied) as exc:
            log.debug("ref_audio %s cannot be used: %s", where, exc.reason)
            raise BadRefAudio(S3_UNUSABLE) from None
        except StorageError as exc:  # storage is down: worth a retry, and says nothing new
            raise StorageError(
                f"reading ref_audio from s3://{bucket} failed: {exc.reason}"
            ) from exc
        if data is None:
            log.debug("ref_audio %s cannot be used: larger than %d bytes", where, limit)
            raise BadRefAudio(S3_UNUSABLE)
        return data

    def s3_allowed(self, bucket: str, key: str) -> bool:
        """Whether a reference may name s3://bucket/key (FetchPolicy.s3_allow)."""
        return is_clean_s3_key(key) and any(s.covers(bucket, key) for s in self.policy.s3_allow)

    def _s3(self) -> S3Client:
        if self._s3_client is None:
            assert self._s3_client_factory is not None  # _from_s3 checked
            self._s3_client = self._s3_client_factory()
        return self._s3_client


def parse_s3_url(ref: str) -> tuple[str, str]:
    """s3://bucket/key -> (bucket, key); BAD_REF_AUDIO for anything else."""
    rest = ref[len("s3://") :] if ref.startswith("s3://") else ""
    bucket, _, key = rest.partition("/")
    if not S3_BUCKET_PATTERN.fullmatch(bucket) or not key or len(key) > 1024:
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
