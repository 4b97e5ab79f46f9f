#!/usr/bin/env bash
# Prepares the GPU-machine run of scripts/device/gpu-bench.sh (run here, from the repository root):
# a stripped x86_64 release `resedge` with the `gpu` feature and the models in .device-gpu/ (git-ignored), and
# the Vulkan loader .debs in .gl/ (the GPU machine has NVIDIA's Vulkan driver but no loader, and no internet).
# Carry both folders: run(command="bash scripts/device/gpu-bench.sh", carry=[".device-gpu", ".gl"]).
set -euo pipefail
cd "$(dirname "$0")/../.."
SHARED="${RESEDGE_SHARED:-$(cd .. && pwd)/shared}"
[ -f "$SHARED/models/resnet18.onnx" ] || SHARED=/work/shared
D=.device-gpu
rm -rf "$D" && mkdir -p "$D"

cargo build --release --features gpu --bin resedge
cargo build --release -p resedge-quantize
cp target/release/resedge "$D/resedge" && strip "$D/resedge"
Q=target/release/resedge-quantize
cp models/cifar10/resnet20.rsm "$D/resnet20.rsm"
$Q quantize models/cifar10/resnet20.rsm --calib "$SHARED/data/cifar10/train_jpeg.tar.gz" --samples 64 -o "$D/resnet20-int8.rsm"
# ResNet-18 from the shared ONNX file: its f32 file (47 MB) would not fit the 64 MiB upload, so the device
# checks f32 ResNet-18 on the zoo architecture (same net, seeded weights) and int8 on the imported file.
tmp=$(mktemp -d)
$Q import "$SHARED/models/resnet18.onnx" -o "$tmp/resnet18.rsm"
$Q quantize "$tmp/resnet18.rsm" --calib "$SHARED/data/cifar10/train_jpeg.tar.gz" --samples 16 -o "$D/resnet18-int8.rsm"
rm -rf "$tmp"
cp "$SHARED/models/resnet20.input.npy" "$SHARED/models/resnet18.input.npy" "$D/"

mkdir -p .gl /tmp/amd64/partial
o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
# shellcheck disable=SC2086
apt-get $o update -qq
# shellcheck disable=SC2086
(cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
du -sh "$D" .gl
total=$(du -sbc "$D" .gl | tail -n 1 | cut -f1)
echo "carried: $((total / 1048576)) MiB (limit 60)"
[ "$total" -lt $((60 * 1048576)) ] || { echo "too large to carry" >&2; exit 1; }
