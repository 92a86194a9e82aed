# F5-TTS RunPod serverless worker.
# Build with scripts/build.sh (version stamp, OCI labels, the flash-attn labels, refuses a dirty
# tree), or by hand (then without the org.f5worker.flash-attn.* labels; the start-up log still
# names the baked wheel's sha256):
#   docker build --build-arg WORKER_VERSION="$(git describe --tags --always --dirty)" -t f5-tts-worker .
# Build args (none is a secret; an HF token, if ever needed, goes in as a build secret `hf_token`):
#   BASE_IMAGE        the torch image; its own torch/torchaudio are kept, whatever its tag says
#   FLASH_ATTN_BAKE   auto (the release wheel matching the image's torch, from its official https
#                     URL; pinned or trust on first use) | none | an https wheel URL or a wheel
#                     file, with FLASH_ATTN_BAKE_SHA256 (its sha256; with auto: a pin to enforce)
#   BAKE_MODEL        empty, or a MODEL_NAME to download into the image at build time
#   WORKER_VERSION, GIT_SHA, BUILD_DATE, SOURCE_URL   the version stamp (env + OCI labels)
ARG BASE_IMAGE=runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04
FROM ${BASE_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/tmp/hf-home \
    HF_HUB_DISABLE_TELEMETRY=1 \
    MODEL_CACHE_DIR=/tmp/models

WORKDIR /app

# The worker runs as uid 1000 (`worker`), not root. It owns its caches (MODEL_CACHE_DIR, HF_HOME,
# made after the optional model bake below) and its home (~/.local for a run-time flash-attn
# install, torch/triton caches); the code in /app and site-packages stay root's, read-only to it.
RUN useradd --uid 1000 --user-group --create-home --no-log-init --shell /bin/bash worker

# Requirements before code, so a code change does not reinstall them. The image's own torch and
# torchaudio, read from the installed packages (not the image tag), are a constraint: nothing can
# replace them. The lock leaves them out; overrides.txt drops f5-tts's UI/training-only deps.
# uv itself comes from requirements-uv.txt with its hashes (pip --require-hashes). uv checks
# every hash the lock carries; its --require-hashes is not used because it would also demand a
# hash for the image's own (already installed, unhashed) torch.
# Byte-compiled here so a cold start does not compile site-packages on every new container.
COPY requirements.txt overrides.txt requirements-uv.txt ./
RUN --mount=type=cache,target=/root/.cache/uv \
    python -m pip install --no-cache-dir --require-hashes -r requirements-uv.txt \
 && python -c "import importlib.metadata as m; print('\n'.join(f'{p}=={m.version(p)}' for p in ('torch', 'torchaudio')))" > /tmp/image-torch.txt \
 && cat /tmp/image-torch.txt \
 && uv pip install --system --compile-bytecode \
      --constraint /tmp/image-torch.txt --override overrides.txt -r requirements.txt \
 && rm /tmp/image-torch.txt \
 && python -m pip uninstall --yes uv \
 && python -c "import f5_tts.infer.utils_infer, runpod, boto3"

# flash-attn: the release wheel for the image's torch/CUDA/C++ ABI/Python, from its official
# https URL, proven to import in a fresh interpreter, so a normal start installs nothing. A pin
# (flash_attn_wheels.json or FLASH_ATTN_BAKE_SHA256) is enforced; without one, auto trusts the
# official URL on first use. A URL or file needs FLASH_ATTN_BAKE_SHA256. A CPU torch has nothing
# to bake. What was baked (name, source, sha256, pinned or first use) is recorded in
# /etc/f5worker/flash-attn-wheel.env: start-up logs it, scripts/build.sh turns it into labels.
ARG FLASH_ATTN_BAKE=auto
ARG FLASH_ATTN_BAKE_SHA256=""
COPY f5worker/__init__.py f5worker/errors.py f5worker/redact.py f5worker/wheel_checks.py f5worker/
COPY f5worker/startup/__init__.py f5worker/startup/flash_attn.py \
     f5worker/startup/flash_attn_bake.py f5worker/startup/flash_attn_install.py \
     f5worker/startup/flash_attn_wheels.py f5worker/startup/flash_attn_wheels.json \
     f5worker/startup/
RUN python -m f5worker.startup.flash_attn_bake "${FLASH_ATTN_BAKE}" \
      --sha256 "${FLASH_ATTN_BAKE_SHA256}" --record /etc/f5worker/flash-attn-wheel.env

# The entry points (model_cache_init.py, handler.py, s3_utils.py) and the package; .dockerignore
# leaves out f5worker/testing, which only tests and benchmarks use.
COPY *.py test_input.json ./
COPY f5worker/ f5worker/
RUN python -m compileall -q /app

# Optional: bake a model into MODEL_CACHE_DIR so a start needs neither S3 nor the hub. Fetched as
# root (the build secret is root's; the model store refuses a cache dir another uid owns), then
# the caches are handed to the worker in the same layer (no second copy of the model).
ARG BAKE_MODEL=""
RUN --mount=type=secret,id=hf_token \
    if [ -n "${BAKE_MODEL}" ]; then \
      HF_TOKEN="$(cat /run/secrets/hf_token 2>/dev/null || true)" MODEL_NAME="${BAKE_MODEL}" \
        python model_cache_init.py --fetch-model && rm -rf "${HF_HOME}"; \
    fi \
 && install -d -o worker -g worker "${MODEL_CACHE_DIR}" "${HF_HOME}" \
 && chown -R worker:worker "${MODEL_CACHE_DIR}"

# The version stamp comes last so a new version does not rebuild the layers above.
ARG WORKER_VERSION=dev
ARG GIT_SHA=unknown
ARG BUILD_DATE=unknown
ARG SOURCE_URL=unknown
ENV WORKER_VERSION=${WORKER_VERSION} \
    WORKER_GIT_SHA=${GIT_SHA}
LABEL org.opencontainers.image.title="f5-tts-runpod-worker" \
      org.opencontainers.image.description="F5-TTS text-to-speech RunPod serverless worker" \
      org.opencontainers.image.version="${WORKER_VERSION}" \
      org.opencontainers.image.revision="${GIT_SHA}" \
      org.opencontainers.image.created="${BUILD_DATE}" \
      org.opencontainers.image.source="${SOURCE_URL}"

USER 1000:1000
ENV HOME=/home/worker
CMD ["python", "-u", "model_cache_init.py"]
