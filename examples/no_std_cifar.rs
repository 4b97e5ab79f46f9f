//! A small int8 CIFAR net run through the `no_std` API only: the model is compiled in with
//! `include_bytes!`, loaded from the byte slice, planned and run without std features in the library.
//! (The example itself is an ordinary Linux program so it can print; on a microcontroller the same calls
//! run from a `#![no_std]` firmware with a global allocator.)
//!
//! ```sh
//! cargo run --release --no-default-features --example no_std_cifar
//! cargo run --release --no-default-features --example no_std_cifar --target aarch64-unknown-linux-gnu -- dotprod
//! ```
//! Without std the library cannot detect CPU features at run time: it uses the tier the target was
//! compiled for (NEON on AArch64), or the tier the caller passes (first argument here).

use resedge::kernels::Isa;
use resedge::plan::{Plan, PlanOptions, ValueRef};

static MODEL: &[u8] = include_bytes!("../models/resnet20-random-int8.rsm");

/// A fixed 3x32x32 test pattern (no RNG: the same bits on every target).
fn pattern() -> Vec<f32> {
    (0..3 * 32 * 32u32).map(|i| ((i.wrapping_mul(2_654_435_761) >> 16) % 512) as f32 / 128.0 - 2.0).collect()
}

/// Logits, and the kernel and tier the first convolution ran with.
fn logits(model: &resedge::Model<'_>, isa: Isa) -> Result<(Vec<f32>, String), resedge::Error> {
    let plan = Plan::new(model, &PlanOptions { max_isa: isa, ..PlanOptions::default() })?;
    let conv =
        plan.steps.iter().find(|s| s.op == "Conv").map_or("-".into(), |s| format!("{} ({})", s.kernel, s.isa.name()));
    let mut exec = plan.executor();
    exec.run_observed(&pattern(), &mut |_, _| {})?;
    match exec.output_ref() {
        ValueRef::F32(v) => Ok((v.to_vec(), conv)),
        ValueRef::I8(..) => Err(resedge::Error::Input("expected dequantized logits".into())),
    }
}

fn main() -> Result<(), resedge::Error> {
    let isa = match std::env::args().nth(1) {
        Some(name) => Isa::from_name(&name).ok_or_else(|| resedge::Error::Input(format!("no tier `{name}`")))?,
        None => PlanOptions::default().max_isa,
    };
    let model = resedge::format::load(MODEL)?;
    let (reference, _) = logits(&model, Isa::Scalar)?;
    let (got, kernel) = logits(&model, isa)?;
    let best = (0..got.len()).max_by(|&a, &b| got[a].total_cmp(&got[b])).unwrap_or(0);
    println!("asked for tier {}, conv kernel {kernel}: class {best}, logits {got:?}", isa.name());
    if got.iter().map(|v| v.to_bits()).ne(reference.iter().map(|v| v.to_bits())) {
        return Err(resedge::Error::Input(format!("tier {} differs from the scalar reference", isa.name())));
    }
    println!("bit-identical to the scalar reference");
    Ok(())
}
