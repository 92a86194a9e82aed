"""Print (or add) pins for f5worker/startup/flash_attn_wheels.json: release wheel -> sha256.

A release wheel is installed at run time only when its sha256 is pinned, and pins are never
guessed: run this where the wheels can be reached (GitHub), on files you downloaded or on their
URLs, and commit the entries it prints. Compare them with the sha256 digest the GitHub release
page shows for each asset.

An image built without a pin baked its wheel on trust on first use from the official https URL
and says which bytes it got, in its labels and in its start-up log; pin exactly those as
NAME=SHA256:
  from the labels (scripts/build.sh adds them):
    docker inspect --format '{{index .Config.Labels "org.f5worker.flash-attn.wheel"}}={{index
      .Config.Labels "org.f5worker.flash-attn.sha256"}}' IMAGE
    (buildah inspect --type image --format '{{index .Docker.Config.Labels "..."}}' IMAGE alike)
  from the start-up log: diag.flash_attn.wheel=NAME and diag.flash_attn.wheel_sha256=HEX
    (diag.flash_attn.wheel_source says "baked (first-use)" or "baked (pinned)")

usage:
  .venv/bin/python scripts/pin_flash_attn_wheels.py --list [--platform linux_x86_64]
      every release wheel URL the selection can pick (what to download)
  .venv/bin/python scripts/pin_flash_attn_wheels.py FILE|URL|NAME=SHA256... [--write]
      the JSON entries for those wheels; --write merges them into the table, refusing to change
      an existing pin (a release asset whose bytes changed is a reason to stop, not to re-pin)
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from f5worker.startup.flash_attn_install import download, file_sha256  # noqa: E402
from f5worker.startup.flash_attn_wheels import (  # noqa: E402
    PINS_FILE,
    RELEASES,
    SHA256_RE,
    NoMatchingWheel,
    TorchBuild,
    load_pins,
    parse_wheel_url,
    select_wheel,
    wheel_file_name,
)

log = logging.getLogger("pin_flash_attn_wheels")


def selectable_urls(plat: str) -> list[str]:
    """Every release wheel URL select_wheel can return for some torch build on `plat`."""
    majors = sorted({major for rel in RELEASES for major in rel.cuda_tags})
    minors = sorted({minor for rel in RELEASES for minor in rel.torch_minors})
    pythons = sorted({py for rel in RELEASES for py in rel.pythons})
    urls: dict[str, None] = {}
    for major, minor, abi, python in itertools.product(majors, minors, (False, True), pythons):
        build = TorchBuild(f"{minor}.0", f"{major}.0", abi, python, plat, cuda_available=True)
        try:
            urls[select_wheel(build, pins={}).url] = None
        except NoMatchingWheel:
            continue
    return list(urls)


def pin(source: str) -> tuple[str, str]:
    """(release wheel file name, sha256 of its bytes) for a local file, a URL, or NAME=SHA256 as
    an image's labels or start-up log give them."""
    if "=" in source and "://" not in source:
        name, digest = source.split("=", 1)
        if parse_wheel_url(name) is None:
            raise ValueError(f"{name!r} is not a flash-attn release wheel name")
        if SHA256_RE.fullmatch(digest.strip().lower()) is None:
            raise ValueError(f"{digest!r} is not a sha256 (64 hex digits)")
        return name, digest.strip().lower()
    name = wheel_file_name(source)
    if parse_wheel_url(name) is None:
        raise ValueError(f"{name!r} is not a flash-attn release wheel name")
    if "://" not in source:
        return name, file_sha256(Path(source))
    with tempfile.TemporaryDirectory(prefix="pin-flash-attn-") as tmp:
        return name, download(source, Path(tmp) / name)


def merge(pins: dict[str, str], new: dict[str, str]) -> dict[str, str]:
    """The table with `new` added; an existing pin with other bytes is an error."""
    changed = [name for name, digest in new.items() if pins.get(name, digest) != digest]
    if changed:
        raise ValueError(f"refusing to change existing pins: {', '.join(changed)}")
    return dict(sorted({**pins, **new}.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="*", metavar="FILE|URL|NAME=SHA256")
    parser.add_argument("--list", action="store_true", help="print the selectable wheel URLs")
    parser.add_argument("--platform", default="linux_x86_64")
    parser.add_argument("--write", action="store_true", help=f"merge into {PINS_FILE.name}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.list:
        sys.stdout.write("".join(f"{url}\n" for url in selectable_urls(args.platform)))
        return 0
    if not args.sources:
        parser.error("give wheel files or URLs, or --list")
    try:
        new = dict(pin(source) for source in args.sources)
        table = merge(load_pins(PINS_FILE), new)
    except (OSError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    sys.stdout.write("".join(f"  {json.dumps(n)}: {json.dumps(d)},\n" for n, d in new.items()))
    if args.write:
        PINS_FILE.write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
        log.info("%d pins in %s", len(table), PINS_FILE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
