"""model.json: what a model directory holds and how to build its network. Standard library only.

Every model directory the engine loads (the real F5TTS_v1_Base fetched from the hub, the demo
model, a user's fine-tune) carries one, so a single code path loads them all.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from f5worker.models.manifest import safe_relpath

SPEC_NAME = "model.json"
SAMPLE_RATE = 24000
# Upstream's mel settings (f5_tts.infer.utils_infer); every released vocos model uses them.
MEL_SPEC: dict[str, Any] = {
    "target_sample_rate": SAMPLE_RATE,
    "n_mel_channels": 100,
    "hop_length": 256,
    "win_length": 1024,
    "n_fft": 1024,
    "mel_spec_type": "vocos",
}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    backbone: str
    arch: dict[str, Any]
    checkpoint: str
    vocab: str = "vocab.txt"
    vocoder_dir: str = "vocos"
    mel_spec: dict[str, Any] = field(default_factory=lambda: dict(MEL_SPEC))
    license: str = "unknown"  # of the weights, as far as known when the dir was made (licence.py)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def load(cls, model_dir: Path) -> ModelSpec:
        data = json.loads((model_dir / SPEC_NAME).read_text())
        spec = cls(**data)
        for rel in (spec.checkpoint, spec.vocab, spec.vocoder_dir):
            safe_relpath(rel)
        return spec
