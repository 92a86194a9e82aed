"""Quality presets: what `quality` (job input) and DEFAULT_QUALITY (operator) stand for. Pure.

A preset fixes the two settings that decide how much work one chunk costs:

- the number of flow-matching steps. 7 and 16 are step counts for which upstream defines an
  Empirically Pruned Step Sampling schedule (get_epss_timesteps in f5_tts/model/utils.py, from
  the Fast F5-TTS paper, arXiv 2505.19931): a subset of the 32-step grid that keeps the steps
  near t=0, where the trajectory bends, and skips most of the straight late ones. 32 is
  upstream's default, on the uniform grid (upstream defines no pruned 32-step schedule: its
  uniform 32-step grid is the one the pruned ones are cut from).
- the longest reference kept. The transformer attends over reference plus new audio, so a
  shorter reference is less work for every chunk; `fast` keeps at most REF_SECONDS_FAST of it,
  cut only where the transcript and the audio agree on a sentence end (job/ref_trim.py).

Classifier-free guidance (2.0) and sway sampling (-1) stay upstream's defaults in every preset:
the paper's 7-step results use them too.
"""

from __future__ import annotations

from dataclasses import dataclass

REF_SECONDS_FULL = 12.0  # upstream clips references to about 12 s
REF_SECONDS_FAST = 6.0


@dataclass(frozen=True)
class Preset:
    name: str
    nfe_step: int
    max_ref_seconds: float


PRESETS: dict[str, Preset] = {
    "fast": Preset("fast", 7, REF_SECONDS_FAST),
    "balanced": Preset("balanced", 16, REF_SECONDS_FULL),
    "best": Preset("best", 32, REF_SECONDS_FULL),
}
QUALITIES = tuple(PRESETS)
DEFAULT_QUALITY = "best"  # upstream's 32 steps: what this worker did before presets existed


def resolve(quality: str | None, nfe_step: int | None, default: str) -> tuple[Preset, int]:
    """The preset a request gets (its own, else the operator's default) and the step count it
    runs with: an explicit nfe_step wins over the preset's."""
    preset = PRESETS[quality or default]
    return preset, nfe_step if nfe_step is not None else preset.nfe_step
