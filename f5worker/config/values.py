"""How one environment variable's text becomes a value: the readers the settings table uses.

Each reader takes the whole mapping and the variable's name, so a bad value is a ConfigError that
names the variable. Pure: nothing here reads os.environ by itself.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from f5worker.errors import ConfigError

# S3's bucket naming rules (lower case, 3..63 characters), as s3:// references must spell them.
S3_BUCKET_PATTERN = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# The RunPod SDK's own switch for job URLs on private networks, read as the SDK reads it.
PRIVATE_URLS_ENV = "RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS"
REF_AUDIO_S3_ALLOW_ENV = "REF_AUDIO_S3_ALLOW"


@dataclass(frozen=True)
class S3Scope:
    """A bucket, or the keys under one prefix of it, that s3:// references may name."""

    bucket: str
    prefix: str = ""  # "" is the whole bucket; otherwise whole path segments, ending in "/"

    def covers(self, bucket: str, key: str) -> bool:
        return bucket == self.bucket and key.startswith(self.prefix)


def private_download_urls_allowed(env: Mapping[str, str] | None = None) -> bool:
    """RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS as runpod.serverless.utils.rp_ssrf reads it: only
    "1", "true" or "yes" switch the guard off, anything else keeps it on (never an error, so a
    typo can only make the worker stricter)."""
    env = os.environ if env is None else env
    return env.get(PRIVATE_URLS_ENV, "").strip().lower() in ("1", "true", "yes")


def s3_scopes(env: Mapping[str, str], name: str) -> tuple[S3Scope, ...]:
    """Comma-separated `bucket` or `bucket/prefix` entries (an `s3://` in front is allowed).

    A prefix is matched by whole path segments ("refs" covers refs/a.wav, not refs-old/a.wav);
    empty, "." and ".." segments are refused, as a store that normalises paths would read them
    as another prefix.
    """
    scopes: list[S3Scope] = []
    for entry in (e.strip() for e in env.get(name, "").split(",")):
        if not entry:
            continue
        rest = entry.removeprefix("s3://")
        bucket, _, prefix = rest.partition("/")
        prefix = prefix.strip("/")
        if not S3_BUCKET_PATTERN.fullmatch(bucket) or (prefix and not is_clean_s3_key(prefix)):
            raise ConfigError(
                f"{name} entry {entry[:100]!r} is not `bucket` or `bucket/prefix` "
                "(a lower-case S3 bucket name; no empty, '.' or '..' path segments)"
            )
        scopes.append(S3Scope(bucket, f"{prefix}/" if prefix else ""))
    return tuple(scopes)


LICENCE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_ -]{0,63}")


def licence(env: Mapping[str, str], name: str) -> str:
    """A licence name short and plain enough for a log line and a result field."""
    value = env.get(name, "").strip()
    if value and not LICENCE_PATTERN.fullmatch(value):
        raise ConfigError(
            f"{name}={value[:100]!r} is not a licence name (letters, digits, '.', '+', '_', '-', "
            "spaces; at most 64)"
        )
    return value


VOICE_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def voice_aliases(env: Mapping[str, str], name: str) -> tuple[tuple[str, str], ...]:
    """Comma-separated `alias=voice` pairs (`alloy=narrator`): a job naming the alias (in any
    case) speaks with the library voice. Set by the operator, never by a job: it lets clients
    that can only send OpenAI's stock names (Pipecat's OpenAI service) use a cloned voice."""
    pairs: dict[str, str] = {}
    for entry in (e.strip() for e in env.get(name, "").split(",")):
        if not entry:
            continue
        alias, _, voice = (part.strip() for part in entry.partition("="))
        if not (VOICE_NAME_PATTERN.fullmatch(alias) and VOICE_NAME_PATTERN.fullmatch(voice)):
            raise ConfigError(
                f"{name} entry {entry[:100]!r} is not `alias=voice` (voice names: 1-64 letters, "
                "digits, '.', '_' or '-')"
            )
        if alias.casefold() in pairs:
            raise ConfigError(f"{name} names the alias {alias!r} twice")
        pairs[alias.casefold()] = voice
    return tuple(pairs.items())


def is_clean_s3_key(key: str) -> bool:
    """No empty, "." or ".." segments and no control characters: a key means what it says."""
    return all(s not in ("", ".", "..") for s in key.split("/")) and key.isprintable()


def opt(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def choice(
    env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...], upper: bool = False
) -> str:
    raw = env.get(name, default).strip()
    value = raw.upper() if upper else raw.lower()
    if value not in allowed:
        raise ConfigError(f"{name}={raw!r} is not one of {', '.join(allowed)}")
    return value


def boolean(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (1/0, true/false, yes/no, on/off)")


def number(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    """A decimal number within [low, high] (`0.15`, `1e-1`); NaN and infinities are refused."""
    raw = env.get(name, str(default)).strip()
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not low <= value <= high:  # NaN fails both comparisons
        raise ConfigError(f"{name}={raw} is outside {low:g}..{high:g}")
    return value


def integer(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, str(default)).strip()
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={value} is outside {low}..{high}")
    return value
