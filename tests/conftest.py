"""Shared fixtures: the demo model is built once per session with the real f5-tts classes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Timing-based checks say nothing about correctness, and on a shared 2-core machine one slow
# draw (1.2 s while other processes ran) failed a fuzz test; examples stay as many.
settings.register_profile("shared-ci", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("shared-ci")

# A missed local path must fail in seconds instead of waiting on the hub.
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from f5worker.models.demo import build_demo_model

    return build_demo_model(tmp_path_factory.mktemp("models") / "demo")


@pytest.fixture(scope="session")
def engine(demo_model_dir: Path):
    from f5worker.engine.f5tts import F5TTSEngine

    return F5TTSEngine.load(demo_model_dir, device="cpu")


@pytest.fixture(scope="session")
def tiny_whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight Whisper in CTranslate2's format (f5worker/testing/tiny_whisper.py): the
    ASR companion's real loading and decoding, offline, in a fraction of a second."""
    from f5worker.testing.tiny_whisper import build_tiny_whisper

    return build_tiny_whisper(tmp_path_factory.mktemp("asr") / "tiny-whisper")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use the demo model import torch and f5-tts and build it (about 30 s here):
    marked `model`, so `make test-fast` can leave them out."""
    for item in items:
        if "demo_model_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.model)
