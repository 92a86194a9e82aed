"""The HTTP mode's admission bound: limit at work, max_waiting waiting, then Overloaded."""

from __future__ import annotations

import asyncio

import pytest

from f5worker.errors import Overloaded
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
