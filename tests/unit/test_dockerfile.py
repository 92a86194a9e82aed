"""The Dockerfile, the locks and the flash-attn selection agree on one torch; hadolint is clean.

The full build runs in `make container-test` (buildah); these are the fast, static checks.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys

import pytest

from f5worker.startup.flash_attn_install import RECORD, RECORD_KEYS
from f5worker.startup.flash_attn_wheels import TorchBuild, select_wheel
from f5worker.testing import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()
LINES = DOCKERFILE.replace("\\\n", " ").splitlines()  # continuation lines joined
INSTRUCTIONS = [
    line.strip() for line in LINES if line.strip() and not line.lstrip().startswith("#")
]
BASE = re.search(r"^ARG BASE_IMAGE=(\S+)$", DOCKERFILE, re.M).group(1)
BASE_TAG = re.fullmatch(
    r"runpod/pytorch:(?P<torch>[\d.]+)-py(?P<py>[\d.]+)-cuda(?P<cuda>[\d.]+)-devel-ubuntu22\.04",
    BASE,
)
SECRET_WORDS = ("SECRET", "TOKEN", "PASSWORD", "KEY", "CREDENTIAL", "AUTH")


def pins(path: str) -> dict[str, str]:
    text = (REPO / path).read_text()
    return {m[0].lower(): m[1] for m in re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)", text, re.M)}


@pytest.mark.slow
def test_hadolint_passes():
    done = subprocess.run(
        [str(REPO / ".venv/bin/hadolint"), "Dockerfile"], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_base_image_torch_is_the_lock_s_torch():
    """requirements.txt is resolved against constraints-image.txt, which names the image's torch."""
    assert BASE_TAG, BASE
    image = pins("constraints-image.txt")
    assert image["torch"] == BASE_TAG["torch"] == "2.4.0"
    assert image["torchaudio"] == BASE_TAG["torch"]
    assert BASE_TAG["py"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    dev = pins("requirements-dev.txt")  # the tests run the same torch minor as the image
    assert dev["torch"].rsplit(".", 1)[0] == image["torch"].rsplit(".", 1)[0]


def test_image_lock_leaves_the_image_s_packages_alone():
    runtime = pins("requirements.txt")
    owned = {"torch", "torchaudio", "triton"} | {p for p in runtime if p.startswith("nvidia-")}
    assert not owned & set(runtime), owned & set(runtime)
    assert runtime["f5-tts"] and runtime["runpod"]


def test_flash_attn_selection_for_the_image_is_a_torch_24_cu12_wheel():
    py = "cp" + BASE_TAG["py"].replace(".", "")
    cuda = ".".join(BASE_TAG["cuda"].split(".")[:2])
    image = TorchBuild(f"{BASE_TAG['torch']}+cu124", cuda, False, py, "linux_x86_64", True)
    wheel = select_wheel(image)
    assert wheel.name == (
        f"flash_attn-2.7.4.post1+cu{cuda.split('.')[0]}torch2.4cxx11abiFALSE-{py}-{py}"
        "-linux_x86_64.whl"
    )


@pytest.mark.slow
def test_requirements_resolve_with_the_image_torch_as_a_constraint(tmp_path):
    """The Dockerfile's install, resolved here: it can never replace the image's torch."""
    done = subprocess.run(
        [
            str(REPO / ".venv/bin/uv"),
            "pip",
            "compile",
            "--quiet",
            "--no-header",
            "--python-version",
            "3.11",
            "--python-platform",
            "x86_64-manylinux_2_28",
            "--override",
            "overrides.txt",
            "--constraint",
            "constraints-image.txt",
            "requirements.txt",
            "-o",
            str(tmp_path / "resolved.txt"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    resolved = {
        m[0].lower(): m[1]
        for m in re.findall(
            r"^([A-Za-z0-9_.-]+)==(\S+)", (tmp_path / "resolved.txt").read_text(), re.M
        )
    }
    image = pins("constraints-image.txt")
    assert resolved["torch"] == image["torch"] and resolved["torchaudio"] == image["torchaudio"]
    locked = pins("requirements.txt")
    changed = {p: (v, resolved.get(p)) for p, v in locked.items() if resolved.get(p) != v}
    assert not changed, f"the lock does not resolve as locked: {changed}"


@pytest.mark.slow
def test_install_step_reads_torch_from_the_installed_packages():
    """The constraint comes from the image's installed torch (its tag has carried other builds)."""
    snippet = re.search(r'python -c "(import importlib\.metadata as m;[^"]+)"', DOCKERFILE).group(1)
    done = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True)
    installed = [f"{p}=={importlib.metadata.version(p)}" for p in ("torch", "torchaudio")]
    assert done.stdout.split() == installed
    assert "--constraint /tmp/image-torch.txt" in DOCKERFILE
    assert "--override overrides.txt" in DOCKERFILE


def requirement_block(path: str, name: str) -> tuple[str, set[str]]:
    """(version, hashes) of one `name==version --hash=...` entry of a hashed requirements file."""
    text = (REPO / path).read_text()
    match = re.search(rf"^{name}==(\S+)((?:\s*\\\n\s+--hash=sha256:[0-9a-f]{{64}})+)", text, re.M)
    assert match, f"{path} has no hashed {name} entry"
    return match[1], set(re.findall(r"--hash=sha256:([0-9a-f]{64})", match[2]))


def test_uv_is_installed_by_hash_with_the_dev_lock_s_version_and_hashes():
    version, hashes = requirement_block("requirements-uv.txt", "uv")
    assert (version, hashes) == requirement_block("requirements-dev.txt", "uv")
    assert len(hashes) > 1
    install = next(i for i in INSTRUCTIONS if "install" in i and "requirements-uv.txt" in i)
    assert "python -m pip install --no-cache-dir --require-hashes -r requirements-uv.txt" in install
    assert not re.search(r"install[^&]*\buv==", DOCKERFILE)  # never by version alone
    assert not dockerignored("requirements-uv.txt")


def test_runs_as_the_non_root_worker_that_owns_its_caches():
    users = [i.split()[1] for i in INSTRUCTIONS if i.startswith("USER ")]
    assert users == ["1000:1000"]  # numeric: checkable without the image's /etc/passwd
    assert INSTRUCTIONS.index("USER 1000:1000") > max(
        n for n, i in enumerate(INSTRUCTIONS) if i.startswith("RUN ")
    )  # every build step before it runs as root; the worker only runs the CMD
    assert "useradd --uid 1000 --user-group --create-home" in DOCKERFILE
    env = dict(re.findall(r"(\w+)=(\S+)", next(i for i in INSTRUCTIONS if "MODEL_CACHE_DIR" in i)))
    assert env["MODEL_CACHE_DIR"] == "/tmp/models" and env["HF_HOME"] == "/tmp/hf-home"
    # made after the optional model bake (fetched as root: the store refuses a dir another uid
    # owns), in the same layer, so the model is not stored twice
    bake_model = " ".join(next(i for i in INSTRUCTIONS if "--fetch-model" in i).split())
    assert bake_model.endswith(
        'fi && install -d -o worker -g worker "${MODEL_CACHE_DIR}" "${HF_HOME}" '
        '&& chown -R worker:worker "${MODEL_CACHE_DIR}"'
    )
    assert "ENV HOME=/home/worker" in INSTRUCTIONS


def test_flash_attn_is_baked_by_default_and_recorded_for_the_labels():
    assert "ARG FLASH_ATTN_BAKE=auto" in INSTRUCTIONS
    [bake] = [i for i in INSTRUCTIONS if i.startswith("RUN") and "flash_attn_bake" in i]
    assert bake.startswith("RUN python -m f5worker.startup.flash_attn_bake")
    assert f"--record {RECORD}" in bake  # build.sh reads the same path back
    build_sh = (REPO / "scripts" / "build.sh").read_text()
    assert f"record={RECORD}" in build_sh
    assert 'wheel | sha256 | trust | reason) labels+=("org.f5worker.flash-attn.$key' in build_sh
    assert 'labels+=("org.f5worker.flash-attn.url=$value")' in build_sh
    # what build.sh labels (tests/unit/test_dockerfile_build_script.py runs it) is what is recorded
    assert set(RECORD_KEYS) == {"status", "wheel", "sha256", "source", "trust", "torch", "reason"}


def test_requirements_are_copied_before_the_code():
    copies = [i for i in INSTRUCTIONS if i.startswith("COPY ")]
    assert copies[0].startswith("COPY requirements.txt")
    assert copies.index(next(c for c in copies if "*.py" in c)) > 0


def test_no_secrets_in_args_or_env():
    names = re.findall(r"^(?:ARG|ENV)\s+(.+)$", "\n".join(INSTRUCTIONS), re.M)
    declared = [n.split("=")[0] for line in names for n in line.split() if "=" in n or n.isupper()]
    assert declared
    leaked = [n for n in declared if any(w in n.upper() for w in SECRET_WORDS)]
    assert not leaked, f"pass these as build secrets (--secret id=...), not ARG/ENV: {leaked}"
    assert "--mount=type=secret,id=hf_token" in DOCKERFILE


def test_stamp_cmd_and_no_heredocs():
    for label in ("version", "revision", "created", "source"):
        assert f"org.opencontainers.image.{label}=" in DOCKERFILE
    assert "WORKER_VERSION=${WORKER_VERSION}" in DOCKERFILE
    assert INSTRUCTIONS[-1] == 'CMD ["python", "-u", "model_cache_init.py"]'
    assert "<<" not in DOCKERFILE  # buildah 1.28 (Debian bookworm) has no heredoc RUN
    assert "HEALTHCHECK" not in DOCKERFILE  # RunPod does not use it


def _glob(pattern: str) -> re.Pattern[str]:
    """Go's filepath.Match, as Docker uses it: `*` and `?` stay within one path segment."""
    out = ""
    for token in re.split(r"(\*\*|\*|\?)", pattern):
        out += {"**": ".*", "*": "[^/]*", "?": "[^/]"}.get(token, re.escape(token))
    return re.compile(out)


def dockerignored(path: str) -> bool:
    """Docker's rule: a pattern matches the path or any directory above it; the last matching
    pattern wins; `!` re-includes."""
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        regex = _glob(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


@pytest.mark.parametrize(
    ("path", "ignored"),
    [
        ("requirements.txt", False),
        ("requirements-uv.txt", False),
        ("overrides.txt", False),
        ("model_cache_init.py", False),
        ("test_input.json", False),
        (".venv", True),
        (".git", True),
        ("tests", True),
        ("requirements-dev.txt", True),
        ("__pycache__", True),
        ("f5worker/config.py", False),
        ("f5worker/job/worker.py", False),
        ("f5worker/testing/worker.py", True),
        ("f5worker/job/__pycache__/worker.cpython-311.pyc", True),
        ("scripts/build.sh", True),
    ],
)
def test_build_context_holds_only_what_the_image_needs(path, ignored):
    assert dockerignored(path) is ignored


def test_every_copied_file_is_in_the_context():
    for line in (i for i in INSTRUCTIONS if i.startswith("COPY ")):
        for source in line.split()[1:-1]:
            matches = [p.relative_to(REPO).as_posix() for p in REPO.glob(source.rstrip("/"))]
            assert matches, source
            assert not any(dockerignored(m) for m in matches), source
