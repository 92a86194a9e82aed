# F5-TTS RunPod serverless worker.
# Build with scripts/build.sh (version stamp, OCI labels) or:
#   docker build --build-arg WORKER_VERSION=$(git describe --tags --always --dirty) -t f5-tts-worker .
ARG BASE_IMAGE=runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/tmp/hf-home \
    MODEL_CACHE_DIR=/tmp/models

WORKDIR /app

# Requirements first, so code changes do not reinstall them. The image's own torch is pinned as a
# constraint (read from the installed package, not the image tag), so nothing can replace it.
COPY requirements.txt ./
RUN python -m pip install uv==0.13.9 \
 && python -c "import importlib.metadata as m; print('\n'.join(f'{p}=={m.version(p)}' for p in ('torch', 'torchaudio')))" > /tmp/image-torch.txt \
 && uv pip install --system --require-hashes --constraint /tmp/image-torch.txt -r requirements.txt \
 && python -c "import f5_tts.infer.utils_infer, runpod, boto3"

COPY *.py test_input.json ./

ARG WORKER_VERSION=dev
ENV WORKER_VERSION=${WORKER_VERSION}
LABEL org.opencontainers.image.title="f5-tts-runpod-worker" \
      org.opencontainers.image.version="${WORKER_VERSION}"

CMD ["python", "-u", "model_cache_init.py"]
