"""The `usage` of an item and a job's summed figures (the queue mode's metrics line), without a
model: a prepared job is only read for its clock, steps, model, preset and cache flags. (Items
carrying usage from the demo engine: tests/integration/test_handler.py.)"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from f5worker.job.prepared import Clock
from f5worker.job.usage import JobFigures, item_usage


def prepared(synthesis_s: float, nfe_step: int = 16) -> SimpleNamespace:
    clock = Clock()
    clock.stages["synthesis"] = synthesis_s
    return SimpleNamespace(
        clock=clock,
        params=SimpleNamespace(nfe_step=nfe_step),
        model=SimpleNamespace(name="F5TTS_v1_Base"),
        preset=SimpleNamespace(name="balanced"),
        voice_cached=False,
        reference_cached=True,
    )


def test_an_items_usage_counts_its_text_steps_audio_and_engine_time():
    usage = item_usage(prepared(0.5), characters=42, chunks=3, audio_s=2.0)
    assert usage == {
        "characters": 42,
        "audio_s": 2.0,
        "steps": 48,  # nfe_step x chunks
        "engine_s": 0.5,
        "rtf": 0.25,
        "model": "F5TTS_v1_Base",
        "quality": "balanced",
        "voice_cached": False,
        "reference_cached": True,
    }
    streamed = item_usage(prepared(0.5), characters=5, chunks=1, audio_s=1.0, first_audio_s=0.7)
    assert streamed["first_audio_s"] == 0.7 and streamed["steps"] == 16


def test_chunks_made_again_by_verification_count_as_engine_work():
    job = prepared(0.5)
    job.clock.stages |= {"retry": 0.25, "verify": 0.125}  # the recogniser's time is not engine's
    usage = item_usage(job, characters=42, chunks=3, audio_s=2.0, retries=2)
    assert (usage["steps"], usage["engine_s"], usage["rtf"]) == (80, 0.75, 0.375)


def test_no_audio_has_no_rtf():
    assert item_usage(prepared(0.1), characters=1, chunks=1, audio_s=0.0)["rtf"] is None


def test_a_jobs_figures_sum_its_items_and_skip_those_without_usage():
    figures = JobFigures(voice="library")
    one = item_usage(prepared(0.5), characters=10, chunks=1, audio_s=2.0)
    two = item_usage(prepared(1.0), characters=20, chunks=2, audio_s=3.0)
    figures.add({"usage": one}, 0.8)
    figures.add({"index": 1, "item_error": {"error_code": "VOICE_NOT_FOUND"}}, 0.9)
    figures.add({"usage": two}, 1.5)
    assert (figures.items, figures.characters, figures.steps) == (3, 30, 48)
    assert figures.audio_s == pytest.approx(5.0) and figures.rtf == pytest.approx(0.3)
    assert figures.first_audio_s == 0.8  # the first item with audio
    line = json.loads(figures.as_json())
    assert line["status"] == "ok" and line["code"] == "OK" and line["voice"] == "library"
    assert line["model"] == "F5TTS_v1_Base" and line["reference_cached"] is True


def test_the_reference_transcription_time_is_summed_from_the_items_timings():
    figures = JobFigures(voice="ref_audio")
    usage = item_usage(prepared(0.5), characters=10, chunks=1, audio_s=2.0)
    figures.add({"usage": usage, "timings": {"voice": 0.4, "ref_transcribe": 0.25}}, 0.8)
    figures.add({"usage": usage, "timings": {"synthesis": 0.5}}, 1.0)  # a stream's later item
    assert figures.ref_transcribe_s == pytest.approx(0.25)
    assert json.loads(figures.as_json())["ref_transcribe_s"] == 0.25


def test_a_failed_job_says_its_code():
    figures = JobFigures()
    figures.failed("TEXT_TOO_LONG")
    line = json.loads(figures.as_json())
    assert (line["status"], line["code"], line["items"], line["rtf"]) == (
        "error",
        "TEXT_TOO_LONG",
        0,
        None,
    )
