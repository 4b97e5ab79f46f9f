//! Convolution kernels from the registry on real ResNet layer shapes (models/shapes/*.txt), f32 and int8.
//! Throughput is reported as 2 * MACs operations per iteration.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use resedge::kernels::packed::{Scratch, Serial};
use resedge::kernels::registry::available;
use resedge::kernels::{ConvGeom, F32ConvParams, Isa, KernelFn, QConvParams, Requant};

/// Parses `name c_in h w c_out k stride pad` lines.
fn shapes() -> Vec<(String, ConvGeom)> {
    include_str!("../models/shapes/resnet_conv.txt")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let n = |i: usize| f[i].parse::<usize>().unwrap();
            let (c, h, w, oc, k, s, p) = (n(1), n(2), n(3), n(4), n(5), n(6), n(7));
            let geom = ConvGeom {
                n: 1,
                c_in: c,
                h_in: h,
                w_in: w,
                c_out: oc,
                h_out: (h + 2 * p - k) / s + 1,
                w_out: (w + 2 * p - k) / s + 1,
                kh: k,
                kw: k,
                stride_h: s,
                stride_w: s,
                pad_t: p,
                pad_l: p,
                dil_h: 1,
                dil_w: 1,
                groups: 1,
            };
            (f[0].to_string(), geom)
        })
        .collect()
}

fn conv(c: &mut Criterion) {
    let mut g = c.benchmark_group("conv");
    g.sample_size(10);
    for (layer, geom) in shapes() {
        g.throughput(Throughput::Elements(2 * geom.macs()));
        let x32 = vec![0.5f32; geom.input_len()];
        let w32 = vec![0.01f32; geom.c_out * geom.k()];
        let b32 = vec![0.0f32; geom.c_out];
        let mut y32 = vec![0.0f32; geom.output_len()];
        let x8 = vec![3i8; geom.input_len()];
        let w8 = vec![-5i8; geom.c_out * geom.k()];
        let b8 = vec![0i32; geom.c_out];
        let mut y8 = vec![0i8; geom.output_len()];
        let (mult, shift) = ([1 << 30], [40]);
        let fp = F32ConvParams { weight: &w32, bias: &b32, clamp: (0.0, f32::INFINITY) };
        let qp = QConvParams {
            x_zero_point: -128,
            weight: &w8,
            bias: &b8,
            requant: Requant { multiplier: &mult, shift: &shift, zero_point: 0, lo: -128, hi: 127 },
            residual: None,
        };
        // Every kernel this CPU runs (the scalar one is the baseline), single threaded. Packing happens once
        // outside the timed loop, as the planner does.
        for k in available(Isa::detect()) {
            match k.func {
                KernelFn::F32Conv(f) => {
                    let pack = (f.pack)(&geom, &fp);
                    let mut scratch = Scratch::new(pack.scratch_bytes(1));
                    g.bench_function(format!("{}/{layer}", k.name), |b| {
                        b.iter(|| (f.run)(&geom, &pack, &fp, &x32, None, &mut y32, scratch.bytes(), &Serial))
                    })
                }
                KernelFn::QConv(f) => {
                    let pack = (f.pack)(&geom, &qp);
                    let mut scratch = Scratch::new(pack.scratch_bytes(1));
                    g.bench_function(format!("{}/{layer}", k.name), |b| {
                        b.iter(|| (f.run)(&geom, &pack, &qp, &x8, None, &mut y8, scratch.bytes(), &Serial))
                    })
                }
                _ => continue,
            };
        }
    }
    g.finish();
}

criterion_group!(benches, conv);
criterion_main!(benches);
