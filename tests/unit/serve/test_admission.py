"""The HTTP mode's admission bound: limit at work, max_waiting waiting, then Overloaded."""

from __future__ import annotations

import asyncio

import pytest

from f5worker.errors import JobCancelled, Overloaded
from f5worker.serve.http.admission import Admission


def test_admission_lets_limit_work_and_max_waiting_wait_then_refuses():
    async def scenario() -> list[str]:
        admission = Admission(limit=1, max_waiting=1)
        await admission.acquire()  # at work
        waiter = asyncio.create_task(admission.acquire())  # waits
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await admission.acquire()
        admission.release()
        await asyncio.wait_for(waiter, 1)
        waiting = asyncio.create_task(admission.acquire())
        await asyncio.sleep(0)
        waiting.cancel()  # a client that leaves while waiting gives its place back
        await asyncio.gather(waiting, return_exceptions=True)
        admission.release()
        return [str(admission.admitted), str(admission.rejected)]

    assert asyncio.run(scenario()) == ["0", "1"]


def test_a_wait_for_a_slot_is_bounded_and_gives_its_place_back():
    async def scenario() -> None:
        admission = Admission(limit=1, max_waiting=1)
        slot = await admission.acquire()
        admission.admit()
        with pytest.raises(Overloaded):
            await admission.wait_for_slot(timeout_s=0.05)
        assert admission.admitted == 1 and admission.timed_out == 1
        admission.release(slot)
        assert admission.admitted == 0

    asyncio.run(scenario())


def test_a_waiter_whose_client_left_leaves_the_queue_at_once():
    async def scenario() -> None:
        admission = Admission(limit=1, max_waiting=1)
        slot = await admission.acquire()
        admission.admit()
        gone = asyncio.Event()
        waiter = asyncio.create_task(admission.wait_for_slot(timeout_s=30, gone=gone))
        await asyncio.sleep(0.01)
        gone.set()
        with pytest.raises(JobCancelled):
            await asyncio.wait_for(waiter, 1)
        assert admission.admitted == 1  # before the slot is free
        admission.admit()  # its place is free for another
        admission.release(slot)

    asyncio.run(scenario())


def test_a_full_queue_of_bodies_still_arriving_makes_a_newcomer_wait_not_fail():
    async def scenario() -> None:
        admission = Admission(limit=1, max_waiting=0)
        await admission.enter(timeout_s=1)  # reading its body
        newcomer = asyncio.create_task(admission.enter(timeout_s=5))
        await asyncio.sleep(0.05)
        assert not newcomer.done()
        admission.withdraw(reading=True)  # the slow body timed out
        await asyncio.wait_for(newcomer, 1)
        assert admission.admitted == 1 and admission.reading == 1
        admission.body_read()
        with pytest.raises(Overloaded):  # complete bodies: refused at once
            await asyncio.wait_for(admission.enter(timeout_s=5), 0.5)

    asyncio.run(scenario())


def test_a_wait_for_a_place_is_bounded_too():
    async def scenario() -> None:
        admission = Admission(limit=1, max_waiting=0)
        await admission.enter()
        with pytest.raises(Overloaded):
            await admission.enter(timeout_s=0.05)

    asyncio.run(scenario())


def test_stalled_when_every_slot_made_no_progress_for_the_stall_time():
    async def scenario() -> list[bool]:
        admission = Admission(limit=2, max_waiting=0)
        first = await admission.acquire()
        seen = [admission.stalled(0.01)]  # a slot free: never stalled
        second = await admission.acquire()
        await asyncio.sleep(0.05)
        seen.append(admission.stalled(0.01))  # both idle too long
        second.touch()
        seen.append(admission.stalled(0.01))  # one made progress
        admission.release(first)
        admission.release(second)
        return seen

    assert asyncio.run(scenario()) == [False, True, False]
