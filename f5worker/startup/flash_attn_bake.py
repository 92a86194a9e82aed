"""Bake flash-attn into the image at build time, and record what was baked.

`python -m f5worker.startup.flash_attn_bake auto|none|URL|FILE [--sha256 HEX]` is the Dockerfile's
bake step (build args FLASH_ATTN_BAKE, FLASH_ATTN_BAKE_SHA256). It downloads the wheel for the
image's torch, checks its sha256, installs it, proves it loads in a fresh interpreter (no GPU
needed) and writes RECORD (flash_attn_install.py): the wheel's name, where it came from, its
sha256 and whether that sha256 was known beforehand. Start-up logs the record
(`diag.flash_attn.wheel_sha256=...`) and scripts/build.sh copies it into the image's labels
(`org.f5worker.flash-attn.*`): a label cannot come from a RUN step's output.

- auto: the release wheel the selection picks (flash_attn_wheels.py), from its official URL,
  https only. With a pin (flash_attn_wheels.json, or FLASH_ATTN_BAKE_SHA256) the bytes must match
  it, else the build fails. Without one the bake is trust on first use: the sha256 of what the
  official URL served is recorded (trust=first-use), for the operator to pin
  (scripts/pin_flash_attn_wheels.py NAME=SHA256 --write).
- an https wheel URL or a wheel file: FLASH_ATTN_BAKE_SHA256 is required and enforced.
- none, or a CPU torch: nothing to bake; one line, and the record says why.
A mismatching, unreachable or non-loading wheel fails the build.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path

from f5worker.errors import ConfigError
from f5worker.redact import redact_urls
from f5worker.startup.flash_attn import install_and_verify
from f5worker.startup.flash_attn_install import (
    RECORD,
    DownloadError,
    Pip,
    check_digest,
    download,
    file_sha256,
    write_record,
)
from f5worker.startup.flash_attn_wheels import (
    BASE_WHEEL_URL,
    NoMatchingWheel,
    TorchBuild,
    Wheel,
    parse_wheel_url,
    probe_torch,
    select_wheel,
)
from f5worker.wheel_checks import WHEEL_FILE_RE, check_custom_wheel, check_sha256, wheel_file_name

log = logging.getLogger(__name__)

BAKE_VAR, BAKE_SHA_VAR = "FLASH_ATTN_BAKE", "FLASH_ATTN_BAKE_SHA256"
Fetch = Callable[[str, Path], str]  # download(url, dest) -> sha256 of the bytes written


def bake(
    choice: str,
    sha256: str | None = None,
    pip: Pip | None = None,
    probe: Callable[[], TorchBuild] = probe_torch,
    base_url: str = BASE_WHEEL_URL,
    pins: Mapping[str, str] | None = None,
    record: Path | None = None,
    fetch: Fetch = download,
) -> int:
    """Install and verify the wheel for the image's torch; 0 on success or nothing to bake.

    `record`: where to write what was baked (the Dockerfile passes RECORD); None writes nothing.
    """
    if choice == "none":
        return _nothing(f"{BAKE_VAR}=none", record)
    build = probe()
    if build.cuda is None:
        return _nothing(f"torch {build.torch} is a CPU build, nothing to bake", record)
    try:
        wheel, source, expected = _bake_plan(choice, sha256 or None, build, base_url, pins)
        with tempfile.TemporaryDirectory(prefix="flash-attn-bake-") as tmp:
            path, digest = _get(source, expected, Path(tmp), fetch)
            error = install_and_verify(str(path), digest, wheel, build, pip or Pip())
    except (NoMatchingWheel, ConfigError, DownloadError) as exc:
        log.error("flash-attn bake: %s", redact_urls(str(exc)))
        return 1
    if error is not None:
        log.error("flash-attn bake failed: %s", redact_urls(error))
        return 1
    name = wheel_file_name(source)
    trust = "pinned" if expected else "first-use"
    if record is not None:
        fields = {"status": "baked", "wheel": name, "sha256": digest, "trust": trust}
        write_record({**fields, "source": redact_urls(source), "torch": build.torch}, record)
    if expected:
        log.info(
            "flash-attn bake: %s sha256 %s (pinned) loads against torch %s",
            name,
            digest,
            build.torch,
        )
    else:
        log.warning(
            "flash-attn bake: %s sha256 %s loads against torch %s; trust on first use (no pin): "
            "pin it with scripts/pin_flash_attn_wheels.py %s=%s --write",
            name,
            digest,
            build.torch,
            name,
            digest,
        )
    return 0


def _nothing(reason: str, record: Path | None) -> int:
    log.info("flash-attn bake: skipped, %s; the image uses torch attention", reason)
    if record is not None:
        write_record({"status": "none", "reason": reason}, record)
    return 0


def _bake_plan(
    choice: str,
    sha256: str | None,
    build: TorchBuild,
    base_url: str,
    pins: Mapping[str, str] | None,
) -> tuple[Wheel | None, str, str | None]:
    """What to bake: the wheel, where it is, and the sha256 its bytes must have (None: learn it
    on first use, only for the official release URL)."""
    if choice == "auto":
        wheel = select_wheel(build, base_url=base_url, pins=pins)
        if urllib.parse.urlsplit(wheel.url).scheme.lower() != "https":
            raise ConfigError(f"refused {redact_urls(wheel.url)}: the release URL must be https")
        given = check_sha256(sha256, BAKE_SHA_VAR, BAKE_VAR) if sha256 else None
        if given and wheel.sha256 and given != wheel.sha256:
            raise ConfigError(
                f"{BAKE_SHA_VAR}={given} disagrees with the pin of {wheel.name} ({wheel.sha256})"
            )
        return wheel, wheel.url, given or wheel.sha256
    if "://" in choice:
        return (
            parse_wheel_url(choice),
            choice,
            check_custom_wheel(choice, sha256, BAKE_VAR, BAKE_SHA_VAR),
        )
    if WHEEL_FILE_RE.fullmatch(Path(choice).name) is None:
        raise ConfigError(f"{BAKE_VAR}={choice!r} must be auto, none, an https URL or a .whl file")
    return parse_wheel_url(choice), choice, check_sha256(sha256, BAKE_SHA_VAR, BAKE_VAR)


def _get(source: str, expected: str | None, tmp: Path, fetch: Fetch) -> tuple[Path, str]:
    """The wheel as a local file and the sha256 of its bytes, checked against `expected`."""
    name = wheel_file_name(source)
    if "://" in source:
        log.info("flash-attn bake: downloading %s", redact_urls(source))
        path = tmp / name
        digest = fetch(source, path)
    else:
        path = Path(source)
        digest = file_sha256(path)
    if expected:
        check_digest(name, digest, expected)
    return path, digest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("choice", metavar="auto|none|URL|FILE", help=f"the {BAKE_VAR} build arg")
    parser.add_argument("--sha256", default="", help=f"{BAKE_SHA_VAR}: the wheel's sha256")
    parser.add_argument("--record", type=Path, default=RECORD, help="where to record the bake")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return bake(args.choice, args.sha256 or None, record=args.record)


if __name__ == "__main__":
    raise SystemExit(main())
