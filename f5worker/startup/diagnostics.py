"""The start-up environment report: one greppable `diag.key=value` line per fact, no secrets.

It answers "what is this container?" before the first job: interpreter, torch build and its C++
ABI, GPU and driver, free disk, library versions, worker version and git sha, the flash-attn
wheel this torch needs, and whether our modules define the functions start-up relies on (an image
built from old code once lacked sync_models_from_s3). That last check reads the modules' source
(find_spec + ast) instead of importing them: importing the job path alone costs torch and f5-tts,
about 16 s cold, just to learn that a name exists.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import logging
import platform
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from f5worker.config import Settings
from f5worker.config.table import ENV_NAMES, SECRET_ENV
from f5worker.redact import redact_urls

log = logging.getLogger(__name__)

# module -> functions start-up relies on; a missing one fails start-up with its name.
REQUIRED_FUNCTIONS: dict[str, tuple[str, ...]] = {
    "s3_utils": ("download_from_s3", "upload_to_s3", "sync_models_from_s3", "upload_models_to_s3"),
    "f5worker.models.source": ("resolve_model_dir",),
    "f5worker.startup.flash_attn": ("ensure_flash_attn",),
    "handler": ("build_worker", "start_sdk"),
}
PACKAGES = (
    "torchaudio",
    "f5-tts",
    "runpod",
    "boto3",
    "flash-attn",
    "faster-whisper",
    "ctranslate2",
)
# A name that says it is secret is redacted even when the settings table does not mark it.
_SECRET_MARKERS = ("SECRET", "TOKEN", "PASSWORD", "KEY", "CREDENTIAL")
# Only these are reported: the settings table's variables and what RunPod says about the worker.
# Anything else in the environment is never read here.
_RUNPOD_ENV = ("RUNPOD_POD_ID", "RUNPOD_ENDPOINT_ID", "RUNPOD_GPU_COUNT")
_REPORTED_ENV = (*ENV_NAMES, *_RUNPOD_ENV)


def collect(
    settings: Settings,
    env: Mapping[str, str],
    required: Mapping[str, tuple[str, ...]] = REQUIRED_FUNCTIONS,
) -> dict[str, str]:
    """All facts, in report order. Imports torch (the engine needs it anyway), never f5-tts."""
    facts = {"python": platform.python_version(), "platform": platform.platform()}
    facts.update(_torch_facts())
    for dist in PACKAGES:
        facts[f"pkg.{dist}"] = _version(dist)
    for label, path in (("tmp", Path("/tmp")), ("cache_dir", settings.model_cache_dir)):
        facts[f"disk.{label}_free_gb"] = _free_gb(path)
    facts["worker_version"] = settings.worker_version
    facts["git_sha"] = _git_sha(settings.worker_git_sha)
    facts["env"] = " ".join(f"{k}={redact(k, env[k])}" for k in _REPORTED_ENV if k in env)
    for module, names in required.items():
        facts[f"functions.{module}"] = ",".join(missing_functions(module, names)) or "ok"
    return facts


def missing_required(facts: Mapping[str, str]) -> list[str]:
    """The `functions.*` entries that name something missing; empty means start-up may go on."""
    return [v for k, v in facts.items() if k.startswith("functions.") and v != "ok"]


def log_report(facts: Mapping[str, str]) -> None:
    """One INFO line per fact; URLs are cut again here, whichever fact they came in by."""
    for key, value in facts.items():
        log.info("diag.%s=%s", key, redact_urls(value))


def format_report(facts: Mapping[str, str]) -> str:
    return "".join(f"diag.{key}={redact_urls(value)}\n" for key, value in facts.items())


def redact(name: str, value: str) -> str:
    """Secret-named variables show only whether they are set; any URL in a value shows only
    scheme, host(:port) and path, since userinfo, query (presigned signatures) and fragment
    (`#access_token=`) carry credentials and this report goes to the logs on every start."""
    if name in SECRET_ENV or any(marker in name.upper() for marker in _SECRET_MARKERS):
        return "<redacted>" if value else "<empty>"
    return redact_urls(value)


def missing_functions(module: str, names: tuple[str, ...]) -> list[str]:
    """`module.name` for each name the module's source does not define at top level."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return [f"{module} (module not found)"]
    try:
        defined = top_level_names(Path(spec.origin).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError) as exc:
        return [f"{module} (unreadable: {type(exc).__name__})"]
    return [f"{module}.{n}" for n in names if n not in defined]


def top_level_names(source: str) -> set[str]:
    """Names a module binds at top level: defs, classes, assignments, imports (re-exports)."""
    names: set[str] = set()
    pending = list(ast.parse(source).body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.If | ast.Try):  # `try: from x import f` and friends
            pending.extend(node.body + node.orelse + getattr(node, "finalbody", []))
            for handler in getattr(node, "handlers", []):
                pending.extend(handler.body)
    return names


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
            f"{props.name} count={torch.cuda.device_count()} "
            f"mem_gb={props.total_memory / 1e9:.1f} cc={props.major}.{props.minor}"
        )
        facts["driver"] = _nvidia_driver()
    facts.update(_flash_attn_wheel())
    return facts


def _flash_attn_wheel() -> dict[str, str]:
    """The flash-attn wheel: the one the image baked (its sha256 and whether it was pinned), else
    the release wheel this torch needs and its pin: without one it is never installed here."""
    from f5worker.startup.flash_attn_install import read_record
    from f5worker.startup.flash_attn_wheels import NoMatchingWheel, probe_torch, select_wheel

    record = read_record() or {}
    if record.get("status") == "baked":
        return {
            "flash_attn.wheel": record.get("wheel", "?"),
            "flash_attn.wheel_sha256": record.get("sha256", "?"),
            "flash_attn.wheel_source": f"baked ({record.get('trust', '?')})",
        }
    baked = {"flash_attn.baked": f"none ({record.get('reason', 'no bake record')})"}
    try:
        wheel = select_wheel(probe_torch())
    except NoMatchingWheel as exc:
        return {**baked, "flash_attn.wheel": f"none ({exc})"}
    pin = wheel.sha256 or "none (not installable at run time; bake it or pin it)"
    return {**baked, "flash_attn.wheel": wheel.name, "flash_attn.wheel_sha256": pin}


def _nvidia_driver() -> str:
    try:
        line = Path("/proc/driver/nvidia/version").read_text().split("\n")[0]
    except OSError:
        return "unknown"
    match = re.search(r"Kernel Module\s+(\S+)", line)
    return match.group(1) if match else line.strip()


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _git_sha(stamped: str) -> str:
    """The build's stamp in an image (WORKER_GIT_SHA); the checkout's HEAD in development."""
    if stamped and stamped != "unknown":
        return stamped
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def _free_gb(path: Path) -> str:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return f"{shutil.disk_usage(probe).free / 1e9:.1f}"
