"""Batch jobs (`texts`): many short texts in one job, one result item per entry, in order.

Each entry is a request of its own (schema.parse_entry: the batch's fields with the entry's
text, voice, seed and format), prepared as a single job is (Worker.prepare_request, passed
in), so an entry's audio is what the same text sent alone with the same seed gives. The engine
makes all entries in as few passes as it can (F5TTSEngine.synthesize_lines: the chunks of
entries that share a voice are batched together, as the chunks of one long text are).

Failures: a malformed batch (texts not a list, empty, too many entries or characters, with
`text` or `stream`), or one whose entries add up to more audio than MAX_AUDIO_SECONDS (the
bound is per job, summed before any model work), fails the job. An entry that is not valid, or
whose voice cannot be found, or whose result is too large, fails only its own item: `{"index":
i, "item_error": {error, error_code, retryable}}`. The payload is nested because the RunPod
worker loop ends a job at the first item with a top-level `error` key, which would drop the
entries after it. An engine failure (out of memory, a broken GPU) or a cancel still fails the
whole job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from f5worker.engine.plan import Joiner, Line
from f5worker.engine.scheduler import WorkTag
from f5worker.errors import JobCancelled, TextTooLong, WorkerError
from f5worker.job.output import ResultBudget
from f5worker.job.prepared import JobControl, Piece, PreparedJob
from f5worker.job.schema import TTSRequest, parse_entry
from f5worker.job.synthesis import checked, placed, whole_item

if TYPE_CHECKING:
    from f5worker.job.prepared import VoiceChoice

log = logging.getLogger(__name__)

# (voice, ref_audio, ref_text, ref_language, bound) -> the fitted voice (prepared.VoiceChoice)
# or the error
VoiceMemo = dict[tuple[Any, ...], "VoiceChoice | WorkerError"]
# Worker.prepare_request for one entry: (entry, result budget, voice memo) -> prepared entry.
PrepareEntry = Callable[[TTSRequest, ResultBudget, VoiceMemo], PreparedJob]
# Worker.error_payload: (error, job id) -> the coded payload (and the fatal-error hook).
ErrorPayload = Callable[[WorkerError, str], dict[str, Any]]


@dataclass
class PreparedBatch:
    """A validated batch: each entry prepared, or the coded error that fails its item."""

    req: TTSRequest
    entries: list[PreparedJob | WorkerError]
    job_id: str

    @property
    def chars(self) -> int:
        return sum(e.chars for e in self.entries if isinstance(e, PreparedJob))


def prepare(
    req: TTSRequest, job_id: str, prepare_entry: PrepareEntry, budget: ResultBudget
) -> PreparedBatch:
    """Every entry prepared against one result budget and one memo of voices. The caller has
    checked what every entry shares (`model`, `return`) before: that fails the whole batch."""
    voices: VoiceMemo = {}
    entries: list[PreparedJob | WorkerError] = []
    for raw in req.texts or ():
        try:
            entries.append(prepare_entry(parse_entry(req, raw), budget, voices))
        except WorkerError as err:
            if err.fatal:
                raise
            entries.append(err)
    return PreparedBatch(req, entries, job_id)


def check_audio_budget(batch: PreparedBatch) -> None:
    """MAX_AUDIO_SECONDS bounds a job, not each of its entries: the entries' audio, estimated
    as split_text estimates one text's, is summed before any model work, so a batch costs no
    more than the costliest single job."""
    valid = [e for e in batch.entries if isinstance(e, PreparedJob)]
    if not valid:
        return
    engine = valid[0].engine  # the batch's one model
    seconds = sum(engine.estimate_seconds(e.chunks, e.voice, e.req.speed) for e in valid)
    if seconds > engine.max_audio_s:
        raise TextTooLong(
            f"this batch's {len(valid)} texts would make about {seconds:.0f} s of audio in all; "
            f"this worker's limit is {engine.max_audio_s:g} s per job (split it into several)"
        )


def items(
    batch: PreparedBatch, control: JobControl, failed: ErrorPayload, version: str
) -> Iterator[dict[str, Any]]:
    """One item per entry, in order, each as soon as it and every entry before it are done.
    Progress counts chunks over all entries; a cancel is honoured between engine passes."""
    valid = [(i, e) for i, e in enumerate(batch.entries) if isinstance(e, PreparedJob)]
    ready: dict[int, dict[str, Any]] = {
        i: _failed(failed, e, i, batch.job_id)
        for i, e in enumerate(batch.entries)
        if isinstance(e, WorkerError)
    }
    total = sum(len(e.chunks) for _, e in valid)
    done, following = 0, 0
    made = _made(valid, WorkTag(batch.job_id, control.cancelled))
    try:
        while following < len(batch.entries):
            while following in ready:
                yield ready.pop(following)
                following += 1
            if following == len(batch.entries):
                return
            if control.cancelled():
                raise JobCancelled(f"cancelled after {done} of {total} chunks")
            started = time.perf_counter()
            line, pieces = next(made)
            index, entry = valid[line]
            stages = entry.clock.stages  # its checks' own stages (verify, retry) are in already
            checking = stages.get("verify", 0.0) + stages.get("retry", 0.0)
            stages["synthesis"] = time.perf_counter() - started - checking
            done += len(pieces)
            control.progress(done, total)
            ready[index] = _finished(failed, version, entry, index, pieces, batch.job_id)
    finally:
        made.close()


def _made(
    valid: list[tuple[int, PreparedJob]], tag: WorkTag
) -> Generator[tuple[int, list[Piece]], None, None]:
    """(line, its pieces) as each entry's chunks are made, each chunk checked (verify,
    captions: words) before the entry's chunks are joined."""
    if not valid:
        return
    engine = valid[0][1].engine  # the batch's one model: every entry shares `model`
    lines = [Line(e.voice, e.chunks, e.params) for _, e in valid]
    made = engine.synthesize_line_waves(
        lines, tag, seen=lambda n, hit: valid[n][1].saw_reference(hit)
    )
    try:
        for line, waves in made:
            yield line, _joined(valid[line][1], waves, tag)
    finally:
        made.close()


def _joined(entry: PreparedJob, waves: list[np.ndarray], tag: WorkTag) -> list[Piece]:
    joiner = Joiner(len(waves), entry.engine.sample_rate, entry.params.cross_fade_duration)
    out = []
    for n, (text, made) in enumerate(zip(entry.chunks, waves, strict=True)):
        wave, check = checked(entry, n, made, tag)
        piece = Piece(n, len(waves), text, joiner.add(wave), check)
        out.append(placed(piece, wave, joiner))
    return out


def _finished(
    failed: ErrorPayload,
    version: str,
    entry: PreparedJob,
    index: int,
    made: list[Piece],
    job_id: str,
) -> dict[str, Any]:
    try:
        item = whole_item(entry, made, index=index)
    except WorkerError as err:  # the result alone is too large, say: this entry fails
        return _failed(failed, err, index, job_id)
    return {"index": index} | item | entry.stamp(version)


def _failed(failed: ErrorPayload, err: WorkerError, index: int, job_id: str) -> dict[str, Any]:
    payload = failed(err, f"{job_id}[{index}]")
    version = payload.pop("worker_version")
    return {"index": index, "item_error": payload, "worker_version": version}
