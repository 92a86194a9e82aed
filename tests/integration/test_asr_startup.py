"""The composition root's ASR companion: off with ASR_MODEL=none; otherwise lazy, or loaded in
the background with ASR_PRELOAD=on; weights found nowhere are a start-up warning and a coded
error for the request that needs them, never a failed start."""

from __future__ import annotations

import time

import numpy as np
import pytest

from f5worker.config import Settings
from f5worker.errors import ASRUnavailable
from f5worker.startup.compose import make_transcriber


def settings_for(tmp_path, **env: str) -> Settings:
    return Settings.from_env(
        {
            "MODEL_CACHE_DIR": str(tmp_path / "cache"),
            "HF_HOME": str(tmp_path / "hf"),
            "RUNPOD_HF_CACHE_DIR": str(tmp_path / "runpod"),
            **env,
        }
    )


def test_asr_model_none_gives_the_worker_no_transcriber(tmp_path):
    assert make_transcriber(settings_for(tmp_path, ASR_MODEL="none"), "cpu") is None


def test_by_default_nothing_is_looked_up_or_loaded_at_start(tmp_path, tiny_whisper_dir):
    asr = make_transcriber(settings_for(tmp_path, ASR_MODEL=str(tiny_whisper_dir)), "cpu")
    assert asr is not None and not asr.loaded
    assert (asr.device, asr.compute_type) == ("cpu", "int8")
    got = asr.transcribe(np.zeros(16_000, np.float32), 16_000, language="en")
    assert asr.loaded and got.language == "en"


def test_preload_loads_in_the_background(tmp_path, tiny_whisper_dir):
    settings = settings_for(
        tmp_path, ASR_MODEL=str(tiny_whisper_dir), ASR_PRELOAD="on", ASR_COMPUTE_TYPE="float32"
    )
    asr = make_transcriber(settings, "cpu")
    assert asr is not None and asr.compute_type == "float32"
    deadline = time.monotonic() + 60
    while not asr.loaded and time.monotonic() < deadline:
        time.sleep(0.05)
    assert asr.loaded


def test_weights_nowhere_warn_at_start_and_fail_only_the_request(tmp_path, caplog):
    """Offline (tests set HF_HUB_OFFLINE=1), no S3 cache, nothing on disk."""
    settings = settings_for(tmp_path, ASR_PRELOAD="on")
    asr = make_transcriber(settings, "cpu")
    assert asr is not None
    deadline = time.monotonic() + 60
    while "not preloaded" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "ASR model mobiuslabsgmbh/faster-whisper-large-v3-turbo not preloaded" in caplog.text
    with pytest.raises(ASRUnavailable) as info:
        asr.transcribe(np.zeros(16_000, np.float32), 16_000)
    assert "RunPod's cached models" in info.value.message
    assert "OfflineModeIsEnabled" in info.value.message
