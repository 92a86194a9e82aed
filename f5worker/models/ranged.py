"""Parallel ranged GETs into open files, each hashed in order while it fills. Never imports torch.

Why not boto3's transfer manager (s3transfer), which we tried first? Measured with
scripts/bench_s3_sync.py (docs/decisions/002-own-ranged-get-s3-engine.md): with response checksums
set to `when_required`, which S3-compatible stores need, s3transfer fetches each object's first
part alone and schedules the rest only when it completes (one part's time lost per file on a slow
link), funnels every write through one IO thread, and refetches a broken part from its start. Here
every size is known from the manifest, so all ranges are requested at once, the network threads
write with pwrite, a broken range resumes from the last byte received, and sha256 runs over the
contiguous prefix as it grows, so verification costs no second pass over the file.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from f5worker.s3 import RETRYABLE

log = logging.getLogger(__name__)

MiB = 1024 * 1024
_HASH_READ = 8 * MiB


@dataclass(frozen=True)
class RangedConfig:
    part_size: int = 16 * MiB  # per ranged GET; small enough that 16 connections share a file
    concurrency: int = 16  # connections; the client's pool must be at least this large
    read_size: int = 1 * MiB  # per body read and pwrite
    attempts: int = 5  # per range, counting the first
    backoff_s: float = 0.2  # doubled after each failed attempt


class RangeFailed(Exception):
    """A range could not be fetched; carries the key and the last underlying error."""

    def __init__(self, key: str, cause: BaseException, attempts: int) -> None:
        super().__init__(f"{key}: {type(cause).__name__} after {attempts} attempt(s)")
        self.key = key
        self.cause = cause
        self.attempts = attempts


class RangeMismatch(ValueError):
    """The store answered a ranged GET with other bytes than asked for (or ignored Range)."""


class _LocalWriteError(Exception):
    """Writing to the local file failed (disk full, I/O error): never worth a network retry."""


class HashingSink:
    """Positional writes from many threads into one file, hashed in file order as they land.

    Writers call write_at() with disjoint ranges in any order. Whichever writer finds the hash
    idle extends it over the contiguous prefix, reading back from the page cache what arrived
    ahead, so no part is held in memory and hashing overlaps the transfer. A rewrite of
    already-hashed bytes with different ones marks the sink inconsistent.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.size = 0
        self.inconsistent = False
        self._hashed = 0
        self._ahead: list[tuple[int, int]] = []  # heap of written (start, end) ranges
        self._digest = hashlib.sha256()
        self._lock = threading.Lock()  # guards the fields above, never held during I/O
        self._hashing = threading.Lock()  # one hasher at a time

    def write_at(self, offset: int, data: bytes | memoryview) -> None:
        view = memoryview(data)
        end = offset + len(view)
        with self._lock:
            hashed = self._hashed
        if offset < hashed:
            overlap = min(end, hashed) - offset
            if os.pread(self.fd, overlap, offset) != view[:overlap]:
                self.inconsistent = True
        written = 0
        while written < len(view):
            written += os.pwrite(self.fd, view[written:], offset + written)
        with self._lock:
            self.size = max(self.size, end)
            heapq.heappush(self._ahead, (offset, end))
        self._advance(block=False)

    def _advance(self, block: bool) -> None:
        if not self._hashing.acquire(blocking=block):
            return  # the current hasher picks this range up before it stops
        try:
            while True:
                with self._lock:
                    start = end = self._hashed
                    while self._ahead and self._ahead[0][0] <= end:
                        end = max(end, heapq.heappop(self._ahead)[1])
                if end == start:
                    return
                for pos in range(start, end, _HASH_READ):
                    chunk = os.pread(self.fd, min(_HASH_READ, end - pos), pos)
                    if not chunk:
                        raise OSError("short read while hashing a download")
                    self._digest.update(chunk)
                with self._lock:
                    self._hashed = end
        finally:
            self._hashing.release()

    def hexdigest(self) -> str | None:
        """The sha256 of the whole file, or None if some range was never written."""
        self._advance(block=True)
        with self._lock:
            if self._hashed != self.size or self._ahead:
                return None
            return self._digest.copy().hexdigest()


@dataclass
class Target:
    """One object to download into an open file: s3://bucket/key, `size` bytes, into sink."""

    key: str
    size: int
    sink: HashingSink


def download_ranges(
    client: Any,
    bucket: str,
    targets: list[Target],
    config: RangedConfig,
    on_done: Callable[[Target], None] = lambda target: None,
) -> None:
    """Fetch every target with parallel ranged GETs, calling on_done(target) (from a worker
    thread) as each one completes. The first failure, a RangeFailed after its retries or
    whatever on_done raised, cancels the ranges not yet started and is raised here."""
    parts = [
        (target, start, min(start + config.part_size, target.size))
        for target in targets
        for start in range(0, target.size, config.part_size)
    ]
    left = {id(t): sum(1 for p in parts if p[0] is t) for t in targets}
    lock = threading.Lock()
    stop = threading.Event()

    def run(target: Target, start: int, end: int) -> None:
        if _fetch(client, bucket, target, start, end, config, stop):
            with lock:
                left[id(target)] -= 1
                finished = left[id(target)] == 0
            if finished:
                on_done(target)

    for target in targets:
        if target.size == 0:
            on_done(target)
    pool = ThreadPoolExecutor(config.concurrency, thread_name_prefix="s3-range")
    try:
        futures = [pool.submit(run, *part) for part in parts]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in done:
            if future.exception() is not None:
                stop.set()
                raise future.exception()  # type: ignore[misc]
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)


def _fetch(
    client: Any,
    bucket: str,
    target: Target,
    start: int,
    end: int,
    config: RangedConfig,
    stop: threading.Event,
) -> bool:
    """GET bytes [start, end) of target.key, resuming after a broken body up to config.attempts.
    False when it stopped early because another range failed."""
    pos = start
    for attempt in range(1, config.attempts + 1):
        if stop.is_set():
            return False
        try:
            response = client.get_object(
                Bucket=bucket, Key=target.key, Range=f"bytes={pos}-{end - 1}"
            )
            _check_range(response.get("ContentRange"), pos, end, target.size)
            body = response["Body"]
            while pos < end and not stop.is_set():
                chunk = body.read(min(config.read_size, end - pos))
                if not chunk:
                    raise ConnectionError(f"body ended at byte {pos} of range {start}-{end}")
                try:
                    target.sink.write_at(pos, chunk)
                except OSError as exc:
                    raise _LocalWriteError() from exc
                pos += len(chunk)
            body.close()
            return pos == end
        except _LocalWriteError as exc:
            raise RangeFailed(target.key, exc.__cause__ or exc, attempt) from exc.__cause__
        except RETRYABLE as exc:
            if attempt == config.attempts:
                raise RangeFailed(target.key, exc, attempt) from exc
            log.debug(
                "range %d-%d of %s broke at %d (%s); resuming", start, end, target.key, pos, exc
            )
            time.sleep(config.backoff_s * 2 ** (attempt - 1))
        except Exception as exc:  # not retryable here: botocore already retried the request
            raise RangeFailed(target.key, exc, attempt) from exc
    return False


def _check_range(content_range: str | None, start: int, end: int, size: int) -> None:
    """A store that ignores Range would hand back the whole object at the wrong offset."""
    if content_range is None:
        if start == 0 and end == size:
            return
        raise RangeMismatch("the server ignored the Range header")
    if not content_range.startswith(f"bytes {start}-"):
        raise RangeMismatch(f"asked for bytes {start}-{end - 1}, got {content_range}")
    total = content_range.rpartition("/")[2]
    if total.isdigit() and int(total) != size:
        raise RangeMismatch(f"object is {total} bytes, the manifest says {size}")
