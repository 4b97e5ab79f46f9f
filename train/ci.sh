#!/usr/bin/env bash
# CI for the training crate (resedge-train): fetches libtorch 2.11 from the PyPI torch wheel (once, cached),
# then fmt, clippy -D warnings and the CPU tests. Called by .ci/run; runs alone too: `bash train/ci.sh`.
#
# Cache: ${XDG_CACHE_HOME:-$HOME/.cache}/resedge/libtorch-2.11/{include,lib} (~550 MB), reused when complete.
# Only the CPU libraries are unpacked (libtorch_cuda.so is not needed to build, and without it torch-sys
# does not link it: the binary dlopens it at run time, see train/src/device.rs). The wheel's libtorch_cpu
# also needs libcudart.so.13 and libcupti.so.13 at load time, taken from the nvidia-cuda-* wheels of
# CUDA 13.0 (the version torch 2.11 requires). The link flag DESIGN.md §3 asks for
# (-Wl,--allow-shlib-undefined) is set by train/build.rs, together with an rpath to $LIBTORCH/lib.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

cache="${XDG_CACHE_HOME:-$HOME/.cache}/resedge"
libtorch="$cache/libtorch-2.11"
if [[ ! -f "$libtorch/.complete" ]]; then
    echo "== train/ci.sh: fetching libtorch 2.11 into $libtorch"
    dl="$(mktemp -d)"
    trap 'rm -rf "$dl"' EXIT
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
        --platform manylinux_2_28_x86_64 -d "$dl" torch==2.11.0
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$dl" \
        nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
    rm -rf "$libtorch.tmp"
    mkdir -p "$libtorch.tmp"
    python3 - "$dl" "$libtorch.tmp" <<'EOF'
import glob, os, shutil, sys, zipfile
dl, dst = sys.argv[1], sys.argv[2]
skip = ("libtorch_cuda", "libc10_cuda", "libtorch_python", "libtorch_nvshmem", "libcaffe2_nvrtc")
(torch,) = glob.glob(os.path.join(dl, "torch-2.11.0-*.whl"))
with zipfile.ZipFile(torch) as z:
    for name in z.namelist():
        if name.endswith("/"):
            continue
        for part in ("include", "lib"):
            prefix = f"torch/{part}/"
            if name.startswith(prefix) and not os.path.basename(name).startswith(skip):
                out = os.path.join(dst, part, name[len(prefix):])
                os.makedirs(os.path.dirname(out), exist_ok=True)
                with z.open(name) as src, open(out, "wb") as f:
                    shutil.copyfileobj(src, f)
for wheel in glob.glob(os.path.join(dl, "nvidia_cuda_*.whl")):
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            base = os.path.basename(name)
            if base in ("libcudart.so.13", "libcupti.so.13"):
                with z.open(name) as src, open(os.path.join(dst, "lib", base), "wb") as f:
                    shutil.copyfileobj(src, f)
for lib in ("libtorch_cpu.so", "libc10.so", "libcudart.so.13", "libcupti.so.13"):
    assert os.path.exists(os.path.join(dst, "lib", lib)), f"{lib} missing from the wheels"
EOF
    echo "2.11.0" > "$libtorch.tmp/build-version"
    touch "$libtorch.tmp/.complete"
    rm -rf "$libtorch"
    mv "$libtorch.tmp" "$libtorch"
    echo "== train/ci.sh: libtorch ready after $(( $(date +%s) - start )) s"
fi

export LIBTORCH="$libtorch" LIBTORCH_CXX11_ABI=1
export LD_LIBRARY_PATH="$libtorch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

echo "== train/ci.sh: fmt"
cargo fmt -p resedge-train -- --check
echo "== train/ci.sh: clippy"
cargo clippy -p resedge-train --all-targets -- -D warnings
echo "== train/ci.sh: tests"
cargo test -p resedge-train
echo "== train/ci.sh: done in $(( $(date +%s) - start )) s"
