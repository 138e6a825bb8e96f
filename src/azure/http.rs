//! HTTP plumbing shared by Key Vault, Entra ID and managed identity calls: a pooled `ureq`
//! agent (rustls with the system roots plus `SSL_CERT_FILE` / `SSL_CERT_DIR`), `http` and
//! `https` proxies from `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` / `NO_PROXY`, and the retry
//! policy (408/429/5xx and transport errors, `Retry-After` honored, bounded back-off slept
//! through the injectable [`Clock`]), all of a call within its operation's [`Deadline`]. Key
//! Vault requests also pass [`HttpClient::send_within`] their vault's throttle, which shares
//! its `429`s among all callers (src/azure/throttle.rs); token requests do not.
//!
//! Requests and responses are plain structs so the retry logic can be unit-tested with a
//! scripted [`Transport`]. Neither type implements a `Debug` that could print a header value
//! or a body: both can carry bearer tokens, client secrets and assertions.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use log::{debug, warn};

use crate::azure::deadline::{trim_float, Deadline, OPERATION_DEADLINE};
use crate::azure::settings::{env_get, EnvSnapshot};
use crate::azure::throttle::{
    NotAdmitted, Outcome, Throttle, Throttles, MAX_SHARED_PAUSE, MIN_ATTEMPT,
};
use crate::azure::types::AzureError;
use crate::clock::Clock;
use crate::uri::{parse_http_url, UrlError};

/// Longest attempt, so a black-holed server leaves time for one retry before the operation's
/// deadline (`deadline::OPERATION_DEADLINE`); every attempt is also cut to the time left.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(12);
const PROBE_CALL_TIMEOUT: Duration = Duration::from_secs(5);

// URLs --------------------------------------------------------------------------------------------

/// A parsed absolute `http(s)` URL ([`crate::uri::parse_http_url`], surrounding blanks
/// trimmed): just enough to build requests, compare hosts and pick a proxy. Scheme and host are
/// lower-cased; IPv6 literals keep their brackets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub scheme: String,
    pub host: String,
    pub port: Option<u16>,
    /// Path plus query, starting with `/`; the fragment is dropped.
    pub path_and_query: String,
}

/// Why [`Url::parse`] refused a string; the message quotes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?}: {kind}")]
pub struct UrlParseError {
    input: String,
    kind: UrlError,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, UrlParseError> {
        let s = s.trim();
        let uri = parse_http_url(s).map_err(|kind| UrlParseError {
            input: s.to_string(),
            kind,
        })?;
        let path_and_query = match uri.path_and_query().map_or("", |p| p.as_str()) {
            pq if pq.starts_with('/') => pq.to_string(),
            pq => format!("/{pq}"),
        };
        Ok(Url {
            scheme: uri.scheme_str().unwrap_or_default().to_ascii_lowercase(),
            host: uri.host().unwrap_or_default().to_ascii_lowercase(),
            port: uri.port_u16(),
            path_and_query,
        })
    }

    pub fn default_port(&self) -> u16 {
        if self.scheme == "https" {
            443
        } else {
            80
        }
    }

    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or_else(|| self.default_port())
    }

    /// `host[:port]`, the port omitted when it is the scheme's default.
    pub fn authority(&self) -> String {
        match self.port {
            Some(p) if p != self.default_port() => format!("{}:{p}", self.host),
            _ => self.host.clone(),
        }
    }

    /// `scheme://authority`, no trailing slash.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.authority())
    }

    /// Origin and path, no trailing `/`, of the setting `what` (= `raw`), which has no query.
    pub(crate) fn base_without_query(&self, what: &str, raw: &str) -> Result<String, AzureError> {
        let path = self.path().trim_end_matches('/');
        if self.query().is_some() {
            let e = format!("{what} must not have a query, got {raw:?}");
            return Err(AzureError::Config(e));
        }
        Ok(format!("{}{path}", self.origin()))
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        let pq = &self.path_and_query;
        pq.split_once('?').map_or(pq, |(path, _)| path)
    }

    pub fn query(&self) -> Option<&str> {
        self.path_and_query.split_once('?').map(|(_, q)| q)
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.origin(), self.path_and_query)
    }
}

/// Percent-encodes everything outside RFC 3986 "unreserved": safe in a path segment and in a
/// form or query value.
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `application/x-www-form-urlencoded` body.
pub(crate) fn form_encode(fields: &[(&str, &str)]) -> Vec<u8> {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes()
}

// Requests and responses --------------------------------------------------------------------------

/// One HTTP request. Not `Debug`: headers carry bearer tokens and bodies carry secrets.
pub struct HttpRequest {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    /// Short connect timeout and no retry on transport errors: used to probe IMDS, which is
    /// absent (and unroutable) outside Azure.
    pub probe: bool,
}

impl HttpRequest {
    pub fn new(method: &'static str, url: impl Into<String>) -> Self {
        HttpRequest {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: None,
            probe: false,
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn json_body(self, body: Vec<u8>) -> Self {
        self.body("application/json", body)
    }

    pub fn form_body(self, body: Vec<u8>) -> Self {
        self.body("application/x-www-form-urlencoded", body)
    }

    fn body(mut self, content_type: &str, body: Vec<u8>) -> Self {
        self.body = Some(body);
        self.header("Content-Type", content_type)
    }

    /// `METHOD scheme://host/path` without the query: what logs and errors may show.
    pub fn describe(&self) -> String {
        let no_query = self.url.split('?').next().unwrap_or(&self.url);
        format!("{} {no_query}", self.method)
    }
}

/// A complete response: status, headers (names lower-cased) and the whole body.
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Set by [`HttpClient`] on a retryable answer it did not retry because the server asked
    /// to wait this long, past the deadline: callers say so in their error.
    pub refused_wait: Option<Duration>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// `" (the vault asked to wait 20 s before a retry, ...)"` (`who` = "the vault") when a
    /// wait was refused, else empty: appended to the error made of this response.
    pub fn refused_wait_note(&self, who: &str) -> String {
        match self.refused_wait {
            Some(wait) => format!(
                " ({who} asked to wait {} s before a retry, which would end past the deadline \
                 of this operation; not retried)",
                trim_float(wait.as_secs_f64())
            ),
            None => String::new(),
        }
    }
}

impl fmt::Debug for HttpResponse {
    // The body may hold an access token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpResponse")
            .field("status", &self.status)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// A request that produced no HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportError {
    pub message: String,
    /// Connection refused/reset, timeouts, truncated bodies: worth another try. TLS
    /// verification failures and bad URLs are not.
    pub retryable: bool,
}

/// Sends one request, no retries. Implemented over `ureq` in production and by scripted
/// fakes in unit tests.
pub trait Transport: Send + Sync {
    /// The whole exchange (connect, send, read the full response) ends within `timeout`, or
    /// fails as a retryable timeout.
    fn execute(&self, req: &HttpRequest, timeout: Duration)
        -> Result<HttpResponse, TransportError>;
}

// Retry policy ------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub base_delay: Duration,
    /// Cap for computed back-offs. A server's `Retry-After` is honored as long as the wait
    /// ends before the deadline.
    pub max_delay: Duration,
    /// The deadline of a `send` made outside any Key Vault operation (which brings its own).
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(800),
            max_delay: Duration::from_secs(10),
            budget: OPERATION_DEADLINE,
        }
    }
}

impl RetryPolicy {
    /// Delay before retry number `retry` (0-based): base doubling, capped.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(20)).unwrap_or(u32::MAX);
        self.base_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }
}

/// Statuses that the Azure SDKs retry.
pub(crate) fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// The server's requested delay: `retry-after-ms`, `x-ms-retry-after-ms` (milliseconds), then
/// `Retry-After` (seconds or an HTTP date, relative to `now`). A date in the past is zero.
pub(crate) fn retry_after_hint(resp: &HttpResponse, now: SystemTime) -> Option<Duration> {
    let names = ["retry-after-ms", "x-ms-retry-after-ms"];
    let ms = names.iter().find_map(|name| {
        let ms = resp.header(name)?.trim().parse::<f64>().ok();
        ms.filter(|v| v.is_finite() && *v >= 0.0)
    });
    match ms {
        // `from_secs_f64` panics past `Duration::MAX`; such a hint just means "too long".
        Some(ms) => Some(Duration::try_from_secs_f64(ms / 1000.0).unwrap_or(Duration::MAX)),
        None => resp
            .header("retry-after")
            .and_then(|v| parse_retry_after(v, now)),
    }
}

/// `Retry-After` value: delta seconds or an HTTP date.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (0.0..1e9)
            .contains(&secs)
            .then(|| Duration::from_secs_f64(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

// Client ------------------------------------------------------------------------------------------

/// The transport plus the retry policy and the clock the back-offs sleep on.
#[derive(Clone)]
pub struct HttpClient {
    transport: Arc<dyn Transport>,
    clock: Arc<dyn Clock>,
    policy: RetryPolicy,
    /// The deadline [`HttpClient::send`] keeps to, when this client was made by `within`.
    deadline: Option<Deadline>,
    /// What Key Vault requests learn about each vault's limit (see `throttle`).
    throttles: Arc<Throttles>,
}

impl HttpClient {
    pub fn new(transport: Arc<dyn Transport>, clock: Arc<dyn Clock>, policy: RetryPolicy) -> Self {
        HttpClient {
            transport,
            clock,
            policy,
            deadline: None,
            throttles: Arc::new(Throttles::default()),
        }
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The same client, its `send` bound to `deadline`: for code that only takes a client
    /// (the certificate credential's token request).
    pub fn within(&self, deadline: Deadline) -> HttpClient {
        HttpClient {
            deadline: Some(deadline),
            ..self.clone()
        }
    }

    /// The shared throttle of a vault host (`host[:port]`), for [`HttpClient::send_within`].
    pub fn throttle_for(&self, authority: &str) -> Arc<Throttle> {
        self.throttles.for_host(authority, &self.clock)
    }

    /// [`HttpClient::send_within`] the deadline this client is bound to, else one of the
    /// policy's budget from now; no throttle.
    pub fn send(&self, req: &HttpRequest) -> Result<HttpResponse, AzureError> {
        let deadline = self
            .deadline
            .unwrap_or_else(|| Deadline::after(self.clock.as_ref(), self.policy.budget));
        self.send_within(req, deadline, None)
    }

    /// Sends `req`, retrying retryable statuses and transport errors per the policy, all of it
    /// before `deadline`: each attempt's timeout is cut to the time left, and a back-off or a
    /// server's `Retry-After` that would not leave `MIN_ATTEMPT` before the deadline is not
    /// waited for. Returns the final response whatever its status (callers map non-2xx to
    /// errors; [`HttpResponse::refused_wait`] tells them a wait was refused), or the last
    /// transport error.
    ///
    /// A Key Vault request passes the vault's shared `throttle`: every attempt waits for its
    /// turn there (shared pause, learned rate, FIFO), and reports how the vault answered. A
    /// `429` is retried for as long as the deadline allows, not a fixed number of times (its
    /// `Retry-After` is honored if it ends in time, else the answer is returned with
    /// [`HttpResponse::refused_wait`]); 5xx and transport errors keep the policy's bounded
    /// retries. When no attempt can start in time the last answer is returned, or, if that was
    /// a `429` or nothing, an [`AzureError::Throttled`]. Without a throttle a `429` is one more
    /// retryable status.
    pub fn send_within(
        &self,
        req: &HttpRequest,
        deadline: Deadline,
        throttle: Option<&Throttle>,
    ) -> Result<HttpResponse, AzureError> {
        let clock = self.clock.as_ref();
        let cap = if req.probe {
            PROBE_CALL_TIMEOUT
        } else {
            CALL_TIMEOUT
        };
        // Whether waiting `delay` still leaves a retry time to run.
        let fits = |delay: Duration| delay.saturating_add(MIN_ATTEMPT) <= deadline.remaining(clock);
        let transport_error = |e: &TransportError| {
            AzureError::Transport(format!("{}: {}", req.describe(), e.message))
        };
        // The answer, marked as asking for a wait `h` that does not fit.
        let refuse_wait = |mut resp: HttpResponse, h: Duration| {
            warn!(
                "{} returned HTTP {} asking to wait {} s, past {} ({} s left); not waiting",
                req.describe(),
                resp.status,
                trim_float(h.as_secs_f64()),
                deadline.describe(),
                trim_float(deadline.remaining(clock).as_secs_f64())
            );
            resp.refused_wait = Some(h);
            resp
        };
        let mut turn = throttle.map(|t| (t, t.ticket()));
        // Bounded retries (5xx, transport) and `429`s retried through the throttle.
        let mut retry = 0u32;
        let mut throttled = 0u32;
        // The answer before the current attempt, for when the throttle refuses a retry.
        let mut last: Option<Result<HttpResponse, AzureError>> = None;
        loop {
            let permit = match turn.as_mut() {
                None => None,
                Some((t, ticket)) => match t.acquire(ticket, &deadline) {
                    Ok(p) => Some((*t, p)),
                    Err(why) => return Self::not_admitted(req, why, last, throttled),
                },
            };
            let record = |outcome| {
                if let Some((t, p)) = &permit {
                    t.record(p, outcome);
                }
            };
            let left = deadline.remaining(clock);
            if left.is_zero() {
                return Err(AzureError::Transport(format!(
                    "{}: {} passed before the request could be sent",
                    req.describe(),
                    deadline.describe()
                )));
            }
            let (delay, reason) = match self.transport.execute(req, cap.min(left)) {
                Ok(resp) if resp.status == 429 && permit.is_some() => {
                    let hint = retry_after_hint(&resp, clock.now());
                    record(Outcome::Throttled(hint));
                    throttled += 1;
                    if let Some(h) = hint.filter(|h| !fits(*h)) {
                        return Ok(refuse_wait(resp, h));
                    }
                    debug!(
                        "{} throttled (HTTP 429, {throttled} so far); waiting for its turn",
                        req.describe()
                    );
                    crate::telemetry::http_retry("429", hint);
                    last = Some(Ok(resp));
                    // The shared pause covers the hint unless it was capped: wait out the rest
                    // of a longer one on our own, out of the queue.
                    if let Some(h) = hint.filter(|h| *h > MAX_SHARED_PAUSE) {
                        self.clock.sleep(h);
                    }
                    continue;
                }
                Ok(resp) => {
                    record(if resp.status >= 500 {
                        Outcome::Neutral
                    } else {
                        Outcome::Accepted
                    });
                    if !is_retryable_status(resp.status) || retry >= self.policy.max_retries {
                        return Ok(resp);
                    }
                    let hint = retry_after_hint(&resp, clock.now());
                    let delay = hint.unwrap_or_else(|| self.policy.backoff(retry));
                    if !fits(delay) {
                        return Ok(match hint {
                            Some(h) => refuse_wait(resp, h),
                            None => resp,
                        });
                    }
                    let reason = crate::telemetry::retry_reason_of_status(resp.status);
                    crate::telemetry::http_retry(reason, hint.map(|_| delay));
                    let reason = format!("HTTP {}", resp.status);
                    last = Some(Ok(resp));
                    (delay, reason)
                }
                Err(e) => {
                    record(Outcome::Neutral);
                    let delay = self.policy.backoff(retry);
                    if !e.retryable || req.probe || retry >= self.policy.max_retries {
                        return Err(transport_error(&e));
                    }
                    if !fits(delay) {
                        return Err(AzureError::Transport(format!(
                            "{}: {} (no time left for a retry within {})",
                            req.describe(),
                            e.message,
                            deadline.describe()
                        )));
                    }
                    crate::telemetry::http_retry("transport", None);
                    last = Some(Err(transport_error(&e)));
                    (delay, e.message)
                }
            };
            warn!(
                "{} failed ({reason}); retry {} of {} in {:.1}s",
                req.describe(),
                retry + 1,
                self.policy.max_retries,
                delay.as_secs_f64()
            );
            // Back-offs are slept out of the throttle's queue, so they never hold up the
            // requests behind.
            self.clock.sleep(delay);
            retry += 1;
        }
    }

    /// What [`HttpClient::send_within`] returns when the throttle could not admit the next
    /// attempt before the deadline: the last answer if it was a 5xx or a lost request (it
    /// stands as it was: a create may have happened), else an [`AzureError::Throttled`].
    fn not_admitted(
        req: &HttpRequest,
        why: NotAdmitted,
        last: Option<Result<HttpResponse, AzureError>>,
        throttled: u32,
    ) -> Result<HttpResponse, AzureError> {
        match last {
            Some(prev) if !matches!(&prev, Ok(r) if r.status == 429) => prev,
            _ => {
                warn!("{}: {why}", req.describe());
                let sent = match throttled {
                    0 => "nothing was sent".to_string(),
                    n => format!("the vault answered HTTP 429 to all {n} attempts"),
                };
                Err(AzureError::Throttled(format!(
                    "{}: {why}; {sent}",
                    req.describe()
                )))
            }
        }
    }
}

// Proxy selection ---------------------------------------------------------------------------------

/// One `NO_PROXY` entry (curl/Go semantics).
#[derive(Debug, Clone, PartialEq, Eq)]
enum NoProxyEntry {
    All,
    /// A name and an optional port: `example.com`, `.example.com` and `*.example.com` all match
    /// `example.com` and its subdomains (curl semantics); a port restricts the match to it.
    Domain(String, Option<u16>),
    /// An address and an optional port.
    Ip(IpAddr, Option<u16>),
    /// A network and its prefix length.
    Cidr(IpAddr, u8),
}

/// Parsed `NO_PROXY` list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NoProxy {
    entries: Vec<NoProxyEntry>,
}

impl NoProxy {
    pub(crate) fn parse(value: &str) -> NoProxy {
        let entries = value
            .split([',', ' ', '\t'])
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .filter_map(parse_no_proxy_entry)
            .collect();
        NoProxy { entries }
    }

    /// Whether a connection to `host:port` must bypass the proxy.
    pub(crate) fn matches(&self, host: &str, port: u16) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let ip = host.parse::<IpAddr>().ok();
        self.entries.iter().any(|e| match e {
            NoProxyEntry::All => true,
            NoProxyEntry::Domain(name, p) => {
                p.is_none_or(|p| p == port)
                    && (host == *name || host.ends_with(&format!(".{name}")))
            }
            NoProxyEntry::Ip(e, p) => p.is_none_or(|p| p == port) && ip == Some(*e),
            NoProxyEntry::Cidr(net, prefix) => ip.is_some_and(|ip| in_cidr(ip, *net, *prefix)),
        })
    }
}

fn parse_no_proxy_entry(e: &str) -> Option<NoProxyEntry> {
    if e == "*" {
        return Some(NoProxyEntry::All);
    }
    if let Some((net, prefix)) = e.split_once('/') {
        let net = net.parse::<IpAddr>().ok()?;
        let prefix = prefix.parse::<u8>().ok()?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        return (prefix <= max).then_some(NoProxyEntry::Cidr(net, prefix));
    }
    if let Ok(ip) = e
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Some(NoProxyEntry::Ip(ip, None));
    }
    // `[v6]:port`, `v4:port`, `name:port`
    let (host, port) = if let Some(rest) = e.strip_prefix('[') {
        let (h, p) = rest.split_once(']')?;
        (h, p.strip_prefix(':'))
    } else {
        match e.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (e, None),
        }
    };
    let port = port.map(str::parse::<u16>).transpose().ok()?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(NoProxyEntry::Ip(ip, port));
    }
    let name = host
        .trim_start_matches('*')
        .trim_start_matches('.')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    (!name.is_empty()).then_some(NoProxyEntry::Domain(name, port))
}

fn in_cidr(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Loopback and link-local (IMDS) hosts are never proxied: a proxy cannot reach them.
pub(crate) fn never_proxied(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.is_loopback() || v4.is_link_local(),
        Ok(IpAddr::V6(v6)) => v6.is_loopback() || (v6.segments()[0] & 0xffc0) == 0xfe80,
        Err(_) => false,
    }
}

/// The first of `names` that is set, with its value.
pub(crate) fn first_env<'a>(env: &'a EnvSnapshot, names: &[&'a str]) -> Option<(&'a str, &'a str)> {
    names.iter().find_map(|n| env_get(env, n).map(|v| (*n, v)))
}

/// The proxy named by the first of `names` that is set. Only `http` and `https` (CONNECT)
/// proxies are supported; a value without a scheme is an `http` proxy, as curl and the Go SDK
/// read it. Any other scheme is a configuration error: ureq, built without SOCKS support,
/// would otherwise connect directly, bypassing the proxy the operator asked for.
pub(crate) fn proxy_from_env(
    env: &EnvSnapshot,
    names: &[&str],
) -> Result<Option<ureq::Proxy>, AzureError> {
    let Some((name, value)) = first_env(env, names) else {
        return Ok(None);
    };
    let with_scheme = match value.split_once("://") {
        Some((scheme, _))
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") =>
        {
            value.to_string()
        }
        Some((scheme, _)) => {
            // The scheme only: the rest of the value may hold the proxy's password.
            let shown: String = scheme.chars().take(20).collect();
            return Err(AzureError::Config(format!(
                "{name} uses the proxy scheme {shown:?}; only http and https proxies are \
                 supported (a value without a scheme is an http proxy)"
            )));
        }
        None => format!("http://{value}"),
    };
    let invalid = || AzureError::Config(format!("{name} is not a valid proxy URL"));
    // ureq takes `proxy:port` (a port that is no number) as port 80: check `host[:port]` first
    // (without the `user:password@` a proxy URL may carry).
    let rest = with_scheme.split_once("://").map_or("", |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    parse_http_url(&format!("http://{host_port}")).map_err(|_| invalid())?;
    ureq::Proxy::new(&with_scheme)
        .map(Some)
        .map_err(|_| invalid())
}

// TLS roots ---------------------------------------------------------------------------------------

/// Well-known CA bundle locations, used when `SSL_CERT_FILE`/`SSL_CERT_DIR` made
/// rustls-native-certs skip the platform store (we want the system roots *plus* those).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The certificates of a PEM file; none when it cannot be read.
fn pem_file(path: &Path) -> Vec<Vec<u8>> {
    std::fs::read(path).map_or_else(|_| Vec::new(), |data| pem_certs(&data))
}

fn pem_certs(data: &[u8]) -> Vec<Vec<u8>> {
    pem::parse_many(data)
        .map(|items| {
            items
                .into_iter()
                .filter(|p| p.tag() == "CERTIFICATE" || p.tag() == "TRUSTED CERTIFICATE")
                .map(|p| p.into_contents())
                .collect()
        })
        .unwrap_or_default()
}

/// System roots plus the certificates of `SSL_CERT_FILE` and every file in `SSL_CERT_DIR`
/// (`:`-separated). An unreadable or empty `SSL_CERT_FILE` is a configuration error: the
/// operator asked for it explicitly.
pub(crate) fn load_root_certs(env: &EnvSnapshot) -> Result<Vec<Vec<u8>>, AzureError> {
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        debug!("loading system CA certificates: {e}");
    }
    let mut roots: Vec<Vec<u8>> = native.certs.iter().map(|c| c.as_ref().to_vec()).collect();
    let process_overrides =
        std::env::var_os("SSL_CERT_FILE").is_some() || std::env::var_os("SSL_CERT_DIR").is_some();
    if process_overrides || roots.is_empty() {
        if let Some(bundle) = SYSTEM_BUNDLES.iter().find(|p| Path::new(p).is_file()) {
            roots.extend(pem_file(Path::new(bundle)));
        }
    }
    if let Some(file) = env_get(env, "SSL_CERT_FILE") {
        let data = std::fs::read(file).map_err(|e| {
            AzureError::Config(format!("SSL_CERT_FILE {file:?} cannot be read: {e}"))
        })?;
        let certs = pem_certs(&data);
        if certs.is_empty() {
            return Err(AzureError::Config(format!(
                "SSL_CERT_FILE {file:?} contains no PEM certificate"
            )));
        }
        roots.extend(certs);
    }
    if let Some(dirs) = env_get(env, "SSL_CERT_DIR") {
        for dir in dirs.split(':').filter(|d| !d.is_empty()) {
            match std::fs::read_dir(dir) {
                Ok(entries) => {
                    let files = entries.flatten().map(|e| e.path()).filter(|p| p.is_file());
                    files.for_each(|path| roots.extend(pem_file(&path)));
                }
                Err(e) => warn!("SSL_CERT_DIR entry {dir:?} cannot be read: {e}"),
            }
        }
    }
    roots.sort();
    roots.dedup();
    if roots.is_empty() {
        return Err(AzureError::Config(
            "no trusted CA certificates found (system store empty; set SSL_CERT_FILE or SSL_CERT_DIR)"
                .into(),
        ));
    }
    Ok(roots)
}

/// Whether the plugin's logger may emit a record. `ureq_proto` hex-dumps every byte sent and
/// received at TRACE level (`Authorization` headers, client secrets in token requests, access
/// tokens in responses), so those records must be dropped whatever the configured level.
pub fn log_record_allowed(target: &str, level: log::Level) -> bool {
    !(level == log::Level::Trace && (target == "ureq_proto" || target.starts_with("ureq_proto::")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// Replays scripted outcomes and counts calls.
    pub(crate) struct Scripted {
        pub outcomes: Mutex<VecDeque<Result<HttpResponse, TransportError>>>,
        pub calls: Mutex<usize>,
    }

    impl Scripted {
        pub(crate) fn new(outcomes: Vec<Result<HttpResponse, TransportError>>) -> Self {
            Scripted {
                outcomes: Mutex::new(outcomes.into()),
                calls: Mutex::new(0),
            }
        }
        pub(crate) fn calls(&self) -> usize {
            *self.calls.lock().unwrap()
        }
    }

    impl Transport for Scripted {
        fn execute(
            &self,
            _req: &HttpRequest,
            _timeout: Duration,
        ) -> Result<HttpResponse, TransportError> {
            *self.calls.lock().unwrap() += 1;
            self.outcomes
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or_else(|| Ok(resp(200, &[])))
        }
    }

    pub(crate) fn resp(status: u16, headers: &[(&str, &str)]) -> HttpResponse {
        HttpResponse {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
                .collect(),
            body: Vec::new(),
            refused_wait: None,
        }
    }

    fn transport_err(retryable: bool) -> Result<HttpResponse, TransportError> {
        Err(TransportError {
            message: "connection reset".into(),
            retryable,
        })
    }

    fn client(
        outcomes: Vec<Result<HttpResponse, TransportError>>,
    ) -> (HttpClient, Arc<Scripted>, ManualClock) {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let t = Arc::new(Scripted::new(outcomes));
        let c = HttpClient::new(t.clone(), Arc::new(clock.clone()), RetryPolicy::default());
        (c, t, clock)
    }

    #[test]
    fn backoff_schedule_doubles_from_800ms_and_caps() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(0), Duration::from_millis(800));
        assert_eq!(p.backoff(1), Duration::from_millis(1600));
        assert_eq!(p.backoff(2), Duration::from_millis(3200));
        assert_eq!(p.backoff(3), Duration::from_millis(6400));
        assert_eq!(p.backoff(4), Duration::from_secs(10));
        assert_eq!(p.backoff(63), Duration::from_secs(10));
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after(" 1.5 ", now),
            Some(Duration::from_millis(1500))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(7));
        assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(7)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(7));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[test]
    fn ms_headers_take_precedence() {
        let now = SystemTime::UNIX_EPOCH;
        let r = resp(429, &[("Retry-After", "9"), ("x-ms-retry-after-ms", "250")]);
        assert_eq!(retry_after_hint(&r, now), Some(Duration::from_millis(250)));
        let r = resp(
            429,
            &[("retry-after-ms", "100"), ("x-ms-retry-after-ms", "250")],
        );
        assert_eq!(retry_after_hint(&r, now), Some(Duration::from_millis(100)));
        let r = resp(429, &[("Retry-After", "3")]);
        assert_eq!(retry_after_hint(&r, now), Some(Duration::from_secs(3)));
        assert_eq!(retry_after_hint(&resp(429, &[]), now), None);
    }

    #[test]
    fn retries_statuses_with_backoff_then_succeeds() {
        let (c, t, clock) = client(vec![
            Ok(resp(503, &[])),
            Ok(resp(500, &[])),
            Ok(resp(429, &[("Retry-After", "2")])),
            Ok(resp(200, &[])),
        ]);
        let r = c.send(&HttpRequest::new("GET", "https://x/")).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(t.calls(), 4);
        assert_eq!(
            clock.slept(),
            vec![
                Duration::from_millis(800),
                Duration::from_millis(1600),
                Duration::from_secs(2)
            ]
        );
    }

    /// Every attempt times out (the clock advances by the attempt's timeout).
    struct BlackHole {
        clock: ManualClock,
        calls: Mutex<usize>,
    }

    impl Transport for BlackHole {
        fn execute(
            &self,
            _req: &HttpRequest,
            timeout: Duration,
        ) -> Result<HttpResponse, TransportError> {
            *self.calls.lock().unwrap() += 1;
            self.clock.advance(timeout);
            Err(TransportError {
                message: "timed out".into(),
                retryable: true,
            })
        }
    }

    #[test]
    fn a_black_holed_server_fails_within_spires_rpc_deadline() {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let start = clock.now();
        let t = Arc::new(BlackHole {
            clock: clock.clone(),
            calls: Mutex::new(0),
        });
        let c = HttpClient::new(t.clone(), Arc::new(clock.clone()), RetryPolicy::default());
        assert!(c.send(&HttpRequest::new("POST", "https://x/sign")).is_err());
        assert_eq!(*t.calls.lock().unwrap(), 2);
        let spent = clock.now().duration_since(start).unwrap();
        assert!(spent < Duration::from_secs(30), "{spent:?}");
    }

    #[test]
    fn gives_up_after_three_retries_returning_last_response() {
        let (c, t, clock) = client(vec![
            Ok(resp(503, &[])),
            Ok(resp(503, &[])),
            Ok(resp(503, &[])),
            Ok(resp(504, &[])),
            Ok(resp(200, &[])),
        ]);
        let r = c.send(&HttpRequest::new("GET", "https://x/")).unwrap();
        assert_eq!(r.status, 504);
        assert_eq!(t.calls(), 4);
        assert_eq!(clock.slept().len(), 3);
    }

    #[test]
    fn non_retryable_statuses_are_returned_at_once() {
        for status in [400u16, 401, 403, 404, 409] {
            let (c, t, clock) = client(vec![Ok(resp(status, &[])), Ok(resp(200, &[]))]);
            let r = c.send(&HttpRequest::new("GET", "https://x/")).unwrap();
            assert_eq!(r.status, status);
            assert_eq!(t.calls(), 1);
            assert!(clock.slept().is_empty());
        }
    }

    #[test]
    fn hint_past_the_deadline_is_not_waited_for() {
        let (c, t, clock) = client(vec![
            Ok(resp(429, &[("Retry-After", "30")])),
            Ok(resp(200, &[])),
        ]);
        let r = c.send(&HttpRequest::new("GET", "https://x/")).unwrap();
        assert_eq!(r.status, 429);
        assert_eq!(r.refused_wait, Some(Duration::from_secs(30)));
        assert!(r
            .refused_wait_note("the vault")
            .contains("the vault asked to wait 30 s before a retry"));
        assert_eq!(t.calls(), 1);
        assert!(clock.slept().is_empty());
        // A long hint that ends in time is honored (the cap is for computed back-offs).
        let (c, t, clock) = client(vec![
            Ok(resp(503, &[("Retry-After", "15")])),
            Ok(resp(200, &[])),
        ]);
        let r = c.send(&HttpRequest::new("GET", "https://x/")).unwrap();
        assert_eq!((r.status, r.refused_wait), (200, None));
        assert_eq!(t.calls(), 2);
        assert_eq!(clock.slept(), vec![Duration::from_secs(15)]);
    }

    /// One scripted answer.
    pub(crate) type Answer = fn() -> Result<HttpResponse, TransportError>;

    /// Answers from a script, each answer taking its time on the manual clock, or times out
    /// (after the attempt's timeout) when it would take longer; records each attempt's URL,
    /// start and timeout. The last answer repeats.
    pub(crate) struct Timed {
        clock: ManualClock,
        script: Mutex<VecDeque<(Duration, Answer)>>,
        pub attempts: Mutex<Vec<(String, SystemTime, Duration)>>,
    }

    impl Timed {
        pub(crate) fn new(clock: &ManualClock, script: Vec<(Duration, Answer)>) -> Self {
            Timed {
                clock: clock.clone(),
                script: Mutex::new(script.into()),
                attempts: Mutex::new(Vec::new()),
            }
        }

        /// (URL, start relative to `origin`, timeout) of every attempt since `origin`.
        pub(crate) fn attempts_since(
            &self,
            origin: SystemTime,
        ) -> Vec<(String, Duration, Duration)> {
            self.attempts
                .lock()
                .unwrap()
                .iter()
                .filter_map(|(u, at, t)| Some((u.clone(), at.duration_since(origin).ok()?, *t)))
                .collect()
        }
    }

    impl Transport for Timed {
        fn execute(
            &self,
            req: &HttpRequest,
            timeout: Duration,
        ) -> Result<HttpResponse, TransportError> {
            self.attempts
                .lock()
                .unwrap()
                .push((req.url.clone(), Clock::now(&self.clock), timeout));
            let (takes, answer) = {
                let mut script = self.script.lock().unwrap();
                let next = if script.len() > 1 {
                    script.pop_front()
                } else {
                    script.front().copied()
                };
                next.expect("an empty script")
            };
            if takes > timeout {
                self.clock.advance(timeout);
                return Err(TransportError {
                    message: "timed out".into(),
                    retryable: true,
                });
            }
            self.clock.advance(takes);
            answer()
        }
    }

    #[test]
    fn one_deadline_bounds_attempts_and_waits() {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let start = Clock::now(&clock);
        let t = Arc::new(Timed::new(
            &clock,
            vec![(Duration::from_secs(2), || {
                Ok(resp(429, &[("Retry-After", "8")]))
            })],
        ));
        let c = HttpClient::new(t.clone(), Arc::new(clock.clone()), RetryPolicy::default());
        let deadline = Deadline::after(&clock, Duration::from_secs(25));
        let r = c
            .send_within(&HttpRequest::new("POST", "https://x/sign"), deadline, None)
            .unwrap();
        // 2 s + 8 s + 2 s + 8 s + 2 s = 22 s; another 8 s wait would end at 30 s.
        assert_eq!(r.status, 429);
        assert_eq!(r.refused_wait, Some(Duration::from_secs(8)));
        assert_eq!(clock.slept(), vec![Duration::from_secs(8); 2]);
        let attempts = t.attempts_since(start);
        assert_eq!(attempts.len(), 3);
        for (_, at, timeout) in &attempts {
            // No attempt may outlive the deadline: its timeout is cut to the time left.
            assert!(*at + *timeout <= Duration::from_secs(25), "{attempts:?}");
        }
        assert_eq!(attempts[2].2, Duration::from_secs(5));
        assert_eq!(
            Clock::now(&clock).duration_since(start).unwrap(),
            Duration::from_secs(22)
        );
        // Past the deadline nothing is sent at all.
        clock.advance(Duration::from_secs(10));
        let e = c
            .send_within(&HttpRequest::new("POST", "https://x/sign"), deadline, None)
            .unwrap_err();
        assert!(
            matches!(&e, AzureError::Transport(m) if m.contains("the 25 s deadline of this operation passed")),
            "{e:?}"
        );
        assert_eq!(t.attempts.lock().unwrap().len(), 3);
    }

    #[test]
    fn transport_errors_retry_unless_fatal_or_probe() {
        let (c, t, clock) = client(vec![transport_err(true), Ok(resp(200, &[]))]);
        assert_eq!(
            c.send(&HttpRequest::new("GET", "https://x/"))
                .unwrap()
                .status,
            200
        );
        assert_eq!(t.calls(), 2);
        assert_eq!(clock.slept(), vec![Duration::from_millis(800)]);

        let (c, t, _) = client(vec![transport_err(false), Ok(resp(200, &[]))]);
        let e = c
            .send(&HttpRequest::new("GET", "https://x/a?b=c"))
            .unwrap_err();
        assert_eq!(t.calls(), 1);
        assert_eq!(
            e,
            AzureError::Transport("GET https://x/a: connection reset".into())
        );

        let (c, t, _) = client(vec![transport_err(true), Ok(resp(200, &[]))]);
        let mut probe = HttpRequest::new("GET", "http://127.0.0.1:1/");
        probe.probe = true;
        assert!(c.send(&probe).is_err());
        assert_eq!(t.calls(), 1);

        let (c, t, clock) = client((0..5).map(|_| transport_err(true)).collect());
        assert!(matches!(
            c.send(&HttpRequest::new("GET", "https://x/")),
            Err(AzureError::Transport(_))
        ));
        assert_eq!(t.calls(), 4);
        assert_eq!(clock.slept().len(), 3);
    }

    #[test]
    fn url_parsing() {
        let u = Url::parse("HTTPS://My.Vault.Azure.NET:443/keys?api-version=7.6#frag").unwrap();
        assert_eq!(u.scheme, "https");
        assert_eq!(u.host, "my.vault.azure.net");
        assert_eq!(u.port, Some(443));
        assert_eq!(u.authority(), "my.vault.azure.net");
        assert_eq!(u.path(), "/keys");
        assert_eq!(u.query(), Some("api-version=7.6"));
        let u = Url::parse("https://127.0.0.1:8443").unwrap();
        assert_eq!(u.authority(), "127.0.0.1:8443");
        assert_eq!(u.path_and_query, "/");
        let u = Url::parse("http://[::1]:80/x").unwrap();
        assert_eq!(u.host, "[::1]");
        assert_eq!(u.origin(), "http://[::1]");
        assert!(Url::parse("ftp://x/").is_err());
        assert!(Url::parse("https://user:pw@x/").is_err());
        assert!(Url::parse("https://:443/").is_err());
        assert!(Url::parse("https://x:99999/").is_err());
        assert!(Url::parse("vault.azure.net").is_err());
    }

    #[test]
    fn percent_and_form_encoding() {
        assert_eq!(percent_encode("a-Z_0.~"), "a-Z_0.~");
        assert_eq!(percent_encode("a b/c+&="), "a%20b%2Fc%2B%26%3D");
        assert_eq!(
            form_encode(&[("scope", "https://vault.azure.net/.default"), ("x", "1")]),
            b"scope=https%3A%2F%2Fvault.azure.net%2F.default&x=1".to_vec()
        );
    }

    #[test]
    fn no_proxy_matching() {
        let np = NoProxy::parse("example.com, .internal.net,*.corp, 10.0.0.0/8 ,192.168.1.7,host:8443,[fd00::1],fd01::/16");
        assert!(np.matches("example.com", 443));
        assert!(np.matches("a.example.com", 443));
        assert!(!np.matches("badexample.com", 443));
        assert!(np.matches("x.internal.net", 443));
        assert!(np.matches("internal.net", 443));
        assert!(np.matches("a.b.corp", 443));
        assert!(np.matches("10.1.2.3", 443));
        assert!(!np.matches("11.1.2.3", 443));
        assert!(np.matches("192.168.1.7", 80));
        assert!(!np.matches("192.168.1.8", 80));
        assert!(np.matches("host", 8443));
        assert!(!np.matches("host", 443));
        assert!(np.matches("[fd00::1]", 443));
        assert!(np.matches("fd01:2::3", 443));
        assert!(!np.matches("fd02::3", 443));
        assert!(np.matches("EXAMPLE.COM.", 443));
        assert!(NoProxy::parse("*").matches("anything", 1));
        assert!(!NoProxy::parse("").matches("anything", 1));
    }

    #[test]
    fn loopback_and_link_local_bypass_proxies() {
        assert!(never_proxied("127.0.0.1"));
        assert!(never_proxied("localhost"));
        assert!(never_proxied("169.254.169.254"));
        assert!(never_proxied("[::1]"));
        assert!(!never_proxied("vault.azure.net"));
        assert!(!never_proxied("10.0.0.1"));
    }

    #[test]
    fn only_http_and_https_proxies_are_accepted() {
        let env_with = |name: &str, value: &str| {
            let mut env = EnvSnapshot::new();
            env.insert(name.to_string(), value.to_string());
            env
        };
        let names = ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"];
        for (name, value, host, port) in [
            (
                "HTTPS_PROXY",
                "http://proxy.example:3128",
                "proxy.example",
                3128,
            ),
            (
                "https_proxy",
                "HTTPS://secure.example",
                "secure.example",
                443,
            ),
            (
                "ALL_PROXY",
                "user:pw@proxy.example:8080",
                "proxy.example",
                8080,
            ),
            // No scheme: an http proxy, as curl and the Go SDK read it.
            ("all_proxy", "proxy:3128", "proxy", 3128),
        ] {
            let proxy = proxy_from_env(&env_with(name, value), &names)
                .unwrap()
                .unwrap();
            assert_eq!((proxy.host(), proxy.port()), (host, port), "{value}");
            assert!(matches!(
                proxy.protocol(),
                ureq::ProxyProtocol::Http | ureq::ProxyProtocol::Https
            ));
        }
        for (name, value, scheme) in [
            ("HTTPS_PROXY", "socks5://proxy.example:1080", "socks5"),
            ("https_proxy", "socks4://proxy.example:1080", "socks4"),
            (
                "ALL_PROXY",
                "SOCKS5H://user:hunter2@proxy.example",
                "SOCKS5H",
            ),
            ("all_proxy", "ftp://proxy.example", "ftp"),
        ] {
            let e = proxy_from_env(&env_with(name, value), &names).unwrap_err();
            let AzureError::Config(m) = &e else {
                panic!("{value}: {e:?}");
            };
            assert!(
                m.starts_with(&format!("{name} uses the proxy scheme \"{scheme}\"")),
                "{m}"
            );
            assert!(m.contains("only http and https"), "{m}");
            assert!(!m.contains("hunter2"), "{m}");
        }
        for garbage in [
            "http://",
            "proxy:port",
            "a b:80",
            "http://[::1:80",
            "http://user:pw@",
            "proxy:99999",
        ] {
            let e = proxy_from_env(&env_with("HTTPS_PROXY", garbage), &names)
                .map(|p| p.map(|p| format!("{}:{}", p.host(), p.port())))
                .unwrap_err();
            assert_eq!(
                e,
                AzureError::Config("HTTPS_PROXY is not a valid proxy URL".into()),
                "{garbage}"
            );
        }
        // The transport refuses to start rather than connect directly.
        let e = crate::azure::transport::UreqTransport::from_env(&env_with(
            "ALL_PROXY",
            "socks5://p:1080",
        ))
        .err()
        .unwrap();
        assert!(matches!(e, AzureError::Config(m) if m.contains("ALL_PROXY")));
        assert!(proxy_from_env(&EnvSnapshot::new(), &names)
            .unwrap()
            .is_none());
    }

    #[test]
    fn wire_dumps_are_not_loggable() {
        assert!(!log_record_allowed("ureq_proto::util", log::Level::Trace));
        assert!(!log_record_allowed("ureq_proto", log::Level::Trace));
        assert!(log_record_allowed("ureq_proto::client", log::Level::Debug));
        assert!(log_record_allowed("ureq::run", log::Level::Trace));
        assert!(log_record_allowed("azkv::azure::http", log::Level::Trace));
    }

    #[test]
    fn bad_ssl_cert_file_is_a_config_error() {
        let mut env = EnvSnapshot::new();
        env.insert("SSL_CERT_FILE".into(), "/nonexistent/ca.pem".into());
        assert!(
            matches!(load_root_certs(&env), Err(AzureError::Config(m)) if m.contains("SSL_CERT_FILE"))
        );
    }

    #[test]
    fn ssl_cert_file_adds_to_roots() {
        let ca = rcgen::generate_simple_self_signed(vec!["test-ca.invalid".to_string()]).unwrap();
        let dir = std::env::temp_dir().join(format!("azkv-roots-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ca.pem");
        std::fs::write(&file, ca.cert.pem()).unwrap();
        let mut env = EnvSnapshot::new();
        env.insert("SSL_CERT_FILE".into(), file.display().to_string());
        let roots = load_root_certs(&env).unwrap();
        assert!(roots.iter().any(|r| r.as_slice() == ca.cert.der().as_ref()));
        let mut env = EnvSnapshot::new();
        env.insert("SSL_CERT_DIR".into(), dir.display().to_string());
        let roots = load_root_certs(&env).unwrap();
        assert!(roots.iter().any(|r| r.as_slice() == ca.cert.der().as_ref()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
