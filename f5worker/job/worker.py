"""One job: job -> TTSRequest -> voice -> engine -> encoded audio -> result items.

One code path, `Worker.run(job)`, a plain generator of result items: one item for a normal job,
one per text chunk for `"stream": true`, one per entry for a batch (`texts`, batch.py), and a
coded error payload (errors.WorkerError) as the last item when something fails. Nothing a job
does can stop the worker. Captions (captions.py) are added to the items that carry audio. An
input with an `action` is a voice action instead (voice_actions.py): one JSON item.

`Worker.handle` is the async generator the RunPod SDK calls (runpod_queue.py says why). Each
step of a job runs in a thread pool of MAX_CONCURRENCY threads, so the SDK's event loop stays
free and concurrent jobs overlap their downloads, encoding and uploads while the engine
serialises the GPU work.

Error path, as measured in runpod 1.12: the handler never raises; an error is yielded as an item
with an `error` key. The real worker loop (rp_job.handle_job) turns that item into a FAILED job
whose `error` is "<CODE>: <message>". The SDK's local API (`make run`) does not look inside
yielded items: there the job is COMPLETED and the error item is the last element of `output`.
An exception raised inside a generator would instead put its traceback into the job's error in
the worker loop and make the local API answer HTTP 500, which is why none ever escapes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from f5worker import presets
from f5worker.audio import Audio, Voice
from f5worker.config import Settings
from f5worker.engine.f5tts import F5TTSEngine
from f5worker.engine.loading import free_memory
from f5worker.engine.plan import SynthesisParams
from f5worker.errors import InternalError, JobCancelled, WorkerError
from f5worker.job import captions
from f5worker.job.codecs import MIME_TYPES, StreamResampler, encode, pause_mask, resample
from f5worker.job.fetch import FetchPolicy, RefAudioFetcher
from f5worker.job.models import ModelPool
from f5worker.job.output import (
    MAX_RESULT_B64_BYTES,
    Delivery,
    OutputStore,
    ResultBudget,
    make_output_client,
)
from f5worker.job.schema import DEFAULT_VOICE, MAX_SEED, TTSRequest, parse_request
from f5worker.job.voice_actions import VoiceActions, is_action
from f5worker.job.voices import VoiceLibrary, default_voice, fit_voice
from f5worker.models.reference import ModelRef
from f5worker.s3 import make_client

if TYPE_CHECKING:
    from f5worker.job.batch import PreparedBatch

log = logging.getLogger(__name__)

_DONE = object()


@dataclass
class _JobStats:
    chars: int = 0
    audio_s: float = 0.0
    items: int = 0


@dataclass(frozen=True)
class JobControl:
    """What a serving adapter tells a running job, and hears from it between chunks.

    cancelled: true once the job should stop (a RunPod cancel, an HTTP client that went away);
        checked before each chunk, so the engine is free after the chunk in progress.
    progress: called with (chunks done, chunks in all) after each chunk.
    """

    cancelled: Callable[[], bool] = lambda: False
    progress: Callable[[int, int], None] = lambda _done, _total: None


@dataclass(frozen=True)
class Piece:
    """One text chunk's audio as the engine made it (before any output processing)."""

    index: int
    count: int
    text: str
    audio: Audio

    @property
    def last(self) -> bool:
        return self.index == self.count - 1


@dataclass
class PreparedJob:
    """A validated job, ready for its first model step (Worker.prepare)."""

    req: TTSRequest
    model: ModelRef
    engine: F5TTSEngine
    voice: Voice
    params: SynthesisParams
    preset: presets.Preset
    chunks: list[str]
    deliver: Delivery
    clock: _Clock

    @property
    def chars(self) -> int:
        return len(self.req.text)

    @property
    def fade_samples(self) -> int:
        """The cross-fade the engine holds back at the end of each piece but the last."""
        return int(self.params.cross_fade_duration * self.engine.sample_rate)

    def stamp(self, worker_version: str) -> dict[str, Any]:
        """What every item of this job says about how it was made."""
        return {
            "seed": self.params.seed,
            "model": self.model.name,
            "quality": self.preset.name,
            "nfe_step": self.params.nfe_step,
            "ref_audio_s": round(self.voice.audio.duration_s, 3),
            "worker_version": worker_version,
        }


class Worker:
    def __init__(
        self,
        engine: F5TTSEngine,
        settings: Settings,
        *,
        voices: VoiceLibrary | None = None,
        fetcher: RefAudioFetcher | None = None,
        store: OutputStore | None = None,
        max_result_b64: int = MAX_RESULT_B64_BYTES,
        models: ModelPool[F5TTSEngine] | None = None,
    ) -> None:
        self.engine = engine  # the default model's
        if models is None:
            models = ModelPool([settings.default_model], _no_load, 1)
            models.add(settings.default_model, engine)
        self.models = models
        self.max_result_b64 = max_result_b64
        self.settings = settings
        worker_s3 = _worker_s3(settings)
        self.voices = voices or VoiceLibrary(
            settings.s3_bucket,
            settings.s3_prefix,
            client_factory=worker_s3,
            max_cached=settings.voice_cache_size,
            cache_ttl_s=settings.voice_cache_ttl_s,
            writes=settings.voice_writes,
            max_voices=settings.voice_max_count,
        )
        policy = FetchPolicy.from_settings(settings)
        self.fetcher = fetcher or RefAudioFetcher(policy, s3_client_factory=worker_s3)
        self.voice_actions = VoiceActions(self.voices, self.fetcher, engine.sample_rate)
        self.store = store if store is not None else output_store(settings)
        self._pool = ThreadPoolExecutor(
            max_workers=settings.max_concurrency, thread_name_prefix="tts-job"
        )
        # Called on a fatal error (GPU broken): start_sdk points it at the SDK's refresh flag.
        self.on_fatal: Callable[[], None] = lambda: None

    # -- the SDK's entry points --------------------------------------------------------------

    async def handle(
        self, job: dict[str, Any], control: JobControl | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """The SDK handler: run() stepped in the pool, each item yielded as soon as it exists.

        A stop (the SDK cancels this task on a RunPod cancel or timeout, or its consumer goes
        away) sets a flag the job reads before each chunk: the step under way ends after its
        chunk, so the engine is free for the next job, and the job is closed then."""
        stop = threading.Event()
        base = control or JobControl()
        items = self.run(
            job,
            dataclasses.replace(base, cancelled=lambda: stop.is_set() or base.cancelled()),
        )
        step: Future[Any] | None = None
        try:
            while True:
                step = self._pool.submit(next, items, _DONE)
                item = await asyncio.wrap_future(step)
                if item is _DONE:
                    return
                yield item
        finally:
            stop.set()
            if step is not None and not step.done():
                # Still in its chunk: close the job from the pool thread once the step ends.
                step.add_done_callback(lambda _step: items.close())
            else:
                items.close()

    async def handle_collected(self, job: dict[str, Any]) -> Any:
        """For SDK modes that cannot stream: the list of items, or the error payload alone."""
        loop = asyncio.get_running_loop()
        items = await loop.run_in_executor(self._pool, lambda: list(self.run(job)))
        if items and "error" in items[-1]:
            return items[-1]
        return items

    # -- one job ------------------------------------------------------------------------------

    def run(
        self, job: dict[str, Any], control: JobControl | None = None
    ) -> Iterator[dict[str, Any]]:
        """All result items of one job; a failure is the last item, never an exception."""
        job_id = str(job.get("id", "-"))
        started = time.perf_counter()
        stats = _JobStats()
        try:
            if is_action(job.get("input")):  # voice management (voice_actions.py)
                item = self.voice_actions.run(job["input"]) | self._version()
                log.info("job %s done: %s", job_id, item["action"])
                yield item
                return
            prepared = self.prepare(job.get("input"), job_id)
            stats.chars = prepared.chars
            for item in self.items(prepared, control or JobControl()):
                stats.items += 1
                stats.audio_s += item.get("duration_s", 0.0)  # a failed batch entry has none
                yield item
        except WorkerError as err:
            yield self.error_payload(err, job_id)
            return
        except Exception:
            # Logged with its traceback for operators (ERROR); the client gets no internals.
            log.exception("job %s failed unexpectedly", job_id)
            yield self.error_payload(InternalError("unexpected error; see the worker log"), job_id)
            return
        compute = time.perf_counter() - started
        log.info(
            "job %s done: chars=%d audio_s=%.2f items=%d compute_s=%.3f rtf=%.3f",
            job_id,
            stats.chars,
            stats.audio_s,
            stats.items,
            compute,
            compute / max(stats.audio_s, 1e-6),
        )

    def error_payload(self, err: WorkerError, job_id: str) -> dict[str, Any]:
        """The coded error item of a failed job (and the fatal-error hook for a broken GPU)."""
        if not isinstance(err, InternalError):
            log.warning("job %s failed: %s", job_id, err.code)
        if err.fatal:
            self.on_fatal()
        return err.to_payload() | self._version()

    def _version(self) -> dict[str, str]:
        return {"worker_version": self.settings.worker_version}

    def prepare(
        self, raw: Any, job_id: str = "-", first_chunk_bytes: int | None = None
    ) -> PreparedJob | PreparedBatch:
        """Everything a job needs before the first model step: the validated request, its model
        (loaded if need be), the voice, the parameters and the text split into chunks. Every
        input error is raised here, so a caller that must commit to a response (HTTP status,
        headers) before synthesis can still answer with the right code. A batch (`texts`)
        is prepared entry by entry (batch.py), each entry's input error kept for its item.
        first_chunk_bytes: a shorter first chunk for a sooner first audio (split_text)."""
        req = parse_request(raw)
        if req.texts is not None:
            from f5worker.job import batch  # batch builds on this module

            return batch.prepare(self, req, job_id)
        return self.prepare_request(req, job_id, first_chunk_bytes=first_chunk_bytes)

    def prepare_request(
        self,
        req: TTSRequest,
        job_id: str = "-",
        *,
        budget: ResultBudget | None = None,
        voices: dict[tuple[Any, ...], Voice | WorkerError] | None = None,
        first_chunk_bytes: int | None = None,
    ) -> PreparedJob:
        """prepare() for a parsed request. A batch passes its entries one result budget and one
        memo of voices, so a reference clip is fetched once for all the entries that use it."""
        clock = _Clock()
        ref, engine, load_s = self.models.get(req.model)
        if load_s is not None:
            clock.stages["model_load"] = load_s
        budget = budget or ResultBudget(self.max_result_b64)
        deliver = Delivery(req.return_mode, req.format, job_id, self.store, budget)
        preset, nfe_step = presets.resolve(req.quality, req.nfe_step, self.settings.default_quality)
        with clock("voice"):
            # Before any duration is estimated: the clip's pace sets the output's length.
            voice = self._fitted_voice(req, preset.max_ref_seconds, voices)
        seed = req.seed if req.seed is not None else secrets.randbelow(MAX_SEED + 1)
        params = SynthesisParams(
            seed=seed,
            nfe_step=nfe_step,
            speed=req.speed,
            cfg_strength=req.cfg_strength,
            sway_sampling_coef=req.sway_sampling_coef,
            cross_fade_duration=req.cross_fade_duration,
        )
        chunks = engine.split_text(req.text, voice, req.speed, first_chunk_bytes)
        return PreparedJob(req, ref, engine, voice, params, preset, chunks, deliver, clock)

    def items(
        self, job: PreparedJob | PreparedBatch, control: JobControl
    ) -> Iterator[dict[str, Any]]:
        """The result items of a prepared job, each stamped with what served it."""
        if not isinstance(job, PreparedJob):
            from f5worker.job import batch  # batch builds on this module

            yield from batch.items(self, job, control)
            return
        produce = self._stream if job.req.stream else self._whole
        for item in produce(job, control):
            yield item | job.stamp(self.settings.worker_version)

    def pieces(self, job: PreparedJob, control: JobControl) -> Iterator[Piece]:
        """The engine's audio chunk by chunk (cross-faded; the pieces concatenate to the whole
        utterance). Between chunks the job reports progress and honours a cancel: the engine
        is free for the next job after at most one chunk's (or one batch's) work."""
        count = len(job.chunks)
        audio = job.engine.synthesize_stream(job.req.text, job.voice, job.params, job.chunks)
        try:
            for index, text in enumerate(job.chunks):
                if control.cancelled():
                    raise JobCancelled(f"cancelled after {index} of {count} chunks")
                with job.clock("synthesis"):
                    piece = next(audio, None)
                if piece is None:
                    return
                control.progress(index + 1, count)
                yield Piece(index, count, text, piece)
        finally:
            audio.close()

    def _whole(self, job: PreparedJob, control: JobControl) -> Iterator[dict[str, Any]]:
        yield self.finish(job, list(self.pieces(job, control)))

    def finish(self, job: PreparedJob, pieces: list[Piece], index: int = 0) -> dict[str, Any]:
        """The one result item of a whole utterance made of `pieces` (with its captions)."""
        samples = [piece.audio.samples for piece in pieces]
        audio = Audio(
            np.concatenate(samples).astype(np.float32, copy=False), job.engine.sample_rate
        )
        keep = pause_mask(audio) if job.req.remove_silence else None
        if keep is not None:
            audio = Audio(audio.samples[keep], audio.sample_rate)
        kept = len(audio.samples)
        audio = resample(audio, job.req.sample_rate or audio.sample_rate)
        item = self._deliver(audio, job, index=index)
        if job.req.captions:
            made = [(p.text, len(p.audio.samples)) for p in pieces]
            timing = captions.Placement(job.fade_samples, keep, kept, audio.duration_s)
            item |= captions.item_fields(job.req.captions, made, timing)
        return item

    def _stream(self, job: PreparedJob, control: JobControl) -> Iterator[dict[str, Any]]:
        """One item per text chunk; pieces concatenate to the whole utterance (pcm exactly).
        Captions: each item's own sentences, timed from the start of the utterance."""
        rate = job.req.sample_rate or job.engine.sample_rate
        resampler = StreamResampler(job.engine.sample_rate, rate)
        offset_s, numbered = 0.0, 1
        for piece in self.pieces(job, control):
            keep = pause_mask(piece.audio) if job.req.remove_silence else None
            audio = piece.audio
            if keep is not None:
                audio = Audio(audio.samples[keep], audio.sample_rate)
            kept = len(audio.samples)
            audio = resampler(audio, last=piece.last)
            item = self._deliver(audio, job, index=piece.index)
            if job.req.captions:
                made = [(piece.text, len(piece.audio.samples))]
                timing = captions.Placement(
                    job.fade_samples, keep, kept, audio.duration_s, offset_s, piece.last
                )
                item |= captions.item_fields(job.req.captions, made, timing, numbered)
                numbered += len(item["segments"])
            offset_s += audio.duration_s
            yield item | {"chunk": piece.index, "chunks": piece.count}
            job.clock.reset()

    def _deliver(self, audio: Audio, job: PreparedJob, index: int) -> dict[str, Any]:
        req, clock = job.req, job.clock
        with clock("encode"):
            data = encode(audio, req.format)
        with clock("upload"):
            out = job.deliver(data, index)
        if "audio_url" not in out:
            clock.drop("upload")  # inline: base64 only, not worth a stage of its own
        return out | {
            "format": req.format,
            "mime_type": MIME_TYPES[req.format],
            "sample_rate": audio.sample_rate,
            "duration_s": round(audio.duration_s, 3),
            "timings": clock.rounded(),
        }

    def _fitted_voice(
        self,
        req: TTSRequest,
        max_ref_seconds: float,
        memo: dict[tuple[Any, ...], Voice | WorkerError] | None,
    ) -> Voice:
        """The request's voice fitted to the preset; through `memo` (a batch's) each distinct
        voice is fetched once, and a failed fetch fails its other entries without a retry."""
        if memo is None:
            return fit_voice(self._voice(req), max_ref_seconds)
        key = (req.voice, req.ref_audio, req.ref_text, max_ref_seconds)
        if key not in memo:
            try:
                memo[key] = fit_voice(self._voice(req), max_ref_seconds)
            except WorkerError as err:
                memo[key] = err
        found = memo[key]
        if isinstance(found, WorkerError):
            raise found
        return found

    def _voice(self, req: TTSRequest) -> Voice:
        if req.ref_audio is not None:
            return self.fetcher.voice(req.ref_audio, req.ref_kind or "base64", req.ref_text or "")
        if req.voice is not None and req.voice != DEFAULT_VOICE:
            return self.voices.get(req.voice, fallback_to_default=req.voice_fallback)
        return default_voice()


class _Clock:
    """`with clock("stage"):` adds the stage's wall time in seconds to the current item."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}

    def __call__(self, name: str) -> _Stage:
        return _Stage(self, name)

    def reset(self) -> None:
        self.stages = {}

    def drop(self, name: str) -> None:
        self.stages.pop(name, None)

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in self.stages.items()}


class _Stage:
    def __init__(self, clock: _Clock, name: str) -> None:
        self.clock = clock
        self.name = name
        self.start = 0.0

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        elapsed = time.perf_counter() - self.start
        self.clock.stages[self.name] = self.clock.stages.get(self.name, 0.0) + elapsed


def _worker_s3(settings: Settings) -> Callable[[], Any]:
    """The worker's own S3 (voice library, s3:// references): one client, built on first use,
    with the default credential chain (AWS_* variables, profile, instance role)."""
    return functools.cache(lambda: make_client(settings.s3_endpoint_url, settings.aws_region))


def output_store(settings: Settings) -> OutputStore | None:
    """The output bucket of RunPod's BUCKET_* convention; None when it is not configured."""
    endpoint = settings.bucket_endpoint_url
    key, secret = settings.bucket_access_key_id, settings.bucket_secret_access_key
    if not (endpoint and key and secret):
        return None
    return OutputStore(
        lambda: make_output_client(endpoint, key, secret),
        settings.bucket_name,
        settings.bucket_url_expiry_s,
    )


def build_worker(
    settings: Settings,
    model_dir: Path,
    attn_backend: str = "torch",
    prepared: Mapping[str, Path] | None = None,
) -> Worker:
    """Load and warm the default model (model_dir); only then is the worker ready for jobs.

    The other models of MODELS load on first use, or here with MODELS_PRELOAD=all (as many as
    MAX_RESIDENT_MODELS allows); `prepared` maps model names to directories already prepared
    at start-up, which their first load then uses instead of running the source chain."""
    prepared = dict(prepared or {})
    prepared.setdefault(settings.default_model.name, model_dir)

    def load_dir(directory: Path) -> F5TTSEngine:
        engine = F5TTSEngine.load(
            directory,
            settings.device,
            attn_backend,
            dtype=settings.dtype,
            compile=settings.torch_compile,
            max_audio_s=settings.max_audio_s,
        )
        log.info("warm-up took %.2f s", engine.warm_up(default_voice()))
        return engine

    def fetch(ref: ModelRef) -> Path:
        directory = prepared.get(ref.name)
        if directory is None:
            from f5worker.models.source import prepare_model

            directory = prepare_model(settings, ref=ref).model_dir
            prepared[ref.name] = directory  # a held version: valid for the process's life
        return directory

    def load(ref: ModelRef) -> F5TTSEngine:
        return load_dir(fetch(ref))

    engine = load_dir(model_dir)
    pool = ModelPool(settings.model_refs, load, settings.max_resident_models, free_memory, fetch)
    pool.add(pool.default, engine)
    if settings.models_preload == "all":
        for ref in pool.refs[1 : pool.max_resident]:
            try:
                pool.add(ref, load(ref))
            except WorkerError as err:  # the default serves; a job naming this one retries it
                log.error("model %s not preloaded: %s: %s", ref.name, err.code, err.message)
    return Worker(engine, settings, models=pool)


def _no_load(ref: ModelRef) -> F5TTSEngine:
    raise AssertionError(f"a single-model worker has no loader (asked for {ref.key})")
