"""The RunPod adapter: job -> TTSRequest -> engine -> encoded audio -> result dict.

Every failure becomes a coded error payload (errors.WorkerError.to_payload); nothing a job does
can stop the worker. `serve()` loads and warms the engine before the SDK takes any job.
"""

from __future__ import annotations

import base64
import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from audio import encode
from config import Settings
from engine import F5TTSEngine, SynthesisParams
from errors import InternalError, OutputTooLarge, WorkerError
from schema import MAX_SEED, TTSRequest, parse_request
from voices import Voice, default_voice, voice_from_base64

log = logging.getLogger(__name__)

# RunPod caps a /runsync result at about 20 MB; leave room for the JSON around the audio.
MAX_RESULT_B64_BYTES = 15 * 1024 * 1024


class Worker:
    def __init__(self, engine: F5TTSEngine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings

    def handle(self, job: dict[str, Any]) -> dict[str, Any]:
        job_id = str(job.get("id", "-"))
        started = time.perf_counter()
        try:
            result = self._run(job.get("input"))
        except WorkerError as err:
            log.warning("job %s failed: %s", job_id, err.code)
            return err.to_payload() | {"worker_version": self.settings.worker_version}
        except Exception:
            # Logged with its traceback for operators; the client gets no internals.
            log.exception("job %s failed unexpectedly", job_id)
            payload = InternalError("unexpected error; see the worker log").to_payload()
            return payload | {"worker_version": self.settings.worker_version}
        compute = time.perf_counter() - started
        log.info(
            "job %s done: chars=%d audio_s=%.2f compute_s=%.3f rtf=%.3f",
            job_id,
            result.pop("_chars"),
            result["duration_s"],
            compute,
            compute / max(result["duration_s"], 1e-6),
        )
        return result

    def _run(self, raw: Any) -> dict[str, Any]:
        timings: dict[str, float] = {}
        clock = _Clock(timings)
        req = parse_request(raw)
        with clock("voice"):
            voice = _voice(req)
        seed = req.seed if req.seed is not None else secrets.randbelow(MAX_SEED + 1)
        with clock("synthesis"):
            audio = self.engine.synthesize(req.text, voice, _params(req, seed))
        with clock("encode"):
            data = base64.b64encode(encode(audio, req.format)).decode("ascii")
        if len(data) > MAX_RESULT_B64_BYTES:
            raise OutputTooLarge(
                f"encoded audio exceeds {MAX_RESULT_B64_BYTES} bytes; "
                "send shorter text or a compressed format"
            )
        return {
            "audio_base64": data,
            "format": req.format,
            "sample_rate": audio.sample_rate,
            "duration_s": round(audio.duration_s, 3),
            "seed": seed,
            "timings": {k: round(v, 4) for k, v in timings.items()},
            "worker_version": self.settings.worker_version,
            "_chars": len(req.text),
        }


class _Clock:
    """`with clock("stage"):` records the stage's wall time in seconds."""

    def __init__(self, sink: dict[str, float]) -> None:
        self.sink = sink
        self._name = ""
        self._start = 0.0

    def __call__(self, name: str) -> _Clock:
        self._name = name
        return self

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.sink[self._name] = time.perf_counter() - self._start


def _voice(req: TTSRequest) -> Voice:
    if req.ref_audio is not None and req.ref_text is not None:
        return voice_from_base64(req.ref_audio, req.ref_text)
    return default_voice()


def _params(req: TTSRequest, seed: int) -> SynthesisParams:
    return SynthesisParams(
        seed=seed,
        nfe_step=req.nfe_step,
        speed=req.speed,
        cfg_strength=req.cfg_strength,
        sway_sampling_coef=req.sway_sampling_coef,
        cross_fade_duration=req.cross_fade_duration,
    )


def build_worker(settings: Settings, model_dir: Path, attn_backend: str = "torch") -> Worker:
    """Load and warm the engine; only then is the worker ready for jobs."""
    engine = F5TTSEngine.load(model_dir, settings.device, attn_backend)
    log.info("warm-up took %.2f s", engine.warm_up(default_voice()))
    return Worker(engine, settings)


def start_sdk(
    worker: Worker, settings: Settings, start: Callable[[dict[str, Any]], None] | None = None
) -> None:
    """Hand the ready worker to the RunPod SDK, which reads its own --rp_* arguments."""
    if start is None:
        import runpod
        from runpod.serverless.modules.rp_logger import RunPodLogger

        RunPodLogger().set_level(settings.sdk_log_level)
        start = runpod.serverless.start
    start(
        {
            "handler": worker.handle,
            "concurrency_modifier": lambda _current: settings.max_concurrency,
        }
    )


def serve(settings: Settings, model_dir: Path, attn_backend: str = "torch") -> None:
    start_sdk(build_worker(settings, model_dir, attn_backend), settings)


if __name__ == "__main__":
    # `python handler.py` runs test_input.json once, the SDK's local-test convention.
    import model_cache_init

    raise SystemExit(model_cache_init.main())
