"""RunPod's documented limits on the queue path, and result items cut to fit under them.

RunPod documents 1 MB per streamed `yield`, 10 MB per `/run` result and 20 MB per `/runsync`
result; its SDK's local API enforces none of them, so they are restated here and enforced by the
fake gateway the tests run the real worker loop against (f5worker/testing/runpod_gateway.py).

With a generator handler the SDK posts *every* yielded item to RunPod's job-stream, whatever the
client called (rp_job.handle_job), so every item must fit in one yield, not only those of
`stream: true` jobs. An item whose audio does not fit is sent as consecutive parts: the first
carries every field of the item with the first slice of its `audio_base64`; each later part
carries the slice that follows and what locates it (`index` of a batch entry, `chunk`, `part`,
`parts`, `format`). Slices are cut at multiples of 4 base64 characters, so each decodes on its
own and the decoded parts concatenate to exactly the item's file. The whole job's inline audio
is bounded by job/output.py's ResultBudget (MAX_RESULT_B64_BYTES, under /run's 10 MB).
"""

from __future__ import annotations

import json
from typing import Any

MAX_YIELD_BYTES = 1_000_000  # one job-stream post (RunPod: 1 MB per yield)
MAX_RUN_RESULT_BYTES = 10_000_000  # RunPod: /run
MAX_RUNSYNC_RESULT_BYTES = 20_000_000  # RunPod: /runsync
MAX_INPUT_BYTES = 10_000_000  # RunPod: /run payload (20 MB for /runsync)
# The SDK wraps an item as {"output": item} (plus its own few fields): room for that.
ENVELOPE_BYTES = 4_096
PART_AUDIO_B64 = 700_000  # audio per part: well inside a yield with the item's other fields
LOCATING_KEYS = ("index", "chunk", "chunks", "format", "worker_version")


def item_bytes(item: dict[str, Any]) -> int:
    return len(json.dumps(item, ensure_ascii=False).encode("utf-8"))


def fit_item(item: dict[str, Any], limit: int = MAX_YIELD_BYTES) -> list[dict[str, Any]]:
    """`item` as one or more items, each of which fits in one yield."""
    audio = item.get("audio_base64")
    if not isinstance(audio, str) or item_bytes(item) + ENVELOPE_BYTES <= limit:
        return [item]
    step = PART_AUDIO_B64 - PART_AUDIO_B64 % 4
    slices = [audio[start : start + step] for start in range(0, len(audio), step)]
    count = len(slices)
    first = item | {"audio_base64": slices[0], "part": 0, "parts": count}
    where = {key: item[key] for key in LOCATING_KEYS if key in item}
    rest = [where | {"audio_base64": s, "part": n, "parts": count} for n, s in enumerate(slices)]
    return [first, *rest[1:]]


def join_parts(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The inverse of fit_item over a job's output, as a client would do it: each run of parts
    becomes the one item it was cut from (its audio whole, `part` and `parts` gone)."""
    joined: list[dict[str, Any]] = []
    for item in items:
        if "part" not in item:
            joined.append(item)
        elif item["part"] == 0:
            joined.append({k: v for k, v in item.items() if k not in ("part", "parts")})
        else:
            joined[-1]["audio_base64"] += item["audio_base64"]
    return joined
