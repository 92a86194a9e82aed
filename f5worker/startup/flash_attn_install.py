"""Getting a flash-attn wheel whose sha256 is known into this environment, and proving it loads.

Installing is running someone else's code, so the wheel is downloaded here (size cap, total
timeout, no redirect off https), its sha256 checked, and only that file handed to pip
(`--no-index --only-binary=:all: --require-hashes`), so pip neither fetches nor builds anything
and checks the hash once more itself. A fresh interpreter then imports `flash_attn` and
`flash_attn_2_cuda`; when that fails, explain_load_error names the cause (a torch or C++ ABI
mismatch, with both sides). Which wheel, and whether to install one at all, is
flash_attn_wheels.py's and flash_attn.py's.

The image runs as a non-root user, so its site-packages are read-only to the worker: pip then
installs into the user site (~/.local, pip's own fallback when site-packages is not writable),
which this process adds to sys.path after an install (use_user_site). RECORD is what the image
build baked (flash_attn_bake.py writes it; start-up logs it; scripts/build.sh labels the image
with it): `key=value` lines, so build.sh can read it without Python.
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import http.client
import importlib
import importlib.util
import os
import re
import site
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from f5worker.redact import redact_urls
from f5worker.startup.flash_attn_wheels import TorchBuild, Wheel
from f5worker.wheel_checks import WHEEL_FILE_RE, wheel_file_name

VERIFY_CODE = "import flash_attn, flash_attn_2_cuda; print(flash_attn.__version__)"
PIP_TIMEOUT_S = 600.0
VERIFY_TIMEOUT_S = 120.0
# The release wheels are 120-400 MB; anything far larger is not a flash-attn wheel.
MAX_WHEEL_BYTES = 1 << 30
DOWNLOAD_TIMEOUT_S = 600.0  # the whole download, not one read
SOCKET_TIMEOUT_S = 30.0
CHUNK_BYTES = 1 << 20
RECORD = Path("/etc/f5worker/flash-attn-wheel.env")
RECORD_KEYS = ("status", "wheel", "sha256", "source", "trust", "torch", "reason")
# What a record value may hold: build.sh puts them into LABEL lines and checks the same set.
_UNSAFE = re.compile(r"[^A-Za-z0-9._:/+%@,()= -]")


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


def use_user_site() -> bool:
    """After a pip install as a non-root user (pip fell back to ~/.local because site-packages
    is read-only), make that user site importable here; True if it was added now."""
    path = site.getusersitepackages()
    if not site.ENABLE_USER_SITE or path in sys.path or not os.path.isdir(path):
        return False
    site.addsitedir(path)
    importlib.invalidate_caches()
    return True


def write_record(fields: dict[str, str], path: Path = RECORD) -> None:
    """The baked wheel's record; values are cut to what a LABEL line can carry unquoted-safe."""
    unknown = set(fields) - set(RECORD_KEYS)
    if unknown:
        raise ValueError(f"unknown record keys: {sorted(unknown)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        f"{key}={_UNSAFE.sub('_', fields[key])[:300]}\n" for key in RECORD_KEYS if key in fields
    ]
    path.write_text("".join(lines), encoding="utf-8")


def read_record(path: Path = RECORD) -> dict[str, str] | None:
    """The baked wheel's record; None when the image has none (not built by our Dockerfile)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {key: value for key, value in pairs if key in RECORD_KEYS}
