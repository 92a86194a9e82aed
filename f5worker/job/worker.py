"""One job: job -> TTSRequest -> voice -> engine -> shaped, encoded audio -> result items.

One code path, `Worker.run(job)`, a plain generator of result items: one item for a normal job,
one per text chunk for `"stream": true`, one per entry for a batch (`texts`, batch.py), and a
coded error payload (errors.WorkerError) as the last item when something fails. Nothing a job
does can stop the worker. Captions (captions.py) are added to the items that carry audio. An
input with an `action` is a voice action instead (voice_actions.py): one JSON item.

The Worker is given its collaborators (startup/compose.py builds them from the settings) and
knows no transport: the queue adapter (serve/queue.py) steps `run` on a thread pool, the HTTP
adapter (serve/http/) steps `prepare` and `pieces`.

Error path, as measured in runpod 1.12: `run` never raises; an error is its last item, with an
`error` key. The real worker loop (rp_job.handle_job) turns that item into a FAILED job whose
`error` is "<CODE>: <message>". The SDK's local API (`make run`) does not look inside yielded
items: there the job is COMPLETED and the error item is the last element of `output`. An
exception raised inside a generator would instead put its traceback into the job's error in
the worker loop and make the local API answer HTTP 500, which is why none ever escapes.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

from f5worker import presets
from f5worker.asr.transcript import Transcriber
from f5worker.config import Settings
from f5worker.engine.f5tts import F5TTSEngine
from f5worker.engine.plan import SynthesisParams
from f5worker.errors import AsrDisabled, InternalError, OutputTooLarge, WorkerError
from f5worker.job import batch, synthesis
from f5worker.job.batch import PreparedBatch, VoiceMemo
from f5worker.job.fetch import RefAudioFetcher
from f5worker.job.models import ModelPool
from f5worker.job.output import Delivery, OutputStore, ResultBudget
from f5worker.job.prepared import Clock, JobControl, Piece, PreparedJob, VoiceChoice
from f5worker.job.ref_transcripts import RefTranscripts
from f5worker.job.schema import DEFAULT_VOICE, MAX_SEED, TTSRequest, parse_request
from f5worker.job.usage import JobFigures
from f5worker.job.verify import Checker
from f5worker.job.voice_actions import VoiceActions, is_action
from f5worker.job.voices import VoiceLibrary, default_voice, fit_voice
from f5worker.model_ref import ModelRef

log = logging.getLogger(__name__)


class Worker:
    """The job path, given what it works with: the default model's engine and the pool of all
    it serves, the voice library, the reference fetcher and the output store (None: inline)."""

    def __init__(
        self,
        settings: Settings,
        engine: F5TTSEngine,
        *,
        models: ModelPool[F5TTSEngine],
        voices: VoiceLibrary,
        fetcher: RefAudioFetcher,
        store: OutputStore | None,
        max_result_b64: int,
        asr: Transcriber | None = None,
    ) -> None:
        self.settings = settings
        self.asr = asr  # the ASR companion (#23); None: ASR_MODEL=none
        # Transcripts of references sent without ref_text, cached by content for all jobs.
        self.ref_transcripts = RefTranscripts(asr)
        self.engine = engine  # the default model's; it sets the voice library's sample rate
        self.models = models
        self.voices = voices
        self.fetcher = fetcher
        self.store = store
        self.max_result_b64 = max_result_b64
        self._aliases = dict(settings.voice_aliases)
        self.voice_actions = VoiceActions(
            voices,
            fetcher,
            self.engine.sample_rate,
            require_consent=settings.voice_require_consent,
            transcripts=self.ref_transcripts,
        )
        # Called on a fatal error (GPU broken): each transport points it at its own way out.
        self.on_fatal: Callable[[], None] = lambda: None

    # -- one job ------------------------------------------------------------------------------

    def run(
        self,
        job: dict[str, Any],
        control: JobControl | None = None,
        figures: JobFigures | None = None,
    ) -> Generator[dict[str, Any], None, None]:
        """All result items of one job; a failure is the last item, never an exception.
        Each job logs `job <id> done: ...` and, but for voice actions, one metrics line
        (`job <id> metrics {json}`: usage.JobFigures, no user text; given `figures`, a
        transport reads them too)."""
        job_id = str(job.get("id", "-"))
        started = time.perf_counter()
        figures = figures if figures is not None else JobFigures()
        try:
            if is_action(job.get("input")):  # voice management (voice_actions.py)
                item = self.voice_actions.run(job["input"]) | self._version()
                log.info("job %s done: %s", job_id, item["action"])
                yield item
                return
            prepared = self.prepare(job.get("input"), job_id)
            if isinstance(prepared, PreparedJob):  # results delivered as items, not a stream
                _refuse_what_cannot_be_delivered(prepared)
            figures.voice = _voice_kind(prepared)
            for item in self.items(prepared, control or JobControl()):
                figures.add(item, time.perf_counter() - started)
                yield item
        except WorkerError as err:
            figures.failed(err.code)
            yield self.error_payload(err, job_id)
        except Exception:
            # Logged with its traceback for operators (ERROR); the client gets no internals.
            log.exception("job %s failed unexpectedly", job_id)
            internal = InternalError("unexpected error; see the worker log")
            figures.failed(internal.code)
            yield self.error_payload(internal, job_id)
        figures.total_s = time.perf_counter() - started
        if figures.status == "ok":
            log.info(
                "job %s done: chars=%d audio_s=%.2f items=%d compute_s=%.3f rtf=%.3f",
                job_id,
                figures.characters,
                figures.audio_s,
                figures.items,
                figures.total_s,
                figures.total_s / max(figures.audio_s, 1e-6),
            )
        log.info("job %s metrics %s", job_id, figures.as_json())

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
        if req.texts is None:
            return self.prepare_request(req, job_id, first_chunk_bytes=first_chunk_bytes)
        # What every entry shares fails the whole batch, before any entry is prepared.
        self.checker(req)
        self.models.get(req.model)
        Delivery(req.return_mode, req.format, job_id, self.store)  # `return: url` needs a bucket

        def entry(one: TTSRequest, budget: ResultBudget, voices: VoiceMemo) -> PreparedJob:
            return self.prepare_request(one, job_id, budget=budget, voices=voices)

        prepared = batch.prepare(req, job_id, entry, ResultBudget(self.max_result_b64))
        batch.check_audio_budget(prepared)
        return prepared

    def prepare_request(
        self,
        req: TTSRequest,
        job_id: str = "-",
        *,
        budget: ResultBudget | None = None,
        voices: VoiceMemo | None = None,
        first_chunk_bytes: int | None = None,
    ) -> PreparedJob:
        """prepare() for a parsed request. A batch passes its entries one result budget and one
        memo of voices, so a reference clip is fetched once for all the entries that use it."""
        checker = self.checker(req)  # before any work: a request the worker cannot check
        clock = Clock()
        ref, engine, load_s = self.models.get(req.model)
        if load_s is not None:
            clock.stages["model_load"] = load_s
        budget = budget or ResultBudget(self.max_result_b64)
        deliver = Delivery(req.return_mode, req.format, job_id, self.store, budget)
        preset, nfe_step = presets.resolve(req.quality, req.nfe_step, self.settings.default_quality)
        with clock("voice"):
            # Before any duration is estimated: the clip's pace sets the output's length.
            choice = self._fitted_voice(req, preset.max_ref_seconds, voices, clock)
        voice = choice.voice
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
        licence = self.licence_of(ref, engine)
        return PreparedJob(
            req,
            ref,
            engine,
            voice,
            params,
            preset,
            chunks,
            deliver,
            clock,
            choice.name,
            licence,
            voice_kind=choice.kind,
            voice_cached=choice.cached,
            ref_transcript=choice.transcript,
            checker=checker,
        )

    def checker(self, req: TTSRequest) -> Checker | None:
        """The ASR companion's checks a request asks for (`verify`, unset: VERIFY; `captions:
        words`), None when it asks for none; ASR_DISABLED when the worker runs without one."""
        verify = req.verify if req.verify is not None else self.settings.verify
        words = req.captions == "words"
        if not (verify or words):
            return None
        if self.asr is None:
            asked = 'captions "words"' if words else "verify"
            if verify and req.verify is None:
                asked = "this worker's VERIFY=on"
            raise AsrDisabled(f"{asked} needs the ASR companion, which is off (ASR_MODEL=none)")
        s = self.settings
        return Checker(self.asr, verify, words, s.verify_max_cer, s.verify_retries)

    def licence_of(self, ref: ModelRef, engine: F5TTSEngine | None = None) -> str:
        """A served model's licence: the operator's MODEL_LICENSE for the default model, else
        what its model.json recorded (models/licence.py), else what is known of its name."""
        if ref == self.models.default and self.settings.model_license:
            return self.settings.model_license
        if engine is not None:
            return engine.spec.license
        return (ref.hub.license if ref.hub else "") or "unknown"

    def items(
        self, job: PreparedJob | PreparedBatch, control: JobControl
    ) -> Iterator[dict[str, Any]]:
        """The result items of a prepared job, each stamped with what served it."""
        version = self.settings.worker_version
        if isinstance(job, PreparedBatch):
            yield from batch.items(job, control, self.error_payload, version)
            return
        if job.req.stream:
            made = synthesis.stream_items(job, self.pieces(job, control))
        else:
            made = iter([synthesis.whole_item(job, list(self.pieces(job, control)))])
        for item in made:
            yield item | job.stamp(version)

    def pieces(self, job: PreparedJob, control: JobControl) -> Generator[Piece, None, None]:
        """The engine's audio chunk by chunk (synthesis.pieces: progress and cancel between)."""
        return synthesis.pieces(job, control)

    def _fitted_voice(
        self, req: TTSRequest, max_ref_seconds: float, memo: VoiceMemo | None, clock: Clock
    ) -> VoiceChoice:
        """The request's voice (its name, as results give it, and the voice fitted to the
        preset); through `memo` (a batch's) each distinct voice is fetched (and transcribed)
        once, and a failed fetch fails its other entries without a retry."""
        if memo is None:
            return _fitted(self._voice(req, clock), max_ref_seconds)
        key = (req.voice, req.ref_audio, req.ref_text, req.ref_language, max_ref_seconds)
        if key not in memo:
            try:
                memo[key] = _fitted(self._voice(req, clock), max_ref_seconds)
            except WorkerError as err:
                memo[key] = err
        found = memo[key]
        if isinstance(found, WorkerError):
            raise found
        return found

    def _voice(self, req: TTSRequest, clock: Clock) -> VoiceChoice:
        """The voice, with the name results give (`ref_audio`, a library voice after
        VOICE_ALIASES, or `default`), its class for metrics and whether it was in memory."""
        if req.ref_audio is not None:
            return self._ref_voice(req, req.ref_audio, clock)
        if req.voice is None or req.voice == DEFAULT_VOICE:
            return VoiceChoice(DEFAULT_VOICE, default_voice(), "default", cached=True)
        name = self._aliases.get(req.voice.casefold(), req.voice)
        aliased = name != req.voice  # the operator's alias must exist: no silent default
        entry = self.voices.lookup(name, fallback_to_default=req.voice_fallback and not aliased)
        if entry.voice is default_voice():
            return VoiceChoice(DEFAULT_VOICE, entry.voice, "default", cached=True)
        return VoiceChoice(name, entry.voice, "alias" if aliased else "library", entry.cached)

    def _ref_voice(self, req: TTSRequest, ref: str, clock: Clock) -> VoiceChoice:
        """A reference sent with the job; without ref_text, the trimmed clip is transcribed
        here, on the job's thread (the ASR is not torch: the torch thread stays on synthesis),
        its time in the `ref_transcribe` stage when the transcript was not cached."""
        text = (req.ref_text or "").strip()
        if not text:
            self.ref_transcripts.require()  # refused before the clip is fetched
        voice = self.fetcher.voice(
            ref, req.ref_kind or "base64", (req.ref_text or "") if text else ""
        )
        if text:
            return VoiceChoice("ref_audio", voice, "ref_audio", cached=False)
        with clock("ref_transcribe"):
            voice, heard = self.ref_transcripts.voice_with_text(voice, req.ref_language)
        if heard.cached:
            clock.drop("ref_transcribe")
        return VoiceChoice("ref_audio", voice, "ref_audio", cached=False, transcript=heard)


def _voice_kind(job: PreparedJob | PreparedBatch) -> str:
    """The job's voice class for its metrics line (a batch's entries may differ: `mixed`)."""
    if isinstance(job, PreparedJob):
        return job.voice_kind
    kinds = {e.voice_kind for e in job.entries if isinstance(e, PreparedJob)}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def _fitted(choice: VoiceChoice, max_ref_seconds: float) -> VoiceChoice:
    return dataclasses.replace(choice, voice=fit_voice(choice.voice, max_ref_seconds))


# 16-bit samples: the formats whose size the duration alone sets (wav's header aside).
_UNCOMPRESSED = ("wav", "pcm")
_MARGIN = 1.1  # the estimate's duration rule is upstream's, and its cross-fades overlap


def _refuse_what_cannot_be_delivered(job: PreparedJob) -> None:
    """An uncompressed result that will plainly not fit the job's inline budget, and has no
    bucket to go to, is refused before any model work, with what to change, instead of after
    minutes of synthesis. Compressed formats are left to the delivery check (their size is
    known only once encoded). Only for results delivered as items (run): an HTTP audio stream
    carries no inline budget."""
    req, deliver = job.req, job.deliver
    if req.format not in _UNCOMPRESSED or req.remove_silence or not deliver.inline_only:
        return
    seconds = job.engine.estimate_seconds(job.chunks, job.voice, req.speed)
    rate = req.sample_rate or job.engine.sample_rate
    b64_bytes = seconds * rate * 2 * 4 / 3
    if b64_bytes > deliver.budget.left * _MARGIN:
        raise OutputTooLarge(
            f"about {seconds:.0f} s of {req.format} at {rate} Hz is about "
            f"{b64_bytes / 1e6:.0f} MB of base64, over the {deliver.budget.limit / 1e6:.0f} MB "
            "a result may carry inline (RunPod's /run cap is 10 MB); use a compressed format "
            "(mp3, opus), a lower sample_rate, shorter text, or `return: auto` on a worker "
            "with an output bucket"
        )
