"""One job: job -> TTSRequest -> voice -> engine -> encoded audio -> result items.

One code path, `Worker.run(job)`, a plain generator of result items: one item for a normal job,
one per text chunk for `"stream": true`, and a coded error payload (errors.WorkerError) as the
last item when something fails. Nothing a job does can stop the worker.

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
import contextlib
import functools
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from f5worker import presets
from f5worker.audio import Audio, Voice
from f5worker.config import Settings
from f5worker.engine.f5tts import F5TTSEngine, SynthesisParams, free_memory
from f5worker.errors import InternalError, WorkerError
from f5worker.job.codecs import MIME_TYPES, StreamResampler, encode, resample, shorten_pauses
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
from f5worker.job.voices import VoiceLibrary, default_voice, fit_voice
from f5worker.models.reference import ModelRef
from f5worker.s3 import make_client

log = logging.getLogger(__name__)

_DONE = object()


@dataclass
class _JobStats:
    chars: int = 0
    audio_s: float = 0.0
    items: int = 0


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
        )
        policy = FetchPolicy.from_settings(settings)
        self.fetcher = fetcher or RefAudioFetcher(policy, s3_client_factory=worker_s3)
        self.store = store if store is not None else output_store(settings)
        self._pool = ThreadPoolExecutor(
            max_workers=settings.max_concurrency, thread_name_prefix="tts-job"
        )
        # Called on a fatal error (GPU broken): start_sdk points it at the SDK's refresh flag.
        self.on_fatal: Callable[[], None] = lambda: None

    # -- the SDK's entry points --------------------------------------------------------------

    async def handle(self, job: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The SDK handler: run() stepped in the pool, each item yielded as soon as it exists."""
        loop = asyncio.get_running_loop()
        items = self.run(job)
        try:
            while True:
                item = await loop.run_in_executor(self._pool, next, items, _DONE)
                if item is _DONE:
                    return
                yield item
        finally:
            # A cancelled step may still be running (ValueError); the generator is then
            # collected after it finishes.
            with contextlib.suppress(ValueError):
                items.close()

    async def handle_collected(self, job: dict[str, Any]) -> Any:
        """For SDK modes that cannot stream: the list of items, or the error payload alone."""
        loop = asyncio.get_running_loop()
        items = await loop.run_in_executor(self._pool, lambda: list(self.run(job)))
        if items and "error" in items[-1]:
            return items[-1]
        return items

    # -- one job ------------------------------------------------------------------------------

    def run(self, job: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """All result items of one job; a failure is the last item, never an exception."""
        job_id = str(job.get("id", "-"))
        started = time.perf_counter()
        stats = _JobStats()
        try:
            yield from self._items(job.get("input"), job_id, stats)
        except WorkerError as err:
            log.warning("job %s failed: %s", job_id, err.code)
            if err.fatal:
                self.on_fatal()
            yield err.to_payload() | {"worker_version": self.settings.worker_version}
            return
        except Exception:
            # Logged with its traceback for operators (ERROR); the client gets no internals.
            log.exception("job %s failed unexpectedly", job_id)
            payload = InternalError("unexpected error; see the worker log").to_payload()
            yield payload | {"worker_version": self.settings.worker_version}
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

    def _items(self, raw: Any, job_id: str, stats: _JobStats) -> Iterator[dict[str, Any]]:
        clock = _Clock()
        req = parse_request(raw)
        ref, engine, load_s = self.models.get(req.model)
        if load_s is not None:
            clock.stages["model_load"] = load_s
        stats.chars = len(req.text)
        budget = ResultBudget(self.max_result_b64)
        deliver = Delivery(req.return_mode, req.format, job_id, self.store, budget)
        preset, nfe_step = presets.resolve(req.quality, req.nfe_step, self.settings.default_quality)
        with clock("voice"):
            # Before any duration is estimated: the clip's pace sets the output's length.
            voice = fit_voice(self._voice(req), preset.max_ref_seconds)
        seed = req.seed if req.seed is not None else secrets.randbelow(MAX_SEED + 1)
        params = SynthesisParams(
            seed=seed,
            nfe_step=nfe_step,
            speed=req.speed,
            cfg_strength=req.cfg_strength,
            sway_sampling_coef=req.sway_sampling_coef,
            cross_fade_duration=req.cross_fade_duration,
        )
        if req.stream:
            items = self._stream(engine, req, voice, params, deliver, clock)
        else:
            items = self._whole(engine, req, voice, params, deliver, clock)
        for item in items:
            stats.items += 1
            stats.audio_s += item["duration_s"]
            yield item | {
                "seed": seed,
                "model": ref.name,
                "quality": preset.name,
                "nfe_step": nfe_step,
                "ref_audio_s": round(voice.audio.duration_s, 3),
                "worker_version": self.settings.worker_version,
            }

    def _whole(
        self,
        engine: F5TTSEngine,
        req: TTSRequest,
        voice: Voice,
        params: SynthesisParams,
        deliver: Delivery,
        clock: _Clock,
    ) -> Iterator[dict[str, Any]]:
        with clock("synthesis"):
            audio = engine.synthesize(req.text, voice, params)
        if req.remove_silence:
            audio = shorten_pauses(audio)
        audio = resample(audio, req.sample_rate or audio.sample_rate)
        yield self._deliver(audio, req, deliver, clock, index=0)

    def _stream(
        self,
        engine: F5TTSEngine,
        req: TTSRequest,
        voice: Voice,
        params: SynthesisParams,
        deliver: Delivery,
        clock: _Clock,
    ) -> Iterator[dict[str, Any]]:
        """One item per text chunk; pieces concatenate to the whole utterance (pcm exactly)."""
        count = len(engine.split_text(req.text, voice, req.speed))
        rate = req.sample_rate or engine.sample_rate
        resampler = StreamResampler(engine.sample_rate, rate)
        pieces = engine.synthesize_stream(req.text, voice, params)
        for index in range(count):
            with clock("synthesis"):
                piece = next(pieces, None)
            if piece is None:
                break
            if req.remove_silence:
                piece = shorten_pauses(piece)
            piece = resampler(piece, last=index == count - 1)
            item = self._deliver(piece, req, deliver, clock, index=index)
            yield item | {"chunk": index, "chunks": count}
            clock.reset()

    def _deliver(
        self, audio: Audio, req: TTSRequest, deliver: Delivery, clock: _Clock, index: int
    ) -> dict[str, Any]:
        with clock("encode"):
            data = encode(audio, req.format)
        with clock("upload"):
            out = deliver(data, index)
        if "audio_url" not in out:
            clock.drop("upload")  # inline: base64 only, not worth a stage of its own
        return out | {
            "format": req.format,
            "mime_type": MIME_TYPES[req.format],
            "sample_rate": audio.sample_rate,
            "duration_s": round(audio.duration_s, 3),
            "timings": clock.rounded(),
        }

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

    def load(ref: ModelRef) -> F5TTSEngine:
        directory = prepared.get(ref.name)
        if directory is None:
            from f5worker.models.source import prepare_model

            directory = prepare_model(settings, ref=ref).model_dir
            prepared[ref.name] = directory  # a held version: valid for the process's life
        return load_dir(directory)

    engine = load_dir(model_dir)
    pool = ModelPool(settings.model_refs, load, settings.max_resident_models, free_memory)
    pool.add(pool.default, engine)
    if settings.models_preload == "all":
        for ref in pool.refs[1 : pool.max_resident]:
            pool.add(ref, load(ref))
    return Worker(engine, settings, models=pool)


def _no_load(ref: ModelRef) -> F5TTSEngine:
    raise AssertionError(f"a single-model worker has no loader (asked for {ref.key})")
