"""Worker settings: a pure function of an environment mapping, and the only reader of os.environ.

Tests pass plain dicts; a bad value fails start-up with a ConfigError that names the variable,
instead of surfacing at the first job.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from f5worker.errors import ConfigError
from f5worker.models.reference import ModelRef, parse_models, parse_reference
from f5worker.presets import DEFAULT_QUALITY, QUALITIES
from f5worker.startup.flash_attn_wheels import check_custom_wheel, check_sha256

FLASH_ATTN_MODES = ("auto", "off", "require")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float16", "bfloat16", "float32")
LOG_FORMATS = ("text", "json")
PRELOAD_MODES = ("default", "all")
SERVE_MODES = ("queue", "http")
RUNPOD_HF_CACHE = Path("/runpod-volume/huggingface-cache/hub")
DEMO_MODEL = "demo"
# A model name becomes a directory and an S3 key segment, so it must be one safe component.
MODEL_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# S3's bucket naming rules (lower case, 3..63 characters), as s3:// references must spell them.
S3_BUCKET_PATTERN = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# The RunPod SDK's own switch for job URLs on private networks, read as the SDK reads it.
PRIVATE_URLS_ENV = "RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS"
REF_AUDIO_S3_ALLOW_ENV = "REF_AUDIO_S3_ALLOW"


@dataclass(frozen=True)
class S3Scope:
    """A bucket, or the keys under one prefix of it, that s3:// references may name."""

    bucket: str
    prefix: str = ""  # "" is the whole bucket; otherwise whole path segments, ending in "/"

    def covers(self, bucket: str, key: str) -> bool:
        return bucket == self.bucket and key.startswith(self.prefix)


@dataclass(frozen=True)
class Settings:
    model_name: str = "F5TTS_v1_Base"  # the default model's storage key (models/reference.py)
    model_dir: Path | None = None
    models: tuple[ModelRef, ...] = ()  # MODELS (or MODEL_NAME); empty: model_name alone
    models_preload: str = "default"
    # Serve the demo model when the default model is nowhere (no S3 cache, hub unreachable):
    # only when the operator named no model at all (`make run` out of the box). A model someone
    # named never silently becomes noise.
    demo_fallback: bool = False
    max_resident_models: int = 2
    runpod_hf_cache_dir: Path = RUNPOD_HF_CACHE
    model_cache_dir: Path = Path("/tmp/models")
    hf_home: Path = Path("/tmp/hf-home")
    s3_bucket: str | None = None
    s3_prefix: str = "f5-tts"
    s3_endpoint_url: str | None = None
    aws_region: str | None = None
    bucket_endpoint_url: str | None = None
    bucket_access_key_id: str | None = None
    bucket_secret_access_key: str | None = None
    bucket_name: str | None = None
    bucket_url_expiry_s: int = 3600
    ref_audio_url_timeout_s: int = 20
    ref_audio_s3_allow: tuple[S3Scope, ...] = ()  # besides the voice library, see fetch.py
    allow_private_download_urls: bool = False
    voice_cache_size: int = 32
    voice_cache_ttl_s: int = 30  # how stale a cached library voice may be (voices.py)
    voice_writes: bool = True  # voice.add / voice.delete jobs allowed
    voice_max_count: int = 500
    flash_attn: str = "auto"
    flash_attn_wheel_url: str | None = None
    flash_attn_wheel_sha256: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    torch_compile: bool = False
    max_concurrency: int = 1
    max_audio_s: int = 1200
    default_quality: str = DEFAULT_QUALITY
    log_format: str = "text"
    log_level: str = "INFO"
    sdk_log_level: str = "INFO"
    worker_version: str = "dev"
    worker_git_sha: str = "unknown"
    # -- the serving mode (README "Real-time (load-balancing endpoint)") --------------------
    # queue: the RunPod SDK's job handler; http: FastAPI/uvicorn for a load-balancing endpoint.
    serve_mode: str = "queue"
    port: int = 80  # RunPod's documented default for load-balancing workers
    port_health: int | None = None  # None: /ping on `port` (RunPod's default)
    http_host: str = "0.0.0.0"
    # Requests that may wait for a free slot beyond MAX_CONCURRENCY; more get 429.
    http_max_waiting: int = 4
    # The first text chunk's byte budget in http mode: 0 = a quarter of the normal budget
    # (upstream's socket server), -1 = not shortened, N = at most N bytes.
    first_chunk_max_bytes: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        model_dir = _opt(env, "MODEL_DIR")
        models = _models(env)
        return cls(
            model_name=models[0].key,
            model_dir=Path(model_dir) if model_dir else None,
            models=models,
            models_preload=_choice(env, "MODELS_PRELOAD", cls.models_preload, PRELOAD_MODES),
            demo_fallback=not (_opt(env, "MODELS") or _opt(env, "MODEL_NAME")),
            max_resident_models=_int(env, "MAX_RESIDENT_MODELS", cls.max_resident_models, 1, 16),
            runpod_hf_cache_dir=Path(
                env.get("RUNPOD_HF_CACHE_DIR", "").strip() or str(cls.runpod_hf_cache_dir)
            ),
            model_cache_dir=Path(env.get("MODEL_CACHE_DIR", str(cls.model_cache_dir))),
            hf_home=Path(env.get("HF_HOME", str(cls.hf_home))),
            s3_bucket=_opt(env, "S3_BUCKET"),
            s3_prefix=env.get("S3_PREFIX", cls.s3_prefix).strip("/"),
            s3_endpoint_url=_opt(env, "S3_ENDPOINT_URL"),
            aws_region=_opt(env, "AWS_REGION") or _opt(env, "AWS_DEFAULT_REGION"),
            bucket_endpoint_url=_opt(env, "BUCKET_ENDPOINT_URL"),
            bucket_access_key_id=_opt(env, "BUCKET_ACCESS_KEY_ID"),
            bucket_secret_access_key=_opt(env, "BUCKET_SECRET_ACCESS_KEY"),
            bucket_name=_opt(env, "BUCKET_NAME"),
            # 604800 s is the longest a SigV4 presigned URL may live.
            bucket_url_expiry_s=_int(
                env, "BUCKET_URL_EXPIRY_S", cls.bucket_url_expiry_s, 60, 604800
            ),
            ref_audio_url_timeout_s=_int(
                env, "REF_AUDIO_URL_TIMEOUT_S", cls.ref_audio_url_timeout_s, 1, 120
            ),
            ref_audio_s3_allow=_s3_scopes(env, REF_AUDIO_S3_ALLOW_ENV),
            allow_private_download_urls=private_download_urls_allowed(env),
            voice_cache_size=_int(env, "VOICE_CACHE_SIZE", cls.voice_cache_size, 1, 1024),
            # A voice added or deleted by another worker is seen here within this many seconds.
            voice_cache_ttl_s=_int(env, "VOICE_CACHE_TTL_S", cls.voice_cache_ttl_s, 0, 3600),
            voice_writes=_bool(env, "VOICE_WRITES", cls.voice_writes),
            voice_max_count=_int(env, "VOICE_MAX_COUNT", cls.voice_max_count, 1, 10000),
            flash_attn=_choice(env, "FLASH_ATTN", cls.flash_attn, FLASH_ATTN_MODES),
            flash_attn_wheel_url=_opt(env, "FLASH_ATTN_WHEEL_URL"),
            flash_attn_wheel_sha256=_wheel_sha256(env),
            device=_choice(env, "DEVICE", cls.device, DEVICES),
            dtype=_choice(env, "DTYPE", cls.dtype, DTYPES),
            torch_compile=_bool(env, "TORCH_COMPILE", cls.torch_compile),
            max_concurrency=_int(env, "MAX_CONCURRENCY", cls.max_concurrency, 1, 64),
            # The longest audio one request may ask for; it bounds a job's time and memory.
            max_audio_s=_int(env, "MAX_AUDIO_SECONDS", cls.max_audio_s, 10, 1200),
            # The preset of requests that name none (presets.py).
            default_quality=_choice(env, "DEFAULT_QUALITY", cls.default_quality, QUALITIES),
            log_format=_choice(env, "LOG_FORMAT", cls.log_format, LOG_FORMATS),
            log_level=_choice(
                env, "LOG_LEVEL", cls.log_level, ("DEBUG", "INFO", "WARNING", "ERROR"), upper=True
            ),
            # The SDK's own default is DEBUG, which logs every job's input and output.
            sdk_log_level=_choice(
                env,
                "RUNPOD_LOG_LEVEL",
                cls.sdk_log_level,
                ("DEBUG", "INFO", "WARN", "ERROR"),
                upper=True,
            ),
            worker_version=env.get("WORKER_VERSION", cls.worker_version).strip() or "dev",
            worker_git_sha=_opt(env, "WORKER_GIT_SHA") or cls.worker_git_sha,
            serve_mode=_choice(env, "SERVE_MODE", cls.serve_mode, SERVE_MODES),
            port=_int(env, "PORT", cls.port, 1, 65535),
            port_health=_int(env, "PORT_HEALTH", 0, 1, 65535) if _opt(env, "PORT_HEALTH") else None,
            http_host=_opt(env, "HTTP_HOST") or cls.http_host,
            http_max_waiting=_int(env, "HTTP_MAX_WAITING", cls.http_max_waiting, 0, 1024),
            first_chunk_max_bytes=_int(
                env, "FIRST_CHUNK_MAX_BYTES", cls.first_chunk_max_bytes, -1, 4096
            ),
        )

    @property
    def health_port(self) -> int:
        return self.port_health or self.port

    @property
    def is_demo(self) -> bool:
        return self.model_name == DEMO_MODEL

    @property
    def model_refs(self) -> tuple[ModelRef, ...]:
        """The models this worker may serve, the default first."""
        if self.models:
            return self.models
        try:
            return (parse_reference(self.model_name, "MODEL_NAME"),)
        except ConfigError:  # a name set in code (tests): a cache-only model of that name
            return (ModelRef(self.model_name, self.model_name, self.model_name),)

    @property
    def default_model(self) -> ModelRef:
        return self.model_refs[0]


def _models(env: Mapping[str, str]) -> tuple[ModelRef, ...]:
    """MODELS when set, else MODEL_NAME as a list of one (MODEL_NAME is then ignored)."""
    listed = env.get("MODELS", "").strip()
    if listed:
        return parse_models(listed, "MODELS")
    return (
        parse_reference(env.get("MODEL_NAME", "").strip() or Settings.model_name, "MODEL_NAME"),
    )


def private_download_urls_allowed(env: Mapping[str, str] | None = None) -> bool:
    """RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS as runpod.serverless.utils.rp_ssrf reads it: only
    "1", "true" or "yes" switch the guard off, anything else keeps it on (never an error, so a
    typo can only make the worker stricter)."""
    env = os.environ if env is None else env
    return env.get(PRIVATE_URLS_ENV, "").strip().lower() in ("1", "true", "yes")


def _s3_scopes(env: Mapping[str, str], name: str) -> tuple[S3Scope, ...]:
    """Comma-separated `bucket` or `bucket/prefix` entries (an `s3://` in front is allowed).

    A prefix is matched by whole path segments ("refs" covers refs/a.wav, not refs-old/a.wav);
    empty, "." and ".." segments are refused, as a store that normalises paths would read them
    as another prefix.
    """
    scopes: list[S3Scope] = []
    for entry in (e.strip() for e in env.get(name, "").split(",")):
        if not entry:
            continue
        rest = entry.removeprefix("s3://")
        bucket, _, prefix = rest.partition("/")
        prefix = prefix.strip("/")
        if not S3_BUCKET_PATTERN.fullmatch(bucket) or (prefix and not is_clean_s3_key(prefix)):
            raise ConfigError(
                f"{name} entry {entry[:100]!r} is not `bucket` or `bucket/prefix` "
                "(a lower-case S3 bucket name; no empty, '.' or '..' path segments)"
            )
        scopes.append(S3Scope(bucket, f"{prefix}/" if prefix else ""))
    return tuple(scopes)


def is_clean_s3_key(key: str) -> bool:
    """No empty, "." or ".." segments and no control characters: a key means what it says."""
    return all(s not in ("", ".", "..") for s in key.split("/")) and key.isprintable()


def _wheel_sha256(env: Mapping[str, str]) -> str | None:
    """The operator's sha256 for FLASH_ATTN_WHEEL_URL; the URL must be an https .whl and the
    hash is required with it, since that wheel is installed (its code run) at start-up."""
    url, digest = _opt(env, "FLASH_ATTN_WHEEL_URL"), _opt(env, "FLASH_ATTN_WHEEL_SHA256")
    if url:
        return check_custom_wheel(url, digest, "FLASH_ATTN_WHEEL_URL", "FLASH_ATTN_WHEEL_SHA256")
    if digest:
        return check_sha256(digest, "FLASH_ATTN_WHEEL_SHA256", "FLASH_ATTN_WHEEL_URL")
    return None


def _opt(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _choice(
    env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...], upper: bool = False
) -> str:
    raw = env.get(name, default).strip()
    value = raw.upper() if upper else raw.lower()
    if value not in allowed:
        raise ConfigError(f"{name}={raw!r} is not one of {', '.join(allowed)}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (1/0, true/false, yes/no, on/off)")


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, str(default)).strip()
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={value} is outside {low}..{high}")
    return value
