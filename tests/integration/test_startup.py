"""The start command as a process: --diagnose, fail-fast on missing functions, the timeline, and
`python handler.py` (the SDK's one-shot local test with test_input.json)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from f5worker.testing import REPO
from f5worker.testing.worker import running_worker

pytestmark = pytest.mark.slow

FAKE_SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAFAKEACCESSKEY0001",
    "AWS_SECRET_ACCESS_KEY": "fake-aws-secret-never-logged-0001",
    "BUCKET_ACCESS_KEY_ID": "fake-bucket-key-id-0002",
    "BUCKET_SECRET_ACCESS_KEY": "fake-bucket-secret-never-logged-0002",
    "HF_TOKEN": "hf_fakeTokenNeverLogged0003",
    "S3_BUCKET": "fake-bucket",
    "S3_ENDPOINT_URL": "https://fakeuser:fake-url-password-0004@127.0.0.1:9",
}
SECRET_VALUES = [v for k, v in FAKE_SECRETS.items() if k != "S3_BUCKET"]
SECRET_VALUES += ["fake-url-password-0004", "fakeuser"]


def run_init(args: list[str], env: dict[str, str], cwd: Path = REPO, timeout: float = 180):
    return subprocess.run(
        [sys.executable, "model_cache_init.py", *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def copy_worker(dest: Path) -> None:
    """The entry points and the package, as the image holds them."""
    for source in REPO.glob("*.py"):
        shutil.copy(source, dest)
    shutil.copytree(REPO / "f5worker", dest / "f5worker", ignore=shutil.ignore_patterns("testing"))


def test_diagnose_prints_the_report_and_never_a_secret(tmp_path):
    done = run_init(["--diagnose"], {**FAKE_SECRETS, "MODEL_CACHE_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    facts = dict(line.split("=", 1) for line in done.stdout.splitlines())
    assert facts["diag.functions.s3_utils"] == "ok"
    assert facts["diag.torch"].startswith("2.4")
    assert "AWS_SECRET_ACCESS_KEY=<redacted>" in facts["diag.env"]
    assert "S3_ENDPOINT_URL=https://127.0.0.1:9 " in facts["diag.env"] + " "
    for secret in SECRET_VALUES:
        assert secret not in done.stdout and secret not in done.stderr


def test_code_from_an_old_build_fails_fast_naming_what_is_missing(tmp_path):
    """The seed: an image built from old code lacked sync_models_from_s3."""
    copy_worker(tmp_path)
    (tmp_path / "s3_utils.py").write_text(
        textwrap.dedent("""
            def download_from_s3(client, bucket, key, dest): ...
            def upload_to_s3(client, path, bucket, key): ...
        """)
    )
    started = time.monotonic()
    done = run_init([], {"MODEL_CACHE_DIR": str(tmp_path / "models")}, cwd=tmp_path)
    assert done.returncode == 1
    assert time.monotonic() - started < 60
    assert (
        "missing functions: s3_utils.sync_models_from_s3,s3_utils.upload_models_to_s3"
        in done.stderr
    )
    assert "step import" not in done.stderr  # failed before torch/f5-tts and the model


def test_diagnose_exits_1_on_missing_functions(tmp_path):
    copy_worker(tmp_path)
    (tmp_path / "handler.py").write_text("def build_worker(): ...\n")
    done = run_init(["--diagnose"], {"MODEL_CACHE_DIR": str(tmp_path / "m")}, cwd=tmp_path)
    assert done.returncode == 1
    assert "diag.functions.handler=handler.start_sdk" in done.stdout


STEPS = ("diagnostics", "flash_attn", "model", "import", "engine")


def test_start_up_timeline_and_cpu_flash_attn_skip(tmp_path):
    log_path = tmp_path / "worker.log"
    env = {"MODEL_CACHE_DIR": str(tmp_path / "models"), "MODEL_NAME": "demo", **FAKE_SECRETS}
    for key in ("S3_BUCKET", "S3_ENDPOINT_URL"):  # no S3 for this one
        env.pop(key)
    with running_worker(env, log_path):
        pass
    lines = log_path.read_text().splitlines()
    positions = [
        next(i for i, line in enumerate(lines) if f"step {step} took " in line) for step in STEPS
    ]
    # diagnostics first, engine last; the model step runs beside flash_attn and import.
    assert positions[0] == min(positions) and positions[-1] == max(positions)
    [ready] = [line for line in lines if " ready: total=" in line]
    assert lines.index(ready) > positions[-1]
    for step in STEPS:
        assert re.search(rf" {step}=[\d.]+s", ready), step
    # The demo model's step waits for the f5-tts import the main thread does: nothing really
    # ran side by side, and the line must not claim otherwise.
    saved = re.search(r"total=[\d.]+s .* overlap_saved=([\d.]+)s", ready)
    assert saved and float(saved.group(1)) < 1.0, ready
    assert "attn=torch" in ready
    flash = [line for line in lines if " f5worker.startup.flash_attn: " in line]
    assert len(flash) == 1 and " INFO " in flash[0] and "skipped" in flash[0]
    text = "\n".join(lines)
    for secret in SECRET_VALUES:
        assert secret not in text


def test_python_handler_py_runs_test_input_json_once(tmp_path):
    """RunPod's local-test convention: `python handler.py` answers test_input.json and exits."""
    done = subprocess.run(
        [sys.executable, "handler.py"],
        cwd=REPO,
        env={**os.environ, "MODEL_NAME": "demo", "MODEL_CACHE_DIR": str(tmp_path / "models")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "Using test_input.json as job input" in output
    assert "completed successfully" in output
    assert "'audio_base64': 'UklGR" in output  # a RIFF/WAV payload
