"""The pure parts of scripts/deploy.py and scripts/smoke.py: the input, the diff, the URLs,
redaction and the audio checks (the scenario against the fake API: tests/integration/
test_deploy.py)."""

from __future__ import annotations

import base64
import sys

import pytest

from f5worker.job.stream_codecs import wav_header
from f5worker.testing import REPO
from f5worker.testing.audio import noise, wav_b64, wav_bytes

sys.path.insert(0, str(REPO / "scripts"))
import deploy
import smoke

BASE = {"name": "f5", "image": "docker.io/me/w", "version": "v1"}


def test_the_input_becomes_a_checked_spec_with_secrets_by_reference():
    spec = deploy.spec_from(
        {**BASE, "s3": {"bucket": "b", "prefix": "p"}, "secrets": {"AWS_SECRET_ACCESS_KEY": "s"}}
    )
    assert spec.image == "docker.io/me/w:v1" and spec.template_name == "f5-template"
    assert spec.env == {
        "SERVE_MODE": "queue",
        "MODEL_NAME": "F5TTS_v1_Base",
        "S3_BUCKET": "b",
        "S3_PREFIX": "p",
        "AWS_SECRET_ACCESS_KEY": "{{ RUNPOD_SECRET_s }}",
    }
    assert spec.cached_model == ""
    lb = deploy.spec_from({**BASE, "mode": "lb", "models": "a=hf://o/r/m.pt, demo"})
    assert lb.env["SERVE_MODE"] == "http" and "MODEL_NAME" not in lb.env
    assert lb.cached_model == "o/r"


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({**BASE, "env": {"HF_TOKEN": "hf_x"}}, "by reference"),
        ({**BASE, "env": {"X": 'a"b'}}, "quotes"),
        ({**BASE, "secrets": {"AWS_ACCESS_KEY_ID": "bad name!"}}, "secret name"),
        ({**BASE, "version": ""}, "no tag"),
        ({**BASE, "image": "me/w:v0"}, "already has a tag"),
        ({**BASE, "mode": "serverless"}, "mode"),
        ({**BASE, "gpus": "NVIDIA GeForce RTX 4090"}, "pool ids"),
        ({**BASE, "workers_min": 4, "workers_max": 2}, "above"),
        ({**BASE, "idle_timeout": 0}, "1..3600"),
        ({**BASE, "gpu_cont": 1}, "unknown settings"),
    ],
)
def test_bad_input_is_refused_with_a_line(cfg, message):
    with pytest.raises(deploy.DeployError, match=message):
        deploy.spec_from(cfg)


def test_file_and_flags_merge_flags_winning(tmp_path):
    path = tmp_path / "d.toml"
    path.write_text(
        'name = "f5"\nimage = "i"\nversion = "v"\nworkers_max = 2\n[s3]\nbucket = "b"\n'
    )
    _, cfg = deploy.parse_args(["--config", str(path), "--workers-max", "7", "--s3-prefix", "x"])
    spec = deploy.spec_from(cfg)
    assert spec.workers_max == 7 and spec.env["S3_BUCKET"] == "b" and spec.env["S3_PREFIX"] == "x"
    json_path = tmp_path / "d.json"
    json_path.write_text('{"name": "f5", "image": "i:v", "flashboot": false}')
    _, cfg = deploy.parse_args(["--config", str(json_path)])
    assert deploy.spec_from(cfg).flashboot is False


def test_diff_sees_only_what_differs_and_reads_runpods_spellings():
    spec = deploy.spec_from(BASE)
    want = deploy.endpoint_fields(spec, "t1")
    have = {**want, "flashBootType": "FLASHBOOT", "networkVolumeId": None,
            "allowedCudaVersions": "12.8,12.7,12.6,12.5,12.4"}  # fmt: skip
    assert deploy.diff(have, want) == {}
    changes = deploy.diff({**have, "workersMax": 1, "gpuIds": "ADA_24"}, want)
    assert set(changes) == {"workersMax", "gpuIds"}
    assert deploy.rest_endpoint_patch(changes) == {"workersMax": 3}  # pools go by GraphQL
    off = deploy.diff(have, {**want, "flashBootType": "OFF"})
    assert deploy.rest_endpoint_patch(off) == {"flashboot": False}
    tpl = {
        "imageName": "docker.io/me/w:v1",
        "env": {**spec.env, "OLD": "1"},
        "containerDiskInGb": 20,
    }
    env_change = deploy.diff(tpl, deploy.template_fields(spec))
    assert deploy.describe(env_change) == ['env OLD: "1" -> (unset)']


def test_urls_follow_runpods_shapes():
    queue = dict(deploy.urls("abc", "queue"))
    assert queue["runsync"] == "https://api.runpod.ai/v2/abc/runsync"
    lb = dict(deploy.urls("abc", "lb"))
    assert lb["base"] == "https://abc.api.runpod.ai" and lb["ping"].endswith(".ai/ping")


def test_redaction():
    text = "401 for https://x/graphql?api_key=rpa_123 Authorization: Bearer rpa_123 key rpa_123"
    assert "rpa_123" not in deploy.redact(text, "rpa_123")
    assert "rpa_456" not in deploy.redact("Bearer rpa_456, api_key=rpa_456", None)


def test_smoke_decodes_files_and_streamed_wavs_and_holds_items_to_what_they_report():
    assert smoke.decode(wav_bytes(noise(0.5), 24000)) == (24000, 0.5)
    pcm = (noise(0.25) * 32767).astype("<i2").tobytes()
    assert smoke.decode(wav_header(24000) + pcm) == (24000, 0.25)
    item = {"audio_base64": wav_b64(noise(0.5)), "sample_rate": 24000, "duration_s": 0.5}
    assert smoke.check_output([item]) == "? 24000 Hz 0.50 s"
    for bad, message in [
        ({**item, "duration_s": 2.0}, "reported 2.0"),
        ({**item, "audio_base64": "%%%"}, "not base64"),
        ({**item, "audio_base64": base64.b64encode(wav_bytes(noise(0))).decode()}, "empty"),
        ({"error": "TEXT_TOO_LONG: x"}, "failed"),
    ]:
        with pytest.raises(smoke.SmokeFailure, match=message):
            smoke.check_output([bad])
    with pytest.raises(smoke.SmokeFailure, match="no output"):
        smoke.check_output([])


def test_ping_wait_is_bounded(monkeypatch):
    statuses = iter([204] * 100)

    class Reply:
        @property
        def status_code(self):
            return next(statuses)

    monkeypatch.setattr(smoke.requests, "get", lambda *a, **k: Reply())
    sleeps = []
    with pytest.raises(smoke.SmokeFailure, match="still 204"):
        smoke.wait_ready("http://127.0.0.1:1/ping", "k", 10, sleep=sleeps.append, interval_s=2)
    assert len(sleeps) == 5
