//! A persistent worker pool for one executor (std only). [`Pool::run`] hands out tasks one by one through
//! an atomic counter; the calling thread works too, and only waits for tasks some worker has claimed. A
//! worker the OS does not schedule (the cores are shared) therefore never stalls a layer: the caller
//! simply does its tasks. Nothing is allocated per call, so `Executor::run` stays allocation free.
//!
//! Batch-1 layers of the small CIFAR nets last microseconds, so waking a parked thread per layer would
//! cost more than the layer: workers spin on the job counter for a while (about a millisecond) before
//! parking on a condition variable.

use crate::kernels::packed::Parallel;
use std::prelude::v1::*;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Spins before a waiting thread parks or yields (each spin is a `spin_loop` hint, tens of nanoseconds).
const SPINS: usize = 1 << 15;

type Job = *const (dyn Fn(usize, usize) + Sync + 'static);

/// The job word ([`Shared::next`]): epoch, task count and claimed tasks in one atomic, so a worker learns
/// of a job, its size and its own task from one cache line (each line that moves between cores costs
/// 30-170 ns on a VM's shared cores; a layer of ResNet-20 lasts 5-10 µs).
const TASK_BITS: u32 = 20;
const MAX_TASKS: usize = (1 << TASK_BITS) - 1;
const EPOCHS: u64 = 1 << (64 - 2 * TASK_BITS);

fn epoch_of(v: u64) -> u64 {
    v >> (2 * TASK_BITS)
}

struct Shared {
    /// Epoch (high 24 bits), task count (next 20) and next unclaimed task (low 20). Tagging claims with the
    /// epoch keeps a late worker from claiming (or skipping) tasks of a newer job.
    next: AtomicU64,
    /// The current job's closure (a pointer to [`Pool::run`]'s local). Written before the job word is
    /// published; read only after a successful claim, which keeps `run`, and so the closure, alive.
    job: AtomicPtr<Job>,
    /// Tasks of the current job that have finished.
    done: AtomicUsize,
    /// Guards parking on `wake` only; the job itself goes through the atomics above.
    park: Mutex<()>,
    wake: Condvar,
    stop: AtomicBool,
    panicked: AtomicBool,
    /// Workers that have started running (thread start-up allocates; [`Pool::new`] waits for it).
    started: AtomicUsize,
    /// Workers parked or about to park on `wake`: a job start only notifies when there are some, since a
    /// notification is a system call even with no waiter, a real cost on microsecond layers.
    parked: AtomicUsize,
}

/// A fixed set of worker threads.
pub struct Pool {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
    /// The last epoch; held for the whole of `run`, so callers on different threads take turns.
    caller: Mutex<u64>,
}

impl Pool {
    /// A pool of `threads` workers in total (the caller plus `threads - 1` spawned threads), not pinned.
    pub fn new(threads: usize) -> Pool {
        Pool::on_cores(threads, &[])
    }

    /// A pool whose spawned worker i runs on `cores[i % cores.len()]` (empty: wherever the OS puts it).
    /// Worker 0 is the caller, which places itself ([`super::cores::pin_current`]). A core that cannot be
    /// used is logged and the worker runs unpinned (the plan already checked the list against the online
    /// cores).
    pub fn on_cores(threads: usize, cores: &[usize]) -> Pool {
        let shared = Arc::new(Shared {
            next: AtomicU64::new(0),
            job: AtomicPtr::new(core::ptr::null_mut()),
            done: AtomicUsize::new(0),
            park: Mutex::new(()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            started: AtomicUsize::new(0),
            parked: AtomicUsize::new(0),
        });
        let handles = (1..threads.max(1))
            .map(|w| {
                let shared = shared.clone();
                let core = (!cores.is_empty()).then(|| cores[w % cores.len()]);
                std::thread::Builder::new()
                    .name(format!("resedge-{w}"))
                    .spawn(move || {
                        if let Some(Err(e)) = core.map(super::cores::pin_current) {
                            log::warn!("worker {w}: {e}; running unpinned");
                        }
                        worker(&shared, w)
                    })
                    .expect("spawning a worker thread")
            })
            .collect();
        let handles: Vec<JoinHandle<()>> = handles;
        // Thread start-up (std's per-thread state) allocates: finish it here, not in the first run.
        while shared.started.load(Ordering::Acquire) < handles.len() {
            std::thread::yield_now();
        }
        Pool { shared, handles, caller: Mutex::new(0) }
    }

    /// One job of at most [`MAX_TASKS`] tasks, `first..first + tasks` of the caller's.
    fn job(&self, epoch: u64, first: usize, tasks: usize, f: &(dyn Fn(usize, usize) + Sync)) {
        let s = &*self.shared;
        let g = |w: usize, t: usize| f(w, first + t);
        let g: &(dyn Fn(usize, usize) + Sync) = &g;
        // SAFETY: only the lifetime is erased; we return only after every claimed task has finished, and
        // no task can be claimed after that (the counter is exhausted).
        let job: Job = unsafe { core::mem::transmute::<*const (dyn Fn(usize, usize) + Sync + '_), Job>(g) };
        s.done.store(0, Ordering::Release);
        s.job.store(&job as *const Job as *mut Job, Ordering::Relaxed);
        // SeqCst with the load of `parked` (and a parking worker's increment, then load of `next`): either
        // we see the worker parking and notify it, or it sees this job and does not wait.
        s.next.store(epoch << (2 * TASK_BITS) | (tasks as u64) << TASK_BITS, Ordering::SeqCst);
        if s.parked.load(Ordering::SeqCst) > 0 {
            let _guard = s.park.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        execute(s, epoch, 0);
        let mut spins = 0;
        while s.done.load(Ordering::Acquire) < tasks {
            // The remaining tasks are running on a worker; if it was preempted, give it the core.
            if spins < SPINS {
                spins += 1;
                core::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// Claims the next task of `epoch`, if that job is still current and has one left.
fn claim(s: &Shared, epoch: u64) -> Option<usize> {
    let mut v = s.next.load(Ordering::Acquire);
    loop {
        let (tasks, next) = ((v >> TASK_BITS) as usize & MAX_TASKS, v as usize & MAX_TASKS);
        if epoch_of(v) != epoch || next >= tasks {
            return None;
        }
        match s.next.compare_exchange_weak(v, v + 1, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Some(next),
            Err(now) => v = now,
        }
    }
}

fn execute(s: &Shared, epoch: u64, worker: usize) {
    while let Some(t) = claim(s, epoch) {
        // SAFETY: the claim (acquire) saw the job word published after the closure pointer, and the
        // claimed task keeps `done` below the task count, so `run` and its closure are still alive.
        let f = unsafe { &**s.job.load(Ordering::Relaxed) };
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(worker, t))).is_err() {
            s.panicked.store(true, Ordering::Release);
        }
        s.done.fetch_add(1, Ordering::AcqRel);
    }
}

fn worker(s: &Shared, index: usize) {
    s.started.fetch_add(1, Ordering::AcqRel);
    let mut seen = 0u64;
    loop {
        let mut spins = 0;
        let current = |s: &Shared| epoch_of(s.next.load(Ordering::SeqCst));
        while current(s) == seen && !s.stop.load(Ordering::Acquire) {
            if spins < SPINS {
                spins += 1;
                core::hint::spin_loop();
            } else {
                let guard = s.park.lock().unwrap_or_else(|e| e.into_inner());
                s.parked.fetch_add(1, Ordering::SeqCst);
                if current(s) == seen && !s.stop.load(Ordering::Acquire) {
                    drop(s.wake.wait(guard).unwrap_or_else(|e| e.into_inner()));
                }
                s.parked.fetch_sub(1, Ordering::SeqCst);
            }
        }
        if s.stop.load(Ordering::Acquire) {
            return;
        }
        seen = current(s);
        execute(s, seen, index);
    }
}

impl Parallel for Pool {
    fn workers(&self) -> usize {
        self.handles.len() + 1
    }

    fn run(&self, tasks: usize, f: &(dyn Fn(usize, usize) + Sync)) {
        if self.handles.is_empty() || tasks <= 1 {
            return (0..tasks).for_each(|t| f(0, t));
        }
        let mut last = self.caller.lock().unwrap_or_else(|e| e.into_inner());
        for first in (0..tasks).step_by(MAX_TASKS) {
            // Epoch 0 is the workers' initial "seen".
            let epoch = (*last + 1) % EPOCHS;
            *last = epoch.max(1);
            self.job(*last, first, (tasks - first).min(MAX_TASKS), f);
        }
        if self.shared.panicked.swap(false, Ordering::AcqRel) {
            core::panic!("a kernel task panicked");
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        {
            let _guard = self.shared.park.lock().unwrap_or_else(|e| e.into_inner());
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
    fn every_task_runs_once_per_call() {
        let pool = Pool::new(3);
        assert_eq!(pool.workers(), 3);
        let hits: Vec<AtomicUsize> = (0..64).map(|_| AtomicUsize::new(0)).collect();
        for round in 1..=300 {
            let n = round % 64 + 1;
            pool.run(n, &|w, t| {
                assert!(w < 3);
                hits[t].fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!(hits.iter().map(|h| h.swap(0, Ordering::Relaxed)).sum::<usize>(), n);
        }
    }

    /// More tasks than one job word counts run as successive jobs, each task once.
    #[test]
    fn calls_beyond_one_job_word_run_every_task_once() {
        let pool = Pool::new(2);
        let n = MAX_TASKS + 3;
        let hits: Vec<core::sync::atomic::AtomicU8> = (0..n).map(|_| core::sync::atomic::AtomicU8::new(0)).collect();
        pool.run(n, &|_, t| {
            hits[t].fetch_add(1, Ordering::Relaxed);
        });
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn parked_workers_wake_up() {
        let pool = Pool::new(2);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let workers: Vec<AtomicUsize> = (0..2).map(|_| AtomicUsize::new(0)).collect();
        pool.run(1000, &|w, _| {
            workers[w].fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(std::time::Duration::from_micros(20));
        });
        assert_eq!(workers.iter().map(|w| w.load(Ordering::Relaxed)).sum::<usize>(), 1000);
        assert!(workers[1].load(Ordering::Relaxed) > 0, "the spawned worker never ran");
    }

    /// Spawned workers run on the cores they were given (every core of this machine in turn).
    #[cfg(target_os = "linux")]
    #[test]
    fn workers_run_on_their_cores() {
        let online = super::super::cores::ranked(super::super::cores::SYSFS_CPUS.as_ref());
        for core in online.iter().map(|c| c.id) {
            let pool = Pool::on_cores(2, &[usize::MAX, core]);
            let seen = AtomicUsize::new(usize::MAX);
            while seen.load(Ordering::Relaxed) == usize::MAX {
                pool.run(64, &|w, _| {
                    if w == 1 {
                        // SAFETY: sched_getcpu has no preconditions.
                        seen.store(unsafe { libc::sched_getcpu() } as usize, Ordering::Relaxed);
                    }
                });
            }
            assert_eq!(seen.load(Ordering::Relaxed), core);
        }
    }
}
