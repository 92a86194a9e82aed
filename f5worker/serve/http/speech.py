"""A prepared job -> its encoded audio, one text chunk at a time, one chunk ahead of the sender.

encoded_chunks is the synchronous pipeline a pool thread steps through: the worker's pieces
(the engine's one torch thread makes each), resampled and encoded as one continuous stream
(stream_codecs.py). AudioStream drives it from the event loop: when chunk N is handed to the
sender, the thread already synthesizes chunk N+1, so encoding and network I/O overlap the GPU
work instead of adding to it. Closing the stream (the client left, or the response ended) sets
the job's cancel flag, so no chunk after the one in progress is made, and releases the
request's slot only once the thread is done with it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Generator
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from f5worker.errors import InternalError, JobCancelled
from f5worker.job.prepared import JobControl, PreparedJob
from f5worker.job.shaping import Shaper
from f5worker.job.stream_codecs import stream_encoder

if TYPE_CHECKING:  # the worker module imports torch, which the server must not wait for
    from f5worker.job.worker import Worker


@dataclass
class Progress:
    """What a streamed job has made so far (read by the route's log line and by tests)."""

    chunks_done: int = 0
    chunks_total: int = 0
    samples: int = 0  # at the model's rate
    sample_rate: int = 24000
    failed: bool = False  # set by the route when a chunk after the first fails
    error_code: str | None = None  # that failure's code (for /metrics)

    @property
    def audio_s(self) -> float:
        return self.samples / self.sample_rate

    def __call__(self, done: int, total: int) -> None:  # JobControl.progress
        self.chunks_done, self.chunks_total = done, total


def prepare_speech(
    worker: Worker,
    raw: dict[str, Any],
    request_id: str,
    first_chunk_bytes: int | None,
    cancelled: Callable[[], bool],
) -> PreparedJob:
    """Worker.prepare for the speech route, in a pool thread; not for a client already gone."""
    if cancelled():
        raise JobCancelled("the client left while its request waited")
    job = worker.prepare(raw, request_id, first_chunk_bytes)
    if not isinstance(job, PreparedJob):  # a batch needs `texts`, which this route never sends
        raise InternalError("the speech route prepared a batch")
    return job


def encoded_chunks(
    worker: Worker, job: PreparedJob, fmt: str, control: JobControl, progress: Progress
) -> Generator[bytes, None, None]:
    """The job's audio as `fmt` bytes; what concatenates to one file. Runs in a pool thread."""
    progress.sample_rate = job.engine.sample_rate
    shape = Shaper(job.engine.sample_rate, job.req.sample_rate, job.req.remove_silence, True)
    encoder = stream_encoder(fmt, shape.out_rate)
    try:
        for piece in worker.pieces(job, control):
            progress.samples += piece.audio.samples.size
            data = encoder.encode(shape(piece.audio, last=piece.last).audio)
            if data:
                yield data
        tail = encoder.finish()
        if tail:
            yield tail
    finally:  # also when the stream is cut: the client left, a cancel, a failed chunk
        encoder.close()


class AudioStream:
    def __init__(
        self,
        chunks: Generator[bytes, None, None],
        pool: Executor,
        cancel: threading.Event,
        on_closed: Callable[[], None],
    ) -> None:
        self._chunks = chunks
        self._pool = pool
        self._cancel = cancel
        self._on_closed = on_closed
        self._pending: Future[bytes | None] | None = None
        self._closed = False

    async def next(self) -> bytes | None:
        """The next encoded bytes (None at the end); the chunk after starts at once."""
        if self._pending is None:
            self._pending = self._pool.submit(next, self._chunks, None)
        data = await asyncio.wrap_future(self._pending)
        self._pending = None if data is None else self._pool.submit(next, self._chunks, None)
        return data

    def close(self) -> None:
        """Idempotent; safe on the event loop (never waits for the thread)."""
        if self._closed:
            return
        self._closed = True
        self._cancel.set()
        pending, self._pending = self._pending, None
        if pending is None:
            self._finish()
        else:
            pending.add_done_callback(lambda _done: self._finish())

    def _finish(self) -> None:
        # The generator is not running here (no step pending), so closing it is safe; it
        # closes the engine's generator in turn.
        self._chunks.close()
        self._on_closed()
