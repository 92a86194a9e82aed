"""The fake gateway refuses what RunPod refuses and records it (testing/runpod_gateway.py)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from f5worker.testing.runpod_gateway import FakeRunPod, Limits, PayloadTooLarge, Violation


def post(url: str, body: dict) -> int:
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_posts_over_the_caps_are_refused_and_recorded():
    limits = Limits(yield_bytes=1_000, run_result_bytes=2_000, runsync_result_bytes=3_000)
    with FakeRunPod(limits) as fake:
        fake.submit("a", {"text": "x"})
        fake.submit("b", {"text": "x"}, route="runsync")
        assert post(f"{fake.url}/job-stream/w/a", {"output": "x" * 900}) == 200
        assert post(f"{fake.url}/job-stream/w/a", {"output": "x" * 1_100}) == 413
        assert post(f"{fake.url}/job-done/w/a", {"output": "x" * 2_500}) == 413
        assert post(f"{fake.url}/job-done/w/b", {"output": "x" * 2_500}) == 200
    assert [(v.job_id, v.what) for v in fake.violations] == [("a", "yield"), ("a", "run result")]
    assert isinstance(fake.violations[0], Violation) and fake.violations[0].cap == 1_000
    assert len(fake.streamed["a"]) == 1 and "a" not in fake.done and "b" in fake.done


def test_an_input_over_the_routes_cap_is_refused_at_submit():
    fake = FakeRunPod(Limits(run_input_bytes=100))
    with pytest.raises(PayloadTooLarge):
        fake.submit("big", {"ref_audio": "A" * 200})
    fake.submit("fits", {"ref_audio": "A" * 200}, route="runsync")
