"""scripts/gpu_proof.py fails loudly: a bad command line, or no CUDA, is an exit code and a line.

Its full CPU dry run (`--dry-run`, about 5 minutes here) is in docs/benchmarks.md; these are the
cheap paths, checked in a subprocess as the script is run.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from f5worker.testing import REPO


def proof(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "scripts/gpu_proof.py", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_out_is_required_and_skipping_tests_is_for_dry_runs_only(tmp_path):
    assert proof().returncode == 2
    result = proof("--out", str(tmp_path / "p.md"), "--skip-pytest")
    assert result.returncode == 2 and "for dry runs" in result.stderr


@pytest.mark.slow
def test_without_cuda_or_time_it_fails_loudly_and_still_writes_its_table(tmp_path):
    """No CUDA here (or, on a GPU machine, a zero budget): exit 1, the reason on stderr and in
    the markdown file, never a silent success."""
    out = tmp_path / "proof.md"
    result = proof("--out", str(out), "--budget-s", "0")
    assert result.returncode == 1
    assert "GPU PROOF FAILED: " in result.stderr
    assert "**FAILED: " in out.read_text()
