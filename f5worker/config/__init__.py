"""Worker settings: a pure function of an environment mapping, and the only reader of os.environ.

Tests pass plain dicts; a bad value fails start-up with a ConfigError that names the variable,
instead of surfacing at the first job. Every variable is declared once, in table.SETTINGS: its
field here, its reader, default, bounds, secrecy and documentation. Settings takes its defaults
from that table and from_env reads through it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from f5worker.config.table import SETTINGS, Setting, default, settings_markdown
from f5worker.config.values import (
    PRIVATE_URLS_ENV,
    REF_AUDIO_S3_ALLOW_ENV,
    S3_BUCKET_PATTERN,
    S3Scope,
    is_clean_s3_key,
    private_download_urls_allowed,
)
from f5worker.errors import ConfigError
from f5worker.model_ref import DEMO as DEMO_MODEL
from f5worker.model_ref import MODEL_NAME_PATTERN, AsrModelRef, ModelRef, parse_reference

__all__ = [
    "DEMO_MODEL",
    "MODEL_NAME_PATTERN",
    "PRIVATE_URLS_ENV",
    "REF_AUDIO_S3_ALLOW_ENV",
    "S3_BUCKET_PATTERN",
    "SETTINGS",
    "S3Scope",
    "Setting",
    "Settings",
    "is_clean_s3_key",
    "private_download_urls_allowed",
    "settings_markdown",
]


@dataclass(frozen=True)
class Settings:
    """The worker's settings; each field's default, reader and documentation are in SETTINGS."""

    model_name: str = default("model_name")
    model_dir: Path | None = default("model_dir")
    models: tuple[ModelRef, ...] = default("models")
    models_preload: str = default("models_preload")
    model_license: str = default("model_license")
    demo_fallback: bool = default("demo_fallback")
    max_resident_models: int = default("max_resident_models")
    runpod_hf_cache_dir: Path = default("runpod_hf_cache_dir")
    model_cache_dir: Path = default("model_cache_dir")
    hf_home: Path = default("hf_home")
    s3_bucket: str | None = default("s3_bucket")
    s3_prefix: str = default("s3_prefix")
    s3_endpoint_url: str | None = default("s3_endpoint_url")
    aws_region: str | None = default("aws_region")
    bucket_endpoint_url: str | None = default("bucket_endpoint_url")
    bucket_access_key_id: str | None = default("bucket_access_key_id")
    bucket_secret_access_key: str | None = default("bucket_secret_access_key")
    bucket_name: str | None = default("bucket_name")
    bucket_url_expiry_s: int = default("bucket_url_expiry_s")
    ref_audio_url_timeout_s: int = default("ref_audio_url_timeout_s")
    ref_audio_s3_allow: tuple[S3Scope, ...] = default("ref_audio_s3_allow")
    allow_private_download_urls: bool = default("allow_private_download_urls")
    voice_cache_size: int = default("voice_cache_size")
    voice_cache_ttl_s: int = default("voice_cache_ttl_s")
    voice_writes: bool = default("voice_writes")
    voice_max_count: int = default("voice_max_count")
    voice_require_consent: bool = default("voice_require_consent")
    voice_aliases: tuple[tuple[str, str], ...] = default("voice_aliases")
    flash_attn: str = default("flash_attn")
    flash_attn_wheel_url: str | None = default("flash_attn_wheel_url")
    flash_attn_wheel_sha256: str | None = default("flash_attn_wheel_sha256")
    device: str = default("device")
    dtype: str = default("dtype")
    asr_model: AsrModelRef | None = default("asr_model")
    asr_preload: bool = default("asr_preload")
    asr_compute_type: str = default("asr_compute_type")
    torch_compile: bool = default("torch_compile")
    max_concurrency: int = default("max_concurrency")
    scheduler: str = default("scheduler")
    batch_max_items: int = default("batch_max_items")
    batch_window_ms: int = default("batch_window_ms")
    max_audio_s: int = default("max_audio_s")
    default_quality: str = default("default_quality")
    verify: bool = default("verify")
    verify_max_cer: float = default("verify_max_cer")
    verify_retries: int = default("verify_retries")
    log_format: str = default("log_format")
    log_level: str = default("log_level")
    sdk_log_level: str = default("sdk_log_level")
    worker_version: str = default("worker_version")
    worker_git_sha: str = default("worker_git_sha")
    serve_mode: str = default("serve_mode")
    port: int = default("port")
    port_health: int | None = default("port_health")
    http_host: str = default("http_host")
    http_max_waiting: int = default("http_max_waiting")
    first_chunk_max_bytes: int = default("first_chunk_max_bytes")
    http_header_timeout_s: int = default("http_header_timeout_s")
    http_body_timeout_s: int = default("http_body_timeout_s")
    http_write_timeout_s: int = default("http_write_timeout_s")
    http_queue_timeout_s: int = default("http_queue_timeout_s")
    http_max_connections: int = default("http_max_connections")
    http_stall_s: int = default("http_stall_s")
    http_auth_token: str | None = default("http_auth_token")
    http_ws_idle_timeout_s: int = default("http_ws_idle_timeout_s")
    http_ws_max_session_s: int = default("http_ws_max_session_s")
    http_ws_max_message_bytes: int = default("http_ws_max_message_bytes")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        settings = cls(**{s.field: s.read(env) for s in SETTINGS if s.field})
        if settings.verify and settings.asr_model is None:
            # Every job would fail with ASR_DISABLED: refuse the contradiction at start-up.
            raise ConfigError("VERIFY=on needs the ASR companion, which ASR_MODEL=none turns off")
        return settings

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
