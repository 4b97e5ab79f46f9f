//! `Executor::run` allocates nothing: a counting global allocator, armed on the calling thread around
//! `run` only (tests on other threads are not counted), must see zero allocations from the first run on.
//! With more than one thread the executor's pool workers (threads named `resedge-*`) are counted too, so
//! the tests here run one at a time: another test's pool starting up (its workers allocate as they start)
//! would otherwise be counted. The counter itself is shown to catch allocations and reallocations.

use resedge::plan::{Plan, PlanOptions};
use resedge::quant::ActivationScheme;
use resedge::zoo;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

thread_local! {
    /// Whether this thread's allocations are being counted, and how many were seen while armed. Per thread,
    /// so that tests running concurrently in this binary cannot add to each other's counts.
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

/// Tests counting pool workers (a count, as several may run at once) and what the workers allocated.
static WORKERS_ARMED: AtomicUsize = AtomicUsize::new(0);
static WORKER_ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Held for a whole test: pools are joined when dropped, so no other test's workers exist meanwhile.
fn one_test_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn note() {
    if ARMED.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    } else if WORKERS_ARMED.load(Ordering::Acquire) > 0 && on_pool_worker() {
        WORKER_ALLOCATIONS.fetch_add(1, Ordering::AcqRel);
    }
}

/// Whether this is an executor pool worker (the pool names them `resedge-<index>`). Every thread here is
/// spawned by std, so its handle exists and asking for it does not allocate.
fn on_pool_worker() -> bool {
    std::thread::current().name().is_some_and(|n| n.starts_with("resedge-"))
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

/// Runs `f` with this thread's allocations counted, and those of every pool worker; returns its result, this
/// thread's count and the workers' count (all workers of all pools: they must never allocate while running).
fn allocations_during<R>(f: impl FnOnce() -> R) -> (R, usize, usize) {
    ALLOCATIONS.with(|n| n.set(0));
    let workers_before = WORKER_ALLOCATIONS.load(Ordering::Acquire);
    WORKERS_ARMED.fetch_add(1, Ordering::AcqRel);
    ARMED.with(|a| a.set(true));
    let r = f();
    ARMED.with(|a| a.set(false));
    WORKERS_ARMED.fetch_sub(1, Ordering::AcqRel);
    (r, ALLOCATIONS.with(Cell::get), WORKER_ALLOCATIONS.load(Ordering::Acquire) - workers_before)
}

#[test]
fn the_counter_sees_allocations() {
    let _serial = one_test_at_a_time();
    let (v, n, _) = allocations_during(|| black_box(vec![0u8; 10]));
    assert_eq!(v.len(), 10);
    assert!(n >= 1, "an allocation went unnoticed");
    let (mut v, n, _) = allocations_during(|| black_box(Vec::<u32>::with_capacity(1)));
    assert!(n >= 1);
    let (_, n, _) = allocations_during(|| v.extend_from_slice(&[1, 2, 3, 4]));
    assert!(n >= 1, "a reallocation went unnoticed");
    let (_, n, _) = allocations_during(|| black_box(1 + 1));
    assert_eq!(n, 0);
}

#[test]
fn the_counter_sees_pool_worker_allocations() {
    let _serial = one_test_at_a_time();
    use resedge::kernels::packed::Parallel;
    let pool = resedge::plan::threads::Pool::new(2);
    let ((), _, n) = allocations_during(|| {
        pool.run(200, &|w, _| {
            if w > 0 {
                black_box(vec![0u8; 16]);
            }
            std::thread::sleep(std::time::Duration::from_micros(50));
        })
    });
    assert!(n >= 1, "a worker's allocation went unnoticed");
}

/// Plans `model`, creates the executor (its arena is the one allowed allocation), then counts the
/// allocations of `runs` runs, starting with the very first.
fn assert_run_allocates_nothing(label: &str, model: &resedge::Model<'_>, runs: usize, threads: usize) {
    let plan = Plan::new(model, &PlanOptions { threads, ..Default::default() }).unwrap();
    let input = zoo::random_input(plan.input_value().numel(), 5);
    let mut exec = plan.executor();
    let mut sums = Vec::with_capacity(runs);
    let ((), n, workers) = allocations_during(|| {
        for _ in 0..runs {
            let out = exec.run(black_box(&input)).unwrap();
            sums.push(out.iter().sum::<f32>());
        }
    });
    assert_eq!(n, 0, "{label}: Executor::run made {n} allocations in {runs} runs");
    assert_eq!(workers, 0, "{label}: pool workers made {workers} allocations in {runs} runs");
    assert!(sums.iter().all(|s| s.is_finite()), "{label}: {sums:?}");
    // Deterministic: the same input gives the same output on every run.
    assert!(sums.windows(2).all(|w| w[0] == w[1]), "{label}: {sums:?}");
}

#[test]
fn f32_run_allocates_nothing() {
    let _serial = one_test_at_a_time();
    let arch = zoo::arch("resnet20").unwrap();
    for threads in [1, 2] {
        assert_run_allocates_nothing(&format!("resnet20 f32 x{threads}"), &zoo::build(&arch, 1).unwrap(), 3, threads);
    }
}

#[test]
fn int8_run_allocates_nothing() {
    let _serial = one_test_at_a_time();
    let arch = zoo::arch("resnet20").unwrap();
    for scheme in [ActivationScheme::AsymmetricI8, ActivationScheme::AsymmetricU8] {
        let m = zoo::build_int8(&arch, 1, scheme).unwrap();
        assert!(m.graph.is_quantized());
        for threads in [1, 2] {
            assert_run_allocates_nothing(&format!("resnet20 int8 {scheme:?} x{threads}"), &m, 3, threads);
        }
    }
}

#[test]
fn resnet18_run_allocates_nothing() {
    let _serial = one_test_at_a_time();
    let arch = zoo::arch("resnet18").unwrap();
    assert_run_allocates_nothing("resnet18 f32 x2", &zoo::build(&arch, 1).unwrap(), 1, 2);
}
