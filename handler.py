"""The RunPod handler entry. `python handler.py` answers test_input.json once (the SDK's
local-test convention) after the same start-up as the container's CMD.

The handler itself is `f5worker.serve.queue.QueueHandler.handle` (Worker.run stepped on a pool,
with progress reports); build_worker and start_sdk are the names start-up relies on (its
self-check reads them here).
"""

from f5worker.serve.queue import start_sdk
from f5worker.startup.compose import build_worker
from f5worker.startup.main import main

__all__ = ["build_worker", "main", "start_sdk"]

if __name__ == "__main__":
    raise SystemExit(main())
