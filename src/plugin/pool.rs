//! A small pool of blocking worker threads. gRPC handlers run on grpcio's completion-queue
//! threads, which must never block on Key Vault; RPCs that do network I/O run here instead and
//! hand their result back through a oneshot channel. Threads are started on demand (up to
//! `max`) and retire after sitting idle, so an idle plugin keeps few threads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

type Job = Box<dyn FnOnce() + Send + 'static>;

pub struct WorkerPool {
    tx: Sender<Job>,
    rx: Receiver<Job>,
    state: Arc<PoolState>,
}

struct PoolState {
    max: usize,
    threads: AtomicUsize,
    idle: AtomicUsize,
}

const IDLE_RETIRE: Duration = Duration::from_secs(30);

impl WorkerPool {
    pub fn new(max: usize) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        WorkerPool {
            tx,
            rx,
            state: Arc::new(PoolState {
                max: max.max(1),
                threads: AtomicUsize::new(0),
                idle: AtomicUsize::new(0),
            }),
        }
    }

    /// Runs `job` on a worker thread. When every worker is busy and the pool is below its
    /// maximum, a new worker is started; otherwise the job waits in the queue.
    pub fn execute(&self, job: impl FnOnce() + Send + 'static) {
        if self.tx.send(Box::new(job)).is_err() {
            return; // cannot happen: the pool owns the receiver too
        }
        let queued = self.rx.len();
        if queued > self.state.idle.load(Ordering::Acquire) {
            self.spawn_worker();
        }
    }

    fn spawn_worker(&self) {
        let state = &self.state;
        let mut current = state.threads.load(Ordering::Acquire);
        loop {
            if current >= state.max {
                return;
            }
            match state.threads.compare_exchange(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        let rx = self.rx.clone();
        let state = Arc::clone(&self.state);
        let spawned = std::thread::Builder::new()
            .name("azkv-worker".into())
            .spawn(move || {
                loop {
                    state.idle.fetch_add(1, Ordering::AcqRel);
                    let job = rx.recv_timeout(IDLE_RETIRE);
                    state.idle.fetch_sub(1, Ordering::AcqRel);
                    match job {
                        Ok(job) => job(),
                        Err(RecvTimeoutError::Timeout) if rx.is_empty() => break,
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                state.threads.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            self.state.threads.fetch_sub(1, Ordering::AcqRel);
            log::error!("could not start a worker thread");
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
        assert!(pool.state.threads.load(Ordering::Acquire) <= 8);
    }
}
