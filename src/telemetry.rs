//! Metrics: counters and latency samples named under SPIRE's telemetry conventions (a key path
//! of lowercase words prefixed with the plugin's name, plus labels), sent to spire-server's
//! Metrics host service when it offers one (src/plugin/metrics.rs), and summed into an hourly
//! status line at info level for operators without telemetry.
//!
//! Emitting never blocks the caller: every hook does one `try_send` into a bounded buffer and
//! counts what does not fit. One background thread (`spawn`) drains the buffer, adds each metric
//! to the status line's totals and forwards it to the host.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::clock::Clock;

/// First element of every metric key: the plugin's name, as SPIRE's own plugins prefix theirs.
pub const PREFIX: &str = "azure_key_vault";
/// Metrics the buffer holds before it starts dropping.
pub const CAPACITY: usize = 4096;
/// How often the status line is logged.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(3600);
/// Test hook (builds with the `test-hooks` feature only): the status line's period, e.g. `1s`.
#[cfg(any(test, feature = "test-hooks"))]
pub const STATUS_INTERVAL_ENV: &str = "AZKV_TEST_STATUS_INTERVAL";
/// Longest real wait of the drain thread between looks at the clock (in case it jumps).
const MAX_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `IncrCounter`: `val` is added to the counter.
    Counter,
    /// `AddSample`: one observation, in milliseconds for latencies.
    Sample,
}

/// One metric as emitted. The key excludes [`PREFIX`]; label values are fixed vocabularies.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub kind: Kind,
    pub key: &'static [&'static str],
    pub labels: Vec<(&'static str, &'static str)>,
    pub val: f32,
}

impl Metric {
    /// The full key as sent to the host: [`PREFIX`] then `key`.
    pub fn full_key(&self) -> Vec<String> {
        std::iter::once(PREFIX)
            .chain(self.key.iter().copied())
            .map(str::to_string)
            .collect()
    }

    /// `key_vault.call{operation=sign,outcome=ok}`: the series name in the status line.
    pub fn series(&self) -> String {
        let mut s = self.key.join(".");
        if !self.labels.is_empty() {
            s.push('{');
            for (i, (k, v)) in self.labels.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                let _ = write!(s, "{k}={v}");
            }
            s.push('}');
        }
        s
    }
}

// Metric keys (after the prefix). README's "Telemetry" section lists each with its labels.
pub const KEY_VAULT_CALL: &[&str] = &["key_vault", "call"];
pub const SIGN_ELAPSED: &[&str] = &["key_vault", "sign", "elapsed_time"];
pub const HTTP_RETRY: &[&str] = &["http", "retry"];
pub const HTTP_RETRY_AFTER_WAIT: &[&str] = &["http", "retry_after_wait_seconds"];
pub const TOKEN_FETCH: &[&str] = &["token", "fetch"];
pub const TOKEN_FETCH_ELAPSED: &[&str] = &["token", "fetch", "elapsed_time"];
pub const KEY_DELETED: &[&str] = &["key", "deleted"];
pub const SHARED_KEY_ADOPTION: &[&str] = &["shared_key", "adoption"];
pub const SHARED_KEY_CLAIM: &[&str] = &["shared_key", "claim"];
pub const DROPPED: &[&str] = &["telemetry", "dropped"];

/// Where drained metrics go besides the status line: the host's Metrics service.
pub trait Sink: Send {
    fn send(&mut self, m: &Metric) -> Result<(), SinkError>;
}

/// Why a sink could not take a metric (for the one warning that turns the sink off).
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// The bounded buffer between the emitting threads and the drain thread.
pub struct Registry {
    tx: Sender<Metric>,
    rx: Receiver<Metric>,
    dropped: AtomicU64,
    sink: Mutex<SinkState>,
}

enum SinkState {
    /// Not known yet whether the host offers the service.
    Pending,
    Connected(Box<dyn Sink>),
    /// The host offers none, or sending failed: metrics only feed the status line.
    Off,
}

impl Registry {
    pub fn new(capacity: usize) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        Registry {
            tx,
            rx,
            dropped: AtomicU64::new(0),
            sink: Mutex::new(SinkState::Pending),
        }
    }

    /// Queues `m`, or counts it as dropped when the buffer is full. Never blocks.
    pub fn emit(&self, m: Metric) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(m) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Metrics dropped since the last call.
    pub fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }

    /// Forward drained metrics to `sink` from now on.
    pub fn connect(&self, sink: Box<dyn Sink>) {
        *self.lock_sink() = SinkState::Connected(sink);
    }

    /// The host offers no Metrics service: keep metrics for the status line only.
    pub fn disconnect(&self) {
        *self.lock_sink() = SinkState::Off;
    }

    fn lock_sink(&self) -> std::sync::MutexGuard<'_, SinkState> {
        self.sink.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn forward(&self, m: &Metric) {
        let mut state = self.lock_sink();
        if let SinkState::Connected(sink) = &mut *state {
            if let Err(e) = sink.send(m) {
                // One warning, then no more attempts: a host that stopped answering would
                // otherwise cost a timeout per metric and fill the buffer.
                log::warn!(reason:% = e; "Sending metrics to spire-server failed; no more metrics will be sent (the hourly status line goes on)");
                *state = SinkState::Off;
            }
        }
    }

    /// Takes what is buffered now (after `first`, when given) into `status` and the sink;
    /// returns how many metrics were taken.
    pub fn drain_into(&self, status: &mut Status, first: Option<Metric>) -> usize {
        let mut batch: Vec<Metric> = first.into_iter().collect();
        // Bounded, so a steady stream still lets the status line and the sink take turns.
        while batch.len() < CAPACITY {
            match self.rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let n = batch.len();
        let dropped = self.take_dropped();
        if dropped > 0 {
            batch.push(Metric {
                kind: Kind::Counter,
                key: DROPPED,
                labels: Vec::new(),
                val: dropped as f32,
            });
        }
        for m in &batch {
            status.record(m);
        }
        for m in coalesce(batch) {
            self.forward(&m);
        }
        n
    }
}

/// `batch` with the increments of each counter series summed into one (at its first place):
/// one host call per series instead of one per event. Samples are kept one by one.
pub fn coalesce(batch: Vec<Metric>) -> Vec<Metric> {
    let mut out: Vec<Metric> = Vec::with_capacity(batch.len());
    let mut counters: BTreeMap<String, usize> = BTreeMap::new();
    for m in batch {
        if m.kind == Kind::Counter {
            match counters.entry(m.series()) {
                std::collections::btree_map::Entry::Occupied(e) => {
                    out[*e.get()].val += m.val;
                    continue;
                }
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(out.len());
                }
            }
        }
        out.push(m);
    }
    out
}

/// Totals since the last status line.
#[derive(Debug)]
pub struct Status {
    counters: BTreeMap<String, f64>,
    samples: BTreeMap<String, SampleStats>,
    interval: Duration,
    since: SystemTime,
}

#[derive(Debug, Default, Clone, Copy)]
struct SampleStats {
    count: u64,
    sum: f64,
    max: f64,
}

impl Status {
    pub fn new(now: SystemTime, interval: Duration) -> Self {
        Status {
            counters: BTreeMap::new(),
            samples: BTreeMap::new(),
            interval,
            since: now,
        }
    }

    pub fn record(&mut self, m: &Metric) {
        let val = f64::from(m.val);
        match m.kind {
            Kind::Counter => *self.counters.entry(m.series()).or_default() += val,
            Kind::Sample => {
                let s = self.samples.entry(m.series()).or_default();
                s.count += 1;
                s.sum += val;
                s.max = s.max.max(val);
            }
        }
    }

    /// When the next line is due.
    pub fn due(&self) -> SystemTime {
        self.since + self.interval
    }

    /// The status line's counts when one is due at `now` (the totals restart), else None.
    pub fn take_if_due(&mut self, now: SystemTime) -> Option<String> {
        if now < self.due() {
            return None;
        }
        let mut line = String::new();
        for (series, v) in &self.counters {
            let _ = write!(line, "{}{series}={}", sep(&line), trim(*v));
        }
        for (series, s) in &self.samples {
            let mean = s.sum / s.count as f64;
            let _ = write!(
                line,
                "{}{series}=count:{},mean:{},max:{}",
                sep(&line),
                s.count,
                trim(mean),
                trim(s.max)
            );
        }
        if line.is_empty() {
            line.push_str("none");
        }
        self.counters.clear();
        self.samples.clear();
        self.since = now;
        Some(line)
    }
}

fn sep(line: &str) -> &'static str {
    if line.is_empty() {
        ""
    } else {
        " "
    }
}

/// Up to three decimals, without trailing zeros.
fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// The process-wide registry every hook emits into.
pub fn global() -> &'static Registry {
    static GLOBAL: OnceLock<Registry> = OnceLock::new();
    GLOBAL.get_or_init(|| Registry::new(CAPACITY))
}

/// Starts the drain thread on `registry`: it forwards metrics and logs the status line every
/// `interval` of `clock` time. It runs for the life of the process.
pub fn spawn(
    registry: &'static Registry,
    clock: Arc<dyn Clock>,
    interval: Duration,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("telemetry".into())
        .spawn(move || {
            let mut status = Status::new(clock.now(), interval);
            loop {
                let wait = status
                    .due()
                    .duration_since(clock.now())
                    .unwrap_or_default()
                    .min(MAX_WAIT);
                match registry.rx.recv_timeout(wait) {
                    Ok(m) => {
                        registry.drain_into(&mut status, Some(m));
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        registry.drain_into(&mut status, None);
                    }
                    // The registry owns a sender, so this cannot happen; leave rather than spin.
                    Err(RecvTimeoutError::Disconnected) => return,
                }
                if let Some(counts) = status.take_if_due(clock.now()) {
                    log::info!(counts = counts, period = format!("{}s", interval.as_secs()); "Key Vault status");
                }
            }
        })
}

// ---------------------------------------------------------------------------------------------
// Hooks: one call at each place that counts.

fn counter(key: &'static [&'static str], labels: Vec<(&'static str, &'static str)>, val: f32) {
    global().emit(Metric {
        kind: Kind::Counter,
        key,
        labels,
        val,
    });
}

fn sample_ms(key: &'static [&'static str], labels: Vec<(&'static str, &'static str)>, d: Duration) {
    global().emit(Metric {
        kind: Kind::Sample,
        key,
        labels,
        val: d.as_secs_f32() * 1000.0,
    });
}

/// A Key Vault REST call ended: `operation` is sign|create|get|list|update|delete, `outcome`
/// ok|4xx|429|5xx|transport (see [`outcome_of_status`]).
pub fn key_vault_call(operation: &'static str, outcome: &'static str) {
    counter(
        KEY_VAULT_CALL,
        vec![("operation", operation), ("outcome", outcome)],
        1.0,
    );
}

/// The outcome label for a final HTTP status.
pub fn outcome_of_status(status: u16) -> &'static str {
    match status {
        200..=399 => "ok",
        429 => "429",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// How long a Key Vault sign took, retries included.
pub fn sign_elapsed(d: Duration) {
    sample_ms(SIGN_ELAPSED, Vec::new(), d);
}

/// A request is retried; `reason` is 408|429|5xx|transport (see [`retry_reason_of_status`]).
/// `server_wait` is the wait the server asked for (`Retry-After` and the like), when it did.
pub fn http_retry(reason: &'static str, server_wait: Option<Duration>) {
    counter(HTTP_RETRY, vec![("reason", reason)], 1.0);
    if let Some(d) = server_wait {
        counter(
            HTTP_RETRY_AFTER_WAIT,
            vec![("reason", reason)],
            d.as_secs_f32(),
        );
    }
}

/// The retry label for a retryable HTTP status.
pub fn retry_reason_of_status(status: u16) -> &'static str {
    match status {
        408 => "408",
        429 => "429",
        _ => "5xx",
    }
}

/// One credential of the chain was asked for a token: counted by kind (see
/// [`credential_kind`]) and `outcome` ok|unavailable|error.
pub fn token_fetch(credential: &str, outcome: &'static str) {
    counter(
        TOKEN_FETCH,
        vec![
            ("credential", credential_kind(credential)),
            ("outcome", outcome),
        ],
        1.0,
    );
}

/// The `credential` label for a credential's log name.
pub fn credential_kind(name: &str) -> &'static str {
    if name.starts_with("ClientSecretCredential") {
        "client_secret"
    } else if name.starts_with("EnvironmentCredential (client certificate)") {
        "client_certificate"
    } else if name.starts_with("EnvironmentCredential") {
        "client_secret"
    } else if name.starts_with("WorkloadIdentityCredential") {
        "workload_identity"
    } else if name.starts_with("ManagedIdentityCredential") {
        "managed_identity"
    } else {
        "other"
    }
}

/// A token request (through the whole credential chain) ended after `elapsed`.
pub fn token_fetch_elapsed(ok: bool, elapsed: Duration) {
    let outcome = if ok { "ok" } else { "error" };
    sample_ms(TOKEN_FETCH_ELAPSED, vec![("outcome", outcome)], elapsed);
}

/// A key was deleted (or found already gone); `reason` is sweep|rotation.
pub fn key_deleted(reason: &'static str) {
    counter(KEY_DELETED, vec![("reason", reason)], 1.0);
}

/// A shared key's version made by a peer (or converged on) was adopted.
pub fn shared_key_adoption() {
    counter(SHARED_KEY_ADOPTION, Vec::new(), 1.0);
}

/// A rotation claim was written and read back; `outcome` is won|lost|not_written.
pub fn shared_key_claim(outcome: &'static str) {
    counter(SHARED_KEY_CLAIM, vec![("outcome", outcome)], 1.0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::time::UNIX_EPOCH;

    fn call(op: &'static str, outcome: &'static str) -> Metric {
        Metric {
            kind: Kind::Counter,
            key: KEY_VAULT_CALL,
            labels: vec![("operation", op), ("outcome", outcome)],
            val: 1.0,
        }
    }

    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<Metric>>>);
    impl Sink for Recorder {
        fn send(&mut self, m: &Metric) -> Result<(), SinkError> {
            self.0.lock().unwrap().push(m.clone());
            Ok(())
        }
    }

    struct Failing(Arc<AtomicU64>);
    impl Sink for Failing {
        fn send(&mut self, _m: &Metric) -> Result<(), SinkError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Err("host gone".into())
        }
    }

    #[test]
    fn a_full_buffer_drops_and_counts_without_blocking() {
        let r = Registry::new(2);
        for _ in 0..5 {
            r.emit(call("sign", "ok"));
        }
        let mut status = Status::new(UNIX_EPOCH, STATUS_INTERVAL);
        assert_eq!(r.drain_into(&mut status, None), 2);
        let line = status.take_if_due(UNIX_EPOCH + STATUS_INTERVAL).unwrap();
        assert_eq!(
            line,
            "key_vault.call{operation=sign,outcome=ok}=2 telemetry.dropped=3"
        );
        // The drop count restarts once reported.
        assert_eq!(r.take_dropped(), 0);
    }

    #[test]
    fn drained_metrics_reach_the_sink_with_the_prefix() {
        let r = Registry::new(16);
        let rec = Recorder::default();
        r.connect(Box::new(rec.clone()));
        r.emit(call("get", "429"));
        let mut status = Status::new(UNIX_EPOCH, STATUS_INTERVAL);
        r.drain_into(&mut status, None);
        let got = rec.0.lock().unwrap().clone();
        assert_eq!(got, vec![call("get", "429")]);
        assert_eq!(
            got[0].full_key(),
            vec!["azure_key_vault", "key_vault", "call"]
        );
    }

    #[test]
    fn counters_of_one_series_are_sent_as_one_increment() {
        let r = Registry::new(16);
        let rec = Recorder::default();
        r.connect(Box::new(rec.clone()));
        let sample = |v: f32| Metric {
            kind: Kind::Sample,
            key: SIGN_ELAPSED,
            labels: Vec::new(),
            val: v,
        };
        for m in [
            call("sign", "ok"),
            sample(5.0),
            call("sign", "429"),
            call("sign", "ok"),
            sample(7.0),
            call("sign", "ok"),
        ] {
            r.emit(m);
        }
        let mut status = Status::new(UNIX_EPOCH, STATUS_INTERVAL);
        assert_eq!(r.drain_into(&mut status, None), 6);
        let mut three = call("sign", "ok");
        three.val = 3.0;
        assert_eq!(
            rec.0.lock().unwrap().clone(),
            vec![three, sample(5.0), call("sign", "429"), sample(7.0)]
        );
        let line = status.take_if_due(UNIX_EPOCH + STATUS_INTERVAL).unwrap();
        assert_eq!(
            line,
            "key_vault.call{operation=sign,outcome=429}=1 \
             key_vault.call{operation=sign,outcome=ok}=3 \
             key_vault.sign.elapsed_time=count:2,mean:6,max:7"
        );
    }

    #[test]
    fn a_failing_sink_is_given_up_after_one_error() {
        let r = Registry::new(16);
        let attempts = Arc::new(AtomicU64::new(0));
        r.connect(Box::new(Failing(Arc::clone(&attempts))));
        // Two series, so two sends were it not given up.
        r.emit(call("sign", "ok"));
        r.emit(call("get", "ok"));
        let mut status = Status::new(UNIX_EPOCH, STATUS_INTERVAL);
        r.drain_into(&mut status, None);
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
        // The status line still counts both.
        let line = status.take_if_due(UNIX_EPOCH + STATUS_INTERVAL).unwrap();
        assert_eq!(
            line,
            "key_vault.call{operation=get,outcome=ok}=1 key_vault.call{operation=sign,outcome=ok}=1"
        );
    }

    #[test]
    fn status_line_is_hourly_and_counts_only_since_the_last_line() {
        let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_000_000));
        let mut status = Status::new(clock.now(), STATUS_INTERVAL);
        status.record(&call("sign", "ok"));
        status.record(&call("sign", "ok"));
        status.record(&Metric {
            kind: Kind::Sample,
            key: SIGN_ELAPSED,
            labels: Vec::new(),
            val: 10.0,
        });
        status.record(&Metric {
            kind: Kind::Sample,
            key: SIGN_ELAPSED,
            labels: Vec::new(),
            val: 30.5,
        });
        clock.advance(Duration::from_secs(3599));
        assert_eq!(status.take_if_due(clock.now()), None);
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            status.take_if_due(clock.now()).unwrap(),
            "key_vault.call{operation=sign,outcome=ok}=2 \
             key_vault.sign.elapsed_time=count:2,mean:20.25,max:30.5"
        );
        status.record(&call("delete", "5xx"));
        clock.advance(Duration::from_secs(1800));
        assert_eq!(status.take_if_due(clock.now()), None);
        clock.advance(Duration::from_secs(1800));
        assert_eq!(
            status.take_if_due(clock.now()).unwrap(),
            "key_vault.call{operation=delete,outcome=5xx}=1"
        );
        clock.advance(STATUS_INTERVAL);
        assert_eq!(status.take_if_due(clock.now()).unwrap(), "none");
    }

    #[test]
    fn outcome_and_retry_labels() {
        assert_eq!(outcome_of_status(200), "ok");
        assert_eq!(outcome_of_status(204), "ok");
        assert_eq!(outcome_of_status(404), "4xx");
        assert_eq!(outcome_of_status(429), "429");
        assert_eq!(outcome_of_status(503), "5xx");
        assert_eq!(retry_reason_of_status(408), "408");
        assert_eq!(retry_reason_of_status(429), "429");
        assert_eq!(retry_reason_of_status(502), "5xx");
        for (name, kind) in [
            ("ClientSecretCredential (plugin config)", "client_secret"),
            ("EnvironmentCredential", "client_secret"),
            (
                "EnvironmentCredential (client certificate)",
                "client_certificate",
            ),
            ("WorkloadIdentityCredential", "workload_identity"),
            ("ManagedIdentityCredential (IMDS)", "managed_identity"),
            (
                "ManagedIdentityCredential (App Service)",
                "managed_identity",
            ),
            ("credential chain", "other"),
        ] {
            assert_eq!(credential_kind(name), kind, "{name}");
        }
    }
}
