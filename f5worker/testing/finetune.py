"""A "fine-tune" as a hub repo holds one: real f5-tts classes, its own vocab, random weights.

Like the demo model (models/demo.py) but shaped as community fine-tunes ship: a checkpoint
(EMA-prefixed safetensors, or a `.pt` dict with `ema_model_state_dict` as upstream's trainer
saves it), its own vocab.txt (here: a smaller symbol set than upstream's, so loading it with
upstream's vocab fails), and the model's config yaml in upstream's layout, because the tiny test
arch is none of upstream's named configs (arch=PATH.yaml). Also the vocoder repo's two files.
"""

from __future__ import annotations

import io
import tempfile
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save

from f5worker.models.demo import DEMO_ARCH, DEMO_VOCOS, _randomise_zero_init
from f5worker.models.spec import MEL_SPEC

REPO = "someone/f5-finetune-xx"
CKPT_DIR = "ckpts/xx"
VOCAB_SYMBOLS = 180  # upstream's vocab has 2545: a different size, as a new language's would


def finetune_vocab() -> bytes:
    lines = files("f5_tts.infer").joinpath("examples/vocab.txt").read_text().split("\n")
    return ("\n".join(lines[:VOCAB_SYMBOLS]) + "\n").encode()


def finetune_files(seed: int = 1, pt: bool = False) -> dict[str, bytes]:
    """{path in the repo: bytes} of one fine-tune: checkpoint, vocab.txt and config yaml."""
    from f5_tts.model import CFM, DiT

    torch.manual_seed(seed)
    vocab = finetune_vocab()
    vocab_map = {c: i for i, c in enumerate(vocab.decode().split("\n")[:VOCAB_SYMBOLS])}
    vocab_size = len(vocab_map)  # upstream's get_tokenizer(..., "custom") reads it so
    transformer = DiT(**DEMO_ARCH, text_num_embeds=vocab_size, mel_dim=MEL_SPEC["n_mel_channels"])
    _randomise_zero_init(transformer)
    model = CFM(transformer=transformer, mel_spec_kwargs=dict(MEL_SPEC), vocab_char_map=vocab_map)
    state = {f"ema_model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    if pt:
        buf = io.BytesIO()
        torch.save({"ema_model_state_dict": state, "step": 1000}, buf)
        ckpt_name, data = "model_1000.pt", buf.getvalue()
    else:
        ckpt_name, data = "model_1000.safetensors", save(state)
    config: dict[str, Any] = {
        "model": {"backbone": "DiT", "arch": dict(DEMO_ARCH), "mel_spec": dict(MEL_SPEC)}
    }
    return {
        f"{CKPT_DIR}/{ckpt_name}": data,
        f"{CKPT_DIR}/vocab.txt": vocab,
        f"{CKPT_DIR}/config.yaml": yaml.safe_dump(config).encode(),
    }


def vocoder_files() -> dict[str, bytes]:
    """charactr/vocos-mel-24khz's two files, for the demo-sized vocoder (random weights)."""
    from vocos import Vocos

    torch.manual_seed(0)
    text = yaml.safe_dump(DEMO_VOCOS, sort_keys=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(text)
        vocoder = Vocos.from_hparams(str(path))
    buf = io.BytesIO()
    torch.save(vocoder.state_dict(), buf)
    return {"config.yaml": text.encode(), "pytorch_model.bin": buf.getvalue()}


def reference(checkpoint: str, *, vocab: bool = True, arch: str = f"{CKPT_DIR}/config.yaml") -> str:
    """The hf:// reference of this fine-tune as an operator writes it."""
    query = [f"vocab={CKPT_DIR}/vocab.txt"] if vocab else []
    query.append(f"arch={arch}")
    return f"hf://{REPO}/{CKPT_DIR}/{checkpoint}?{'&'.join(query)}"
