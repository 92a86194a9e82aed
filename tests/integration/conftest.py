"""Fixtures shared by the scenario tests.

- full_worker_urls: one local-API worker with everything configured (the demo model, a voice
  library on moto, MAX_CONCURRENCY=4), started once per session by the first test that asks
  and stopped at the session's end: each start costs 15-40 s of a shared CPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from f5worker.testing.worker import full_worker


@pytest.fixture(scope="session")
def full_worker_urls(
    demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(local API URL, S3 URL) of the session's fully configured worker."""
    log = tmp_path_factory.mktemp("full") / "worker.log"
    with full_worker(demo_model_dir, log) as urls:
        yield urls
