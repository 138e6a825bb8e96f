//! What the callers of one Key Vault host learn about its request limit, shared by all of them.
//!
//! Key Vault limits requests per vault and answers `429` with `Retry-After` over the limit. If
//! each caller retried on its own, every one of them would hit the limit again (a `429` storm)
//! and run out of retries while the vault's capacity went unused. Instead, every request to the
//! vault (see `HttpClient::send_within` in src/azure/http.rs) passes through the host's
//! [`Throttle`]:
//!
//! - **Shared pause.** A `429` pauses every new request to the host until its `Retry-After`
//!   (at most [`MAX_SHARED_PAUSE`], so a strange hint cannot stall the plugin for long).
//! - **Adaptive rate.** Until the first `429` requests are not paced. Then they are sent at
//!   most at a learned rate. On a `429` (at most once per round: answers to requests sent
//!   before the last decrease do not count again) the rate becomes [`DECREASE`] times what
//!   the vault accepted: the highest rate of successes over a window ending now, since the
//!   last pause, net of the burst the vault let through before its first `429`. For a vault
//!   that refills a bucket at `L` requests/s that is `L` itself once we sent faster than `L`,
//!   so the rate lands just under the limit in one step, not after a series of `429`s (each
//!   of which pauses everybody). Only the first `429` of a burst sent unpaced leaves nothing
//!   to measure: the rate starts from a rough guess and grows fast ([`SLOW_START_GROWTH`])
//!   until the next `429` measures the limit. After that it grows slowly, by
//!   [`PROBE_GROWTH`] of itself per second of pacing, doubled every [`PROBE_DOUBLING`]
//!   without a `429`, so it finds a limit that rose without pausing the vault every few
//!   seconds. What it learned is kept for the next burst.
//! - **FIFO.** Waiting requests are admitted in the order their operation first asked; a retry
//!   keeps its place, so no caller starves and the wait is bounded by the queue ahead.
//! - **Deadline.** A request is never admitted later than [`MIN_ATTEMPT`] before its operation's
//!   [`Deadline`]: when it cannot be, it leaves the queue with an error saying why.
//!
//! Time comes from the injected [`Clock`]: the head of the queue sleeps on it until its turn,
//! the others wait on a condition variable each, and only the next head is woken when the head
//! leaves (waking all of them for every admission would cost 64 context switches per request
//! at 64 waiting callers).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use log::warn;

use crate::azure::deadline::{trim_float, Deadline};
use crate::clock::Clock;

/// The longest pause one `429` imposes on the other callers.
pub(crate) const MAX_SHARED_PAUSE: Duration = Duration::from_secs(10);
/// The pause after a `429` without a usable hint.
pub(crate) const DEFAULT_PAUSE: Duration = Duration::from_secs(1);
/// The shortest pause after a `429` (`Retry-After: 0` must not turn retries into a spin).
pub(crate) const MIN_PAUSE: Duration = Duration::from_millis(100);
/// A request is admitted only if at least this much of its deadline is left to run it.
pub(crate) const MIN_ATTEMPT: Duration = Duration::from_secs(1);
/// On a `429` the rate becomes this fraction of what the vault accepted.
pub(crate) const DECREASE: f64 = 0.97;
/// After a decrease the rate grows by this fraction of itself per second of paced successes
/// (probing slowly whether the vault now allows more) ...
pub(crate) const PROBE_GROWTH: f64 = 0.002;
/// ... and that fraction doubles after each such span without a `429`, so a rate learned
/// when the vault was busier recovers within a minute or so.
pub(crate) const PROBE_DOUBLING: Duration = Duration::from_secs(20);
pub(crate) const MIN_RATE: f64 = 1.0;
pub(crate) const MAX_RATE: f64 = 10_000.0;
/// Successes over this window (since the last pause ended) estimate what the vault accepts.
const WINDOW: Duration = Duration::from_secs(10);
/// The most successes kept for the estimate.
const MAX_SAMPLES: usize = 20_000;
/// Fewer answers than this in the window (successes and `429`s) is sparse traffic, which the
/// pause alone handles: the first `429` then does not start pacing.
const MIN_SAMPLE: usize = 8;
/// Slow start: after the first decrease (from a rough estimate) the rate grows by this
/// fraction of itself per second of paced successes, until the next `429`.
pub(crate) const SLOW_START_GROWTH: f64 = 1.0;
/// How many late requests pacing may send at once to keep to its schedule.
const CATCH_UP: u32 = 4;
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

/// Why [`Throttle::acquire`] let a request go without sending it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the request could not be sent before {deadline} ({why})")]
pub struct NotAdmitted {
    deadline: String,
    why: String,
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
}

#[derive(Debug, Default)]
struct State {
    next_seq: u64,
    /// Waiting tickets, oldest operation first.
    queue: BTreeSet<u64>,
    /// What each waiting ticket sleeps on while others are ahead.
    turns: HashMap<u64, Arc<Condvar>>,
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
    /// When the request that drew the first `429` was sent, and the successes sent within
    /// [`MIN_SPAN`] of it (whenever their answers came: they race): the vault's burst
    /// allowance, which a window's count must not take for a rate.
    first_throttled: Option<SystemTime>,
    burst: usize,
    /// Over how long that burst was sent (the vault refilled at its own rate meanwhile).
    burst_span: Duration,
    /// Growing fast from the first estimate, until the next `429`.
    slow_start: bool,
    /// Seconds of paced successes since the last decrease (each success adds `1 / rate`).
    probing: f64,
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

/// `both(a, b)` when both are known, else whichever is.
fn either(a: Option<f64>, b: Option<f64>, both: fn(f64, f64) -> f64) -> Option<f64> {
    a.zip(b).map(|(a, b)| both(a, b)).or(a).or(b)
}

fn interval(rate: f64) -> Duration {
    Duration::from_secs_f64(1.0 / rate.clamp(MIN_RATE, MAX_RATE))
}

impl State {
    /// Takes `seq` out of the queue and wakes whoever is first now.
    fn leave(&mut self, seq: u64) {
        self.queue.remove(&seq);
        self.turns.remove(&seq);
        if let Some(turn) = self.queue.first().and_then(|first| self.turns.get(first)) {
            turn.notify_one();
        }
    }

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
            // (a loaded host wakes threads late by more than a 1 ms step) do not lower the
            // rate: up to CATCH_UP requests go at once, well within any burst the vault
            // allows. After idle time start from now (no burst).
            let late = now.duration_since(self.next_slot.unwrap_or(now));
            let base = match (self.next_slot, late) {
                (Some(s), Ok(late)) if late < step * CATCH_UP => s,
                _ => now,
            };
            self.next_slot = Some(base + step);
        }
        Poll::Go(now)
    }

    /// What the vault accepts per second, from the successes since the last pause ended: the
    /// highest rate over a window ending now, net of the vault's burst allowance. A vault that
    /// refills a bucket at `L`/s cannot accept more than `B + L * span` in any span, and
    /// accepts that much in the span since the bucket last ran full; so this is `L` once we
    /// sent faster than `L` for a while, and what we sent when we did not. `B` is the burst
    /// before the first `429` less what `L` refilled meanwhile. `None` without enough answers
    /// or a span of [`MIN_SPAN`].
    fn estimate(&mut self, now: SystemTime) -> Option<f64> {
        if self.sparse(now) {
            return None;
        }
        let from = self.since_pause(now)?;
        let burst = self.burst as f64;
        let burst_span = self.burst_span.as_secs_f64();
        let mut best: Option<f64> = None;
        let mut count = 0.0;
        let sent_before = self.successes.iter().rev().skip_while(|t| **t > now);
        for t in sent_before.take_while(|t| **t >= from) {
            count += 1.0;
            let span = now.duration_since(*t).unwrap_or(Duration::ZERO);
            let net = span.as_secs_f64() - burst_span;
            if net >= MIN_SPAN.as_secs_f64() {
                let rate = (count - burst) / net;
                best = Some(best.map_or(rate, |b| b.max(rate)));
            }
        }
        best.filter(|r| *r > 0.0)
    }

    /// The burst before the first `429` over [`MIN_SPAN`] at least: the first `429`'s rough
    /// guess, when the vault answered a burst too fast for [`State::estimate`].
    fn rough_estimate(&mut self, now: SystemTime) -> Option<f64> {
        let rate = self.burst as f64 / self.burst_span.max(MIN_SPAN).as_secs_f64();
        (!self.sparse(now)).then_some(rate)
    }

    /// Fewer than [`MIN_SAMPLE`] answers over the window ending `now`.
    fn sparse(&mut self, now: SystemTime) -> bool {
        self.prune(now);
        self.successes.len() + self.throttled.len() < MIN_SAMPLE
    }

    /// The start of the estimates' window: the first answer, or the end of the last pause
    /// that is over (time spent not sending says nothing of the limit).
    fn since_pause(&self, now: SystemTime) -> Option<SystemTime> {
        let mut from = self.first_answer?;
        if let Some(p) = self.paused_until.filter(|p| *p <= now) {
            from = from.max(p);
        }
        Some(from)
    }

    fn prune(&mut self, now: SystemTime) {
        let old = |t: &SystemTime| now.duration_since(*t).unwrap_or(Duration::ZERO) > WINDOW;
        for times in [&mut self.successes, &mut self.throttled] {
            while times.front().is_some_and(old) {
                times.pop_front();
            }
        }
    }

    /// Returns the new rate when it was decreased.
    fn record(&mut self, permit: &Permit, outcome: Outcome, now: SystemTime) -> Option<f64> {
        match outcome {
            Outcome::Neutral => None,
            Outcome::Accepted => {
                // Counted when sent, on our own schedule: when answers come back is jittered
                // by everything in between, and a short window of bunched answers would look
                // like a higher rate. Answers come back nearly in order.
                let sent = permit.admitted_at;
                let later = self.successes.iter().rev().take_while(|t| **t > sent);
                let at = self.successes.len() - later.count();
                self.successes.insert(at, sent);
                if self.successes.len() > MAX_SAMPLES {
                    self.successes.pop_front();
                }
                if let Some(t) = self.first_throttled {
                    let apart = sent.duration_since(t).unwrap_or_else(|e| e.duration());
                    if apart < MIN_SPAN {
                        self.burst += 1;
                    }
                }
                self.first_answer.get_or_insert(sent);
                self.prune(now);
                if let (Some(r), true) = (self.rate, permit.waited) {
                    // At r paced successes a second, adding g each grows the rate by g times
                    // itself per second.
                    let g = if self.slow_start {
                        SLOW_START_GROWTH
                    } else {
                        let doublings = self.probing / PROBE_DOUBLING.as_secs_f64();
                        PROBE_GROWTH * doublings.min(10.0).exp2()
                    };
                    self.probing += 1.0 / r;
                    self.rate = Some((r + g).min(MAX_RATE));
                }
                None
            }
            Outcome::Throttled(hint) => {
                let pause = hint
                    .unwrap_or(DEFAULT_PAUSE)
                    .clamp(MIN_PAUSE, MAX_SHARED_PAUSE);
                let until = now + pause;
                let sent = permit.admitted_at;
                self.throttled.push_back(now);
                self.first_answer.get_or_insert(sent);
                let repeat = self.last_decrease.is_some_and(|d| permit.admitted_at < d);
                if self.first_throttled.is_none() {
                    self.first_throttled = Some(sent);
                    let recent =
                        |t: &&SystemTime| sent.duration_since(**t).unwrap_or_default() < MIN_SPAN;
                    let burst: Vec<&SystemTime> =
                        self.successes.iter().rev().take_while(recent).collect();
                    self.burst = burst.len();
                    self.burst_span = burst.last().map_or(Duration::ZERO, |t| {
                        sent.duration_since(**t).unwrap_or_default()
                    });
                }
                // The estimate is never above the vault's rate, but it is that rate only if we
                // sent faster for a while; at the first 429 we may not have: the burst's own
                // pace is then a better first guess.
                let estimate = match (repeat, self.rate) {
                    (true, _) => None,
                    (false, Some(_)) => self.estimate(sent),
                    (false, None) => {
                        either(self.estimate(sent), self.rough_estimate(sent), f64::max)
                    }
                };
                self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
                if repeat {
                    return None;
                }
                // What the vault accepted lately (before this pause), if it is less than the
                // rate (a burst at the start, or another client of the vault, can leave the
                // rate far too high).
                let base = either(self.rate, estimate, f64::min)?;
                // The first estimate is rough (a burst, few answers): grow fast from it.
                self.slow_start = self.rate.is_none();
                self.probing = 0.0;
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

    /// Waits for the ticket's turn: after every older waiting operation, after the shared
    /// pause, at the learned rate. Fails, without waiting in vain, when the request could not
    /// start at least [`MIN_ATTEMPT`] before `deadline`; the error says why.
    pub fn acquire(&self, ticket: &mut Ticket, deadline: &Deadline) -> Result<Permit, NotAdmitted> {
        let clock = self.clock.as_ref();
        let seq = ticket.seq;
        let refuse = |st: &mut MutexGuard<'_, State>, why: String| {
            st.leave(seq);
            Err(NotAdmitted {
                deadline: deadline.describe(),
                why,
            })
        };
        let turn = Arc::new(Condvar::new());
        let mut st = self.lock();
        st.queue.insert(seq);
        st.turns.insert(seq, turn.clone());
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
                    st.leave(seq);
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
                    st = turn
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
pub(crate) struct Throttles {
    hosts: Mutex<HashMap<String, Arc<Throttle>>>,
}

impl Throttles {
    pub(crate) fn for_host(&self, authority: &str, clock: &Arc<dyn Clock>) -> Arc<Throttle> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        hosts
            .entry(authority.to_ascii_lowercase())
            .or_insert_with(|| Arc::new(Throttle::new(clock.clone())))
            .clone()
    }
}

#[cfg(test)]
impl Throttle {
    /// The learned rate (requests/s), if any.
    pub(crate) fn rate(&self) -> Option<f64> {
        self.lock().rate
    }

    /// Requests waiting for their turn.
    pub(crate) fn queued(&self) -> usize {
        self.lock().queue.len()
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

    /// One round of a simulated burst: what the bench measures (examples/go-bench).
    #[derive(Debug)]
    struct Round {
        makespan: f64,
        /// Seconds each signature took, its `429`s and waits included.
        latencies: Vec<f64>,
        throttled: usize,
        /// Requests/s paced at the end of the round.
        rate: Option<f64>,
    }

    /// `callers` callers sign `total` times each round against a token bucket of `limit`/s,
    /// `burst` deep (`429`, `Retry-After: 1` when empty), through one shared [`State`]; each
    /// request takes `flight`. Between rounds the vault is idle for `gap` and its bucket
    /// refills. Pure discrete events: the head of the queue wakes when `poll` says, exactly as
    /// `Throttle::acquire` sleeps.
    fn simulate(
        limit: f64,
        burst: f64,
        callers: usize,
        total: usize,
        rounds: usize,
        gap: Duration,
    ) -> Vec<Round> {
        struct Op {
            seq: u64,
            began: SystemTime,
            queued_at: SystemTime,
            /// In flight until, admitted at, accepted.
            flight: Option<(SystemTime, SystemTime, bool)>,
        }
        let flight = Duration::from_millis(2);
        let mut st = State::default();
        let mut now = start();
        let mut out = Vec::new();
        for _ in 0..rounds {
            let t0 = now;
            let mut tokens = burst;
            let mut refilled = now;
            let mut started = 0;
            let mut round = Round {
                makespan: 0.0,
                latencies: Vec::new(),
                throttled: 0,
                rate: None,
            };
            let mut ops: Vec<Op> = Vec::new();
            let begin = |st: &mut State, ops: &mut Vec<Op>, now: SystemTime| {
                let seq = st.next_seq;
                st.next_seq += 1;
                st.queue.insert(seq);
                ops.push(Op {
                    seq,
                    began: now,
                    queued_at: now,
                    flight: None,
                });
            };
            for _ in 0..callers.min(total) {
                begin(&mut st, &mut ops, now);
                started += 1;
            }
            while !ops.is_empty() {
                // Admit whoever the throttle lets go now.
                let mut wake = None;
                while let Some(&head) = st.queue.first() {
                    match st.poll(head, now) {
                        Poll::Go(at) => {
                            let elapsed = now.duration_since(refilled).unwrap().as_secs_f64();
                            tokens = (tokens + elapsed * limit).min(burst);
                            refilled = now;
                            let ok = tokens >= 1.0;
                            if ok {
                                tokens -= 1.0;
                            }
                            let op = ops.iter_mut().find(|o| o.seq == head).unwrap();
                            op.flight = Some((now + flight, at, ok));
                        }
                        Poll::Until(at) => {
                            wake = Some(at);
                            break;
                        }
                        Poll::Behind => unreachable!(),
                    }
                }
                let done = ops.iter().filter_map(|o| o.flight.map(|f| f.0)).min();
                now = match (wake, done) {
                    (Some(w), Some(d)) => w.min(d),
                    (w, d) => w.or(d).unwrap(),
                };
                let mut i = 0;
                while i < ops.len() {
                    let Some((until, admitted_at, ok)) = ops[i].flight.filter(|f| f.0 <= now)
                    else {
                        i += 1;
                        continue;
                    };
                    let permit = Permit {
                        admitted_at,
                        waited: admitted_at > ops[i].queued_at,
                    };
                    if ok {
                        st.record(&permit, Outcome::Accepted, until);
                        let op = ops.swap_remove(i);
                        round
                            .latencies
                            .push(until.duration_since(op.began).unwrap().as_secs_f64());
                        if started < total {
                            begin(&mut st, &mut ops, now);
                            started += 1;
                        }
                    } else {
                        st.record(&permit, Outcome::Throttled(Some(S)), until);
                        round.throttled += 1;
                        // A retry keeps its place.
                        ops[i].flight = None;
                        st.queue.insert(ops[i].seq);
                        i += 1;
                    }
                }
            }
            round.makespan = now.duration_since(t0).unwrap().as_secs_f64();
            round.rate = st.rate;
            out.push(round);
            now += gap;
        }
        out
    }

    fn p99(xs: &[f64]) -> f64 {
        let mut v = xs.to_vec();
        v.sort_by(f64::total_cmp);
        v[((v.len() as f64) * 0.99) as usize - 1]
    }

    #[test]
    fn many_callers_learn_the_limit_in_one_burst_and_keep_under_it_in_the_next() {
        // The bench's throttled bursts (examples/go-bench, scenarios.go): a fresh plugin, then
        // the same burst twice more, the vault idle in between.
        for (limit, callers, total) in [(100.0, 32, 600), (1000.0, 64, 3000)] {
            let rounds = simulate(limit, 20.0, callers, total, 3, 20 * S);
            let floor = (total as f64 - 20.0) / limit;
            for (i, r) in rounds.iter().enumerate() {
                eprintln!(
                    "limit {limit}/s, round {i}: makespan {:.2} s ({:.2}x floor), p99 {:.2} s, \
                     {} 429s, paced at {:.1}/s",
                    r.makespan,
                    r.makespan / floor,
                    p99(&r.latencies),
                    r.throttled,
                    r.rate.unwrap_or(0.0)
                );
                // The first 429 pauses everybody for 1 s; whoever waited through it waits for
                // the queue once more, not for a second pause.
                assert!(p99(&r.latencies) < 1.5, "round {i}: {r:?}");
                let rate = r.rate.unwrap();
                assert!(
                    (0.9 * limit..=1.02 * limit).contains(&rate),
                    "round {i}: {rate}"
                );
            }
            // Learning costs the first round two pauses, at most a few seconds ...
            assert!(rounds[0].makespan < floor + 4.0, "{:?}", rounds[0].makespan);
            // ... after which the rate stays under the limit: no 429 at all, the vault's
            // capacity used.
            for r in &rounds[1..] {
                assert_eq!(r.throttled, 0);
                assert!(r.makespan < 1.1 * floor, "{}", r.makespan);
            }
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
                .send_within(
                    &HttpRequest::new("POST", "https://v/sign"),
                    deadline,
                    Some(&t),
                )
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
        assert!((0.9 * LIMIT..=LIMIT).contains(&ok), "{ok}");
        assert!((0.9 * LIMIT..=1.1 * LIMIT).contains(&rate), "{rate}");
        // ... with a 429 now and then, not a storm.
        assert!(throttled <= 5, "{throttled} 429s in the last minute");
    }

    #[test]
    fn a_429_paces_at_what_the_vault_accepted_net_of_its_burst() {
        let mut st = State::default();
        let t0 = start();
        let ms = |n: u64| Duration::from_millis(n);
        let sent = |at: SystemTime, waited: bool| Permit {
            admitted_at: at,
            waited,
        };
        // A key created a while ago (an answer long before the burst does not make the burst
        // look slow) ...
        let created = t0 - 5 * S;
        st.record(&sent(created, false), Outcome::Accepted, created);
        // ... then a vault of 100/s with a burst of 20 answers 20 at once, then 429: the first
        // rate is a rough guess (20 over MIN_SPAN), from which the rate grows fast.
        for i in 0..20 {
            assert_eq!(
                st.record(&sent(t0, false), Outcome::Accepted, t0 + ms(i / 5)),
                None
            );
        }
        let rough = st
            .record(&sent(t0, false), Outcome::Throttled(None), t0 + ms(5))
            .unwrap();
        assert!((rough - DECREASE * 80.0).abs() < 1e-9, "{rough}");
        assert_eq!((st.burst, st.burst_span), (20, Duration::ZERO));
        assert_eq!(st.paused_until, Some(t0 + ms(5) + DEFAULT_PAUSE));
        // Answers to requests sent before that decrease do not decrease again, but they
        // extend the pause.
        assert_eq!(
            st.record(&sent(t0, false), Outcome::Throttled(None), t0 + ms(6)),
            None
        );
        assert_eq!(st.rate, Some(rough));
        let resume = t0 + ms(6) + DEFAULT_PAUSE;
        assert_eq!(st.paused_until, Some(resume));
        // Slow start: only a success that the rate held back raises it.
        st.record(&sent(resume, false), Outcome::Accepted, resume);
        assert_eq!(st.rate, Some(rough));
        st.record(&sent(resume, true), Outcome::Accepted, resume);
        assert_eq!(st.rate, Some(rough + SLOW_START_GROWTH));
        // After the pause, requests sent at 150/s: the refilled bucket (20) and the 100/s
        // refill carry 60 of them in 0.4 s, then 429. The new rate is just under the vault's
        // 100/s, not under the 150/s that drew the 429 nor the 150/s we saw accepted.
        st.rate = Some(150.0);
        for k in 2..60u32 {
            let at = resume + Duration::from_secs_f64(f64::from(k) / 150.0);
            st.record(&sent(at, false), Outcome::Accepted, at);
        }
        let rate = st
            .record(
                &sent(resume + ms(400), true),
                Outcome::Throttled(None),
                resume + ms(401),
            )
            .unwrap();
        assert!((0.9 * 100.0..=100.0).contains(&rate), "{rate}");
        assert!((rate - DECREASE * 100.0).abs() < 2.0, "{rate}");
        // From then on it probes slowly: PROBE_GROWTH per second of paced successes, twice
        // that after PROBE_DOUBLING without a 429.
        let later = resume + 2 * S;
        st.record(&sent(later, true), Outcome::Accepted, later);
        assert!((st.rate.unwrap() - (rate + PROBE_GROWTH)).abs() < 1e-9);
        st.probing = PROBE_DOUBLING.as_secs_f64();
        let r = st.rate.unwrap();
        st.record(&sent(later, true), Outcome::Accepted, later);
        assert!((st.rate.unwrap() - (r + 2.0 * PROBE_GROWTH)).abs() < 1e-9);
    }

    #[test]
    fn waits_never_pass_the_deadline() {
        let (t, clock) = throttle();
        let deadline = Deadline::after(&clock, 25 * S);
        let a = t.acquire(&mut t.ticket(), &deadline).unwrap();
        t.record(&a, Outcome::Throttled(Some(10 * S)));
        // 5 s left: a 10 s pause cannot be waited out; it fails at once, saying why.
        let short = Deadline::after(&clock, 5 * S);
        let e = t.acquire(&mut t.ticket(), &short).unwrap_err().to_string();
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
            .send_within(
                &HttpRequest::new("POST", "https://v/sign"),
                deadline,
                Some(&t),
            )
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
            .send_within(
                &HttpRequest::new("POST", "https://v/sign"),
                deadline,
                Some(&t),
            )
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
            .send_within(&HttpRequest::new("POST", "https://v/sign"), short, Some(&t))
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
        rng: Mutex<azkv_testkit::Rng>,
        starts: Mutex<Vec<SystemTime>>,
    }

    impl Random {
        fn next(&self, n: u64) -> u64 {
            self.rng.lock().unwrap().next_u64() % n
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
                rng: Mutex::new(azkv_testkit::Rng::new(seed)),
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
                let _ = http.send_within(
                    &HttpRequest::new("POST", "https://v/sign"),
                    deadline,
                    Some(&t),
                );
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

    #[test]
    fn pacing_keeps_its_schedule_through_late_wakeups_but_not_through_idle_time() {
        let mut st = State::default();
        let t0 = start();
        let ms = |n: u64| Duration::from_millis(n);
        st.rate = Some(10.0);
        for seq in 0..5 {
            st.queue.insert(seq);
        }
        assert_eq!(st.poll(0, t0), Poll::Go(t0));
        // The head slept until t0 + 100 ms but woke 150 ms late: the requests it owed go now.
        assert_eq!(st.poll(1, t0 + ms(250)), Poll::Go(t0 + ms(250)));
        assert_eq!(st.poll(2, t0 + ms(250)), Poll::Go(t0 + ms(250)));
        assert_eq!(st.poll(3, t0 + ms(250)), Poll::Until(t0 + ms(300)));
        // After idle time the schedule starts over: no burst of what was not sent.
        assert_eq!(st.poll(3, t0 + 5 * S), Poll::Go(t0 + 5 * S));
        assert_eq!(st.poll(4, t0 + 5 * S), Poll::Until(t0 + 5 * S + ms(100)));
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
        // Other threads reach a state on their own: real time, bounded.
        let seen = azkv_testkit::wait_until(Duration::from_secs(10), Duration::ZERO, cond);
        assert!(seen, "{what}");
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
