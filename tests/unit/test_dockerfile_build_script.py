"""scripts/build.sh: the version stamp, the dirty-tree refusal, the choice of builder, and the
flash-attn labels it adds from the bake step's record.

Runs the real script in a scratch git repo with fake `docker` / `buildah` programs on PATH that
record their arguments, answer `run ... cat RECORD` with a given record and keep the Dockerfile
of the label build (no engine exists here; the real build is `make container-test`).
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

RECORD_PATH = "/etc/f5worker/flash-attn-wheel.env"

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}


SHA = "ab" * 32
WHEEL = "flash_attn-2.7.4.post1+cu12torch2.4cxx11abiFALSE-cp311-cp311-linux_x86_64.whl"
URL = f"https://github.com/Dao-AILab/flash-attention/releases/download/v2.7.4.post1/{WHEEL}"
BAKED = (
    f"status=baked\nwheel={WHEEL}\nsha256={SHA}\nsource={URL}\ntrust=first-use\ntorch=2.4.0+cu124\n"
)
END = "@@end@@"


def fake_tool(bin_dir: Path, name: str, engine_up: bool, record: Path) -> None:
    """Appends `name ARGS... END` per call; `docker info` fails unless an engine is 'up'; `run`
    prints $FAKE_RECORD; `from` names a container; a build of a directory other than `.` (the
    label build) leaves its Dockerfile in $LABEL_DOCKERFILE."""
    script = bin_dir / name
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = info ]; then exit {0 if engine_up else 1}; fi\n'
        f'printf "%s\\n" "{name}" "$@" "{END}" >> "{record}"\n'
        'case "$1" in\n'
        '  run) cat "$FAKE_RECORD" ;;\n'
        "  from) echo ctr-1 ;;\n"
        "  build | bud)\n"
        "    for last; do :; done\n"
        '    if [ "$last" != . ]; then cp "$last/Dockerfile" "$LABEL_DOCKERFILE"; fi ;;\n'
        "esac\n"
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
TOOLS = ("git", "sed", "date", "dirname", "cat", "cp", "mktemp", "rm")


class Built:
    """What one build.sh run did: its process, every builder call, the label Dockerfile."""

    def __init__(self, done: subprocess.CompletedProcess, calls: list[list[str]], labels: str):
        self.done, self.calls, self.labels_dockerfile = done, calls, labels

    @property
    def labels(self) -> dict[str, str]:
        """The LABEL line of the label build, parsed."""
        line = next(x for x in self.labels_dockerfile.splitlines() if x.startswith("LABEL"))
        return dict(re.findall(r'"([^"]+)"="([^"]*)"', line))


def build_full(
    repo: Path,
    tmp_path: Path,
    *args: str,
    docker_up: bool = True,
    buildah: bool = True,
    record_text: str = BAKED,
) -> Built:
    bin_dir = tmp_path / "bin"
    if not bin_dir.exists():
        bin_dir.mkdir()
        for tool in TOOLS:
            (bin_dir / tool).symlink_to(shutil.which(tool))
    record = tmp_path / "called.txt"
    record.unlink(missing_ok=True)
    fake_record, label_dockerfile = tmp_path / "record.env", tmp_path / "label.Dockerfile"
    fake_record.write_text(record_text)
    label_dockerfile.unlink(missing_ok=True)
    fake_tool(bin_dir, "docker", docker_up, record)
    if buildah:
        fake_tool(bin_dir, "buildah", True, record)
    env = {
        **os.environ,
        **GIT_ENV,
        "PATH": str(bin_dir),
        "FAKE_RECORD": str(fake_record),
        "LABEL_DOCKERFILE": str(label_dockerfile),
    }
    done = subprocess.run(
        [shutil.which("bash"), "scripts/build.sh", *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
    )
    calls: list[list[str]] = [[]]
    for line in record.read_text().splitlines() if record.exists() else []:
        if line == END:
            calls.append([])
        else:
            calls[-1].append(line)
    labels = label_dockerfile.read_text() if label_dockerfile.exists() else ""
    return Built(done, [c for c in calls if c], labels)


def build(repo: Path, tmp_path: Path, *args: str, docker_up: bool = True, buildah: bool = True):
    """The process and the main build's arguments."""
    built = build_full(repo, tmp_path, *args, docker_up=docker_up, buildah=buildah)
    return built.done, (built.calls[0] if built.calls else [])


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


def test_the_baked_wheel_becomes_labels_through_a_second_build(repo, tmp_path):
    built = build_full(repo, tmp_path)
    assert built.done.returncode == 0, built.done.stderr
    tag = "f5-tts-worker:v1.2.3"
    steps = [c[:2] for c in built.calls]
    assert steps == [["docker", "build"], ["docker", "run"], ["docker", "build"]]
    assert built.calls[1] == ["docker", "run", "--rm", "--entrypoint", "cat", tag, RECORD_PATH]
    label_build = built.calls[2]
    assert label_build[label_build.index("--tag") + 1] == tag  # the same tag, now labelled
    assert built.labels_dockerfile.splitlines()[0] == f"FROM {tag}"
    assert built.labels == {
        "org.f5worker.flash-attn.wheel": WHEEL,
        "org.f5worker.flash-attn.sha256": SHA,
        "org.f5worker.flash-attn.url": URL,
        "org.f5worker.flash-attn.trust": "first-use",
    }
    assert built.done.stdout.strip().splitlines()[-1] == tag


def test_labels_with_buildah_read_the_record_from_a_container(repo, tmp_path):
    built = build_full(repo, tmp_path, docker_up=False)
    assert built.done.returncode == 0, built.done.stderr
    tag = "f5-tts-worker:v1.2.3"
    assert built.calls[1] == ["buildah", "from", "--pull-never", tag]
    assert built.calls[2] == ["buildah", "run", "ctr-1", "--", "cat", RECORD_PATH]
    assert built.calls[3] == ["buildah", "rm", "ctr-1"]
    assert built.calls[4][:4] == ["buildah", "bud", "--format", "docker"]
    assert built.labels["org.f5worker.flash-attn.sha256"] == SHA


def test_nothing_baked_is_labelled_as_such(repo, tmp_path):
    reason = "torch 2.4.1+cpu is a CPU build, nothing to bake"
    built = build_full(repo, tmp_path, record_text=f"status=none\nreason={reason}\n")
    assert built.done.returncode == 0, built.done.stderr
    assert built.labels == {
        "org.f5worker.flash-attn.wheel": "none",
        "org.f5worker.flash-attn.reason": reason,
    }


@pytest.mark.parametrize(
    "record_text",
    [
        "",  # the image has no record: not built by this Dockerfile's bake step
        f'status=baked\nwheel={WHEEL}" evil="1\n',  # never a quote into a LABEL line
        "status=baked\nsha256=$(id)\n",
    ],
)
def test_a_missing_or_odd_record_fails_the_build(repo, tmp_path, record_text):
    built = build_full(repo, tmp_path, record_text=record_text)
    assert built.done.returncode == 1
    assert "build.sh: unexpected line" in built.done.stderr
    assert built.labels_dockerfile == ""
