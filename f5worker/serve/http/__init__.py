"""The HTTP adapter: the worker as a RunPod load-balancing endpoint (SERVE_MODE=http).

app.py holds the routes; the rest are single jobs the routes compose: statuses.py (coded errors
-> HTTP statuses and bodies), body.py (bounded JSON bodies), admission.py (concurrency limit and
a small wait queue -> 429, every wait bounded), deadlines.py (uvicorn's protocol with a header
deadline and a connection cap), writes.py (streams with a write-progress deadline), speech.py
(prepared job -> encoded audio, chunk by chunk, with a cancel flag), sse.py (OpenAI's speech
events) and serve.py (uvicorn beside the start-up timeline, /ping answering from the first
second). None imports torch at import time: the server answers /ping while torch and the model
load.
"""
