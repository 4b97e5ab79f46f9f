//! Bit-exactness across kernel tiers and CPUs: an int8 model's logits are byte-identical for every tier this
//! CPU runs up to `Isa::configured()` (x86_64: avx2, avx512, avx512vnni; AArch64: neon, dotprod, i8mm; each
//! forced through `PlanOptions::max_isa`) and equal to the scalar reference of the same run. The
//! expected hashes below were printed by the scalar reference on x86_64; checking them on every target (CI
//! runs this file on x86_64 and under qemu-aarch64 for cortex-a53, cortex-a76 and max) proves the bytes are
//! the same across architectures too, and the in-run scalar comparison says which side a mismatch is on.

use resedge::kernels::{Arch, Isa};
use resedge::plan::{Plan, PlanOptions, ValueRef};
use resedge::quant::ActivationScheme;
use resedge::Model;

mod common;
use common::Rng;

static SHIPPED: &[u8] = include_bytes!("../models/resnet20-random-int8.rsm");

/// FNV-1a, 64 bit.
fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

/// Hash of the output bytes for a batch of 2 seeded inputs (integer-generated, identical on every target).
fn logits_hash(model: &Model<'_>, isa: Isa, threads: usize) -> u64 {
    let plan = Plan::new(model, &PlanOptions { batch: 2, max_isa: isa, threads, ..Default::default() }).unwrap();
    for s in &plan.steps {
        assert!(isa.allows(s.isa), "{}: kernel {} above tier {}", s.name, s.kernel, isa.name());
    }
    let mut rng = Rng::new(0x5EED);
    let input = rng.f32s(plan.input_value().numel(), -2.5, 2.5);
    let mut exec = plan.executor();
    exec.run_observed(&input, &mut |_, _| {}).unwrap();
    match exec.output_ref() {
        ValueRef::F32(v) => fnv1a(v.iter().flat_map(|f| f.to_le_bytes())),
        ValueRef::I8(v, _) => fnv1a(v.iter().map(|&b| b as u8)),
    }
}

fn check(name: &str, model: &Model<'_>, expected: u64) {
    assert!(model.graph.is_quantized(), "{name} is not int8");
    let reference = logits_hash(model, Isa::Scalar, 1);
    println!("{name}: scalar {reference:#018x} (expected {expected:#018x})");
    let mut failures = Vec::new();
    let tier = Isa::configured();
    for &isa in Isa::ALL.iter().filter(|&&i| i != Isa::Scalar && Arch::HOST.runs(i)) {
        if !tier.allows(isa) {
            let why = if Isa::detect().allows(isa) { "above RESEDGE_ISA" } else { "this CPU lacks it" };
            println!("{name}: {} skipped: {why}", isa.name());
            continue;
        }
        // Two threads as well: the executor's pool must not change a bit, on any architecture.
        for threads in [1, 2] {
            let h = logits_hash(model, isa, threads);
            println!("{name}: {} x{threads} {h:#018x}", isa.name());
            if h != reference {
                failures.push(format!("{} x{threads}: {h:#018x} != scalar {reference:#018x}", isa.name()));
            }
        }
    }
    if reference != expected {
        failures.push(format!("scalar {reference:#018x} != the x86_64 reference {expected:#018x}"));
    }
    assert!(failures.is_empty(), "{name}: {}", failures.join("; "));
}

#[test]
fn shipped_resnet20_int8_logits_are_identical_on_every_tier() {
    check("models/resnet20-random-int8.rsm", &resedge::format::load(SHIPPED).unwrap(), 0xce60_397c_8316_4abb);
}

#[test]
fn zoo_int8_nets_logits_are_identical_on_every_tier() {
    for (arch, scheme, expected) in [
        ("resnet20", ActivationScheme::AsymmetricU8, 0x2555_dcd3_9ead_d935),
        ("resnet20-c", ActivationScheme::SymmetricI8, 0xed60_34da_7806_c89c),
    ] {
        let model = resedge::zoo::build_int8(&resedge::zoo::arch(arch).unwrap(), 7, scheme).unwrap();
        check(&format!("{arch} {scheme:?}"), &model, expected);
    }
}
