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
`off` skips. `python -m f5worker.startup.flash_attn --bake auto|URL|FILE [--sha256 HEX]` installs
the wheel at image build time (the recommended path), so a normal start installs nothing and this
check costs one import.

Installing is running someone else's code, so only a wheel whose sha256 is known beforehand is
ever installed, at run time and at build time alike:
- a release wheel the selection picks needs a pin in `flash_attn_wheels.json` (file name ->
  sha256); one without a pin is "not installable" (auto: torch attention, require: start-up
  fails). Pins are never guessed: a missing one stays missing.
- a custom wheel (FLASH_ATTN_WHEEL_URL, or FLASH_ATTN_BAKE=URL) must be https, must name a `.whl`
  (pip would build a source distribution, running its setup code) and needs the operator's
  sha256 (FLASH_ATTN_WHEEL_SHA256, FLASH_ATTN_BAKE_SHA256).
The wheel is downloaded here (size cap, total timeout, no redirect off https), its sha256
checked, and only that file handed to pip (`--no-index --only-binary=:all: --require-hashes`), so
pip neither fetches nor builds anything and checks the hash once more itself.

To pin a release wheel: download the asset named by `wheel_name(...)` from
https://github.com/Dao-AILab/flash-attention/releases (`--select` prints the URL for this torch;
`scripts/pin_flash_attn_wheels.py --list` prints every URL the selection can pick), run
`sha256sum` on it, or `scripts/pin_flash_attn_wheels.py FILE_OR_URL...`, which prints the JSON
entries, and add them to `flash_attn_wheels.json` (`--write` merges them in). Where the GitHub
release page shows an asset's sha256 digest, the two must agree.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import hashlib
import hmac
import http.client
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import platform
import re
import subprocess
import sys
import tempfile
import time
import types
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from f5worker.errors import ConfigError, WorkerError
from f5worker.redact import redact_urls

log = logging.getLogger(__name__)

BASE_WHEEL_URL = "https://github.com/Dao-AILab/flash-attention/releases/download/v{version}/{name}"
PINS_FILE = Path(__file__).with_name("flash_attn_wheels.json")
VERIFY_CODE = "import flash_attn, flash_attn_2_cuda; print(flash_attn.__version__)"
PIP_TIMEOUT_S = 600.0
VERIFY_TIMEOUT_S = 120.0
# The release wheels are 120-400 MB; anything far larger is not a flash-attn wheel.
MAX_WHEEL_BYTES = 1 << 30
DOWNLOAD_TIMEOUT_S = 600.0  # the whole download, not one read
SOCKET_TIMEOUT_S = 30.0
CHUNK_BYTES = 1 << 20
SHA256_RE = re.compile(r"[0-9a-f]{64}")
# One path component ending in .whl: what pip installs without building, and a safe file name.
WHEEL_FILE_RE = re.compile(r"[A-Za-z0-9_.+-]+\.whl")
URL_VAR, SHA_VAR = "FLASH_ATTN_WHEEL_URL", "FLASH_ATTN_WHEEL_SHA256"
BAKE_VAR, BAKE_SHA_VAR = "FLASH_ATTN_BAKE", "FLASH_ATTN_BAKE_SHA256"


class FlashAttnUnavailable(WorkerError, RuntimeError):
    """FLASH_ATTN=require and no flash-attn kernel loads here: the image or the GPU is wrong."""

    code = "FLASH_ATTN_UNAVAILABLE"
    http_status = 503
    fatal = True


class NoMatchingWheel(ValueError):
    """No published release wheel fits this torch build; the message says which field."""


class NotPinned(NoMatchingWheel):
    """The selected release wheel has no pinned sha256, so it is not installed at run time."""


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
    sha256: str | None = None  # the pin; None: not installable at run time


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


def wheel_file_name(url: str) -> str:
    """The file name a URL or path ends in; query and fragment (signatures, tokens) are not it."""
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])


def parse_wheel_url(url: str) -> Wheel | None:
    """The fields of a release-style wheel name in a URL or path; None for any other name."""
    name = wheel_file_name(url)
    match = _NAME_RE.match(name)
    if match is None:
        return None
    return Wheel(match["version"], name, url, match["torch"], match["abi"] == "TRUE")


def load_pins(path: Path = PINS_FILE) -> dict[str, str]:
    """The pin table: release wheel file name -> sha256. A malformed entry is an error, since a
    pin that silently does not apply would turn a wheel into "not installable" unnoticed."""
    table = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(table, dict):
        raise ValueError(f"{path.name}: expected an object of wheel file name -> sha256")
    for name, digest in table.items():
        if _NAME_RE.fullmatch(name) is None:
            raise ValueError(f"{path.name}: {name!r} is not a release wheel file name")
        if not isinstance(digest, str) or SHA256_RE.fullmatch(digest) is None:
            raise ValueError(f"{path.name}: the sha256 of {name} is not 64 lowercase hex digits")
    return table


@functools.cache
def pinned_sha256() -> Mapping[str, str]:
    """The shipped pin table, read once; read-only, so no caller can add a pin in passing."""
    return types.MappingProxyType(load_pins())


def select_wheel(
    build: TorchBuild,
    releases: tuple[Release, ...] = RELEASES,
    base_url: str = BASE_WHEEL_URL,
    pins: Mapping[str, str] | None = None,
) -> Wheel:
    """The release wheel for this torch build, or NoMatchingWheel naming what does not fit.

    The wheel carries its pinned sha256, or None; require_pin() turns None into NotPinned.
    """
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
            digest = (pinned_sha256() if pins is None else pins).get(name)
            return Wheel(rel.version, name, url, build.torch_minor, build.cxx11abi, digest)
    raise NoMatchingWheel(
        f"no known flash-attn release has a wheel for torch {build.torch_minor}, "
        f"CUDA {build.cuda}, {build.python}; set FLASH_ATTN_WHEEL_URL to choose one"
    )


def require_pin(wheel: Wheel) -> str:
    """The wheel's pinned sha256; NotPinned (one line, with the way out) when there is none."""
    if wheel.sha256 is None:
        raise NotPinned(
            f"{wheel.name} has no pinned sha256, so it is not installed at run time: pin it in "
            f"{PINS_FILE.name} (scripts/pin_flash_attn_wheels.py), bake it into the image, "
            f"or set {URL_VAR} and {SHA_VAR}"
        )
    return wheel.sha256


def check_sha256(value: str | None, var: str, needed_by: str) -> str:
    """A sha256 the operator gave, lower-cased; ConfigError naming `var` if missing or malformed."""
    if not value or not value.strip():
        raise ConfigError(
            f"{var} is required with {needed_by}: the wheel's sha256 (sha256sum), 64 hex digits"
        )
    digest = value.strip().lower()
    if SHA256_RE.fullmatch(digest) is None:
        raise ConfigError(f"{var}={value[:80]!r} is not a sha256 (64 hex digits)")
    return digest


def check_custom_wheel(
    url: str, sha256: str | None, url_var: str = URL_VAR, sha_var: str = SHA_VAR
) -> str:
    """The operator's sha256 for a custom wheel URL, once the URL is one we would download.

    https only (the hash guards the bytes, https also who serves them), a `.whl` file name (pip
    would build anything else, running its setup code) and a sha256: else ConfigError naming the
    variable, with the URL cut to scheme, host and path.
    """
    shown = redact_urls(url)
    try:
        parts = urllib.parse.urlsplit(url.strip())
        host = parts.hostname
    except ValueError:
        raise ConfigError(f"{url_var}={shown!r} is not a URL") from None
    if parts.scheme.lower() != "https" or not host:
        raise ConfigError(f"{url_var}={shown!r} must be an https:// URL with a host")
    if WHEEL_FILE_RE.fullmatch(wheel_file_name(url.strip())) is None:
        raise ConfigError(
            f"{url_var}={shown!r} must name a .whl file: a source distribution would be built, "
            "running its setup code"
        )
    return check_sha256(sha256, sha_var, url_var)


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


class _NoDowngradeRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects (GitHub hands release assets to its CDN), but never from https to
    anything else: a custom wheel is accepted over https only, and stays there."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        old_scheme = urllib.parse.urlsplit(req.full_url).scheme.lower()
        if old_scheme == "https" and urllib.parse.urlsplit(newurl).scheme.lower() != "https":
            raise DownloadError(f"refused a redirect from https to {redact_urls(newurl)}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class DownloadError(OSError):
    """The wheel could not be fetched within the limits, or its bytes are not the pinned ones."""


def download(
    url: str,
    dest: Path,
    max_bytes: int = MAX_WHEEL_BYTES,
    timeout_s: float = DOWNLOAD_TIMEOUT_S,
) -> str:
    """Stream `url` into `dest` and return the sha256 of the bytes written.

    Bounded in size (a declared or actual length over `max_bytes`) and in total time (checked
    after every read; one read waits at most SOCKET_TIMEOUT_S), so a slow or endless server
    cannot hold start-up. http(s) only: urllib would also read file: and ftp: URLs.
    """
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise DownloadError(f"cannot download a {scheme or 'schemeless'}: URL, only http(s)")
    deadline = time.monotonic() + timeout_s
    opener = urllib.request.build_opener(_NoDowngradeRedirects)
    digest, size = hashlib.sha256(), 0
    try:
        with (
            opener.open(url, timeout=min(timeout_s, SOCKET_TIMEOUT_S)) as resp,
            dest.open("wb") as out,
        ):
            declared = resp.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise DownloadError(f"refused: {declared} bytes is over the {max_bytes} cap")
            while chunk := resp.read1(CHUNK_BYTES):
                size += len(chunk)
                if size > max_bytes:
                    raise DownloadError(f"refused: over the {max_bytes}-byte cap")
                if time.monotonic() > deadline:
                    raise DownloadError(f"took over {timeout_s:.0f} s")
                digest.update(chunk)
                out.write(chunk)
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"download failed: HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        raise DownloadError(f"download failed: {exc.reason}") from None
    except (TimeoutError, http.client.HTTPException, ValueError) as exc:
        raise DownloadError(f"download failed: {type(exc).__name__}: {exc}") from None
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as src:
        while chunk := src.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def check_digest(name: str, got: str, expected: str) -> None:
    """DownloadError unless the bytes are the pinned ones: a mismatch is never installed."""
    if not hmac.compare_digest(got, expected.lower()):
        raise DownloadError(f"sha256 of {name} is {got}, expected {expected}: refused")


def fetch_wheel(
    url: str,
    sha256: str,
    dest_dir: Path,
    max_bytes: int = MAX_WHEEL_BYTES,
    timeout_s: float = DOWNLOAD_TIMEOUT_S,
) -> Path:
    """Download a wheel into `dest_dir` and prove it is the expected one; its path."""
    name = _wheel_file(url)
    path = dest_dir / name
    check_digest(name, download(url, path, max_bytes, timeout_s), sha256)
    return path


def _wheel_file(source: str) -> str:
    """The wheel's file name, or DownloadError: pip would build anything but a .whl."""
    name = wheel_file_name(source)
    if WHEEL_FILE_RE.fullmatch(name) is None:
        raise DownloadError(
            f"refused {redact_urls(source)}: not a .whl file (pip would build it, running its code)"
        )
    return name


@dataclass(frozen=True)
class Pip:
    """Install, verify and remove flash-attn in the environment of one interpreter."""

    python: str = field(default_factory=lambda: sys.executable)
    timeout_s: float = PIP_TIMEOUT_S
    max_bytes: int = MAX_WHEEL_BYTES
    download_timeout_s: float = DOWNLOAD_TIMEOUT_S

    def install(self, source: str, sha256: str) -> None:
        """Install the wheel at `source` (an http(s) URL, or a local file for the image build)
        only if its bytes have this sha256. pip gets the checked file and never fetches."""
        if "://" not in source:
            path = Path(source)
            check_digest(_wheel_file(source), file_sha256(path), sha256)
            self._install_file(path, sha256)
            return
        with tempfile.TemporaryDirectory(prefix="flash-attn-") as tmp:
            path = fetch_wheel(source, sha256, Path(tmp), self.max_bytes, self.download_timeout_s)
            self._install_file(path, sha256)

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

    def _install_file(self, path: Path, sha256: str) -> None:
        # --no-deps: the wheel depends on plain `torch`, which pip would otherwise replace;
        # --no-index and --only-binary: pip fetches and builds nothing; --require-hashes: pip
        # checks the very file it installs against the same sha256.
        with tempfile.TemporaryDirectory(prefix="flash-attn-req-") as tmp:
            requirements = Path(tmp) / "requirements.txt"
            line = f"{path.resolve().as_uri()} --hash=sha256:{sha256}\n"  # a URI: any path
            requirements.write_text(line, encoding="utf-8")
            self._pip(
                "install",
                "--no-deps",
                "--no-index",
                "--only-binary=:all:",
                "--require-hashes",
                "--force-reinstall",
                "--no-input",
                "-r",
                str(requirements),
            )

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
    seconds = time.perf_counter() - started
    name = wheel_file_name(url)
    log.info("flash-attn: installed %s in %.1f s", name, seconds)
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


def _installed_version() -> str:
    try:
        return importlib.metadata.version("flash-attn")
    except importlib.metadata.PackageNotFoundError:
        return "(unknown version)"


def bake(
    choice: str,
    sha256: str | None = None,
    pip: Pip | None = None,
    probe: Callable[[], TorchBuild] = probe_torch,
    base_url: str = BASE_WHEEL_URL,
    pins: Mapping[str, str] | None = None,
) -> int:
    """Image build step: install and verify the wheel for the image's torch (no GPU needed).

    `choice` is "auto" (the pinned selection for the installed torch), an https wheel URL or a
    local wheel file, the last two with `sha256` (FLASH_ATTN_BAKE_SHA256): the same checks as at
    run time. A CPU torch has nothing to bake and succeeds. With "auto" and no pin for the
    selected wheel the build goes on without flash-attn, with one WARNING (the image then serves
    with torch attention): the default build must work where no pin has been added yet, and an
    unverified wheel never ships. Any other failure fails the build.
    """
    build = probe()
    if build.cuda is None:
        log.info("flash-attn bake: torch %s is a CPU build, nothing to bake", build.torch)
        return 0
    try:
        wheel, source, digest = _bake_plan(choice, sha256 or None, build, base_url, pins)
    except NotPinned as exc:
        if choice != "auto":
            log.error("flash-attn bake: %s", redact_urls(str(exc)))
            return 1
        log.warning("flash-attn bake skipped, the image uses torch attention: %s", exc)
        return 0
    except (NoMatchingWheel, ConfigError) as exc:
        log.error("flash-attn bake: %s", redact_urls(str(exc)))
        return 1
    error = install_and_verify(source, digest, wheel, build, pip or Pip())
    if error is not None:
        log.error("flash-attn bake failed: %s", redact_urls(error))
        return 1
    log.info("flash-attn bake: %s loads against torch %s", wheel_file_name(source), build.torch)
    return 0


def _bake_plan(
    choice: str,
    sha256: str | None,
    build: TorchBuild,
    base_url: str,
    pins: Mapping[str, str] | None,
) -> tuple[Wheel | None, str, str]:
    """What to bake: the wheel, where it is, and the sha256 its bytes must have."""
    if choice == "auto":
        if sha256:
            raise ConfigError(f"{BAKE_SHA_VAR} is for a wheel URL or file; auto uses the pins")
        return _choose(None, None, build, base_url, pins)
    if "://" in choice:
        return (
            parse_wheel_url(choice),
            choice,
            check_custom_wheel(choice, sha256, BAKE_VAR, BAKE_SHA_VAR),
        )
    if WHEEL_FILE_RE.fullmatch(Path(choice).name) is None:
        raise ConfigError(f"{BAKE_VAR}={choice!r} must be auto, none, an https URL or a .whl file")
    return parse_wheel_url(choice), choice, check_sha256(sha256, BAKE_SHA_VAR, BAKE_VAR)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--select", action="store_true", help="print the wheel URL for this torch")
    group.add_argument("--bake", metavar="auto|URL|FILE", help="install and verify (image build)")
    parser.add_argument("--sha256", default="", help="the sha256 of a --bake URL or FILE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.bake:
        return bake(args.bake, args.sha256 or None)
    try:
        sys.stdout.write(select_wheel(probe_torch()).url + "\n")
    except NoMatchingWheel as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
