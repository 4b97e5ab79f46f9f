#!/usr/bin/env bash
# ARM part of CI (called by .ci/run): cross toolchains and qemu-user (installed only if missing), clippy for
# aarch64; under qemu-aarch64 the tier-dependent test suites for three CPU models (NEON-only, dotprod, i8mm:
# every tier's kernels execute) and the other suites once; under qemu-arm the armv7 suites (scalar kernels);
# the no_std example, a stripped Pi 5 build.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n=== %s (%s, %s free)\n' "$*" "$(date +%T)" "$(df -h --output=avail . | tail -n 1 | tr -d ' ')"; }

step "ARM toolchains"
need=()
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v arm-linux-gnueabihf-gcc >/dev/null || need+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
if ((${#need[@]})); then
    sudo=$([ "$(id -u)" = 0 ] || echo sudo)
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${need[@]}"
fi
rustup target add aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf
qemu-aarch64 --version | head -n 1

step "clippy for aarch64 (the NEON / dotprod / i8mm kernels)"
cargo clippy -p resedge --target aarch64-unknown-linux-gnu --all-targets -- -D warnings

# tests/cli.rs spawns the CLI binary itself, which the host cannot exec without binfmt_misc: it runs on x86 only.
tests=(--lib --test tiers --test kernels --test bitexact --test hostile --test no_alloc --test shipped_model --test zoo)
a64=(-p resedge --target aarch64-unknown-linux-gnu)
step "aarch64 test binaries (built once, run under three CPU models)"
cargo test "${a64[@]}" "${tests[@]}" --no-run
# The suites that depend on the CPU's tier, for one target and CPU model. kernels prints the tier it detected
# and the kernels it tests or skips, bitexact prints the logit hashes; the full log is shown only on failure.
tier_suite() {
    local cpu=$1 log
    shift
    log=$(mktemp)
    if ! QEMU_CPU=$cpu cargo test "$@" --test kernels --test bitexact -- --nocapture >"$log" 2>&1; then
        tail -n 100 "$log"
        exit 1
    fi
    grep -E '^(kernel tier|tested|skipped|test result)|0x' "$log"
    # Every tier's kernels must run without allocating.
    QEMU_CPU=$cpu cargo test "$@" --test no_alloc
    # The kernels on 1, 2 and 3 pool threads against the scalar reference (whole-model logits per thread
    # count are bitexact's, above; tiers' own model test repeats them at many times the cost under qemu).
    QEMU_CPU=$cpu cargo test "$@" --test tiers -- --skip model_logits_agree_across_tiers_and_threads
}
# Loaders, hostile files, the shipped model and the zoo: the same code on every tier of a target, so once
# per target (on its most capable CPU model).
rest_suite() {
    QEMU_CPU=$1 cargo test "${@:2}" --lib --test hostile --test shipped_model --test zoo
}
for cpu in cortex-a53 cortex-a76 max; do
    step "tests under qemu-aarch64, QEMU_CPU=$cpu"
    tier_suite "$cpu" "${a64[@]}"
done
rest_suite max "${a64[@]}"

step "tests under qemu-arm (armv7, 32-bit Raspberry Pi OS: scalar kernels)"
armv7=(-p resedge --target armv7-unknown-linux-gnueabihf)
tier_suite cortex-a15 "${armv7[@]}"
rest_suite cortex-a15 "${armv7[@]}"

step "no_std API example under qemu-aarch64 (NEON by target, dotprod and i8mm as passed by the caller)"
for tier in "" dotprod i8mm; do
    QEMU_CPU=max cargo run -q -p resedge --no-default-features --target aarch64-unknown-linux-gnu --example no_std_cifar -- $tier
done

step "NPU backend for aarch64: CLI build with npu-rknn, stand-in librknnrt.so test under qemu-aarch64"
# rknpu-sys links nothing without RKNPU_INCLUDE_DIR (bundled bindings); librknnrt.so is dlopened at run time.
# The CLI in the test profile (shares the test build; the README's release command is the same code).
cargo build -p resedge --features npu-rknn --target aarch64-unknown-linux-gnu --bin resedge
QEMU_CPU=cortex-a76 cargo test -p resedge --features npu-rknn --target aarch64-unknown-linux-gnu --test npu_standin

step "stripped board build (Raspberry Pi 5)"
targets/build.sh pi5
