"""Where models come from: the model layer's parameters, as small frozen values.

The functions of f5worker.models take these, plus the model's name or reference, instead of the
app's Settings: what a step reads is in its signature, and keying a step on another model means
passing that model's name, never rewriting the settings. This module is the one place in
f5worker.models that reads Settings (ModelSources.from_settings); a process builds its
ModelSources once, where it reads its settings (startup/main.py, startup/compose.py, s3_utils.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from f5worker.config import Settings


@dataclass(frozen=True)
class S3Location:
    """The S3 model cache: `s3://<bucket>/<prefix>/<model>/...` (an empty prefix is the bucket
    root), reached at endpoint_url (None: AWS) in region (None: the default chain's)."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None


@dataclass(frozen=True)
class ModelSources:
    """Every place the source chain (models/source.py) looks for a model, and where it keeps one.

    cache_dir: MODEL_CACHE_DIR, the local cache. hf_home: HF_HOME (the hub's download cache is
    its hub/). runpod_hf_cache_dir: RunPod's cached models. s3: the S3 model cache, None when
    off. model_dir (MODEL_DIR) and demo_fallback concern the default model only: a directory
    served as is, and whether the demo model may stand in when it is found nowhere.
    """

    cache_dir: Path
    hf_home: Path
    runpod_hf_cache_dir: Path
    s3: S3Location | None = None
    model_dir: Path | None = None
    demo_fallback: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelSources:
        s3 = None
        if settings.s3_bucket:  # an empty S3_BUCKET is no cache, as everywhere
            s3 = S3Location(
                bucket=settings.s3_bucket,
                prefix=settings.s3_prefix,
                endpoint_url=settings.s3_endpoint_url,
                region=settings.aws_region,
            )
        return cls(
            cache_dir=settings.model_cache_dir,
            hf_home=settings.hf_home,
            runpod_hf_cache_dir=settings.runpod_hf_cache_dir,
            s3=s3,
            model_dir=settings.model_dir,
            demo_fallback=settings.demo_fallback,
        )
