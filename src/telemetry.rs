//! Metrics named under SPIRE's telemetry conventions (plugin-name prefix, lowercase key path,
//! labels), sent to spire-server's Metrics host service when it offers one
//! (src/plugin/metrics.rs) and summed into an hourly info-level status line.
//!
//! Emitting never blocks and never allocates once a series exists: a hook adds to an
//! in-process aggregate (counter sum; latency count, sum, max and a reservoir of at most
//! [`SAMPLE_CAP`] values) under one short lock. The `spawn`ed thread takes the aggregates every
//! [`FLUSH_INTERVAL`] and sends one `IncrCounter` per moved counter, one `AddSample` per kept
//! value; after a failed send counters keep summing and the host is re-dialed after a backoff.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crate::clock::Clock;

/// First element of every metric key: the plugin's name, as SPIRE's own plugins prefix theirs.
pub(crate) const PREFIX: &str = "azure_key_vault";
/// How often the aggregates are sent to the host.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Values of one latency series sent per flush at most; the rest are counted as dropped. A
/// uniform random pick (reservoir) of the interval's values, so the host's summaries keep the
/// distribution's shape; the status line's count, mean and max still cover every value.
pub(crate) const SAMPLE_CAP: usize = 100;
/// How often the status line is logged.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(3600);
/// Test hook (builds with the `test-hooks` feature only): the status line's period, e.g. `1s`.
#[cfg(feature = "test-hooks")]
pub const STATUS_INTERVAL_ENV: &str = "AZKV_TEST_STATUS_INTERVAL";
/// Test hook (builds with the `test-hooks` feature only): the flush period, e.g. `100ms`.
#[cfg(feature = "test-hooks")]
pub const FLUSH_INTERVAL_ENV: &str = "AZKV_TEST_METRICS_FLUSH";
/// Longest real wait of the flush thread between looks at the clock (in case it jumps).
const MAX_WAIT: Duration = Duration::from_secs(60);
/// First wait before re-dialing a host whose Metrics service failed; doubles up to the max.
pub(crate) const RETRY_BACKOFF: Duration = Duration::from_secs(1);
pub(crate) const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `IncrCounter`: `val` is added to the counter.
    Counter,
    /// `AddSample`: one observation, in milliseconds for latencies.
    Sample,
}

/// A metric's labels: at most two, from fixed vocabularies; an empty name is an unused slot.
/// `Copy`, so emitting allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Labels([(&'static str, &'static str); 2]);

impl Labels {
    pub const NONE: Labels = Labels([("", ""); 2]);

    pub const fn one(name: &'static str, value: &'static str) -> Labels {
        Labels([(name, value), ("", "")])
    }

    pub fn iter(&self) -> impl Iterator<Item = &(&'static str, &'static str)> {
        self.0.iter().filter(|(name, _)| !name.is_empty())
    }
}

/// One metric as sent to the host. The key excludes [`PREFIX`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metric {
    pub kind: Kind,
    pub key: &'static [&'static str],
    pub labels: Labels,
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
}

/// A metric key with its labels: what one counter sum or one latency reservoir belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Series {
    pub key: &'static [&'static str],
    pub labels: Labels,
}

impl Series {
    pub const fn new(key: &'static [&'static str], labels: Labels) -> Series {
        Series { key, labels }
    }

    /// `key_vault.call{operation=sign,outcome=ok}`.
    pub fn name(&self) -> String {
        let key = self.key.join(".");
        let labels: Vec<_> = (self.labels.iter())
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if labels.is_empty() {
            key
        } else {
            format!("{key}{{{}}}", labels.join(","))
        }
    }

    fn metric(&self, kind: Kind, val: f32) -> Metric {
        Metric {
            kind,
            key: self.key,
            labels: self.labels,
            val,
        }
    }
}

// Metric keys (after the prefix). README's "Telemetry" section lists each with its labels.
pub(crate) const KEY_VAULT_CALL: &[&str] = &["key_vault", "call"];
pub(crate) const SIGN_ELAPSED: &[&str] = &["key_vault", "sign", "elapsed_time"];
pub(crate) const HTTP_RETRY: &[&str] = &["http", "retry"];
pub(crate) const HTTP_RETRY_AFTER_WAIT: &[&str] = &["http", "retry_after_wait_seconds"];
pub(crate) const TOKEN_FETCH: &[&str] = &["token", "fetch"];
pub(crate) const TOKEN_FETCH_ELAPSED: &[&str] = &["token", "fetch", "elapsed_time"];
pub(crate) const KEY_DELETED: &[&str] = &["key", "deleted"];
pub(crate) const SHARED_KEY_ADOPTION: &[&str] = &["shared_key", "adoption"];
pub(crate) const SHARED_KEY_CLAIM: &[&str] = &["shared_key", "claim"];
pub(crate) const DROPPED: &[&str] = &["telemetry", "dropped"];

/// Where flushed metrics go besides the status line: the host's Metrics service.
pub trait Sink: Send {
    /// Sends `batch`: the outcome of each, in order (missing ones count as not sent).
    fn send_batch(&mut self, batch: &[Metric]) -> Vec<Result<(), SinkError>>;
    /// Dial the host again after a failed send.
    fn reconnect(&mut self);
}

/// Why a sink could not take a metric. Shared, so a failed batch reports the one cause for
/// every metric it did not send.
pub(crate) type SinkError = Arc<dyn std::error::Error + Send + Sync>;

/// A sink error that is only a message.
pub(crate) fn sink_error(msg: &str) -> SinkError {
    Arc::from(Box::<dyn std::error::Error + Send + Sync>::from(msg))
}

/// A latency series since the last flush: every value in `count`, `sum`, `max`; at most
/// `cap` of them in `kept`.
pub struct Samples {
    pub series: Series,
    pub count: u64,
    pub sum: f64,
    pub max: f64,
    pub kept: Vec<f32>,
}

impl Samples {
    fn new(series: Series, kept: Vec<f32>) -> Samples {
        Samples {
            series,
            count: 0,
            sum: 0.0,
            max: 0.0,
            kept,
        }
    }
}

/// What the hooks add to between two flushes. A handful of series (fixed vocabularies), so a
/// linear search is cheaper than hashing.
struct Aggregates {
    /// Each counter series' sum since the last flush.
    counters: Vec<(Series, f64)>,
    samples: Vec<Samples>,
    /// xorshift64 state for the reservoir's picks: uniformity matters, unpredictability not.
    rng: u64,
}

impl Aggregates {
    fn add_counter(&mut self, series: Series, val: f64) {
        match self.counters.iter_mut().find(|c| c.0 == series) {
            Some(c) => c.1 += val,
            None => self.counters.push((series, val)),
        }
    }

    fn add_sample(&mut self, series: Series, val: f32, cap: usize) {
        let i = (self.samples.iter().position(|c| c.series == series)).unwrap_or_else(|| {
            self.samples
                .push(Samples::new(series, Vec::with_capacity(cap)));
            self.samples.len() - 1
        });
        let pick = self.next_random();
        let cell = &mut self.samples[i];
        cell.count += 1;
        cell.sum += f64::from(val);
        cell.max = cell.max.max(f64::from(val));
        if cell.kept.len() < cap {
            cell.kept.push(val);
        } else {
            // Reservoir sampling: the n-th value replaces a kept one with probability cap/n,
            // so every value of the interval is equally likely to be sent.
            let j = (pick % cell.count) as usize;
            if j < cap {
                cell.kept[j] = val;
            }
        }
    }

    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

/// The aggregates the hooks add to, and the host they are sent to.
pub struct Registry {
    aggregates: Mutex<Aggregates>,
    sample_cap: usize,
    sink: Mutex<SinkState>,
}

enum SinkState {
    /// Not known yet whether the host offers the service: counters wait, samples are not kept.
    Pending,
    Connected(Box<dyn Sink>),
    /// The host offers none: metrics only feed the status line.
    Off,
}

impl Registry {
    /// A registry that sends at most `sample_cap` values per latency series and flush.
    pub fn new(sample_cap: usize) -> Self {
        Registry {
            aggregates: Mutex::new(Aggregates {
                counters: Vec::with_capacity(32),
                samples: Vec::with_capacity(8),
                rng: 0x9E37_79B9_7F4A_7C15,
            }),
            sample_cap,
            sink: Mutex::new(SinkState::Pending),
        }
    }

    fn lock_aggregates(&self) -> std::sync::MutexGuard<'_, Aggregates> {
        self.aggregates.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `val` to the counter `series`. Never blocks beyond the aggregates' short lock.
    pub fn counter(&self, series: Series, val: f64) {
        self.lock_aggregates().add_counter(series, val);
    }

    /// Records one observation of `series`.
    pub fn sample(&self, series: Series, val: f32) {
        self.lock_aggregates()
            .add_sample(series, val, self.sample_cap);
    }

    /// Takes the counters and samples added since the last take. `spares` are emptied
    /// reservoirs (from an earlier take) given back, so the hooks never grow a fresh one.
    pub fn take(&self, spares: &mut Vec<Vec<f32>>) -> (Vec<(Series, f64)>, Vec<Samples>) {
        let mut agg = self.lock_aggregates();
        let counters = (agg.counters.iter_mut().filter(|c| c.1 != 0.0))
            .map(|c| (c.0, std::mem::take(&mut c.1)))
            .collect();
        let samples = (agg.samples.iter_mut().filter(|c| c.count > 0))
            .map(|c| {
                let fresh = spares
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(self.sample_cap));
                std::mem::replace(c, Samples::new(c.series, fresh))
            })
            .collect();
        (counters, samples)
    }

    /// Send flushed metrics to `sink` from now on.
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
}

/// The flush thread's own state: counter sums the host has not acknowledged yet, the backoff
/// after a failed send, emptied reservoirs for reuse.
#[derive(Default)]
pub(crate) struct Flusher {
    unsent: BTreeMap<String, (Series, f64)>,
    /// Sample values not sent since the last flush (host down): reported as `telemetry.dropped`.
    dropped: u64,
    /// After a failed send: when to re-dial, and the wait after that one.
    retry: Option<(SystemTime, Duration)>,
    spares: Vec<Vec<f32>>,
}

impl Flusher {
    /// Takes `registry`'s aggregates into `status` and sends them to the host if there is one.
    pub(crate) fn flush(&mut self, registry: &Registry, status: &mut Status, now: SystemTime) {
        let (mut counters, samples) = registry.take(&mut self.spares);
        let mut sink = registry.lock_sink();
        let mut dropped = std::mem::take(&mut self.dropped);
        for s in &samples {
            status.record_samples(&s.series, s.count, s.sum, s.max);
            if matches!(*sink, SinkState::Connected(_)) {
                dropped += s.count - s.kept.len() as u64;
            }
        }
        if dropped > 0 {
            counters.push((Series::new(DROPPED, Labels::NONE), dropped as f64));
        }
        for (series, val) in &counters {
            status.record_counter(series, *val);
            if !matches!(*sink, SinkState::Off) {
                self.unsent.entry(series.name()).or_insert((*series, 0.0)).1 += val;
            }
        }
        match &mut *sink {
            SinkState::Connected(s) => self.send(s.as_mut(), &samples, now),
            SinkState::Off => self.unsent.clear(),
            SinkState::Pending => {}
        }
        drop(sink);
        for mut s in samples {
            s.kept.clear();
            self.spares.push(s.kept);
        }
    }

    fn send(&mut self, sink: &mut dyn Sink, samples: &[Samples], now: SystemTime) {
        if let Some((at, _)) = self.retry {
            if now < at {
                self.dropped += samples.iter().map(|s| s.kept.len() as u64).sum::<u64>();
                return;
            }
            sink.reconnect();
        }
        match self.send_all(sink, samples) {
            Ok(()) => {
                if self.retry.take().is_some() {
                    log::info!("Sending metrics to spire-server works again");
                }
            }
            Err((reason, not_sent)) => {
                self.dropped += not_sent;
                let backoff = match self.retry {
                    // One warning per outage; counters keep summing and go out once the host
                    // answers.
                    None => {
                        log::warn!(reason:% = reason; "Sending metrics to spire-server failed; retrying with backoff (the hourly status line goes on)");
                        RETRY_BACKOFF
                    }
                    Some((_, backoff)) => {
                        log::debug!(reason:% = reason, retry_in = format!("{}s", backoff.as_secs()); "Sending metrics to spire-server failed again");
                        backoff
                    }
                };
                self.retry = Some((now + backoff, (backoff * 2).min(RETRY_BACKOFF_MAX)));
            }
        }
    }

    /// Sends the unsent counters (each removed once the host took it) and the samples in one
    /// batch. On error: the first error and how many sample values were not sent.
    fn send_all(
        &mut self,
        sink: &mut dyn Sink,
        samples: &[Samples],
    ) -> Result<(), (SinkError, u64)> {
        let names: Vec<String> = self.unsent.keys().cloned().collect();
        let counter = |(series, val): &(Series, f64)| series.metric(Kind::Counter, *val as f32);
        let mut batch: Vec<Metric> = self.unsent.values().map(counter).collect();
        for s in samples {
            batch.extend(s.kept.iter().map(|v| s.series.metric(Kind::Sample, *v)));
        }
        let mut results = sink.send_batch(&batch);
        results.resize_with(batch.len(), || Err(sink_error("not sent")));
        let mut first_error = None;
        let mut not_sent = 0;
        for (i, result) in results.into_iter().enumerate() {
            match result {
                Ok(()) => {
                    if let Some(name) = names.get(i) {
                        self.unsent.remove(name);
                    }
                }
                Err(e) => {
                    not_sent += u64::from(i >= names.len());
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), |e| Err((e, not_sent)))
    }
}

/// Totals since the last status line.
#[derive(Debug)]
pub(crate) struct Status {
    counters: BTreeMap<String, f64>,
    /// count, sum, max
    samples: BTreeMap<String, (u64, f64, f64)>,
    interval: Duration,
    since: SystemTime,
}

impl Status {
    pub(crate) fn new(now: SystemTime, interval: Duration) -> Self {
        Status {
            counters: BTreeMap::new(),
            samples: BTreeMap::new(),
            interval,
            since: now,
        }
    }

    pub(crate) fn record_counter(&mut self, series: &Series, val: f64) {
        *self.counters.entry(series.name()).or_default() += val;
    }

    pub(crate) fn record_samples(&mut self, series: &Series, count: u64, sum: f64, max: f64) {
        let s = self.samples.entry(series.name()).or_default();
        *s = (s.0 + count, s.1 + sum, s.2.max(max));
    }

    /// When the next line is due.
    pub(crate) fn due(&self) -> SystemTime {
        self.since + self.interval
    }

    /// The status line's counts when one is due at `now` (the totals restart), else None.
    pub(crate) fn take_if_due(&mut self, now: SystemTime) -> Option<String> {
        if now < self.due() {
            return None;
        }
        let mut parts: Vec<String> = (self.counters.iter())
            .map(|(series, v)| format!("{series}={}", trim(*v)))
            .collect();
        parts.extend(self.samples.iter().map(|(series, &(count, sum, max))| {
            let (mean, max) = (trim(sum / count as f64), trim(max));
            format!("{series}=count:{count},mean:{mean},max:{max}")
        }));
        self.counters.clear();
        self.samples.clear();
        self.since = now;
        Some(if parts.is_empty() {
            "none".to_owned()
        } else {
            parts.join(" ")
        })
    }
}

/// Up to three decimals, without trailing zeros.
fn trim(v: f64) -> String {
    format!("{v:.3}")
        .trim_end_matches('0')
        .trim_end_matches('.')
        .to_owned()
}

/// The process-wide registry every hook adds to.
pub fn global() -> &'static Registry {
    static GLOBAL: OnceLock<Registry> = OnceLock::new();
    GLOBAL.get_or_init(|| Registry::new(SAMPLE_CAP))
}

/// Starts the flush thread on `registry`: every `flush_interval` it sends the aggregates to the
/// host, and every `status_interval` of `clock` time it logs the status line. It runs for the
/// life of the process.
pub fn spawn(
    registry: &'static Registry,
    clock: Arc<dyn Clock>,
    flush_interval: Duration,
    status_interval: Duration,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("telemetry".into())
        .spawn(move || {
            let mut status = Status::new(clock.now(), status_interval);
            let mut flusher = Flusher::default();
            loop {
                let now = clock.now();
                flusher.flush(registry, &mut status, now);
                if let Some(counts) = status.take_if_due(now) {
                    log::info!(counts = counts, period = format!("{}s", status_interval.as_secs()); "Key Vault status");
                }
                let next = (now + flush_interval).min(status.due());
                let wait = next.duration_since(clock.now()).unwrap_or_default();
                std::thread::sleep(wait.min(MAX_WAIT));
            }
        })
}

// ---------------------------------------------------------------------------------------------
// Hooks: one call at each place that counts. Each adds to the aggregates; none allocates once
// its series exists.

fn counter(key: &'static [&'static str], labels: Labels, val: f64) {
    global().counter(Series::new(key, labels), val);
}

fn sample_ms(key: &'static [&'static str], labels: Labels, d: Duration) {
    global().sample(Series::new(key, labels), d.as_secs_f32() * 1000.0);
}

/// A Key Vault REST call ended: `operation` is sign|create|get|list|update|delete, `outcome`
/// ok|4xx|429|5xx|transport (see [`outcome_of_status`]).
pub(crate) fn key_vault_call(operation: &'static str, outcome: &'static str) {
    let labels = Labels([("operation", operation), ("outcome", outcome)]);
    counter(KEY_VAULT_CALL, labels, 1.0);
}

/// The outcome label for a final HTTP status.
pub(crate) fn outcome_of_status(status: u16) -> &'static str {
    match status {
        200..=399 => "ok",
        429 => "429",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// How long a Key Vault sign took, retries included.
pub(crate) fn sign_elapsed(d: Duration) {
    sample_ms(SIGN_ELAPSED, Labels::NONE, d);
}

/// A request is retried; `reason` is 408|429|5xx|transport (see [`retry_reason_of_status`]).
/// `server_wait` is the wait the server asked for (`Retry-After` and the like), when it did.
pub(crate) fn http_retry(reason: &'static str, server_wait: Option<Duration>) {
    let labels = Labels::one("reason", reason);
    counter(HTTP_RETRY, labels, 1.0);
    if let Some(d) = server_wait {
        counter(HTTP_RETRY_AFTER_WAIT, labels, d.as_secs_f64());
    }
}

/// The retry label for a retryable HTTP status.
pub(crate) fn retry_reason_of_status(status: u16) -> &'static str {
    match status {
        408 => "408",
        429 => "429",
        _ => "5xx",
    }
}

/// One credential of the chain was asked for a token: counted by kind (see
/// [`credential_kind`]) and `outcome` ok|unavailable|error.
pub(crate) fn token_fetch(credential: &str, outcome: &'static str) {
    let labels = Labels([
        ("credential", credential_kind(credential)),
        ("outcome", outcome),
    ]);
    counter(TOKEN_FETCH, labels, 1.0);
}

/// The `credential` label for a credential's log name (the first matching prefix wins).
pub(crate) fn credential_kind(name: &str) -> &'static str {
    const KINDS: &[(&str, &str)] = &[
        ("ClientSecretCredential", "client_secret"),
        (
            "EnvironmentCredential (client certificate)",
            "client_certificate",
        ),
        ("EnvironmentCredential", "client_secret"),
        ("WorkloadIdentityCredential", "workload_identity"),
        ("ManagedIdentityCredential", "managed_identity"),
    ];
    KINDS
        .iter()
        .find(|(prefix, _)| name.starts_with(prefix))
        .map_or("other", |(_, kind)| kind)
}

/// A token request (through the whole credential chain) ended after `elapsed`.
pub(crate) fn token_fetch_elapsed(ok: bool, elapsed: Duration) {
    let labels = Labels::one("outcome", if ok { "ok" } else { "error" });
    sample_ms(TOKEN_FETCH_ELAPSED, labels, elapsed);
}

/// A key was deleted (or found already gone); `reason` is sweep|rotation.
pub(crate) fn key_deleted(reason: &'static str) {
    counter(KEY_DELETED, Labels::one("reason", reason), 1.0);
}

/// A shared key's version made by a peer (or converged on) was adopted.
pub(crate) fn shared_key_adoption() {
    counter(SHARED_KEY_ADOPTION, Labels::NONE, 1.0);
}

/// A rotation claim was written and read back; `outcome` is won|lost|not_written.
pub(crate) fn shared_key_claim(outcome: &'static str) {
    counter(SHARED_KEY_CLAIM, Labels::one("outcome", outcome), 1.0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::UNIX_EPOCH;

    fn call(op: &'static str, outcome: &'static str) -> Series {
        Series::new(
            KEY_VAULT_CALL,
            Labels([("operation", op), ("outcome", outcome)]),
        )
    }

    const SIGN: Series = Series::new(SIGN_ELAPSED, Labels::NONE);

    /// Records what it is sent; fails the calls whose number (from 1) is in `fail`.
    #[derive(Clone, Default)]
    struct Recorder {
        got: Arc<Mutex<Vec<Metric>>>,
        calls: Arc<AtomicU64>,
        reconnects: Arc<AtomicU64>,
        fail: Arc<Mutex<Vec<u64>>>,
    }
    impl Sink for Recorder {
        /// One call per metric, up to the first failed one (the rest are not sent).
        fn send_batch(&mut self, batch: &[Metric]) -> Vec<Result<(), SinkError>> {
            let mut out = Vec::new();
            for m in batch {
                let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
                if self.fail.lock().unwrap().contains(&n) {
                    out.push(Err(sink_error("host gone")));
                    break;
                }
                self.got.lock().unwrap().push(*m);
                out.push(Ok(()));
            }
            out
        }
        fn reconnect(&mut self) {
            self.reconnects.fetch_add(1, Ordering::SeqCst);
        }
    }
    impl Recorder {
        fn got(&self) -> Vec<Metric> {
            std::mem::take(&mut *self.got.lock().unwrap())
        }
        fn calls(&self) -> u64 {
            self.calls.load(Ordering::SeqCst)
        }
    }

    fn counter_sent(got: &[Metric], s: Series) -> f32 {
        got.iter()
            .filter(|m| m.kind == Kind::Counter && m.key == s.key && m.labels == s.labels)
            .map(|m| m.val)
            .sum()
    }

    fn samples_sent(got: &[Metric]) -> Vec<f32> {
        got.iter()
            .filter(|m| m.kind == Kind::Sample)
            .map(|m| m.val)
            .collect()
    }

    fn connected(cap: usize) -> (Registry, Recorder, Flusher, Status) {
        let r = Registry::new(cap);
        let rec = Recorder::default();
        r.connect(Box::new(rec.clone()));
        (
            r,
            rec,
            Flusher::default(),
            Status::new(UNIX_EPOCH, STATUS_INTERVAL),
        )
    }

    #[test]
    fn a_flush_sends_one_increment_per_counter_series_and_every_sample_under_the_cap() {
        let (r, rec, mut f, mut status) = connected(16);
        r.counter(call("sign", "ok"), 1.0);
        r.sample(SIGN, 5.0);
        r.counter(call("sign", "429"), 1.0);
        r.counter(call("sign", "ok"), 1.0);
        r.sample(SIGN, 7.0);
        r.counter(call("sign", "ok"), 1.0);
        // Nothing leaves before the flush.
        assert_eq!(rec.calls(), 0);
        f.flush(&r, &mut status, UNIX_EPOCH);
        let got = rec.got();
        assert_eq!(got.len(), 4, "{got:#?}");
        assert_eq!(counter_sent(&got, call("sign", "ok")), 3.0);
        assert_eq!(counter_sent(&got, call("sign", "429")), 1.0);
        assert_eq!(samples_sent(&got), vec![5.0, 7.0]);
        assert_eq!(
            got[0].full_key(),
            vec!["azure_key_vault", "key_vault", "call"]
        );
        // A quiet interval sends nothing.
        f.flush(&r, &mut status, UNIX_EPOCH + FLUSH_INTERVAL);
        assert_eq!(rec.got(), Vec::new());
        let line = status.take_if_due(UNIX_EPOCH + STATUS_INTERVAL).unwrap();
        assert_eq!(
            line,
            "key_vault.call{operation=sign,outcome=429}=1 \
             key_vault.call{operation=sign,outcome=ok}=3 \
             key_vault.sign.elapsed_time=count:2,mean:6,max:7"
        );
    }

    #[test]
    fn samples_beyond_the_cap_are_a_uniform_pick_and_the_rest_is_counted_as_dropped() {
        let (r, rec, mut f, mut status) = connected(100);
        for v in 0..10_000 {
            r.sample(SIGN, v as f32);
        }
        f.flush(&r, &mut status, UNIX_EPOCH);
        let got = rec.got();
        let kept = samples_sent(&got);
        assert_eq!(kept.len(), 100);
        // A uniform pick of 0..10000: about 10 values per tenth, none kept twice.
        for tenth in 0..10 {
            let lo = tenth as f32 * 1000.0;
            let n = kept
                .iter()
                .filter(|v| (lo..lo + 1000.0).contains(*v))
                .count();
            assert!((2..=25).contains(&n), "tenth {tenth}: {n} of {kept:?}");
        }
        let mut unique = kept.clone();
        unique.sort_by(f32::total_cmp);
        unique.dedup();
        assert_eq!(unique.len(), 100);
        assert_eq!(
            counter_sent(&got, Series::new(DROPPED, Labels::NONE)),
            9900.0
        );
        // The status line still covers every value.
        let line = status.take_if_due(UNIX_EPOCH + STATUS_INTERVAL).unwrap();
        assert_eq!(
            line,
            "telemetry.dropped=9900 key_vault.sign.elapsed_time=count:10000,mean:4999.5,max:9999"
        );
        // The next interval starts a fresh reservoir.
        r.sample(SIGN, 1.0);
        f.flush(&r, &mut status, UNIX_EPOCH + FLUSH_INTERVAL);
        assert_eq!(samples_sent(&rec.got()), vec![1.0]);
    }

    #[test]
    fn a_failed_send_keeps_the_counters_and_redials_after_a_backoff() {
        let (r, rec, mut f, mut status) = connected(16);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        // The first call fails: the host went away.
        rec.fail.lock().unwrap().push(1);
        r.counter(call("sign", "ok"), 1.0);
        r.sample(SIGN, 5.0);
        f.flush(&r, &mut status, t0);
        assert_eq!(rec.calls(), 1);
        assert_eq!(rec.got(), Vec::new());
        // Within the backoff nothing is tried; counters go on summing, samples are dropped.
        r.counter(call("sign", "ok"), 1.0);
        r.sample(SIGN, 6.0);
        f.flush(&r, &mut status, t0 + Duration::from_millis(500));
        assert_eq!(rec.calls(), 1);
        assert_eq!(rec.reconnects.load(Ordering::SeqCst), 0);
        // After it: re-dial, then the summed counters, the drop count and the new samples.
        r.counter(call("sign", "ok"), 1.0);
        r.sample(SIGN, 7.0);
        f.flush(&r, &mut status, t0 + RETRY_BACKOFF);
        assert_eq!(rec.reconnects.load(Ordering::SeqCst), 1);
        let got = rec.got();
        assert_eq!(counter_sent(&got, call("sign", "ok")), 3.0, "{got:#?}");
        assert_eq!(counter_sent(&got, Series::new(DROPPED, Labels::NONE)), 2.0);
        assert_eq!(samples_sent(&got), vec![7.0]);
        // Working again: the next flush sends at once.
        r.counter(call("get", "ok"), 1.0);
        f.flush(
            &r,
            &mut status,
            t0 + RETRY_BACKOFF + Duration::from_millis(1),
        );
        assert_eq!(counter_sent(&rec.got(), call("get", "ok")), 1.0);
    }

    #[test]
    fn a_host_that_stays_down_is_retried_less_and_less_often() {
        let (r, rec, mut f, mut status) = connected(16);
        rec.fail.lock().unwrap().extend(1..=1000);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut attempts_at = Vec::new();
        for s in 0..200u64 {
            r.counter(call("sign", "ok"), 1.0);
            let before = rec.calls();
            f.flush(&r, &mut status, t0 + Duration::from_secs(s));
            if rec.calls() > before {
                attempts_at.push(s);
            }
        }
        assert_eq!(attempts_at, vec![0, 1, 3, 7, 15, 31, 63, 123, 183]);
        // Once it answers, the whole sum arrives.
        rec.fail.lock().unwrap().clear();
        f.flush(&r, &mut status, t0 + Duration::from_secs(243));
        assert_eq!(counter_sent(&rec.got(), call("sign", "ok")), 200.0);
    }

    #[test]
    fn counters_wait_for_the_host_to_be_known_and_a_host_without_the_service_gets_nothing() {
        let r = Registry::new(16);
        let mut f = Flusher::default();
        let mut status = Status::new(UNIX_EPOCH, STATUS_INTERVAL);
        r.counter(call("create", "ok"), 1.0);
        f.flush(&r, &mut status, UNIX_EPOCH);
        let rec = Recorder::default();
        r.connect(Box::new(rec.clone()));
        f.flush(&r, &mut status, UNIX_EPOCH);
        assert_eq!(counter_sent(&rec.got(), call("create", "ok")), 1.0);

        r.disconnect();
        r.counter(call("sign", "ok"), 1.0);
        r.sample(SIGN, 1.0);
        f.flush(&r, &mut status, UNIX_EPOCH);
        assert_eq!(rec.calls(), 1);
        let line = status.take_if_due(UNIX_EPOCH + STATUS_INTERVAL).unwrap();
        assert_eq!(
            line,
            "key_vault.call{operation=create,outcome=ok}=1 \
             key_vault.call{operation=sign,outcome=ok}=1 \
             key_vault.sign.elapsed_time=count:1,mean:1,max:1"
        );
    }

    #[test]
    fn emitting_reuses_the_reservoirs_across_flushes() {
        let (r, _rec, mut f, mut status) = connected(8);
        for round in 0..3 {
            for v in 0..20 {
                r.sample(SIGN, v as f32);
            }
            let agg = r.lock_aggregates();
            assert_eq!(agg.samples[0].kept.capacity(), 8, "round {round}");
            drop(agg);
            f.flush(&r, &mut status, UNIX_EPOCH);
        }
        assert_eq!(f.spares.len(), 1);
    }

    #[test]
    fn status_line_is_hourly_and_counts_only_since_the_last_line() {
        let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_000_000));
        let mut status = Status::new(clock.now(), STATUS_INTERVAL);
        status.record_counter(&call("sign", "ok"), 2.0);
        status.record_samples(&SIGN, 1, 10.0, 10.0);
        status.record_samples(&SIGN, 1, 30.5, 30.5);
        clock.advance(Duration::from_secs(3599));
        assert_eq!(status.take_if_due(clock.now()), None);
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            status.take_if_due(clock.now()).unwrap(),
            "key_vault.call{operation=sign,outcome=ok}=2 \
             key_vault.sign.elapsed_time=count:2,mean:20.25,max:30.5"
        );
        status.record_counter(&call("delete", "5xx"), 1.0);
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
