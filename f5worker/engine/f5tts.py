"""F5TTSEngine: load a model directory, warm up, synthesize. The only torch / f5_tts user.

Models are built and loaded with upstream's own functions (load_model, load_vocoder; see
loading.py) and text is split with upstream's chunk_text. Sampling is upstream's CFM.sample,
restated in sampler.py as plain functions; this module decides how a request's chunks reach it
(docs/benchmarks.md has the measurements behind each choice):

- the text chunks of a request are grouped by a BatchPlan (plan.py; on CUDA: the first chunk
  alone for a stream's first audio, the rest as padded batches with the padding masked out of
  attention) instead of upstream's one thread per chunk;
- all model work runs on one thread (torch_thread.py), which keeps CPU operators fast; a pass
  runs a sampling step at a time, so the scheduler can put another request's first chunk between
  two steps (decision 033);
- each chunk is seeded with seed + its index, so a seed fixes the whole utterance;
- the reference's mel spectrogram is computed once per voice (a bounded LRU, reference_cache.py);
- optionally the transformer is compiled with torch.compile (off by default).

For a single chunk the result is bit-identical to upstream with the same seed (a test checks).
Upstream's habits that do not fit a server are left out: it prints user text and needs its
reference as a file on disk.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Generator, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torchaudio

from f5worker.audio import Audio, Voice
from f5worker.config.table import default as setting_default
from f5worker.engine import sampler, torch_thread
from f5worker.engine.chunking import bound_chunks, cap_combining_marks, shorten_first
from f5worker.engine.loading import load_model_dir
from f5worker.engine.plan import BatchPlan, Joiner, Line, SynthesisParams, chunk_seed, share_a_pass
from f5worker.engine.reference_cache import Reference, ReferenceCache, Seen, SeenBy, seen_by
from f5worker.engine.scheduler import Batchable, WorkTag
from f5worker.errors import GPUError, InternalError, InvalidInput, SynthesisFailed, TextTooLong
from f5worker.models.spec import SAMPLE_RATE, ModelSpec

log = logging.getLogger(__name__)

TARGET_RMS = 0.1  # upstream's loudness target for the reference
MAX_GENERATION_S = 22.0  # upstream's budget for reference + generated audio per chunk
# New audio in one chunk is at most this long. Upstream aims at 22 s minus the reference; only a
# transcript far too short for its audio (upstream slows texts under 10 bytes to speed 0.3)
# would ask for more, and without a bound one chunk could take minutes and gigabytes.
MAX_CHUNK_AUDIO_S = 30.0


class F5TTSEngine:
    def __init__(
        self,
        model: torch.nn.Module,
        vocoder: torch.nn.Module,
        spec: ModelSpec,
        device: torch.device,
        *,
        plan: BatchPlan | None = None,
        ref_cache_size: int = 16,
        compile: bool = False,
        max_audio_s: float = setting_default("max_audio_s"),  # MAX_AUDIO_SECONDS
    ) -> None:
        # Upstream's CFM.sample switches to eval mode on every call; this engine samples
        # without it, so dropout must be off from the start.
        self.model = model.eval()
        self.vocoder = vocoder.eval()
        self.spec = spec
        self.device = device
        self.sample_rate = SAMPLE_RATE
        self.plan = plan or BatchPlan.for_device(device)
        self.compiled = compile
        self.max_audio_s = max_audio_s
        self._hop = int(spec.mel_spec["hop_length"])
        # Shapes change with every request, so the graph is compiled for dynamic lengths.
        self._transformer: torch.nn.Module = (
            cast(torch.nn.Module, torch.compile(model.transformer, dynamic=True))
            if compile
            else model.transformer
        )
        self._dtype = next(model.parameters()).dtype
        self._refs = ReferenceCache(ref_cache_size)
        # Upstream's attention processors read the padding mask only when this flag is set; it
        # is set per padded batch from the plan, so engines that share a model (the benchmark's
        # variants) each get their own choice.
        self._attn_processors = [
            m.processor
            for m in model.modules()
            if hasattr(getattr(m, "processor", None), "attn_mask_enabled")
        ]
        # Model work runs on the one torch thread (torch_thread.py), so one job at a time is on
        # the model: GPU memory is sized for one batch, and the DiT's text-embedding cache lives
        # on the module between the steps of one sample.
        self._oom_in_a_row = 0

    @classmethod
    def load(
        cls,
        model_dir: Path,
        device: str = "auto",
        attn_backend: str = "torch",
        *,
        dtype: str = "auto",
        compile: bool = False,
        plan: BatchPlan | None = None,
        ref_cache_size: int = 16,
        max_audio_s: float = setting_default("max_audio_s"),
    ) -> F5TTSEngine:
        """Load any model directory that carries a model.json, without touching the network.

        dtype "auto" is upstream's choice: float16 on CUDA devices of compute capability 7 or
        newer, float32 elsewhere. compile=True wraps the transformer in torch.compile; the
        compilation happens during warm_up, so its cost lands in cold start, not in a job.
        Loading runs on the torch thread, as all later model work does.
        """
        make = functools.partial(
            cls, plan=plan, ref_cache_size=ref_cache_size, compile=compile, max_audio_s=max_audio_s
        )
        return torch_thread.run(_load, model_dir, device, attn_backend, dtype, make)

    def warm_up(self, voice: Voice) -> float:
        """A short synthesis so the first job pays no lazy-initialisation cost. With compile,
        a one-chunk and a two-chunk pass so both the unmasked and masked graphs exist."""
        start = time.perf_counter()
        params = SynthesisParams(seed=0, nfe_step=2)
        self.synthesize("Warm up.", voice, params)
        if self.compiled:
            self._generate_group(voice, ["Warm up.", "Once more."], params, [0, 1])
        return time.perf_counter() - start

    def synthesize(self, text: str, voice: Voice, params: SynthesisParams) -> Audio:
        """The whole utterance: the concatenation of what synthesize_stream yields."""
        pieces = [piece.samples for piece in self.synthesize_stream(text, voice, params)]
        return Audio(np.concatenate(pieces).astype(np.float32, copy=False), self.sample_rate)

    def synthesize_stream(
        self,
        text: str,
        voice: Voice,
        params: SynthesisParams,
        chunks: Sequence[str] | None = None,
        tag: WorkTag | None = None,
        seen: Seen | None = None,
    ) -> Generator[Audio, None, None]:
        """Yield audio chunk by chunk, cross-faded: each piece holds back the fade-out tail that
        the next chunk fades into, so the pieces concatenate to exactly the full utterance.

        `chunks`: the text already split by split_text (a caller that needs the chunk count or
        texts before the first piece passes them, so the text is split once); one piece each.
        `tag`: the request, for the scheduler (the first group goes before continuations);
        `seen`: told whether the voice's reference was cached (for this call alone)."""
        if chunks is None:
            chunks = self.split_text(text, voice, params.speed)
        joiner = Joiner(len(chunks), self.sample_rate, params.cross_fade_duration)
        waves = self.synthesize_waves(voice, params, chunks, tag, seen)
        try:
            for wave in waves:
                yield joiner.add(wave)
        finally:
            waves.close()

    def synthesize_waves(
        self,
        voice: Voice,
        params: SynthesisParams,
        chunks: Sequence[str],
        tag: WorkTag | None = None,
        seen: Seen | None = None,
    ) -> Generator[np.ndarray, None, None]:
        """Each chunk's own waveform, in order, before any cross-fade (synthesize_stream joins
        them; the job path joins them itself when it checks each chunk before joining it)."""
        tag = tag or WorkTag()
        for n, group in enumerate(self.plan.groups(len(chunks))):
            seeds = [chunk_seed(params.seed, i) for i in group]
            texts = [chunks[i] for i in group]
            told = seen if n == 0 else None
            waves = self._generate_group(voice, texts, params, seeds, tag, n == 0, told)
            tag.produced(self._seconds(waves))
            yield from waves

    def regenerate(
        self,
        voice: Voice,
        text: str,
        params: SynthesisParams,
        seed: int,
        tag: WorkTag | None = None,
        first: bool = False,
    ) -> np.ndarray:
        """One chunk made again, alone, with `seed` (a verified chunk that did not match its
        text): its own waveform, as synthesize_waves gives it. `first`: the request's first
        audio waits on it, so the scheduler takes it before continuations."""
        return self._generate_group(voice, [text], params, [seed], tag or WorkTag(), first)[0]

    def synthesize_lines(
        self, lines: Sequence[Line], tag: WorkTag | None = None, seen: SeenBy | None = None
    ) -> Generator[tuple[int, list[Audio]], None, None]:
        """Several utterances (a batch job's texts) in as few passes as the plan allows.

        The chunks of all lines that share a voice and settings are batched together, up to
        plan.max_batch per pass (with padding masked on CUDA, side by side on CPU); lines with
        another voice go in passes of their own, since one pass conditions on one reference.
        Each line's chunks are seeded as synthesize_stream seeds them, so a line comes out as
        it would as a job of its own (exactly with the CPU plan, to float rounding in a padded
        batch). Yields (line index, its pieces) as each line completes: lines of one voice in
        order, voices in the order they first appear. `tag`: the job, for the scheduler."""
        made = self.synthesize_line_waves(lines, tag, seen)
        try:
            for n, waves in made:
                joiner = Joiner(len(waves), self.sample_rate, lines[n].params.cross_fade_duration)
                yield n, [joiner.add(w) for w in waves]
        finally:
            made.close()

    def synthesize_line_waves(
        self, lines: Sequence[Line], tag: WorkTag | None = None, seen: SeenBy | None = None
    ) -> Generator[tuple[int, list[np.ndarray]], None, None]:
        """synthesize_lines before the cross-fade: (line index, each chunk's own waveform)."""
        tag, passes = tag or WorkTag(), 0
        for members in share_a_pass(lines):
            first = lines[members[0]]
            work = [(n, i) for n in members for i in range(len(lines[n].chunks))]
            waves: dict[int, list[np.ndarray]] = {n: [] for n in members}
            for start in range(0, len(work), self.plan.max_batch):
                part = work[start : start + self.plan.max_batch]
                texts = [lines[n].chunks[i] for n, i in part]
                seeds = [chunk_seed(lines[n].params.seed, i) for n, i in part]
                told = seen_by(seen, members) if start == 0 else None
                made = self._generate_group(
                    first.voice, texts, first.params, seeds, tag, passes == 0, told
                )
                passes += 1
                tag.produced(self._seconds(made))
                for (n, _i), wave in zip(part, made, strict=True):
                    waves[n].append(wave)
                    if len(waves[n]) == len(lines[n].chunks):
                        yield n, waves.pop(n)

    def split_text(
        self, text: str, voice: Voice, speed: float, first_chunk_bytes: int | None = None
    ) -> list[str]:
        """Upstream's chunking (as many bytes as fit in about 22 s with this reference), with
        every chunk bounded even where upstream's punctuation rule finds nowhere to split
        (chunking.py), and the whole request refused with TEXT_TOO_LONG, before any model
        work, when its audio would pass max_audio_s.

        first_chunk_bytes: None keeps upstream's chunks; 0 cuts the first chunk at punctuation
        within a quarter of the budget (upstream's socket server), N > 0 within N bytes
        (chunking.shorten_first)."""
        from f5_tts.infer.utils_infer import chunk_text

        text = cap_combining_marks(text)
        ref_bytes = len(sampler.normalise_ref_text(voice.text).encode())
        ref_seconds = voice.audio.duration_s
        max_chars = int(ref_bytes / ref_seconds * (MAX_GENERATION_S - ref_seconds) * speed)
        budget = max(max_chars, 1)
        chunks = bound_chunks(chunk_text(text, max_chars=budget), budget)
        if first_chunk_bytes is not None:
            first = min(first_chunk_bytes, budget) if first_chunk_bytes > 0 else budget // 4
            split = lambda part, size: chunk_text(part, max_chars=size)  # noqa: E731
            chunks = shorten_first(chunks, max(first, 1), split)
        if not chunks:
            raise InvalidInput("text has nothing to speak")
        seconds = self.estimate_seconds(chunks, voice, speed)
        if seconds > self.max_audio_s:
            raise TextTooLong(
                f"this text would make about {seconds:.0f} s of audio with this voice and "
                f"speed; this worker's limit is {self.max_audio_s:g} s"
            )
        return chunks

    def estimate_seconds(self, chunks: Sequence[str], voice: Voice, speed: float) -> float:
        """The audio the chunks will make: upstream's duration rule, as _sample applies it."""
        ref_frames = round(voice.audio.samples.size * self.sample_rate / voice.audio.sample_rate)
        ref_frames //= self._hop
        ref_text = sampler.model_ref_text(voice.text)
        frames = sum(
            min(
                sampler.estimate_frames(ref_frames, ref_text, chunk, speed),
                ref_frames + self.max_chunk_frames,
            )
            - ref_frames
            for chunk in chunks
        )
        return frames * self._hop / self.sample_rate

    def _seconds(self, waves: Sequence[np.ndarray]) -> float:
        return sum(w.size for w in waves) / self.sample_rate

    @property
    def max_chunk_frames(self) -> int:
        """The most new frames one chunk may have (MAX_CHUNK_AUDIO_S)."""
        return int(MAX_CHUNK_AUDIO_S * self.sample_rate / self._hop)

    def with_plan(self, plan: BatchPlan) -> F5TTSEngine:
        """The same loaded model (and lock, caches, compiled graph) with another batching plan,
        so the benchmark can compare plans without loading the model twice."""
        other = copy.copy(self)
        other.plan = plan
        return other

    @property
    def reference_cache_stats(self) -> tuple[int, int]:
        """(hits, misses) of the per-voice reference cache."""
        return self._refs.hits, self._refs.misses

    def _generate_group(
        self,
        ref: Reference | Voice,
        texts: Sequence[str],
        params: SynthesisParams,
        seeds: Sequence[int],
        tag: WorkTag | None = None,
        first: bool = True,
        seen: Seen | None = None,
    ) -> list[np.ndarray]:
        """One pass, one work item for the scheduler, run a sampling step at a time (another
        request's first chunk may go between two steps). A voice's reference is looked up
        (or prepared) inside it, so a request's first audio is a single item. With batching on
        (BATCH_MAX_ITEMS > 1) the item may share its pass with other requests' chunks of the
        same model, voice and settings, each chunk with its own seed."""
        payload = (list(texts), list(seeds), seen)
        work = lambda: _alone(self._shared_pass(ref, params, [payload]))  # noqa: E731
        batch = None
        if torch_thread.batching():
            key = (id(self.model), self.plan, _ref_key(ref), dataclasses.replace(params, seed=0))
            share = functools.partial(self._shared_pass, ref, params)
            batch = Batchable(key, len(texts), payload, share)
        try:
            waves = torch_thread.run_steps_for(tag, first, work, batch, rows=len(texts))
        except torch.cuda.OutOfMemoryError:
            raise self._out_of_memory() from None
        except RuntimeError as exc:
            if _is_cuda_failure(exc):
                raise GPUError("the GPU failed; this worker will be replaced") from exc
            raise _synthesis_failed(exc) from exc
        except (IndexError, ValueError, KeyError, TypeError) as exc:
            raise _synthesis_failed(exc) from exc
        self._oom_in_a_row = 0
        return waves

    def _shared_pass(
        self,
        ref: Reference | Voice,
        params: SynthesisParams,
        payloads: list[tuple[list[str], list[int], Seen | None]],
    ) -> Generator[None, None, list[list[np.ndarray]]]:
        """One pass over the chunks of one or more requests (payloads: texts, seeds, `seen`),
        a sampling step at a time; each payload's waves, in order."""
        texts = [text for p in payloads for text in p[0]]
        seeds = [seed for p in payloads for seed in p[1]]
        told = [p[2] for p in payloads if p[2] is not None]

        def tell(hit: bool) -> None:  # every member learns whether the reference was cached
            for each in told:
                each(hit)

        reference = self._reference(ref, tell) if isinstance(ref, Voice) else ref
        side_by_side = self.plan.concurrent and len(texts) > 1
        generate = self._generate_side_by_side if side_by_side else self._generate
        waves = yield from generate(reference, texts, params, seeds)
        shares, at = [], 0
        for p in payloads:
            shares.append(waves[at : at + len(p[0])])
            at += len(p[0])
        return shares

    def _generate_side_by_side(
        self,
        ref: Reference,
        texts: Sequence[str],
        params: SynthesisParams,
        seeds: Sequence[int],
    ) -> Generator[None, None, list[np.ndarray]]:
        """Each chunk alone, in its own thread, the chunks' steps in lockstep (one step of each
        per step of the group). Safe to share the model: each chunk has its own generator and
        its own text cache (sampler.TextCache)."""
        passes = [
            self._generate(ref, [text], params, [seed])
            for text, seed in zip(texts, seeds, strict=True)
        ]
        waves: list[np.ndarray | None] = [None] * len(passes)

        def step(n: int) -> bool:
            try:
                next(passes[n])
            except StopIteration as done:
                waves[n] = done.value[0]
                return True
            return False

        with ThreadPoolExecutor(len(passes), thread_name_prefix="tts-chunk") as pool:
            try:
                running = list(range(len(passes)))
                while running:
                    finished = list(pool.map(step, running))
                    running = [n for n, end in zip(running, finished, strict=True) if not end]
                    if running:
                        yield
            finally:
                for gen in passes:
                    gen.close()
        return [cast(np.ndarray, w) for w in waves]

    def _reference(self, voice: Voice, seen: Seen | None = None) -> Reference:
        key = ReferenceCache.key(voice)
        ref = self._refs.get(key, seen)
        if ref is None:
            ref = self._prepare_reference(voice)
            self._refs.put(key, ref)
        return ref

    @torch.inference_mode()
    def _prepare_reference(self, voice: Voice) -> Reference:
        """Upstream's reference preparation (infer_batch_process + CFM.sample's mel step)."""
        audio = torch.from_numpy(voice.audio.samples).unsqueeze(0)
        rms = float(torch.sqrt(torch.mean(torch.square(audio))))
        if rms < TARGET_RMS:
            audio = audio * TARGET_RMS / rms
        if voice.audio.sample_rate != self.sample_rate:
            # The transform, as upstream uses it: its precomputed kernel rounds differently
            # from torchaudio.functional.resample's.
            resampler = torchaudio.transforms.Resample(voice.audio.sample_rate, self.sample_rate)
            audio = resampler(audio)
        audio = audio.to(self.device)
        mel = self.model.mel_spec(audio).permute(0, 2, 1).to(self._dtype)
        return Reference(mel, rms, sampler.model_ref_text(voice.text), audio.shape[-1] // self._hop)

    @torch.inference_mode()
    def _generate(
        self,
        ref: Reference,
        texts: Sequence[str],
        params: SynthesisParams,
        seeds: Sequence[int],
    ) -> Generator[None, None, list[np.ndarray]]:
        """One padded pass over texts, yielding between sampling steps; returns the waves."""
        mel, durations = yield from self._sample(ref, texts, params, seeds)
        return self._vocode(ref, mel, durations)

    def _sample(
        self,
        ref: Reference,
        texts: Sequence[str],
        params: SynthesisParams,
        seeds: Sequence[int],
    ) -> Generator[None, None, tuple[torch.Tensor, list[int]]]:
        """CFM.sample for a batch of texts that share one reference, with per-item noise.

        Every length is known on the host before anything runs on the device, so nothing in
        the step loop waits for the device.
        """
        from f5_tts.model.utils import convert_char_to_pinyin, list_str_to_idx

        cfm = self.model
        ref_len = ref.mel.shape[1]
        tokens = convert_char_to_pinyin([ref.text + t for t in texts])
        durations = [
            sampler.clamp_duration(
                sampler.estimate_frames(ref.audio_frames, ref.text, t, params.speed),
                len(tok),
                ref_len,
                ref.audio_frames + self.max_chunk_frames,
            )
            for tok, t in zip(tokens, texts, strict=True)
        ]
        text_ids = list_str_to_idx(tokens, cfm.vocab_char_map).to(self.device)
        cond, cond_mask, mask = sampler.conditioning(ref.mel, durations, self.device)
        noise = sampler.initial_noise(seeds, durations, cfm.num_channels, self.device, self._dtype)
        t = sampler.timesteps(params.nfe_step, params.sway_sampling_coef, self.device, self._dtype)
        steps = sampler.euler_steps(
            self._transformer,
            noise,
            cond,
            text_ids,
            mask,
            t,
            params.cfg_strength,
            sampler.TextCache(cfm.transformer),
        )
        y = cond
        while True:
            # The attention processors' mask switch is shared by every pass: set per step.
            if mask is not None:
                for proc in self._attn_processors:
                    proc.attn_mask_enabled = self.plan.mask_padding
            try:
                next(steps)
            except StopIteration as done:
                y = done.value
                break
            yield
        return torch.where(cond_mask, cond, y), durations

    def _vocode(
        self, ref: Reference, mel: torch.Tensor, durations: Sequence[int]
    ) -> list[np.ndarray]:
        """Mel frames after the reference -> waveforms, each chunk cut to its own length."""
        start = ref.audio_frames
        gen = mel[:, start:, :].to(torch.float32).permute(0, 2, 1)
        lengths = [d - start for d in durations]
        if self.plan.batch_vocoder or len(set(lengths)) == 1:
            # Frames past a chunk's end are zeroed so the padding's content cannot leak in.
            ends = torch.tensor(lengths, device=gen.device)
            valid = torch.arange(gen.shape[-1], device=gen.device)[None, :] < ends[:, None]
            waves = list(self.vocoder.decode(gen * valid[:, None, :]))
        else:
            waves = [self.vocoder.decode(gen[i : i + 1, :, :n])[0] for i, n in enumerate(lengths)]
        if ref.rms < TARGET_RMS:
            waves = [w * ref.rms / TARGET_RMS for w in waves]
        return [w[: n * self._hop].cpu().numpy() for w, n in zip(waves, lengths, strict=True)]

    def _out_of_memory(self) -> Exception:
        self._oom_in_a_row += 1
        torch.cuda.empty_cache()
        if self._oom_in_a_row >= 2:
            return GPUError("GPU out of memory twice in a row")
        return InternalError("GPU out of memory; retry or send shorter text")


def _load(
    model_dir: Path, device: str, attn_backend: str, dtype: str, make: Callable[..., F5TTSEngine]
) -> F5TTSEngine:
    model, vocoder, spec, dev = load_model_dir(model_dir, device, attn_backend, dtype)
    engine = make(model, vocoder, spec, dev)
    log.info(
        "model %s loaded on %s (%s, attention=%s, compile=%s)",
        spec.name,
        dev,
        engine._dtype,
        attn_backend,
        engine.compiled,
    )
    return engine


def _alone(
    shares: Generator[None, None, list[list[np.ndarray]]],
) -> Generator[None, None, list[np.ndarray]]:
    """A pass of one request's chunks: its only share."""
    return (yield from shares)[0]


def _ref_key(ref: Reference | Voice) -> Hashable:
    """Which passes share a reference: a voice by its content, a prepared one by identity."""
    return ReferenceCache.key(ref) if isinstance(ref, Voice) else id(ref)


def _is_cuda_failure(exc: RuntimeError) -> bool:
    """An error of the device itself (illegal access, ECC, a lost device), not of the input."""
    text = str(exc)
    return any(m in text for m in ("CUDA error", "CUBLAS_STATUS", "cuDNN error", "NCCL error"))


def _synthesis_failed(exc: Exception) -> SynthesisFailed:
    """The same input would fail the same way: not retryable. Logged with its traceback for
    operators; the client learns only that this text could not be synthesized."""
    log.error("synthesis failed (%s)", type(exc).__name__, exc_info=exc)
    return SynthesisFailed("this text could not be synthesized; change the text or settings")
