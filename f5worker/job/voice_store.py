"""The voice library's S3 layout, and the only code that reads or writes it. Never imports torch.

A voice added through the API is two objects, the manifest written last:

    <S3_PREFIX>/voices/<name>/<id>.wav     the normalised reference (mono float WAV)
    <S3_PREFIX>/voices/<name>/voice.json   {"audio": "<id>.wav", "transcript", "duration_s",
                                            "sample_rate", "created", "consent",
                                            "transcript_source"}

Why a manifest: S3 writes one object atomically, not two. With the transcript inside the
manifest and the audio under a name used once (<id>), a reader that holds a manifest holds the
one transcript that belongs to the audio it names, so it can never pair one version's audio with
another's transcript, and a voice exists exactly when its manifest does:

- add: the audio first, then the manifest with `IfNoneMatch: *`, so of two adds of one name
  exactly one wins (the loser removes its audio). That holds where the store honours
  conditional writes (AWS S3; moto and SeaweedFS in the tests); on one that answers 501 the
  manifest is written after a check (s3.put_if_absent), so two racing adds of one name may
  both report success, and the later manifest is the voice (the earlier audio left unnamed);
- delete: the manifest first (the voice is gone at once), and only if it is still the one just
  read (`If-Match: <its ETag>`), then the audio it named. A voice replaced in between (another
  worker's delete and add) is not deleted: VOICE_CHANGED. On a store that refuses (501) or
  ignores `If-Match` on DELETE the manifest is deleted whatever it is, so such a replacement
  would be deleted instead, its audio left unnamed. Nothing else under the name is touched: an
  add of the same name that has written its audio but not yet its manifest must not lose it;
- a reader whose audio vanished between its two reads (a delete in between) sees "not found".

A crash between the two writes leaves an audio object no manifest names: invisible, harmless.

Voices uploaded by hand in the older layout (`ref.wav` + `ref.txt` in the same folder) are still
read, listed and deletable; they are re-prepared on each load, as before.
"""

from __future__ import annotations

import builtins  # `list` below is also a method of VoiceStore
import json
import logging
import re
import secrets
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from f5worker.errors import StorageError, VoiceChanged
from f5worker.s3 import (
    S3_ERRORS,
    ClientFactory,
    ObjectMissing,
    delete_if_match,
    put_bytes,
    put_if_absent,
    read_object,
    read_prefix,
    storage_error,
)

log = logging.getLogger(__name__)

MANIFEST = "voice.json"
LEGACY_AUDIO = "ref.wav"
LEGACY_TEXT = "ref.txt"
MAX_MANIFEST_BYTES = 16 * 1024  # a 1000-character transcript is at most 4 KB of UTF-8
MAX_LEGACY_TEXT_BYTES = 4096
PREVIEW_CHARS = 80
LIST_READERS = 16  # manifests read at once by a listing
LIST_TIMEOUT_S = 60.0  # for all of them
MAX_LIST_PAGES = 100  # 100 x 1000 keys: far more than VOICE_MAX_COUNT allows
AUDIO_FILE = re.compile(r"[0-9a-f]{16}\.wav")  # what create() names it: never a path


class BadManifest(StorageError):
    """voice.json is not a manifest this code wrote (edited or written by hand)."""

    retryable = False
    reason = "voice.json is not a voice manifest"


@dataclass(frozen=True)
class VoiceInfo:
    """What a listing says about a voice. duration_s is None for a hand-uploaded voice (its
    length is known only once it is decoded)."""

    name: str
    duration_s: float | None
    created: str  # ISO 8601, UTC
    transcript_preview: str
    consent: str = ""  # who consented to the clone and how, as voice.add recorded it


@dataclass(frozen=True)
class StoredVoice:
    audio: bytes
    transcript: str
    created: str
    token: str  # changes whenever the voice does (the manifest's ETag, or the legacy pair's)
    sample_rate: int | None  # of a normalised (manifest) voice; None: a legacy upload
    consent: str = ""
    # "asr" when voice.add transcribed the clip; "request" for a transcript sent (and for
    # voices stored before the field existed, when a transcript was always sent).
    transcript_source: str = "request"


def preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class VoiceStore:
    """One library: a bucket and prefix, reached through a client built on first use."""

    def __init__(self, bucket: str, prefix: str, client: ClientFactory) -> None:
        self.bucket = bucket
        self.root = "/".join(p for p in (prefix.strip("/"), "voices") if p)
        self._client = client
        self._infos: dict[tuple[str, str], VoiceInfo] = {}  # (name, ETag) -> info

    def key(self, name: str, file: str) -> str:
        return f"{self.root}/{name}/{file}"

    # -- reads ----------------------------------------------------------------------------------

    def read(self, name: str, max_audio_bytes: int) -> StoredVoice | None:
        """The voice's audio and transcript, consistent with each other; None when absent.
        Raises StorageError (AccessDenied included) and, for an oversized object, ValueError."""
        got = self._get_json(name)
        if got is None:
            return self._read_legacy(name, max_audio_bytes)
        manifest, etag = got
        audio = self._read(self.key(name, manifest["audio"]), max_audio_bytes)
        if audio is None:  # deleted between the two reads
            return None
        return StoredVoice(
            audio,
            manifest["transcript"],
            manifest["created"],
            etag,
            manifest["sample_rate"],
            str(manifest.get("consent", "")),
            str(manifest.get("transcript_source", "request")),
        )

    def token(self, name: str) -> str | None:
        """The voice's current version token (one HEAD for an API voice); None when absent."""
        head = self._head(self.key(name, MANIFEST))
        if head is not None:
            return str(head["ETag"])
        legacy = self._legacy_heads(name)
        return None if legacy is None else _legacy_token(*legacy)

    def list(self) -> list[VoiceInfo]:
        """Every complete voice, by name. One listing, plus one small GET per voice not seen
        before (its manifest, or a legacy ref.txt), LIST_READERS at a time and LIST_TIMEOUT_S
        in all; what was read is kept by ETag."""
        voices = self._voice_files()
        etags = {name: self._info_etag(files) for name, files in voices.items()}
        known = {name: self._infos.get((name, etag)) for name, etag in etags.items()}
        unseen = {name: voices[name] for name, info in known.items() if info is None}
        found = {**known, **self._read_infos(unseen)}
        infos = [info for name in sorted(found) if (info := found[name]) is not None]
        # Only what the bucket still holds: bounded by the listing.
        self._infos = {(info.name, etags[info.name]): info for info in infos}
        return infos

    def count(self) -> int:
        """How many voices the library holds, from one listing (no object is read)."""
        return len(self._voice_files())

    def _voice_files(self) -> dict[str, dict[str, dict[str, Any]]]:
        """name -> {file: listed object} for every name with a manifest or a legacy pair."""
        found: dict[str, dict[str, dict[str, Any]]] = {}
        for obj in self._list_objects():
            name, _, file = obj["Key"][len(self.root) + 1 :].partition("/")
            if file in (MANIFEST, LEGACY_AUDIO, LEGACY_TEXT):
                found.setdefault(name, {})[file] = obj
        return {
            name: files
            for name, files in found.items()
            if MANIFEST in files or (LEGACY_AUDIO in files and LEGACY_TEXT in files)
        }

    # -- writes ---------------------------------------------------------------------------------

    def create(self, name: str, wav: bytes, manifest: dict[str, Any]) -> bool:
        """Store a new voice; False (and nothing left behind) when the name is taken."""
        if self.token(name) is not None:
            return False
        audio_file = f"{secrets.token_hex(8)}.wav"
        client = self._client()
        put_bytes(client, self.bucket, self.key(name, audio_file), wav, "audio/wav")
        body = json.dumps({**manifest, "audio": audio_file}, ensure_ascii=False).encode()
        try:
            created = put_if_absent(
                client, self.bucket, self.key(name, MANIFEST), body, "application/json"
            )
        except StorageError:
            self._delete_quietly(self.key(name, audio_file))
            raise
        if not created:  # another add of this name won the race
            self._delete_quietly(self.key(name, audio_file))
        return created

    def delete(self, name: str) -> bool:
        """Remove the voice; False when there was none."""
        try:
            got = self._get_json(name)
        except BadManifest:  # a manifest edited by hand: removing it removes the voice
            self._delete(self.key(name, MANIFEST))
            return True
        if got is not None:
            manifest, etag = got
            key = self.key(name, MANIFEST)
            if not delete_if_match(self._client(), self.bucket, key, etag):
                raise VoiceChanged(f"voice {name!r} was replaced while it was being deleted")
            self._delete_quietly(self.key(name, manifest["audio"]))  # the voice is gone
            return True
        if self.token(name) is None:
            return False
        self._delete(self.key(name, LEGACY_AUDIO))
        self._delete(self.key(name, LEGACY_TEXT))
        return True

    # -- helpers --------------------------------------------------------------------------------

    def _read_legacy(self, name: str, max_audio_bytes: int) -> StoredVoice | None:
        # The version first: if the pair changes while it is read, the cached copy carries the
        # older token and the next check reloads it.
        heads = self._legacy_heads(name)
        if heads is None:
            return None
        audio = self._read(self.key(name, LEGACY_AUDIO), max_audio_bytes)
        text = self._read(self.key(name, LEGACY_TEXT), MAX_LEGACY_TEXT_BYTES)
        if audio is None or text is None:
            return None
        transcript = text.decode("utf-8", "replace").strip()
        created = _iso(heads[0]["LastModified"])
        return StoredVoice(audio, transcript, created, _legacy_token(*heads), None)

    def _legacy_heads(self, name: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        audio = self._head(self.key(name, LEGACY_AUDIO))
        text = self._head(self.key(name, LEGACY_TEXT)) if audio is not None else None
        return None if audio is None or text is None else (audio, text)

    def _get_json(self, name: str) -> tuple[dict[str, Any], str] | None:
        key = self.key(name, MANIFEST)
        try:
            obj = self._client().get_object(Bucket=self.bucket, Key=key)
            with obj["Body"] as body:
                data = body.read(MAX_MANIFEST_BYTES + 1)  # longer: refused by _manifest
        except S3_ERRORS as exc:
            error = storage_error("read", self.bucket, key, exc)
            if isinstance(error, ObjectMissing):
                return None
            raise error from exc
        manifest = _manifest(data)
        if manifest is None:
            raise BadManifest(f"s3://{self.bucket}/{key} is not a voice manifest")
        return manifest, str(obj.get("ETag", ""))

    def _read(self, key: str, limit: int) -> bytes | None:
        """The object's bytes; None when it is missing. Oversized: ValueError."""
        try:
            data = read_object(self._client(), self.bucket, key, limit)
        except ObjectMissing:
            return None
        if data is None:
            raise ValueError(f"{key.rsplit('/', 1)[-1]} is larger than {limit} bytes")
        return data

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return dict(self._client().head_object(Bucket=self.bucket, Key=key))
        except S3_ERRORS as exc:
            error = storage_error("check", self.bucket, key, exc)
            if isinstance(error, ObjectMissing):
                return None
            raise error from exc

    def _list_objects(self) -> builtins.list[dict[str, Any]]:
        paginator = self._client().get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket,
            Prefix=f"{self.root}/",
            PaginationConfig={"MaxItems": MAX_LIST_PAGES * 1000},
        )
        try:
            return [dict(obj) for page in pages for obj in page.get("Contents", [])]
        except S3_ERRORS as exc:
            raise storage_error("list", self.bucket, f"{self.root}/", exc) from exc

    def _read_infos(
        self, voices: dict[str, dict[str, dict[str, Any]]]
    ) -> dict[str, VoiceInfo | None]:
        """name -> what a listing says of it (None: gone, or its manifest is broken)."""
        if not voices:
            return {}
        pool = ThreadPoolExecutor(min(LIST_READERS, len(voices)), "voice-list")
        try:
            futures = {name: pool.submit(self._info, name, files) for name, files in voices.items()}
            _, late = wait(futures.values(), timeout=LIST_TIMEOUT_S)
            if late:  # each GET is bounded by the client's timeouts; the listing is, in all
                error = StorageError(f"reading s3://{self.bucket}/{self.root}/ timed out")
                error.reason = f"{len(late)} voices not read within {LIST_TIMEOUT_S:g} s"
                raise error
            return {name: self._result(name, future) for name, future in futures.items()}
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    def _result(name: str, future: Future[VoiceInfo | None]) -> VoiceInfo | None:
        try:
            return future.result()
        except BadManifest:  # one broken voice does not hide the others
            log.warning("voice %s: its voice.json is not a voice manifest; not listed", name)
            return None

    def _info(self, name: str, files: dict[str, dict[str, Any]]) -> VoiceInfo | None:
        if MANIFEST in files:
            got = self._get_json(name)
            if got is None:
                return None  # deleted since the listing
            manifest = got[0]
            return VoiceInfo(
                name,
                manifest["duration_s"],
                manifest["created"],
                preview(manifest["transcript"]),
                str(manifest.get("consent", "")),
            )
        key = self.key(name, LEGACY_TEXT)
        data = read_prefix(self._client(), self.bucket, key, MAX_LEGACY_TEXT_BYTES)
        if data is None:
            return None
        created = files[LEGACY_AUDIO]["LastModified"]
        text = data.decode("utf-8", "replace")
        return VoiceInfo(name, None, _iso(created), preview(text))

    @staticmethod
    def _info_etag(files: dict[str, dict[str, Any]]) -> str:
        return ":".join(str(files[f].get("ETag", "")) for f in sorted(files))

    def _delete(self, key: str) -> None:
        try:
            self._client().delete_object(Bucket=self.bucket, Key=key)
        except S3_ERRORS as exc:
            raise storage_error("delete", self.bucket, key, exc) from exc

    def _delete_quietly(self, key: str) -> None:
        """Clean-up whose failure only leaves an object nothing names (logged, not raised)."""
        try:
            self._delete(key)
        except StorageError as exc:
            log.warning("could not remove unreferenced voice audio: %s", exc.reason or exc)


_MANIFEST_TYPES: dict[str, tuple[type, ...]] = {
    "audio": (str,),
    "transcript": (str,),
    "created": (str,),
    "sample_rate": (int,),
    "duration_s": (int, float),
}


def _manifest(data: bytes) -> dict[str, Any] | None:
    """A manifest's fields, checked (it is read back from a bucket others can write to);
    None when it is not one. Its audio file name can only name a file beside it."""
    if len(data) > MAX_MANIFEST_BYTES:
        return None
    try:
        manifest = json.loads(data)
    except ValueError:
        return None
    if not isinstance(manifest, dict):
        return None
    for field, kinds in _MANIFEST_TYPES.items():
        value = manifest.get(field)
        if not isinstance(value, kinds) or isinstance(value, bool):
            return None
    return manifest if AUDIO_FILE.fullmatch(manifest["audio"]) else None


def _legacy_token(audio: dict[str, Any], text: dict[str, Any]) -> str:
    return f"legacy:{audio['ETag']}:{text['ETag']}"


def _iso(when: Any) -> str:
    """S3's LastModified (a datetime) as ISO 8601 UTC, like a manifest's `created`."""
    try:
        return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    except AttributeError:
        return str(when)
