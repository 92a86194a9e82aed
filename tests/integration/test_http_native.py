"""The queue suite's bad-input table through the HTTP mode's native route (`POST /runsync`):
the same input gets the same code, now with its HTTP status, and the next job still works.

The worker is the table's (voice library and s3:// references on a moto server, reference URLs
on 127.0.0.1); the server is the real app under uvicorn in this process.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from f5worker.errors import http_status_of
from f5worker.serve.http.service import Service
from f5worker.testing.audio import noise, wav_bytes
from f5worker.testing.http import http_settings, serving
from f5worker.testing.s3_servers import client_for, moto_server
from f5worker.testing.web import audio_server
from f5worker.testing.worker import LIBRARY_BUCKET, seed_library
from tests.cases.bad_inputs import CASES, GOOD, fill, table_worker

STATUSES = {code: http_status_of(code) for _, _, code in CASES}


@pytest.fixture(scope="module")
def audio_url() -> Iterator[str]:
    with audio_server(wav_bytes(noise(0.5)), 64 * 1024) as url:
        yield url


@pytest.fixture(scope="module")
def url(engine) -> Iterator[str]:
    settings = http_settings(worker_version="bad-1")
    with moto_server(LIBRARY_BUCKET) as s3_url:
        seed_library(client_for(s3_url))
        service = Service(settings)
        service.ready(table_worker(engine, s3_url, settings))
        with serving(service) as base:
            yield base


def runsync(url: str, body: bytes) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    return httpx.post(f"{url}/runsync", content=body, headers=headers, timeout=120)


def test_each_code_has_the_status_the_readme_gives():
    assert STATUSES == {
        "INVALID_INPUT": 400,
        "UNSUPPORTED_FORMAT": 400,
        "BAD_REF_AUDIO": 400,
        "ASR_DISABLED": 400,
        "VOICE_NOT_FOUND": 404,
        "TEXT_TOO_LONG": 413,
        "OUTPUT_TOO_LARGE": 413,
    }


@pytest.mark.parametrize(("inp", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_over_http_then_a_good_job(url, audio_url, monkeypatch, inp, code):
    monkeypatch.setenv("RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS", "true")
    # json.dumps writes NaN, Infinity and lone surrogates (as \\ud800), as a JSON client may
    response = runsync(url, json.dumps({"input": fill(inp, audio_url)}).encode())
    assert response.status_code == STATUSES[code], response.text[:300]
    body = response.json()
    assert body["status"] == "FAILED" and body["error_code"] == code
    assert body["error"].startswith(f"{code}: ") and body["worker_version"] == "bad-1"
    good = runsync(url, json.dumps({"input": GOOD}).encode())
    assert good.status_code == 200 and good.json()["output"][0]["duration_s"] > 0


BODIES = [
    ("empty", b"", 400, "INVALID_INPUT"),
    ("not-json", b"{nope", 400, "INVALID_INPUT"),
    ("not-utf8", b'{"input": "\\xff\xff"}', 400, "INVALID_INPUT"),
    ("a-list", b"[1, 2]", 400, "INVALID_INPUT"),
    ("no-input", b'{"text": "Hi."}', 400, "INVALID_INPUT"),
    ("extra-key", b'{"input": {"text": "Hi."}, "inputs": "x"}', 400, "INVALID_INPUT"),
    ("huge-integer", b'{"input": {"text": "Hi.", "seed": ' + b"9" * 5000 + b"}}", 400, None),
    ("deep-nesting", b'{"input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, None),
    ("over-16-mb", b'{"input": {"text": "' + b"a" * (17 << 20) + b'"}}', 413, None),
]


@pytest.mark.parametrize(
    ("body", "status", "code"), [b[1:] for b in BODIES], ids=[b[0] for b in BODIES]
)
def test_bodies_a_json_parser_rejects_get_coded_statuses(url, body, status, code):
    response = runsync(url, body)
    assert response.status_code == status
    payload = response.json()
    assert payload["status"] == "FAILED" and payload["retryable"] is False
    assert payload["error_code"] == (code or payload["error_code"])
    assert payload["error_code"] in ("INVALID_INPUT", "REQUEST_TOO_LARGE")


def test_a_good_job_answers_like_the_queue(url):
    # a queue payload as it is, with the keys only RunPod's queue acts on
    queue_keys = {"webhook": "https://example.invalid/hook", "policy": {"ttl": 60000}}
    payload = {"input": {**GOOD, "stream": True}, **queue_keys, "s3Config": {}}
    response = runsync(url, json.dumps(payload).encode())
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "COMPLETED" and body["id"].startswith("http-")
    [item] = body["output"]
    assert item["format"] == "mp3" and item["chunk"] == 0 and item["worker_version"] == "bad-1"
