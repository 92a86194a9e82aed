"""Upstream's sampler, restated as plain functions: the one file to diff against f5-tts.

Each function names the upstream code it restates (f5-tts 1.1.x): `CFM.sample` in
f5_tts/model/cfm.py, and the duration and reference-text rules of `infer_batch_process` and
`preprocess_ref_audio_text` in f5_tts/infer/utils_infer.py. When f5-tts is bumped, diff those
against this file; tests/integration/test_engine.py compares the engine with upstream bit for
bit (one chunk; cfg 0; speed other than 1; a reference at another rate; a quiet reference).

What differs from upstream, on purpose (docs/benchmarks.md has the measurements):
- every item's starting noise comes from its own torch.Generator seeded per item, so a seed fixes
  the output without the global RNG (upstream seeds the global RNG and gives every item of a
  batch the same noise);
- every length is known on the host before anything runs on the device, and the Euler loop
  makes none of torchdiffeq's per-step host syncs and keeps no trajectory.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence

import torch
import torch.nn.functional as F

MAX_FRAMES = 65536  # CFM.sample's cap on one item's mel frames
SHORT_TEXT_BYTES = 10  # infer_batch_process: texts shorter than this are spoken at speed 0.3
SHORT_TEXT_SPEED = 0.3


def normalise_ref_text(text: str) -> str:
    """preprocess_ref_audio_text: the transcript ends with '. ' (or '。') so the model hears a
    sentence break. Chunk sizes are computed from this form."""
    text = text.strip()
    if not text.endswith((".", "。")):
        text += "."
    return text + " " if text.endswith(".") else text


def model_ref_text(text: str) -> str:
    """What infer_batch_process puts before each chunk: one more space after a single-byte
    final character, so English references end in '.  '."""
    text = normalise_ref_text(text)
    return text + " " if len(text[-1].encode()) == 1 else text


def estimate_frames(ref_frames: int, ref_text: str, gen_text: str, speed: float) -> int:
    """infer_batch_process's duration: the reference's frames per byte of text, scaled."""
    if len(gen_text.encode()) < SHORT_TEXT_BYTES:
        speed = SHORT_TEXT_SPEED  # upstream slows very short texts down so they are not swallowed
    ref_bytes = len(ref_text.encode())
    return ref_frames + int(ref_frames / ref_bytes * len(gen_text.encode()) / speed)


def clamp_duration(
    frames: int, prompt_tokens: int, ref_len: int, max_frames: int = MAX_FRAMES
) -> int:
    """CFM.sample: at least the prompt (text or reference) plus one frame, at most MAX_FRAMES
    (the engine passes a lower bound of its own: see F5TTSEngine.max_chunk_frames)."""
    return min(max(max(prompt_tokens, ref_len) + 1, frames), max_frames, MAX_FRAMES)


def timesteps(
    nfe_step: int, sway_coef: float, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """CFM.sample's time grid: upstream's (pruned where it defines one) schedule, then sway."""
    from f5_tts.model.utils import get_epss_timesteps

    t = get_epss_timesteps(nfe_step, device=device, dtype=dtype)
    return t + sway_coef * (torch.cos(torch.pi / 2 * t) - 1 + t)


def initial_noise(
    seeds: Sequence[int],
    durations: Sequence[int],
    channels: int,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """(batch, longest, channels) noise: item i's first durations[i] frames drawn from its own
    generator, exactly what CFM.sample draws for a batch of one after manual_seed(seed);
    the padding stays zero."""
    noise = torch.zeros(len(seeds), max(durations), channels, device=device, dtype=dtype)
    for i, (seed, frames) in enumerate(zip(seeds, durations, strict=True)):
        gen = torch.Generator(device=device).manual_seed(seed)
        noise[i, :frames] = torch.randn(frames, channels, generator=gen, device=device, dtype=dtype)
    return noise


def conditioning(
    ref_mel: torch.Tensor, durations: Sequence[int], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """CFM.sample's cond (the reference mel, zero-padded), its mask and the padding mask
    (None when every item has the same length: upstream's unmasked fast path)."""
    batch, longest, ref_len = len(durations), max(durations), ref_mel.shape[1]
    cond = F.pad(ref_mel, (0, 0, 0, longest - ref_len)).expand(batch, -1, -1)
    cond_mask = (torch.arange(longest, device=device) < ref_len)[None, :, None]
    if len(set(durations)) == 1:
        return cond, cond_mask, None
    lengths = torch.tensor(durations, device=device).unsqueeze(1)
    return cond, cond_mask, torch.arange(longest, device=device)[None, :] < lengths


class TextCache:
    """One pass's text embeddings on the DiT, kept with the pass between its steps.

    Upstream's DiT (and UNetT) caches a pass's text embeddings per thread (`text_cond`,
    `text_uncond`). Passes of several requests take turns on the one torch thread, a step at a
    time (scheduler.py), so each pass puts its own embeddings back before a step and takes
    them away after it; a backbone without the cache is left alone."""

    NAMES = ("text_cond", "text_uncond")

    def __init__(self, backbone: torch.nn.Module) -> None:
        self._backbone = backbone
        self._saved = {n: None for n in self.NAMES if hasattr(type(backbone), n)}

    def __enter__(self) -> None:
        for name, value in self._saved.items():
            setattr(self._backbone, name, value)

    def __exit__(self, *exc: object) -> None:
        for name in self._saved:
            self._saved[name] = getattr(self._backbone, name)
            setattr(self._backbone, name, None)


def euler_steps(
    transformer: torch.nn.Module,
    y: torch.Tensor,
    cond: torch.Tensor,
    text: torch.Tensor,
    mask: torch.Tensor | None,
    t: torch.Tensor,
    cfg: float,
    cache: TextCache,
) -> Generator[None, None, torch.Tensor]:
    """torchdiffeq's fixed-grid Euler over CFM.sample's `fn`, arithmetic for arithmetic
    (y += (t1 - t0) * f), minus its three host-side comparisons of device tensors per step and
    its stored trajectory: nothing in this loop waits for the device. Yields after each step,
    so the torch thread may run another request's step in between (the arithmetic of this
    pass is the same either way); returns the last y."""
    for i in range(len(t) - 1):
        with cache:
            if cfg < 1e-5:
                pred = transformer(x=y, cond=cond, text=text, time=t[i], mask=mask, cache=True)
            else:
                both = transformer(
                    x=y, cond=cond, text=text, time=t[i], mask=mask, cfg_infer=True, cache=True
                )
                pred, null_pred = torch.chunk(both, 2, dim=0)
                pred = pred + (pred - null_pred) * cfg
        y = y + (t[i + 1] - t[i]) * pred
        yield
    return y
