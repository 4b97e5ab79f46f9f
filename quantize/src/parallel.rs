//! Running a plan over many samples on every core: one executor and one accumulator per thread, a shared
//! progress bar. Accumulators are merged by the caller with order-independent operations (min / max,
//! integer counts), so results do not depend on the thread count.

use crate::samples::Samples;
use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};

/// Threads for tool work: `RESEDGE_TOOL_THREADS`, else every core.
pub fn threads() -> usize {
    std::env::var("RESEDGE_TOOL_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// Calls `f(state, input)` for every sample in `idx`, spread over threads in contiguous chunks; returns
/// the per-thread states in chunk order (so per-sample outputs concatenate back into `idx` order).
/// `init` makes a thread's state (its executors and accumulators).
pub fn for_each_input<S: Send>(
    samples: &Samples,
    idx: &[usize],
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, &[f32]) -> Result<()> + Sync,
) -> Result<Vec<S>> {
    let n = threads().min(idx.len()).max(1);
    let bar = progress(idx.len(), "running");
    let results: Vec<Result<S>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|t| {
                let (init, f, bar) = (&init, &f, &bar);
                let chunk = &idx[t * idx.len() / n..(t + 1) * idx.len() / n];
                s.spawn(move || -> Result<S> {
                    let mut state = init();
                    for &i in chunk {
                        f(&mut state, &samples.input(i))?;
                        bar.inc(1);
                    }
                    Ok(state)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("worker thread panicked"))))
            .collect()
    });
    bar.finish_and_clear();
    results.into_iter().collect()
}
