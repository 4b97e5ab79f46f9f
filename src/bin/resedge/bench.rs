//! `resedge bench`: latency statistics, throughput, memory and a per-layer profile. With `--json`, the
//! last stdout line follows the peer-benchmark contract (../shared/bench/README.md): `median_ms`,
//! `p90_ms`, `samples_ms`, plus descriptive fields.

use crate::backend::{BackendArgs, Runner};
use crate::source::ModelArgs;
use anyhow::Result;
use clap::Args;
use resedge::plan::Plan;
use std::io::Write;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Worker threads (the blocked convolutions split their work across them).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Cores to run on, one per thread in order (Linux cpulist: `4-7`, `0,2`); the main thread takes the
    /// first. Default: the fastest cores first where they differ (big.LITTLE), else wherever the OS puts them.
    #[arg(long, value_name = "LIST")]
    pub cores: Option<String>,
    /// Untimed runs before measuring.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Exactly this many timed runs.
    #[arg(long, conflicts_with = "time")]
    pub iters: Option<usize>,
    /// Time budget in seconds for timed runs (at least 3 runs); default 2 s.
    #[arg(long)]
    pub time: Option<f64>,
    /// Batch size.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Per-layer time profile.
    #[arg(long)]
    pub profile: bool,
    /// Print a JSON summary as the last stdout line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// Percentile by nearest rank on sorted samples.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// Peak resident set size of this process (VmHWM), in bytes, where /proc exists.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

pub fn bench(args: &BenchArgs) -> Result<()> {
    args.model.with_model(|model| {
        let mut out = std::io::stdout().lock();
        let mut opts = args.backend.plan_options(args.batch, args.threads);
        opts.cores = args.cores.as_deref().map(resedge::plan::cores::parse_list).transpose()?.unwrap_or_default();
        let plan = Plan::new(model, &opts)?;
        if let Some(&first) = plan.cores.first() {
            resedge::plan::cores::pin_current(first)?;
        }
        let threads_used = plan.threads;
        let input = resedge::zoo::random_input(plan.input_value().numel(), 42);
        let mut runner = Runner::new(&plan, &args.backend, args.model.model.as_deref())?;
        if args.profile && !matches!(runner, Runner::Cpu(_)) {
            eprintln!(
                "note: --profile times CPU layers only; {} runs report upload / compute / download",
                runner.name()
            );
        }
        for _ in 0..args.warmup {
            runner.run(&input)?;
        }
        let budget = Duration::from_secs_f64(args.time.unwrap_or(2.0));
        let mut samples = Vec::new();
        let mut stages: [Vec<f64>; 4] = Default::default();
        let mut layer_ns = vec![0u128; plan.steps.len()];
        let started = Instant::now();
        loop {
            let done = match args.iters {
                Some(n) => samples.len() >= n,
                None => samples.len() >= 3 && started.elapsed() >= budget,
            };
            if done {
                break;
            }
            let t0 = Instant::now();
            match &mut runner {
                Runner::Cpu(exec) if args.profile => {
                    let mut last = t0;
                    exec.run_observed(&input, &mut |i, _| {
                        let now = Instant::now();
                        layer_ns[i] += (now - last).as_nanos();
                        last = now;
                    })?;
                }
                r => {
                    r.run(&input)?;
                }
            }
            samples.push(t0.elapsed().as_secs_f64() * 1e3);
            if let Some(t) = runner.timings() {
                for (v, d) in stages.iter_mut().zip([t.upload, t.compute, t.download, t.cpu]) {
                    v.push(d.as_secs_f64() * 1e3);
                }
            }
        }
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        let (min, med, p90, p99, max) = (
            sorted[0],
            median(&sorted),
            percentile(&sorted, 90.0),
            percentile(&sorted, 99.0),
            sorted[sorted.len() - 1],
        );
        let macs = plan.macs();
        let rss = peak_rss();
        let precision = if model.graph.is_quantized() { "int8" } else { "f32" };
        let isa = plan.steps.iter().map(|s| s.isa).max().map_or("scalar", |i| i.name());
        // Measured peaks of this development machine per core (DESIGN.md section 3): FMA f32, VNNI int8.
        let (peak_name, peak_gops) = if precision == "int8" { ("988 GOP/s int8 VNNI", 988.0) } else { ("252 GFLOP/s f32", 252.0) };
        let achieved_gops = 2.0 * macs as f64 / med / 1e6;
        let peak_fraction = achieved_gops / (peak_gops * threads_used as f64);
        // Median of each stage over the runs (upload, compute, download, CPU fallback), offloaded runs only.
        let stage_ms: Option<[f64; 4]> = (!stages[0].is_empty()).then(|| {
            stages.map(|mut v| {
                v.sort_by(f64::total_cmp);
                median(&v)
            })
        });
        writeln!(out, "model      {} ({})", model.name, args.model.describe(model))?;
        let cores = if plan.cores.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = plan.cores.iter().take(threads_used).map(|c| c.to_string()).collect();
            format!(" (cores {})", list.join(","))
        };
        writeln!(
            out,
            "batch      {}   threads {}{cores}   isa {}   runs {} (+{} warm-up)",
            args.batch,
            threads_used,
            isa,
            samples.len(),
            args.warmup
        )?;
        writeln!(out, "backend    {} ({})", runner.name(), runner.device())?;
        writeln!(out, "latency    min {min:.3}  median {med:.3}  p90 {p90:.3}  p99 {p99:.3}  max {max:.3} ms")?;
        if let Some([up, compute, down, cpu]) = stage_ms {
            writeln!(
                out,
                "stages     upload {up:.3}  compute {compute:.3}  download {down:.3}  cpu {cpu:.3} ms (medians)"
            )?;
        }
        writeln!(
            out,
            "throughput {:.1} images/s, {:.2} GMAC/s",
            args.batch as f64 * 1e3 / med,
            macs as f64 / med / 1e6
        )?;
        writeln!(
            out,
            "peak       {:.1}% of {threads_used} x {peak_name} (measured per-core peak, DESIGN.md)",
            peak_fraction * 100.0
        )?;
        writeln!(
            out,
            "memory     arena {:.2} MB, weights {:.2} MB, peak RSS {}",
            plan.arena_bytes as f64 / 1e6,
            model.weight_bytes() as f64 / 1e6,
            rss.map_or("n/a".to_string(), |b| format!("{:.1} MB", b as f64 / 1e6))
        )?;
        print_arithmetic(&mut out, &plan)?;
        if args.profile && matches!(runner, Runner::Cpu(_)) {
            print_profile(&mut out, &plan, &layer_ns, samples.len())?;
        }
        if args.json {
            let json = serde_json::json!({
                "median_ms": med, "p90_ms": p90, "p99_ms": p99, "min_ms": min, "max_ms": max,
                "samples_ms": samples, "iters": samples.len(), "threads": threads_used,
                "threads_requested": args.threads, "peak_fraction": peak_fraction, "batch": args.batch, "isa": isa, "precision": precision,
                "model": model.name, "macs": macs, "arena_bytes": plan.arena_bytes,
                "weight_bytes": model.weight_bytes(), "peak_rss_bytes": rss,
                "backend": runner.name(), "device": runner.device(),
                "upload_ms": stage_ms.map(|s| s[0]), "compute_ms": stage_ms.map(|s| s[1]),
                "download_ms": stage_ms.map(|s| s[2]), "cpu_ms": stage_ms.map(|s| s[3]),
            });
            writeln!(out, "{json}")?;
        }
        Ok(())
    })
}

/// Which arithmetic the layers used: kernels grouped with their MAC share.
fn print_arithmetic(out: &mut impl Write, plan: &Plan<'_>) -> std::io::Result<()> {
    let mut by_kernel: Vec<(&str, usize, u64)> = Vec::new();
    for s in &plan.steps {
        match by_kernel.iter_mut().find(|(k, _, _)| *k == s.kernel) {
            Some(e) => {
                e.1 += 1;
                e.2 += s.macs;
            }
            None => by_kernel.push((s.kernel, 1, s.macs)),
        }
    }
    let total = plan.macs().max(1) as f64;
    writeln!(out, "arithmetic")?;
    for (k, n, macs) in by_kernel {
        writeln!(out, "  {k:<30} {n:>4} nodes  {:>6.2}% of MACs", macs as f64 * 100.0 / total)?;
    }
    Ok(())
}

fn print_profile(out: &mut impl Write, plan: &Plan<'_>, layer_ns: &[u128], runs: usize) -> std::io::Result<()> {
    let total: u128 = layer_ns.iter().sum::<u128>().max(1);
    writeln!(
        out,
        "\nprofile (mean per run)\n{:<28} {:<14} {:<28} {:>10} {:>7} {:>9}",
        "node", "op", "kernel", "ms", "%", "GMAC/s"
    )?;
    for (s, &ns) in plan.steps.iter().zip(layer_ns) {
        let ms = ns as f64 / runs as f64 / 1e6;
        let rate = if s.macs > 0 && ms > 0.0 { format!("{:.2}", s.macs as f64 / ms / 1e6) } else { "-".into() };
        writeln!(
            out,
            "{:<28} {:<14} {:<28} {:>10.4} {:>6.1}% {:>9}",
            s.name,
            s.op,
            s.kernel,
            ms,
            ns as f64 * 100.0 / total as f64,
            rate
        )?;
    }
    Ok(())
}
