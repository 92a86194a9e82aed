"""torch_thread: one OS thread runs all torch work, whoever asks."""

import threading

import pytest

from f5worker.engine import torch_thread


def test_runs_on_one_thread_whichever_thread_asks():
    seen: set[int] = set()

    def ask() -> None:
        seen.add(torch_thread.run(threading.get_ident))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ask()
    assert len(seen) == 1 and threading.get_ident() not in seen


def test_passes_arguments_and_returns_the_result():
    assert torch_thread.run(divmod, 17, 5) == (3, 2)
    assert torch_thread.run(sorted, [3, 1, 2], reverse=True) == [3, 2, 1]


def test_raises_the_callee_exception_and_keeps_serving():
    with pytest.raises(ZeroDivisionError):
        torch_thread.run(lambda: 1 / 0)
    assert torch_thread.run(lambda: "still serving") == "still serving"


def test_a_call_from_the_torch_thread_runs_inline_instead_of_deadlocking():
    def outer() -> tuple[bool, int]:
        return torch_thread.is_current(), torch_thread.run(threading.get_ident)

    inside, ident = torch_thread.run(outer)
    assert inside and ident == torch_thread.run(threading.get_ident)
    assert not torch_thread.is_current()


def test_a_call_for_a_cancelled_request_never_runs():
    from f5worker.engine.scheduler import WorkTag
    from f5worker.errors import JobCancelled

    ran: list[int] = []
    with pytest.raises(JobCancelled):
        torch_thread.run_for(WorkTag("gone", lambda: True), False, ran.append, 1)
    assert ran == [] and torch_thread.run_for(WorkTag("kept"), True, len, "ab") == 2


def test_a_pass_in_steps_returns_its_value_from_any_thread_and_inline():
    def pass_of(n: int):
        for _ in range(n):
            yield
        return threading.get_ident()

    ident = torch_thread.run_steps_for(None, True, lambda: pass_of(3))
    assert ident == torch_thread.run(threading.get_ident)  # every step on the torch thread
    inline = torch_thread.run(lambda: torch_thread.run_steps_for(None, True, lambda: pass_of(2)))
    assert inline == ident
