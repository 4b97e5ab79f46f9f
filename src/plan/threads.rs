//! A persistent worker pool for one executor (std only). [`Pool::broadcast`] runs a closure once on every
//! worker, the calling thread being worker 0, and returns when all are done; it allocates nothing, so
//! `Executor::run` stays allocation free.
//!
//! Batch-1 layers of the small CIFAR nets last a few microseconds, so waking a parked thread per layer
//! would cost more than the layer: workers spin on the job counter for a while after each job (about a
//! millisecond) and only then park on a condition variable.

use crate::kernels::packed::Parallel;
use std::prelude::v1::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Spins before a worker parks (each spin is a `spin_loop` hint, tens of nanoseconds).
const SPINS: usize = 1 << 15;

type Job = *const (dyn Fn(usize) + Sync + 'static);

struct Shared {
    /// Incremented once per job; workers run the job when they see a new value.
    epoch: AtomicUsize,
    /// Workers (other than the caller) still running the current job.
    pending: AtomicUsize,
    /// The current job; written before `epoch` is bumped, read after seeing the bump.
    job: Mutex<Option<SendJob>>,
    wake: Condvar,
    stop: AtomicBool,
    panicked: AtomicBool,
}

#[derive(Clone, Copy)]
struct SendJob(Job);
// SAFETY: the closure is Sync and outlives every use (broadcast waits for all workers before returning).
unsafe impl Send for SendJob {}

/// A fixed set of worker threads.
pub struct Pool {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
}

impl Pool {
    /// A pool of `threads` workers in total (the caller plus `threads - 1` spawned threads).
    pub fn new(threads: usize) -> Pool {
        let shared = Arc::new(Shared {
            epoch: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            job: Mutex::new(None),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
        });
        let handles = (1..threads.max(1))
            .map(|w| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("resedge-{w}"))
                    .spawn(move || worker(&shared, w))
                    .expect("spawning a worker thread")
            })
            .collect();
        Pool { shared, handles }
    }
}

fn worker(s: &Shared, index: usize) {
    let mut seen = 0;
    loop {
        let mut spins = 0;
        while s.epoch.load(Ordering::Acquire) == seen && !s.stop.load(Ordering::Acquire) {
            if spins < SPINS {
                spins += 1;
                core::hint::spin_loop();
            } else {
                let guard = s.job.lock().unwrap_or_else(|e| e.into_inner());
                if s.epoch.load(Ordering::Acquire) == seen && !s.stop.load(Ordering::Acquire) {
                    drop(s.wake.wait(guard));
                }
            }
        }
        if s.stop.load(Ordering::Acquire) {
            return;
        }
        seen = s.epoch.load(Ordering::Acquire);
        let job = s.job.lock().unwrap_or_else(|e| e.into_inner()).expect("a job is set before the epoch moves");
        // SAFETY: broadcast keeps the closure alive until `pending` reaches zero, after this call.
        let f = unsafe { &*job.0 };
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(index))).is_err() {
            s.panicked.store(true, Ordering::Release);
        }
        s.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Parallel for Pool {
    fn workers(&self) -> usize {
        self.handles.len() + 1
    }

    fn broadcast(&self, f: &(dyn Fn(usize) + Sync)) {
        let s = &*self.shared;
        if self.handles.is_empty() {
            return f(0);
        }
        // SAFETY: only the lifetime is erased; we wait below until no worker can still use the pointer.
        let job: Job = unsafe { core::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), Job>(f) };
        s.pending.store(self.handles.len(), Ordering::Release);
        {
            let mut slot = s.job.lock().unwrap_or_else(|e| e.into_inner());
            *slot = Some(SendJob(job));
            s.epoch.fetch_add(1, Ordering::AcqRel);
            s.wake.notify_all();
        }
        let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(0)));
        let mut spins = 0;
        while s.pending.load(Ordering::Acquire) != 0 {
            // A preempted worker (other work shares the cores) should not cost a whole time slice of spinning.
            if spins < SPINS {
                spins += 1;
                core::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if s.panicked.swap(false, Ordering::AcqRel) {
            core::panic!("a worker thread panicked");
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        {
            let _guard = self.shared.job.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.stop.store(true, Ordering::Release);
            self.shared.wake.notify_all();
        }
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_worker_runs_once_per_broadcast() {
        let pool = Pool::new(3);
        assert_eq!(pool.workers(), 3);
        let hits: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
        for round in 1..=200 {
            pool.broadcast(&|w| {
                hits[w].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == round));
        }
    }

    #[test]
    fn parked_workers_wake_up() {
        let pool = Pool::new(2);
        let n = AtomicUsize::new(0);
        std::thread::sleep(std::time::Duration::from_millis(50));
        pool.broadcast(&|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 2);
    }
}
