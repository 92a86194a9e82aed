"""Shared pieces of the benchmark scripts: timing, tables, machine facts and test models.

Every benchmark here reports medians of several runs and a ratio against an alternative
measured in the same process, and prints the command that reproduces it, so a figure in
docs/benchmarks.md can always be re-taken.
"""

from __future__ import annotations

import logging
import os
import platform
import resource
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from f5worker.models.demo import vocos_config  # noqa: E402  (needs REPO on sys.path)

log = logging.getLogger(__name__)
T = TypeVar("T")

# The page and paragraph are English prose, so upstream's chunker splits them at sentence ends
# the way it would split a real request.
SENTENCE = "The quick brown fox jumps over the lazy dog near the quiet river bank."
PARAGRAPH = (
    "Early in the morning the harbour was still quiet. A few fishing boats came back with "
    "their nets, and the gulls followed them in wide circles, calling over the water. On the "
    "pier an old man sold coffee from a small cart, and the smell drifted along the boards."
)
PAGE = " ".join(
    [
        PARAGRAPH,
        "By nine the market had opened and the square filled with voices. Traders argued "
        "about the price of apples, children ran between the stalls, and a street musician "
        "played the same three songs again and again until somebody paid him to stop.",
        "In the afternoon the wind turned and clouds rolled in from the west. The boats were "
        "tied up early, the awnings came down, and people hurried home along the narrow "
        "streets with their collars turned up against the first drops of rain.",
        "By evening the storm had passed. The streets shone under the lamps, the cafes opened "
        "their doors again, and the harbour settled into its usual calm for the night.",
    ]
)
TEXTS: dict[str, str] = {"sentence": SENTENCE, "paragraph": PARAGRAPH, "page": PAGE}

# Upstream's released Vocos (charactr/vocos-mel-24khz) configuration: same compute, random
# weights, since nothing can be downloaded here.
FULL_VOCOS: dict[str, Any] = vocos_config(dim=512, intermediate_dim=1536, num_layers=8)
FULL_CHECKPOINT = "model_random.safetensors"


@dataclass(frozen=True)
class Timing:
    """Medians over repeats, plus the spread so a noisy machine shows in the table."""

    runs: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def spread(self) -> float:
        return max(self.runs) - min(self.runs)


def time_runs(fn: Callable[[], T], repeats: int) -> tuple[Timing, T]:
    """Run fn `repeats` times; return the timings and the last result."""
    runs: list[float] = []
    result: T | None = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        runs.append(time.perf_counter() - start)
    assert result is not None
    return Timing(tuple(runs)), result


def interleaved(
    fns: dict[str, Callable[[], Any]], repeats: int
) -> tuple[dict[str, Timing], dict[str, Any]]:
    """Time several alternatives round-robin, so load from other processes on a shared machine
    falls on all of them alike instead of on whichever ran during the busy minute."""
    runs: dict[str, list[float]] = {name: [] for name in fns}
    last: dict[str, Any] = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            last[name] = fn()
            runs[name].append(time.perf_counter() - start)
    return {name: Timing(tuple(r)) for name, r in runs.items()}, last


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table, so the output pastes into docs/benchmarks.md."""
    cells = [[_cell(v) for v in row] for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def command_line() -> str:
    """The command that reproduces this run."""
    return ".venv/bin/python " + " ".join(shlex.quote(a) for a in sys.argv)


def peak_rss_gb() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def machine_facts() -> dict[str, str]:
    """What the figures were taken on: enough to tell two tables apart."""
    import torch

    from f5worker.engine import torch_thread

    facts = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count()),
        "torch_threads": str(torch_thread.run(torch.get_num_threads)),
        "load_avg_1m": f"{os.getloadavg()[0]:.2f}",
    }
    if torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name()
        facts["cuda"] = str(torch.version.cuda)
    try:
        from importlib.metadata import version

        facts["f5_tts"] = version("f5-tts")
    except Exception:  # only a label; a missing one must not stop a benchmark
        facts["f5_tts"] = "unknown"
    return facts


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def build_full_arch_model(out_dir: Path, seed: int = 0) -> Path:
    """F5TTS_v1_Base's architecture (from f5-tts's packaged config) and full-size Vocos with
    seeded random weights, in the layout the engine loads. The compute per step is the real
    model's; only the sound is noise. Reused if already built (1.3 GB)."""
    import torch
    import yaml
    from f5_tts.model import CFM, DiT
    from f5_tts.model.utils import get_tokenizer
    from omegaconf import OmegaConf
    from safetensors.torch import save_file
    from vocos import Vocos

    from f5worker.models.demo import upstream_vocab
    from f5worker.models.manifest import build_manifest, write_manifest
    from f5worker.models.spec import MEL_SPEC, SPEC_NAME, ModelSpec

    if (out_dir / SPEC_NAME).exists() and (out_dir / FULL_CHECKPOINT).exists():
        return out_dir
    torch.manual_seed(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.txt").write_bytes(upstream_vocab().read_bytes())
    vocab_map, vocab_size = get_tokenizer(str(out_dir / "vocab.txt"), "custom")

    arch = full_arch()
    transformer = DiT(**arch, text_num_embeds=vocab_size, mel_dim=MEL_SPEC["n_mel_channels"])
    _randomise_zero_init(transformer)
    model = CFM(transformer=transformer, mel_spec_kwargs=dict(MEL_SPEC), vocab_char_map=vocab_map)
    state = {f"ema_model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / FULL_CHECKPOINT))
    del model, transformer, state

    vocos_dir = out_dir / "vocos"
    vocos_dir.mkdir(exist_ok=True)
    (vocos_dir / "config.yaml").write_text(yaml.safe_dump(FULL_VOCOS, sort_keys=False))
    vocoder = Vocos.from_hparams(str(vocos_dir / "config.yaml"))
    torch.save(vocoder.state_dict(), vocos_dir / "pytorch_model.bin")

    name = "F5TTS_v1_Base"
    spec = ModelSpec(name=name, backbone="DiT", arch=arch, checkpoint=FULL_CHECKPOINT)
    (out_dir / SPEC_NAME).write_text(spec.to_json())
    source = {"kind": "random", "seed": seed, "config": OmegaConf.to_yaml(_packaged_config())}
    write_manifest(out_dir, build_manifest(out_dir, name, source))
    log.info("full-architecture model with random weights written to %s", out_dir)
    return out_dir


def full_arch() -> dict[str, Any]:
    """model.arch of the packaged F5TTS_v1_Base.yaml, minus the attention backend, which the
    engine chooses at load time."""
    from omegaconf import OmegaConf

    arch = OmegaConf.to_container(_packaged_config().model.arch)
    assert isinstance(arch, dict)
    arch.pop("attn_backend", None)
    return {str(k): v for k, v in arch.items()}


def _packaged_config() -> Any:
    from importlib.resources import files

    from omegaconf import OmegaConf

    return OmegaConf.load(str(files("f5_tts").joinpath("configs/F5TTS_v1_Base.yaml")))


def _randomise_zero_init(transformer: Any) -> None:
    """DiT zero-initialises its adaLN and output layers; random values there make the output
    depend on the text, as a trained model's does (same reason as in demo_model)."""
    import torch

    layers = [block.attn_norm.linear for block in transformer.transformer_blocks]
    layers += [transformer.norm_out.linear, transformer.proj_out]
    for layer in layers:
        torch.nn.init.normal_(layer.weight, std=0.02)
        torch.nn.init.normal_(layer.bias, std=0.02)
