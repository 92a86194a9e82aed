from dataclasses import fields
from pathlib import Path

import pytest

from f5worker.config import SETTINGS, S3Scope, Settings
from f5worker.errors import ConfigError


def test_defaults_from_empty_env():
    s = Settings.from_env({})
    assert s.model_name == "F5TTS_v1_Base"
    assert s.model_cache_dir == Path("/tmp/models")
    assert s.hf_home == Path("/tmp/hf-home")
    assert s.s3_bucket is None and s.s3_prefix == "f5-tts"
    assert (s.flash_attn, s.device, s.max_concurrency) == ("auto", "auto", 4)
    assert s.sdk_log_level == "INFO"
    assert s.worker_version == "dev" and s.worker_git_sha == "unknown"
    assert (s.bucket_name, s.bucket_url_expiry_s) == (None, 3600)
    assert (s.ref_audio_url_timeout_s, s.voice_cache_size) == (20, 32)
    assert (s.dtype, s.torch_compile) == ("auto", False)
    assert s.default_quality == "best"  # upstream's 32 steps, as before presets existed


def test_values_are_read_and_normalised():
    s = Settings.from_env(
        {
            "MODEL_NAME": "demo",
            "MODEL_DIR": "/m",
            "S3_BUCKET": " b ",
            "S3_PREFIX": "/p/x/",
            "FLASH_ATTN": "OFF",
            "MAX_CONCURRENCY": "4",
            "LOG_LEVEL": "debug",
            "WORKER_VERSION": "v1",
            "AWS_DEFAULT_REGION": "eu-west-1",
        }
    )
    assert s.is_demo and s.model_dir == Path("/m")
    assert (s.s3_bucket, s.s3_prefix, s.aws_region) == ("b", "p/x", "eu-west-1")
    assert (s.flash_attn, s.max_concurrency, s.log_level, s.worker_version) == (
        "off",
        4,
        "DEBUG",
        "v1",
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FLASH_ATTN", "maybe"),
        ("DEVICE", "tpu"),
        ("DTYPE", "float8"),
        ("TORCH_COMPILE", "sometimes"),
        ("MAX_CONCURRENCY", "two"),
        ("MAX_CONCURRENCY", "0"),
        ("MAX_CONCURRENCY", "1000"),
        ("LOG_FORMAT", "xml"),
        ("LOG_LEVEL", "LOUD"),
        ("RUNPOD_LOG_LEVEL", "TRACE"),
        ("BUCKET_URL_EXPIRY_S", "10"),
        ("BUCKET_URL_EXPIRY_S", "604801"),
        ("REF_AUDIO_URL_TIMEOUT_S", "0"),
        ("VOICE_CACHE_SIZE", "many"),
        ("MODEL_NAME", "../etc"),
        ("MODEL_NAME", "a/b"),
        ("REF_AUDIO_S3_ALLOW", "Bad_Bucket"),
        ("REF_AUDIO_S3_ALLOW", "x"),
        ("REF_AUDIO_S3_ALLOW", "bucket/a/../b"),
        ("REF_AUDIO_S3_ALLOW", "bucket/a//b"),
        ("REF_AUDIO_S3_ALLOW", "bucket/./b"),
        ("REF_AUDIO_S3_ALLOW", "*"),
        ("DEFAULT_QUALITY", "ultra"),
        ("SERVE_MODE", "grpc"),
        ("PORT", "0"),
        ("PORT", "http"),
        ("PORT_HEALTH", "70000"),
        ("HTTP_MAX_WAITING", "-1"),
        ("FIRST_CHUNK_MAX_BYTES", "-2"),
        ("VERIFY", "maybe"),
        ("VERIFY_MAX_CER", "a tenth"),
        ("VERIFY_MAX_CER", "nan"),
        ("VERIFY_MAX_CER", "1.5"),
        ("VERIFY_RETRIES", "9"),
    ],
)
def test_bad_values_name_the_variable(name, value):
    with pytest.raises(ConfigError) as info:
        Settings.from_env({name: value})
    assert name in info.value.message and value in info.value.message


@pytest.mark.parametrize(
    ("env", "dtype", "compiled"),
    [
        ({"DTYPE": "BFloat16", "TORCH_COMPILE": "yes"}, "bfloat16", True),
        ({"DTYPE": "float16", "TORCH_COMPILE": "1"}, "float16", True),
        ({"DTYPE": "float32", "TORCH_COMPILE": "off"}, "float32", False),
        ({"TORCH_COMPILE": ""}, "auto", False),
    ],
)
def test_dtype_and_compile(env, dtype, compiled):
    s = Settings.from_env(env)
    assert (s.dtype, s.torch_compile) == (dtype, compiled)


def test_serving_mode_settings():
    s = Settings.from_env({})
    assert (s.serve_mode, s.port, s.health_port, s.http_host) == ("queue", 80, 80, "0.0.0.0")
    assert (s.http_max_waiting, s.first_chunk_max_bytes) == (4, 0)
    s = Settings.from_env(
        {
            "SERVE_MODE": "HTTP",
            "PORT": "8000",
            "PORT_HEALTH": "8001",
            "HTTP_HOST": "127.0.0.1",
            "HTTP_MAX_WAITING": "0",
            "FIRST_CHUNK_MAX_BYTES": "-1",
        }
    )
    assert (s.serve_mode, s.port, s.health_port, s.http_host) == ("http", 8000, 8001, "127.0.0.1")
    assert (s.http_max_waiting, s.first_chunk_max_bytes) == (0, -1)
    assert Settings.from_env({"PORT": "5000", "PORT_HEALTH": ""}).health_port == 5000


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        Settings().model_name = "x"  # type: ignore[misc]


def test_ref_audio_s3_allow():
    assert Settings.from_env({}).ref_audio_s3_allow == ()
    s = Settings.from_env({"REF_AUDIO_S3_ALLOW": " refs , s3://shared/voices/en/ ,, team/a "})
    assert s.ref_audio_s3_allow == (
        S3Scope("refs"),
        S3Scope("shared", "voices/en/"),
        S3Scope("team", "a/"),
    )
    whole, under = S3Scope("refs"), S3Scope("team", "a/")
    assert whole.covers("refs", "x.wav") and not whole.covers("refs2", "x.wav")
    assert under.covers("team", "a/x.wav") and not under.covers("team", "ab/x.wav")
    with pytest.raises(ConfigError) as info:  # one bad entry among good ones
        Settings.from_env({"REF_AUDIO_S3_ALLOW": "refs, UPPER"})
    assert "REF_AUDIO_S3_ALLOW" in info.value.message and "'UPPER'" in info.value.message


@pytest.mark.parametrize(
    ("value", "allowed"),
    [("", False), ("true", True), ("1", True), (" YES ", True), ("on", False), ("no", False)],
)
def test_private_download_urls_read_as_the_sdk_reads_them(value, allowed):
    env = {"RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS": value}
    assert Settings.from_env(env).allow_private_download_urls is allowed


@pytest.mark.parametrize("value", ["fast", " Balanced ", "BEST"])
def test_default_quality_is_a_preset_name(value):
    assert Settings.from_env({"DEFAULT_QUALITY": value}).default_quality == value.strip().lower()


def test_voice_library_settings():
    s = Settings.from_env({})
    assert (s.voice_cache_ttl_s, s.voice_writes, s.voice_max_count) == (30, False, 500)
    s = Settings.from_env({"VOICE_CACHE_TTL_S": "0", "VOICE_WRITES": "on", "VOICE_MAX_COUNT": "10"})
    assert (s.voice_cache_ttl_s, s.voice_writes, s.voice_max_count) == (0, True, 10)
    for name, value in [
        ("VOICE_CACHE_TTL_S", "-1"),
        ("VOICE_CACHE_TTL_S", "3601"),
        ("VOICE_WRITES", "maybe"),
        ("VOICE_MAX_COUNT", "0"),
    ]:
        with pytest.raises(ConfigError) as info:
            Settings.from_env({name: value})
        assert name in info.value.message


def test_every_field_is_declared_once_in_the_table():
    """Settings' fields and the table's entries are the same set; each default is the table's."""
    declared = [s.field for s in SETTINGS if s.field]
    assert sorted(declared) == sorted(f.name for f in fields(Settings))
    assert len(set(declared)) == len(declared)
    names = [n for s in SETTINGS for n in (s.env, *s.also) if n]
    assert len(set(names)) == len(names)
    built = Settings()
    for s in SETTINGS:
        if s.field:
            assert getattr(built, s.field) == s.default, s.field


@pytest.mark.parametrize("entry", [s for s in SETTINGS if s.low is not None], ids=lambda s: s.env)
def test_bounded_entries_refuse_values_outside_their_bounds(entry):
    Settings.from_env({entry.env: str(entry.low)})
    Settings.from_env({entry.env: str(entry.high)})
    for bad in (entry.low - 1, entry.high + 1):
        with pytest.raises(ConfigError, match=entry.env):
            Settings.from_env({entry.env: str(bad)})


@pytest.mark.parametrize("entry", [s for s in SETTINGS if s.choices], ids=lambda s: s.env)
def test_choice_entries_accept_their_choices_only(entry):
    for option in entry.choices:
        assert getattr(Settings.from_env({entry.env: option}), entry.field) == option
    with pytest.raises(ConfigError, match=entry.env):
        Settings.from_env({entry.env: "not-a-choice"})


def test_voice_aliases_are_the_operators_pairs():
    env = {"VOICE_ALIASES": " alloy=narrator, Nova = anna_v2 ,"}
    assert Settings.from_env(env).voice_aliases == (("alloy", "narrator"), ("nova", "anna_v2"))
    assert Settings.from_env({}).voice_aliases == ()
    for bad in ("alloy", "alloy=", "=narrator", "alloy=a b", "alloy=x, ALLOY=y", "a=../x"):
        with pytest.raises(ConfigError, match="VOICE_ALIASES"):
            Settings.from_env({"VOICE_ALIASES": bad})


def test_verification_settings():
    s = Settings.from_env({})
    assert (s.verify, s.verify_max_cer, s.verify_retries) == (False, 0.15, 2)
    s = Settings.from_env({"VERIFY": "on", "VERIFY_MAX_CER": " 0.05 ", "VERIFY_RETRIES": "0"})
    assert (s.verify, s.verify_max_cer, s.verify_retries) == (True, 0.05, 0)


def test_verify_on_without_the_asr_companion_is_refused_at_start_up():
    with pytest.raises(ConfigError, match="VERIFY=on needs the ASR companion"):
        Settings.from_env({"VERIFY": "on", "ASR_MODEL": "none"})
    assert Settings.from_env({"VERIFY": "on"}).verify
    assert Settings.from_env({"ASR_MODEL": "none"}).asr_model is None
