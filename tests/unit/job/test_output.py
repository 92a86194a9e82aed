"""Return modes: inline base64 within RunPod's result budget, or the output bucket (moto server)."""

from __future__ import annotations

import base64
import urllib.request
from collections.abc import Iterator

import pytest

from f5worker.errors import InvalidInput, OutputTooLarge, StorageError
from f5worker.job.output import (
    MAX_RESULT_B64_BYTES,
    Delivery,
    OutputStore,
    ResultBudget,
    make_output_client,
    region_from_endpoint,
)
from f5worker.testing.s3_servers import moto_server

pytestmark = pytest.mark.slow  # starts a server or a Python process

BUCKET = "outputs"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server(BUCKET) as url:
        yield url


@pytest.fixture
def store(moto_url) -> OutputStore:
    return OutputStore(lambda: make_output_client(moto_url, "key", "secret"), BUCKET, 120)


def test_inline_while_it_fits():
    deliver = Delivery("auto", "wav", "job-1", store=None)
    assert deliver(b"abc") == {"audio_base64": base64.b64encode(b"abc").decode()}


def test_the_budget_covers_every_item_of_a_job():
    budget = ResultBudget(8)
    assert budget.take(4) and budget.take(4) and not budget.take(1)
    deliver = Delivery("base64", "pcm", "job-1", store=None, budget=ResultBudget(8))
    deliver(b"abc")  # 4 base64 bytes
    deliver(b"abc")
    with pytest.raises(OutputTooLarge) as info:
        deliver(b"a")
    assert "compressed format" in info.value.message and not info.value.retryable


def test_default_budget_is_below_runpods_limit_with_headroom():
    assert 8_000_000 < MAX_RESULT_B64_BYTES <= 9_500_000  # inside /run's 10 MB with the JSON


def test_auto_without_a_bucket_is_output_too_large():
    deliver = Delivery("auto", "wav", "job-1", store=None, budget=ResultBudget(3))
    with pytest.raises(OutputTooLarge):
        deliver(b"abcd")


def test_url_mode_needs_a_bucket():
    with pytest.raises(InvalidInput) as info:
        Delivery("url", "wav", "job-1", store=None)
    assert "output bucket" in info.value.message


def fetch(url: str) -> tuple[bytes, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read(), response.headers["Content-Type"]


def test_url_mode_uploads_and_presigns(store):
    deliver = Delivery("url", "mp3", "sync-1/../x", store)
    out = deliver(b"ID3 fake mp3", index=2)
    assert set(out) == {"audio_url", "url_expires_in"} and out["url_expires_in"] == 120
    assert "X-Amz-Expires=120" in out["audio_url"]  # SigV4, the configured expiry
    assert fetch(out["audio_url"]) == (b"ID3 fake mp3", "audio/mpeg")
    key = out["audio_url"].split(f"/{BUCKET}/", 1)[1].split("?")[0]
    assert key.startswith("sync-1_.._x/") and key.endswith("-002.mp3")


def test_auto_switches_to_a_url_when_the_budget_is_spent(store):
    deliver = Delivery("auto", "wav", "job-2", store, budget=ResultBudget(8))
    first = deliver(b"abcdef", index=0)
    second = deliver(b"ghijkl", index=1)
    assert "audio_base64" in first and "audio_url" in second
    assert fetch(second["audio_url"])[0] == b"ghijkl"


def test_two_runs_of_one_job_never_overwrite_each_other(store):
    a = Delivery("url", "wav", "job-3", store)(b"first")
    b = Delivery("url", "wav", "job-3", store)(b"second")
    assert fetch(a["audio_url"])[0] == b"first" and fetch(b["audio_url"])[0] == b"second"


def test_upload_failure_is_a_storage_error(moto_url):
    missing = OutputStore(lambda: make_output_client(moto_url, "k", "s"), "no-such-bucket")
    with pytest.raises(StorageError) as info:
        Delivery("url", "wav", "job-4", missing)(b"x")
    assert info.value.retryable and "NoSuchBucket" in info.value.message


def test_bucket_defaults_to_rp_uploads_month_name(store):
    default = OutputStore(lambda: None)
    assert len(default.bucket) == 5 and default.bucket[2] == "-"


@pytest.mark.parametrize(
    ("endpoint", "region"),
    [
        ("https://my-bucket.s3.eu-west-1.amazonaws.com", "eu-west-1"),
        ("https://s3.us-east-2.amazonaws.com", "us-east-2"),
        ("https://s3.amazonaws.com", None),
        ("https://bucket.s3.us-west-004.backblazeb2.com", "us-west-004"),
        ("https://nyc3.digitaloceanspaces.com", "nyc3"),
        ("https://abc.r2.cloudflarestorage.com", None),
        ("http://127.0.0.1:9000", None),
    ],
)
def test_region_from_endpoint(endpoint, region):
    assert region_from_endpoint(endpoint) == region
