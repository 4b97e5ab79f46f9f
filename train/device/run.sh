#!/usr/bin/env bash
# The GPU acceptance run (no Rust toolchain or internet there): ResNet-20 (or RESEDGE_ARCH) on train_jpeg.tar.gz, the paper's
# recipe compressed to 40 epochs (lr 0.1, /10 at epochs 20 and 30, batch 128, SGD momentum 0.9, wd 1e-4).
# Inputs in .device/ (see prepare.sh); outputs in $OUT (default out/): <arch>.rsm, <arch>.onnx,
# metrics.csv, curve.png, checkpoint.*, train.log. Extra trainer flags: RESEDGE_TRAIN_FLAGS="--channels-last";
# RESEDGE_EPOCHS, RESEDGE_MILESTONES and RESEDGE_TEST override the schedule and the test file.
set -euo pipefail
cd "$(dirname "$0")/../.."
dev=.device
out="${OUT:-out}"
mkdir -p "$out"

torch_dir="$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')"
export LD_LIBRARY_PATH="$torch_dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
{
    echo "torch: $torch_dir ($(python3 -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)'))"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
} | tee "$out/device.txt"

# Decoded images are cached outside $OUT so they do not travel back.
export XDG_CACHE_HOME="${XDG_CACHE_HOME:-/tmp/resedge-cache}"
start=$(date +%s.%N)
# shellcheck disable=SC2086
"$dev/resedge-train" train --device cuda --arch "${RESEDGE_ARCH:-resnet20}" \
    --train "$dev/train_jpeg.tar.gz" --test "${RESEDGE_TEST:-$dev/test_batch.bin}" --labels "$dev/batches.meta.txt" \
    --epochs "${RESEDGE_EPOCHS:-40}" --milestones "${RESEDGE_MILESTONES:-20,30}" --batch 128 --lr 0.1 --momentum 0.9 --weight-decay 1e-4 --seed 0 \
    --out "$out" --onnx --no-progress ${RESEDGE_TRAIN_FLAGS:-} 2>&1 | tee "$out/train.log"
end=$(date +%s.%N)
echo "wall: $(python3 -c "print(f'{$end - $start:.1f}')") s (includes start-up and JPEG decoding)" | tee -a "$out/train.log"
