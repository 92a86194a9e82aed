"""The demo model: real f5-tts classes (CFM + DiT, small Vocos) with seeded random weights.

No pretrained weights can be downloaded in tests or offline runs, so this builds a model
directory in exactly the layout the engine loads for F5TTS_v1_Base: an EMA-prefixed safetensors
checkpoint, upstream's vocab.txt, a Vocos config.yaml + pytorch_model.bin, model.json and a
manifest. Its audio is noise, but it is deterministic and depends on the input text.
"""

from __future__ import annotations

import logging
import shutil
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save_file

from f5worker.models.manifest import build_manifest, write_manifest
from f5worker.models.spec import MEL_SPEC, SPEC_NAME, ModelSpec

log = logging.getLogger(__name__)

DEMO_ARCH = {
    "dim": 64,
    "depth": 2,
    "heads": 2,
    "dim_head": 32,
    "ff_mult": 2,
    "text_dim": 32,
    "text_mask_padding": True,
    "qk_norm": None,
    "conv_layers": 1,
    "pe_attn_head": None,
}


def vocos_config(dim: int, intermediate_dim: int, num_layers: int) -> dict[str, Any]:
    """A Vocos config.yaml in upstream's layout (charactr/vocos-mel-24khz is 512, 1536, 8)."""
    mel = {"sample_rate": 24000, "n_fft": 1024, "hop_length": 256, "n_mels": 100}
    return {
        "feature_extractor": {
            "class_path": "vocos.feature_extractors.MelSpectrogramFeatures",
            "init_args": {**mel, "padding": "center"},
        },
        "backbone": {
            "class_path": "vocos.models.VocosBackbone",
            "init_args": {
                "input_channels": 100,
                "dim": dim,
                "intermediate_dim": intermediate_dim,
                "num_layers": num_layers,
            },
        },
        "head": {
            "class_path": "vocos.heads.ISTFTHead",
            "init_args": {"dim": dim, "n_fft": 1024, "hop_length": 256, "padding": "same"},
        },
    }


DEMO_VOCOS = vocos_config(dim=64, intermediate_dim=192, num_layers=2)
CHECKPOINT = "model_demo.safetensors"


def upstream_vocab() -> Path:
    return Path(str(files("f5_tts.infer").joinpath("examples/vocab.txt")))


def build_demo_model(out_dir: Path, seed: int = 0) -> Path:
    """Write the demo model into out_dir (replacing what is there) and return it."""
    from f5_tts.model import CFM, DiT
    from f5_tts.model.utils import get_tokenizer
    from vocos import Vocos

    torch.manual_seed(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(upstream_vocab(), out_dir / "vocab.txt")
    vocab_map, vocab_size = get_tokenizer(str(out_dir / "vocab.txt"), "custom")

    transformer = DiT(**DEMO_ARCH, text_num_embeds=vocab_size, mel_dim=MEL_SPEC["n_mel_channels"])
    _randomise_zero_init(transformer)
    model = CFM(transformer=transformer, mel_spec_kwargs=dict(MEL_SPEC), vocab_char_map=vocab_map)
    # Upstream's released checkpoints hold only the EMA weights, prefixed `ema_model.`.
    state = {f"ema_model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / CHECKPOINT))

    vocos_dir = out_dir / "vocos"
    vocos_dir.mkdir(exist_ok=True)
    (vocos_dir / "config.yaml").write_text(yaml.safe_dump(DEMO_VOCOS, sort_keys=False))
    vocoder = Vocos.from_hparams(str(vocos_dir / "config.yaml"))
    torch.save(vocoder.state_dict(), vocos_dir / "pytorch_model.bin")

    spec = ModelSpec(
        name="demo",
        backbone="DiT",
        arch=dict(DEMO_ARCH),
        checkpoint=CHECKPOINT,
        license="none (random weights, made here)",
    )
    (out_dir / SPEC_NAME).write_text(spec.to_json())
    write_manifest(out_dir, build_manifest(out_dir, "demo", {"kind": "demo", "seed": seed}))
    log.info("demo model written to %s", out_dir)
    return out_dir


def _randomise_zero_init(transformer: torch.nn.Module) -> None:
    """DiT zero-initialises its adaLN and output layers; with random weights that would make the
    output independent of the text, so give them small random values instead."""
    layers = [block.attn_norm.linear for block in transformer.transformer_blocks]
    layers += [transformer.norm_out.linear, transformer.proj_out]
    for layer in layers:
        torch.nn.init.normal_(layer.weight, std=0.02)
        torch.nn.init.normal_(layer.bias, std=0.02)
