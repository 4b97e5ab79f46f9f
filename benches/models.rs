//! Whole-model latency (batch 1) of zoo architectures with random weights, f32 and int8.
//! The scalar reference is the baseline the best tier of this CPU is compared with (one thread).

use criterion::{criterion_group, criterion_main, Criterion};
use resedge::kernels::Isa;
use resedge::plan::{Plan, PlanOptions};
use resedge::quant::ActivationScheme;
use resedge::zoo;

fn models(c: &mut Criterion) {
    let mut g = c.benchmark_group("model");
    g.sample_size(10);
    for name in ["resnet20", "resnet56"] {
        let arch = zoo::arch(name).unwrap();
        for (precision, model) in [
            ("f32", zoo::build(&arch, 0).unwrap()),
            ("int8", zoo::build_int8(&arch, 0, ActivationScheme::AsymmetricI8).unwrap()),
        ] {
            for isa in [Isa::Scalar, Isa::detect()] {
                let plan = Plan::new(&model, &PlanOptions { max_isa: isa, ..Default::default() }).unwrap();
                let input = zoo::random_input(plan.input_value().numel(), 1);
                let mut exec = plan.executor();
                g.bench_function(format!("{name}/{precision}/{}", isa.name()), |b| {
                    b.iter(|| exec.run_observed(&input, &mut |_, _| {}).unwrap())
                });
            }
        }
    }
    g.finish();
}

criterion_group!(benches, models);
criterion_main!(benches);
