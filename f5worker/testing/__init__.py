"""Test support shared by tests/ and scripts/: audio fixtures, S3 servers, worker processes.

Never imported by the worker itself; it may import test-only packages (moto, hypothesis).
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the checkout: where `make run` works
