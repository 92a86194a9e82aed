"""The start-up timeline's `overlap_saved`: time that steps on two threads really shared.

Driven by a fake clock: a test moves time on by hand, the threads only order the steps."""

from __future__ import annotations

import threading

import pytest

from f5worker.startup.timeline import Span, Timeline


class FakeClock:
    """Seconds that pass only when a test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_work_side_by_side_counts_as_saved():
    clock = FakeClock()
    timeline = Timeline(clock)
    entered, done = threading.Event(), threading.Event()

    def model() -> None:
        with timeline.step("model"):
            entered.set()
            done.wait(5)

    thread = threading.Thread(target=model)
    thread.start()
    assert entered.wait(5)
    with timeline.step("import"):  # 0.3 s on the main thread...
        clock.advance(0.2)  # ...the model step ends after 0.2 s of it
        done.set()
        thread.join()
        clock.advance(0.1)
    assert timeline.steps == pytest.approx({"model": 0.2, "import": 0.3})
    assert timeline.overlap() == pytest.approx(0.2)


def test_waiting_for_the_other_thread_is_not_saved_time():
    """The demo model waits for the f5-tts import: in a row, however the spans lie."""
    clock = FakeClock()
    timeline = Timeline(clock)
    entered, imported = threading.Event(), threading.Event()

    def model() -> None:
        with timeline.step("model"):
            with timeline.waiting():
                entered.set()
                imported.wait(5)
            clock.advance(0.1)  # after the import: nothing runs beside it

    thread = threading.Thread(target=model)
    thread.start()
    assert entered.wait(5)
    with timeline.step("import"):
        clock.advance(0.3)
    imported.set()
    thread.join()
    assert timeline.steps["model"] == pytest.approx(0.4)  # the steps say 0.3 s overlapped...
    assert timeline.overlap() == pytest.approx(0.0)  # ...but nothing really did
    assert "overlap_saved=0.00s" in timeline.summary()


def test_steps_on_one_thread_never_overlap():
    clock = FakeClock()
    timeline = Timeline(clock)
    for name in ("a", "b"):
        with timeline.step(name):
            clock.advance(0.01)
    assert timeline.steps == pytest.approx({"a": 0.01, "b": 0.01})
    assert timeline.overlap() == 0.0


def test_span_overlap():
    assert Span(0, 2, 1).overlap(Span(1, 3, 2)) == 1
    assert Span(0, 1, 1).overlap(Span(2, 3, 2)) == 0
