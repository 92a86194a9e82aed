"""Every environment variable the worker knows, declared once: SETTINGS.

An entry names the variable, the Settings field it fills, how it is read (its kind and bounds, or
a custom parser), its default, whether it is secret and one line of documentation. Settings takes
its defaults from here, from_env reads through it, docs/configuration.md's table is generated from
it (settings_markdown; `python -m f5worker.config --markdown`), diagnostics reports the variables
it lists and the Hub metadata test maps them to fields. Entries without a field are read by a
library (boto3, huggingface_hub): documented and reported, never parsed here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from f5worker.config import values
from f5worker.model_ref import (
    DEFAULT_ASR_MODEL,
    ModelRef,
    parse_asr_model,
    parse_models,
    parse_reference,
)
from f5worker.presets import DEFAULT_QUALITY, QUALITIES
from f5worker.wheel_checks import SHA_VAR, URL_VAR, check_custom_wheel, check_sha256

Parse = Callable[[Mapping[str, str], "Setting"], Any]


@dataclass(frozen=True)
class Setting:
    env: str  # the variable; "" for a field derived from other variables (demo_fallback)
    field: str | None  # the Settings attribute; None: read by a library, documented only
    kind: type  # str, int, bool or Path: how a plain entry is read
    default: Any
    doc: str
    low: int | None = None
    high: int | None = None
    choices: tuple[str, ...] = ()
    upper: bool = False  # the choices are upper case (log levels)
    secret: bool = False  # diagnostics shows only whether it is set
    also: tuple[str, ...] = ()  # read when `env` is unset or blank
    shown: str = ""  # the docs' default where the value is not a literal
    parse: Parse | None = None  # a custom reader, for what the kinds do not say
    values: str = ""  # the docs' values column for a custom reader
    section: str = ""

    def read(self, env: Mapping[str, str]) -> Any:
        """This entry's value in `env`; ConfigError naming the variable when it is bad."""
        if self.parse is not None:
            return self.parse(env, self)
        if self.choices:
            return values.choice(env, self.env, self.default, self.choices, self.upper)
        if self.kind is bool:
            return values.boolean(env, self.env, self.default)
        if self.kind is int:
            if self.default is None and values.opt(env, self.env) is None:
                return None
            assert self.low is not None and self.high is not None  # every int entry is bounded
            return values.integer(env, self.env, self.default, self.low, self.high)
        for name in (self.env, *self.also):
            if (text := values.opt(env, name)) is not None:
                return Path(text) if self.kind is Path else text
        return self.default


def _models(env: Mapping[str, str], _: Setting | None = None) -> tuple[ModelRef, ...]:
    """MODELS when set, else MODEL_NAME as a list of one (MODEL_NAME is then ignored)."""
    listed = env.get("MODELS", "").strip()
    if listed:
        return parse_models(listed, "MODELS")
    named = env.get("MODEL_NAME", "").strip() or default("model_name")
    return (parse_reference(named, "MODEL_NAME"),)


def _demo_fallback(env: Mapping[str, str], _: Setting) -> bool:
    return not (values.opt(env, "MODELS") or values.opt(env, "MODEL_NAME"))


def _path_as_given(env: Mapping[str, str], s: Setting) -> Path:
    return Path(env.get(s.env, str(s.default)))


def _wheel_sha256(env: Mapping[str, str], _: Setting) -> str | None:
    """The operator's sha256 for FLASH_ATTN_WHEEL_URL; the URL must be an https .whl and the
    hash is required with it, since that wheel is installed (its code run) at start-up."""
    url, digest = values.opt(env, URL_VAR), values.opt(env, SHA_VAR)
    if url:
        return check_custom_wheel(url, digest, URL_VAR, SHA_VAR)
    if digest:
        return check_sha256(digest, SHA_VAR, URL_VAR)
    return None


def _section(name: str, *entries: Setting) -> tuple[Setting, ...]:
    return tuple(replace(e, section=name) for e in entries)


# fmt: off
S, LEVELS = Setting, ("DEBUG", "INFO", "WARNING", "ERROR")
SETTINGS: tuple[Setting, ...] = (
    *_section(
        "Models",
        S("MODEL_NAME", "model_name", str, "F5TTS_v1_Base",
          "the model to serve, one [model reference](models.md#model-references): a known name, "
          "`demo`, an `hf://` checkpoint or a local directory; ignored when `MODELS` is set. A "
          "model named here or in `MODELS` is served or start-up fails; only with both unset and "
          "no S3 cache does an offline start serve the demo model",
          parse=lambda env, s: _models(env)[0].key),
        S("MODELS", "models", tuple, (),
          "the models this worker may serve, separated by commas or newlines, each "
          "`name=reference` or a bare reference; the first is the default",
          parse=_models),
        # Serve the demo model when the default model is nowhere (no S3 cache, hub unreachable):
        # only when the operator named no model at all (`make run` out of the box). A model
        # someone named never silently becomes noise.
        S("", "demo_fallback", bool, False, "", parse=_demo_fallback),
        S("MODEL_LICENSE", "model_license", str, "",
          "the default model's licence as the operator states it (an SPDX id such as "
          "`cc-by-nc-4.0`, or a short name); unset: what the model card says, else `unknown`",
          parse=lambda env, s: values.licence(env, s.env)),
        S("MODELS_PRELOAD", "models_preload", str, "default",
          "`default`: only the default model is loaded (and warmed) before the first job, the "
          "others on first use; `all`: every model's files are prepared at start-up and as many "
          "as `MAX_RESIDENT_MODELS` loaded",
          choices=("default", "all")),
        S("MAX_RESIDENT_MODELS", "max_resident_models", int, 2,
          "models kept loaded at once; loading one more evicts the least recently used",
          low=1, high=16),
        S("RUNPOD_HF_CACHE_DIR", "runpod_hf_cache_dir", Path,
          Path("/runpod-volume/huggingface-cache/hub"),
          "RunPod's cached models (huggingface_hub's cache layout), read in place before the S3 "
          "cache and the hub"),
        S("MODEL_DIR", "model_dir", Path, None,
          "serve this local model directory (must hold `model.json`) as the default model"),
        S("MODEL_CACHE_DIR", "model_cache_dir", Path, Path("/tmp/models"),
          "local model cache root",
          parse=_path_as_given),
        S("HF_HOME", "hf_home", Path, Path("/tmp/hf-home"),
          "Hugging Face hub cache (kept off the small volume)",
          parse=_path_as_given),
        S("HF_ENDPOINT", None, str, None,
          "read by huggingface_hub on a cache miss",
          shown="hub default"),
        S("HF_TOKEN", None, str, None,
          "read by huggingface_hub on a cache miss; redacted in logs",
          secret=True),
    ),
    *_section(
        "S3",
        S("S3_BUCKET", "s3_bucket", str, None,
          "model cache and voice library in S3; unset = no S3"),
        S("S3_PREFIX", "s3_prefix", str, "f5-tts",
          "the key prefix of the model cache and voice library in `S3_BUCKET`",
          parse=lambda env, s: env.get(s.env, s.default).strip("/")),
        S("S3_ENDPOINT_URL", "s3_endpoint_url", str, None,
          "S3-compatible stores (R2, B2, MinIO, RunPod's S3 API)"),
        S("AWS_REGION", "aws_region", str, None,
          "the S3 region",
          also=("AWS_DEFAULT_REGION",)),
        S("AWS_ACCESS_KEY_ID", None, str, None,
          "worker S3 credentials (boto3's chain)",
          secret=True),
        S("AWS_SECRET_ACCESS_KEY", None, str, None,
          "worker S3 credentials (boto3's chain)",
          secret=True),
        S("BUCKET_ENDPOINT_URL", "bucket_endpoint_url", str, None,
          "output bucket (RunPod convention): its endpoint"),
        S("BUCKET_ACCESS_KEY_ID", "bucket_access_key_id", str, None,
          "output bucket credentials",
          secret=True),
        S("BUCKET_SECRET_ACCESS_KEY", "bucket_secret_access_key", str, None,
          "output bucket credentials",
          secret=True),
        S("BUCKET_NAME", "bucket_name", str, None,
          "output bucket name",
          shown="`MM-YY`"),
        # 604800 s is the longest a SigV4 presigned URL may live.
        S("BUCKET_URL_EXPIRY_S", "bucket_url_expiry_s", int, 3600,
          "presigned URL lifetime in seconds",
          low=60, high=604800),
    ),
    *_section(
        "Reference audio and voices",
        S("REF_AUDIO_URL_TIMEOUT_S", "ref_audio_url_timeout_s", int, 20,
          "total time for fetching a reference URL (lookup, redirects, headers, body)",
          low=1, high=120),
        S(values.REF_AUDIO_S3_ALLOW_ENV, "ref_audio_s3_allow", tuple, (),
          "more places `s3://` references may read, besides `s3://$S3_BUCKET/$S3_PREFIX/voices/`:"
          " comma-separated `bucket` (all of it) or `bucket/prefix` (whole path segments)",
          parse=lambda env, s: values.s3_scopes(env, s.env)),
        S(values.PRIVATE_URLS_ENV, "allow_private_download_urls", bool, False,
          "the SDK's switch, read as the SDK reads it: allow `ref_audio` URLs on private networks",
          parse=lambda env, s: values.private_download_urls_allowed(env),
          values="`1`, `true`, `yes`"),
        S("VOICE_CACHE_SIZE", "voice_cache_size", int, 32,
          "voices kept in memory",
          low=1, high=1024),
        # A voice added or deleted by another worker is seen here within this many seconds.
        S("VOICE_CACHE_TTL_S", "voice_cache_ttl_s", int, 30,
          "a cached library voice is used this long before S3 is asked (one HEAD) whether it "
          "changed: a voice another worker deleted or replaced is seen within this time; 0 = on "
          "every job",
          low=0, high=3600),
        # Off by default: any caller of the endpoint could otherwise add a clip that others'
        # jobs then speak with (docs/api.md "Voices" says when to switch it on).
        S("VOICE_WRITES", "voice_writes", bool, False,
          "`on`: `voice.add` and `voice.delete` jobs may change the voice library; off, they "
          "fail with `VOICE_WRITES_DISABLED` (listing and use still work)"),
        S("VOICE_ALIASES", "voice_aliases", tuple, (),
          "comma-separated `alias=voice`: a job (or an OpenAI client) naming the alias, in any "
          "case, speaks with that library voice, e.g. `alloy=narrator` for clients that only "
          "send OpenAI's stock names",
          parse=lambda env, s: values.voice_aliases(env, s.env)),
        S("VOICE_REQUIRE_CONSENT", "voice_require_consent", bool, False,
          "`on`: `voice.add` without a `consent` record fails with `CONSENT_REQUIRED`"),
        S("VOICE_MAX_COUNT", "voice_max_count", int, 500,
          "the most voices `voice.add` lets the library hold (a soft limit: "
          "[Voices](api.md#voices))",
          low=1, high=10000),
    ),
    *_section(
        "Engine",
        S("FLASH_ATTN", "flash_attn", str, "auto",
          "`auto`: use flash-attn when its kernel loads, else install the matching release wheel "
          "if its sha256 is pinned in `f5worker/startup/flash_attn_wheels.json`, else torch "
          "attention with one WARNING; `require`: fail start-up instead; `off`. Recommended: bake"
          " the wheel at build time (`FLASH_ATTN_BAKE`), so a start installs nothing; run-time "
          "install only installs pinned or operator-hashed wheels, downloaded and checked before "
          "pip sees them",
          choices=("auto", "off", "require")),
        S(URL_VAR, "flash_attn_wheel_url", str, None,
          "install this wheel instead of the selected one: an `https://` URL of a `.whl` file "
          "(never a source distribution, which pip would build), with `FLASH_ATTN_WHEEL_SHA256`"),
        S(SHA_VAR, "flash_attn_wheel_sha256", str, None,
          "the sha256 (`sha256sum`, 64 hex digits) of the `FLASH_ATTN_WHEEL_URL` wheel; required "
          "with it. A wheel whose bytes differ is not installed",
          parse=_wheel_sha256),
        S("DEVICE", "device", str, "auto",
          "where the model runs",
          choices=("auto", "cpu", "cuda")),
        S("DTYPE", "dtype", str, "auto",
          "model weights: `auto` is upstream's choice (float16 on CUDA, float32 on CPU)",
          choices=("auto", "float16", "bfloat16", "float32")),
        S("TORCH_COMPILE", "torch_compile", bool, False,
          "`on`: compile the transformer with torch.compile during warm-up (counted in cold "
          "start; slower on CPU, see docs/benchmarks.md)"),
        # 4: with the fair scheduler a sentence's first audio does not wait for others' pages
        # (docs/benchmarks.md, scripts/bench_load.py); each job holds its own host memory.
        S("MAX_CONCURRENCY", "max_concurrency", int, 4,
          "jobs per worker at once (queue: the SDK's `concurrency_modifier`; http: the requests "
          "at work), their model work interleaved chunk by chunk by `SCHEDULER`; `1`: one job "
          "at a time (see [HTTP mode](http.md#concurrency))",
          low=1, high=64),
        # Which pending model work of concurrent requests runs next (engine/scheduler.py).
        S("SCHEDULER", "scheduler", str, "fair",
          "the order in which the one model serves concurrent requests' text chunks: `fair`: "
          "first chunks before continuations, then round-robin across requests (a new request's "
          "first audio never waits behind another's page), except that a streamed page whose "
          "listener is about to run out of audio goes first; `strict`: `fair` without that "
          "exception; `fifo`: first come, first served",
          choices=("fair", "strict", "fifo")),
        # Batches across requests (engine/scheduler.py, decision 034): 0 picks per device,
        # 4 on CUDA (upstream's Triton runtime batches 4), 1 on CPU, where a padded batch was
        # measured slower than one chunk at a time (docs/benchmarks.md).
        S("BATCH_MAX_ITEMS", "batch_max_items", int, 0,
          "text chunks of different requests (same model, voice and settings) that may share "
          "one padded, masked pass, each with its own seed; `0`: 4 on CUDA, 1 (no batching) "
          "on CPU",
          shown="0 (auto)", low=0, high=64),
        # A pass gathers whatever is pending when it starts; a window trades that much latency
        # for fuller batches when requests arrive together.
        S("BATCH_WINDOW_MS", "batch_window_ms", int, 0,
          "with batching on, how long a pass that could take more chunks waits for them to "
          "arrive before it starts",
          low=0, high=1000),
        # The longest audio one request may ask for; it bounds a job's time and memory.
        S("MAX_AUDIO_SECONDS", "max_audio_s", int, 1200,
          "the most audio one request may make (bounds a job's time and memory)",
          low=10, high=1200),
        # The preset of requests that name none (presets.py).
        S("DEFAULT_QUALITY", "default_quality", str, DEFAULT_QUALITY,
          "preset for requests without `quality` (see [Speed and "
          "quality](api.md#speed-and-quality))",
          choices=QUALITIES),
    ),
    *_section(
        "ASR",
        S("ASR_MODEL", "asr_model", str, parse_asr_model(DEFAULT_ASR_MODEL),
          "the ASR companion's Whisper model (CTranslate2 format, faster-whisper's files): a hub "
          "repo `OWNER/REPO[@REVISION]` or an absolute directory, found through the same source "
          "chain as F5 models ([models](models.md#the-asr-model)); `none`: no ASR",
          parse=lambda env, s: parse_asr_model(env.get(s.env, "").strip() or DEFAULT_ASR_MODEL),
          shown=f"`{DEFAULT_ASR_MODEL}`", values="`none`, a hub repo, a directory"),
        S("ASR_PRELOAD", "asr_preload", bool, False,
          "`on`: find and load the ASR model in the background at start-up (never delaying "
          "`/ping` or the first TTS job); `off`: on the first request that needs it"),
        S("ASR_COMPUTE_TYPE", "asr_compute_type", str, "auto",
          "CTranslate2's compute type for the ASR model; `auto`: float16 on CUDA, int8 on CPU "
          "(the device is the TTS engine's)",
          choices=("auto", "float16", "bfloat16", "int8_float16", "int8", "float32")),
    ),
    *_section(
        "Verification and word timings",
        # Off by default: verifying transcribes every chunk and may synthesize some again.
        S("VERIFY", "verify", bool, False,
          "`on`: jobs that do not say `verify` are verified (each chunk transcribed by the ASR "
          "companion and made again when it does not match its text; see "
          "[Verification](api.md#verification)); refused at start-up with `ASR_MODEL=none`"),
        # 0.15: above what a recogniser gets wrong on correct speech (a name spelled otherwise,
        # `OK` for `okay`), below a dropped clause or garbled speech (decision 030).
        S("VERIFY_MAX_CER", "verify_max_cer", float, 0.15,
          "the character error rate above which a verified chunk is made again with the next "
          "seed",
          low=0, high=1, parse=lambda env, s: values.number(env, s.env, s.default, 0, 1)),
        S("VERIFY_RETRIES", "verify_retries", int, 2,
          "how many times a verified chunk is made again at most (the best try is kept)",
          low=0, high=5),
    ),
    *_section(
        "Logs and build",
        S("LOG_LEVEL", "log_level", str, "INFO",
          "our logs",
          choices=LEVELS, upper=True),
        S("LOG_FORMAT", "log_format", str, "text",
          "`json` for JSON lines",
          choices=("text", "json")),
        # The SDK's own default is DEBUG, which logs every job's input and output.
        S("RUNPOD_LOG_LEVEL", "sdk_log_level", str, "INFO",
          "the SDK's logs (its own default, DEBUG, logs every job's input)",
          choices=("DEBUG", "INFO", "WARN", "ERROR"), upper=True),
        S("WORKER_VERSION", "worker_version", str, "dev",
          "in diagnostics and every result",
          shown="set by the build"),
        S("WORKER_GIT_SHA", "worker_git_sha", str, "unknown",
          "in diagnostics and every result",
          shown="set by the build"),
    ),
    *_section(
        "Serving",
        # queue: the RunPod SDK's job handler; http: FastAPI/uvicorn for a load-balancing endpoint
        # (README "Real-time (load-balancing endpoint)").
        S("SERVE_MODE", "serve_mode", str, "queue",
          "`queue`: RunPod's queue (the SDK's handler); `http`: a load-balancing endpoint (see "
          "[HTTP mode](http.md))",
          choices=("queue", "http")),
        S("PORT", "port", int, 80,
          "http mode: the server's port (RunPod's variable and default)",
          low=1, high=65535),
        S("PORT_HEALTH", "port_health", int, None,
          "http mode: the port `/ping` answers on (RunPod's variable)",
          low=1, high=65535, shown="`PORT`"),
        S("HTTP_HOST", "http_host", str, "0.0.0.0",
          "http mode: the address to listen on (`make run-http` uses 127.0.0.1)"),
        # Requests that may wait for a free slot beyond MAX_CONCURRENCY; more get 429.
        S("HTTP_MAX_WAITING", "http_max_waiting", int, 4,
          "http mode: requests that may wait for a slot beyond `MAX_CONCURRENCY`; more get 429",
          low=0, high=1024),
        # Client bounds (docs/http.md "Client bounds"): no client holds a connection, a slot or
        # a place in the queue longer than these, however slowly it sends or reads.
        S("HTTP_HEADER_TIMEOUT_S", "http_header_timeout_s", int, 10,
          "http mode: a request's headers must arrive within this many seconds of the connection "
          "(or of its first byte on a kept-alive one), else 408 and the connection is closed",
          low=1, high=300),
        S("HTTP_BODY_TIMEOUT_S", "http_body_timeout_s", int, 30,
          "http mode: the whole body of a POST must arrive within this many seconds of the "
          "route starting to read it, else 408 `REQUEST_TIMEOUT` and its admitted place is given "
          "back",
          low=1, high=600),
        S("HTTP_WRITE_TIMEOUT_S", "http_write_timeout_s", int, 30,
          "http mode: a streamed response that cannot write for this many seconds (the client "
          "stopped reading) is cut: the job is cancelled, its slot released, the connection "
          "closed",
          low=1, high=600),
        S("HTTP_QUEUE_TIMEOUT_S", "http_queue_timeout_s", int, 20,
          "http mode: the longest a request waits for a slot; then 429 `OVERLOADED` with "
          "`Retry-After` (a wait for a place held by bodies still arriving may last up to "
          "`HTTP_BODY_TIMEOUT_S`)",
          low=1, high=600),
        S("HTTP_MAX_CONNECTIONS", "http_max_connections", int, 100,
          "http mode: open connections at most; one more closes the oldest connection still "
          "waiting for its headers, or is answered 503 and closed when none is",
          low=4, high=10000),
        S("HTTP_STALL_S", "http_stall_s", int, 300,
          "http mode: `/ping` answers 503 while every slot is held by a request that made no "
          "progress (no chunk synthesized, no byte written) for this many seconds",
          low=10, high=3600),
        S("HTTP_AUTH_TOKEN", "http_auth_token", str, None,
          "http mode: when set, every route but `/ping` needs `Authorization: Bearer <token>` "
          "(401 `UNAUTHORIZED` otherwise); for deployments outside RunPod's authenticated "
          "gateway (a Pod's exposed port, a local network)",
          secret=True),
        # The WebSocket route (docs/http.md "Text as it is written"): per message and per session.
        S("HTTP_WS_IDLE_TIMEOUT_S", "http_ws_idle_timeout_s", int, 30,
          "http mode, `/v1/audio/speech/stream`: a session that sends no message for this many "
          "seconds while none of its audio is being made is closed (`REQUEST_TIMEOUT`)",
          low=1, high=600),
        S("HTTP_WS_MAX_SESSION_S", "http_ws_max_session_s", int, 600,
          "http mode, `/v1/audio/speech/stream`: the longest a session may last, from its "
          "handshake; then `REQUEST_TIMEOUT` and the connection is closed",
          low=10, high=7200),
        S("HTTP_WS_MAX_MESSAGE_BYTES", "http_ws_max_message_bytes", int, 65536,
          "http mode, `/v1/audio/speech/stream`: the largest message but `session.config` "
          "(which may carry a base64 reference, up to the 16 MiB body bound); a larger one is "
          "`REQUEST_TOO_LARGE`",
          low=1024, high=16777216),
        S("FIRST_CHUNK_MAX_BYTES", "first_chunk_max_bytes", int, 0,
          "http mode: the first text chunk's bound, `0` = a quarter of the chunk budget "
          "(upstream's socket server), `-1` = not shortened, N = at most N bytes",
          low=-1, high=4096),
    ),
)
# fmt: on
del S, LEVELS
BY_FIELD: dict[str, Setting] = {s.field: s for s in SETTINGS if s.field}
# The variables the worker knows, the aliases (`also`) included: what diagnostics may report.
ENV_NAMES: tuple[str, ...] = tuple(n for s in SETTINGS for n in (s.env, *s.also) if n)
SECRET_ENV: frozenset[str] = frozenset(s.env for s in SETTINGS if s.secret)


def default(field: str) -> Any:
    """The table's default for a Settings field: the one place it is written."""
    return BY_FIELD[field].default


def settings_markdown() -> str:
    """docs/configuration.md's tables, one per section, generated from SETTINGS."""
    parts: list[str] = []
    for section in dict.fromkeys(s.section for s in SETTINGS):
        rows = [f"### {section}", "", "| name | default | values | meaning |", "|---|---|---|---|"]
        for s in SETTINGS:
            if s.env and s.section == section:
                name = f"`{s.env}`" + "".join(f" (or `{a}`)" for a in s.also)
                rows.append(f"| {name} | {_shown_default(s)} | {_shown_values(s)} | {s.doc} |")
        parts.append("\n".join(rows))
    return "\n\n".join(parts)


def _shown_default(s: Setting) -> str:
    if s.shown:
        return s.shown
    if s.default is None or s.default == ():
        return "unset"
    if isinstance(s.default, bool):
        return "`on`" if s.default else "`off`"
    return f"`{s.default}`"


def _shown_values(s: Setting) -> str:
    if s.values:
        return s.values
    if s.choices:
        return ", ".join(f"`{c}`" for c in s.choices)
    if s.low is not None:
        return f"{s.low}..{s.high}"
    if s.kind is bool:
        return "`on`, `off`"
    return ""
