use std::time::{Duration, Instant};

/// Calls `f` every `every` until it yields a value or `limit` passes, then once more. For work
/// that takes real time: another thread or process, a socket, a child's log. Unit tests of
/// timed logic inject a clock instead (`src/clock.rs`).
pub fn poll_until<T>(
    limit: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::sleep(every.min(deadline - now));
    }
}

/// `poll_until` for a condition: whether `cond` held within `limit`.
pub fn wait_until(limit: Duration, every: Duration, mut cond: impl FnMut() -> bool) -> bool {
    poll_until(limit, every, || cond().then_some(())).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_that_turns_true_is_seen_and_one_that_never_does_times_out() {
        let mut n = 0;
        assert_eq!(
            poll_until(Duration::from_secs(5), Duration::ZERO, || {
                n += 1;
                (n == 3).then_some(n)
            }),
            Some(3)
        );
        let start = Instant::now();
        assert!(!wait_until(
            Duration::from_millis(30),
            Duration::from_millis(5),
            || false
        ));
        assert!(start.elapsed() >= Duration::from_millis(30));
    }
}
