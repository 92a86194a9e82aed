"""The GPU proof's concurrency step (scripts/gpu_proof.py, step 7): N requests at once on one
engine, in this process, under four set-ups: SCHEDULER=fair with batching across requests off
(BATCH_MAX_ITEMS=1), fair with batching on (4 rows a pass, the CUDA default), strict (fair
without the playback clock of docs/decisions/035) and fifo.

N requests start together on N threads, as N streamed HTTP requests at work would: every fourth
one streams a page, the others a sentence, each tagged as its own live request
(engine/scheduler.py). Per (N, set-up): total audio seconds per wall second, p95 time to first
audio over all requests and over the sentences alone, and the pages' worst stall (how long a
listener playing a page in real time from its first piece would have waited for the next). The
order of the set-ups alternates per N. If batching loses here, BATCH_MAX_ITEMS's CUDA default
flips to 1 (docs/decisions/034); if fair's clock costs the sentences more than it saves the
pages, SCHEDULER's default becomes strict (docs/decisions/035).
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

from bench_common import PAGE, SENTENCE

CLIENTS = (1, 4, 8)
SETUPS = {
    "fair": ("fair", 1),
    "fair+batch": ("fair", 4),
    "strict": ("strict", 1),
    "fifo": ("fifo", 1),
}


def concurrency_rows(engine: Any, nfe: int, clients: tuple[int, ...] = CLIENTS) -> list[list[Any]]:
    """Rows of [N, set-up, audio s, wall s, audio s per wall s, p95 first audio s (all),
    p95 first audio s (sentences), the pages' worst stall s]."""
    from f5worker.engine import torch_thread
    from f5worker.engine.plan import SynthesisParams
    from f5worker.job.voices import default_voice

    voice, params = default_voice(), SynthesisParams(seed=11, nfe_step=nfe)
    rows = []
    try:
        for n in clients:
            names = list(SETUPS) if n % 2 == 0 else list(SETUPS)[::-1]
            for name in names:
                policy, batch_rows = SETUPS[name]
                torch_thread.use_policy(policy)
                torch_thread.use_batching(batch_rows)
                rows.append([n, name, *_one_run(engine, voice, params, n)])
    finally:
        torch_thread.use_policy("fair")
        torch_thread.use_batching(1)
    return sorted(rows, key=lambda r: (r[0], r[1]))


def _one_run(engine: Any, voice: Any, params: Any, n: int) -> list[Any]:
    from f5worker.engine.scheduler import WorkTag

    firsts: list[tuple[str, float]] = []
    stalls: list[float] = []
    audio = [0.0]
    lock = threading.Lock()
    start_line = threading.Barrier(n + 1)

    def request(i: int) -> None:
        kind = "page" if i % 4 == 0 else "sentence"
        start_line.wait()
        start, first, samples, stall = time.perf_counter(), None, 0, 0.0
        tag = WorkTag(f"r{i}", live=True)
        text = PAGE if kind == "page" else SENTENCE
        stream = engine.synthesize_stream(text, voice, params, tag=tag)
        for piece in stream:
            now = time.perf_counter() - start
            if first is None:
                first = now
            else:  # played since the first piece, against what had come before this one
                stall = max(stall, now - first - samples / engine.sample_rate)
            samples += piece.samples.size
        with lock:
            firsts.append((kind, first or 0.0))
            audio[0] += samples / engine.sample_rate
            if kind == "page":
                stalls.append(stall)

    threads = [threading.Thread(target=request, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    start_line.wait()
    began = time.perf_counter()
    for t in threads:
        t.join(timeout=600)
    wall = time.perf_counter() - began
    sentences = [s for kind, s in firsts if kind == "sentence"]
    return [
        round(audio[0], 2),
        round(wall, 2),
        round(audio[0] / wall, 2),
        round(_p95([s for _, s in firsts]), 3),
        round(_p95(sentences), 3) if sentences else "-",
        round(max(stalls), 3) if stalls else "-",
    ]


def _p95(values: list[float]) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[94]
