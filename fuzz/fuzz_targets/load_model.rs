//! Any byte string as a model file: `format::load` must return a model or an `Error`; a loaded model must
//! plan (optimized and as stored) or fail with an `Error`; a small plan must run. Any panic, out-of-bounds
//! access, overflow (debug assertions are on under cargo fuzz) or allocation failure is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use resedge::plan::{Plan, PlanOptions};

/// Arena cap: keeps every run to a few megabytes.
const MAX_ARENA: usize = 4 << 20;
/// Work cap (multiply-accumulates plus pooling taps) above which a plan is built but not run.
const MAX_WORK: u64 = 2_000_000;


fuzz_target!(|data: &[u8]| {
    let Ok(model) = resedge::format::load(data) else { return };
    for optimize in [true, false] {
        let opts = PlanOptions { max_arena_bytes: MAX_ARENA, optimize, ..Default::default() };
        let Ok(plan) = Plan::new(&model, &opts) else { continue };
        if plan.macs().saturating_add(plan.pool_taps()) > MAX_WORK {
            continue;
        }
        let input: Vec<f32> = (0..plan.input_value().numel()).map(|i| (i % 13) as f32 * 0.3 - 1.8).collect();
        let mut exec = plan.executor();
        if let Ok(out) = exec.run(&input) {
            assert_eq!(out.len(), plan.output_value().numel());
        }
    }
});
