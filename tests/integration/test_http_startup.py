"""The HTTP mode as `make run-http` starts it: /ping answers 204 while the model loads and 200
once it is warm, a speech request streams, and a failed start-up ends the process."""

from __future__ import annotations

import sys
import time

import httpx
import pytest

from f5worker.testing.s3_servers import free_port
from f5worker.testing.worker import ping, spawn

pytestmark = pytest.mark.slow


def test_make_run_http_answers_ping_from_the_start_then_serves(demo_model_dir, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "worker.log"
    cmd = ["make", "--no-print-directory", "run-http", f"PORT={port}"]
    with spawn(cmd, {"MODEL_DIR": str(demo_model_dir), "WORKER_VERSION": "http-1"}, log) as proc:
        seen: list[int] = []
        deadline = time.monotonic() + 240
        while 200 not in seen:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            status = ping(url)
            if status is not None and (not seen or seen[-1] != status):
                seen.append(status)
            time.sleep(0.1)
        assert seen == [204, 200]  # initializing until warm, then healthy
        body = {"input": "Hello.", "response_format": "wav", "quality": "fast"}
        response = httpx.post(f"{url}/v1/audio/speech", json=body, timeout=120)
        assert response.status_code == 200 and response.content[:4] == b"RIFF"
        text = log.read_text()
        assert "ready: " in text and "serving http on 127.0.0.1" in text


def test_a_failed_start_up_makes_ping_unhealthy_and_exits_1(tmp_path):
    port = free_port()
    env = {"MODEL_DIR": str(tmp_path / "missing"), "SERVE_MODE": "http", "PORT": str(port)}
    env["HTTP_HOST"] = "127.0.0.1"
    log = tmp_path / "worker.log"
    with spawn([sys.executable, "model_cache_init.py"], env, log) as proc:
        assert proc.wait(timeout=240) == 1, log.read_text()[-3000:]
    assert "start-up failed" in log.read_text()
