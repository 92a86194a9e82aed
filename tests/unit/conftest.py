"""Fixtures shared by the unit tests.

- s3: S3 on moto in this process (`mock_aws`, the S3 API with conditional writes; safe across
  threads), one per test. A module names the buckets it needs by overriding `s3_buckets`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws

from f5worker.s3 import make_client

# Error messages must never show it; tests read it back from the environment to check.
MOTO_SECRET = "moto-secret-never-shown"


@pytest.fixture
def s3_buckets() -> tuple[str, ...]:
    """The buckets `s3` creates empty; override in a test module to name others."""
    return ("models",)


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch, s3_buckets: tuple[str, ...]) -> Iterator[Any]:
    """An S3 client (us-east-1, one attempt: a failure shows at once) on moto in process,
    with s3_buckets created; credentials come from the environment, as in production."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "moto-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", MOTO_SECRET)
    with mock_aws():
        client = make_client(region="us-east-1", max_attempts=1)
        for bucket in s3_buckets:
            client.create_bucket(Bucket=bucket)
        yield client
