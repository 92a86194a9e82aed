"""The local side of the model cache: per-model lock, free-space check, record of verified files.

Several processes may share one cache directory (a RunPod network volume mounted by many
workers). The lock keeps two of them from downloading the same 1.4 GB at once; it is an
optimisation, not a correctness device, because every file lands by an atomic rename, so a
process that gives up waiting and proceeds can only waste bandwidth, never corrupt a file.

The record (`.verified.json`, hidden so manifests ignore it) remembers, per file, the sha256 it
was verified against together with the size, mtime, ctime and inode it had then. A file whose
stat still matches is trusted without re-hashing, so a warm restart reads no model bytes; any
write to the file (even at the same size, even with its mtime forged back) changes its ctime and
forces a re-hash.

Trust. The default cache root, /tmp/models, sits in world-writable /tmp, and a volume may be
writable by other users, so every directory the cache writes into or deletes from (the root,
`<model>/` and what the version store makes below it) must be a real directory (lstat: never a
symlink) owned by the worker's uid, or it is refused with a StorageError. The root's parents
may be symlinks: an operator's MODEL_CACHE_DIR may live under a mount point they link to.
Files are created with O_EXCL or O_NOFOLLOW, so a planted symlink is never followed.
Standard library only.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from f5worker.errors import ConfigError, StorageError
from f5worker.files import TEMP_SUFFIX, sha256_file, write_atomic
from f5worker.model_ref import MODEL_NAME_PATTERN
from f5worker.models.manifest import FileEntry, Manifest

log = logging.getLogger(__name__)

RECORD_NAME = ".verified.json"
# Long enough for a 1.4 GB download on a slow link; after it a waiter proceeds unlocked.
LOCK_TIMEOUT_S = 900.0
# A temp file untouched this long belongs to a dead process (live downloads write continuously).
STALE_TEMP_S = 120.0
_LOCK_ERRNOS = (errno.EAGAIN, errno.EACCES)


def open_nofollow(path: Path, flags: int, mode: int = 0o644) -> int:
    """os.open that refuses to follow a symlink at path (ELOOP becomes a StorageError)."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StorageError(f"{path} is a symlink; refusing to follow it") from None
        raise StorageError(f"cannot open {path}: {exc.strerror}") from exc


def owned_dir(path: Path, what: str, *, create: bool = False) -> bool:
    """Whether path is a real directory owned by this uid: False when absent (and not created).

    A symlink, or a directory another user owns, could redirect every file the cache writes or
    deletes (see the module docstring), so either is a StorageError that says what to fix.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if not create:
            return False
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            pass  # made by someone else just now: checked below like any other
        except OSError as exc:
            raise StorageError(f"cannot create {what} {path}: {exc.strerror}") from exc
        st = os.lstat(path)
    except OSError as exc:
        raise StorageError(f"cannot inspect {what} {path}: {exc.strerror}") from exc
    uid = os.geteuid()
    if stat.S_ISLNK(st.st_mode):
        raise StorageError(
            f"{what} {path} is a symlink; refusing it: the model cache needs a real directory "
            f"owned by uid {uid}"
        )
    if not stat.S_ISDIR(st.st_mode):
        raise StorageError(f"{what} {path} is not a directory")
    if st.st_uid != uid:
        raise StorageError(
            f"{what} {path} is owned by uid {st.st_uid}, not by this worker's uid {uid}; "
            "refusing it"
        )
    return True


def ensure_cache_root(root: Path) -> Path:
    """Create MODEL_CACHE_DIR if needed and check it (its parents are the operator's)."""
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create MODEL_CACHE_DIR {root}: {exc.strerror}") from exc
    owned_dir(root, "MODEL_CACHE_DIR", create=True)
    return root


def check_model_name(name: str) -> str:
    """A model name becomes a directory and an S3 key segment, so it must be one safe component."""
    if not MODEL_NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            f"MODEL_NAME={name!r} must be letters, digits, '.', '_' or '-' (one path component)"
        )
    return name


@contextlib.contextmanager
def model_lock(
    cache_dir: Path,
    name: str,
    timeout: float = LOCK_TIMEOUT_S,
    poll: float = 0.2,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[bool]:
    """Hold `<cache_dir>/.<name>.lock` exclusively; yields False when it proceeds unlocked.

    flock is released by the kernel when its process dies, so a crashed holder never blocks
    the next start. On filesystems without flock, or after `timeout`, it logs a WARNING and
    proceeds without the lock (best effort, see the module docstring); whoever proceeds
    unlocked must not delete anything (the version store prunes only when this yields True).
    clock and sleep measure and pass the wait (a test's fake clock).
    """
    ensure_cache_root(cache_dir)
    path = cache_dir / f".{name}.lock"
    fd = open_nofollow(path, os.O_RDWR | os.O_CREAT)
    try:
        locked = _acquire(fd, path, timeout, poll, clock, sleep)
        try:
            yield locked
        finally:
            if locked:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(
    fd: int,
    path: Path,
    timeout: float,
    poll: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> bool:
    deadline = clock() + timeout
    waited = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if waited:
                log.info("model lock %s acquired after waiting", path)
            return True
        except OSError as exc:
            if exc.errno not in _LOCK_ERRNOS:
                log.warning("cannot lock %s (%s); proceeding without the lock", path, exc.strerror)
                return False
        if clock() >= deadline:
            log.warning(
                "model lock %s still held after %.0f s; proceeding without it", path, timeout
            )
            return False
        if not waited:
            log.info("another process holds %s; waiting up to %.0f s", path, timeout)
            waited = True
        sleep(poll)


def disk_free(path: Path) -> int:
    """Free bytes on the filesystem that holds `path` (or its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def check_free_space(
    path: Path, needed: int, free_bytes: Callable[[Path], int] = disk_free
) -> None:
    free = free_bytes(path)
    if needed > free:
        raise StorageError(
            f"not enough disk space in {path}: need {needed} bytes, {free} bytes free"
        )


@dataclass(frozen=True)
class LocalState:
    """Which manifest entries are already present and verified, and which must be fetched."""

    valid: tuple[FileEntry, ...]
    missing: tuple[FileEntry, ...]
    hashed_bytes: int

    @property
    def missing_bytes(self) -> int:
        return sum(f.size for f in self.missing)


def _stamp(path: Path) -> dict[str, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return stamp_of(st)


def stamp_of(st: os.stat_result) -> dict[str, int]:
    """What the record keeps of a file's stat: any write changes at least its ctime."""
    return {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
        "ino": st.st_ino,
    }


def load_record(model_dir: Path) -> dict[str, dict[str, object]]:
    try:
        data = json.loads((model_dir / RECORD_NAME).read_text())
        files = data["files"]
        return files if isinstance(files, dict) else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}  # no record or a damaged one: files are simply re-hashed


def save_record(model_dir: Path, record: dict[str, dict[str, object]]) -> None:
    text = json.dumps({"files": record}, indent=1, sort_keys=True) + "\n"
    write_atomic(model_dir / RECORD_NAME, text.encode())


def remember(record: dict[str, dict[str, object]], model_dir: Path, entry: FileEntry) -> None:
    """Note that model_dir/entry.path was just verified against entry.sha256."""
    stamp = _stamp(model_dir / entry.path)
    if stamp is not None:
        record[entry.path] = {**stamp, "sha256": entry.sha256}


def inspect(
    model_dir: Path,
    entries: tuple[FileEntry, ...],
    record: dict[str, dict[str, object]],
    hasher: Callable[[Path], str] | None = None,
) -> LocalState:
    """Split entries into valid and missing; hashes only files the record cannot vouch for.

    `record` is updated in place for files that were hashed and found good, and entries for
    files that are gone or changed are dropped from it.
    """
    hasher = hasher or sha256_file
    valid: list[FileEntry] = []
    missing: list[FileEntry] = []
    hashed = 0
    for entry in entries:
        path = model_dir / entry.path
        stamp = _stamp(path)
        if stamp is None or not path.is_file() or stamp["size"] != entry.size:
            record.pop(entry.path, None)
            missing.append(entry)
        elif record.get(entry.path) == {**stamp, "sha256": entry.sha256}:
            valid.append(entry)
        else:
            hashed += entry.size
            if hasher(path) == entry.sha256:
                record[entry.path] = {**stamp, "sha256": entry.sha256}
                valid.append(entry)
            else:
                record.pop(entry.path, None)
                missing.append(entry)
    return LocalState(tuple(valid), tuple(missing), hashed)


def verify_local_copy(model_dir: Path, manifest: Manifest) -> bool:
    """True when every manifest file is present and matches; refreshes the record as it goes."""
    record = load_record(model_dir)
    before = dict(record)
    state = inspect(model_dir, manifest.files, record)
    if record != before:
        with contextlib.suppress(OSError):  # a read-only volume can still serve its files
            save_record(model_dir, record)
    return not state.missing


def record_all(model_dir: Path, manifest: Manifest) -> None:
    """Record every manifest file as verified (call right after hashing them all)."""
    record: dict[str, dict[str, object]] = {}
    for entry in manifest.files:
        remember(record, model_dir, entry)
    save_record(model_dir, record)


def remove_stale_temps(model_dir: Path, max_age_s: float = STALE_TEMP_S) -> int:
    """Delete `.*.part` files a killed process left behind; call only while holding the lock."""
    removed = 0
    now = time.time()
    for path in model_dir.rglob(f".*{TEMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            if now - path.stat().st_mtime > max_age_s:
                path.unlink()
                removed += 1
    return removed
