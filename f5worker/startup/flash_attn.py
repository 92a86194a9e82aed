"""Use flash-attention only when its compiled kernel loads against the torch that is running.

f5-tts imports `flash_attn` whenever the package is installed, so a wheel built for another torch
or C++ ABI does not merely lose speed: it breaks `import f5_tts`, torch backend included. Hence a
wheel is kept only after a fresh interpreter has imported `flash_attn` and `flash_attn_2_cuda`;
one that does not load is uninstalled again.

`FLASH_ATTN=auto` falls back to torch attention with one WARNING, `require` fails start-up,
`off` skips. The image build bakes the wheel (flash_attn_bake.py, the recommended path), so a
normal start installs nothing and this check costs one import; its log line names the baked
wheel's sha256. `python -m f5worker.startup.flash_attn --select` prints the wheel URL for this
torch.

This module decides at start-up (ensure_flash_attn; flash_attn_bake.py reuses it): which wheel is
flash_attn_wheels.py's (release selection, the pins, the checks of a custom wheel), getting it
installed and loaded is flash_attn_install.py's. Installing is running someone else's code, so
only a wheel whose sha256 is known beforehand is ever installed at run time: a pin, or the
operator's FLASH_ATTN_WHEEL_SHA256 for FLASH_ATTN_WHEEL_URL; auto never downloads an unpinned
wheel here.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import logging
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from f5worker.errors import WorkerError
from f5worker.redact import redact_urls
from f5worker.startup.flash_attn_install import (
    Pip,
    explain_load_error,
    load_in_process,
    read_record,
    use_user_site,
)
from f5worker.startup.flash_attn_wheels import (
    BASE_WHEEL_URL,
    NoMatchingWheel,
    TorchBuild,
    Wheel,
    parse_wheel_url,
    probe_torch,
    require_pin,
    select_wheel,
)
from f5worker.wheel_checks import check_custom_wheel, wheel_file_name

log = logging.getLogger(__name__)


class FlashAttnUnavailable(WorkerError, RuntimeError):
    """FLASH_ATTN=require and no flash-attn kernel loads here: the image or the GPU is wrong."""

    code = "FLASH_ATTN_UNAVAILABLE"
    http_status = 503
    fatal = True


@dataclass(frozen=True)
class Outcome:
    """What the engine should use, and why; `backend` is f5-tts's attn_backend value."""

    backend: str  # "flash_attn" or "torch"
    status: str  # off | no-cuda | present | installed | fallback
    detail: str
    seconds: float = 0.0


def ensure_flash_attn(
    mode: str,
    wheel_url: str | None = None,
    device: str = "auto",
    *,
    wheel_sha256: str | None = None,
    probe: Callable[[], TorchBuild] = probe_torch,
    pip: Pip | None = None,
    check_present: Callable[[], str | None] = load_in_process,
    base_url: str = BASE_WHEEL_URL,
    pins: Mapping[str, str] | None = None,
) -> Outcome:
    """Decide the attention backend: present -> use; else install the matching wheel -> verify.

    Only a pinned release wheel or a custom https wheel with the operator's sha256 is installed.
    Raises FlashAttnUnavailable only for mode "require"; "auto" logs one WARNING and falls back.
    A custom wheel URL we would not download is a ConfigError in every mode, before anything.
    """
    started = time.perf_counter()
    if wheel_url:
        wheel_sha256 = check_custom_wheel(wheel_url, wheel_sha256)
    if mode == "off":
        log.info("flash-attn: off (FLASH_ATTN=off), torch attention")
        return Outcome("torch", "off", "FLASH_ATTN=off")
    build = None if device == "cpu" else probe()
    if build is None or build.cuda is None or not build.cuda_available:
        reason = "DEVICE=cpu" if build is None else f"no CUDA device for torch {build.torch}"
        return _fallback(mode, "no-cuda", reason, started, quiet=True)
    present = check_present()
    if present is None:
        detail = f"flash_attn {_installed_version()} loads against torch {build.torch}"
        detail += f", {baked_sha256()}"
        log.info("flash-attn: %s", detail)
        return Outcome("flash_attn", "present", detail, time.perf_counter() - started)
    if present != "not installed":
        shown = redact_urls(present.strip()[-300:])
        log.info("flash-attn: installed package does not load: %s", shown)
    try:
        wheel, url, sha256 = _choose(wheel_url, wheel_sha256, build, base_url, pins)
    except NoMatchingWheel as exc:
        return _fallback(mode, "fallback", str(exc), started)
    error = install_and_verify(url, sha256, wheel, build, pip or Pip())
    if error is not None:
        return _fallback(mode, "fallback", error, started)
    importlib.invalidate_caches()  # so this process's later `import flash_attn` finds it
    use_user_site()  # installed as the non-root worker: pip put it under ~/.local
    seconds = time.perf_counter() - started
    name = wheel_file_name(url)
    log.info("flash-attn: installed %s (sha256 %s) in %.1f s", name, sha256, seconds)
    return Outcome("flash_attn", "installed", name, seconds)


def _choose(
    override: str | None,
    override_sha256: str | None,
    build: TorchBuild,
    base_url: str,
    pins: Mapping[str, str] | None,
) -> tuple[Wheel | None, str, str]:
    """The wheel to install, its URL and sha256: the checked override, else the pinned selection."""
    if override:
        return parse_wheel_url(override), override, check_custom_wheel(override, override_sha256)
    wheel = select_wheel(build, base_url=base_url, pins=pins)
    return wheel, wheel.url, require_pin(wheel)


def install_and_verify(
    url: str, sha256: str, wheel: Wheel | None, build: TorchBuild, pip: Pip
) -> str | None:
    """Install the wheel if its sha256 matches and prove it loads; on failure remove it again.

    None = success. A wheel whose bytes do not match is refused before pip sees it.
    """
    log.info("flash-attn: installing %s", redact_urls(url))
    try:
        pip.install(url, sha256)
    except OSError as exc:
        return f"install failed: {exc}"
    error = pip.verify()
    if error is None:
        return None
    reason = explain_load_error(error, wheel, build)
    try:
        pip.uninstall()  # a broken flash_attn would break `import f5_tts` itself
    except OSError as exc:
        reason += f"; and removing it failed: {exc}"
    return reason


def _fallback(mode: str, status: str, reason: str, started: float, quiet: bool = False) -> Outcome:
    reason = redact_urls(reason)  # pip and urllib errors may quote a URL
    if mode == "require":
        raise FlashAttnUnavailable(f"FLASH_ATTN=require but flash-attn is unavailable: {reason}")
    if quiet:  # CPU: expected, not worth a warning
        log.info("flash-attn: skipped (%s), torch attention", reason)
    else:
        log.warning("flash-attn unavailable, using torch attention: %s", reason)
    return Outcome("torch", status, reason, time.perf_counter() - started)


def baked_sha256() -> str:
    """What start-up says about the wheel in use when it came with the image."""
    record = read_record()
    if record is None or record.get("status") != "baked":
        return "not baked by the image build (sha256 unknown)"
    wheel, digest, trust = (record.get(k, "?") for k in ("wheel", "sha256", "trust"))
    return f"baked wheel {wheel} sha256 {digest} ({trust})"


def _installed_version() -> str:
    try:
        return importlib.metadata.version("flash-attn")
    except importlib.metadata.PackageNotFoundError:
        return "(unknown version)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--select", action="store_true", required=True, help="print the URL")
    parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        sys.stdout.write(select_wheel(probe_torch()).url + "\n")
    except NoMatchingWheel as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
