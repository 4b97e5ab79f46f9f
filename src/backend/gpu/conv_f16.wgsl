// f32 convolution with f16 products, for adapters with shader-f16 (the host puts `enable f16;` and
// common.wgsl ahead of this file). Weights are OIHW halves, two per word: element j is the low half of word
// W + j / 2 when j is even, the high half when odd. The activation is rounded to f16 and multiplied in f16;
// the conv loop accumulates in f32, because an f16 sum over K = 4608 taps (ResNet-18's 3x3x512) has an
// 11-bit mantissa: once the sum is large, each small product loses most of its bits. Bias, residual, clamp
// and the stored output stay f32, so the arena is the CPU's.

// Activations beyond f16's range saturate at +-65504 instead of becoming undefined conversions.
const F16_MAX: f32 = 65504.0;

fn product(x: f32, j: u32) -> f32 {
    let pair = unpack2x16float(params[arg(W) + j / 2u]);
    let w = f16(select(pair.x, pair.y, (j & 1u) == 1u));
    return f32(f16(clamp(x, -F16_MAX, F16_MAX)) * w);
}

@compute @workgroup_size(64)
fn conv_f16(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    conv(index(id, nw));
}
