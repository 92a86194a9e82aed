"""The scheduler's rule, driven without torch or threads: items are plain callables, `take()`
says which one the torch thread would run next, and a flag stands in for a request's cancel."""

import threading

import pytest

from f5worker.engine.scheduler import Scheduler, WorkTag
from f5worker.errors import JobCancelled


def _order(sched: Scheduler) -> list[str]:
    """Run everything pending, in the order the torch thread would; each item's name."""
    names = []
    while (item := sched.take()) is not None:
        item.execute()
        names.append(item.future.result())
    return names


def _submit(sched: Scheduler, tag: WorkTag, first: bool, name: str):
    return sched.submit(tag, first, lambda: name)


def test_first_chunks_go_before_continuations_whatever_came_first():
    sched = Scheduler("fair")
    page, a, b = WorkTag("page"), WorkTag("a"), WorkTag("b")
    _submit(sched, page, False, "page-2")
    _submit(sched, a, True, "a-1")
    _submit(sched, b, True, "b-1")
    assert _order(sched) == ["a-1", "b-1", "page-2"]


def test_continuations_take_turns_least_recently_served_first():
    sched = Scheduler("fair")
    x, y, z = WorkTag("x"), WorkTag("y"), WorkTag("z")
    # Each request is served once, in the order x, y, z.
    for tag in (x, y, z):
        _submit(sched, tag, True, f"{tag.name}-1")
    assert _order(sched) == ["x-1", "y-1", "z-1"]
    # Their continuations arrive in another order; x was served longest ago, so it goes first.
    for tag in (z, y, x):
        _submit(sched, tag, False, f"{tag.name}-2")
    assert _order(sched) == ["x-2", "y-2", "z-2"]


def test_round_robin_as_requests_resubmit_after_each_chunk():
    """Each request has one item pending at a time and submits its next after its turn, as a
    job thread does: two pages interleave chunk by chunk instead of one finishing first."""
    sched = Scheduler("fair")
    tags = {"p": WorkTag("p"), "q": WorkTag("q")}
    left = {"p": 3, "q": 3}
    ran: list[str] = []
    for name in ("p", "q"):
        _submit(sched, tags[name], True, name)
    while (item := sched.take()) is not None:
        item.execute()
        name = item.future.result()
        ran.append(name)
        left[name] -= 1
        if left[name]:
            _submit(sched, tags[name], False, name)
    assert ran == ["p", "q", "p", "q", "p", "q"]


def test_a_new_request_jumps_a_running_page_but_not_the_other_way_round():
    sched = Scheduler("fair")
    page, sentence = WorkTag("page"), WorkTag("sentence")
    _submit(sched, page, True, "page-1")
    assert _order(sched) == ["page-1"]
    _submit(sched, page, False, "page-2")
    _submit(sched, sentence, True, "sentence-1")
    assert _order(sched) == ["sentence-1", "page-2"]


def test_fifo_keeps_the_order_of_submission():
    sched = Scheduler("fifo")
    page, a, b = WorkTag("page"), WorkTag("a"), WorkTag("b")
    _submit(sched, page, False, "page-2")
    _submit(sched, a, True, "a-1")
    _submit(sched, page, False, "page-3")
    _submit(sched, b, True, "b-1")
    assert _order(sched) == ["page-2", "a-1", "page-3", "b-1"]


def test_a_cancelled_requests_pending_item_never_runs():
    sched = Scheduler("fair")
    stop = threading.Event()
    gone, kept = WorkTag("gone", stop.is_set), WorkTag("kept")
    ran: list[str] = []
    item = sched.submit(gone, True, lambda: ran.append("gone"))
    _submit(sched, kept, True, "kept")
    stop.set()
    assert _order(sched) == ["kept"]
    assert ran == [] and sched.dropped == 1
    with pytest.raises(JobCancelled):
        item.future.result(timeout=0)


def test_cancel_drops_pending_items_at_once_and_a_cancelled_request_queues_nothing():
    sched = Scheduler("fair")
    stop = threading.Event()
    tag = WorkTag("t", stop.is_set)
    item = _submit(sched, tag, False, "t-2")
    assert sched.cancel(tag) == 1 and sched.pending() == 0
    with pytest.raises(JobCancelled):
        sched.wait(item)
    stop.set()
    later = _submit(sched, tag, False, "t-3")
    assert sched.pending() == 0
    with pytest.raises(JobCancelled):
        later.future.result(timeout=0)


def test_a_waiting_submitter_withdraws_its_item_when_its_request_is_cancelled():
    """wait() reads the cancel flag while the item is pending (here: nothing takes it)."""
    sched = Scheduler("fair")
    tag = WorkTag("t", lambda: True)
    item = sched.submit(WorkTag("t"), True, lambda: "never")
    item.tag = tag  # cancelled after it was queued
    with pytest.raises(JobCancelled):
        sched.wait(item)
    assert sched.pending() == 0 and sched.take() is None


def test_an_item_already_running_finishes_and_its_errors_reach_the_submitter():
    sched = Scheduler("fair")
    stop = threading.Event()
    tag = WorkTag("t", stop.is_set)
    item = sched.submit(tag, True, lambda: 1 / 0)
    taken = sched.take()
    assert taken is item
    stop.set()  # cancelled while it runs: it is not withdrawn
    assert not sched.withdraw(item)
    item.execute()
    with pytest.raises(ZeroDivisionError):
        sched.wait(item)


def test_an_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="fair, fifo"):
        Scheduler("lifo")


def test_a_stream_of_new_requests_cannot_starve_a_waiting_continuation():
    from f5worker.engine.scheduler import MAX_PASSED

    sched = Scheduler("fair")
    page = WorkTag("page")
    _submit(sched, page, True, "page-1")
    assert _order(sched) == ["page-1"]
    _submit(sched, page, False, "page-2")
    ran = []
    for n in range(MAX_PASSED + 2):  # a new request arrives after every turn
        _submit(sched, WorkTag(f"s{n}"), True, f"s{n}")
        item = sched.take()
        item.execute()
        ran.append(item.future.result())
    assert ran.index("page-2") == MAX_PASSED
