#!/usr/bin/env bash
# Build the worker image with a version stamp that says exactly what is inside:
#   version  = git describe --tags --always --dirty   (image tag, WORKER_VERSION, OCI version)
#   revision = git rev-parse HEAD                      (WORKER_GIT_SHA, OCI revision)
#   created  = now, UTC, RFC 3339                       (OCI created)
#   source   = SOURCE_URL or the origin remote, credentials stripped (OCI source)
# A dirty tree is refused (its version would name code nobody can check out) unless
# --allow-dirty. Uses a Docker engine when one answers, else daemonless buildah.
#
# usage: scripts/build.sh [--allow-dirty] [--image NAME] [-- EXTRA BUILD ARGS...]
#   e.g. scripts/build.sh -- --build-arg BAKE_MODEL=F5TTS_v1_Base
# Prints the built tag (NAME:VERSION) as its last line.
set -euo pipefail

image=${IMAGE:-f5-tts-worker}
allow_dirty=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --allow-dirty) allow_dirty=1 ;;
    --image) image=$2; shift ;;
    --) shift; break ;;
    -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

cd "$(dirname "$0")/.."
version=$(git describe --tags --always --dirty)
if [[ $version == *-dirty && $allow_dirty != 1 ]]; then
  echo "build.sh: refusing to build uncommitted changes (version $version);" \
    "commit them, or pass --allow-dirty" >&2
  exit 1
fi
revision=$(git rev-parse HEAD)
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
source_url=${SOURCE_URL:-$(git config --get remote.origin.url || echo unknown)}
source_url=$(sed -E 's#://[^/@]+@#://#' <<<"$source_url")  # never a token in a label
tag="$image:$version"

build_args=(
  --build-arg "WORKER_VERSION=$version"
  --build-arg "GIT_SHA=$revision"
  --build-arg "BUILD_DATE=$created"
  --build-arg "SOURCE_URL=$source_url"
  --tag "$tag"
)
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  docker build "${build_args[@]}" "$@" .
elif command -v buildah >/dev/null; then
  # docker format: the OCI format drops the Dockerfile's SHELL (pipefail).
  buildah bud --format docker --layers "${build_args[@]}" "$@" .
else
  echo "build.sh: no Docker engine answers and buildah is not installed" >&2
  exit 1
fi
echo "$tag"
