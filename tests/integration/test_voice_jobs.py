"""Voice actions through Worker.run, beside synthesis, and two workers sharing one library (a
moto S3 server): what one adds the other speaks with at once; what one deletes the other stops
using within VOICE_CACHE_TTL_S."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from f5worker.config import Settings
from f5worker.job.worker import Worker
from f5worker.startup.compose import make_worker
from f5worker.testing.audio import noise, wav_b64
from f5worker.testing.s3_servers import voice_library_settings

BUCKET = "library"


@pytest.fixture(scope="module")
def settings() -> Iterator[Settings]:
    # voice_cache_ttl_s=0: check S3 on every use, so the delete is seen at once
    with voice_library_settings(BUCKET, voice_cache_ttl_s=0, worker_version="voices-1") as settings:
        yield settings


def run(worker: Worker, inp: dict) -> dict:
    [item] = list(worker.run({"id": "v", "input": inp}))
    return item


def test_voice_jobs_beside_synthesis_on_two_workers(engine, settings):
    a, b = make_worker(engine, settings), make_worker(engine, settings)
    added = run(
        a,
        {
            "action": "voice.add",
            "name": "anna",
            "ref_audio": wav_b64(noise(3, 16000), 16000),
            "ref_text": "I am Anna.",
        },
    )
    assert added["voice"]["name"] == "anna" and added["worker_version"] == "voices-1"

    spoken = run(b, {"text": "Hello from Anna.", "voice": "anna", "nfe_step": 2, "seed": 1})
    assert "error" not in spoken and spoken["ref_audio_s"] == added["voice"]["duration_s"]
    assert b.voices.get("anna").audio.sample_rate == engine.sample_rate  # stored at its rate

    listed = run(b, {"action": "voice.list"})
    assert [v["name"] for v in listed["voices"]] == ["default", "anna"]

    assert run(a, {"action": "voice.delete", "name": "anna"})["deleted"] == "anna"
    gone = run(b, {"text": "Hello again.", "voice": "anna", "nfe_step": 2})
    assert gone["error_code"] == "VOICE_NOT_FOUND" and gone["worker_version"] == "voices-1"


def test_a_failed_action_is_a_coded_item_and_the_worker_goes_on(engine, settings):
    worker = make_worker(engine, settings)
    for inp, code in [
        ({"action": "voice.get", "name": "nobody"}, "VOICE_NOT_FOUND"),
        ({"action": "voice.add", "name": "x"}, "INVALID_INPUT"),
        ({"action": {"nested": 1}}, "INVALID_INPUT"),
    ]:
        item = run(worker, inp)
        assert item["error_code"] == code and item["retryable"] is False
    assert "error" not in run(worker, {"text": "Still here.", "nfe_step": 2})


def test_aliases_map_stock_names_to_library_voices_and_results_name_the_voice(engine, settings):
    """VOICE_ALIASES=alloy=narrator: an OpenAI client that can only send `alloy` (Pipecat's
    OpenAI service) speaks with the cloned voice; without an alias `alloy` is the default."""
    plain = make_worker(engine, settings)
    clip = {"ref_audio": wav_b64(noise(3, 16000), 16000), "ref_text": "I narrate."}
    run(plain, {"action": "voice.add", "name": "narrator", **clip})
    aliased = make_worker(
        engine, dataclasses.replace(settings, voice_aliases=(("alloy", "narrator"),))
    )
    openai = {
        "openai_route": "/v1/audio/speech",
        "openai_input": {"input": "Hi.", "voice": "ALLOY"},
    }
    assert run(aliased, openai)["voice"] == "narrator"
    assert run(plain, openai)["voice"] == "default"  # a stock name without an alias
    fast = {"text": "Hi.", "nfe_step": 2}
    assert run(aliased, {**fast, "voice": "alloy"})["voice"] == "narrator"
    assert run(plain, {**fast, "voice": "narrator"})["voice"] == "narrator"
    assert run(plain, fast)["voice"] == "default"
    assert run(plain, {**fast, **clip})["voice"] == "ref_audio"
    run(plain, {"action": "voice.delete", "name": "narrator"})
    gone = run(aliased, openai)  # an alias to a missing voice is an error, never silent default
    assert gone["error_code"] == "VOICE_NOT_FOUND"
