"""The model cache on disk: a directory per version, atomic pointers, holds and safe pruning.

Several workers may share one MODEL_CACHE_DIR (a network volume) while following different S3
prefixes, and a rollout may move `latest.json` while a worker is between its sync and its engine
load (which runs after the model lock is released). So the store never changes what a reader was
handed:

    <MODEL_CACHE_DIR>/.<model>.lock                     exclusive while a process changes <model>/
    <MODEL_CACHE_DIR>/<model>/current                   "<version>\\n", replaced by one rename
    <MODEL_CACHE_DIR>/<model>/current.s3-<id>           the version last synced from one S3 prefix
    <MODEL_CACHE_DIR>/<model>/versions/<version>/       model files, manifest.json, .verified.json
    <MODEL_CACHE_DIR>/<model>/versions/.<version>.hold  flocked (shared) by each process using it
    <MODEL_CACHE_DIR>/<model>/versions/.staging-*/      a version being assembled
    <MODEL_CACHE_DIR>/<model>/versions/.trash-*/        a pruned version being removed

- A new version is assembled in a private staging directory (every file verified, manifest
  last) and renamed to `versions/<version>` complete. In an existing version directory a file
  only ever goes from missing or wrong to the manifest's bytes, by rename; nothing in it is
  deleted while it exists.
- A process takes a shared flock on the version's hold file before it reads, repairs or creates
  the version, and keeps it until it exits (the kernel drops it when the process dies): the
  directory handed to the engine stays valid for the process's whole life.
- Pruning runs only under the model lock. A version is removed when it is not `current`, not
  among the KEEP_VERSIONS most recently used (a hold file's mtime, touched by every hold), and a
  non-blocking exclusive flock on its hold file succeeds, i.e. no live process holds it. Under
  that flock it is renamed to `.trash-*`, then removed. Where flock does not work nothing is
  pruned. When the disk is too small for a new version, unheld versions other than `current`
  are pruned first, whatever their age.
- Filling a version from a manifest (links to files other versions share, downloads for the
  rest) is models/fill.py's; this module is the layout, the pointers, the holds and pruning.

Directories are checked with local_cache.owned_dir (real, owned by this uid) and files opened
with O_EXCL or O_NOFOLLOW. Standard library only.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import secrets
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from f5worker.errors import StorageError
from f5worker.files import fsync_dir, write_atomic
from f5worker.models.local_cache import (
    STALE_TEMP_S,
    check_model_name,
    ensure_cache_root,
    open_nofollow,
    owned_dir,
)

log = logging.getLogger(__name__)

VERSIONS_DIR = "versions"
CURRENT = "current"
# Keep the two most recently used versions besides `current` and any held one: a rollback, or a
# second endpoint on the same volume, then finds its files without a download.
KEEP_VERSIONS = 2
HOLD_SUFFIX = ".hold"
LOCK_SUFFIX = ".lock"
STAGING_PREFIX = ".staging-"
TRASH_PREFIX = ".trash-"
# A pruner holds a hold file exclusively only for a rename; waiting longer means a hung process.
HOLD_WAIT_S = 60.0
VERSION_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_BUSY = (errno.EAGAIN, errno.EACCES)

# This process's holds, path -> fd: kept open (and so flocked) until the process exits.
_held: dict[Path, int] = {}
_held_guard = threading.Lock()
_warned_no_flock: set[Path] = set()


def source_pointer(source: str) -> str:
    """Name of the pointer to the version last synced from `source` (an s3://bucket/prefix/)."""
    return f"{CURRENT}.s3-{hashlib.sha256(source.encode()).hexdigest()[:12]}"


def inside(directory: Path, rel: str) -> Path:
    """directory/rel, refusing anything that resolves outside directory (e.g. via a symlink)."""
    dest = directory / rel
    if not dest.resolve().is_relative_to(directory.resolve()):
        raise StorageError(f"manifest path {rel!r} escapes {directory}")
    return dest


def release_all_holds() -> None:
    """Drop every hold this process has (tests and tools; a worker keeps its hold for life)."""
    with _held_guard:
        fds = list(_held.values())
        _held.clear()
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


@dataclass(frozen=True)
class ModelStore:
    """The versions of one model under one cache root."""

    root: Path
    name: str

    @classmethod
    def checked(cls, root: Path, name: str) -> ModelStore:
        """The store of `name` under `root`; refuses an unsafe root or model dir; creates none."""
        store = cls(root, check_model_name(name))
        if owned_dir(root, "MODEL_CACHE_DIR") and owned_dir(store.home, "model directory"):
            owned_dir(store.versions, "versions directory")
        return store

    @property
    def home(self) -> Path:
        return self.root / self.name

    @property
    def versions(self) -> Path:
        return self.home / VERSIONS_DIR

    def create(self) -> None:
        ensure_cache_root(self.root)
        owned_dir(self.home, "model directory", create=True)
        owned_dir(self.versions, "versions directory", create=True)

    def version_dir(self, version: str) -> Path:
        if not VERSION_PATTERN.fullmatch(version):
            raise StorageError(f"{version!r} is not a valid model version name")
        return self.versions / version

    def has_version(self, version: str) -> bool:
        """Whether versions/<version> exists (a symlink or a foreign dir there is refused)."""
        return owned_dir(self.version_dir(version), "model version directory")

    # --- pointers ---------------------------------------------------------------------------

    def pointer(self, name: str = CURRENT) -> str | None:
        """The version a pointer file names; None when it is missing, not a plain file or bad."""
        try:
            fd = os.open(
                self.home / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            )
        except OSError:
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            raw = os.read(fd, 256)
        except OSError:
            return None
        finally:
            os.close(fd)
        version = raw.decode("ascii", "replace").strip()
        return version if VERSION_PATTERN.fullmatch(version) else None

    def point(self, version: str, *names: str) -> None:
        """Switch pointers (default: `current`) to version, each by one atomic rename."""
        for name in names or (CURRENT,):
            if self.pointer(name) != version:
                write_atomic(self.home / name, f"{version}\n".encode())

    def current_dir(self) -> Path | None:
        """versions/<current>, when the pointer names a version that exists."""
        version = self.pointer()
        return self.version_dir(version) if version and self.has_version(version) else None

    # --- holds ------------------------------------------------------------------------------

    def hold(self, version: str) -> Path:
        """Take this process's shared hold on version, kept until it exits; returns its dir.

        Take it before reading, repairing or creating the version: from then on no pruner
        removes it. The directory itself need not exist yet.
        """
        vdir = self.version_dir(version)
        self.create()
        path = self._hold_path(version)
        with _held_guard:
            fd = _held.get(path)
            if fd is None:
                fd = _held[path] = _acquire_shared(path)
        with contextlib.suppress(OSError):
            os.utime(fd)  # "last used": pruning keeps the most recently used versions
        return vdir

    def holds(self, version: str) -> bool:
        """Whether this process holds version."""
        with _held_guard:
            return self._hold_path(version) in _held

    def release(self, version: str) -> None:
        """Drop this process's hold on a version it decided not to use."""
        with _held_guard:
            fd = _held.pop(self._hold_path(version), None)
        if fd is not None:
            os.close(fd)

    def _hold_path(self, version: str) -> Path:
        return self.versions / f".{version}{HOLD_SUFFIX}"

    # --- assembling -------------------------------------------------------------------------

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A private directory (0700 until committed) to assemble a version in.

        Whatever commit did not rename away is removed on exit. `.staging-*.lock` beside it,
        flocked while it lives, tells the pruner it is no crashed process's leftover.
        """
        self.create()
        path = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.versions))
        lock = path.with_name(path.name + LOCK_SUFFIX)
        fd = open_nofollow(lock, os.O_RDWR | os.O_CREAT)
        try:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            yield path
        finally:
            _remove_tree(path)
            with contextlib.suppress(OSError):
                lock.unlink()
            os.close(fd)

    def commit(self, staging: Path, version: str) -> bool:
        """Rename a complete staging dir to versions/<version>; False when that exists already."""
        target = self.version_dir(version)
        try:
            os.chmod(staging, 0o755)  # mkdtemp's 0700 would hide it from other volume users
            fsync_dir(staging)
            os.rename(staging, target)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                return False
            raise StorageError(f"cannot create {target}: {exc.strerror}") from exc
        fsync_dir(self.versions)
        return True

    # --- pruning ----------------------------------------------------------------------------

    def prune(self, keep: int = KEEP_VERSIONS) -> list[str]:
        """Remove the versions nobody can be using (module docstring); only under the model lock.

        Returns the versions removed. Failures are logged, never raised: pruning only saves disk.
        """
        try:
            names = self.version_names()
        except OSError as exc:
            log.warning("cannot list %s (%s); nothing pruned", self.versions, exc.strerror)
            return []
        ranked = sorted(names, key=self._last_used, reverse=True)
        protected = {self.pointer(), *ranked[:keep]}
        removed = [v for v in ranked if v not in protected and self._remove_unheld(v)]
        self._remove_leftovers(set(names) - set(removed))
        return removed

    def version_names(self) -> list[str]:
        """Names of the version directories (real directories only)."""
        with os.scandir(self.versions) as entries:
            return [
                e.name
                for e in entries
                if VERSION_PATTERN.fullmatch(e.name) and e.is_dir(follow_symlinks=False)
            ]

    def _last_used(self, version: str) -> int:
        for path in (self._hold_path(version), self.versions / version):
            with contextlib.suppress(OSError):
                return os.lstat(path).st_mtime_ns
        return 0

    def _remove_unheld(self, version: str) -> bool:
        hold = self._hold_path(version)
        try:
            fd = open_nofollow(hold, os.O_RDWR | os.O_CREAT)
        except StorageError as err:
            log.warning("not pruning model %s version %s: %s", self.name, version, err.message)
            return False
        trash = self.versions / f"{TRASH_PREFIX}{version}-{secrets.token_hex(4)}"
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return False  # a live process holds it (or flock does not work here: keep all)
            if not _same_file(fd, hold) or not self.has_version(version):
                return False
            os.rename(self.versions / version, trash)
            os.unlink(hold)  # a waiting holder sees it gone and holds a fresh file
        except (OSError, StorageError) as exc:
            log.warning("not pruning model %s version %s: %s", self.name, version, exc)
            return False
        finally:
            os.close(fd)
        _remove_tree(trash)
        log.info("pruned model %s version %s: unused, not current", self.name, version)
        return True

    def _remove_leftovers(self, versions: set[str]) -> None:
        """Trash, crashed processes' staging dirs and hold files of versions that are gone."""
        try:
            with os.scandir(self.versions) as it:
                entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        except OSError:
            return
        for name, is_dir in entries:
            path = self.versions / name
            if name.startswith(TRASH_PREFIX) and is_dir:
                _remove_tree(path)
            elif name.startswith(STAGING_PREFIX) and is_dir:
                _remove_stale_staging(path)
            elif name.startswith(STAGING_PREFIX) and name.endswith(LOCK_SUFFIX):
                if not path.with_name(name.removesuffix(LOCK_SUFFIX)).exists():
                    _unlink_unheld(path)
            elif (
                name.startswith(".")
                and name.endswith(HOLD_SUFFIX)
                and name[1 : -len(HOLD_SUFFIX)] not in versions
            ):
                _unlink_unheld(path)


def _acquire_shared(path: Path) -> int:
    """An fd with a shared flock on the hold file at path (re-opened if a pruner removed it)."""
    deadline = time.monotonic() + HOLD_WAIT_S
    while True:
        fd = open_nofollow(path, os.O_RDWR | os.O_CREAT)
        try:
            if not _flock_shared(fd, path, deadline) or _same_file(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # pruned while we waited: hold the file that is there now


def _flock_shared(fd: int, path: Path, deadline: float) -> bool:
    """Poll for a shared flock until deadline; False where the filesystem has no flock."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno not in _BUSY:
                if path.parent not in _warned_no_flock:
                    _warned_no_flock.add(path.parent)
                    log.warning(
                        "no flock on %s (%s): versions there are never pruned",
                        path.parent,
                        exc.strerror,
                    )
                return False
        if time.monotonic() >= deadline:
            raise StorageError(f"{path} stayed locked for {HOLD_WAIT_S:.0f} s; giving up")
        time.sleep(0.05)


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.lstat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _unlink_unheld(path: Path) -> None:
    """Remove a hold or staging lock file nobody holds."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if _same_file(fd, path):
            path.unlink()
    except OSError:
        pass  # held, or no flock here: leave it
    finally:
        os.close(fd)


def _remove_stale_staging(path: Path) -> None:
    """Remove a staging dir whose owner is gone: its lock is free, or (no lock) it is old."""
    lock = path.with_name(path.name + LOCK_SUFFIX)
    try:
        fd = os.open(lock, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        if _age_s(path) > STALE_TEMP_S:
            _remove_tree(path)
        return
    except OSError:
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in _BUSY or _age_s(path) <= STALE_TEMP_S:
                return  # its owner is alive (or, without flock, it may be)
        _remove_tree(path)
        with contextlib.suppress(OSError):
            lock.unlink()
    finally:
        os.close(fd)


def _age_s(path: Path) -> float:
    """Seconds since anything under path last changed."""
    newest = 0.0
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files, "."]:
            with contextlib.suppress(OSError):
                newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
    return time.time() - newest


def _remove_tree(path: Path) -> None:
    """rmtree without following symlinks (Linux's fd-based rmtree); errors only logged."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot remove %s: %s", path, exc.strerror)
