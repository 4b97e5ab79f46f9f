//! `Executor::run` allocates nothing: a counting global allocator, armed on the calling thread around
//! `run` only (tests on other threads are not counted), must see zero allocations from the first run on.
//! The counter itself is shown to catch allocations and reallocations.

use resedge::plan::{Plan, PlanOptions};
use resedge::quant::ActivationScheme;
use resedge::zoo;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;

struct Counting;

thread_local! {
    /// Whether this thread's allocations are being counted, and how many were seen while armed. Per thread,
    /// so that tests running concurrently in this binary cannot add to each other's counts.
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn note() {
    if ARMED.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` with this thread's allocations counted; returns its result and the count.
fn allocations_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    ALLOCATIONS.with(|n| n.set(0));
    ARMED.with(|a| a.set(true));
    let r = f();
    ARMED.with(|a| a.set(false));
    (r, ALLOCATIONS.with(Cell::get))
}

#[test]
fn the_counter_sees_allocations() {
    let (v, n) = allocations_during(|| black_box(vec![0u8; 10]));
    assert_eq!(v.len(), 10);
    assert!(n >= 1, "an allocation went unnoticed");
    let (mut v, n) = allocations_during(|| black_box(Vec::<u32>::with_capacity(1)));
    assert!(n >= 1);
    let (_, n) = allocations_during(|| v.extend_from_slice(&[1, 2, 3, 4]));
    assert!(n >= 1, "a reallocation went unnoticed");
    let (_, n) = allocations_during(|| black_box(1 + 1));
    assert_eq!(n, 0);
}

/// Plans `model`, creates the executor (its arena is the one allowed allocation), then counts the
/// allocations of `runs` runs, starting with the very first.
fn assert_run_allocates_nothing(label: &str, model: &resedge::Model<'_>, runs: usize) {
    let plan = Plan::new(model, &PlanOptions::default()).unwrap();
    let input = zoo::random_input(plan.input_value().numel(), 5);
    let mut exec = plan.executor();
    let mut sums = Vec::with_capacity(runs);
    let ((), n) = allocations_during(|| {
        for _ in 0..runs {
            let out = exec.run(black_box(&input)).unwrap();
            sums.push(out.iter().sum::<f32>());
        }
    });
    assert_eq!(n, 0, "{label}: Executor::run made {n} allocations in {runs} runs");
    assert!(sums.iter().all(|s| s.is_finite()), "{label}: {sums:?}");
    // Deterministic: the same input gives the same output on every run.
    assert!(sums.windows(2).all(|w| w[0] == w[1]), "{label}: {sums:?}");
}

#[test]
fn f32_run_allocates_nothing() {
    let arch = zoo::arch("resnet20").unwrap();
    assert_run_allocates_nothing("resnet20 f32", &zoo::build(&arch, 1).unwrap(), 3);
}

#[test]
fn int8_run_allocates_nothing() {
    let arch = zoo::arch("resnet20").unwrap();
    for scheme in [ActivationScheme::AsymmetricI8, ActivationScheme::AsymmetricU8] {
        let m = zoo::build_int8(&arch, 1, scheme).unwrap();
        assert!(m.graph.is_quantized());
        assert_run_allocates_nothing(&format!("resnet20 int8 {scheme:?}"), &m, 3);
    }
}

#[test]
fn resnet18_run_allocates_nothing() {
    let arch = zoo::arch("resnet18").unwrap();
    assert_run_allocates_nothing("resnet18 f32", &zoo::build(&arch, 1).unwrap(), 1);
}
