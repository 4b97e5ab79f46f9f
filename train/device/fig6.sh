#!/usr/bin/env bash
# The paper's Fig. 6 on the GPU machine: plain-20, plain-56 and ResNet-56 trained side by side (one GPU,
# concurrently, so their times are not comparable to the ResNet-20 acceptance run) with run.sh's recipe.
# Inputs in .device/ (see prepare.sh). Output: $OUT/fig6.tar.gz with <arch>/{metrics.csv,train.log,<arch>.rsm,
# <arch>.onnx} (checkpoints stay behind: the device machine returns at most 8 files).
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-out}"
work=/tmp/fig6
archs=(${RESEDGE_ARCHS:-resnet56 plain20 plain56})
pids=()
for a in "${archs[@]}"; do
    mkdir -p "$work/$a"
    OUT="$work/$a" RESEDGE_ARCH="$a" XDG_CACHE_HOME="/tmp/cache-$a" bash train/device/run.sh >"$work/$a.stdout" 2>&1 &
    pids+=($!)
done
status=0
for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || { echo "${archs[$i]} failed" >&2; status=1; }
    tail -n 3 "$work/${archs[$i]}.stdout"
done
mkdir -p "$out"
tar -C "$work" -czf "$out/fig6.tar.gz" --exclude='checkpoint.*' --exclude='curve.png' "${archs[@]}"
ls -l "$out/fig6.tar.gz"
exit $status
