"""Filling a version of the model store: a complete, verified copy of a manifest, held.

The store (models/store.py) is the layout, the pointers, the holds and pruning; this module
puts the files of a manifest into a version directory, in place or through staging and a
commit, and makes the local copies of older layouts versions:

- A file shared by versions is a hard link (a hashed copy where links fail), so a version that
  changes one small file costs that file's bytes. Files of the flat layout that workers before
  this one wrote (`<model>/<file>`, `<model>/manifest.json`) are reused the same way once their
  hash checks; they are never served, changed or deleted here, since an older worker may still
  be serving them.
- What no local directory has comes from a `Download` (the S3 sync passes its ranged download).

Standard library only.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from f5worker.errors import StorageError
from f5worker.files import TEMP_SUFFIX, fsync_dir
from f5worker.models import local_cache
from f5worker.models.local_cache import (
    check_free_space,
    disk_free,
    inspect,
    load_record,
    remember,
    remove_stale_temps,
    save_record,
    stamp_of,
    verify_local_copy,
)
from f5worker.models.manifest import (
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    ManifestError,
    manifest_version,
    read_manifest,
    write_manifest,
)
from f5worker.models.store import ModelStore, inside

log = logging.getLogger(__name__)

Download = Callable[[tuple[FileEntry, ...], Path, dict[str, dict[str, object]]], None]


@dataclass(frozen=True)
class Filled:
    """What fill_version found and did."""

    model_dir: Path
    changed: bool  # False: the version was already complete
    kept: int = 0
    linked: int = 0
    downloaded: int = 0
    downloaded_bytes: int = 0


def fill_version(
    store: ModelStore,
    version: str,
    manifest: Manifest,
    download: Download | None = None,
    *,
    free_bytes: Callable[[Path], int] = disk_free,
    sources: Iterable[Path] = (),
    make_room: Callable[[], object] | None = None,
) -> Filled:
    """Make versions/<version> a complete copy of manifest and hold it for this process.

    An existing directory is completed in place (a missing or wrong file replaced by rename,
    nothing deleted); otherwise the version is assembled in staging and renamed into place.
    Files come from the directory itself, then as hard links from any other version, the flat
    layout or `sources` holding the same bytes, then from `download`. The disk check runs before
    anything is written; when it fails, `make_room` (pruning) runs and it is checked again. On
    failure the hold is dropped again unless the process held the version before.
    """
    vdir = store.version_dir(version)
    for entry in manifest.files:
        inside(vdir, entry.path)  # reject an escaping path before touching anything
    held_before = store.holds(version)
    try:
        return _fill(store, version, manifest, download, free_bytes, sources, make_room)
    except BaseException:
        if not held_before:
            store.release(version)
        raise


def _fill(
    store: ModelStore,
    version: str,
    manifest: Manifest,
    download: Download | None,
    free_bytes: Callable[[Path], int],
    sources: Iterable[Path],
    make_room: Callable[[], object] | None,
) -> Filled:
    vdir = store.version_dir(version)
    existing = store.has_version(version)
    if existing:
        store.hold(version)
        existing = store.has_version(version)  # a pruner may have removed it before the hold
    record: dict[str, dict[str, object]] = {}
    missing, kept, same_manifest = manifest.files, 0, False
    if existing:
        remove_stale_temps(vdir)
        record = load_record(vdir)
        before = dict(record)
        state = inspect(vdir, manifest.files, record)
        local = _manifest_or_none(vdir)
        same_manifest = local is not None and (local.model, local.files) == (
            manifest.model,
            manifest.files,
        )
        if not state.missing and same_manifest:
            if record != before:
                save_record(vdir, record)
            return Filled(vdir, False, kept=len(state.valid))
        missing, kept = state.missing, len(state.valid)
    reuse = _Reuse([*sources, *_other_versions(store, version), store.home])
    needed = sum(e.size for e in missing if not reuse.has(e))
    _check_space(store.home, needed, free_bytes, make_room)
    store.hold(version)
    if existing:
        linked, fetched = _complete(vdir, manifest, missing, reuse, download, record, needed)
        if not same_manifest:
            write_manifest(vdir, manifest)
    else:
        with store.staging() as staging:
            linked, fetched = _complete(staging, manifest, missing, reuse, download, record, needed)
            write_manifest(staging, manifest)
            if not store.commit(staging, version):
                # Another process made it meanwhile (it went on unlocked): complete theirs.
                return _fill(store, version, manifest, download, free_bytes, [staging], None)
    return Filled(vdir, True, kept, linked, len(fetched), sum(e.size for e in fetched))


def _check_space(
    path: Path,
    needed: int,
    free_bytes: Callable[[Path], int],
    make_room: Callable[[], object] | None,
) -> None:
    try:
        check_free_space(path, needed, free_bytes)
    except StorageError:
        if make_room is None:
            raise
        make_room()
        check_free_space(path, needed, free_bytes)


def _complete(
    target: Path,
    manifest: Manifest,
    missing: tuple[FileEntry, ...],
    reuse: _Reuse,
    download: Download | None,
    record: dict[str, dict[str, object]],
    planned_bytes: int,
) -> tuple[int, tuple[FileEntry, ...]]:
    """Put every missing entry into target (links first, then download); returns what it did."""
    rest = tuple(e for e in missing if not reuse.place(e, inside(target, e.path)))
    for entry in missing:
        if entry not in rest:
            remember(record, target, entry)
    try:
        if rest:
            if download is None:
                raise StorageError(
                    f"{target}: {len(rest)} files of model {manifest.model} are missing and "
                    "there is nowhere to get them from"
                )
            extra = sum(e.size for e in rest) - planned_bytes  # a link that failed after all
            if extra > 0:
                check_free_space(target, extra)
            download(rest, target, record)
    finally:
        save_record(target, record)
    for directory in {target, *((target / e.path).parent for e in missing)}:
        fsync_dir(directory)
    return len(missing) - len(rest), rest


def _other_versions(store: ModelStore, version: str) -> list[Path]:
    try:
        return [store.versions / v for v in store.version_names() if v != version]
    except OSError:
        return []


def _manifest_or_none(directory: Path) -> Manifest | None:
    try:
        return read_manifest(directory)
    except (ManifestError, OSError):
        return None


class _Reuse:
    """Files of other directories with a manifest, found by content, placed as verified links."""

    def __init__(self, directories: Iterable[Path]) -> None:
        self._by_content: dict[tuple[str, int], list[tuple[Path, str]]] = {}
        for directory in directories:
            manifest = _manifest_or_none(directory)
            for entry in manifest.files if manifest else ():
                key = (entry.sha256, entry.size)
                self._by_content.setdefault(key, []).append((directory, entry.path))
        self._records: dict[Path, dict[str, dict[str, object]]] = {}

    def has(self, entry: FileEntry) -> bool:
        return (entry.sha256, entry.size) in self._by_content

    def place(self, entry: FileEntry, dest: Path) -> bool:
        """Put a verified copy of entry at dest from some source; False when none has it."""
        return any(
            self._place_from(directory, rel, entry, dest)
            for directory, rel in self._by_content.get((entry.sha256, entry.size), ())
        )

    def _place_from(self, directory: Path, rel: str, entry: FileEntry, dest: Path) -> bool:
        try:
            src = inside(directory, rel)
            st = os.lstat(src)
        except (OSError, StorageError):
            return False
        if not stat.S_ISREG(st.st_mode) or st.st_size != entry.size:
            return False
        record = self._records.setdefault(directory, load_record(directory))
        trusted = record.get(rel) == {**stamp_of(st), "sha256": entry.sha256}
        if not trusted and local_cache.sha256_file(src) != entry.sha256:
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
        try:
            if not _link_same(src, st, tmp) and not _copy_verified(src, tmp, entry):
                return False
            os.replace(tmp, dest)
        except OSError as exc:
            raise StorageError(f"cannot write {dest}: {exc.strerror}") from exc
        finally:
            tmp.unlink(missing_ok=True)
        if os.path.samestat(st, os.lstat(dest)):
            self._refresh(directory, rel, src, entry, record)
        return True

    @staticmethod
    def _refresh(
        directory: Path, rel: str, src: Path, entry: FileEntry, record: dict[str, dict[str, object]]
    ) -> None:
        """The link moved the source's ctime: update its record, or it would be re-hashed."""
        with contextlib.suppress(OSError):
            record[rel] = {**stamp_of(os.lstat(src)), "sha256": entry.sha256}
            save_record(directory, record)


def _link_same(src: Path, st: os.stat_result, tmp: Path) -> bool:
    """Hard-link src to tmp; False when links fail here or src changed since it was checked."""
    try:
        os.link(src, tmp, follow_symlinks=False)
        linked = os.lstat(tmp)
    except OSError:
        return False
    if (linked.st_ino, linked.st_size, linked.st_mtime_ns) != (
        st.st_ino,
        st.st_size,
        st.st_mtime_ns,
    ):
        tmp.unlink(missing_ok=True)
        return False
    return True


def _copy_verified(src: Path, tmp: Path, entry: FileEntry) -> bool:
    """Copy src to a new tmp, hashing what is written; True when it is entry's exact bytes."""
    digest = hashlib.sha256()
    size = 0
    try:
        src_fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            out_fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            try:
                while chunk := os.read(src_fd, 1024 * 1024):
                    digest.update(chunk)
                    size += len(chunk)
                    os.write(out_fd, chunk)
                os.fsync(out_fd)
            finally:
                os.close(out_fd)
        finally:
            os.close(src_fd)
    except OSError:
        return False
    return size == entry.size and digest.hexdigest() == entry.sha256


# --- whole versions -------------------------------------------------------------------------


def add_built_version(store: ModelStore, build: Callable[[Path], object], *, locked: bool) -> Path:
    """Build a model into staging (hub fetch, demo generator) and make it the current version.

    Returns the held version directory; when that version exists already it is completed from
    the new build instead. Prunes when `locked` (the model lock is held).
    """
    with store.staging() as staging:
        build(staging)
        manifest = _manifest_or_none(staging)
        if manifest is None:
            raise StorageError(f"{staging} has no valid {MANIFEST_NAME} after it was built")
        version = manifest_version(manifest)
        vdir = store.hold(version)
        try:
            if not store.commit(staging, version):
                fill_version(store, version, manifest, sources=[staging])
        except BaseException:
            store.release(version)
            raise
    store.point(version)
    if locked:
        store.prune()
    return vdir


def serve_local(store: ModelStore, *, locked: bool) -> Path | None:
    """The held directory of a complete local copy: `current`, else the flat layout of older
    workers made a version (hashes verified); None when neither is complete."""
    version = store.pointer()
    if version and store.has_version(version):
        held_before = store.holds(version)
        vdir = store.hold(version)
        if complete(vdir, store.name):
            return vdir
        if not held_before:
            store.release(version)
    return _adopt_flat(store, locked=locked)


def complete(model_dir: Path, name: str | None = None) -> bool:
    """Whether model_dir holds a manifest (of model `name`) whose every file checks out."""
    manifest = _manifest_or_none(model_dir)
    if manifest is None or (name is not None and manifest.model != name):
        return False
    return verify_local_copy(model_dir, manifest)


def _adopt_flat(store: ModelStore, *, locked: bool) -> Path | None:
    manifest = _manifest_or_none(store.home)
    if manifest is None or manifest.model != store.name:
        return None
    if not verify_local_copy(store.home, manifest):
        return None
    version = manifest_version(manifest)
    try:
        vdir = fill_version(store, version, manifest).model_dir  # links to the flat copy
    except StorageError as err:
        log.warning("cannot reuse the flat copy in %s: %s", store.home, err.message)
        return None
    store.point(version)
    if locked:
        store.prune()
    log.info("model %s: the flat copy in %s is now version %s", store.name, store.home, version)
    return vdir
