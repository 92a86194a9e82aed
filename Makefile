# Every target sets itself up: a fresh clone needs only python3.11 and the package registry.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.synced
PORT ?= 8000
HOST ?= 127.0.0.1
COMPILE := $(UV) pip compile --quiet --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	--override overrides.txt --generate-hashes
# Packages the base image already has (torch and its CUDA wheels): never emitted into requirements.txt.
IMAGE_OWNED := torch torchaudio triton nvidia-cublas-cu12 nvidia-cuda-cupti-cu12 nvidia-cuda-nvrtc-cu12 \
	nvidia-cuda-runtime-cu12 nvidia-cudnn-cu12 nvidia-cufft-cu12 nvidia-curand-cu12 \
	nvidia-cusolver-cu12 nvidia-cusparse-cu12 nvidia-nccl-cu12 nvidia-nvjitlink-cu12 nvidia-nvtx-cu12

export HF_HUB_OFFLINE ?= 1
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: venv run run-http test test-agents test-fast lint lock clean

venv: $(STAMP)

# uv resolves and installs this set in seconds where pip's resolver gives up; the lock pins uv too.
$(STAMP): requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	test -x $(UV) || $(PY) -m pip install --quiet --disable-pip-version-check \
		"$$(grep -o '^uv==[^ ]*' requirements-dev.txt)"
	$(UV) pip sync --quiet --python $(PY) --require-hashes requirements-dev.txt
	touch $@

run: venv
	$(PY) model_cache_init.py --rp_serve_api --rp_api_host $(HOST) --rp_api_port $(PORT)

# The same worker as a load-balancing endpoint: OpenAI's /v1/audio/speech, /runsync, /ping.
run-http: venv
	SERVE_MODE=http PORT=$(PORT) HTTP_HOST=$(HOST) $(PY) model_cache_init.py

test: venv lint
	$(PY) -m pytest

# Pipecat's OpenAI TTS against the HTTP mode, in an environment of its own: pipecat-ai pins older
# soundfile/soxr/protobuf than the image (decision 031). LiveKit's plugin is in `make test`.
AGENTS_VENV := .venv-agents
AGENTS_STAMP := $(AGENTS_VENV)/.synced

$(AGENTS_STAMP): requirements-agents.txt $(STAMP)
	test -x $(AGENTS_VENV)/bin/python || $(PYTHON) -m venv $(AGENTS_VENV)
	$(UV) pip sync --quiet --python $(AGENTS_VENV)/bin/python --require-hashes requirements-agents.txt
	touch $@

test-agents: $(AGENTS_STAMP)
	$(AGENTS_VENV)/bin/python -m pytest tests/agents

# The inner loop: every test that starts no subprocess, worker or S3 server and loads no model
# (under 60 s here). `make test` runs everything.
test-fast: venv
	$(PY) -m pytest -q -m "not slow and not model"

# Style, then the layer contract (pyproject [tool.importlinter]), then the types (mypy).
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

lock: venv
	$(COMPILE) requirements-dev.in -o requirements-dev.txt
	$(COMPILE) requirements.in -c constraints-image.txt $(addprefix --no-emit-package ,$(IMAGE_OWNED)) \
		-o requirements.txt
	$(COMPILE) requirements-agents.in -o requirements-agents.txt

.PHONY: build container-test
# The image, stamped with `git describe` (refuses a dirty tree; ARGS="--allow-dirty -- ..." passes on).
build:
	scripts/build.sh $(ARGS)

# Build the Dockerfile daemonlessly (buildah) on a stand-in base, start its CMD, answer a job.
container-test: venv
	$(PY) scripts/container_test.py

.PHONY: deploy smoke
# Create or update the RunPod template and endpoint (RUNPOD_API_KEY from the environment):
# ARGS="--config deploy.toml" or flags; see docs/operations.md#deploy-on-runpod.
deploy: venv
	$(PY) scripts/deploy.py $(ARGS)

# Send test_input.json to a deployed endpoint and check its audio: ARGS="ENDPOINT_ID [--mode lb]".
smoke: venv
	$(PY) scripts/smoke.py $(ARGS)

.PHONY: bench-s3
# S3 model-cache sync vs aws s3 cp / s5cmd / a ranged-GET ceiling on SeaweedFS; ARGS="--size-mb 200".
bench-s3: venv
	$(PY) scripts/bench_s3_sync.py $(ARGS)

.PHONY: bench-infer bench-handler bench-threads bench-http
# Engine vs upstream F5TTS.infer (demo model unless ARGS="--model full --nfe 4"); see docs/benchmarks.md.
bench-infer: venv
	$(PY) scripts/bench_infer.py $(ARGS)

# A job through the local API vs a direct engine call (goal: <= 5% overhead).
bench-handler: venv
	$(PY) scripts/bench_handler.py $(ARGS)

# HTTP mode: first byte vs total, short first chunk vs not vs a queue /runsync (goal <= 1/4).
bench-http: venv
	$(PY) scripts/bench_http.py $(ARGS)

# Which threads run torch: main / job thread / the engine's torch thread (CPU OpenMP teams).
bench-threads: venv
	$(PY) scripts/bench_threads.py $(ARGS)

clean:
	rm -rf $(VENV) $(AGENTS_VENV) .pytest_cache .mypy_cache
