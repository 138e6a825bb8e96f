//! What the callers of one Key Vault host learn about its request limit, shared by all of them.
//!
//! Key Vault limits requests per vault and answers `429` with `Retry-After` over the limit. If
//! each caller retried on its own, every one of them would hit the limit again (a `429` storm)
//! and run out of retries while the vault's capacity went unused. Instead, every request to the
//! vault (see `HttpClient::send_throttled` in src/azure/http.rs) passes through the host's
//! [`Throttle`]:
//!
//! - **Shared pause.** A `429` pauses every new request to the host until its `Retry-After`
//!   (at most [`MAX_SHARED_PAUSE`], so a strange hint cannot stall the plugin for long).
//! - **Adaptive rate (AIMD).** Until the first `429` requests are not paced. Then they are sent
//!   at most at a learned rate: on a `429` the rate drops to [`DECREASE`] times itself, or
//!   times the rate of successes over the last 2 s if that is lower (always the case at the
//!   first `429`), at most once per round (answers to requests sent before the last decrease
//!   do not count again). After the first decrease, from a rough estimate, it grows by half
//!   of itself per second of pacing (slow start) until the next `429`; from then on each
//!   success of a request that had to wait raises it additively, by [`INCREASE_PER_SEC`]
//!   requests/s per second of pacing. It settles just under the vault's limit, with a `429`
//!   now and then.
//! - **FIFO.** Waiting requests are admitted in the order their operation first asked; a retry
//!   keeps its place, so no caller starves and the wait is bounded by the queue ahead.
//! - **Deadline.** A request is never admitted later than [`MIN_ATTEMPT`] before its operation's
//!   [`Deadline`]: when it cannot be, it leaves the queue with an error saying why.
//!
//! Time comes from the injected [`Clock`]: the head of the queue sleeps on it until its turn,
//! the others wait on a condition variable for the head to change.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use log::warn;

use crate::azure::deadline::{trim_float, Deadline};
use crate::clock::Clock;

/// The longest pause one `429` imposes on the other callers.
pub const MAX_SHARED_PAUSE: Duration = Duration::from_secs(10);
/// The pause after a `429` without a usable hint.
pub const DEFAULT_PAUSE: Duration = Duration::from_secs(1);
/// The shortest pause after a `429` (`Retry-After: 0` must not turn retries into a spin).
pub const MIN_PAUSE: Duration = Duration::from_millis(100);
/// A request is admitted only if at least this much of its deadline is left to run it.
pub const MIN_ATTEMPT: Duration = Duration::from_secs(1);
/// Multiplicative decrease of the rate on a `429`.
pub const DECREASE: f64 = 0.8;
/// Additive increase: requests/s gained per second of paced successes.
pub const INCREASE_PER_SEC: f64 = 2.0;
pub const MIN_RATE: f64 = 1.0;
pub const MAX_RATE: f64 = 10_000.0;
/// Successes over this window estimate the vault's limit at the first `429`.
const WINDOW: Duration = Duration::from_secs(2);
/// Fewer answers than this in the window (successes and `429`s) is sparse traffic, which the
/// pause alone handles: the first `429` then does not start pacing.
const MIN_SAMPLE: usize = 8;
/// Slow start: after the first decrease (from a rough estimate) each paced success adds this
/// much, so the rate grows by half of itself per second until the next `429`.
pub const SLOW_START_STEP: f64 = 0.5;
/// The shortest span the estimate divides by (a burst right at the start is not a rate).
const MIN_SPAN: Duration = Duration::from_millis(250);

/// One operation's place in the queue, kept across its retries.
#[derive(Debug)]
pub struct Ticket {
    seq: u64,
    /// Whether it ever had to wait (paused, paced or queued): only then does a success show
    /// the rate was the limit and may raise it.
    waited: bool,
}

/// Leave to send one request.
#[derive(Debug, Clone, Copy)]
pub struct Permit {
    admitted_at: SystemTime,
    waited: bool,
}

/// How the vault answered an admitted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Any answer but `429` and 5xx: the vault took the request within its limit.
    Accepted,
    /// `429`, with the server's requested wait if any.
    Throttled(Option<Duration>),
    /// 5xx or no answer: says nothing about the limit.
    Neutral,
}

/// The shared state of one vault host.
pub struct Throttle {
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    turn: Condvar,
}

#[derive(Debug, Default)]
struct State {
    next_seq: u64,
    /// Waiting tickets, oldest operation first.
    queue: BTreeSet<u64>,
    paused_until: Option<SystemTime>,
    /// Requests/s; `None` until the first decrease.
    rate: Option<f64>,
    /// The earliest admission the rate allows.
    next_slot: Option<SystemTime>,
    last_decrease: Option<SystemTime>,
    successes: VecDeque<SystemTime>,
    /// `429`s over the window.
    throttled: VecDeque<SystemTime>,
    first_answer: Option<SystemTime>,
    /// Growing multiplicatively from the first estimate, until the next `429`.
    slow_start: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Poll {
    Go(SystemTime),
    /// The head of the queue, to be admitted at this time.
    Until(SystemTime),
    /// Others are ahead.
    Behind,
}

/// `"requests to it are paced at 40 per second"`, for errors.
fn pacing(st: &State) -> String {
    match st.rate {
        Some(r) => format!("requests to it are paced at {} per second", trim_float(r)),
        None => "requests to it are not paced yet".to_string(),
    }
}

fn interval(rate: f64) -> Duration {
    Duration::from_secs_f64(1.0 / rate.clamp(MIN_RATE, MAX_RATE))
}

impl State {
    fn poll(&mut self, seq: u64, now: SystemTime) -> Poll {
        if self.queue.first() != Some(&seq) {
            return Poll::Behind;
        }
        let mut at = now;
        if let Some(p) = self.paused_until.filter(|p| *p > at) {
            at = p;
        }
        if let (Some(_), Some(slot)) = (self.rate, self.next_slot) {
            at = at.max(slot);
        }
        if at > now {
            return Poll::Until(at);
        }
        self.queue.remove(&seq);
        if let Some(rate) = self.rate {
            let step = interval(rate);
            // Keep to the schedule when the head woke a little late, so sleeps overshooting
            // do not lower the rate; after idle time start from now (no burst).
            let base = match self.next_slot {
                Some(s) if now.duration_since(s).unwrap_or(Duration::ZERO) < step => s,
                _ => now,
            };
            self.next_slot = Some(base + step);
        }
        Poll::Go(now)
    }

    /// Successes per second over the window (pauses included: they are part of how the vault
    /// limits us), if the window holds enough answers.
    fn estimate(&mut self, now: SystemTime) -> Option<f64> {
        self.prune(now);
        if self.successes.len() + self.throttled.len() < MIN_SAMPLE {
            return None;
        }
        let history = now
            .duration_since(self.first_answer?)
            .unwrap_or(Duration::ZERO);
        let span = history.min(WINDOW).max(MIN_SPAN);
        Some(self.successes.len() as f64 / span.as_secs_f64())
    }

    fn prune(&mut self, now: SystemTime) {
        for times in [&mut self.successes, &mut self.throttled] {
            while let Some(t) = times.front() {
                if now.duration_since(*t).unwrap_or(Duration::ZERO) > WINDOW {
                    times.pop_front();
                } else {
                    break;
                }
            }
        }
    }

    /// Returns the new rate when it was decreased.
    fn record(&mut self, permit: &Permit, outcome: Outcome, now: SystemTime) -> Option<f64> {
        match outcome {
            Outcome::Neutral => None,
            Outcome::Accepted => {
                self.successes.push_back(now);
                self.first_answer.get_or_insert(now);
                self.prune(now);
                if let (Some(r), true) = (self.rate, permit.waited) {
                    // At r paced successes a second this adds INCREASE_PER_SEC per second (half
                    // the rate per second in slow start).
                    let step = if self.slow_start {
                        SLOW_START_STEP
                    } else {
                        INCREASE_PER_SEC / r
                    };
                    self.rate = Some((r + step).min(MAX_RATE));
                }
                None
            }
            Outcome::Throttled(hint) => {
                let pause = hint
                    .unwrap_or(DEFAULT_PAUSE)
                    .clamp(MIN_PAUSE, MAX_SHARED_PAUSE);
                let until = now + pause;
                self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
                self.throttled.push_back(now);
                self.first_answer.get_or_insert(now);
                if self.last_decrease.is_some_and(|d| permit.admitted_at < d) {
                    return None;
                }
                // What the vault accepted lately, if it is less than the rate (a burst at the
                // start, or another client of the vault, can leave the rate far too high).
                let base = match (self.rate, self.estimate(now)) {
                    (Some(r), Some(e)) => r.min(e),
                    (Some(r), None) => r,
                    (None, Some(e)) => e,
                    (None, None) => return None,
                };
                // The first estimate is rough (a burst, few answers): grow fast from it.
                self.slow_start = self.rate.is_none();
                let rate = (base * DECREASE).clamp(MIN_RATE, MAX_RATE);
                self.rate = Some(rate);
                self.last_decrease = Some(now);
                Some(rate)
            }
        }
    }
}

impl Throttle {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Throttle {
            clock,
            state: Mutex::new(State::default()),
            turn: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned one still holds consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place in the queue for a new operation.
    pub fn ticket(&self) -> Ticket {
        let mut st = self.lock();
        let seq = st.next_seq;
        st.next_seq += 1;
        Ticket { seq, waited: false }
    }

    /// The learned rate (requests/s), if any.
    pub fn rate(&self) -> Option<f64> {
        self.lock().rate
    }

    /// Requests waiting for their turn.
    pub fn queued(&self) -> usize {
        self.lock().queue.len()
    }

    /// Waits for the ticket's turn: after every older waiting operation, after the shared
    /// pause, at the learned rate. Fails, without waiting in vain, when the request could not
    /// start at least [`MIN_ATTEMPT`] before `deadline`; the error says why.
    pub fn acquire(&self, ticket: &mut Ticket, deadline: &Deadline) -> Result<Permit, String> {
        let clock = self.clock.as_ref();
        let seq = ticket.seq;
        let refuse = |st: &mut MutexGuard<'_, State>, why: String| {
            st.queue.remove(&seq);
            self.turn.notify_all();
            Err(format!(
                "the request could not be sent before {} ({why})",
                deadline.describe()
            ))
        };
        let mut st = self.lock();
        st.queue.insert(seq);
        loop {
            let now = clock.now();
            let left = deadline.remaining(clock);
            // A pause that outlasts the deadline fails every waiter at once.
            if let Some(p) = st.paused_until {
                let wait = p.duration_since(now).unwrap_or(Duration::ZERO);
                if wait.saturating_add(MIN_ATTEMPT) > left {
                    let why = format!(
                        "Key Vault throttled this vault: requests to it are paused for another {} s",
                        trim_float(wait.as_secs_f64())
                    );
                    return refuse(&mut st, why);
                }
            }
            match st.poll(ticket.seq, now) {
                Poll::Go(at) => {
                    self.turn.notify_all();
                    return Ok(Permit {
                        admitted_at: at,
                        waited: ticket.waited,
                    });
                }
                Poll::Until(at) => {
                    let wait = at.duration_since(now).unwrap_or(Duration::ZERO);
                    if wait.saturating_add(MIN_ATTEMPT) > left {
                        let why = format!("Key Vault throttled this vault; {}", pacing(&st));
                        return refuse(&mut st, why);
                    }
                    ticket.waited = true;
                    drop(st);
                    clock.sleep(wait);
                    st = self.lock();
                }
                Poll::Behind => {
                    if left <= MIN_ATTEMPT {
                        let ahead = st.queue.range(..ticket.seq).count();
                        let why = format!(
                            "Key Vault throttled this vault; {ahead} earlier requests were still waiting, {}",
                            pacing(&st)
                        );
                        return refuse(&mut st, why);
                    }
                    ticket.waited = true;
                    // Woken when the head leaves; the timeout only bounds the deadline.
                    st = self
                        .turn
                        .wait_timeout(st, left - MIN_ATTEMPT)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|e| e.into_inner().0);
                }
            }
        }
    }

    /// Learns from the answer to an admitted request.
    pub fn record(&self, permit: &Permit, outcome: Outcome) {
        let now = self.clock.now();
        let mut st = self.lock();
        if let Some(rate) = st.record(permit, outcome, now) {
            warn!(
                "Key Vault is throttling requests (HTTP 429): pausing them as asked, then sending at most {} per second",
                trim_float(rate)
            );
        }
    }
}

/// One [`Throttle`] per vault host (`host[:port]`), created on first use.
#[derive(Default)]
pub struct Throttles {
    hosts: Mutex<std::collections::HashMap<String, Arc<Throttle>>>,
}

impl Throttles {
    pub fn for_host(&self, authority: &str, clock: &Arc<dyn Clock>) -> Arc<Throttle> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        hosts
            .entry(authority.to_ascii_lowercase())
            .or_insert_with(|| Arc::new(Throttle::new(clock.clone())))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::http::tests::resp;
    use crate::azure::http::{
        HttpClient, HttpRequest, HttpResponse, RetryPolicy, Transport, TransportError,
    };
    use crate::azure::types::AzureError;
    use crate::clock::ManualClock;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const S: Duration = Duration::from_secs(1);

    fn start() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn throttle() -> (Arc<Throttle>, ManualClock) {
        let clock = ManualClock::new(start());
        (Arc::new(Throttle::new(Arc::new(clock.clone()))), clock)
    }

    fn since(clock: &ManualClock, t: SystemTime) -> Duration {
        Clock::now(clock).duration_since(t).unwrap()
    }

    #[test]
    fn one_429_pauses_every_caller_until_its_retry_after() {
        let (t, clock) = throttle();
        let deadline = Deadline::after(&clock, 25 * S);
        let a = t.acquire(&mut t.ticket(), &deadline).unwrap();
        assert!(clock.slept().is_empty(), "nothing waits before a 429");
        t.record(&a, Outcome::Throttled(Some(3 * S)));
        // Another operation, which never saw the 429, waits for the pause.
        let b = t.acquire(&mut t.ticket(), &deadline).unwrap();
        assert_eq!(clock.slept(), vec![3 * S]);
        assert_eq!(since(&clock, start()), 3 * S);
        // A hint past the cap pauses the others for MAX_SHARED_PAUSE only.
        t.record(&b, Outcome::Throttled(Some(120 * S)));
        let deadline = Deadline::after(&clock, 25 * S);
        t.acquire(&mut t.ticket(), &deadline).unwrap();
        assert_eq!(clock.slept(), vec![3 * S, MAX_SHARED_PAUSE]);
        // `Retry-After: 0` still pauses a little, so retries cannot spin.
        let c = t.acquire(&mut t.ticket(), &deadline).unwrap();
        t.record(&c, Outcome::Throttled(Some(Duration::ZERO)));
        t.acquire(&mut t.ticket(), &deadline).unwrap();
        assert_eq!(clock.slept().last(), Some(&MIN_PAUSE));
    }

    /// A vault with a token-bucket limit on the manual clock: `limit` requests/s, `burst`
    /// deep; over it, 429 with `Retry-After: 1`. Each request takes 10 ms.
    struct BucketVault {
        clock: ManualClock,
        limit: f64,
        burst: f64,
        state: Mutex<(f64, SystemTime)>,
        log: Mutex<Vec<(SystemTime, u16)>>,
    }

    impl BucketVault {
        fn new(clock: &ManualClock, limit: f64, burst: f64) -> Self {
            BucketVault {
                clock: clock.clone(),
                limit,
                burst,
                state: Mutex::new((burst, Clock::now(clock))),
                log: Mutex::new(Vec::new()),
            }
        }
    }

    impl Transport for BucketVault {
        fn execute(
            &self,
            _req: &HttpRequest,
            _timeout: Duration,
        ) -> Result<HttpResponse, TransportError> {
            let now = Clock::now(&self.clock);
            let status = {
                let mut st = self.state.lock().unwrap();
                let elapsed = now.duration_since(st.1).unwrap().as_secs_f64();
                st.0 = (st.0 + elapsed * self.limit).min(self.burst);
                st.1 = now;
                if st.0 >= 1.0 {
                    st.0 -= 1.0;
                    200
                } else {
                    429
                }
            };
            self.log.lock().unwrap().push((now, status));
            self.clock.advance(Duration::from_millis(10));
            Ok(if status == 200 {
                resp(200, &[])
            } else {
                resp(429, &[("Retry-After", "1")])
            })
        }
    }

    #[test]
    fn the_rate_settles_just_under_a_simulated_limit() {
        const LIMIT: f64 = 50.0;
        let clock = ManualClock::new(start());
        let vault = Arc::new(BucketVault::new(&clock, LIMIT, 10.0));
        let http = HttpClient::new(
            vault.clone(),
            Arc::new(clock.clone()),
            RetryPolicy::default(),
        );
        let t = http.throttle_for("v.vault.azure.net");
        // One caller that signs back to back: 100 requests/s wanted, twice the limit.
        while since(&clock, start()) < 120 * S {
            let deadline = Deadline::after(&clock, 25 * S);
            let r = http
                .send_throttled(&HttpRequest::new("POST", "https://v/sign"), deadline, &t)
                .unwrap();
            assert_eq!(r.status, 200, "throttling alone failed a signature");
        }
        let log = vault.log.lock().unwrap();
        let late: Vec<u16> = log
            .iter()
            .filter(|(at, _)| at.duration_since(start()).unwrap() >= 60 * S)
            .map(|(_, s)| *s)
            .collect();
        let ok = late.iter().filter(|s| **s == 200).count() as f64 / 60.0;
        let throttled = late.iter().filter(|s| **s == 429).count();
        let rate = t.rate().unwrap();
        eprintln!("settled: {ok:.1} signatures/s, paced at {rate:.1}/s, {throttled} 429s in 60 s");
        // Close to the limit, not half of it (as pausing alone would give) ...
        assert!((0.8 * LIMIT..=LIMIT).contains(&ok), "{ok}");
        assert!((0.75 * LIMIT..=1.2 * LIMIT).contains(&rate), "{rate}");
        // ... with a 429 every few seconds, not a storm.
        assert!(throttled <= 20, "{throttled} 429s in the last minute");
    }

    #[test]
    fn the_first_429_estimates_the_rate_the_vault_accepted() {
        let mut st = State::default();
        let t0 = start();
        // 40 successes over 2 s, all paced: 20/s.
        for i in 0..40u64 {
            st.queue.insert(i);
            let Poll::Go(at) = st.poll(i, t0 + Duration::from_millis(50 * i)) else {
                panic!()
            };
            let p = Permit {
                admitted_at: at,
                waited: false,
            };
            assert_eq!(st.record(&p, Outcome::Accepted, at), None);
        }
        let now = t0 + 2 * S;
        let late = Permit {
            admitted_at: now,
            waited: true,
        };
        let rate = st.record(&late, Outcome::Throttled(None), now).unwrap();
        assert!((rate - 0.8 * 20.0).abs() < 0.5, "{rate}");
        assert_eq!(st.paused_until, Some(now + DEFAULT_PAUSE));
        // Answers to requests sent before that decrease do not decrease again ...
        let early = Permit {
            admitted_at: t0,
            waited: true,
        };
        assert_eq!(st.record(&early, Outcome::Throttled(None), now + S), None);
        assert_eq!(st.rate, Some(rate));
        // ... but they extend the pause.
        assert_eq!(st.paused_until, Some(now + S + DEFAULT_PAUSE));
        // Successes raise it only when the rate held the request back; after the first
        // decrease by SLOW_START_STEP each (slow start).
        let unpaced = Permit {
            admitted_at: now + S,
            waited: false,
        };
        st.record(&unpaced, Outcome::Accepted, now + S);
        assert_eq!(st.rate, Some(rate));
        st.record(&late, Outcome::Accepted, now + S);
        assert_eq!(st.rate, Some(rate + SLOW_START_STEP));
        // A 429 on a request sent after the decrease decreases again.
        let again = Permit {
            admitted_at: now + S,
            waited: true,
        };
        let r2 = st
            .record(&again, Outcome::Throttled(None), now + S)
            .unwrap();
        // The vault accepted less than the rate lately (22 successes in the last 2 s, the
        // pause included): the decrease starts from that.
        assert!(rate + SLOW_START_STEP > 11.0);
        assert!((r2 - 0.8 * 11.0).abs() < 1e-9, "{r2}");
        // Slow start is over: successes now add INCREASE_PER_SEC per second.
        st.record(&late, Outcome::Accepted, now + S);
        assert_eq!(st.rate, Some(r2 + INCREASE_PER_SEC / r2));
        // Otherwise from the rate.
        st.rate = Some(5.0);
        let later = Permit {
            admitted_at: now + S,
            waited: true,
        };
        st.last_decrease = Some(now);
        let r3 = st
            .record(&later, Outcome::Throttled(None), now + S)
            .unwrap();
        assert!((r3 - 4.0).abs() < 1e-9, "{r3}");
    }

    #[test]
    fn waits_never_pass_the_deadline() {
        let (t, clock) = throttle();
        let deadline = Deadline::after(&clock, 25 * S);
        let a = t.acquire(&mut t.ticket(), &deadline).unwrap();
        t.record(&a, Outcome::Throttled(Some(10 * S)));
        // 5 s left: a 10 s pause cannot be waited out; it fails at once, saying why.
        let short = Deadline::after(&clock, 5 * S);
        let e = t.acquire(&mut t.ticket(), &short).unwrap_err();
        assert!(
            e.contains("could not be sent before the 5 s deadline of this operation")
                && e.contains("paused for another 10 s"),
            "{e}"
        );
        assert!(clock.slept().is_empty());
        assert_eq!(t.queued(), 0, "a refused request leaves the queue");
        // 11 s left: the pause fits with the 1 s an attempt needs.
        let fits = Deadline::after(&clock, 11 * S);
        t.acquire(&mut t.ticket(), &fits).unwrap();
        assert_eq!(clock.slept(), vec![10 * S]);
    }

    /// Answers 429 `Retry-After: 1` to the first `throttled` requests, then 200; each takes
    /// 100 ms.
    struct Throttling {
        clock: ManualClock,
        throttled: usize,
        calls: AtomicUsize,
        starts: Mutex<Vec<SystemTime>>,
    }

    impl Transport for Throttling {
        fn execute(
            &self,
            _req: &HttpRequest,
            timeout: Duration,
        ) -> Result<HttpResponse, TransportError> {
            let now = Clock::now(&self.clock);
            self.starts.lock().unwrap().push(now);
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            self.clock.advance(Duration::from_millis(100).min(timeout));
            Ok(if n < self.throttled {
                resp(429, &[("Retry-After", "1")])
            } else {
                resp(200, &[])
            })
        }
    }

    fn throttling(throttled: usize) -> (HttpClient, Arc<Throttling>, ManualClock) {
        let clock = ManualClock::new(start());
        let vault = Arc::new(Throttling {
            clock: clock.clone(),
            throttled,
            calls: AtomicUsize::new(0),
            starts: Mutex::new(Vec::new()),
        });
        let http = HttpClient::new(
            vault.clone(),
            Arc::new(clock.clone()),
            RetryPolicy::default(),
        );
        (http, vault, clock)
    }

    #[test]
    fn throttling_is_retried_within_the_deadline_not_a_fixed_count() {
        // Ten 429s in a row (the policy allows 3 retries of other failures): still signed.
        let (http, vault, clock) = throttling(10);
        let t = http.throttle_for("v");
        let deadline = Deadline::after(&clock, 25 * S);
        let r = http
            .send_throttled(&HttpRequest::new("POST", "https://v/sign"), deadline, &t)
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(vault.calls.load(Ordering::SeqCst), 11);
        assert!(since(&clock, start()) < 25 * S);

        // A vault that never stops: attempts go on while the hint leaves an attempt time
        // before the deadline, then the 429 is returned saying so.
        let (http, vault, clock) = throttling(usize::MAX);
        let t = http.throttle_for("v");
        let deadline = Deadline::after(&clock, 25 * S);
        let r = http
            .send_throttled(&HttpRequest::new("POST", "https://v/sign"), deadline, &t)
            .unwrap();
        assert_eq!((r.status, r.refused_wait), (429, Some(S)));
        let starts = vault.starts.lock().unwrap().clone();
        assert!(starts.len() > 4, "{} attempts", starts.len());
        for s in &starts {
            assert!(s.duration_since(start()).unwrap() <= 24 * S, "{starts:?}");
        }
        assert!(since(&clock, start()) <= 25 * S);

        // A pause another caller learned that outlasts this deadline: a clear error at once,
        // nothing sent.
        let a = t
            .acquire(&mut t.ticket(), &Deadline::after(&clock, 25 * S))
            .unwrap();
        t.record(&a, Outcome::Throttled(Some(8 * S)));
        let sent = vault.starts.lock().unwrap().len();
        let short = Deadline::after(&clock, 5 * S);
        let e = http
            .send_throttled(&HttpRequest::new("POST", "https://v/sign"), short, &t)
            .unwrap_err();
        let AzureError::Throttled(m) = &e else {
            panic!("{e:?}")
        };
        assert_eq!(
            m,
            "POST https://v/sign: the request could not be sent before the 5 s deadline of \
             this operation (Key Vault throttled this vault: requests to it are paused for \
             another 8 s); nothing was sent"
        );
        assert_eq!(
            e.to_string(),
            format!("Key Vault is throttling requests: {m}")
        );
        assert_eq!(vault.starts.lock().unwrap().len(), sent);
    }

    /// Random answers (200, 429 or 503 with random hints, resets), each taking a random time.
    struct Random {
        clock: ManualClock,
        seed: Mutex<u64>,
        starts: Mutex<Vec<SystemTime>>,
    }

    impl Random {
        fn next(&self, n: u64) -> u64 {
            let mut s = self.seed.lock().unwrap();
            *s ^= *s << 13;
            *s ^= *s >> 7;
            *s ^= *s << 17;
            *s % n
        }
    }

    impl Transport for Random {
        fn execute(
            &self,
            _req: &HttpRequest,
            timeout: Duration,
        ) -> Result<HttpResponse, TransportError> {
            self.starts.lock().unwrap().push(Clock::now(&self.clock));
            let takes = Duration::from_millis(self.next(4000));
            self.clock.advance(takes.min(timeout));
            if takes > timeout || self.next(10) == 0 {
                return Err(TransportError {
                    message: "reset".into(),
                    retryable: true,
                });
            }
            let status = [200, 429, 429, 429, 503][self.next(5) as usize];
            let hint = ["", "0", "1", "3", "12", "30", "120"][self.next(7) as usize];
            Ok(if hint.is_empty() {
                resp(status, &[])
            } else {
                resp(status, &[("Retry-After", hint)])
            })
        }
    }

    #[test]
    fn whatever_the_vault_answers_an_operation_ends_by_its_deadline() {
        for seed in 1..=300u64 {
            let clock = ManualClock::new(start());
            let vault = Arc::new(Random {
                clock: clock.clone(),
                seed: Mutex::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
                starts: Mutex::new(Vec::new()),
            });
            let http = HttpClient::new(
                vault.clone(),
                Arc::new(clock.clone()),
                RetryPolicy::default(),
            );
            let t = http.throttle_for("v");
            // Several operations in a row share the throttle's state.
            for _ in 0..5 {
                let begin = Clock::now(&clock);
                let deadline = Deadline::after(&clock, 25 * S);
                let first = vault.starts.lock().unwrap().len();
                let _ =
                    http.send_throttled(&HttpRequest::new("POST", "https://v/sign"), deadline, &t);
                let spent = since(&clock, begin);
                assert!(spent <= 25 * S, "seed {seed}: {spent:?}");
                // Every retry started with at least MIN_ATTEMPT left.
                for at in &vault.starts.lock().unwrap()[first + 1..] {
                    let at = at.duration_since(begin).unwrap();
                    assert!(at + MIN_ATTEMPT <= 25 * S, "seed {seed}: retry at {at:?}");
                }
                assert_eq!(t.queued(), 0, "seed {seed}: a ticket was left in the queue");
            }
        }
    }

    #[test]
    fn waiters_are_admitted_in_order_and_a_retry_keeps_its_place() {
        let mut st = State::default();
        let t0 = start();
        for seq in [3, 1, 2] {
            st.queue.insert(seq);
        }
        st.rate = Some(1.0);
        assert_eq!(st.poll(3, t0), Poll::Behind);
        assert_eq!(st.poll(2, t0), Poll::Behind);
        assert_eq!(st.poll(1, t0), Poll::Go(t0));
        assert_eq!(st.poll(3, t0 + S), Poll::Behind);
        assert_eq!(st.poll(2, t0), Poll::Until(t0 + S));
        // Operation 0 comes back for a retry: it goes first.
        st.queue.insert(0);
        assert_eq!(st.poll(2, t0 + S), Poll::Behind);
        assert_eq!(st.poll(0, t0 + S), Poll::Go(t0 + S));
        assert_eq!(st.poll(2, t0 + 2 * S), Poll::Go(t0 + 2 * S));
        assert_eq!(st.poll(3, t0 + 2 * S), Poll::Until(t0 + 3 * S));
    }

    /// A manual clock whose sleeps block until the test opens the gate.
    struct GateClock {
        manual: ManualClock,
        open: Mutex<bool>,
        opened: Condvar,
        sleepers: AtomicUsize,
    }

    impl Clock for GateClock {
        fn now(&self) -> SystemTime {
            Clock::now(&self.manual)
        }
        fn sleep(&self, d: Duration) {
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.opened.wait(open).unwrap();
            }
            Clock::sleep(&self.manual, d);
        }
    }

    fn wait_for(what: &str, cond: impl Fn() -> bool) {
        let t = std::time::Instant::now();
        while !cond() {
            assert!(t.elapsed() < Duration::from_secs(10), "{what}");
            std::thread::yield_now();
        }
    }

    #[test]
    fn blocked_callers_are_served_first_come_first_served() {
        let clock = Arc::new(GateClock {
            manual: ManualClock::new(start()),
            open: Mutex::new(false),
            opened: Condvar::new(),
            sleepers: AtomicUsize::new(0),
        });
        let t = Arc::new(Throttle::new(clock.clone()));
        // An operation that began before all the others and will come back for a retry.
        let early = t.ticket();
        {
            let mut st = t.lock();
            st.paused_until = Some(start() + S);
            st.rate = Some(1.0);
        }
        let mut handles = Vec::new();
        let mut spawn = |label: usize, ticket: Ticket| {
            let (t, clock) = (t.clone(), clock.clone());
            handles.push(std::thread::spawn(move || {
                let mut ticket = ticket;
                let deadline = Deadline::after(clock.as_ref(), 25 * S);
                let p = t.acquire(&mut ticket, &deadline).unwrap();
                (p.admitted_at, label)
            }));
        };
        // The first waits for the pause (blocked in the clock), the next ones queue behind.
        spawn(1, t.ticket());
        wait_for("first sleeper", || {
            clock.sleepers.load(Ordering::SeqCst) == 1
        });
        for label in 2..=6 {
            spawn(label, t.ticket());
            wait_for("queued", || t.queued() == label);
        }
        spawn(0, early);
        wait_for("retry queued", || t.queued() == 7);
        *clock.open.lock().unwrap() = true;
        clock.opened.notify_all();
        let mut admitted: Vec<(SystemTime, usize)> =
            handles.into_iter().map(|h| h.join().unwrap()).collect();
        admitted.sort();
        let order: Vec<usize> = admitted.iter().map(|(_, l)| *l).collect();
        assert_eq!(order, vec![0, 1, 2, 3, 4, 5, 6]);
        // One a second, as paced: nobody jumped in between.
        for w in admitted.windows(2) {
            assert_eq!(w[1].0.duration_since(w[0].0).unwrap(), S, "{admitted:?}");
        }
    }
}
