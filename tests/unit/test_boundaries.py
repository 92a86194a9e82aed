"""Module boundaries of DESIGN.md section 1, checked in fresh interpreters."""

import subprocess
import sys

import pytest

from tests.conftest import REPO

LIGHT = [
    "config",
    "errors",
    "schema",
    "s3_utils",
    "manifest",
    "model_spec",
    "audio",
    "voices",
    "diagnostics",
    "model_source",
    "log_setup",
    "flash_attn_setup",
    "fetch",
    "output",
    "openai_compat",
    "hub",
    "local_cache",
    "ranged_download",
]


@pytest.mark.parametrize("module", LIGHT)
def test_light_modules_never_import_torch(module):
    code = f"import sys, {module}; sys.exit(1 if 'torch' in sys.modules else 0)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, f"{module} imports torch\n{result.stderr[-2000:]}"


@pytest.mark.parametrize("module", [*LIGHT, "engine", "handler", "model_cache_init"])
def test_imports_do_no_work(module, tmp_path):
    """Importing reads no environment and writes nothing."""
    code = f"import os, sys; os.environ.clear(); import {module}; sys.exit(0)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={
            "HOME": str(tmp_path),
            "TMPDIR": str(tmp_path),
            "HF_HUB_OFFLINE": "1",
            "PATH": "/usr/bin:/bin",
        },
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert not [p for p in tmp_path.iterdir() if p.name != ".cache"]
