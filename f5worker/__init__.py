"""The F5-TTS RunPod worker, one sub-package per stage a reader looks for:

- startup/  the timeline the image's CMD runs: diagnostics, flash-attn, model, engine, serving
- models/   where a model directory comes from: local, S3 cache, hub, demo; manifests, ranged GETs
- engine/   the only torch / f5-tts user: loading, the restated sampler, batching, one torch thread
- job/      one job end to end: schema, OpenAI mapping, voices, codecs, output, the RunPod adapter
- testing/  test support shared by tests/ and scripts/ (never imported by the worker itself)

At the root, shared by all: config (the only environment reader), errors (the coded error
family), log_setup, files (atomic local writes), s3 (the S3 client and its error mapping), and
audio (the Audio and Voice values passed between the job path and the engine).
Imports point down the list above; no module does work at import time.
"""
