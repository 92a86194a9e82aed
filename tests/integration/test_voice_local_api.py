"""The README's voice examples through RunPod's real local API (`make run`), on the shared
fully configured worker (a moto voice library)."""

from __future__ import annotations

import pytest

from f5worker.testing.audio import noise, wav_b64
from f5worker.testing.worker import runsync

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def url(full_worker_urls) -> str:
    return full_worker_urls[0]


def item(url: str, inp: dict) -> dict:
    reply = runsync(url, inp)
    assert reply["status"] == "COMPLETED", reply
    [out] = reply["output"]
    return out


def test_add_list_get_speak_delete(url):
    ref = wav_b64(noise(3, 16000), 16000)
    add = {"action": "voice.add", "name": "readme", "ref_audio": ref, "ref_text": "I read."}
    assert item(url, add)["voice"]["name"] == "readme"
    names = [v["name"] for v in item(url, {"action": "voice.list"})["voices"]]
    assert "readme" in names and names[0] == "default"
    shown = item(url, {"action": "voice.get", "name": "readme"})["voice"]
    assert shown["transcript"] == "I read." and shown["sample_rate"] == 24000
    spoken = item(url, {"text": "Hello from the readme.", "voice": "readme", "nfe_step": 2})
    assert spoken["ref_audio_s"] == shown["duration_s"]
    assert item(url, {"action": "voice.delete", "name": "readme"}) == {
        "action": "voice.delete",
        "deleted": "readme",
        "worker_version": "api-1",
    }
    gone = item(url, {"action": "voice.get", "name": "readme"})
    assert gone["error_code"] == "VOICE_NOT_FOUND"  # the local API: a COMPLETED job's last item
