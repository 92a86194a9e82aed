"""huggingface_hub's cache layout, read without huggingface_hub: which snapshot holds a file.

`<root>/models--ORG--NAME/refs/<branch>` holds a commit; `snapshots/<commit>/<path>` are the
files (usually symlinks into `blobs/`). RunPod's cached models and HF_HOME's hub cache are both
in it. Reading it needs no network and no lock: huggingface_hub writes a snapshot's entries
only once their blobs are complete. Standard library only.
"""

from __future__ import annotations

import re
from pathlib import Path

COMMIT = re.compile(r"[0-9a-f]{40}")


def repo_dir(root: Path, repo: str) -> Path:
    """huggingface_hub's folder for a model repo: models--ORG--NAME."""
    return root / ("models--" + repo.replace("/", "--"))


def find_snapshot(root: Path, repo: str, revision: str, paths: list[str]) -> Path | None:
    """The snapshot directory holding every path of `paths`, or None.

    A commit revision names its snapshot; a branch or tag is read from refs/ as
    huggingface_hub writes it. Paths must be files inside the snapshot (symlinks to its blobs
    are the norm)."""
    base = repo_dir(root, repo)
    if COMMIT.fullmatch(revision):
        commit = revision
    else:
        try:
            commit = (base / "refs" / revision).read_text().strip()
        except OSError:
            return None
        if not COMMIT.fullmatch(commit):
            return None
    snapshot = base / "snapshots" / commit
    for rel in paths:
        if not (snapshot / rel).is_file():
            return None
    return snapshot
