"""What licence a model's weights come under, as far as it can be known.

The released checkpoints' licences are upstream's model cards' (model_ref.KNOWN_MODELS); a hub
fine-tune's is the `license` (or `license_name` for `other`) in its repository card's YAML front
matter (README.md), read once when the model is fetched and kept in its model.json; anything
else is `unknown`. An operator may state it instead (MODEL_LICENSE). Nothing here decides what a
caller may do with the audio: results and listings report it so the caller can.
"""

from __future__ import annotations

import re

import yaml

UNKNOWN = "unknown"
CARD_NAME = "README.md"
MAX_CARD_BYTES = 256 * 1024
_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*(\n|\Z)", re.S)
_SAFE = re.compile(r"[^A-Za-z0-9.,+_ -]")


def from_card(text: str) -> str:
    """The licence a model card's front matter declares, or `unknown`."""
    found = _FRONT_MATTER.match(text[:MAX_CARD_BYTES])
    if found is None:
        return UNKNOWN
    try:
        meta = yaml.safe_load(found.group(1))
    except yaml.YAMLError:
        return UNKNOWN
    if not isinstance(meta, dict):
        return UNKNOWN
    value = meta.get("license")
    if value == "other" and meta.get("license_name"):
        value = meta["license_name"]
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    return clean(str(value)) if value else UNKNOWN


def clean(value: str) -> str:
    """One short token a log line, a label and a JSON field can carry."""
    value = _SAFE.sub("", value.strip())[:64]
    return value or UNKNOWN
