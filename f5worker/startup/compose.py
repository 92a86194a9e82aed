"""The composition root: settings -> the Worker and every collaborator it is given.

The job path (job/worker.py) builds nothing from the settings itself; here the engine is loaded
and warmed, the model pool, the voice library, the reference fetcher and the output store are
made, and each is handed to the Worker. Tests and benchmarks call `make_worker` with an engine
they loaded and the collaborators they want to replace.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

from f5worker.asr.engine import WhisperTranscriber
from f5worker.asr.transcript import Transcriber
from f5worker.config import Settings
from f5worker.engine import torch_thread
from f5worker.engine.f5tts import F5TTSEngine
from f5worker.engine.loading import free_memory
from f5worker.errors import WorkerError
from f5worker.job.fetch import FetchPolicy, RefAudioFetcher
from f5worker.job.models import ModelPool
from f5worker.job.output import MAX_RESULT_B64_BYTES, OutputStore, make_output_client
from f5worker.job.voices import VoiceLibrary, default_voice
from f5worker.job.worker import Worker
from f5worker.model_ref import ModelRef
from f5worker.models.sources import ModelSources
from f5worker.s3 import ClientFactory, make_client

log = logging.getLogger(__name__)

W = TypeVar("W", bound=Worker)


def make_worker(
    engine: F5TTSEngine,
    settings: Settings,
    *,
    voices: VoiceLibrary | None = None,
    fetcher: RefAudioFetcher | None = None,
    store: OutputStore | None = None,
    max_result_b64: int = MAX_RESULT_B64_BYTES,
    models: ModelPool[F5TTSEngine] | None = None,
    worker_cls: type[W] = Worker,  # type: ignore[assignment]
    asr: Transcriber | None = None,
) -> W:
    """A Worker around a loaded default engine; each collaborator not given is built from the
    settings (the store: the output bucket of RunPod's BUCKET_* convention, if configured).
    The engine's scheduler takes its policy (SCHEDULER) and batching (BATCH_MAX_ITEMS,
    BATCH_WINDOW_MS) from these settings."""
    torch_thread.use_policy(settings.scheduler)
    torch_thread.use_batching(batch_rows(settings, engine), settings.batch_window_ms / 1000)
    if models is None:
        models = ModelPool([settings.default_model], _no_load, 1)
        models.add(settings.default_model, engine)
    worker_s3 = _worker_s3(settings)
    if voices is None:
        voices = VoiceLibrary(
            settings.s3_bucket,
            settings.s3_prefix,
            client_factory=worker_s3,
            max_cached=settings.voice_cache_size,
            cache_ttl_s=settings.voice_cache_ttl_s,
            writes=settings.voice_writes,
            max_voices=settings.voice_max_count,
        )
    if fetcher is None:
        fetcher = RefAudioFetcher(FetchPolicy.from_settings(settings), s3_client_factory=worker_s3)
    return worker_cls(
        settings,
        engine,
        models=models,
        voices=voices,
        fetcher=fetcher,
        store=store if store is not None else output_store(settings),
        max_result_b64=max_result_b64,
        asr=asr,
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
    sources = ModelSources.from_settings(settings)

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

            default = ref == settings.default_model
            directory = prepare_model(sources, ref, default=default).model_dir
            prepared[ref.name] = directory  # a held version: valid for the process's life
        return directory

    def load(ref: ModelRef) -> F5TTSEngine:
        return load_dir(fetch(ref))

    engine = load_dir(model_dir)
    pool = ModelPool(settings.model_refs, load, settings.max_resident_models, free_memory, fetch)
    pool.add(pool.default, engine)
    log.info(
        "model %s licence: %s",
        pool.default.name,
        settings.model_license or engine.spec.license,
    )
    if settings.models_preload == "all":
        for ref in pool.refs[1 : pool.max_resident]:
            try:
                pool.add(ref, load(ref))
            except WorkerError as err:  # the default serves; a job naming this one retries it
                log.error("model %s not preloaded: %s: %s", ref.name, err.code, err.message)
    asr = make_transcriber(settings, engine.device.type, sources)
    return make_worker(engine, settings, models=pool, asr=asr)


def make_transcriber(
    settings: Settings, device: str, sources: ModelSources | None = None
) -> WhisperTranscriber | None:
    """The ASR companion on the TTS engine's device (`cuda` or `cpu`); None with ASR_MODEL=none.
    Nothing is looked up or loaded here unless ASR_PRELOAD=on, and then on a background thread:
    neither /ping nor the first TTS job waits for it."""
    ref = settings.asr_model
    if ref is None:
        log.info("asr: off (ASR_MODEL=none)")
        return None
    sources = sources or ModelSources.from_settings(settings)

    def locate() -> Path:
        from f5worker.asr.weights import prepare_asr_model

        prepared = prepare_asr_model(sources, ref)
        log.info("asr: model %s from %s", ref.text, prepared.origin)
        return prepared.model_dir

    asr = WhisperTranscriber(locate, device, settings.asr_compute_type, name=ref.text)
    log.info(
        "asr: %s on %s (%s), %s",
        ref.text,
        device,
        asr.compute_type,
        "loading in the background" if settings.asr_preload else "loaded on first need",
    )
    if settings.asr_preload:
        asr.load_in_background()
    return asr


def _worker_s3(settings: Settings) -> ClientFactory:
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


def batch_rows(settings: Settings, engine: F5TTSEngine) -> int:
    """BATCH_MAX_ITEMS, with 0 chosen per device: 4 on CUDA, 1 (no batching) on CPU."""
    if settings.batch_max_items:
        return settings.batch_max_items
    return 4 if engine.device.type == "cuda" else 1


def _no_load(ref: ModelRef) -> F5TTSEngine:
    raise AssertionError(f"a single-model worker has no loader (asked for {ref.key})")
