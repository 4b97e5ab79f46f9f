#!/usr/bin/env bash
# Builds a stripped release of the resedge CLI for one board profile (targets/<board>.toml).
#   targets/build.sh pi5            -> target/boards/pi5/resedge, prints its size
# Needs the cross linker named in .cargo/config.toml (Debian: gcc-aarch64-linux-gnu / gcc-arm-linux-gnueabihf)
# and `rustup target add <triple>`. The quantizer is not built (host tool).
set -euo pipefail
cd "$(dirname "$0")/.."
board=${1:?usage: targets/build.sh BOARD   (one of: $(cd targets && ls *.toml | sed 's/\.toml$//' | tr '\n' ' '))}
profile=targets/$board.toml
[ -f "$profile" ] || { echo "no profile $profile" >&2; exit 1; }
field() { sed -n "s/^$1 *= *\"\([^\"]*\)\".*/\1/p" "$profile"; }
triple=$(field triple)
cpu=$(field target_cpu)
echo "board $(field board): $triple, target-cpu $cpu, kernel tier $(field kernel_tier)"
# target-cpu tunes scheduling and lets the compiler use the core's features everywhere; the SIMD kernels
# still pick their tier at run time (RESEDGE_ISA overrides).
# The CLI without WebP decoding, and no unwind tables (the profile aborts on panic): ~150 KB less.
RUSTFLAGS="-C target-cpu=$cpu -C force-unwind-tables=no ${RUSTFLAGS:-}" \
    cargo build --profile board --target "$triple" -p resedge --no-default-features --features cli --bin resedge
# Boards share a triple (and cargo's output path): keep one copy per board.
mkdir -p "target/boards/$board"
bin=target/boards/$board/resedge
cp "target/$triple/board/resedge" "$bin"
ls -l "$bin" | awk -v b="$bin" '{ printf "%s: %d bytes (%.2f MiB), stripped\n", b, $5, $5 / 1048576 }'
