#!/usr/bin/env bash
# Build the worker image with a version stamp that says exactly what is inside:
#   version  = git describe --tags --always --dirty   (image tag, WORKER_VERSION, OCI version)
#   revision = git rev-parse HEAD                      (WORKER_GIT_SHA, OCI revision)
#   created  = now, UTC, RFC 3339                       (OCI created)
#   source   = SOURCE_URL or the origin remote, credentials stripped (OCI source)
# A dirty tree is refused (its version would name code nobody can check out) unless
# --allow-dirty. Uses a Docker engine when one answers, else daemonless buildah.
# Then the baked flash-attn wheel becomes labels: a label cannot come from a RUN step's output,
# so the bake step records it in the image (/etc/f5worker/flash-attn-wheel.env: status, wheel,
# sha256, source, trust, ...), this script reads that file back (a container runs `cat`) and a
# second, one-line build (FROM the image + LABEL) adds org.f5worker.flash-attn.{wheel,sha256,
# url,trust,reason} under the same tag. Pin a first-use wheel from them:
#   scripts/pin_flash_attn_wheels.py "$(docker inspect --format '{{index .Config.Labels
#     "org.f5worker.flash-attn.wheel"}}={{index .Config.Labels "org.f5worker.flash-attn.sha256"}}'
#     IMAGE)" --write
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
    -h | --help) sed -n '2,22p' "$0"; exit 0 ;;
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
record=/etc/f5worker/flash-attn-wheel.env
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  builder=(docker build)
  read_record() { docker run --rm --entrypoint cat "$tag" "$record"; }
elif command -v buildah >/dev/null; then
  # docker format: the OCI format drops the Dockerfile's SHELL (pipefail).
  builder=(buildah bud --format docker)
  read_record() {
    local ctr status=0
    ctr=$(buildah from --pull-never "$tag")
    buildah run "$ctr" -- cat "$record" || status=$?
    buildah rm "$ctr" >/dev/null
    return "$status"
  }
else
  echo "build.sh: no Docker engine answers and buildah is not installed" >&2
  exit 1
fi
if [[ ${builder[0]} == buildah ]]; then
  "${builder[@]}" --layers "${build_args[@]}" "$@" .
else
  "${builder[@]}" "${build_args[@]}" "$@" .
fi

# The flash-attn labels, from the record the bake step wrote into the image.
text=$(read_record) || { echo "build.sh: the image has no $record (bake step)" >&2; exit 1; }
labels=()
while IFS= read -r line; do
  key=${line%%=*} value=${line#*=}
  # The bake step writes only these characters; anything else is not put into a LABEL line.
  if [[ ! $key =~ ^[a-z0-9]+$ || ! $value =~ ^[A-Za-z0-9._:/+%@,()=\ -]*$ ]]; then
    echo "build.sh: unexpected line in $record: $line" >&2
    exit 1
  fi
  case $key in
    wheel | sha256 | trust | reason) labels+=("org.f5worker.flash-attn.$key=$value") ;;
    source) labels+=("org.f5worker.flash-attn.url=$value") ;;
    status) [[ $value == none ]] && labels+=("org.f5worker.flash-attn.wheel=none") ;;
  esac
done <<<"$text"
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
{
  echo "FROM $tag"
  printf 'LABEL'
  for label in "${labels[@]}"; do printf ' "%s"="%s"' "${label%%=*}" "${label#*=}"; done
  echo
} >"$context/Dockerfile"
"${builder[@]}" --tag "$tag" "$context"
echo "$tag"
