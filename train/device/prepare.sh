#!/usr/bin/env bash
# Prepares .device/ (git-ignored) for one GPU run: the stripped release binary and the data.
# Run here (needs libtorch from train/ci.sh's cache); then on the GPU machine: bash train/device/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
libtorch="${XDG_CACHE_HOME:-$HOME/.cache}/resedge/libtorch-2.11"
[[ -f "$libtorch/.complete" ]] || { echo "no libtorch in $libtorch: run bash train/ci.sh first" >&2; exit 1; }
export LIBTORCH="$libtorch" LIBTORCH_CXX11_ABI=1
cargo build --release -p resedge-train
target="${CARGO_TARGET_DIR:-target}"
data="${RESEDGE_DATA:-../shared/data/cifar10}"
mkdir -p .device
strip -o .device/resedge-train "$target/release/resedge-train"
install -m 0644 "$data/train_jpeg.tar.gz" "$data/test_batch.bin" "$data/batches.meta.txt" .device/
ls -l .device
du -sh .device
