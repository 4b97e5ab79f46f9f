// ResEdge GPU kernels: one entry point per op family, f32 and int8, NCHW, over one storage buffer that mirrors
// the CPU arena (same byte offsets; int8 values packed four to a u32 word, little-endian, in the internal int8
// domain). Every int8 entry point implements docs/int8-spec.md to the bit; the 64-bit requantization product is
// built from 16-bit limbs because WGSL has no 64-bit integers (spec section 11.5).
//
// The host prepends common.wgsl (bindings, argument indices, helpers, the f32 convolution loop) and defines
// `dot4` below: `dot4I8Packed` where the WGSL language extension exists, else the unpacked loop.

// Byte `i` of the int8 value starting at word `base`, sign-extended.
fn ld8(base: u32, i: u32) -> i32 {
    return extractBits(bitcast<i32>(arena[base + (i >> 2u)]), (i & 3u) * 8u, 8u);
}

const I32_MAX: i32 = 2147483647;
const I32_MIN: i32 = -2147483647 - 1;

// i32 addition that saturates instead of wrapping (Rust `saturating_add`).
fn sat_add(a: i32, b: i32) -> i32 {
    let s = a + b;
    if (a >= 0 && b >= 0 && s < 0) {
        return I32_MAX;
    }
    if (a < 0 && b < 0 && s >= 0) {
        return I32_MIN;
    }
    return s;
}

// Full 64-bit product of two u32 as (lo, hi), from 16-bit limbs (each partial product fits a u32).
fn mul_wide(a: u32, b: u32) -> vec2<u32> {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let mid = p01 + p10;
    let mid_carry = select(0u, 0x10000u, mid < p01);
    let lo = p00 + (mid << 16u);
    let lo_carry = select(0u, 1u, lo < p00);
    return vec2<u32>(lo, a1 * b1 + (mid >> 16u) + mid_carry + lo_carry);
}

// Spec 3.1: clamp_i32((acc * m + 2^(shift-1)) >> shift) in exact 64-bit arithmetic; m > 0, shift in [1, 62].
fn requantize(acc: i32, m: i32, shift: u32) -> i32 {
    let neg = acc < 0;
    let ua = bitcast<u32>(acc);
    // |acc| as u32 (exact for i32::MIN too), times m, then the sign back in two's complement.
    var p = mul_wide(select(ua, 0u - ua, neg), bitcast<u32>(m));
    if (neg) {
        let lo = ~p.x + 1u;
        p = vec2<u32>(lo, ~p.y + select(0u, 1u, lo == 0u));
    }
    var lo = p.x;
    var hi = p.y;
    if (shift <= 32u) {
        let sum = lo + (1u << (shift - 1u));
        hi = hi + select(0u, 1u, sum < lo);
        lo = sum;
    } else {
        hi = hi + (1u << (shift - 33u));
    }
    var r_lo: u32;
    var r_hi: i32;
    if (shift < 32u) {
        r_lo = (lo >> shift) | (hi << (32u - shift));
        r_hi = bitcast<i32>(hi) >> shift;
    } else {
        r_lo = bitcast<u32>(bitcast<i32>(hi) >> (shift - 32u));
        r_hi = bitcast<i32>(hi) >> 31u;
    }
    let r = bitcast<i32>(r_lo);
    if (r_hi == (r >> 31u)) {
        return r;
    }
    return select(I32_MIN, I32_MAX, r_hi >= 0);
}

// Spec 3.2: add the output zero point with saturation, clamp to [lo, hi].
fn saturate(v: i32, zp: i32, lo: i32, hi: i32) -> i32 {
    return clamp(sat_add(v, zp), lo, hi);
}

fn put8(word: u32, e: u32, v: i32) -> u32 {
    return word | ((bitcast<u32>(v) & 0xffu) << (8u * e));
}

DOT4_DEFINITION
// x times weight element `j` of the step, in f32 (conv_f16.wgsl defines the f16 variant).
fn product(x: f32, j: u32) -> f32 {
    return x * bitcast<f32>(params[arg(W) + j]);
}

@compute @workgroup_size(64)
fn conv_f32(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    conv(index(id, nw));
}

// int8 convolution (spec 4 and 7.1). Weights are packed [oc][ky][kx][KWORDS] with four input channels per word
// (missing channels are 0). With raw int8 x, sum (x - zp) * w = sum x * w - zp * sum w: the host folds
// -zp * sum w into the bias, and taps in the padding read zp in every byte, so they contribute exactly 0.
@compute @workgroup_size(64)
fn conv_q8(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let wi = index(id, nw);
    if (wi >= arg(TOTAL)) {
        return;
    }
    let c_in = arg(C_IN);
    let h_in = arg(H_IN);
    let w_in = arg(W_IN);
    let kh = arg(KH);
    let kw = arg(KW);
    let kwords = arg(KWORDS);
    let icg = c_in / arg(GROUPS);
    let flags = arg(FLAGS);
    let x0 = arg(X);
    var word = 0u;
    for (var e = 0u; e < 4u; e++) {
        let i = wi * 4u + e;
        if (i >= arg(NUMEL)) {
            break;
        }
        let p = pos(i, arg(C_OUT), arg(H_OUT), arg(W_OUT));
        let grp = p.c / (arg(C_OUT) / arg(GROUPS));
        let w0 = arg(W) + p.c * kh * kw * kwords;
        let xn = (p.n * c_in + grp * icg) * h_in * w_in;
        var acc = bitcast<i32>(params[arg(B) + p.c]);
        for (var ky = 0u; ky < kh; ky++) {
            let iy = tap(p.y, ky, arg(SH), arg(DH), arg(PT), h_in);
            for (var kx = 0u; kx < kw; kx++) {
                let ix = tap(p.x, kx, arg(SW), arg(DW), arg(PL), w_in);
                let wt = w0 + (ky * kw + kx) * kwords;
                if (iy < 0 || ix < 0) {
                    for (var g = 0u; g < kwords; g++) {
                        acc += dot4(arg(ZP4), params[wt + g]);
                    }
                    continue;
                }
                let xs = xn + u32(iy) * w_in + u32(ix);
                for (var g = 0u; g < kwords; g++) {
                    var xp = 0u;
                    for (var k = 0u; k < 4u; k++) {
                        let c = g * 4u + k;
                        if (c < icg) {
                            xp = put8(xp, k, ld8(x0, xs + c * h_in * w_in));
                        }
                    }
                    acc += dot4(xp, params[wt + g]);
                }
            }
        }
        let ch = select(0u, p.c, (flags & 2u) != 0u);
        var v = requantize(acc, bitcast<i32>(params[arg(M) + ch]), params[arg(S) + ch]);
        if ((flags & 1u) != 0u) {
            v = sat_add(v, requantize(ld8(arg(R), i) - argi(R_ZP), argi(R_M), arg(R_S)));
        }
        word = put8(word, e, saturate(v, argi(Y_ZP), argi(LO), argi(HI)));
    }
    arena[arg(Y) + wi] = word;
}

@compute @workgroup_size(64)
fn maxpool_f32(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = index(id, nw);
    if (i >= arg(TOTAL)) {
        return;
    }
    let p = pos(i, arg(C_IN), arg(H_OUT), arg(W_OUT));
    let xc = arg(X) + (p.n * arg(C_IN) + p.c) * arg(H_IN) * arg(W_IN);
    var best = bitcast<f32>(0xff800000u);
    for (var ky = 0u; ky < arg(KH); ky++) {
        let iy = tap(p.y, ky, arg(SH), 1u, arg(PT), arg(H_IN));
        for (var kx = 0u; kx < arg(KW); kx++) {
            let ix = tap(p.x, kx, arg(SW), 1u, arg(PL), arg(W_IN));
            if (iy >= 0 && ix >= 0) {
                let v = bitcast<f32>(arena[xc + u32(iy) * arg(W_IN) + u32(ix)]);
                if (v > best) {
                    best = v;
                }
            }
        }
    }
    arena[arg(Y) + i] = bitcast<u32>(best);
}

@compute @workgroup_size(64)
fn avgpool_f32(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = index(id, nw);
    if (i >= arg(TOTAL)) {
        return;
    }
    let p = pos(i, arg(C_IN), arg(H_OUT), arg(W_OUT));
    let xc = arg(X) + (p.n * arg(C_IN) + p.c) * arg(H_IN) * arg(W_IN);
    var sum = 0.0;
    var count = 0u;
    for (var ky = 0u; ky < arg(KH); ky++) {
        let iy = tap(p.y, ky, arg(SH), 1u, arg(PT), arg(H_IN));
        for (var kx = 0u; kx < arg(KW); kx++) {
            let ix = tap(p.x, kx, arg(SW), 1u, arg(PL), arg(W_IN));
            if (iy >= 0 && ix >= 0) {
                sum += bitcast<f32>(arena[xc + u32(iy) * arg(W_IN) + u32(ix)]);
                count++;
            }
        }
    }
    if ((arg(FLAGS) & 4u) != 0u) {
        count = arg(KH) * arg(KW);
    }
    arena[arg(Y) + i] = bitcast<u32>(sum / f32(max(count, 1u)));
}

// int8 max and average pooling (spec 7.3, 7.4), four outputs per invocation.
@compute @workgroup_size(64)
fn pool_q8(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let wi = index(id, nw);
    if (wi >= arg(TOTAL)) {
        return;
    }
    let is_max = (arg(FLAGS) & 8u) != 0u;
    var word = 0u;
    for (var e = 0u; e < 4u; e++) {
        let i = wi * 4u + e;
        if (i >= arg(NUMEL)) {
            break;
        }
        let p = pos(i, arg(C_IN), arg(H_OUT), arg(W_OUT));
        let xc = (p.n * arg(C_IN) + p.c) * arg(H_IN) * arg(W_IN);
        var best = -128;
        var sum = 0;
        for (var ky = 0u; ky < arg(KH); ky++) {
            let iy = tap(p.y, ky, arg(SH), 1u, arg(PT), arg(H_IN));
            for (var kx = 0u; kx < arg(KW); kx++) {
                let ix = tap(p.x, kx, arg(SW), 1u, arg(PL), arg(W_IN));
                if (iy >= 0 && ix >= 0) {
                    let v = ld8(arg(X), xc + u32(iy) * arg(W_IN) + u32(ix));
                    best = max(best, v);
                    sum += v - argi(X_ZP);
                }
            }
        }
        if (is_max) {
            word = put8(word, e, best);
        } else {
            let v = requantize(sum, bitcast<i32>(params[arg(M)]), params[arg(S)]);
            word = put8(word, e, saturate(v, argi(Y_ZP), argi(LO), argi(HI)));
        }
    }
    arena[arg(Y) + wi] = word;
}

@compute @workgroup_size(64)
fn gap_f32(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = index(id, nw);
    if (i >= arg(TOTAL)) {
        return;
    }
    let hw = arg(HW);
    let x0 = arg(X) + i * hw;
    var sum = 0.0;
    for (var k = 0u; k < hw; k++) {
        sum += bitcast<f32>(arena[x0 + k]);
    }
    arena[arg(Y) + i] = bitcast<u32>(sum / f32(hw));
}

@compute @workgroup_size(64)
fn gap_q8(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let wi = index(id, nw);
    if (wi >= arg(TOTAL)) {
        return;
    }
    let hw = arg(HW);
    var word = 0u;
    for (var e = 0u; e < 4u; e++) {
        let i = wi * 4u + e;
        if (i >= arg(NUMEL)) {
            break;
        }
        var sum = 0;
        for (var k = 0u; k < hw; k++) {
            sum += ld8(arg(X), i * hw + k) - argi(X_ZP);
        }
        let v = requantize(sum, bitcast<i32>(params[arg(M)]), params[arg(S)]);
        word = put8(word, e, saturate(v, argi(Y_ZP), argi(LO), argi(HI)));
    }
    arena[arg(Y) + wi] = word;
}

@compute @workgroup_size(64)
fn add_f32(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = index(id, nw);
    if (i >= arg(TOTAL)) {
        return;
    }
    let v = ldf(arg(X), i) + ldf(arg(R), i);
    arena[arg(Y) + i] = bitcast<u32>(min(max(v, argf(LO)), argf(HI)));
}

// Spec 7.2: each input requantized to the output scale, summed with saturation, zero point, clamp.
@compute @workgroup_size(64)
fn add_q8(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let wi = index(id, nw);
    if (wi >= arg(TOTAL)) {
        return;
    }
    var word = 0u;
    for (var e = 0u; e < 4u; e++) {
        let i = wi * 4u + e;
        if (i >= arg(NUMEL)) {
            break;
        }
        let va = requantize(ld8(arg(X), i) - argi(X_ZP), argi(A_M), arg(A_S));
        let vb = requantize(ld8(arg(R), i) - argi(R_ZP), argi(R_M), arg(R_S));
        word = put8(word, e, saturate(sat_add(va, vb), argi(Y_ZP), argi(LO), argi(HI)));
    }
    arena[arg(Y) + wi] = word;
}

@compute @workgroup_size(64)
fn clamp_f32(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = index(id, nw);
    if (i >= arg(TOTAL)) {
        return;
    }
    arena[arg(Y) + i] = bitcast<u32>(min(max(ldf(arg(X), i), argf(LO)), argf(HI)));
}

@compute @workgroup_size(64)
fn clamp_q8(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let wi = index(id, nw);
    if (wi >= arg(TOTAL)) {
        return;
    }
    var word = 0u;
    for (var e = 0u; e < 4u; e++) {
        let i = wi * 4u + e;
        if (i >= arg(NUMEL)) {
            break;
        }
        word = put8(word, e, clamp(ld8(arg(X), i), argi(LO), argi(HI)));
    }
    arena[arg(Y) + wi] = word;
}

// Option-A shortcut source index of output element `i`, or -1 for a zero-padded channel.
fn shortcut_src(i: u32) -> i32 {
    let p = pos(i, arg(C_OUT), arg(H_OUT), arg(W_OUT));
    let c_in = arg(C_IN);
    if (p.c < arg(PAD_B) || p.c >= arg(PAD_B) + c_in) {
        return -1;
    }
    let s = arg(STRIDE);
    return i32(((p.n * c_in + p.c - arg(PAD_B)) * arg(H_IN) + p.y * s) * arg(W_IN) + p.x * s);
}

@compute @workgroup_size(64)
fn shortcut_f32(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = index(id, nw);
    if (i >= arg(TOTAL)) {
        return;
    }
    let src = shortcut_src(i);
    arena[arg(Y) + i] = select(0u, arena[arg(X) + u32(max(src, 0))], src >= 0);
}

@compute @workgroup_size(64)
fn shortcut_q8(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let wi = index(id, nw);
    if (wi >= arg(TOTAL)) {
        return;
    }
    var word = 0u;
    for (var e = 0u; e < 4u; e++) {
        let i = wi * 4u + e;
        if (i >= arg(NUMEL)) {
            break;
        }
        let src = shortcut_src(i);
        word = put8(word, e, select(argi(Y_ZP), ld8(arg(X), u32(max(src, 0))), src >= 0));
    }
    arena[arg(Y) + wi] = word;
}

// Flatten: the same bytes at the output's offset.
@compute @workgroup_size(64)
fn copy_words(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = index(id, nw);
    if (i >= arg(TOTAL)) {
        return;
    }
    arena[arg(Y) + i] = arena[arg(X) + i];
}
