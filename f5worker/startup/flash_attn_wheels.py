"""Which flash-attn wheel fits the running torch, and whether it may be installed at all.

Pure choices and checks, no downloads and no pip: f5worker/config checks the custom wheel
settings with check_custom_wheel and check_sha256 (f5worker/wheel_checks.py, below config) when
it reads the environment; this module imports nothing heavy (probe_torch imports torch only when
it is called).

The release wheel is named the way flash-attn's own setup.py (`get_wheel_url`) names it:
`flash_attn-{version}+cu{cuda}torch{major.minor}cxx11abi{TRUE|FALSE}-{cp}-{cp}-{platform}.whl`,
where `cu{cuda}` is the CUDA major since 2.7 (`cu12`) and `cu118` / `cu123` in 2.6.x. Every
field is read from the installed torch (`torch.version.cuda`, `torch._C._GLIBCXX_USE_CXX11_ABI`),
never from an image tag: RunPod's torch 2.4.0 tag has carried different torch builds over time.

Only a wheel whose sha256 is known beforehand is ever installed, at run time and at build time
alike:
- a release wheel the selection picks needs a pin in `flash_attn_wheels.json` (file name ->
  sha256); one without a pin is "not installable" (auto: torch attention, require: start-up
  fails). Pins are never guessed: a missing one stays missing.
- a custom wheel (FLASH_ATTN_WHEEL_URL, or FLASH_ATTN_BAKE=URL) must be https, must name a `.whl`
  (pip would build a source distribution, running its setup code) and needs the operator's
  sha256 (FLASH_ATTN_WHEEL_SHA256, FLASH_ATTN_BAKE_SHA256).

To pin a release wheel: download the asset named by `wheel_name(...)` from
https://github.com/Dao-AILab/flash-attention/releases (`--select` prints the URL for this torch;
`scripts/pin_flash_attn_wheels.py --list` prints every URL the selection can pick), run
`sha256sum` on it, or `scripts/pin_flash_attn_wheels.py FILE_OR_URL...`, which prints the JSON
entries, and add them to `flash_attn_wheels.json` (`--write` merges them in). Where the GitHub
release page shows an asset's sha256 digest, the two must agree.
"""

from __future__ import annotations

import functools
import json
import platform
import re
import sys
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from f5worker.wheel_checks import SHA256_RE, SHA_VAR, URL_VAR, wheel_file_name

BASE_WHEEL_URL = "https://github.com/Dao-AILab/flash-attention/releases/download/v{version}/{name}"
PINS_FILE = Path(__file__).with_name("flash_attn_wheels.json")


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
