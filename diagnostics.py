"""The start-up environment report: one greppable `diag.key=value` line per fact, no secrets.

It answers "what is this container?" before the first job: interpreter, torch build and its C++
ABI, GPU and driver, free disk, library versions, worker version, and whether our modules expose
the functions start-up needs (an image built from old code once lacked sync_models_from_s3).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import platform
import shutil
from collections.abc import Mapping
from pathlib import Path

from config import Settings

log = logging.getLogger(__name__)

# module -> functions start-up relies on; a missing one fails start-up with its name.
REQUIRED_FUNCTIONS: dict[str, tuple[str, ...]] = {
    "s3_utils": ("download_from_s3", "upload_to_s3"),
    "handler": ("serve",),
}
_SECRET_MARKERS = ("SECRET", "TOKEN", "PASSWORD", "KEY", "CREDENTIAL")
_REPORTED_ENV = (
    "MODEL_NAME",
    "MODEL_DIR",
    "MODEL_CACHE_DIR",
    "HF_HOME",
    "S3_BUCKET",
    "S3_PREFIX",
    "S3_ENDPOINT_URL",
    "AWS_REGION",
    "BUCKET_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "BUCKET_ACCESS_KEY_ID",
    "BUCKET_SECRET_ACCESS_KEY",
    "HF_TOKEN",
    "FLASH_ATTN",
    "DEVICE",
    "MAX_CONCURRENCY",
)


def collect(settings: Settings, env: Mapping[str, str]) -> dict[str, str]:
    facts = {"python": platform.python_version(), "platform": platform.platform()}
    facts.update(_torch_facts())
    for dist in ("f5-tts", "runpod", "boto3", "flash-attn"):
        facts[f"pkg.{dist}"] = _version(dist)
    for label, path in (("tmp", Path("/tmp")), ("cache_dir", settings.model_cache_dir)):
        facts[f"disk.{label}_free_gb"] = _free_gb(path)
    facts["worker_version"] = settings.worker_version
    facts["env"] = " ".join(f"{k}={redact(k, env[k])}" for k in _REPORTED_ENV if k in env)
    for module, names in REQUIRED_FUNCTIONS.items():
        facts[f"functions.{module}"] = ",".join(missing_functions(module, names)) or "ok"
    return facts


def log_report(facts: Mapping[str, str]) -> None:
    for key, value in facts.items():
        log.info("diag.%s=%s", key, value)


def redact(name: str, value: str) -> str:
    if any(marker in name.upper() for marker in _SECRET_MARKERS):
        return "<redacted>" if value else "<empty>"
    return value


def missing_functions(module: str, names: tuple[str, ...]) -> list[str]:
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return [f"{module} (import failed)"]
    return [f"{module}.{n}" for n in names if not callable(getattr(mod, n, None))]


def _torch_facts() -> dict[str, str]:
    try:
        import torch
    except ImportError:
        return {"torch": "not installed"}
    facts = {
        "torch": torch.__version__,
        "torch_cuda": str(torch.version.cuda),
        "cudnn": str(torch.backends.cudnn.version()),
        "cxx11abi": str(torch._C._GLIBCXX_USE_CXX11_ABI),
        "cuda_available": str(torch.cuda.is_available()),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        facts["gpu"] = (
            f"{props.name} mem_gb={props.total_memory / 1e9:.1f} cc={props.major}.{props.minor}"
        )
        facts["driver"] = _nvidia_driver()
    return facts


def _nvidia_driver() -> str:
    try:
        return Path("/proc/driver/nvidia/version").read_text().split("\n")[0].strip()
    except OSError:
        return "unknown"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _free_gb(path: Path) -> str:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return f"{shutil.disk_usage(probe).free / 1e9:.1f}"
