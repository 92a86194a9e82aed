"""scripts/deploy.py and scripts/smoke.py against a fake of RunPod's APIs on 127.0.0.1
(f5worker/testing/fake_runpod_api.py), run as an operator runs them: a subprocess with
RUNPOD_API_KEY and the SDK's and REST's base URLs pointed at the fake.

The scenario: a deploy creates the template and endpoint, a second identical deploy changes
nothing and says "unchanged", a changed flag changes only that field (one PATCH), a pool change
goes through GraphQL, secrets travel as RunPod references and the key is printed nowhere; smoke
passes on good audio and fails, with one line and exit 1, on bad audio and HTTP errors.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from f5worker.testing import REPO
from f5worker.testing.fake_runpod_api import FakeRunPod, fake_runpod_api

KEY = "rpa_FAKEKEY0123456789abcdef"
BASE = [
    "--name", "f5-tts", "--image", "docker.io/me/f5-tts-worker", "--version", "v1.4.0",
    "--gpus", "AMPERE_24,ADA_24", "--s3-bucket", "my-bucket", "--s3-region", "eu-west-1",
    "--secret", "AWS_ACCESS_KEY_ID=f5_s3_key_id",
    "--secret", "AWS_SECRET_ACCESS_KEY=f5_s3_secret",
]  # fmt: skip


@pytest.fixture
def fake() -> Iterator[FakeRunPod]:
    with fake_runpod_api(KEY) as server:
        yield server


def run(fake: FakeRunPod, script: str, *args: str, key: str = KEY) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "RUNPOD_API_KEY": key,
        "RUNPOD_API_BASE_URL": fake.url,  # the SDK's GraphQL base
        "RUNPOD_REST_BASE_URL": f"{fake.url}/v1",
        "RUNPOD_ENDPOINT_BASE_URL": f"{fake.url}/v2",  # the SDK's job API base
    }
    cmd = [sys.executable, f"scripts/{script}", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def deploy(fake: FakeRunPod, *args: str) -> subprocess.CompletedProcess:
    result = run(fake, "deploy.py", *args)
    assert KEY not in result.stdout + result.stderr
    return result


@pytest.mark.slow
def test_create_then_unchanged_then_only_the_changed_field(fake):
    first = deploy(fake, *BASE)
    assert first.returncode == 0, first.stderr
    assert fake.mutations() == ["saveTemplate", "saveEndpoint"]
    (ep_id,) = fake.endpoints
    ep = fake.endpoints[ep_id]
    assert (ep["type"], ep["gpuIds"], ep["flashBootType"]) == (
        "QB",
        "AMPERE_24,ADA_24",
        "FLASHBOOT",
    )
    assert f"https://api.runpod.ai/v2/{ep_id}/runsync" in first.stdout
    assert f"https://api.runpod.ai/v2/{ep_id}/run\n" in first.stdout
    assert f"scripts/smoke.py {ep_id}" in first.stdout

    second = deploy(fake, *BASE)
    assert second.returncode == 0, second.stderr
    assert "\nunchanged\n" in second.stdout
    assert fake.mutations() == ["saveTemplate", "saveEndpoint"]  # nothing new

    third = deploy(fake, *BASE, "--workers-max", "5")
    assert third.returncode == 0, third.stderr
    assert "workersMax: 3 -> 5" in third.stdout
    assert fake.mutations()[2:] == [f"PATCH /v1/endpoints/{ep_id}"]
    assert fake.calls[-1][2] == {"workersMax": 5}  # only what differs

    fourth = deploy(fake, *BASE, "--workers-max", "5", "--no-flashboot", "--gpus", "ADA_24")
    assert fourth.returncode == 0, fourth.stderr
    assert fake.endpoints[ep_id]["flashBootType"] == "OFF"
    assert fake.endpoints[ep_id]["gpuIds"] == "ADA_24"
    assert fake.mutations()[3:] == [f"PATCH /v1/endpoints/{ep_id}", "saveEndpoint"]

    image = deploy(fake, *BASE, "--workers-max", "5", "--no-flashboot", "--gpus", "ADA_24",
                   "--version", "v1.5.0")  # fmt: skip
    assert image.returncode == 0, image.stderr
    (tpl_id,) = fake.templates
    assert fake.templates[tpl_id]["imageName"] == "docker.io/me/f5-tts-worker:v1.5.0"
    assert fake.mutations()[5:] == [f"PATCH /v1/templates/{tpl_id}"]
    assert deploy(fake, *BASE, "--workers-max", "5", "--no-flashboot", "--gpus", "ADA_24",
                  "--version", "v1.5.0").stdout.count("unchanged") == 3  # fmt: skip


@pytest.mark.slow
def test_secrets_travel_as_references_and_the_key_is_never_printed(fake):
    result = deploy(
        fake, *BASE, "--model", "hf://someone/F5-xx/ckpts/model.safetensors?vocab=v.txt"
    )
    assert result.returncode == 0, result.stderr
    (tpl,) = fake.templates.values()
    assert tpl["env"]["AWS_SECRET_ACCESS_KEY"] == "{{ RUNPOD_SECRET_f5_s3_secret }}"
    assert tpl["env"]["AWS_ACCESS_KEY_ID"] == "{{ RUNPOD_SECRET_f5_s3_key_id }}"
    assert tpl["env"]["S3_BUCKET"] == "my-bucket" and tpl["env"]["SERVE_MODE"] == "queue"
    assert "Model to someone/F5-xx" in result.stdout  # the cached model, a console step
    # every call carried the key only in its Authorization header
    assert all(KEY not in repr(body) for _, _, body in fake.calls)

    plain = deploy(fake, *BASE, "--env", "HF_TOKEN=hunter2")
    assert plain.returncode == 1 and "by reference" in plain.stderr
    assert "hunter2" not in plain.stdout + plain.stderr

    wrong = run(fake, "deploy.py", *BASE, key="rpa_WRONGKEY_abcdef0123")
    assert wrong.returncode == 1
    assert "rpa_WRONGKEY_abcdef0123" not in wrong.stdout + wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1  # one line, no traceback


@pytest.mark.slow
def test_load_balancing_endpoint_and_a_type_change_is_refused(fake, tmp_path):
    config = tmp_path / "deploy.toml"
    config.write_text(
        'name = "f5-tts-lb"\nimage = "docker.io/me/f5-tts-worker"\nversion = "v1.4.0"\n'
        'mode = "lb"\ngpus = ["ADA_24"]\nworkers_max = 2\nnetwork_volume = "vol123"\n'
        '[secrets]\nHF_TOKEN = "hf_read"\n'
    )
    result = deploy(fake, "--config", str(config))
    assert result.returncode == 0, result.stderr
    (ep_id,) = fake.endpoints
    ep = fake.endpoints[ep_id]
    assert (ep["type"], ep["scalerType"], ep["networkVolumeId"]) == (
        "LB",
        "REQUEST_COUNT",
        "vol123",
    )
    (tpl,) = fake.templates.values()
    assert tpl["env"]["SERVE_MODE"] == "http"
    assert f"https://{ep_id}.api.runpod.ai/v1/audio/speech" in result.stdout
    assert f"https://{ep_id}.api.runpod.ai/ping" in result.stdout
    assert deploy(fake, "--config", str(config)).stdout.endswith(
        f"scripts/smoke.py {ep_id} --mode lb\n"
    )
    queue = deploy(fake, "--config", str(config), "--mode", "queue")
    assert queue.returncode == 1 and "not change an endpoint's type" in queue.stderr


@pytest.mark.slow
def test_smoke_queue_passes_on_good_audio_and_fails_on_bad(fake):
    good = run(fake, "smoke.py", "ep1")
    assert good.returncode == 0 and good.stdout.startswith("PASS queue ep1: wav 24000 Hz 1.50 s")

    fake.job_output = lambda _: [{"audio_base64": base64.b64encode(b"not audio").decode(),
                                  "sample_rate": 24000, "duration_s": 1.0}]  # fmt: skip
    bad = run(fake, "smoke.py", "ep1")
    assert bad.returncode == 1 and "does not decode" in bad.stdout

    from f5worker.testing.fake_runpod_api import good_job_output

    fake.job_output = lambda job: [{**good_job_output(job)[0], "sample_rate": 44100}]
    liar = run(fake, "smoke.py", "ep1")
    assert liar.returncode == 1 and "decoded 24000 Hz, reported 44100" in liar.stdout

    fake.job_status = "FAILED"
    failed = run(fake, "smoke.py", "ep1")
    assert failed.returncode == 1 and failed.stdout.startswith("FAIL")

    fake.job_status, fake.runsync_http_status = "COMPLETED", 500
    http = run(fake, "smoke.py", "ep1")
    assert http.returncode == 1 and "HTTPError" in http.stdout
    assert KEY not in http.stdout + http.stderr
    assert len(http.stdout.strip().splitlines()) == 1


@pytest.mark.slow
def test_smoke_load_balancing_pings_then_checks_the_speech(fake):
    lb = ["--mode", "lb", "--lb-base-url", f"{fake.url}/lb/ep9", "--ping-wait", "4"]
    fake.ping_statuses = [204, 204]  # starting, then healthy
    good = run(fake, "smoke.py", "ep9", *lb)
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.startswith("PASS lb ep9: wav 24000 Hz 1.00 s")
    assert [p for m, p, _ in fake.calls if m == "GET"] == ["/lb/ep9/ping"] * 3

    rate = run(fake, "smoke.py", "ep9", *lb, "--sample-rate", "48000")
    assert rate.returncode == 1 and "expected 48000" in rate.stdout

    fake.speech_body = lambda _: b"RIFF garbage"
    assert "does not decode" in run(fake, "smoke.py", "ep9", *lb).stdout

    fake.speech_http_status = 503
    http = run(fake, "smoke.py", "ep9", *lb)
    assert http.returncode == 1 and "answered 503" in http.stdout

    fake.ping_statuses = [204] * 10
    slow = run(fake, "smoke.py", "ep9", *lb[:-1], "1")
    assert slow.returncode == 1 and "still 204" in slow.stdout
