"""scripts/build.sh: the version stamp, the dirty-tree refusal, and the choice of builder.

Runs the real script in a scratch git repo with fake `docker` / `buildah` programs on PATH that
record their arguments (no engine exists here; the real build is `make container-test`).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from f5worker.testing import REPO

pytestmark = pytest.mark.slow  # starts a server or a Python process

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}


def fake_tool(bin_dir: Path, name: str, engine_up: bool, record: Path) -> None:
    """Records `name ARGS...` per call; `docker info` fails unless an engine is 'up'."""
    script = bin_dir / name
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = info ]; then exit {0 if engine_up else 1}; fi\n'
        f'printf "%s\\n" "{name}" "$@" > "{record}"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "build.sh", root / "scripts" / "build.sh")
    (root / "Dockerfile").write_text("FROM scratch\n")
    git(root, "init", "-q")
    git(root, "remote", "add", "origin", "https://user:ghp_tokenvalue@github.com/acme/f5.git")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "init")
    git(root, "tag", "v1.2.3")
    return root


def git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=root,
        env={**os.environ, **GIT_ENV},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


# What build.sh runs besides the builders; PATH holds only these, so a real docker or buildah
# on this machine can never be reached from a test.
TOOLS = ("git", "sed", "date", "dirname")


def build(repo: Path, tmp_path: Path, *args: str, docker_up: bool = True, buildah: bool = True):
    bin_dir = tmp_path / "bin"
    if not bin_dir.exists():
        bin_dir.mkdir()
        for tool in TOOLS:
            (bin_dir / tool).symlink_to(shutil.which(tool))
    record = tmp_path / "called.txt"
    record.unlink(missing_ok=True)
    fake_tool(bin_dir, "docker", docker_up, record)
    if buildah:
        fake_tool(bin_dir, "buildah", True, record)
    done = subprocess.run(
        [shutil.which("bash"), "scripts/build.sh", *args],
        cwd=repo,
        env={**os.environ, **GIT_ENV, "PATH": str(bin_dir)},
        capture_output=True,
        text=True,
    )
    called = record.read_text().splitlines() if record.exists() else []
    return done, called


def build_args(called: list[str]) -> dict[str, str]:
    pairs = itertools.pairwise(called)
    return dict(v.split("=", 1) for flag, v in pairs if flag == "--build-arg")


def test_clean_tree_is_stamped_everywhere(repo, tmp_path):
    done, called = build(repo, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "f5-tts-worker:v1.2.3"
    assert called[:2] == ["docker", "build"]
    args = build_args(called)
    assert args["WORKER_VERSION"] == "v1.2.3"
    assert args["GIT_SHA"] == git(repo, "rev-parse", "HEAD")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", args["BUILD_DATE"])
    assert args["SOURCE_URL"] == "https://github.com/acme/f5.git"  # the token is stripped
    assert called[called.index("--tag") + 1] == "f5-tts-worker:v1.2.3"
    assert called[-1] == "."


def test_version_after_a_tag_names_the_commit(repo, tmp_path):
    (repo / "handler.py").write_text("# change\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "change")
    done, called = build(repo, tmp_path)
    version = build_args(called)["WORKER_VERSION"]
    assert re.fullmatch(r"v1\.2\.3-1-g[0-9a-f]{7,}", version)
    assert done.stdout.strip().endswith(f"f5-tts-worker:{version}")


def test_dirty_tree_is_refused(repo, tmp_path):
    (repo / "Dockerfile").write_text("FROM scratch\nLABEL x=1\n")
    done, called = build(repo, tmp_path)
    assert done.returncode == 1
    assert "refusing to build uncommitted changes (version v1.2.3-dirty)" in done.stderr
    assert called == []


def test_dirty_tree_builds_when_asked_and_says_so(repo, tmp_path):
    (repo / "Dockerfile").write_text("FROM scratch\nLABEL x=1\n")
    done, called = build(repo, tmp_path, "--allow-dirty", "--image", "reg/f5")
    assert done.returncode == 0, done.stderr
    assert build_args(called)["WORKER_VERSION"] == "v1.2.3-dirty"
    assert done.stdout.strip().splitlines()[-1] == "reg/f5:v1.2.3-dirty"


def test_buildah_without_a_docker_engine(repo, tmp_path):
    done, called = build(repo, tmp_path, "--", "--build-arg", "BAKE_MODEL=demo", docker_up=False)
    assert done.returncode == 0, done.stderr
    assert called[:4] == ["buildah", "bud", "--format", "docker"]
    assert build_args(called)["BAKE_MODEL"] == "demo"


def test_no_builder_at_all_is_an_error(repo, tmp_path):
    done, _ = build(repo, tmp_path, docker_up=False, buildah=False)
    assert done.returncode == 1
    assert "no Docker engine answers and buildah is not installed" in done.stderr


def test_unknown_argument(repo, tmp_path):
    done, _ = build(repo, tmp_path, "--bogus")
    assert done.returncode == 2 and "unknown argument --bogus" in done.stderr
