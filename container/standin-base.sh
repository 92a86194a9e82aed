#!/usr/bin/env bash
# Stand-in for runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04, for `make container-test`
# on machines with no registry: Debian bookworm (its Python is 3.11) from debootstrap, plus the
# PyPI torch/torchaudio 2.4.x build (CUDA 12 wheels, old C++ ABI, as pip installs them) put into
# the system site-packages by uv from the local uv cache that `make venv` filled, so the ~4.8 GB of
# torch and CUDA wheels are not downloaded again. Like the RunPod image it has `python` on PATH
# and no EXTERNALLY-MANAGED marker. The environment-specific settings live here, not in the
# Dockerfile: SSL_CERT_FILE (the host's CA bundle is mounted over it during the build) and
# UV_CACHE_DIR (the host's uv cache is mounted there).
#
# usage: container/standin-base.sh IMAGE TORCH_VERSION
# needs: root, buildah, debootstrap; buildah storage from CONTAINERS_STORAGE_CONF if set.
set -euo pipefail

image=$1
torch=$2
uv=${UV:-.venv/bin/uv}
python=${PYTHON:-.venv/bin/python}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

ctr=$(buildah from scratch)
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
root=$(buildah mount "$ctr")

debootstrap --variant=minbase --include=python3,python3-pip,ca-certificates \
  bookworm "$root" "$mirror" >/dev/null
"$uv" pip install --quiet --link-mode copy --python "$python" \
  --python-platform x86_64-manylinux_2_28 --target "$root/usr/local/lib/python3.11/dist-packages" \
  "torch==$torch" "torchaudio==$torch"
rm -f "$root/usr/lib/python3.11/EXTERNALLY-MANAGED"
ln -sf python3 "$root/usr/bin/python"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
  "$root/usr/local/lib/python3.11/dist-packages/bin"
buildah umount "$ctr" >/dev/null

buildah config \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --env UV_CACHE_DIR=/uv-cache \
  --env UV_LINK_MODE=copy \
  --cmd '["/bin/bash"]' \
  "$ctr"
buildah commit --quiet "$ctr" "$image" >/dev/null
