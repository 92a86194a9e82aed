"""The pure checks of a wheel the operator names (FLASH_ATTN_WHEEL_URL, FLASH_ATTN_BAKE): https,
a `.whl` file name and a sha256. Below config, which runs them when it reads the environment;
startup/flash_attn_wheels.py re-exports them beside the release-wheel selection."""

from __future__ import annotations

import re
import urllib.parse

from f5worker.errors import ConfigError
from f5worker.redact import redact_urls

SHA256_RE = re.compile(r"[0-9a-f]{64}")
# One path component ending in .whl: what pip installs without building, and a safe file name.
WHEEL_FILE_RE = re.compile(r"[A-Za-z0-9_.+-]+\.whl")
URL_VAR, SHA_VAR = "FLASH_ATTN_WHEEL_URL", "FLASH_ATTN_WHEEL_SHA256"


def wheel_file_name(url: str) -> str:
    """The file name a URL or path ends in; query and fragment (signatures, tokens) are not it."""
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])


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
