#!/usr/bin/env bash
# Prepares, here (where pip reaches the package index), the optional baselines that benchmarks/gpu_session.sh
# uses on a GPU machine with no network, at the versions pinned in constraints.txt, without their dependencies
# (numpy, scipy, opt_einsum and torch are on that machine): TensorLy and TensorLy-Torch as wheels in .whl/, and
# torchTT, published as an sdist only, as its pure-Python package in .whl/site/ (its C++ extension is optional
# and LinearLayerTT does not use it). .whl/ is git-ignored; the GPU session carries it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
pin() { grep -i "^$1==" constraints.txt | head -1; }
rm -rf .whl && mkdir -p .whl/site
for name in tensorly tensorly-torch; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: -d .whl "$(pin "$name")"
done
tmp="$(mktemp -d)"
"$PY" -m pip download -q --no-deps --no-binary=:all: --no-build-isolation -d "$tmp" "$(pin torchtt)"  # no fetched torch
tar -xzf "$tmp"/torchtt-*.tar.gz -C "$tmp"
cp -r "$tmp"/torchtt-*/torchtt .whl/site/
rm -rf "$tmp"
du -sh .whl; ls .whl .whl/site
