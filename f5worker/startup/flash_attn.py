"""Use flash-attention only when its compiled kernel loads against the torch that is running.

f5-tts imports `flash_attn` whenever the package is installed, so a wheel built for another torch
or C++ ABI does not merely lose speed: it breaks `import f5_tts`, torch backend included. Hence a
wheel is kept only after a fresh interpreter has imported `flash_attn` and `flash_attn_2_cuda`;
one that does not load is uninstalled again.

The release wheel is named the way flash-attn's own setup.py (`get_wheel_url`) names it:
`flash_attn-{version}+cu{cuda}torch{major.minor}cxx11abi{TRUE|FALSE}-{cp}-{cp}-{platform}.whl`,
where `cu{cuda}` is the CUDA major since 2.7 (`cu12`) and `cu118` / `cu123` in 2.6.x. Every
field is read from the installed torch (`torch.version.cuda`, `torch._C._GLIBCXX_USE_CXX11_ABI`),
never from an image tag: RunPod's torch 2.4.0 tag has carried different torch builds over time.

`FLASH_ATTN=auto` falls back to torch attention with one WARNING, `require` fails start-up,
`off` skips. `python -m f5worker.startup.flash_attn --bake auto|URL` installs the wheel at image
build time, so a normal start installs nothing and this check costs one import.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import importlib.metadata
import importlib.util
import logging
import platform
import re
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from f5worker.errors import WorkerError

log = logging.getLogger(__name__)

BASE_WHEEL_URL = "https://github.com/Dao-AILab/flash-attention/releases/download/v{version}/{name}"
VERIFY_CODE = "import flash_attn, flash_attn_2_cuda; print(flash_attn.__version__)"
PIP_TIMEOUT_S = 600.0
VERIFY_TIMEOUT_S = 120.0


class FlashAttnUnavailable(WorkerError, RuntimeError):
    """FLASH_ATTN=require and no flash-attn kernel loads here: the image or the GPU is wrong."""

    code = "FLASH_ATTN_UNAVAILABLE"
    fatal = True


class NoMatchingWheel(ValueError):
    """No published release wheel fits this torch build; the message says which field."""


@dataclass(frozen=True)
class TorchBuild:
    """The facts a flash-attn wheel must match, read from the installed torch."""

    torch: str  # torch.__version__, e.g. "2.4.0+cu124"
    cuda: str | None  # torch.version.cuda, e.g. "12.4"; None for a CPU build
    cxx11abi: bool  # torch._C._GLIBCXX_USE_CXX11_ABI
    python: str  # CPython tag, e.g. "cp311"
    platform: str  # wheel platform as setup.py spells it, e.g. "linux_x86_64"
    cuda_available: bool = False

    @property
    def torch_minor(self) -> str:
        match = re.match(r"(\d+)\.(\d+)", self.torch)
        if match is None:
            raise NoMatchingWheel(f"cannot read a version from torch {self.torch!r}")
        return f"{match[1]}.{match[2]}"

    @property
    def cuda_major(self) -> int | None:
        return int(self.cuda.split(".")[0]) if self.cuda else None


@dataclass(frozen=True)
class Release:
    """One flash-attn release and the builds its GitHub release publishes wheels for."""

    version: str
    cuda_tags: Mapping[int, str]  # torch's CUDA major -> the tag in the wheel name
    torch_minors: tuple[str, ...]
    pythons: tuple[str, ...]
    why: str = ""


def _cps(low: int, high: int) -> tuple[str, ...]:
    return tuple(f"cp3{m}" for m in range(low, high + 1))


# Preferred first; the first release that covers a build is chosen.
RELEASES: tuple[Release, ...] = (
    Release(
        "2.7.4.post1",
        {12: "cu12"},
        ("2.2", "2.3", "2.4", "2.5", "2.6"),
        _cps(9, 13),
        "built with CUDA 12.4.1 for torch 2.2-2.6: the match for the torch 2.4 / CUDA 12.4 image",
    ),
    Release(
        "2.8.3",
        {12: "cu12"},
        ("2.7", "2.8"),
        _cps(9, 13),
        # It also publishes torch 2.4-2.6 wheels, but they were built with CUDA 12.9 and are
        # reported to fail with undefined symbols on those older torch builds.
        "built with CUDA 12.9; used only for torch 2.7-2.8",
    ),
    Release(
        "2.6.3",
        {11: "cu118", 12: "cu123"},
        ("2.0", "2.1", "2.2", "2.3", "2.4"),
        _cps(8, 12),
        "the last release with CUDA 11 wheels",
    ),
)


@dataclass(frozen=True)
class Wheel:
    version: str
    name: str
    url: str
    torch_minor: str
    cxx11abi: bool


def wheel_name(
    release: str, cuda_tag: str, torch_minor: str, cxx11abi: bool, python: str, plat: str
) -> str:
    """The file name flash-attn's setup.py (get_wheel_url) gives a release wheel."""
    local = f"{cuda_tag}torch{torch_minor}cxx11abi{'TRUE' if cxx11abi else 'FALSE'}"
    return f"flash_attn-{release}+{local}-{python}-{python}-{plat}.whl"


_NAME_RE = re.compile(
    r"flash_attn-(?P<version>[^+/]+)\+(?P<cuda>cu\d+)torch(?P<torch>\d+\.\d+)"
    r"cxx11abi(?P<abi>TRUE|FALSE)-(?P<python>cp\d+)-cp\d+-(?P<platform>[\w]+)\.whl$"
)


def parse_wheel_url(url: str) -> Wheel | None:
    """The fields of a release-style wheel name in a URL or path; None for any other name."""
    name = urllib.parse.unquote(url.rsplit("/", 1)[-1])
    match = _NAME_RE.match(name)
    if match is None:
        return None
    return Wheel(match["version"], name, url, match["torch"], match["abi"] == "TRUE")


def select_wheel(
    build: TorchBuild, releases: tuple[Release, ...] = RELEASES, base_url: str = BASE_WHEEL_URL
) -> Wheel:
    """The release wheel for this torch build, or NoMatchingWheel naming what does not fit."""
    if build.cuda_major is None:
        raise NoMatchingWheel(f"torch {build.torch} is a CPU build; flash-attn needs CUDA")
    if not build.platform.startswith("linux_"):
        raise NoMatchingWheel(f"no release wheels for platform {build.platform}")
    for rel in releases:
        tag = rel.cuda_tags.get(build.cuda_major)
        if tag and build.torch_minor in rel.torch_minors and build.python in rel.pythons:
            name = wheel_name(
                rel.version, tag, build.torch_minor, build.cxx11abi, build.python, build.platform
            )
            url = base_url.format(version=rel.version, name=name)
            return Wheel(rel.version, name, url, build.torch_minor, build.cxx11abi)
    raise NoMatchingWheel(
        f"no known flash-attn release has a wheel for torch {build.torch_minor}, "
        f"CUDA {build.cuda}, {build.python}; set FLASH_ATTN_WHEEL_URL to choose one"
    )


def probe_torch() -> TorchBuild:
    """Read the running torch; importing it here costs nothing extra, the engine needs it."""
    import torch

    return TorchBuild(
        torch=torch.__version__,
        cuda=torch.version.cuda,
        cxx11abi=bool(torch._C._GLIBCXX_USE_CXX11_ABI),
        python=f"cp{sys.version_info.major}{sys.version_info.minor}",
        platform=f"{sys.platform}_{platform.machine()}",
        cuda_available=bool(torch.cuda.is_available()),
    )


def demangle(symbol: str) -> str:
    """C++ symbol to its readable form via libstdc++'s own demangler; unchanged if unavailable."""
    try:
        libstdcxx = ctypes.CDLL("libstdc++.so.6")
        libc = ctypes.CDLL(None)
    except OSError:
        return symbol
    cxa_demangle = libstdcxx.__cxa_demangle
    cxa_demangle.restype = ctypes.c_void_p
    status = ctypes.c_int()
    ptr = cxa_demangle(symbol.encode(), None, None, ctypes.byref(status))
    if status.value != 0 or not ptr:
        return symbol
    try:
        return ctypes.string_at(ptr).decode("utf-8", "replace")
    finally:
        libc.free(ctypes.c_void_p(ptr))


def explain_load_error(error: str, wheel: Wheel | None, build: TorchBuild) -> str:
    """Turn an import error into a cause: torch/ABI mismatch (naming both sides) or as it was."""
    last = error.strip().splitlines()[-1] if error.strip() else "no output"
    match = re.search(r"undefined symbol: ([A-Za-z0-9_.$]+)", error)
    if match is None:
        return f"flash_attn_2_cuda does not load: {last}"
    symbol = demangle(match.group(1))
    if "std::__cxx11::" in symbol:
        cause = "a new-ABI (cxx11abiTRUE) wheel on an old-ABI torch"
    elif "std::string" in symbol or "std::basic_string" in symbol:
        cause = "an old-ABI (cxx11abiFALSE) wheel on a new-ABI torch"
    else:
        cause = "a wheel built against another torch"
    if wheel is not None:
        built = f"torch {wheel.torch_minor} cxx11abi={str(wheel.cxx11abi).upper()}"
    else:
        built = "an unknown torch (not a release wheel name)"
    return (
        f"torch/ABI mismatch: wheel built for {built}, running torch {build.torch} "
        f"cxx11abi={str(build.cxx11abi).upper()}; undefined symbol {symbol} means {cause}"
    )


@dataclass(frozen=True)
class Pip:
    """Install, verify and remove flash-attn in the environment of one interpreter."""

    python: str = field(default_factory=lambda: sys.executable)
    timeout_s: float = PIP_TIMEOUT_S

    def install(self, url: str) -> None:
        # --no-deps: the wheel depends on plain `torch`, which pip would otherwise replace.
        self._pip("install", "--no-deps", "--force-reinstall", "--no-input", url)

    def uninstall(self) -> None:
        self._pip("uninstall", "--yes", "flash-attn")

    def verify(self) -> str | None:
        """None when a fresh interpreter imports flash_attn and its kernel; else its error."""
        try:
            done = subprocess.run(
                [self.python, "-c", VERIFY_CODE],
                capture_output=True,
                text=True,
                timeout=VERIFY_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            return f"importing flash_attn took over {VERIFY_TIMEOUT_S:.0f} s"
        return None if done.returncode == 0 else (done.stderr or done.stdout)

    def _pip(self, *args: str) -> None:
        cmd = [self.python, "-m", "pip", "--disable-pip-version-check", "--quiet", *args]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            raise OSError(f"pip {args[0]} took over {self.timeout_s:.0f} s") from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise OSError(f"pip {args[0]} failed: {tail[0]}")


def load_in_process() -> str | None:
    """None when flash_attn and its kernel import in this process; else why not.

    Cheap once torch is imported (diagnostics did that), which is why the common case, a wheel
    baked into the image, is checked here rather than in a subprocess.
    """
    if importlib.util.find_spec("flash_attn") is None:
        return "not installed"
    try:
        importlib.import_module("flash_attn")
        importlib.import_module("flash_attn_2_cuda")
    except ImportError as exc:
        return str(exc)
    return None


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
    probe: Callable[[], TorchBuild] = probe_torch,
    pip: Pip | None = None,
    check_present: Callable[[], str | None] = load_in_process,
    base_url: str = BASE_WHEEL_URL,
) -> Outcome:
    """Decide the attention backend: present -> use; else install the matching wheel -> verify.

    Raises FlashAttnUnavailable only for mode "require"; "auto" logs one WARNING and falls back.
    """
    started = time.perf_counter()
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
        log.info("flash-attn: %s", detail)
        return Outcome("flash_attn", "present", detail, time.perf_counter() - started)
    if present != "not installed":
        log.info("flash-attn: installed package does not load: %s", present.strip()[-300:])
    try:
        wheel, url = _choose(wheel_url, build, base_url)
    except NoMatchingWheel as exc:
        return _fallback(mode, "fallback", str(exc), started)
    error = install_and_verify(url, wheel, build, pip or Pip())
    if error is not None:
        return _fallback(mode, "fallback", error, started)
    importlib.invalidate_caches()  # so this process's later `import flash_attn` finds it
    seconds = time.perf_counter() - started
    name = urllib.parse.unquote(url.rsplit("/", 1)[-1])
    log.info("flash-attn: installed %s in %.1f s", name, seconds)
    return Outcome("flash_attn", "installed", name, seconds)


def _choose(override: str | None, build: TorchBuild, base_url: str) -> tuple[Wheel | None, str]:
    """The wheel to install and its URL: the override as given, else the selection."""
    if override:
        return parse_wheel_url(override), override
    wheel = select_wheel(build, base_url=base_url)
    return wheel, wheel.url


def install_and_verify(url: str, wheel: Wheel | None, build: TorchBuild, pip: Pip) -> str | None:
    """Install the wheel and prove it loads; on failure remove it again. None = success."""
    log.info("flash-attn: installing %s", urllib.parse.unquote(url.rsplit("/", 1)[-1]))
    try:
        pip.install(url)
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
    if mode == "require":
        raise FlashAttnUnavailable(f"FLASH_ATTN=require but flash-attn is unavailable: {reason}")
    if quiet:  # CPU: expected, not worth a warning
        log.info("flash-attn: skipped (%s), torch attention", reason)
    else:
        log.warning("flash-attn unavailable, using torch attention: %s", reason)
    return Outcome("torch", status, reason, time.perf_counter() - started)


def _installed_version() -> str:
    try:
        return importlib.metadata.version("flash-attn")
    except importlib.metadata.PackageNotFoundError:
        return "(unknown version)"


def bake(
    choice: str,
    pip: Pip | None = None,
    probe: Callable[[], TorchBuild] = probe_torch,
    base_url: str = BASE_WHEEL_URL,
) -> int:
    """Image build step: install and verify the wheel for the image's torch (no GPU needed).

    `choice` is "auto" (select by the installed torch) or a wheel URL. A CPU torch has nothing to
    bake and succeeds; any other failure fails the build, so a bad wheel never ships.
    """
    build = probe()
    if build.cuda is None:
        log.info("flash-attn bake: torch %s is a CPU build, nothing to bake", build.torch)
        return 0
    try:
        wheel, url = _choose(None if choice == "auto" else choice, build, base_url)
    except NoMatchingWheel as exc:
        log.error("flash-attn bake: %s", exc)
        return 1
    error = install_and_verify(url, wheel, build, pip or Pip())
    if error is not None:
        log.error("flash-attn bake failed: %s", error)
        return 1
    log.info("flash-attn bake: %s loads against torch %s", url.rsplit("/", 1)[-1], build.torch)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--select", action="store_true", help="print the wheel URL for this torch")
    group.add_argument("--bake", metavar="auto|URL", help="install and verify (image build)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.bake:
        return bake(args.bake)
    try:
        sys.stdout.write(select_wheel(probe_torch()).url + "\n")
    except NoMatchingWheel as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
