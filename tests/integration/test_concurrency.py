"""50 jobs at once through the SDK's local API with MAX_CONCURRENCY=4: none lost, failed or mixed.

"Mixed" is checked in the strongest form: every job's audio is byte-identical to the same job
run alone afterwards, and its duration is the one its own text gives.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from f5worker.testing.worker import runsync

pytestmark = pytest.mark.slow

WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
]
# Ten lengths, none under 10 bytes (upstream slows those down, which would blur the order).
TEXTS = [" ".join(WORDS[: n + 2]).capitalize() + "." for n in range(10)]
JOBS = [
    {"text": TEXTS[i % 10], "seed": 1000 + i, "nfe_step": 2, "format": "pcm"} for i in range(50)
]


@pytest.fixture(scope="module")
def api(full_worker_urls) -> str:
    """The session's fully configured worker (MAX_CONCURRENCY=4, voice library)."""
    return full_worker_urls[0]


def test_fifty_concurrent_jobs(api):
    with ThreadPoolExecutor(max_workers=50) as pool:
        replies = list(pool.map(lambda inp: runsync(api, inp, timeout=600), JOBS))
    assert [r["status"] for r in replies] == ["COMPLETED"] * 50
    items = [r["output"] for r in replies]
    assert all(len(i) == 1 and "error" not in i[0] for i in items), items
    assert len({r["id"] for r in replies}) == 50

    # Each text has one duration, whatever the seed and whatever ran beside it ...
    by_text: dict[str, set[float]] = {}
    for inp, [item] in zip(JOBS, items, strict=True):
        by_text.setdefault(inp["text"], set()).add(item["duration_s"])
        assert item["seed"] == inp["seed"]
    assert all(len(durations) == 1 for durations in by_text.values()), by_text
    lengths = [next(iter(by_text[t])) for t in TEXTS]
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]

    # ... and each job's audio is exactly what it gives alone.
    for inp, [item] in zip(JOBS, items, strict=True):
        [alone] = runsync(api, inp)["output"]
        assert item["audio_base64"] == alone["audio_base64"], inp
