//! [`Workers`]: the threads behind [`Pool`](crate::Pool). A job is a function of a chunk index;
//! the calling thread and `threads - 1` workers claim chunks until none are left.
//!
//! Why not a rayon pool: handing a job to sleeping rayon workers and waking the caller costs
//! about 11.6 µs per call on a 2-vCPU VM (measured), against about 0.3 µs here, while a
//! 1024x3584 `Q4` matvec takes about 95 µs and a decode step makes a hundred or more such calls.
//! Here workers spin for [`SPIN`] after each job before they park, so the back-to-back products
//! of a decode step start without a wake-up, and the caller works on the job itself instead of
//! sleeping. Spinning threads compete with other work, so a pool should not have more threads
//! than cores. Only one job runs at a time; a call made while a job is running (from another
//! thread, or from inside a job) runs on its own thread.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker keeps spinning for the next job before it parks.
pub(crate) const SPIN: Duration = Duration::from_micros(200);

/// The chunk function of the running job, with its lifetime erased.
type JobFn = dyn Fn(usize) + Sync;

/// One job: chunks are claimed with `next`, counted when finished with `done`.
struct Job {
    /// Points to the caller's closure; only dereferenced after a successful claim (see `run`).
    func: *const JobFn,
    chunks: usize,
    next: AtomicUsize,
    done: AtomicUsize,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

// SAFETY: `func` points to a `Sync` closure; it is only called between a successful claim and
// the matching `done` increment, while the submitting thread is still waiting in `Workers::run`.
unsafe impl Send for Job {}
// SAFETY: as above; all other fields are thread-safe.
unsafe impl Sync for Job {}

impl Job {
    /// Claims and runs chunks until none are left. A panic is stored for the submitter.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.chunks {
                return;
            }
            // SAFETY: chunk `i` is claimed and not yet counted in `done`, so the submitter is
            // still blocked in `Workers::run` and the closure behind `func` is alive.
            let f = unsafe { &*self.func };
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(i))) {
                let mut slot = self.panic.lock().unwrap_or_else(PoisonError::into_inner);
                slot.get_or_insert(p);
            }
            self.done.fetch_add(1, Ordering::Release);
        }
    }
}

/// State shared by the submitter and the workers.
struct Shared {
    /// Incremented for every job (and at shutdown); workers wait for it to change.
    epoch: AtomicU64,
    current: Mutex<Option<Arc<Job>>>,
    shutdown: AtomicBool,
    sleepers: AtomicUsize,
    sleep: Mutex<()>,
    wake: Condvar,
}

/// Spinning worker threads plus the calling thread.
pub(crate) struct Workers {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
    submit: Mutex<()>,
}

impl Workers {
    /// Starts `threads - 1` workers (the caller is the last thread).
    pub(crate) fn start(threads: usize) -> std::io::Result<Workers> {
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            current: Mutex::new(None),
            shutdown: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
        });
        let mut workers = Workers {
            shared: Arc::clone(&shared),
            handles: Vec::new(),
            submit: Mutex::new(()),
        };
        for i in 1..threads.max(1) {
            let shared = Arc::clone(&shared);
            let handle = std::thread::Builder::new()
                .name(format!("moe-kernels-{i}"))
                .spawn(move || worker(&shared))?;
            workers.handles.push(handle);
        }
        Ok(workers)
    }

    /// Runs `f(0) .. f(chunks - 1)` across the threads and returns when all have finished.
    /// Re-raises the first panic of any chunk.
    pub(crate) fn run(&self, chunks: usize, f: &(dyn Fn(usize) + Sync)) {
        let guard = match self.submit.try_lock() {
            Ok(guard) if !self.handles.is_empty() && chunks > 1 => guard,
            _ => {
                // Busy (another job, or called from inside a job) or nothing to share.
                (0..chunks).for_each(f);
                return;
            }
        };
        // SAFETY (lifetime erasure): `Job::work` only calls `func` for claimed chunks, and this
        // function does not return (or unwind) before every claimed chunk is counted in `done`.
        let func: *const JobFn =
            unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), &JobFn>(f) };
        let job = Arc::new(Job {
            func,
            chunks,
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            panic: Mutex::new(None),
        });
        *lock(&self.shared.current) = Some(Arc::clone(&job));
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
        if self.shared.sleepers.load(Ordering::SeqCst) > 0 {
            let _sleep = lock(&self.shared.sleep);
            self.shared.wake.notify_all();
        }
        job.work();
        while job.done.load(Ordering::Acquire) < chunks {
            std::hint::spin_loop();
        }
        *lock(&self.shared.current) = None;
        drop(guard);
        let panic = lock(&job.panic).take();
        if let Some(p) = panic {
            resume_unwind(p);
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
        {
            let _sleep = lock(&self.shared.sleep);
            self.shared.wake.notify_all();
        }
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Worker loop: wait for a new epoch (spinning, then parked), help with its job, repeat.
fn worker(shared: &Shared) {
    // The epoch at construction, not a fresh load: a job (or shutdown) may already have been
    // announced before this thread got to run.
    let mut seen = 0;
    loop {
        seen = wait_for_epoch(shared, seen);
        if shared.shutdown.load(Ordering::SeqCst) {
            return;
        }
        let job = lock(&shared.current).clone();
        if let Some(job) = job {
            job.work();
        }
    }
}

/// Returns the epoch once it differs from `seen`: spins for [`SPIN`], then sleeps.
fn wait_for_epoch(shared: &Shared, seen: u64) -> u64 {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        let now = shared.epoch.load(Ordering::Acquire);
        if now != seen {
            return now;
        }
        std::hint::spin_loop();
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(256) && start.elapsed() > SPIN {
            break;
        }
    }
    let mut guard = lock(&shared.sleep);
    shared.sleepers.fetch_add(1, Ordering::SeqCst);
    loop {
        let now = shared.epoch.load(Ordering::SeqCst);
        if now != seen {
            shared.sleepers.fetch_sub(1, Ordering::SeqCst);
            return now;
        }
        guard = shared
            .wake
            .wait(guard)
            .unwrap_or_else(PoisonError::into_inner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn every_chunk_runs_once() {
        for threads in [1, 2, 3] {
            let workers = Workers::start(threads).unwrap();
            for chunks in [0, 1, 2, 7, 64] {
                let hits: Vec<AtomicU32> = (0..chunks).map(|_| AtomicU32::new(0)).collect();
                workers.run(chunks, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn parks_and_wakes_up() {
        let workers = Workers::start(2).unwrap();
        std::thread::sleep(SPIN * 5);
        let sum = AtomicUsize::new(0);
        workers.run(10, &|i| {
            sum.fetch_add(i, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 45);
    }

    #[test]
    fn nested_and_concurrent_calls_do_not_deadlock() {
        let workers = Workers::start(2).unwrap();
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..50 {
                        workers.run(4, &|_| {
                            workers.run(3, &|_| {
                                total.fetch_add(1, Ordering::Relaxed);
                            });
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 3 * 50 * 4 * 3);
    }

    #[test]
    fn a_panicking_chunk_reaches_the_caller() {
        let workers = Workers::start(2).unwrap();
        let caught = catch_unwind(AssertUnwindSafe(|| {
            workers.run(8, &|i| assert!(i != 5, "chunk five"));
        }));
        assert!(caught.is_err());
        let ran = AtomicUsize::new(0);
        workers.run(8, &|_| {
            ran.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(ran.load(Ordering::Relaxed), 8);
    }
}
