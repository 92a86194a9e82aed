"""ModelSources: built from Settings field by field, and the only door from the settings into
f5worker.models (every other module there takes the parameter objects)."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from f5worker.config import Settings
from f5worker.models.sources import ModelSources, S3Location
from f5worker.testing import REPO


def test_from_settings_maps_every_field():
    settings = Settings(
        model_cache_dir=Path("/c"),
        hf_home=Path("/hf"),
        runpod_hf_cache_dir=Path("/rp"),
        model_dir=Path("/m"),
        demo_fallback=True,
        s3_bucket="b",
        s3_prefix="p/q",
        s3_endpoint_url="http://s3.local",
        aws_region="eu-west-1",
    )
    sources = ModelSources.from_settings(settings)
    assert sources == ModelSources(
        cache_dir=Path("/c"),
        hf_home=Path("/hf"),
        runpod_hf_cache_dir=Path("/rp"),
        s3=S3Location("b", "p/q", "http://s3.local", "eu-west-1"),
        model_dir=Path("/m"),
        demo_fallback=True,
    )
    # A field added to either class must be mapped (and this test told about it).
    assert [f.name for f in dataclasses.fields(ModelSources)] == [
        "cache_dir",
        "hf_home",
        "runpod_hf_cache_dir",
        "s3",
        "model_dir",
        "demo_fallback",
    ]
    assert [f.name for f in dataclasses.fields(S3Location)] == [
        "bucket",
        "prefix",
        "endpoint_url",
        "region",
    ]


@pytest.mark.parametrize("bucket", [None, ""])
def test_no_bucket_is_no_s3_cache(bucket):
    assert ModelSources.from_settings(Settings(s3_bucket=bucket)).s3 is None


def test_the_parameter_objects_are_frozen():
    sources = ModelSources.from_settings(Settings(s3_bucket="b"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        sources.cache_dir = Path("/elsewhere")  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        sources.s3.bucket = "other"  # type: ignore[misc, union-attr]


def test_only_sources_py_reads_the_settings_in_f5worker_models():
    readers = []
    for path in sorted((REPO / "f5worker" / "models").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "f5worker.config"
            ):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("f5worker.config")]
            if "Settings" in names or any(n.startswith("f5worker.config") for n in names):
                readers.append(path.name)
    assert readers == ["sources.py"]
