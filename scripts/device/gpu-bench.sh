#!/usr/bin/env bash
# Runs on the GPU machine (no cargo, no internet), from the repository root, with .device-gpu/ and .gl/ made by
# scripts/device/prepare.sh: installs the Vulkan loader from .gl/, then checks the GPU backend against the CPU
# (int8 byte-identical, f32 within 1e-4 + 5e-4 |cpu|) and benchmarks it. Logs go to $OUT (default /tmp/out).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/out}"
mkdir -p "$OUT"
D=.device-gpu
R="$D/resedge"
fail=0
log() { echo "$*" | tee -a "$OUT/summary.txt"; }
# step NAME CMD...: runs CMD, its output into $OUT/NAME.log; a failure is recorded, the script goes on.
step() {
    local name=$1
    shift
    if "$@" >"$OUT/$name.log" 2>&1; then
        log "ok    $name: $(grep -E '^(verify|latency|stages|backend)' "$OUT/$name.log" | tr '\n' ' ')"
    else
        log "FAIL  $name (exit $?): $(tail -n 3 "$OUT/$name.log" | tr '\n' ' ')"
        fail=1
    fi
}

if [ -d .gl ]; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
    icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    [ -f "$icd" ] || icd=$(find / -name nvidia_icd.json -path '*icd.d*' 2>/dev/null | head -n 1)
    [ -n "$icd" ] && export VK_DRIVER_FILES="$icd"
    log "vulkan loader from .gl, driver manifest ${VK_DRIVER_FILES:-none found}"
fi
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true
uptime | tee -a "$OUT/summary.txt"
export RUST_LOG=info

# Correctness: the CLI's own check (seeded inputs, CPU reference executor in the same process)...
step verify-r20-f32 "$R" verify "$D/resnet20.rsm" --backend gpu --inputs 5
step verify-r20-f32-b8 "$R" verify "$D/resnet20.rsm" --backend gpu --inputs 2 --batch 8
step verify-r20-int8 "$R" verify "$D/resnet20-int8.rsm" --backend gpu --inputs 5
step verify-r20-int8-b8 "$R" verify "$D/resnet20-int8.rsm" --backend gpu --inputs 2 --batch 8
step verify-r20-int8-nodot4 env RESEDGE_GPU_DOT4=0 "$R" verify "$D/resnet20-int8.rsm" --backend gpu --inputs 3
step verify-r18-f32 "$R" verify --arch resnet18 --backend gpu --inputs 3
step verify-r18-int8-zoo "$R" verify --arch resnet18 --precision int8 --backend gpu --inputs 3
step verify-r18-int8 "$R" verify "$D/resnet18-int8.rsm" --backend gpu --inputs 3
# ...and `run` on the shared reference inputs, --backend gpu against --backend cpu, byte for byte.
for m in resnet20 resnet20-int8 resnet18-int8; do
    in="$D/${m%-int8}.input.npy"
    "$R" run "$D/$m.rsm" --input "$in" --output "$OUT/$m.cpu.npy" --backend cpu >>"$OUT/run-$m.log" 2>&1
    "$R" run "$D/$m.rsm" --input "$in" --output "$OUT/$m.gpu.npy" --backend gpu >>"$OUT/run-$m.log" 2>&1
    if [[ $m == *int8 ]] && cmp -s "$OUT/$m.cpu.npy" "$OUT/$m.gpu.npy"; then
        log "ok    run-$m: gpu output file identical to cpu"
    elif [[ $m != *int8 ]] && [ -s "$OUT/$m.gpu.npy" ]; then
        log "ok    run-$m: written (f32 compared by verify; identical: $(cmp -s "$OUT/$m.cpu.npy" "$OUT/$m.gpu.npy" && echo yes || echo no))"
    else
        log "FAIL  run-$m: outputs differ or missing"
        fail=1
    fi
done

# Benchmarks (JSON last line of each log): upload / compute / download reported separately.
for spec in "r20-f32:$D/resnet20.rsm" "r20-int8:$D/resnet20-int8.rsm" "r18-int8:$D/resnet18-int8.rsm" \
    "r18-f32:--arch resnet18" "r18-int8-zoo:--arch resnet18 --precision int8"; do
    name=${spec%%:*}
    # shellcheck disable=SC2086
    step "bench-gpu-$name" "$R" bench ${spec#*:} --backend gpu --warmup 5 --iters 50 --json
    # shellcheck disable=SC2086
    step "bench-gpu-$name-b32" "$R" bench ${spec#*:} --backend gpu --warmup 3 --iters 20 --batch 32 --json
    # shellcheck disable=SC2086
    step "bench-cpu-$name" "$R" bench ${spec#*:} --backend cpu --warmup 1 --iters 5 --json
done
log "done, failures: $fail"
exit $fail
