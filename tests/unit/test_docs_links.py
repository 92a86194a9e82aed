"""Every relative link in README.md, TASKS.md and docs/**/*.md points to a file that exists, and
every #anchor to a heading in it (GitHub's slugs). Offline: external links are not checked."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from f5worker.testing import REPO

DOCS = [REPO / "README.md", REPO / "TASKS.md", *sorted((REPO / "docs").rglob("*.md"))]
LINK = re.compile(r"\]\(([^()\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, re.M)}


def links(path: Path) -> list[str]:
    text = FENCE.sub("", path.read_text())
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(doc):
    broken = []
    for target in links(doc):
        file, _, anchor = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        missing_anchor = anchor and dest.suffix == ".md" and anchor not in anchors(dest)
        if not dest.exists() or missing_anchor:
            broken.append(target)
    assert not broken, f"{doc.relative_to(REPO)}: broken links {broken}"


def test_slugs_follow_github():
    assert slug('Input (`job["input"]`)') == "input-jobinput"
    assert slug("Models: fine-tunes, RunPod cached") == "models-fine-tunes-runpod-cached"
