"""F5TTSEngine: load a model directory, warm up, synthesize. The only torch / f5_tts user.

Models are built and loaded with upstream's own functions (load_model, load_vocoder), text is
split with upstream's chunk_text and sampled with CFM.sample. The per-chunk loop mirrors
upstream's infer_batch_process, minus its habits that do not fit a server: it prints user text,
runs chunks on a thread pool that shares one global RNG (so a seed does not fix the output) and
needs its reference as a file on disk.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchaudio

from audio import Audio, cross_fade
from errors import GPUError, InternalError, InvalidInput, ModelError
from model_spec import SAMPLE_RATE, ModelSpec
from voices import Voice

log = logging.getLogger(__name__)

TARGET_RMS = 0.1  # upstream's loudness target for the reference
MAX_GENERATION_S = 22.0  # upstream's budget for reference + generated audio per chunk
BACKBONES = ("DiT", "MMDiT", "UNetT")


@dataclass(frozen=True)
class SynthesisParams:
    seed: int
    nfe_step: int = 32
    speed: float = 1.0
    cfg_strength: float = 2.0
    sway_sampling_coef: float = -1.0
    cross_fade_duration: float = 0.15


class F5TTSEngine:
    def __init__(
        self,
        model: torch.nn.Module,
        vocoder: torch.nn.Module,
        spec: ModelSpec,
        device: torch.device,
    ) -> None:
        self.model = model
        self.vocoder = vocoder
        self.spec = spec
        self.device = device
        self.sample_rate = SAMPLE_RATE
        self._hop = int(spec.mel_spec["hop_length"])
        # CFM.sample seeds torch's global RNG, so one job at a time may sample.
        self._lock = threading.Lock()
        self._oom_in_a_row = 0

    @classmethod
    def load(
        cls, model_dir: Path, device: str = "auto", attn_backend: str = "torch"
    ) -> F5TTSEngine:
        """Load any model directory that carries a model.json, without touching the network."""
        import f5_tts.model
        from f5_tts.infer.utils_infer import load_model, load_vocoder

        try:
            spec = ModelSpec.load(model_dir)
        except (OSError, ValueError, TypeError) as exc:
            raise ModelError(f"{model_dir} has no valid model.json: {exc}") from None
        if spec.backbone not in BACKBONES:
            raise ModelError(f"unknown backbone {spec.backbone!r}; expected one of {BACKBONES}")
        dev = resolve_device(device)
        model_cls = getattr(f5_tts.model, spec.backbone)
        arch = dict(spec.arch, attn_backend=attn_backend)
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):  # upstream prints paths while loading
                model = load_model(
                    model_cls,
                    arch,
                    str(model_dir / spec.checkpoint),
                    mel_spec_type=spec.mel_spec["mel_spec_type"],
                    vocab_file=str(model_dir / spec.vocab),
                    device=str(dev),
                )
                vocoder = load_vocoder(
                    "vocos",
                    is_local=True,
                    local_path=str(model_dir / spec.vocoder_dir),
                    device=str(dev),
                )
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            raise ModelError(f"model in {model_dir} failed to load: {type(exc).__name__}") from exc
        finally:
            log.debug("upstream load output: %s", out.getvalue().strip())
        log.info(
            "model %s loaded on %s (%s, attention=%s)",
            spec.name,
            dev,
            next(model.parameters()).dtype,
            attn_backend,
        )
        return cls(model, vocoder, spec, dev)

    def warm_up(self, voice: Voice) -> float:
        """One short synthesis so the first job pays no lazy-initialisation cost."""
        start = time.perf_counter()
        self.synthesize("Warm up.", voice, SynthesisParams(seed=0, nfe_step=2))
        return time.perf_counter() - start

    def synthesize(self, text: str, voice: Voice, params: SynthesisParams) -> Audio:
        """The whole utterance: the concatenation of what synthesize_stream yields."""
        pieces = [piece.samples for piece in self.synthesize_stream(text, voice, params)]
        return Audio(np.concatenate(pieces).astype(np.float32, copy=False), self.sample_rate)

    def synthesize_stream(
        self, text: str, voice: Voice, params: SynthesisParams
    ) -> Iterator[Audio]:
        """Yield audio chunk by chunk, cross-faded: each piece holds back the fade-out tail that
        the next chunk fades into, so the pieces concatenate to exactly the full utterance."""
        ref_text = _normalise_ref_text(voice.text)
        chunks = self.split_text(text, voice, params.speed)
        fade = int(params.cross_fade_duration * self.sample_rate)
        tail = np.zeros(0, dtype=np.float32)
        cond, rms = self._reference(voice.audio)
        for i, chunk in enumerate(chunks):
            wave = self._generate_chunk(cond, rms, ref_text, chunk, params, params.seed + i)
            joined = cross_fade([tail, wave], self.sample_rate, params.cross_fade_duration)
            last = i == len(chunks) - 1
            keep = 0 if last else min(fade, len(wave))
            tail = joined[len(joined) - keep :]
            yield Audio(joined[: len(joined) - keep], self.sample_rate)

    def split_text(self, text: str, voice: Voice, speed: float) -> list[str]:
        """Upstream's chunking: as many characters as fit in about 22 s with this reference."""
        from f5_tts.infer.utils_infer import chunk_text

        ref_bytes = len(_normalise_ref_text(voice.text).encode())
        ref_seconds = voice.audio.duration_s
        max_chars = int(ref_bytes / ref_seconds * (MAX_GENERATION_S - ref_seconds) * speed)
        chunks = [c for c in chunk_text(text, max_chars=max(max_chars, 1)) if c.strip()]
        if not chunks:
            raise InvalidInput("text has nothing to speak")
        return chunks

    def _generate_chunk(
        self,
        cond: torch.Tensor,
        rms: float,
        ref_text: str,
        gen_text: str,
        params: SynthesisParams,
        seed: int,
    ) -> np.ndarray:
        try:
            with self._lock:
                wave = self._generate(cond, rms, ref_text, gen_text, params, seed)
        except torch.cuda.OutOfMemoryError:
            raise self._out_of_memory() from None
        self._oom_in_a_row = 0
        return wave

    def _reference(self, ref: Audio) -> tuple[torch.Tensor, float]:
        audio = torch.from_numpy(ref.samples).unsqueeze(0)
        rms = float(torch.sqrt(torch.mean(torch.square(audio))))
        if rms < TARGET_RMS:
            audio = audio * TARGET_RMS / rms
        if ref.sample_rate != self.sample_rate:
            audio = torchaudio.functional.resample(audio, ref.sample_rate, self.sample_rate)
        return audio.to(self.device), rms

    @torch.inference_mode()
    def _generate(
        self,
        cond: torch.Tensor,
        rms: float,
        ref_text: str,
        gen_text: str,
        params: SynthesisParams,
        seed: int,
    ) -> np.ndarray:
        from f5_tts.model.utils import convert_char_to_pinyin

        # Upstream slows very short texts down so they are not swallowed.
        speed = 0.3 if len(gen_text.encode()) < 10 else params.speed
        ref_frames = cond.shape[-1] // self._hop
        duration = ref_frames + int(
            ref_frames / len(ref_text.encode()) * len(gen_text.encode()) / speed
        )
        mel, _ = self.model.sample(
            cond=cond,
            text=convert_char_to_pinyin([ref_text + gen_text]),
            duration=duration,
            steps=params.nfe_step,
            cfg_strength=params.cfg_strength,
            sway_sampling_coef=params.sway_sampling_coef,
            seed=seed,
        )
        mel = mel.to(torch.float32)[:, ref_frames:, :].permute(0, 2, 1)
        wave = self.vocoder.decode(mel)
        if rms < TARGET_RMS:
            wave = wave * rms / TARGET_RMS
        return wave.squeeze().float().cpu().numpy()

    def _out_of_memory(self) -> Exception:
        self._oom_in_a_row += 1
        torch.cuda.empty_cache()
        if self._oom_in_a_row >= 2:
            return GPUError("GPU out of memory twice in a row")
        return InternalError("GPU out of memory; retry or send shorter text")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("DEVICE=cuda but CUDA is not available")
    return torch.device(device)


def _normalise_ref_text(text: str) -> str:
    """Upstream ends the reference transcript with '. ' so the model hears a sentence break."""
    text = text.strip()
    if not text.endswith((".", "。")):
        text += "."
    return text + " " if text.endswith(".") else text
