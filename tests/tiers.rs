//! Every SIMD tier against the scalar reference: each convolution kernel of every tier this CPU runs (at
//! most `Isa::configured()`, so `RESEDGE_ISA=avx2 cargo test --test tiers` checks the tiers up to that one)
//! over a boundary matrix of geometries, on 1, 2 and 3 threads of the executor's pool (x86 and AArch64 alike:
//! kernels that do not split their work yet must still give the same bits on any pool); int8 must be
//! bit-exact, f32 within 1e-4 of the largest reference value. Then whole zoo models: int8 logits byte for
//! byte equal across tiers and thread counts.

use resedge::kernels::generic;
use resedge::kernels::packed::{Parallel, Serial};
use resedge::kernels::registry::{self, F32Conv, QConv};
use resedge::kernels::{ConvGeom, F32ConvParams, Isa, Kernel, KernelFn, QConvParams, Requant, ResidualRequant};
use resedge::plan::threads::Pool;
use resedge::plan::{Plan, PlanOptions};

mod common;
use common::Rng;

type Named<T> = Vec<(&'static str, T)>;

/// The SIMD kernels (every tier above scalar) of the tiers this run tests.
fn simd_kernels() -> impl Iterator<Item = &'static Kernel> {
    registry::available(Isa::configured()).filter(|k| k.isa != Isa::Scalar)
}

/// The convolution kernels under test, scalar excluded (it is the reference).
fn conv_kernels() -> (Named<F32Conv>, Named<QConv>) {
    let (mut f, mut q) = (Vec::new(), Vec::new());
    for k in simd_kernels() {
        match k.func {
            KernelFn::F32Conv(p) => f.push((k.name, p)),
            KernelFn::QConv(p) => q.push((k.name, p)),
            _ => {}
        }
    }
    (f, q)
}

#[allow(clippy::too_many_arguments)]
fn geom(
    n: usize,
    c: usize,
    hw: (usize, usize),
    oc: usize,
    k: (usize, usize),
    s: (usize, usize),
    d: usize,
    p: (usize, usize, usize, usize),
) -> ConvGeom {
    let (h, w) = hw;
    let out = |len: usize, k: usize, s: usize, p0: usize, p1: usize| (len + p0 + p1 - ((k - 1) * d + 1)) / s + 1;
    ConvGeom {
        n,
        c_in: c,
        h_in: h,
        w_in: w,
        c_out: oc,
        h_out: out(h, k.0, s.0, p.0, p.2),
        w_out: out(w, k.1, s.1, p.1, p.3),
        kh: k.0,
        kw: k.1,
        stride_h: s.0,
        stride_w: s.1,
        pad_t: p.0,
        pad_l: p.1,
        dil_h: d,
        dil_w: d,
        groups: 1,
    }
}

/// Sizes below, at and above the tiles (16/32 grid positions, 8 output channels), odd channel counts,
/// strides 1-3, dilation, asymmetric padding, the ResNet layer shapes (small images) and the largest K.
fn boundary_matrix() -> Vec<ConvGeom> {
    let mut v = vec![
        geom(1, 3, (17, 17), 8, (7, 7), (2, 2), 1, (3, 3, 3, 3)),
        geom(1, 16, (7, 7), 16, (3, 3), (1, 1), 1, (1, 1, 1, 1)),
        geom(2, 16, (8, 8), 32, (3, 3), (2, 2), 1, (1, 1, 1, 1)),
        geom(1, 64, (4, 4), 16, (1, 1), (1, 1), 1, (0, 0, 0, 0)),
        geom(1, 32, (7, 7), 64, (1, 1), (2, 2), 1, (0, 0, 0, 0)),
        geom(1, 512, (3, 3), 9, (3, 3), (1, 1), 1, (1, 1, 1, 1)),
        geom(1, 2048, (2, 2), 3, (1, 1), (1, 1), 1, (0, 0, 0, 0)),
        geom(1, 512, (1, 1), 17, (1, 1), (1, 1), 1, (0, 0, 0, 0)),
        geom(1, 5, (9, 11), 7, (3, 5), (1, 2), 2, (2, 0, 1, 3)),
        geom(1, 1, (1, 1), 1, (1, 1), (1, 1), 1, (0, 0, 0, 0)),
        geom(1, 4, (5, 5), 1, (5, 5), (3, 3), 1, (2, 2, 2, 2)),
        // Outputs 7, 8, 14 and 28 wide (the row kernels): odd row counts, channels past a 32 block, batch 2.
        geom(1, 5, (7, 7), 17, (3, 3), (1, 1), 1, (1, 1, 1, 1)),
        geom(2, 8, (28, 28), 40, (3, 3), (2, 2), 1, (1, 1, 1, 1)),
        geom(1, 12, (28, 30), 33, (3, 3), (1, 1), 1, (1, 1, 0, 0)),
        geom(1, 16, (13, 13), 64, (1, 1), (2, 2), 1, (0, 0, 0, 0)),
        geom(1, 32, (9, 9), 8, (3, 3), (1, 1), 1, (0, 0, 0, 0)),
        geom(2, 16, (8, 9), 40, (3, 3), (1, 1), 1, (1, 1, 1, 0)),
        // 3x3 stride 1 with >= 28x28 outputs (Winograd on both tiers): odd output sizes (one-column and one-row
        // tiles), channel blocks past 8 and 32, asymmetric and no padding, batch 2, the largest channels.
        geom(1, 8, (28, 28), 17, (3, 3), (1, 1), 1, (1, 1, 1, 1)),
        geom(2, 13, (29, 31), 33, (3, 3), (1, 1), 1, (1, 1, 1, 1)),
        geom(1, 64, (30, 27), 40, (3, 3), (1, 1), 1, (0, 1, 2, 2)),
        geom(1, 9, (33, 33), 8, (3, 3), (1, 1), 1, (0, 0, 0, 0)),
        geom(1, 256, (28, 28), 70, (3, 3), (1, 1), 1, (1, 1, 1, 1)),
        // AVX2 takes Winograd from 14x14 outputs: at the threshold (channel blocks past 24), and just below.
        geom(1, 24, (14, 14), 25, (3, 3), (1, 1), 1, (1, 1, 1, 1)),
        geom(1, 9, (15, 17), 8, (3, 3), (1, 1), 1, (0, 0, 0, 0)),
        // Tile rows that are whole runs of 8 (row runs): 16x16 outputs (Winograd on AVX2, and AVX-512 on Zen 4)
        // and 48x48 ones, whose 24-wide tile rows put runs of two rows into one 16-lane vector.
        geom(2, 12, (16, 16), 33, (3, 3), (1, 1), 1, (1, 1, 1, 1)),
        geom(1, 8, (48, 48), 9, (3, 3), (1, 1), 1, (1, 1, 1, 1)),
        // One column wide: a tile row starts every other lane, and row starts precede the chunk's first lane.
        geom(1, 8, (790, 1), 9, (3, 3), (1, 1), 1, (1, 1, 1, 1)),
        // Interleaved int8 planes (channels in 4s) tiled as whole 16-output row pieces (outputs 16k wide): 32
        // and 16 wide (ResNet-20's first stage and its stride-2 layer), an odd piece count (a filler half);
        // 24 and 40 wide keep the grid.
        geom(1, 16, (32, 32), 16, (3, 3), (1, 1), 1, (1, 1, 1, 1)),
        geom(2, 16, (32, 32), 16, (3, 3), (2, 2), 1, (1, 1, 1, 1)),
        geom(1, 8, (5, 16), 8, (3, 3), (1, 1), 1, (1, 1, 1, 1)),
        geom(1, 8, (24, 24), 9, (3, 3), (1, 1), 1, (1, 1, 1, 1)),
        geom(1, 4, (6, 40), 16, (3, 3), (1, 1), 1, (1, 1, 1, 1)),
        // The same for packed panels (channel counts not in 4s): a 7x7 stride-2 stem, ResNet-20's stem, a filler.
        geom(1, 3, (32, 32), 16, (7, 7), (2, 2), 1, (3, 3, 3, 3)),
        geom(1, 3, (32, 32), 16, (3, 3), (1, 1), 1, (1, 1, 1, 1)),
        geom(2, 5, (3, 16), 8, (3, 3), (1, 1), 1, (1, 1, 1, 1)),
        // int8 Winograd (VNNI, channels in 32s), each worker filling the rows of its own tile groups: two
        // groups of 8 (ResNet-20's 16x16), one group of two and of three channel blocks (8x8: whole-plane
        // stores, one with a batch), five groups of 7 split
        // unevenly over 2 and 3 workers, partial tiles and a batch.
        geom(1, 32, (16, 16), 32, (3, 3), (1, 1), 1, (1, 1, 1, 1)),
        geom(1, 64, (8, 8), 64, (3, 3), (1, 1), 1, (1, 1, 1, 1)),
        geom(2, 32, (8, 8), 96, (3, 3), (1, 1), 1, (1, 1, 1, 1)),
        geom(1, 32, (28, 20), 32, (3, 3), (1, 1), 1, (1, 1, 1, 1)),
        geom(2, 32, (13, 11), 64, (3, 3), (1, 1), 1, (1, 1, 1, 1)),
        // One task set of three tile groups (weights past 1 MB) and eight channel blocks: with threads the
        // workers build its V together, split by channels (ResNet-18's 14x14x256 layers).
        geom(1, 128, (11, 13), 256, (3, 3), (1, 1), 1, (1, 1, 1, 1)),
        // int8 Winograd with tiles in the lanes (VBMI, input channels in pairs below 32): blocks of 4, 2 and 1
        // tile rows (16, 32 and 64 wide), blocks split between workers, output channel groups of 8, a batch.
        geom(2, 16, (16, 16), 8, (3, 3), (1, 1), 1, (1, 1, 1, 1)),
        geom(1, 2, (16, 32), 24, (3, 3), (1, 1), 1, (1, 1, 1, 1)),
        geom(1, 6, (12, 64), 16, (3, 3), (1, 1), 1, (1, 1, 1, 1)),
        geom(1, 30, (48, 16), 8, (3, 3), (1, 1), 1, (1, 1, 1, 1)),
        // int8 3x3 stride 2 with positions in the lanes (VBMI, outputs 8 or 16 wide): ResNet-20's two layers,
        // a vector of two output rows (8 wide), input channels past one group of 4, a batch.
        geom(1, 16, (32, 32), 32, (3, 3), (2, 2), 1, (1, 1, 1, 1)),
        geom(1, 32, (16, 16), 64, (3, 3), (2, 2), 1, (1, 1, 1, 1)),
        geom(2, 8, (8, 16), 16, (3, 3), (2, 2), 1, (1, 1, 1, 1)),
        geom(1, 4, (16, 32), 48, (3, 3), (2, 2), 1, (1, 1, 0, 0)),
        // f32 Winograd with tiles in the lanes (AVX-512, outputs 8, 16 or 32 wide in blocks of 8, 4 or 2 rows;
        // also the 3x3 "same" cases of those widths above, the stem's 3 channels included): two blocks, odd
        // input channels, a partial group of 16 output channels, split over 2 and 3 workers mid-block.
        geom(1, 5, (16, 8), 17, (3, 3), (1, 1), 1, (1, 1, 1, 1)),
        // ... and 7x7 outputs (as 8x8, column and row 7 outside) with weights past 256 x 256 channels, a batch.
        geom(2, 257, (7, 7), 260, (3, 3), (1, 1), 1, (1, 1, 1, 1)),
    ];
    let mut rng = Rng::new(0x7135);
    for _ in 0..40 {
        let k = *rng.pick(&[1usize, 2, 3, 5, 7]);
        let s = *rng.pick(&[1usize, 1, 2, 3]);
        let d = if rng.chance(0.2) { 2 } else { 1 };
        let h = rng.below(20) + (k - 1) * d + 1;
        let w = rng.below(40) + (k - 1) * d + 1;
        let p = (rng.below(k), rng.below(k), rng.below(k), rng.below(k));
        let c = *rng.pick(&[1usize, 2, 3, 4, 5, 8, 13, 16, 33]);
        let oc = *rng.pick(&[1usize, 7, 8, 9, 15, 16, 17, 24]);
        v.push(geom(1 + rng.below(2), c, (h, w), oc, (k, k), (s, s), d, p));
    }
    v
}

fn pools() -> Vec<Box<dyn Parallel>> {
    vec![Box::new(Serial), Box::new(Pool::new(2)), Box::new(Pool::new(3))]
}

#[test]
fn f32_blocked_conv_matches_scalar_on_every_tier_and_thread_count() {
    let (kernels, _) = conv_kernels();
    let pools = pools();
    let mut rng = Rng::new(11);
    for g in boundary_matrix() {
        let x = rng.f32s(g.input_len(), -1.0, 1.0);
        let w = rng.f32s(g.c_out * g.k(), -1.0, 1.0);
        let bias = rng.f32s(g.c_out, -1.0, 1.0);
        let res = rng.f32s(g.output_len(), -2.0, 2.0);
        for (residual, clamp) in [(false, (f32::NEG_INFINITY, f32::INFINITY)), (true, (0.0, 1.5))] {
            let r = residual.then_some(&res[..]);
            let mut want = vec![0.0; g.output_len()];
            generic::f32_conv2d_scalar(&g, &x, &w, &bias, r, clamp, &mut want);
            let tol = 1e-4 * want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let p = F32ConvParams { weight: &w, bias: &bias, clamp };
            for (name, k) in &kernels {
                assert!((k.supports)(&g));
                for par in &pools {
                    let mut got = vec![f32::NAN; g.output_len()];
                    k.call_on(par.as_ref(), &g, &p, &x, r, &mut got);
                    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                        assert!((a - b).abs() <= tol, "{name} {g:?} threads {} out[{i}]: {a} vs {b}", par.workers());
                    }
                }
            }
        }
    }
}

#[test]
fn qs8_blocked_conv_is_bit_exact_on_every_tier_and_thread_count() {
    let (_, kernels) = conv_kernels();
    let pools = pools();
    let mut rng = Rng::new(12);
    for (case, g) in boundary_matrix().into_iter().enumerate() {
        let k = g.k() as i64;
        for trial in 0..4 {
            // Trial 0: random; 1: every product at its extreme (accumulator limits); 2: narrow random;
            // 3: huge multipliers, so both requantized terms of the residual sum saturate i32.
            let (x, w, x_zp) = match trial {
                1 => {
                    let x = vec![-128i8; g.input_len()];
                    let w: Vec<i8> = (0..g.c_out * k as usize).map(|i| [127, -127][(i / k as usize) % 2]).collect();
                    (x, w, 127)
                }
                _ => (rng.i8s(g.input_len(), -128, 127), rng.i8s(g.c_out * k as usize, -127, 127), rng.i32(-128, 127)),
            };
            let bias: Vec<i32> = (0..g.c_out).map(|_| rng.i32(-(1 << 20), 1 << 20)).collect();
            // Multipliers that map the accumulator range to about ±300 (so the clamp is hit), per channel.
            let (mult, shift): (Vec<i32>, Vec<i32>) = (0..g.c_out)
                .map(|_| {
                    let real = match trial {
                        3 => 2f64.powf(rng.uniform(5.0, 25.0)),
                        _ => {
                            300.0 / (k as f64 * 255.0 * 127.0) * rng.uniform(0.05, if trial == 2 { 50.0 } else { 1.0 })
                        }
                    };
                    resedge::quant::quantize_multiplier(real).unwrap()
                })
                .unzip();
            let zp = rng.i32(-128, 127);
            let (lo, hi) = if rng.chance(0.5) { (-128, 127) } else { (zp, 127) };
            let requant = Requant { multiplier: &mult, shift: &shift, zero_point: zp, lo, hi };
            let res = rng.i8s(g.output_len(), -128, 127);
            for residual in [false, true] {
                let rr = residual.then(|| {
                    let real = if trial == 3 { 2f64.powf(rng.uniform(10.0, 28.0)) } else { rng.uniform(0.1, 3.0) };
                    let (m, s) = resedge::quant::quantize_multiplier(real).unwrap();
                    ResidualRequant { zero_point: rng.i32(-128, 127), multiplier: m, shift: s }
                });
                let p = QConvParams { x_zero_point: x_zp, weight: &w, bias: &bias, requant, residual: rr };
                let r = residual.then_some(&res[..]);
                let mut want = vec![0i8; g.output_len()];
                generic::qs8_conv2d_scalar(&g, &p, &x, r, &mut want);
                for (name, kern) in &kernels {
                    for par in &pools {
                        let mut got = vec![0x55i8; g.output_len()];
                        kern.call_on(par.as_ref(), &g, &p, &x, r, &mut got);
                        if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
                            panic!(
                                "{name} case {case} trial {trial} residual {residual} threads {} {g:?}: out[{i}] = {} want {}",
                                par.workers(),
                                got[i],
                                want[i]
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn maxpool_matches_scalar_on_every_tier() {
    let mut rng = Rng::new(13);
    let mut geoms = vec![
        geom(1, 4, (112, 112), 4, (3, 3), (2, 2), 1, (1, 1, 1, 1)),
        geom(1, 2, (3, 700), 2, (3, 3), (2, 2), 1, (1, 1, 1, 1)),
    ];
    for _ in 0..30 {
        let k = rng.int(1, 5) as usize;
        let s = rng.int(1, 3) as usize;
        let p = rng.below(k / 2 + 1);
        let c = rng.int(1, 5) as usize;
        let d = 1 + rng.below(2);
        let reach = (k - 1) * d + 1;
        geoms.push(geom(
            1 + rng.below(2),
            c,
            (reach + rng.below(20), reach + rng.below(40)),
            c,
            (k, k),
            (s, s),
            d,
            (p, p, p, p),
        ));
    }
    for (i, g) in geoms.into_iter().enumerate() {
        let mut xf = rng.f32s(g.input_len(), -10.0, 10.0);
        if i % 3 == 0 {
            // NaNs never win a window (the reference compares `v > best`).
            for _ in 0..g.input_len() / 8 {
                xf[rng.below(g.input_len())] = f32::NAN;
            }
        }
        let xq = rng.i8s(g.input_len(), -128, 127);
        let (mut wf, mut wq) = (vec![0.0; g.output_len()], vec![0i8; g.output_len()]);
        generic::f32_maxpool_scalar(&g, &xf, &mut wf);
        generic::qs8_maxpool_scalar(&g, &xq, &mut wq);
        for k in simd_kernels() {
            let (mut gf, mut gq) = (vec![f32::NAN; g.output_len()], vec![0x55i8; g.output_len()]);
            match k.func {
                KernelFn::F32MaxPool(f) => {
                    f(&g, &xf, &mut gf);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&gf), bits(&wf), "{} {g:?}", k.name);
                }
                KernelFn::QMaxPool(f) => {
                    f(&g, &xq, &mut gq);
                    assert_eq!(gq, wq, "{} {g:?}", k.name);
                }
                _ => {}
            }
        }
    }
}

#[test]
fn quantize_is_bit_exact_on_every_tier() {
    let mut rng = Rng::new(14);
    let mut x: Vec<f32> = vec![0.25, -0.25, 0.05, 0.65, 2.5, -2.5, 0.49999997, -0.49999997, f32::NAN, 1e30, -1e30];
    x.extend([f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 8388609.0, -8388609.5, 12.5, -12.5]);
    x.extend(rng.f32s(1000, -40.0, 40.0));
    x.extend((0..200).map(|i| (i as f32 - 100.0) * 0.05));
    for (scale, zp, lo, hi) in
        [(0.1f32, -10, -128, 127), (0.05, 0, 0, 127), (1.0, 127, -128, 127), (0.013, -128, -100, 90)]
    {
        for len in [0, 1, 15, 16, 17, x.len()] {
            let mut want = vec![0i8; len];
            generic::quantize_scalar(scale, zp, lo, hi, &x[..len], &mut want);
            for k in simd_kernels() {
                if let KernelFn::Quantize(f) = k.func {
                    let mut got = vec![0x55i8; len];
                    f(scale, zp, lo, hi, &x[..len], &mut got);
                    assert_eq!(got, want, "{} scale {scale} zp {zp} len {len}", k.name);
                }
            }
        }
    }
}

#[test]
fn qs8_add_is_bit_exact_on_every_tier() {
    use resedge::kernels::AddParams;
    let mut rng = Rng::new(15);
    // Every (a, b) pair once, then zero points, multipliers (tiny to huge) and clamps at random.
    let (a, b): (Vec<i8>, Vec<i8>) = (0..65536).map(|i| ((i & 255) as u8 as i8, (i >> 8) as u8 as i8)).unzip();
    for trial in 0..40 {
        let pair = |rng: &mut Rng| {
            let real = if trial % 4 == 0 { 2f64.powf(rng.uniform(-30.0, 29.0)) } else { rng.uniform(0.05, 2.0) };
            resedge::quant::quantize_multiplier(real).unwrap()
        };
        let ((am, ash), (bm, bsh)) = (pair(&mut rng), pair(&mut rng));
        let zp = rng.i32(-128, 127);
        let (lo, hi) = if trial % 2 == 0 { (-128, 127) } else { (zp, 127) };
        let p = AddParams {
            a_zero_point: rng.i32(-128, 127),
            a_multiplier: am,
            a_shift: ash,
            b_zero_point: rng.i32(-128, 127),
            b_multiplier: bm,
            b_shift: bsh,
            zero_point: zp,
            lo,
            hi,
        };
        let len = if trial < 3 { [0, 1, 17][trial] } else { a.len() };
        let mut want = vec![0i8; len];
        generic::qs8_add_scalar(&p, &a[..len], &b[..len], &mut want);
        for k in simd_kernels() {
            if let KernelFn::QAdd(f) = k.func {
                let mut got = vec![0x55i8; len];
                f(&p, &a[..len], &b[..len], &mut got);
                assert_eq!(got, want, "{} {p:?}", k.name);
            }
        }
    }
}

/// Whole networks: int8 logits are identical bytes on every tier and thread count; f32 logits agree to 1e-4.
#[test]
fn model_logits_agree_across_tiers_and_threads() {
    let tier = Isa::configured();
    for (arch, precision) in [("resnet20", "int8"), ("resnet20", "f32"), ("resnet18", "int8")] {
        let a = resedge::zoo::arch(arch).unwrap();
        let model = match precision {
            "int8" => resedge::zoo::build_int8(&a, 7, resedge::quant::ActivationScheme::AsymmetricU8).unwrap(),
            _ => resedge::zoo::build(&a, 7).unwrap(),
        };
        let input = resedge::zoo::random_input(a.input().iter().product(), 3);
        let mut reference: Option<Vec<u8>> = None;
        for &isa in Isa::ALL.iter().filter(|&&i| tier.allows(i)) {
            for threads in [1, 2] {
                if isa == Isa::Scalar && (threads > 1 || arch == "resnet18") {
                    continue; // the scalar reference is single threaded and slow on ResNet-18
                }
                let plan = Plan::new(&model, &PlanOptions { max_isa: isa, threads, ..Default::default() }).unwrap();
                let mut exec = plan.executor();
                let out = exec.run(&input).unwrap().to_vec();
                let bytes: Vec<u8> = out.iter().flat_map(|v| v.to_le_bytes()).collect();
                match &reference {
                    None => reference = Some(bytes),
                    Some(r) if precision == "int8" => {
                        assert_eq!(
                            r,
                            &bytes,
                            "{arch} {precision}: {} x{threads} differs from the first tier",
                            isa.name()
                        )
                    }
                    Some(r) => {
                        let r: Vec<f32> = r.chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
                        let tol = 1e-4 * r.iter().fold(1.0f32, |m, v| m.max(v.abs()));
                        for (a, b) in out.iter().zip(&r) {
                            assert!((a - b).abs() <= tol, "{arch} f32 {} x{threads}: {a} vs {b}", isa.name());
                        }
                    }
                }
            }
        }
    }
}
