"""The scheduler's rule, driven without torch or threads: items are plain callables, `take()`
says which one the torch thread would run next, and a flag stands in for a request's cancel."""

import threading

import pytest

from f5worker.engine.scheduler import Batchable, Scheduler, WorkTag
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
    with pytest.raises(ValueError, match="fair, strict, fifo"):
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


# A live request's playback clock: its continuation goes first when its listener is about to
# run out of audio (decision 035).


def _listening(name: str, buffered_s: float, row_s: float = 1.0) -> WorkTag:
    """A live request whose listener has buffered_s of audio left, its passes row_s per row."""
    tag = WorkTag(name, live=True)
    tag.produced(buffered_s)
    tag.row_s = row_s
    return tag


def test_a_live_page_about_to_run_dry_goes_before_a_new_request():
    from f5worker.engine.scheduler import DUE_GUARD_S, DUE_MARGIN

    sched = Scheduler("fair")
    need = DUE_MARGIN * 1.0 + DUE_GUARD_S  # one row at 1 s per row
    _submit(sched, _listening("page", need - 0.2), False, "page-2")
    _submit(sched, WorkTag("s"), True, "s-1")
    assert _order(sched) == ["page-2", "s-1"]
    assert sched.due == 1


def test_a_live_page_with_audio_to_spare_still_waits_for_first_chunks():
    from f5worker.engine.scheduler import DUE_GUARD_S, DUE_MARGIN

    sched = Scheduler("fair")
    need = DUE_MARGIN * 2 * 1.0 + DUE_GUARD_S  # its next pass makes two rows
    sched.submit(_listening("page", need + 1.0), False, lambda: "page-2", rows=2)
    _submit(sched, WorkTag("s"), True, "s-1")
    assert _order(sched) == ["s-1", "page-2"]
    assert sched.due == 0


def test_a_page_lets_a_first_chunk_go_first_only_when_its_listener_can_afford_one():
    """What a first chunk costs the page is the last first pass's time: with 3 s of audio left
    and a one-row pass of 1 s to come, a 0.5 s first chunk goes first, a 2 s one does not."""
    for first_s, order in ((0.5, ["s-1", "page-2"]), (2.0, ["page-2", "s-1"])):
        sched = Scheduler("fair")
        sched.first_s = first_s
        _submit(sched, _listening("page", 3.0), False, "page-2")
        _submit(sched, WorkTag("s"), True, "s-1")
        assert _order(sched) == order


def test_a_listener_already_out_of_audio_makes_nobody_wait():
    """A device slower than real time: the page stalls whatever runs, so first chunks go first."""
    sched = Scheduler("fair")
    _submit(sched, _listening("page", -0.5), False, "page-2")
    _submit(sched, WorkTag("s"), True, "s-1")
    assert _order(sched) == ["s-1", "page-2"]


def test_a_page_nobody_plays_as_it_comes_has_no_clock():
    sched = Scheduler("fair")
    page = WorkTag("page")  # a queue job without `stream`: its result comes whole
    page.produced(0.1)
    page.row_s = 1.0
    _submit(sched, page, False, "page-2")
    _submit(sched, WorkTag("s"), True, "s-1")
    assert page.buffered(0.0) is None and _order(sched) == ["s-1", "page-2"]


@pytest.mark.parametrize("policy", ["strict", "fifo"])
def test_strict_and_fifo_have_no_clock(policy):
    sched = Scheduler(policy)
    _submit(sched, WorkTag("s"), True, "s-1")
    _submit(sched, _listening("page", 0.5), False, "page-2")
    assert _order(sched) == ["s-1", "page-2"] and sched.due == 0


def test_a_pass_tells_its_request_what_it_took_per_row():
    sched = Scheduler("fair")
    tag = WorkTag("page", live=True)

    def slow():
        import time

        time.sleep(0.02)
        yield
        return "done"

    sched.submit(tag, True, slow, steps=True, rows=2)
    while _step_once(sched):
        pass
    assert 0.01 - 1e-3 <= tag.row_s < 1.0
    assert sched.first_s == pytest.approx(2 * tag.row_s)  # a first pass: the next estimate


def test_a_due_pass_keeps_its_turn_between_its_steps_while_it_cannot_afford_a_first():
    """Read at every pick: a page whose listener cannot cover the rest of its pass and a first
    chunk is not pre-empted (0.5 s left), one that can (60 s left) is."""
    for left, log_expected in (
        (0.5, ["page.0", "page.1", "page.2", "s.0"]),
        (60.0, ["page.0", "s.0", "page.1", "page.2"]),
    ):
        sched, log = Scheduler("fair"), []
        sched.submit(_listening("page", left), False, _steps(log, "page", 3), steps=True)
        assert _step_once(sched)
        sched.submit(WorkTag("s"), True, _steps(log, "s", 1), steps=True)
        while _step_once(sched):
            pass
        assert log == log_expected


# Items in steps: a sampling pass yields between its steps (decision 033).


def _steps(log: list[str], name: str, n: int, closed: list[str] | None = None):
    """A pass of n steps that logs each step and returns its name."""

    def run():
        try:
            for i in range(n):
                log.append(f"{name}.{i}")
                if i < n - 1:
                    yield
        finally:
            if closed is not None:
                closed.append(name)
        return name

    return run


def _step_once(sched: Scheduler) -> bool:
    """What the torch thread does once: take an item, run it (or one step of it), put an
    unfinished one back. False when nothing was pending."""
    item = sched.take()
    if item is None:
        return False
    if not item.execute():
        sched.resume(item)
    return True


def test_a_first_chunk_goes_between_two_steps_of_a_running_continuation():
    sched, log = Scheduler("fair"), []
    page = sched.submit(WorkTag("page"), False, _steps(log, "page", 4), steps=True)
    assert _step_once(sched) and _step_once(sched)  # the page is two steps in
    sentence = sched.submit(WorkTag("s"), True, _steps(log, "s", 2), steps=True)
    while _step_once(sched):
        pass
    assert log == ["page.0", "page.1", "s.0", "s.1", "page.2", "page.3"]
    assert sentence.future.result() == "s" and page.future.result() == "page"


def test_a_started_item_is_not_interleaved_with_its_peers():
    """Within a rank the started item finishes first: a request's chunk comes out as soon as
    it would alone, and two first chunks are served one after the other."""
    sched, log = Scheduler("fair"), []
    sched.submit(WorkTag("a"), True, _steps(log, "a", 3), steps=True)
    assert _step_once(sched)
    sched.submit(WorkTag("b"), True, _steps(log, "b", 2), steps=True)
    while _step_once(sched):
        pass
    assert log == ["a.0", "a.1", "a.2", "b.0", "b.1"]


def test_fifo_runs_a_started_pass_to_its_end():
    sched, log = Scheduler("fifo"), []
    sched.submit(WorkTag("page"), False, _steps(log, "page", 3), steps=True)
    assert _step_once(sched)
    sched.submit(WorkTag("s"), True, _steps(log, "s", 1), steps=True)
    while _step_once(sched):
        pass
    assert log == ["page.0", "page.1", "page.2", "s.0"]


def test_a_cancelled_pass_stops_at_its_next_step_and_its_cleanup_runs():
    sched, log, closed = Scheduler("fair"), [], []
    cancelled = threading.Event()
    page = sched.submit(
        WorkTag("page", cancelled.is_set), False, _steps(log, "page", 5, closed), steps=True
    )
    assert _step_once(sched) and _step_once(sched)
    cancelled.set()
    while _step_once(sched):
        pass
    assert log == ["page.0", "page.1"] and closed == ["page"]
    with pytest.raises(JobCancelled):
        page.future.result()
    assert sched.dropped == 1


def test_cancel_closes_a_pass_waiting_between_its_steps():
    sched, log, closed = Scheduler("fair"), [], []
    tag = WorkTag("page")
    page = sched.submit(tag, False, _steps(log, "page", 5, closed), steps=True)
    assert _step_once(sched)
    assert sched.cancel(tag) == 1
    assert closed == ["page"] and sched.pending() == 0
    with pytest.raises(JobCancelled):
        page.future.result()


def test_an_error_in_a_step_reaches_the_submitter_and_ends_the_pass():
    sched = Scheduler("fair")

    def failing():
        yield
        raise ValueError("step 2 broke")

    item = sched.submit(WorkTag("x"), True, failing, steps=True)
    while _step_once(sched):
        pass
    with pytest.raises(ValueError, match="step 2 broke"):
        item.future.result()
    assert item.running is None and sched.pending() == 0


# Batches across requests: items that share a key share one pass (decision 034).


def _pass(log: list[list[str]], steps: int = 2):
    """A Batchable's run: logs the payloads it was given, returns each doubled, in steps."""

    def run(payloads):
        log.append(list(payloads))
        for _ in range(steps - 1):
            yield
        return [p * 2 for p in payloads]

    return run


def _batchable(sched: Scheduler, name: str, key: str, log, first: bool = True, rows: int = 1):
    batch = Batchable(key, rows, name, _pass(log))
    alone = lambda: _alone(_pass(log)([name]))  # noqa: E731  (the item run by itself)
    return sched.submit(WorkTag(name), first, alone, True, batch)


def _alone(shares):
    return (yield from shares)[0]


def _drain(sched: Scheduler) -> None:
    while _step_once(sched):
        pass


def test_pending_items_with_one_key_share_a_pass_and_each_gets_its_share():
    sched, log = Scheduler("fair", max_rows=4), []
    a = _batchable(sched, "a", "voice-1", log)
    b = _batchable(sched, "b", "voice-1", log, first=False)
    c = _batchable(sched, "c", "voice-2", log)
    d = _batchable(sched, "d", "voice-1", log)
    _drain(sched)
    assert log == [["a", "d", "b"], ["c"]]  # one key per pass, members in the rule's order
    assert [f.future.result() for f in (a, b, c, d)] == ["aa", "bb", "cc", "dd"]
    assert sched.batched == 2


def test_a_pass_takes_no_more_rows_than_max_rows_and_no_started_item():
    sched, log = Scheduler("fair", max_rows=3), []
    _batchable(sched, "a", "k", log, rows=2)
    _batchable(sched, "b", "k", log, rows=2)  # would make 4: waits for the next pass
    _batchable(sched, "c", "k", log)
    _drain(sched)
    assert log == [["a", "c"], ["b"]]
    sched, log = Scheduler("fair", max_rows=4), []
    _batchable(sched, "a", "k", log)
    assert _step_once(sched)  # a has started its pass alone
    _batchable(sched, "b", "k", log)
    _drain(sched)
    assert log == [["a"], ["b"]]


def test_without_batching_every_item_runs_alone():
    sched, log = Scheduler("fair"), []
    for name in "abc":
        _batchable(sched, name, "k", log)
    _drain(sched)
    assert log == [["a"], ["b"], ["c"]] and sched.batched == 0


def test_a_shared_pass_runs_while_one_member_still_wants_it():
    sched, log = Scheduler("fair", max_rows=4), []
    gone = threading.Event()
    left = sched.submit(
        WorkTag("left", gone.is_set), True, lambda: None, True, Batchable("k", 1, "x", _pass(log))
    )
    stays = _batchable(sched, "y", "k", log)
    assert _step_once(sched)  # the pass of x and y has started
    gone.set()  # x's client leaves; y still wants its audio
    _drain(sched)
    assert stays.future.result() == "yy" and left.future.result() == "xx"
    assert sched.dropped == 0


def test_an_error_in_a_shared_pass_reaches_every_member():
    sched = Scheduler("fair", max_rows=4)

    def broken(payloads):
        yield
        raise ValueError("the pass broke")

    items = [
        sched.submit(WorkTag(n), True, lambda: None, True, Batchable("k", 1, n, broken))
        for n in "ab"
    ]
    _drain(sched)
    for item in items:
        with pytest.raises(ValueError, match="the pass broke"):
            item.future.result()


def test_the_window_waits_for_a_second_request_to_join_the_pass():
    sched, log = Scheduler("fair", max_rows=2, window_s=30.0), []
    _batchable(sched, "a", "k", log)
    late = threading.Timer(0.05, lambda: _batchable(sched, "b", "k", log))
    late.start()
    item = sched.next()  # returns as soon as the second arrives, far inside the window
    late.join()
    while not item.execute():
        pass
    assert log == [["a", "b"]]
