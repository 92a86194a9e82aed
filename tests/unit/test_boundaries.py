"""Module boundaries of docs/design.md, "Layout and boundaries", checked in fresh interpreters.

- only the engine, the job worker that drives it, the demo model generator and test support
  import torch;
- the engine imports no S3 code;
- the worker never imports its test support;
- importing any module reads no environment variable and writes nothing.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import f5worker
from f5worker.testing import REPO

ENTRY_POINTS = ["handler", "model_cache_init", "s3_utils"]
MODULES = sorted(m.name for m in pkgutil.walk_packages(f5worker.__path__, "f5worker."))
# The engine and what drives it (the job worker and its adapter) import torch; nothing else may.
TORCH_USERS = (
    "f5worker.engine",
    "f5worker.job.worker",
    "f5worker.job.batch",  # the worker's batch path (the engine's plan and lines)
    "f5worker.startup.compose",  # the composition root loads the engine
    "f5worker.models.demo",
    "f5worker.testing",
)
LIGHT = [m for m in MODULES if not m.startswith(TORCH_USERS)] + ["s3_utils", "model_cache_init"]


def run_python(code: str, cwd: Path = REPO, env: dict[str, str] | None = None):
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, env=env
    )


def test_the_package_has_one_place_per_stage():
    stages = {m.split(".")[1] for m in MODULES if m.count(".") >= 2}
    # config is no stage: the settings (table, readers, Settings), a package only for its size.
    assert stages == {"asr", "config", "engine", "job", "models", "serve", "startup", "testing"}
    top_level = sorted(p.stem for p in REPO.glob("*.py"))
    assert top_level == sorted(ENTRY_POINTS)


@pytest.mark.slow
@pytest.mark.parametrize("module", LIGHT)
def test_light_modules_never_import_torch(module):
    result = run_python(f"import sys, {module}; sys.exit(1 if 'torch' in sys.modules else 0)")
    assert result.returncode == 0, f"{module} imports torch\n{result.stderr[-2000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("module", ["f5worker.engine.f5tts", "f5worker.engine.sampler"])
def test_the_engine_imports_no_s3_code(module):
    code = f"import sys, {module}; sys.exit(1 if {{'boto3', 'botocore'}} & set(sys.modules) else 0)"
    result = run_python(code)
    assert result.returncode == 0, f"{module} imports boto3\n{result.stderr[-2000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("module", [*ENTRY_POINTS, "f5worker.startup.main"])
def test_the_worker_never_imports_its_test_support(module):
    code = f"import sys, {module}; sys.exit(1 if 'f5worker.testing' in sys.modules else 0)"
    assert run_python(code).returncode == 0


# Replaces os.environ before the import; any read whose nearest caller outside the standard
# library's os machinery is a file under ROOT is recorded, and the run fails listing them.
TRIPWIRE = textwrap.dedent(
    """
    import collections.abc, os, sys
    ROOT, MODULE = sys.argv[1], sys.argv[2]
    SKIP = (os.__file__, "<frozen os>", collections.abc.__file__, "<frozen _collections_abc>")
    reads = []

    class Tripwire(collections.abc.MutableMapping):
        def __init__(self, data):
            self._data = dict(data)
        def _check(self, key):
            frame = sys._getframe(2)
            while frame and frame.f_code.co_filename in SKIP:
                frame = frame.f_back
            if frame and frame.f_code.co_filename.startswith(ROOT):
                reads.append(f"{frame.f_code.co_filename}:{frame.f_lineno} reads {key}")
        def __getitem__(self, key):
            self._check(key)
            return self._data[key]
        def __setitem__(self, key, value):
            self._data[key] = value
        def __delitem__(self, key):
            del self._data[key]
        def __iter__(self):
            self._check("*")
            return iter(self._data)
        def __len__(self):
            return len(self._data)
        def copy(self):
            return dict(self._data)

    os.environ = Tripwire(os.environ)
    __import__(MODULE)
    if reads:
        sys.exit("\\n".join(reads))
    """
)


def check_import(module: str, cwd: Path, root: Path, tmp_path: Path):
    """Import module under the tripwire, with HOME and TMPDIR pointing into tmp_path."""
    env = {"HOME": str(tmp_path), "TMPDIR": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    env["PATH"] = "/usr/bin:/bin"
    return subprocess.run(
        [sys.executable, "-c", TRIPWIRE, str(root), module],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
    )


@pytest.mark.slow
@pytest.mark.parametrize("module", [*MODULES, *ENTRY_POINTS])
def test_imports_do_no_work(module, tmp_path):
    """Importing reads no environment variable and writes nothing."""
    result = check_import(module, REPO, REPO / "f5worker", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    if module in ENTRY_POINTS:
        result = check_import(module, REPO, REPO / f"{module}.py", tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
    assert not [p for p in tmp_path.iterdir() if p.name != ".cache"]


@pytest.mark.slow
def test_the_import_check_catches_an_environment_read(tmp_path):
    pkg = tmp_path / "planted"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import os\nLEVEL = os.environ.get('LOG_LEVEL', 'INFO')\n")
    (pkg / "quiet.py").write_text("import os\n\ndef level():\n    return os.getenv('X')\n")
    home = tmp_path / "home"
    home.mkdir()
    assert check_import("planted.quiet", tmp_path, pkg, home).returncode != 0
    result = check_import("planted", tmp_path, pkg, home)
    assert result.returncode != 0 and "reads LOG_LEVEL" in result.stderr
