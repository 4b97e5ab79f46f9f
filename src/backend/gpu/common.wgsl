// What every ResEdge shader module shares: bindings, argument word indices, index helpers and the f32
// convolution loop. The host prepends this file to kernels.wgsl and to conv_f16.wgsl (which needs `enable f16;`
// ahead of it, so adapters without shader-f16 never compile it); each module defines the loop's `product`.
//
// Bindings: `arena` (activations), `params` (weights, biases, multipliers, shifts of every offloaded step, as
// words) and `args`, the step's 64 argument words (indices named below, filled by gpu/mod.rs `Args`).
// Dispatch: a 2-D grid of 64-wide workgroups; invocation `index()` handles one f32 element or one int8 word.

struct Args {
    a: array<vec4<u32>, 16>,
}

@group(0) @binding(0) var<storage, read_write> arena: array<u32>;
@group(0) @binding(1) var<storage, read> params: array<u32>;
@group(0) @binding(2) var<uniform> args: Args;

const TOTAL: u32 = 0u;   // invocations that do work (f32 elements, or int8 words)
const X: u32 = 1u;       // word offsets in `arena`: input, output, second input (residual / Add's b)
const Y: u32 = 2u;
const R: u32 = 3u;
const W: u32 = 4u;       // word offsets in `params`: weights, bias, multipliers, shifts
const B: u32 = 5u;
const M: u32 = 6u;
const S: u32 = 7u;
const N: u32 = 8u;       // geometry (ConvGeom); pooling uses C_IN for channels, shortcut H_IN/W_IN/C_OUT/H_OUT/W_OUT
const C_IN: u32 = 9u;
const H_IN: u32 = 10u;
const W_IN: u32 = 11u;
const C_OUT: u32 = 12u;
const H_OUT: u32 = 13u;
const W_OUT: u32 = 14u;
const KH: u32 = 15u;
const KW: u32 = 16u;
const SH: u32 = 17u;
const SW: u32 = 18u;
const PT: u32 = 19u;
const PL: u32 = 20u;
const DH: u32 = 21u;
const DW: u32 = 22u;
const GROUPS: u32 = 23u;
const FLAGS: u32 = 24u;  // bit 0: residual input, bit 1: per-channel multipliers, bit 2: count_include_pad
const X_ZP: u32 = 25u;   // int8 zero points / bounds (i32 bits); f32 clamps use LO/HI as f32 bits
const Y_ZP: u32 = 26u;
const LO: u32 = 27u;
const HI: u32 = 28u;
const R_ZP: u32 = 29u;   // residual / Add's b: zero point, multiplier, shift
const R_M: u32 = 30u;
const R_S: u32 = 31u;
const KWORDS: u32 = 32u; // int8 conv: packed weight words per tap (ceil(in channels per group / 4))
const ZP4: u32 = 33u;    // int8 conv: the input zero point in all four bytes (padding taps)
const NUMEL: u32 = 34u;  // elements of the output (int8 word kernels)
const A_M: u32 = 35u;    // Add's a: multiplier, shift (its zero point is X_ZP)
const A_S: u32 = 36u;
const STRIDE: u32 = 37u; // shortcut
const PAD_B: u32 = 38u;
const HW: u32 = 39u;     // global average pool

fn arg(i: u32) -> u32 {
    return args.a[i / 4u][i % 4u];
}
fn argi(i: u32) -> i32 {
    return bitcast<i32>(arg(i));
}
fn argf(i: u32) -> f32 {
    return bitcast<f32>(arg(i));
}

fn index(id: vec3<u32>, nw: vec3<u32>) -> u32 {
    return id.x + id.y * nw.x * 64u;
}

fn ldf(base: u32, i: u32) -> f32 {
    return bitcast<f32>(arena[base + i]);
}

struct Pos {
    n: u32,
    c: u32,
    y: u32,
    x: u32,
}

// NCHW coordinates of flat index `i` in a tensor of `c` channels and h x w pixels.
fn pos(i: u32, c: u32, h: u32, w: u32) -> Pos {
    let x = i % w;
    let t = i / w;
    let y = t % h;
    let t2 = t / h;
    return Pos(t2 / c, t2 % c, y, x);
}

// Input coordinate of output `o` at kernel tap `k` along one axis, or -1 in the padding.
fn tap(o: u32, k: u32, stride: u32, dil: u32, pad: u32, len: u32) -> i32 {
    let v = i32(o * stride + k * dil) - i32(pad);
    return select(-1, v, v >= 0 && v < i32(len));
}

// Convolution / linear for output element `i` (NCHW, f32 in the arena): bias + sum of `product(x, j)` over the
// taps (j indexes the step's OIHW weights), + residual, clamped. Same order as the scalar reference: bias,
// then input channel, kernel row, kernel column.
fn conv(i: u32) {
    if (i >= arg(TOTAL)) {
        return;
    }
    let c_in = arg(C_IN);
    let h_in = arg(H_IN);
    let w_in = arg(W_IN);
    let kh = arg(KH);
    let kw = arg(KW);
    let icg = c_in / arg(GROUPS);
    let p = pos(i, arg(C_OUT), arg(H_OUT), arg(W_OUT));
    let grp = p.c / (arg(C_OUT) / arg(GROUPS));
    let x0 = arg(X);
    let w0 = p.c * icg * kh * kw;
    var acc = bitcast<f32>(params[arg(B) + p.c]);
    for (var ic = 0u; ic < icg; ic++) {
        let xc = x0 + (p.n * c_in + grp * icg + ic) * h_in * w_in;
        for (var ky = 0u; ky < kh; ky++) {
            let iy = tap(p.y, ky, arg(SH), arg(DH), arg(PT), h_in);
            if (iy < 0) {
                continue;
            }
            for (var kx = 0u; kx < kw; kx++) {
                let ix = tap(p.x, kx, arg(SW), arg(DW), arg(PL), w_in);
                if (ix < 0) {
                    continue;
                }
                acc += product(bitcast<f32>(arena[xc + u32(iy) * w_in + u32(ix)]), w0 + (ic * kh + ky) * kw + kx);
            }
        }
    }
    if ((arg(FLAGS) & 1u) != 0u) {
        acc += ldf(arg(R), i);
    }
    arena[arg(Y) + i] = bitcast<u32>(min(max(acc, argf(LO)), argf(HI)));
}
