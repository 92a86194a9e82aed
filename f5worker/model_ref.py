"""Model references: the strings an operator writes in MODEL_NAME or MODELS. Standard library only.

A reference is one of:

- a known name: `F5TTS_v1_Base`, `F5TTS_Base`, `E2TTS_Base` (upstream's released checkpoints),
  or `demo` (the random-weight test model);
- a hub checkpoint, one compact string:
  `hf://OWNER/REPO/PATH/TO/CHECKPOINT.safetensors?vocab=PATH/vocab.txt&arch=F5TTS_v1_Base&revision=SHA`
  (`.pt` too; `vocab` is a path in the same repo, default upstream's vocab.txt; `arch` is one of
  upstream's config names in f5_tts/configs, default F5TTS_v1_Base, or the path of a `.yaml`
  in the repo in upstream's config layout (`model.backbone`, `model.arch`, `model.mel_spec`),
  as fine-tunes of other sizes ship it; `revision` a branch, tag or commit, default main);
- a local directory holding a model.json (an absolute path), served as is;
- any other plain name (letters, digits, '.', '_', '-'): a model with no source of its own whose
  files are published in the S3 cache (or already in MODEL_CACHE_DIR) under that name.

MODELS is a list of entries separated by commas or newlines, each `name=reference` or a bare
reference; a bare known name is named by itself, a bare hub or local reference by its text.

Each reference has a storage key: the directory under MODEL_CACHE_DIR and the S3 key segment.
Known names keep theirs (existing caches stay valid); a hub reference's key is
`hf--OWNER--REPO--<16 hex of sha256 of the canonical reference>`, so two references differing in
any part (another checkpoint, vocab, arch or revision) never share a cache entry, and no hub key
can equal a known name's (those contain no `--`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qsl, urlsplit

from f5worker.errors import ConfigError

DEMO = "demo"
DEFAULT_ARCH = "F5TTS_v1_Base"
CHECKPOINT_SUFFIXES = (".safetensors", ".pt")
HUB_SCHEME = "hf://"
ARCH_FILE_SUFFIX = ".yaml"  # arch=PATH.yaml: a config in upstream's layout, shipped in the repo
QUERY_KEYS = ("vocab", "arch", "revision")
# Hugging Face repo ids: owner/name, letters, digits, '-', '_', '.' (at most 96 each).
_REPO_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}")
_SERVING_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
# A model name (a cache-only one, a storage key) becomes a directory and an S3 key segment, so it
# must be one safe component.
MODEL_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_DERIVED_PREFIXES = ("hf--", "dir--")  # keys derived from references: no plain name may take one
_KEY_PART_CHARS = 40  # of owner and repo each in a storage key; the hash carries uniqueness


@dataclass(frozen=True)
class HubModel:
    """A checkpoint in a hub repo: what fetch_from_hub downloads and model.json describes."""

    repo: str
    checkpoint: str  # path inside the repo
    config: str  # f5_tts/configs/<config>.yaml, or a .yaml path in the repo: backbone, arch, mel
    vocab: str | None = None  # None: the vocab.txt shipped in the f5-tts wheel (upstream's default)
    revision: str = "main"
    license: str = ""  # known from the model card; "": read the repository's card when fetched


# Upstream's released checkpoints are trained on Emilia: their model cards say CC-BY-NC-4.0.
UPSTREAM_LICENSE = "cc-by-nc-4.0"
# The checkpoints upstream's f5_tts.api.F5TTS loads for these names (read in its api.py).
KNOWN_MODELS: dict[str, HubModel] = {
    "F5TTS_v1_Base": HubModel(
        repo="SWivid/F5-TTS",
        checkpoint="F5TTS_v1_Base/model_1250000.safetensors",
        config="F5TTS_v1_Base",
        vocab="F5TTS_v1_Base/vocab.txt",
        license=UPSTREAM_LICENSE,
    ),
    "F5TTS_Base": HubModel(
        repo="SWivid/F5-TTS",
        checkpoint="F5TTS_Base/model_1200000.safetensors",
        config="F5TTS_Base",
        license=UPSTREAM_LICENSE,
    ),
    "E2TTS_Base": HubModel(
        repo="SWivid/E2-TTS",
        checkpoint="E2TTS_Base/model_1200000.safetensors",
        config="E2TTS_Base",
        license=UPSTREAM_LICENSE,
    ),
}


@dataclass(frozen=True)
class ModelRef:
    """One model a worker may serve.

    name: what a job's `model` field says; key: the cache directory and S3 key segment;
    hub: where its files come from (None for the demo model and local directories);
    local_dir: a directory with model.json, served as is; text: the reference as written.
    """

    name: str
    key: str
    text: str
    hub: HubModel | None = None
    local_dir: Path | None = None

    @property
    def is_demo(self) -> bool:
        return self.key == DEMO


def arch_names() -> tuple[str, ...]:
    """Upstream's model configs (f5_tts/configs/*.yaml): the valid `arch=` values."""
    configs = files("f5_tts").joinpath("configs")
    return tuple(sorted(p.name[:-5] for p in configs.iterdir() if p.name.endswith(".yaml")))


def parse_reference(text: str, variable: str, name: str | None = None) -> ModelRef:
    """One reference; a malformed one is a ConfigError naming `variable`."""
    text = text.strip()
    if text in KNOWN_MODELS or text == DEMO:
        return ModelRef(name or text, text, text, KNOWN_MODELS.get(text))
    if text.startswith(HUB_SCHEME):
        hub = _parse_hub(text, variable)
        return ModelRef(name or text, hub_key(hub), text, hub)
    if text.startswith("/"):
        path = PurePosixPath(text)
        if ".." in path.parts:
            raise ConfigError(f"{variable}: local model directory {text[:100]!r} contains '..'")
        return ModelRef(name or text, _local_key(text), text, local_dir=Path(text))
    if MODEL_NAME_PATTERN.fullmatch(text) and not text.startswith(_DERIVED_PREFIXES):
        # A name with no source of its own: its files are published in the S3 cache (or were
        # put in MODEL_CACHE_DIR) under that name.
        return ModelRef(name or text, text, text)
    raise ConfigError(
        f"{variable}: {text[:100]!r} is not a model reference; expected one of "
        f"{', '.join([*KNOWN_MODELS, DEMO])}, "
        "hf://OWNER/REPO/PATH.safetensors|.pt?vocab=PATH&arch=CONFIG&revision=REV, "
        "or an absolute directory with a model.json"
    )


def parse_models(text: str, variable: str = "MODELS") -> tuple[ModelRef, ...]:
    """MODELS: entries separated by commas or newlines, each `name=reference` or a reference."""
    refs: list[ModelRef] = []
    for entry in (e.strip() for e in re.split(r"[,\n]", text)):
        if not entry:
            continue
        head, sep, rest = entry.partition("=")
        if sep and _SERVING_NAME.fullmatch(head.strip()):
            ref = parse_reference(rest, variable, name=head.strip())
        else:
            ref = parse_reference(entry, variable)
        refs.append(ref)
    if not refs:
        raise ConfigError(f"{variable} lists no model")
    for attr in ("name", "key"):
        seen: set[str] = set()
        for ref in refs:
            value = getattr(ref, attr)
            if value in seen:
                raise ConfigError(f"{variable} lists the model {value[:100]!r} twice")
            seen.add(value)
    return tuple(refs)


def canonical(hub: HubModel) -> str:
    """The reference's meaning as one string: what its storage key hashes."""
    query = f"vocab={hub.vocab or ''}&arch={hub.config}&revision={hub.revision}"
    return f"{HUB_SCHEME}{hub.repo}/{hub.checkpoint}?{query}"


def hub_key(hub: HubModel) -> str:
    owner, repo = hub.repo.split("/")
    digest = hashlib.sha256(canonical(hub).encode()).hexdigest()[:16]
    return f"hf--{owner[:_KEY_PART_CHARS]}--{repo[:_KEY_PART_CHARS]}--{digest}"


def _local_key(text: str) -> str:
    return "dir--" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _parse_hub(text: str, variable: str) -> HubModel:
    def bad(why: str) -> ConfigError:
        return ConfigError(f"{variable}: hub reference {text[:160]!r}: {why}")

    parts = urlsplit(text)
    if parts.fragment:
        raise bad("no '#' part is allowed")
    path = f"{parts.netloc}{parts.path}"
    pieces = path.split("/")
    if len(pieces) < 3:
        raise bad("expected hf://OWNER/REPO/PATH/TO/CHECKPOINT")
    owner, repo, rel = pieces[0], pieces[1], "/".join(pieces[2:])
    if not (_REPO_PART.fullmatch(owner) and _REPO_PART.fullmatch(repo)):
        raise bad("OWNER/REPO must be letters, digits, '.', '_' or '-'")
    checkpoint = _repo_path(rel, bad, "checkpoint")
    if not checkpoint.endswith(CHECKPOINT_SUFFIXES):
        raise bad(f"the checkpoint must end in {' or '.join(CHECKPOINT_SUFFIXES)}")
    try:
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise bad("the part after '?' must be key=value pairs joined by '&'") from None
    keys = [k for k, _ in query]
    unknown = sorted(set(keys) - set(QUERY_KEYS))
    if unknown:
        raise bad(f"unknown parameter(s) {', '.join(unknown)[:80]}; known: {', '.join(QUERY_KEYS)}")
    if len(keys) != len(set(keys)):
        raise bad("a parameter is given twice")
    options = dict(query)
    vocab = options.get("vocab")
    if vocab is not None:
        vocab = _repo_path(vocab, bad, "vocab")
    arch = options.get("arch", DEFAULT_ARCH)
    known = arch_names()
    if arch.endswith(ARCH_FILE_SUFFIX):
        arch = _repo_path(arch, bad, "arch")
    elif arch not in known:
        raise bad(
            f"arch={arch[:60]!r} is not one of upstream's configs ({', '.join(known)}) "
            f"nor a {ARCH_FILE_SUFFIX} file in the repo"
        )
    revision = options.get("revision", "main")
    if not _REVISION.fullmatch(revision) or ".." in revision:
        raise bad("revision must be a branch, tag or commit")
    return HubModel(f"{owner}/{repo}", checkpoint, arch, vocab, revision)


def _repo_path(rel: str, bad: Callable[[str], ConfigError], what: str) -> str:
    """A relative path inside the repo: no empty, '.' or '..' segments, printable."""
    segments = rel.split("/")
    if not rel or any(s in ("", ".", "..") for s in segments) or not rel.isprintable():
        raise bad(f"the {what} path {rel[:100]!r} is not a clean path inside the repo")
    return rel


# -- the ASR companion's model (ASR_MODEL) ------------------------------------------------------

ASR_OFF = "none"
# faster-whisper's own source for "large-v3-turbo": openai/whisper-large-v3-turbo converted to
# CTranslate2 (float16), the files model.bin, config.json, tokenizer.json, vocabulary.json and
# preprocessor_config.json.
DEFAULT_ASR_MODEL = "mobiuslabsgmbh/faster-whisper-large-v3-turbo"


@dataclass(frozen=True)
class AsrModelRef:
    """The ASR model: a hub repo of a CTranslate2 Whisper conversion (repo, revision) or a local
    directory holding one (local_dir). key: its MODEL_CACHE_DIR directory and S3 key segment,
    derived from the whole reference like a hub checkpoint's, so it shares no entry with any
    other model."""

    text: str
    key: str
    repo: str | None = None
    revision: str = "main"
    local_dir: Path | None = None


def parse_asr_model(text: str, variable: str = "ASR_MODEL") -> AsrModelRef | None:
    """`none` (no ASR), `OWNER/REPO[@REVISION]` (a hub repo) or an absolute directory."""
    text = text.strip()
    if text.lower() == ASR_OFF:
        return None
    if text.startswith("/"):
        if ".." in PurePosixPath(text).parts:
            raise ConfigError(f"{variable}: local model directory {text[:100]!r} contains '..'")
        return AsrModelRef(text, _local_key(text), local_dir=Path(text))
    repo, _, revision = text.partition("@")
    owner, _, name = repo.partition("/")
    revision = revision or "main"
    if not (_REPO_PART.fullmatch(owner) and _REPO_PART.fullmatch(name)):
        raise ConfigError(
            f"{variable}: {text[:100]!r} is not `none`, a hub repo OWNER/REPO[@REVISION] of a "
            "CTranslate2 Whisper model, nor an absolute directory"
        )
    if not _REVISION.fullmatch(revision) or ".." in revision:
        raise ConfigError(f"{variable}: revision {revision[:60]!r} is not a branch, tag or commit")
    digest = hashlib.sha256(f"ct2-whisper://{repo}@{revision}".encode()).hexdigest()[:16]
    key = f"hf--{owner[:_KEY_PART_CHARS]}--{name[:_KEY_PART_CHARS]}--{digest}"
    return AsrModelRef(text, key, repo, revision)
