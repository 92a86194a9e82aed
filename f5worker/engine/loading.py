"""Loading a model directory: the model and its vocoder, built by upstream's own functions.

F5TTSEngine.load (f5tts.py) runs load_model_dir on the torch thread and wraps what it returns in
an engine. A model directory carries a model.json (ModelSpec) naming its backbone, checkpoint,
vocab and vocoder; nothing is fetched from the network. When a checkpoint does not fit its
architecture, the error names both sides (describe_mismatch) instead of torch's list of every
tensor. Also here: importing f5-tts ahead of the load (import_backend), choosing the device and
returning a dropped engine's memory (free_memory).
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import torch

from f5worker.engine import torch_thread
from f5worker.errors import ModelError
from f5worker.models.spec import ModelSpec

log = logging.getLogger(__name__)

BACKBONES = ("DiT", "MMDiT", "UNetT")
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
MAX_DIFFS_SHOWN = 3


def load_model_dir(
    model_dir: Path, device: str, attn_backend: str, dtype: str
) -> tuple[torch.nn.Module, torch.nn.Module, ModelSpec, torch.device]:
    """The model (in `dtype`; "auto": as upstream loads it) and the vocoder of a model
    directory, its spec and their device; a ModelError naming what does not fit."""
    import f5_tts.model
    from f5_tts.infer.utils_infer import load_model, load_vocoder

    try:
        spec = ModelSpec.load(model_dir)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelError(f"{model_dir} has no valid model.json: {exc}") from None
    if spec.backbone not in BACKBONES:
        raise ModelError(f"unknown backbone {spec.backbone!r}; expected one of {BACKBONES}")
    if dtype != "auto" and dtype not in DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}; expected auto or one of {list(DTYPES)}")
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
    except Exception as exc:  # any load failure: a ModelError naming what does not fit
        mismatch = describe_mismatch(model_dir, spec, model_cls, arch)
        if mismatch:
            raise ModelError(mismatch) from None
        raise ModelError(f"model in {model_dir} failed to load: {type(exc).__name__}") from exc
    finally:
        log.debug("upstream load output: %s", out.getvalue().strip())
    if dtype != "auto":
        model = model.to(DTYPES[dtype])
    return model, vocoder, spec, dev


def import_backend() -> None:
    """Import f5-tts's inference modules now (about 15 s cold), so that start-up can pay for
    them while the model syncs instead of inside load(). On the torch thread: torchdiffeq runs
    a torch operator when imported, which would give the importing thread an OpenMP team."""
    torch_thread.run(_import_backend)


def _import_backend() -> None:
    import f5_tts.infer.utils_infer
    import f5_tts.model  # noqa: F401


def free_memory() -> None:
    """After an engine is dropped: collect it and return CUDA's cached blocks, on the torch
    thread (where the engine's tensors were made and used)."""

    def run() -> None:
        import gc

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    torch_thread.run(run)


def describe_mismatch(
    model_dir: Path, spec: ModelSpec, model_cls: type, arch: dict[str, object]
) -> str | None:
    """Why a checkpoint does not fit its architecture and vocab, in words, or None.

    Upstream's load_model fails with torch's load_state_dict error, a long message listing
    every tensor; this compares the checkpoint's tensor shapes with the ones the arch and vocab
    build (on the meta device: no memory) and names both sides."""
    try:
        found = checkpoint_shapes(model_dir / spec.checkpoint)
        from f5_tts.model.utils import get_tokenizer

        _, vocab_size = get_tokenizer(str(model_dir / spec.vocab), "custom")
        with torch.device("meta"):
            transformer = model_cls(
                **arch, text_num_embeds=vocab_size, mel_dim=spec.mel_spec["n_mel_channels"]
            )
    except Exception as exc:  # an unreadable checkpoint or vocab: say which
        log.debug("shape comparison failed: %r", exc)
        return None
    expected = {f"transformer.{k}": tuple(v.shape) for k, v in transformer.state_dict().items()}
    found = {k: v for k, v in found.items() if k.startswith("transformer.")}
    diffs = [
        f"{k} is {list(found[k])} in the checkpoint, {list(v)} for the arch"
        for k, v in expected.items()
        if k in found and found[k] != v
    ]
    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    if missing:
        diffs.append(f"{len(missing)} tensor(s) missing from the checkpoint, e.g. {missing[0]}")
    if extra:
        diffs.append(f"{len(extra)} tensor(s) the arch does not have, e.g. {extra[0]}")
    if not diffs:
        return None
    more = f" (+{len(diffs) - MAX_DIFFS_SHOWN} more)" if len(diffs) > MAX_DIFFS_SHOWN else ""
    dims = ", ".join(f"{k}={arch.get(k)}" for k in ("dim", "depth", "heads", "text_dim"))
    embed = found.get("transformer.text_embed.text_embed.weight")
    hint = ""
    if embed and embed[0] != vocab_size + 1:
        hint = (
            f"; the checkpoint was trained with a vocab of {embed[0] - 1} symbols, "
            f"{spec.vocab} has {vocab_size}: give the fine-tune's own vocab (vocab=...)"
        )
    return (
        f"checkpoint {spec.checkpoint} of model {spec.name} does not match its architecture "
        f"({spec.backbone} {dims}) with vocab {spec.vocab} ({vocab_size} symbols): "
        + "; ".join(diffs[:MAX_DIFFS_SHOWN])
        + more
        + hint
    )


def checkpoint_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of a checkpoint as upstream reads it (EMA weights, prefix dropped),
    without loading a safetensors file's data."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            raw = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}  # noqa: SIM118
    else:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
        state = data.get("ema_model_state_dict") or data.get("model_state_dict") or data
        raw = {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    return {k.removeprefix("ema_model."): v for k, v in raw.items()}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("DEVICE=cuda but CUDA is not available")
    return torch.device(device)
