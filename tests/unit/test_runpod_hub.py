"""RunPod Hub metadata (.runpod/hub.json, tests.json) agrees with config, schema and the image."""

from __future__ import annotations

import json
import re

import pytest

from f5worker.config import SETTINGS, Settings
from f5worker.errors import ConfigError
from f5worker.job.schema import parse_request
from f5worker.testing import REPO

HUB = json.loads((REPO / ".runpod" / "hub.json").read_text())
TESTS = json.loads((REPO / ".runpod" / "tests.json").read_text())
ENV_INPUTS = [e for e in HUB["config"]["env"] if "input" in e]
# Env key -> Settings field, for the variables config reads (its table, f5worker/config/table.py);
# the table's entries without a field are read by libraries (boto3's chain, huggingface_hub).
FIELD = {name: s.field for s in SETTINGS if s.field for name in (s.env, *s.also) if name}
LIBRARY_ENV = {s.env for s in SETTINGS if s.env and s.field is None}


def test_listing_fields():
    assert HUB["title"] and len(HUB["description"]) > 40
    assert (HUB["type"], HUB["category"], HUB["config"]["runsOn"]) == ("serverless", "audio", "GPU")
    assert HUB["config"]["gpuCount"] == 1
    assert HUB["config"]["containerDiskInGb"] >= 20  # model + hub cache under /tmp


@pytest.mark.parametrize("entry", ENV_INPUTS, ids=lambda e: e["key"])
def test_every_env_input_is_read_by_the_worker(entry):
    key, spec = entry["key"], entry["input"]
    assert spec["name"] and spec["description"]
    assert spec["type"] in ("string", "number", "boolean")
    assert key in FIELD or key in LIBRARY_ENV, f"{key} is not in f5worker/config/table.py"


@pytest.mark.parametrize(
    "entry", [e for e in ENV_INPUTS if "default" in e["input"]], ids=lambda e: e["key"]
)
def test_defaults_are_the_worker_defaults(entry):
    key, default = entry["key"], entry["input"]["default"]
    from_hub = Settings.from_env({key: str(default)})
    assert getattr(from_hub, FIELD[key]) == getattr(Settings.from_env({}), FIELD[key])


@pytest.mark.parametrize(
    "entry", [e for e in ENV_INPUTS if "options" in e["input"]], ids=lambda e: e["key"]
)
def test_every_option_is_accepted_and_others_are_not(entry):
    key = entry["key"]
    for option in entry["input"]["options"]:
        Settings.from_env({key: option["value"]})
    with pytest.raises(ConfigError, match=key):
        Settings.from_env({key: "not-an-option"})


def test_gpus_and_cuda_fit_the_image_and_flash_attn():
    """flash-attn 2 needs Ampere or newer; the host driver must run the image's CUDA 12.4."""
    dockerfile = (REPO / "Dockerfile").read_text()
    image_cuda = re.search(r"ARG BASE_IMAGE=\S+-cuda(\d+)\.(\d+)", dockerfile).groups()
    floor = tuple(int(x) for x in image_cuda)
    pools = HUB["config"]["gpuIds"].split(",")
    assert pools and all(p.split("_")[0] in ("AMPERE", "ADA", "HOPPER", "BLACKWELL") for p in pools)
    for cfg in (HUB["config"], TESTS["config"]):
        versions = [tuple(int(x) for x in v.split(".")) for v in cfg["allowedCudaVersions"]]
        assert versions and min(versions) >= floor


@pytest.mark.parametrize("case", TESTS["tests"], ids=lambda t: t["name"])
def test_hub_test_requests_parse_and_have_timeouts(case):
    parse_request(case["input"])
    assert 10_000 <= case["timeout"] <= 900_000  # milliseconds; the first one pays a cold start


def test_hub_test_config():
    cfg = TESTS["config"]
    assert cfg["gpuCount"] == 1 and cfg["gpuTypeId"].startswith("NVIDIA ")
    env = {e["key"]: e["value"] for e in cfg["env"]}
    Settings.from_env(env)
    assert set(env) <= set(FIELD) | LIBRARY_ENV


def test_test_input_json_is_a_valid_request():
    parse_request(json.loads((REPO / "test_input.json").read_text())["input"])


@pytest.mark.parametrize("preset", HUB["config"]["presets"], ids=lambda p: p["name"][:40])
def test_presets_are_valid_settings(preset):
    env = {key: str(value) for key, value in preset["defaults"].items()}
    assert set(env) <= set(FIELD)
    Settings.from_env(env)


def test_hub_files_show_a_hub_checkpoint_both_ways():
    """Through RunPod's cached models and through the S3 cache (#12), and one served in the
    Hub's own tests, picked by name."""
    names = " ".join(p["name"] for p in HUB["config"]["presets"])
    assert "RunPod cached models" in names and "S3 cache" in names
    models = Settings.from_env({e["key"]: e["value"] for e in TESTS["config"]["env"]}).models
    hub_models = {m.name for m in models if m.hub is not None and m.text.startswith("hf://")}
    assert hub_models & {t["input"].get("model") for t in TESTS["tests"]}
