//! A small pool of blocking worker threads. gRPC handlers run on grpcio's completion-queue
//! threads, which must never block on Key Vault; RPCs that do network I/O run here instead and
//! hand their result back through a oneshot channel. Threads are started on demand (up to
//! `max`) and retire after sitting idle, so an idle plugin keeps few threads.
//!
//! A mutex-guarded queue and a condition variable rather than a channel: an idle worker goes
//! straight to sleep in the kernel. crossbeam-channel's receive backs off with `sched_yield`
//! calls before it sleeps, each time a worker runs out of work, and on a busy host those yields
//! took CPU from the signing path (README "Benchmarks", "This plugin alone").

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

type Job = Box<dyn FnOnce() + Send + 'static>;

pub(crate) struct WorkerPool {
    shared: Arc<Shared>,
}

struct Shared {
    max: usize,
    state: Mutex<State>,
    work: Condvar,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    /// Worker threads alive.
    threads: usize,
    /// Workers waiting for a job.
    idle: usize,
}

const IDLE_RETIRE: Duration = Duration::from_secs(30);

impl Shared {
    /// A worker that panicked inside a job never holds this lock (jobs run unlocked), so a
    /// poisoned lock still guards consistent state.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl WorkerPool {
    pub(crate) fn new(max: usize) -> Self {
        WorkerPool {
            shared: Arc::new(Shared {
                max: max.max(1),
                state: Mutex::new(State::default()),
                work: Condvar::new(),
            }),
        }
    }

    /// Runs `job` on a worker thread. When more jobs wait than workers do and the pool is below
    /// its maximum, a new worker is started; otherwise the job waits in the queue.
    pub(crate) fn execute(&self, job: impl FnOnce() + Send + 'static) {
        let mut st = self.shared.lock();
        st.jobs.push_back(Box::new(job));
        // A woken worker counts as idle until it runs, so a second job arriving before it wakes
        // still gets a thread of its own.
        let spawn = st.jobs.len() > st.idle && st.threads < self.shared.max;
        if spawn {
            st.threads += 1;
        }
        let wake = st.idle > 0;
        drop(st);
        if wake {
            self.shared.work.notify_one();
        }
        if spawn && !self.spawn_worker() {
            self.shared.lock().threads -= 1;
            log::error!("could not start a worker thread");
        }
    }

    fn spawn_worker(&self) -> bool {
        let shared = Arc::clone(&self.shared);
        std::thread::Builder::new()
            .name("azkv-worker".into())
            .spawn(move || {
                while let Some(job) = next_job(&shared) {
                    // A panic ends the job, not the worker (whose slot would be lost).
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            })
            .is_ok()
    }
}

/// The next job, or `None` once the worker has sat idle for `IDLE_RETIRE` (it is then no
/// longer counted).
fn next_job(shared: &Shared) -> Option<Job> {
    let mut st = shared.lock();
    loop {
        if let Some(job) = st.jobs.pop_front() {
            return Some(job);
        }
        st.idle += 1;
        let (guard, waited) = shared
            .work
            .wait_timeout(st, IDLE_RETIRE)
            .unwrap_or_else(|e| e.into_inner());
        st = guard;
        st.idle -= 1;
        if waited.timed_out() && st.jobs.is_empty() {
            st.threads -= 1;
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    #[test]
    fn runs_jobs_concurrently_up_to_max() {
        let pool = WorkerPool::new(8);
        let barrier = Arc::new(Barrier::new(9));
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        for _ in 0..8 {
            let b = Arc::clone(&barrier);
            let d = done_tx.clone();
            // Every job waits for all the others: only possible if 8 run at once.
            pool.execute(move || {
                b.wait();
                d.send(()).unwrap();
            });
        }
        barrier.wait();
        for _ in 0..8 {
            done_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        }
        assert_eq!(pool.shared.lock().threads, 8);
    }

    #[test]
    fn never_exceeds_max_and_runs_every_job() {
        let pool = WorkerPool::new(3);
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        for i in 0..50 {
            let (running, peak, d) = (Arc::clone(&running), Arc::clone(&peak), done_tx.clone());
            pool.execute(move || {
                use std::sync::atomic::Ordering::SeqCst;
                let now = running.fetch_add(1, SeqCst) + 1;
                peak.fetch_max(now, SeqCst);
                std::thread::sleep(Duration::from_millis(1));
                running.fetch_sub(1, SeqCst);
                d.send(i).unwrap();
            });
        }
        let mut seen: Vec<i32> = (0..50)
            .map(|_| done_rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        seen.sort();
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
        assert!(peak.load(std::sync::atomic::Ordering::SeqCst) <= 3);
        assert!(pool.shared.lock().threads <= 3);
    }

    #[test]
    fn a_panicking_job_does_not_stop_the_pool() {
        let pool = WorkerPool::new(1);
        pool.execute(|| panic!("job failed"));
        let (tx, rx) = crossbeam_channel::bounded(1);
        pool.execute(move || tx.send(()).unwrap());
        // The only worker died with the panic; its slot must not be lost for good.
        assert!(rx.recv_timeout(Duration::from_secs(5)).is_ok());
    }
}
