"""The voice library on real S3 servers (moto's and SeaweedFS), as two workers share it: adds of
one name racing from two libraries (exactly one wins), and a reader racing adds and deletes
(a whole voice or none). SeaweedFS is a store whose conditional writes and listings are its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from f5worker.audio import Audio, Voice
from f5worker.errors import VoiceExists, VoiceNotFound
from f5worker.job.voices import VoiceLibrary
from f5worker.testing.audio import noise
from f5worker.testing.s3_servers import client_for, moto_server, seaweedfs

pytestmark = pytest.mark.slow
BUCKET = "shared-voices"
RATE = 24000


@pytest.fixture(scope="module", params=["moto", "seaweedfs"])
def endpoint(request, tmp_path_factory) -> Iterator[str]:
    if request.param == "moto":
        with moto_server(BUCKET) as url:
            yield url
    else:
        with seaweedfs(tmp_path_factory.mktemp("weed")) as url:
            client_for(url).create_bucket(Bucket=BUCKET)
            yield url


def worker_library(endpoint: str, prefix: str, **kw) -> VoiceLibrary:
    """One worker's library: its own client, as each worker process has (writes on, as an
    operator who manages voices sets VOICE_WRITES)."""
    client = client_for(endpoint)
    kw.setdefault("writes", True)
    return VoiceLibrary(BUCKET, prefix, client_factory=lambda: client, **kw)


def voice(seconds: float, text: str, seed: int = 0) -> Voice:
    return Voice(Audio(noise(seconds, seed=seed), RATE), text)


def test_two_adds_of_one_name_exactly_one_wins(endpoint):
    # TTL 0: each round's winner is read from S3, not from the last round's cache.
    a = worker_library(endpoint, "race", cache_ttl_s=0)
    b = worker_library(endpoint, "race", cache_ttl_s=0)
    for round_ in range(3):
        results: list[str] = []
        barrier = threading.Barrier(2)

        def add(lib: VoiceLibrary, text: str, barrier=barrier, results=results) -> None:
            barrier.wait(10)
            try:
                lib.add("anna", voice(1.0, text), "2026-01-01T00:00:00Z")
                results.append(text)
            except VoiceExists:
                results.append("exists")

        threads = [
            threading.Thread(target=add, args=(a, f"a{round_}")),
            threading.Thread(target=add, args=(b, f"b{round_}")),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(results)[-1] == "exists" and len(results) == 2
        [winner] = [r for r in results if r != "exists"]
        assert b.get("anna").text == winner == a.get("anna").text
        a.delete("anna")
    keys = client_for(endpoint).list_objects_v2(Bucket=BUCKET, Prefix="race/")
    assert keys.get("KeyCount", 0) == 0  # the losers left nothing behind


def test_a_reader_racing_another_workers_adds_and_deletes(endpoint):
    writer = worker_library(endpoint, "reader")
    reader = worker_library(endpoint, "reader", cache_ttl_s=0)
    stop = threading.Event()
    seen = {"voices": 0, "missing": 0}
    problems: list[str] = []

    def read() -> None:
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                got = reader.get("racer")
            except VoiceNotFound:
                seen["missing"] += 1
                continue
            except Exception as exc:
                problems.append(repr(exc))
                continue
            seen["voices"] += 1  # stored as added: exactly the samples its transcript names
            if got.audio.samples.size != int(got.text):
                problems.append(f"transcript {got.text} with {got.audio.samples.size} samples")

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for i in range(10):
            seconds = 1.0 + 0.25 * i
            samples = int(seconds * RATE)
            writer.add("racer", voice(seconds, str(samples), seed=i), "2026-01-01T00:00:00Z")
            time.sleep(0.05)
            writer.delete("racer")
    finally:
        stop.set()
        thread.join(130)
    assert not problems
    assert seen["voices"] > 0 and seen["missing"] > 0
