#!/usr/bin/env bash
# The paper's Fig. 6 on the GPU machine: plain-20, plain-56 and ResNet-56 trained side by side (one GPU,
# concurrently, so their times are not comparable to the ResNet-20 acceptance run) with run.sh's recipe,
# shortened to RESEDGE_EPOCHS (default 20, lr /10 at RESEDGE_MILESTONES, default 10,15) to fit one device slot;
# each run is stopped after RESEDGE_TIME_LIMIT seconds (default 330) and what it wrote is kept.
# Inputs in .device/ (see prepare.sh; RESEDGE_TEST picks a smaller test file). Output: $OUT/fig6.tar.gz with
# <arch>/{metrics.csv,train.log,<arch>.rsm,<arch>.onnx} (no checkpoints: the device returns at most 8 files).
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-out}"
work=/tmp/fig6
archs=(${RESEDGE_ARCHS:-resnet56 plain20 plain56})
pids=()
for a in "${archs[@]}"; do
    mkdir -p "$work/$a"
    OUT="$work/$a" RESEDGE_ARCH="$a" XDG_CACHE_HOME="/tmp/cache-$a" RESEDGE_EPOCHS="${RESEDGE_EPOCHS:-20}" \
        RESEDGE_MILESTONES="${RESEDGE_MILESTONES:-10,15}" \
        timeout "${RESEDGE_TIME_LIMIT:-330}" bash train/device/run.sh >"$work/$a.stdout" 2>&1 &
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
