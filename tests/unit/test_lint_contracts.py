"""The layer contract of `make lint` holds for the package and catches a planted upward import."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from f5worker.testing import REPO

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        timeout=300,
    )


@pytest.mark.slow
def test_the_package_keeps_its_layers():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("module", "planted"),
    [
        ("f5worker/engine/chunking.py", "import f5worker.job.schema"),  # engine -> job: upward
        ("f5worker/config/values.py", "from f5worker import startup"),  # config -> startup
        ("f5worker/errors.py", "import f5worker.s3"),  # the bottom layer imports nothing above
    ],
)
def test_a_planted_upward_import_breaks_the_contract(tmp_path, module, planted):
    shutil.copytree(REPO / "f5worker", tmp_path / "f5worker")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{planted}  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
