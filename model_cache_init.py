"""The container's start command (the image's CMD): f5worker.startup.main.main().

Diagnostics -> flash-attn -> model (S3 cache, hub or demo) -> engine -> the RunPod SDK, in one
process. `--diagnose` prints the environment report; `--fetch-model` only puts the model in
MODEL_CACHE_DIR (the image build's BAKE_MODEL step); `--rp_*` arguments go to the RunPod SDK.
"""

from f5worker.startup.main import main

if __name__ == "__main__":
    raise SystemExit(main())
