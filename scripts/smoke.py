#!/usr/bin/env python3
"""Send test_input.json to a deployed endpoint and check the audio that comes back.

    RUNPOD_API_KEY=... scripts/smoke.py ENDPOINT_ID             # queue endpoint
    RUNPOD_API_KEY=... scripts/smoke.py ENDPOINT_ID --mode lb   # load-balancing endpoint

Queue: the job goes through the runpod SDK (`runpod.Endpoint(id).run_sync`) and every output
item's audio is decoded and held to what the item reports (`sample_rate`, `duration_s`).
Load-balancing: `/ping` until the worker is ready (204 while it starts; bounded by --ping-wait),
then OpenAI's `/v1/audio/speech` through the official `openai` client (base_url
`https://ENDPOINT_ID.api.runpod.ai/v1`), its WAV decoded and held to --sample-rate.

Prints one line, `PASS ...` or `FAIL ...`, and exits 0 or 1. The API key is never printed.
`RUNPOD_ENDPOINT_BASE_URL` (the SDK's) and --lb-base-url point it elsewhere (the tests' fake).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
import json
import os
import struct
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import requests
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
DURATION_TOLERANCE_S = 0.05
_UNKNOWN = b"\xff\xff\xff\xff"


class SmokeFailure(Exception):
    """What is wrong with the endpoint's answer, in one line."""


def redact(text: str, key: str | None) -> str:
    return text.replace(key, "***") if key else text


def decode(data: bytes) -> tuple[int, float]:
    """(sample rate, duration in s) of an encoded audio file. A streamed WAV's header carries
    0xFFFFFFFF sizes (HTTP mode); its sizes are set from the bytes received first."""
    if len(data) > 44 and data[:4] == b"RIFF" and data[4:8] == _UNKNOWN and data[40:44] == _UNKNOWN:
        data = b"".join(
            (
                data[:4],
                struct.pack("<I", len(data) - 8),
                data[8:40],
                struct.pack("<I", len(data) - 44),
                data[44:],
            )
        )
    try:
        info = sf.info(io.BytesIO(data))
    except Exception as exc:  # libsndfile's errors have no common type
        raise SmokeFailure(f"audio does not decode ({len(data)} bytes): {exc}") from None
    return int(info.samplerate), float(info.frames) / max(int(info.samplerate), 1)


def check_item(item: Any, index: int) -> str:
    """One queue output item: its audio decodes, lasts > 0 s and matches what it reports."""
    if not isinstance(item, dict):
        raise SmokeFailure(f"item {index} is not an object: {str(item)[:80]}")
    if item.get("error"):
        raise SmokeFailure(f"item {index} failed: {str(item['error'])[:200]}")
    if "audio_base64" not in item:
        raise SmokeFailure(f"item {index} has no audio_base64 (keys: {sorted(item)})")
    try:
        data = base64.b64decode(item["audio_base64"], validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise SmokeFailure(f"item {index}: audio_base64 is not base64") from None
    rate, seconds = decode(data)
    if seconds <= 0:
        raise SmokeFailure(f"item {index}: the audio is empty")
    reported_rate, reported_s = item.get("sample_rate"), item.get("duration_s")
    if reported_rate != rate:
        raise SmokeFailure(f"item {index}: decoded {rate} Hz, reported {reported_rate}")
    if not isinstance(reported_s, int | float) or abs(reported_s - seconds) > DURATION_TOLERANCE_S:
        raise SmokeFailure(f"item {index}: decoded {seconds:.2f} s, reported {reported_s}")
    return f"{item.get('format', '?')} {rate} Hz {seconds:.2f} s"


def check_output(output: Any) -> str:
    """A queue job's output: a non-empty list of good items (the worker's output shape)."""
    if isinstance(output, dict) and output.get("error"):
        raise SmokeFailure(f"job failed: {str(output['error'])[:200]}")
    if not isinstance(output, list) or not output:
        raise SmokeFailure(f"no output items: {str(output)[:120]}")
    return ", ".join(check_item(item, i) for i, item in enumerate(output))


def smoke_queue(endpoint_id: str, job_input: dict[str, Any], key: str, timeout_s: int) -> str:
    import runpod

    runpod.api_key = key
    runpod.endpoint_url_base = os.environ.get("RUNPOD_ENDPOINT_BASE_URL", runpod.endpoint_url_base)
    output = runpod.Endpoint(endpoint_id).run_sync(job_input, timeout=timeout_s)
    return check_output(output)


def wait_ready(
    ping_url: str,
    key: str,
    wait_s: float,
    sleep: Callable[[float], None] = time.sleep,
    interval_s: float = 2.0,
) -> None:
    """GET /ping until 200; 204 means the worker is starting. Bounded by wait_s."""
    attempts = max(1, int(wait_s / interval_s) + 1)
    status = 0
    for attempt in range(attempts):
        status = requests.get(
            ping_url, headers={"Authorization": f"Bearer {key}"}, timeout=10
        ).status_code
        if status == 200:
            return
        if status != 204:
            raise SmokeFailure(f"/ping answered {status}")
        if attempt + 1 < attempts:
            sleep(interval_s)
    raise SmokeFailure(f"/ping still {status} (starting) after {wait_s:.0f} s")


def smoke_lb(
    base_url: str, text: str, key: str, timeout_s: int, sample_rate: int, ping_wait_s: float
) -> str:
    from openai import APIStatusError, OpenAI, OpenAIError

    wait_ready(f"{base_url}/ping", key, ping_wait_s)
    client = OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0, timeout=timeout_s)
    try:
        reply = client.audio.speech.create(
            model="tts-1", voice="alloy", input=text, response_format="wav"
        )
    except APIStatusError as exc:
        raise SmokeFailure(f"/v1/audio/speech answered {exc.status_code}") from None
    except OpenAIError as exc:
        raise SmokeFailure(f"/v1/audio/speech: {type(exc).__name__}") from None
    rate, seconds = decode(reply.content)
    if seconds <= 0:
        raise SmokeFailure("/v1/audio/speech: the audio is empty")
    if rate != sample_rate:
        raise SmokeFailure(f"/v1/audio/speech: decoded {rate} Hz, expected {sample_rate}")
    return f"wav {rate} Hz {seconds:.2f} s"


def run(argv: Sequence[str], key: str) -> tuple[bool, str]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("endpoint_id")
    p.add_argument("--mode", choices=("queue", "lb"), default="queue")
    p.add_argument("--input", default=str(REPO / "test_input.json"))
    p.add_argument("--timeout", type=int, default=600, help="seconds for the request")
    p.add_argument("--ping-wait", type=float, default=300, help="lb: seconds to wait for /ping")
    p.add_argument("--sample-rate", type=int, default=24000, help="lb: the rate to expect")
    p.add_argument("--lb-base-url", help="default https://ENDPOINT_ID.api.runpod.ai")
    args = p.parse_args(argv)
    label = f"{args.mode} {args.endpoint_id}"
    started = time.monotonic()
    try:
        if not key:
            raise SmokeFailure("RUNPOD_API_KEY is not set")
        job = json.loads(Path(args.input).read_text())
        job_input = job.get("input", job)
        if args.mode == "queue":
            what = smoke_queue(args.endpoint_id, job_input, key, args.timeout)
        else:
            base = (args.lb_base_url or f"https://{args.endpoint_id}.api.runpod.ai").rstrip("/")
            text = str(job_input.get("text") or "Hello from F5-TTS.")
            what = smoke_lb(base, text, key, args.timeout, args.sample_rate, args.ping_wait)
    except SmokeFailure as exc:
        return False, f"FAIL {label}: {redact(str(exc), key)}"
    except Exception as exc:  # HTTP, SDK or file errors: one redacted line
        return False, f"FAIL {label}: {type(exc).__name__}: {redact(str(exc), key)[:300]}"
    return True, f"PASS {label}: {what} in {time.monotonic() - started:.1f} s"


def main(argv: Sequence[str] | None = None) -> int:
    ok, line = run(sys.argv[1:] if argv is None else argv, os.environ.get("RUNPOD_API_KEY", ""))
    print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
