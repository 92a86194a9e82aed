"""The GPU proof's concurrency step (scripts/gpu_proof.py, step 7): N requests at once on one
engine, SCHEDULER=fair against fifo, in this process.

N requests start together on N threads, as N HTTP requests at work would: every fourth one
streams a page, the others a sentence, each tagged as its own request (engine/scheduler.py).
Per (N, policy): total audio seconds per wall second, and p95 time to first audio over all
requests and over the sentences alone. Policies alternate per N (fair, fifo, fifo, fair, ...).
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

from bench_common import PAGE, SENTENCE

CLIENTS = (1, 4, 8)
POLICIES = ("fair", "fifo")


def concurrency_rows(engine: Any, nfe: int, clients: tuple[int, ...] = CLIENTS) -> list[list[Any]]:
    """Rows of [N, policy, audio s, wall s, audio s per wall s, p95 first audio s (all),
    p95 first audio s (sentences)]."""
    from f5worker.engine import torch_thread
    from f5worker.engine.plan import SynthesisParams
    from f5worker.job.voices import default_voice

    voice, params = default_voice(), SynthesisParams(seed=11, nfe_step=nfe)
    rows = []
    try:
        for n in clients:
            for policy in POLICIES if n % 2 == 0 else POLICIES[::-1]:
                torch_thread.use_policy(policy)
                rows.append([n, policy, *_one_run(engine, voice, params, n)])
    finally:
        torch_thread.use_policy("fair")
    return sorted(rows, key=lambda r: (r[0], r[1]))


def _one_run(engine: Any, voice: Any, params: Any, n: int) -> list[Any]:
    from f5worker.engine.scheduler import WorkTag

    firsts: list[tuple[str, float]] = []
    audio = [0.0]
    lock = threading.Lock()
    start_line = threading.Barrier(n + 1)

    def request(i: int) -> None:
        kind = "page" if i % 4 == 0 else "sentence"
        start_line.wait()
        start, first, samples = time.perf_counter(), None, 0
        stream = engine.synthesize_stream(
            PAGE if kind == "page" else SENTENCE, voice, params, tag=WorkTag(f"r{i}")
        )
        for piece in stream:
            first = first if first is not None else time.perf_counter() - start
            samples += piece.samples.size
        with lock:
            firsts.append((kind, first or 0.0))
            audio[0] += samples / engine.sample_rate

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
    ]


def _p95(values: list[float]) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[94]
