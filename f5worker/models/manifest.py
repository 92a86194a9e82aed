"""The model manifest: which files make a model directory, with their sizes and sha256.

A model directory is complete when its manifest.json exists and every file matches it; the
manifest is always written last, so its presence is the commit marker (locally and in S3).
Standard library only (and f5worker.files).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from f5worker.files import sha256_file, write_atomic

MANIFEST_NAME = "manifest.json"


class ManifestError(ValueError):
    """A manifest that is malformed or names a path outside its directory."""


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    model: str
    files: tuple[FileEntry, ...]
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> str:
        data = {
            "model": self.model,
            "source": self.source,
            "files": [asdict(f) for f in self.files],
        }
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        try:
            data = json.loads(text)
            files = tuple(
                FileEntry(safe_relpath(f["path"]), int(f["size"]), str(f["sha256"]).lower())
                for f in data["files"]
            )
            return cls(str(data["model"]), files, dict(data.get("source") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"malformed manifest: {exc}") from None


def manifest_version(manifest: Manifest) -> str:
    """Content address of a model: the same files always give the same version."""
    digest = hashlib.sha256()
    for entry in sorted(manifest.files, key=lambda f: f.path):
        digest.update(f"{entry.path}\0{entry.size}\0{entry.sha256}\n".encode())
    return digest.hexdigest()[:16]


def safe_relpath(path: str) -> str:
    """Reject absolute paths and any `..`, so a manifest can never write outside its dir."""
    p = PurePosixPath(path)
    if not path or p.is_absolute() or ".." in p.parts or "\\" in path or path == MANIFEST_NAME:
        raise ManifestError(f"unsafe path in manifest: {path!r}")
    return str(p)


def build_manifest(model_dir: Path, model: str, source: dict[str, Any]) -> Manifest:
    """Hash every regular file under model_dir (hidden files and the manifest excluded)."""
    entries = []
    for path in sorted(model_dir.rglob("*")):
        rel = path.relative_to(model_dir).as_posix()
        if (
            not path.is_file()
            or rel == MANIFEST_NAME
            or any(p.startswith(".") for p in rel.split("/"))
        ):
            continue
        entries.append(FileEntry(rel, path.stat().st_size, sha256_file(path)))
    return Manifest(model, tuple(entries), source)


def write_manifest(model_dir: Path, manifest: Manifest) -> None:
    write_atomic(model_dir / MANIFEST_NAME, manifest.to_json().encode())


def read_manifest(model_dir: Path) -> Manifest | None:
    path = model_dir / MANIFEST_NAME
    if not path.is_file():
        return None
    return Manifest.from_json(path.read_bytes())


def is_complete(model_dir: Path, manifest: Manifest) -> bool:
    """Cheap check: every file present with the recorded size (hashes are checked on sync)."""
    for entry in manifest.files:
        path = model_dir / entry.path
        if not path.is_file() or path.stat().st_size != entry.size:
            return False
    return True
