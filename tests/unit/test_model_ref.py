"""Model references (MODEL_NAME, MODELS): parsing, keys, CONFIG_ERROR naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from f5worker.config import Settings
from f5worker.errors import ConfigError, GPUError, ModelError, ModelNotFound
from f5worker.job.models import ModelPool
from f5worker.model_ref import (
    DEFAULT_ASR_MODEL,
    MODEL_NAME_PATTERN,
    parse_asr_model,
    parse_models,
    parse_reference,
)

FT = "hf://me/ft-xx/ckpts/model_1200000.safetensors?vocab=ckpts/vocab.txt&arch=F5TTS_Base"


def test_a_hub_reference_parses_every_part():
    ref = parse_reference(FT + "&revision=v1", "MODEL_NAME")
    assert ref.hub.repo == "me/ft-xx" and ref.hub.checkpoint == "ckpts/model_1200000.safetensors"
    assert (ref.hub.vocab, ref.hub.config, ref.hub.revision) == (
        "ckpts/vocab.txt",
        "F5TTS_Base",
        "v1",
    )
    bare = parse_reference("hf://me/ft/model.pt", "MODEL_NAME").hub
    assert (bare.vocab, bare.config, bare.revision) == (None, "F5TTS_v1_Base", "main")


def test_keys_differ_for_any_difference_and_known_names_keep_theirs():
    key = parse_reference(FT, "M").key
    assert key.startswith("hf--me--ft-xx--")
    assert parse_reference(FT + "&revision=main", "M").key == key  # the default, spelt out
    for other in (
        FT + "&revision=v2",
        FT.replace("vocab.txt", "vocab2.txt"),
        FT.replace("F5TTS_Base", "F5TTS_v1_Base"),
        FT.replace("model_1200000", "model_1300000"),
        FT.replace("me/", "you/"),
    ):
        assert parse_reference(other, "M").key != key
    assert parse_reference("F5TTS_v1_Base", "M").key == "F5TTS_v1_Base"


@pytest.mark.parametrize(
    "bad",
    [
        "hf://me/model.safetensors",
        "hf://me/ft/model.bin",
        "hf://me/ft/model.pt?arch=F5TTS_Huge",
        "hf://me/ft/model.pt?color=red",
        "hf://me/ft/model.pt?vocab=../x.txt",
        "hf://me/ft/model.pt?arch=F5TTS_Base&arch=F5TTS_Base",
        "hf://me/ft/a/../model.pt",
        "a/b",
        "hf--me--ft--0123",
    ],
)
def test_malformed_references_are_config_errors_naming_the_variable(bad):
    with pytest.raises(ConfigError, match="MODEL_NAME"):
        Settings.from_env({"MODEL_NAME": bad})
    with pytest.raises(ConfigError, match="MODELS"):
        Settings.from_env({"MODELS": f"a=F5TTS_v1_Base, b={bad}"})


def test_models_list_names_default_and_duplicates():
    settings = Settings.from_env(
        {"MODELS": f"base=F5TTS_v1_Base,\nxx={FT}, demo", "MODEL_NAME": "E2TTS_Base"}
    )
    assert [r.name for r in settings.models] == ["base", "xx", "demo"]
    assert settings.model_name == "F5TTS_v1_Base" and settings.default_model.name == "base"
    with pytest.raises(ConfigError, match="twice"):
        parse_models("a=demo, b=demo")


def test_pool_resolves_names_keys_and_default_and_refuses_others():
    refs = parse_models(f"base=F5TTS_v1_Base, xx={FT}")
    pool = ModelPool(refs, lambda r: r.key, 1)
    assert pool.resolve(None).name == pool.resolve("default").name == "base"
    assert pool.resolve(refs[1].key).name == "xx"
    with pytest.raises(ModelNotFound, match="available: base, xx"):
        pool.resolve("nope")


@pytest.mark.parametrize(
    ("env", "fallback"),
    [
        ({}, True),
        ({"MODEL_NAME": " "}, True),
        ({"MODEL_NAME": "F5TTS_v1_Base"}, False),
        ({"MODEL_NAME": FT}, False),
        ({"MODELS": "base=F5TTS_v1_Base"}, False),
    ],
)
def test_the_demo_stands_in_only_when_no_model_is_named(env, fallback):
    assert Settings.from_env(env).demo_fallback is fallback


def test_a_model_found_nowhere_evicts_nothing():
    def fetch(ref):
        raise ModelError(f"model {ref.name} is not in MODEL_CACHE_DIR")

    pool = ModelPool(parse_models(f"base=F5TTS_v1_Base, xx={FT}"), lambda r: r.key, 1, fetch=fetch)
    pool.add(pool.default, "base-engine")
    with pytest.raises(ModelError, match="model xx is not in"):
        pool.get("xx")
    assert pool.resident() == ["base"] and pool.evictions == 0 and pool.loads == 0
    assert pool.get(None)[1] == "base-engine"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_failed_model_is_remembered_and_answered_without_the_load_lock():
    calls: list[str] = []

    def fetch(ref):
        calls.append(ref.name)
        raise ModelError(f"model {ref.name} is not in MODEL_CACHE_DIR")

    clock = FakeClock()
    refs = parse_models(f"base=F5TTS_v1_Base, xx={FT}")
    pool = ModelPool(refs, lambda r: r.key, 2, fetch=fetch, failed_ttl_s=60, clock=clock)
    pool.add(pool.default, "base-engine")
    with pytest.raises(ModelError, match="model xx is not in"):
        pool.get("xx")
    with pool._load_lock:  # another model's load under way: the answer does not wait for it
        for _ in range(3):
            with pytest.raises(ModelError, match=r"model xx is unavailable \(MODEL_ERROR") as err:
                pool.get("xx")
            assert err.value.retryable is False
    assert calls == ["xx"]  # the source chain ran once
    clock.now = 61.0
    with pytest.raises(ModelError, match="model xx is not in"):
        pool.get("xx")
    assert calls == ["xx", "xx"]  # retried once the memory expired


def test_a_fatal_load_error_is_not_remembered():
    def load(ref):
        raise GPUError("CUDA is broken")

    pool = ModelPool(parse_models(f"base=F5TTS_v1_Base, xx={FT}"), load, 2, failed_ttl_s=60)
    for _ in range(2):
        with pytest.raises(GPUError):
            pool.get("xx")


def test_asr_model_references_are_none_a_repo_or_a_directory():
    default = Settings.from_env({}).asr_model
    assert default is not None and default.repo == DEFAULT_ASR_MODEL
    assert Settings.from_env({"ASR_MODEL": " None "}).asr_model is None
    pinned = parse_asr_model("Systran/faster-whisper-large-v3@" + "a" * 40)
    assert pinned is not None and (pinned.repo, pinned.revision) == (
        "Systran/faster-whisper-large-v3",
        "a" * 40,
    )
    local = parse_asr_model("/models/whisper")
    assert local is not None and local.local_dir == Path("/models/whisper")
    keys = {
        r.key
        for r in (default, pinned, local, parse_asr_model("Systran/faster-whisper-large-v3"))
        if r is not None
    }
    assert len(keys) == 4 and all(MODEL_NAME_PATTERN.fullmatch(k) for k in keys)
    # No ASR key is an F5 model's: a hub checkpoint's key hashes another canonical string.
    f5 = parse_reference("hf://Systran/faster-whisper-large-v3/model.safetensors", "MODEL_NAME")
    assert f5.key not in keys


@pytest.mark.parametrize("bad", ["whisper", "a/b/c", "owner/repo@..", "/models/../x", "a b/c"])
def test_malformed_asr_references_are_config_errors(bad):
    with pytest.raises(ConfigError, match="ASR_MODEL"):
        Settings.from_env({"ASR_MODEL": bad})
