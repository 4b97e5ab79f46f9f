//! Runs one ResNet-18 convolution layer (3x3, 64 -> 64 channels, 56x56, stride 1, pad 1) with the kernel
//! a tier picks, `iters` times after packing once: the workload for instruction counts under qemu
//! (`../shared/tools/qemu-icount`; run with 1 and 3 iterations and take half the difference).
//!
//! ```sh
//! cargo build --release --no-default-features --example layer_icount --target aarch64-unknown-linux-gnu
//! QEMU_CPU=max qemu-aarch64 -L /usr/aarch64-linux-gnu -plugin libicount.so -d plugin \
//!     target/aarch64-unknown-linux-gnu/release/examples/layer_icount dotprod int8 3
//! ```

use resedge::kernels::packed::{Scratch, Serial};
use resedge::kernels::registry::pick;
use resedge::kernels::{ConvGeom, F32ConvParams, Isa, KernelFn, QConvParams, Requant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let isa = Isa::from_name(args.get(1).map_or("neon", |s| s.as_str()))
        .expect("tier: scalar|neon|dotprod|i8mm|avx2|avx512|avx512vnni");
    let int8 = args.get(2).map_or("int8", |s| s.as_str()) == "int8";
    let iters: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1);
    let g = ConvGeom {
        n: 1,
        c_in: 64,
        h_in: 56,
        w_in: 56,
        c_out: 64,
        h_out: 56,
        w_out: 56,
        kh: 3,
        kw: 3,
        stride_h: 1,
        stride_w: 1,
        pad_t: 1,
        pad_l: 1,
        dil_h: 1,
        dil_w: 1,
        groups: 1,
    };
    let wave = |i: usize, m: usize| ((i * 7919 + 13) % m) as i32 - (m / 2) as i32;
    let k = pick(isa, |f| matches!((f, int8), (KernelFn::QConv(_), true) | (KernelFn::F32Conv(_), false)))
        .expect("a convolution kernel");
    let mut checksum = 0i64;
    match k.func {
        KernelFn::QConv(f) => {
            let x: Vec<i8> = (0..g.input_len()).map(|i| wave(i, 256) as i8).collect();
            let w: Vec<i8> = (0..g.c_out * g.k()).map(|i| wave(i, 255) as i8).collect();
            let bias = vec![100; g.c_out];
            let (m, s) = ([1 << 30], [44]);
            let p = QConvParams {
                x_zero_point: 3,
                weight: &w,
                bias: &bias,
                requant: Requant { multiplier: &m, shift: &s, zero_point: -5, lo: -128, hi: 127 },
                residual: None,
            };
            let pack = (f.pack)(&g, &p);
            let mut scratch = Scratch::new(pack.scratch_bytes(1));
            let mut y = vec![0i8; g.output_len()];
            for _ in 0..iters {
                (f.run)(&g, &pack, &p, &x, None, &mut y, scratch.bytes(), &Serial);
            }
            checksum = y.iter().map(|&v| v as i64).sum();
        }
        KernelFn::F32Conv(f) => {
            let x: Vec<f32> = (0..g.input_len()).map(|i| wave(i, 256) as f32 / 64.0).collect();
            let w: Vec<f32> = (0..g.c_out * g.k()).map(|i| wave(i, 255) as f32 / 256.0).collect();
            let bias = vec![0.5; g.c_out];
            let p = F32ConvParams { weight: &w, bias: &bias, clamp: (0.0, f32::INFINITY) };
            let pack = (f.pack)(&g, &p);
            let mut scratch = Scratch::new(pack.scratch_bytes(1));
            let mut y = vec![0f32; g.output_len()];
            for _ in 0..iters {
                (f.run)(&g, &pack, &p, &x, None, &mut y, scratch.bytes(), &Serial);
            }
            checksum = y.iter().map(|&v| v as i64).sum();
        }
        _ => {}
    }
    println!("{} x{iters}: {} MACs per run, checksum {checksum}", k.name, g.macs());
}
