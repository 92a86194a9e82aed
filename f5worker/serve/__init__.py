"""The transports: how jobs reach the worker and results leave it.

- queue.py, progress.py: the RunPod queue adapter (the SDK's handler, progress posts, cancel).
- http/: the load-balancing adapter (FastAPI/uvicorn: OpenAI's speech route, /runsync, /ping,
  admission and the client bounds).

Both hand a job to the same job path (f5worker.job) and know nothing of synthesis; the job path
knows nothing of them.
"""
