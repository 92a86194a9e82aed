"""The start-up timeline's `overlap_saved`: time that steps on two threads really shared."""

from __future__ import annotations

import threading
import time

from f5worker.startup.timeline import Span, Timeline


def run_beside(timeline: Timeline, model_work, imported: threading.Event | None = None) -> None:
    """A 0.3 s main-thread step while `model_work` runs as the model step on a thread."""
    thread = threading.Thread(target=model_work)
    thread.start()
    with timeline.step("import"):
        time.sleep(0.3)
    if imported is not None:
        imported.set()
    thread.join()


def test_work_side_by_side_counts_as_saved():
    timeline = Timeline()

    def model() -> None:
        with timeline.step("model"):
            time.sleep(0.2)

    run_beside(timeline, model)
    assert 0.15 < timeline.overlap() < 0.3


def test_waiting_for_the_other_thread_is_not_saved_time():
    """The demo model waits for the f5-tts import: in a row, however the spans lie."""
    timeline = Timeline()
    imported = threading.Event()

    def model() -> None:
        with timeline.step("model"):
            with timeline.waiting():
                imported.wait()
            time.sleep(0.1)  # after the import: nothing runs beside it

    run_beside(timeline, model, imported)
    assert timeline.steps["model"] > 0.35  # the sum of the steps says 0.35 s overlapped...
    assert timeline.overlap() < 0.05  # ...but nothing really did
    assert "overlap_saved=0.0" in timeline.summary()


def test_steps_on_one_thread_never_overlap():
    timeline = Timeline()
    for name in ("a", "b"):
        with timeline.step(name):
            time.sleep(0.01)
    assert timeline.overlap() == 0.0


def test_span_overlap():
    assert Span(0, 2, 1).overlap(Span(1, 3, 2)) == 1
    assert Span(0, 1, 1).overlap(Span(2, 3, 2)) == 0
