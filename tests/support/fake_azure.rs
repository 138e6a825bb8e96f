//! In-process fake of Azure Key Vault (keys data plane), the Entra ID token endpoint and the
//! managed-identity endpoints (App Service and IMDS), for integration tests.
//!
//! One HTTPS listener (vault + token endpoint, certificate issued by a CA generated at start)
//! and one plain-HTTP listener (managed identity), both on 127.0.0.1 with random ports.
//! Thread per connection, HTTP/1.1 keep-alive. Dropping the `FakeAzure` stops every thread.

// Explicit paths so the children resolve the same whether this file is reached through
// `mod support;` (tests/support/mod.rs) or through a `#[path]` attribute.
#[path = "fake_azure/http.rs"]
mod http;
#[path = "fake_azure/identity.rs"]
mod identity;
#[path = "fake_azure/keys.rs"]
mod keys;
#[path = "fake_azure/vault.rs"]
mod vault;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use azkv_testkit::vault::KeyVersion as StoredVersion;
use azkv_testkit::vault::{KeyMaterial as Material, KeyStore, SignError, StoredKey};
use http::{Reply, Request, Response};

/// Key types the fake can hold.
pub use azkv_testkit::vault::KeyKind as FakeKeyType;

/// Snapshot of one key (all versions) as stored by the fake.
#[derive(Clone, Debug)]
pub struct FakeKey {
    pub name: String,
    pub deleted: bool,
    /// Oldest first.
    pub versions: Vec<FakeKeyVersion>,
}

/// Snapshot of one key version.
#[derive(Clone, Debug)]
pub struct FakeKeyVersion {
    pub version: String,
    pub created: f64,
    pub updated: f64,
    pub enabled: bool,
    pub tags: HashMap<String, String>,
    pub kty: String,
    pub crv: Option<String>,
    /// The key's current `key_ops`.
    pub key_ops: Vec<String>,
}

/// Request classes, used for fault injection and the request log.
/// Requests that match no known operation are logged as `Any`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Route {
    Any,
    CreateKey,
    GetKey,
    ListKeys,
    ListVersions,
    UpdateKey,
    DeleteKey,
    Sign,
    Token,
    ManagedIdentity,
}

/// What an injected fault does to a matching request. Faults other than `Latency`,
/// `LoseResponse`, `WrongSignatureLength`, `ForeignSignature` and `WrongKeyType` answer without
/// touching the vault state.
#[derive(Clone, Debug)]
pub enum FaultKind {
    /// `body: None` → a Key Vault error JSON (an Entra-style error JSON on Token /
    /// ManagedIdentity routes).
    Status {
        status: u16,
        retry_after: Option<String>,
        body: Option<String>,
    },
    /// Delay, then serve normally.
    Latency(Duration),
    /// 200 with invalid JSON.
    MalformedBody,
    /// Content-Length larger than the bytes sent, then close.
    TruncatedBody,
    /// Close the socket without answering.
    DropConnection,
    /// Serve the request (the vault state changes), then close the
    /// socket without answering, as when a response is lost on its way back.
    LoseResponse,
    /// Sign only: 200 with a signature 1 byte short.
    WrongSignatureLength,
    /// Sign only: 200 with a valid signature of the requested
    /// digest and algorithm by a fresh key of the same type (a substituted key or answer).
    ForeignSignature,
    /// Get/Create only: 200 whose JWK has another kty/crv than stored.
    WrongKeyType,
}

/// One request as seen by the fake. `status` is 0 when the connection was dropped on purpose.
#[derive(Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub route: Route,
    pub status: u16,
    pub authorization: Option<String>,
    pub body: String,
    /// Request headers, names lowercased, in arrival order
    /// (`authorization` included).
    pub headers: Vec<(String, String)>,
}

impl std::fmt::Debug for RecordedRequest {
    // Bearer tokens and token-request bodies (client secrets, assertions) stay out of Debug.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body: &dyn std::fmt::Debug = if self.route == Route::Token {
            &"<redacted>"
        } else {
            &self.body
        };
        f.debug_struct("RecordedRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("route", &self.route)
            .field("status", &self.status)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("body", body)
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str(),
                            if k == "authorization" {
                                "<redacted>"
                            } else {
                                v.as_str()
                            },
                        )
                    })
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The fake servers. Dropping it stops the listeners and closes every connection.
pub struct FakeAzure {
    shared: Arc<Shared>,
    https_addr: SocketAddr,
    http_addr: SocketAddr,
    ca_pem: String,
    ca_dir: PathBuf,
    listeners: Vec<JoinHandle<()>>,
}

/// A ureq client trusting every certificate in `ca_pem` (the fake's CA, or an emulator's):
/// statuses come back as responses, not errors, so tests can assert on them.
pub fn agent_trusting(ca_pem: &str) -> ureq::Agent {
    let certs: Vec<ureq::tls::Certificate<'static>> = pem::parse_many(ca_pem)
        .expect("CA PEM")
        .into_iter()
        .map(|p| ureq::tls::Certificate::from_der(p.contents()).to_owned())
        .collect();
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

impl FakeAzure {
    pub const TENANT: &'static str = "00000000-0000-0000-0000-0000000000aa";
    /// A public-cloud vault host the server certificate also
    /// covers. Microsoft's Go SDK only sends a token to a host ending in the challenge
    /// resource's domain (`.vault.azure.net`, port included in the comparison), so clients
    /// built on it reach the fake as `https://<this>/` through a CONNECT proxy.
    pub const PUBLIC_VAULT_HOST: &'static str = "azkv-fake.vault.azure.net";
    pub const CLIENT_ID: &'static str = "11111111-1111-1111-1111-1111111111bb";
    pub const CLIENT_SECRET: &'static str = "fake-client-secret-value-do-not-log";
    /// The names the HTTPS certificate covers: loopback, the public-looking vault name reached
    /// through a CONNECT proxy, and two vault host names that tests resolve through /etc/hosts
    /// and through a test DNS server (tests/spire_image.rs).
    pub const TLS_NAMES: [&'static str; 5] = [
        "127.0.0.1",
        "localhost",
        Self::PUBLIC_VAULT_HOST,
        "hosts-vault.azkv.test",
        "dns-vault.azkv.test",
    ];

    /// Starts both listeners. Panics only if the machine cannot bind loopback sockets or
    /// build a certificate (test setup failure).
    pub fn start() -> FakeAzure {
        let ca_key = rcgen::KeyPair::generate().expect("fake_azure: CA key");
        let mut ca_params =
            rcgen::CertificateParams::new(Vec::<String>::new()).expect("fake_azure: CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "fake-azure test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("fake_azure: CA cert");

        let srv_key = rcgen::KeyPair::generate().expect("fake_azure: server key");
        let mut srv_params =
            rcgen::CertificateParams::new(Self::TLS_NAMES.map(str::to_string).to_vec())
                .expect("fake_azure: server params");
        srv_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "127.0.0.1");
        srv_params.is_ca = rcgen::IsCa::ExplicitNoCa;
        srv_params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        srv_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let srv_cert = srv_params
            .signed_by(&srv_key, &ca_cert, &ca_key)
            .expect("fake_azure: server cert");

        let tls = http::server_config(srv_cert.der().to_vec(), srv_key.serialize_der())
            .expect("fake_azure: rustls server config");

        let https = TcpListener::bind("127.0.0.1:0").expect("fake_azure: bind https");
        let plain = TcpListener::bind("127.0.0.1:0").expect("fake_azure: bind http");
        let https_addr = https.local_addr().expect("fake_azure: https addr");
        let http_addr = plain.local_addr().expect("fake_azure: http addr");

        let ca_pem = ca_cert.pem();
        let ca_dir = std::env::temp_dir().join(format!("fake-azure-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&ca_dir).expect("fake_azure: temp dir");
        std::fs::write(ca_dir.join("ca.pem"), &ca_pem).expect("fake_azure: write CA PEM");

        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as f64)
            .unwrap_or(0.0);
        let shared = Arc::new(Shared {
            shutdown: AtomicBool::new(false),
            state: Mutex::new(State {
                now,
                token_lifetime: 3600,
                ..State::default()
            }),
            conns: Mutex::new(Conns::default()),
            base: format!("https://127.0.0.1:{}/", https_addr.port()),
            identity_header: format!("fake-identity-header-{}", uuid::Uuid::new_v4().simple()),
        });

        let listeners = vec![
            http::spawn_listener(Arc::clone(&shared), https, ListenerKind::Https, Some(tls))
                .expect("fake_azure: spawn https listener"),
            http::spawn_listener(Arc::clone(&shared), plain, ListenerKind::Http, None)
                .expect("fake_azure: spawn http listener"),
        ];
        FakeAzure {
            shared,
            https_addr,
            http_addr,
            ca_pem,
            ca_dir,
            listeners,
        }
    }

    /// `https://127.0.0.1:<port>/`
    pub fn vault_uri(&self) -> String {
        self.shared.base.clone()
    }

    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// The CA as a PEM file in a temp dir (removed on drop), e.g. for `SSL_CERT_FILE`.
    pub fn ca_pem_path(&self) -> PathBuf {
        self.ca_dir.join("ca.pem")
    }

    /// `https://127.0.0.1:<port>/`; token endpoint `POST /{tenant}/oauth2/v2.0/token`.
    pub fn authority_host(&self) -> String {
        self.shared.base.clone()
    }

    /// App Service style endpoint: `http://127.0.0.1:<port2>/msi/token`.
    pub fn identity_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/msi/token", self.http_addr.port())
    }

    pub fn identity_header(&self) -> String {
        self.shared.identity_header.clone()
    }

    /// `http://127.0.0.1:<port2>/metadata/identity/oauth2/token`
    pub fn imds_endpoint(&self) -> String {
        format!(
            "http://127.0.0.1:{}/metadata/identity/oauth2/token",
            self.http_addr.port()
        )
    }

    /// Accepts client assertions signed by this certificate's RSA key for `client_id`
    /// (several certificates may be registered per client).
    pub fn register_client_certificate(&self, client_id: &str, cert_der: Vec<u8>) {
        self.shared
            .state()
            .client_certs
            .entry(client_id.to_string())
            .or_default()
            .push(cert_der);
    }

    /// Accepts `token` verbatim as `client_assertion` for `client_id` (workload identity).
    pub fn register_federated_token(&self, client_id: &str, token: &str) {
        self.shared
            .state()
            .federated
            .entry(client_id.to_string())
            .or_default()
            .push(token.to_string());
    }

    /// Lifetime of tokens issued from now on (default 3600 s). Tokens are never rejected for
    /// age, only after `revoke_tokens`.
    pub fn set_token_lifetime(&self, secs: u64) {
        self.shared.state().token_lifetime = secs;
    }

    /// Every token issued so far becomes invalid: the next vault call with it gets 401.
    pub fn revoke_tokens(&self) {
        self.shared.state().valid_tokens.clear();
    }

    /// Fake clock (unix seconds) used for key times, token `expires_on` and assertion `exp`.
    pub fn now(&self) -> f64 {
        self.shared.state().now
    }

    pub fn set_now(&self, unix_secs: f64) {
        self.shared.state().now = unix_secs;
    }

    pub fn advance(&self, secs: f64) {
        self.shared.state().now += secs;
    }

    /// Adds a version (key_ops `sign`,`verify`) to `name`, creating the key if needed; a
    /// soft-deleted key of that name is purged first. Returns the new version id.
    pub fn insert_key(
        &self,
        name: &str,
        kind: FakeKeyType,
        tags: &[(&str, &str)],
        created: f64,
        updated: f64,
        enabled: bool,
    ) -> String {
        // Key generation (RSA especially) runs without the state lock.
        let mut v = StoredVersion::new(keys::new_version_id(), kind, tags, created, updated);
        v.enabled = enabled;
        let version = v.version.clone();
        self.shared.state().keys.insert(name, v);
        version
    }

    /// Moves the `created` and `updated` times of every version of
    /// `name` back by `secs` (a key made that long ago); no-op for an unknown name.
    pub fn age_key(&self, name: &str, secs: f64) {
        let mut st = self.shared.state();
        if let Some(k) = st.keys.get_mut(&name.to_ascii_lowercase()) {
            for v in &mut k.versions {
                v.created -= secs;
                v.updated -= secs;
            }
        }
    }

    /// Every key including soft-deleted ones, sorted by (case-insensitive) name.
    pub fn keys(&self) -> Vec<FakeKey> {
        self.shared
            .state()
            .keys
            .values()
            .map(|k| FakeKey {
                name: k.name.clone(),
                deleted: k.deleted.is_some(),
                versions: k.versions.iter().map(snapshot).collect(),
            })
            .collect()
    }

    /// Live (not deleted) key names, sorted.
    pub fn key_names(&self) -> Vec<String> {
        self.shared.state().keys.names(false)
    }

    pub fn deleted_key_names(&self) -> Vec<String> {
        self.shared.state().keys.names(true)
    }

    /// PKIX SubjectPublicKeyInfo DER of a version (`""` = latest), deleted keys included.
    pub fn public_key_der(&self, name: &str, version: &str) -> Option<Vec<u8>> {
        let material = {
            let st = self.shared.state();
            let key = st.keys.get(&name.to_ascii_lowercase())?;
            let v = key.find_version(version)?;
            Arc::clone(&v.material)
        };
        material.spki_der()
    }

    /// Enables/disables the latest version; no-op for an unknown name.
    pub fn set_enabled(&self, name: &str, enabled: bool) {
        let mut st = self.shared.state();
        if let Some(v) = st
            .keys
            .get_mut(&name.to_ascii_lowercase())
            .and_then(|k| k.versions.last_mut())
        {
            v.enabled = enabled;
        }
    }

    /// Removes the key entirely (deleted or not).
    pub fn purge(&self, name: &str) {
        self.shared.state().keys.purge(name);
    }

    /// The next `times` requests matching `route` (`Any` = every request, on both listeners)
    /// get `kind`. Several injections are consumed in FIFO order.
    pub fn inject(&self, route: Route, kind: FaultKind, times: usize) {
        if times == 0 {
            return;
        }
        self.shared.state().faults.push_back(Fault {
            route,
            kind,
            remaining: times,
        });
    }

    /// Uses of injected faults not consumed yet. A fault is
    /// consumed when its request arrives (before a `Latency` fault's delay), so this turning 0
    /// tells a test that the request is now inside the fake.
    pub fn pending_faults(&self) -> usize {
        self.shared.state().faults.iter().map(|f| f.remaining).sum()
    }

    /// Added to every vault request (not to token or managed-identity requests).
    pub fn set_latency(&self, d: Duration) {
        self.shared.state().latency = d;
    }

    /// Addition to the agreed API: Key Vault's per-vault sign throttling as a token bucket
    /// refilled at `per_second` up to `burst`; a sign request finding it empty is answered 429
    /// with `Retry-After: 1` (after the injected latency, before any fault). `per_second` 0
    /// turns the limit off. Real time, like `set_latency`.
    pub fn limit_signs(&self, per_second: f64, burst: f64) {
        self.shared.state().sign_limit = (per_second > 0.0).then(|| TokenBucket {
            per_second,
            burst,
            tokens: burst,
            at: Instant::now(),
        });
    }

    /// Addition to the agreed API: sign requests answered 429 by `limit_signs` so far.
    pub fn throttled_signs(&self) -> u64 {
        self.shared.state().throttled_signs
    }

    /// Insert an empty page (with nextLink) between list pages.
    pub fn set_empty_pages(&self, on: bool) {
        self.shared.state().empty_pages = on;
    }

    /// Every request so far, in the order answered.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.state().log.clone()
    }

    /// Number of logged requests of `route`; `Any` counts all of them.
    pub fn count(&self, route: Route) -> usize {
        self.shared
            .state()
            .log
            .iter()
            .filter(|r| route == Route::Any || r.route == route)
            .count()
    }

    pub fn reset_log(&self) {
        self.shared.state().log.clear();
    }

    /// Every access token handed out (token endpoint and managed identity), revoked or not.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.shared.state().issued.clone()
    }

    /// Connections accepted so far on both listeners (a client
    /// that pools its connections keeps this small).
    pub fn connections_accepted(&self) -> u64 {
        lock(&self.shared.conns).next_id
    }

    /// The HTTPS listener address.
    pub fn https_addr(&self) -> SocketAddr {
        self.https_addr
    }

    /// The plain-HTTP (managed identity) listener address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }
}

impl Drop for FakeAzure {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        // Wake the blocking accept() calls so the listener threads see the flag.
        for addr in [self.https_addr, self.http_addr] {
            let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
        }
        for h in self.listeners.drain(..) {
            let _ = h.join();
        }
        // Listeners are gone, so no connection can register any more: close them all.
        let handles = {
            let mut conns = lock(&self.shared.conns);
            for s in conns.streams.values() {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            conns.streams.clear();
            std::mem::take(&mut conns.handles)
        };
        for h in handles {
            let _ = h.join();
        }
        let _ = std::fs::remove_dir_all(&self.ca_dir);
    }
}

// ---------------------------------------------------------------------------------------
// Shared state

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ListenerKind {
    Https,
    Http,
}

struct Shared {
    shutdown: AtomicBool,
    state: Mutex<State>,
    conns: Mutex<Conns>,
    /// `https://127.0.0.1:<port>/` (vault base and authority host).
    base: String,
    identity_header: String,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn is_shutdown(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    /// Sleeps `d`, waking early on shutdown so Drop never waits for long latencies.
    /// Returns false when cut short by shutdown.
    fn sleep(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        loop {
            if self.is_shutdown() {
                return false;
            }
            let now = Instant::now();
            if now >= end {
                return true;
            }
            std::thread::sleep((end - now).min(Duration::from_millis(10)));
        }
    }

    fn issue_token(&self) -> (String, u64, f64) {
        let mut st = self.state();
        let lifetime = st.token_lifetime;
        let token = identity::make_token(st.now, lifetime);
        st.valid_tokens.insert(token.clone());
        st.issued.push(token.clone());
        (token, lifetime, st.now)
    }
}

/// Poison-tolerant lock: a panicking test thread must not wedge the fake.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
struct Conns {
    next_id: u64,
    streams: HashMap<u64, TcpStream>,
    handles: Vec<JoinHandle<()>>,
}

#[derive(Default)]
struct State {
    now: f64,
    /// The key store the unit tests' `MemoryVault` also keeps its keys in.
    keys: KeyStore,
    token_lifetime: u64,
    valid_tokens: HashSet<String>,
    issued: Vec<String>,
    client_certs: HashMap<String, Vec<Vec<u8>>>,
    federated: HashMap<String, Vec<String>>,
    faults: VecDeque<Fault>,
    latency: Duration,
    empty_pages: bool,
    log: Vec<RecordedRequest>,
    sign_limit: Option<TokenBucket>,
    throttled_signs: u64,
}

struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// Refills for the time since the last call, then takes one token if there is one.
    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct Fault {
    route: Route,
    kind: FaultKind,
    remaining: usize,
}

fn snapshot(v: &StoredVersion) -> FakeKeyVersion {
    FakeKeyVersion {
        version: v.version.clone(),
        created: v.created,
        updated: v.updated,
        enabled: v.enabled,
        tags: v.tags.clone(),
        kty: v.kty.clone(),
        crv: v.material.crv().map(str::to_string),
        key_ops: v.key_ops.clone(),
    }
}

// ---------------------------------------------------------------------------------------
// Dispatch: route → faults → handler → post-faults → log

/// What a request asks for, with its parameters.
enum Op {
    Vault(vault::VaultOp),
    Token { tenant: String },
    AppServiceMi,
    Imds,
    NotFound,
    MethodNotAllowed,
}

fn dispatch(shared: &Shared, kind: ListenerKind, req: &Request) -> Reply {
    let (route, op) = classify(kind, req);

    // Everything on the HTTPS listener except the token endpoint counts as a vault request.
    if kind == ListenerKind::Https && route != Route::Token {
        let latency = shared.state().latency;
        if !latency.is_zero() && !shared.sleep(latency) {
            return Reply::Drop;
        }
    }

    let throttled = route == Route::Sign && {
        let mut st = shared.state();
        let refused = st
            .sign_limit
            .as_mut()
            .is_some_and(|b| !b.take(Instant::now()));
        if refused {
            st.throttled_signs += 1;
        }
        refused
    };

    let reply = if throttled {
        Reply::Send(fault_status(route, 429, Some("1".into()), None))
    } else {
        match take_fault(shared, route, false) {
            Some(FaultKind::Status {
                status,
                retry_after,
                body,
            }) => Reply::Send(fault_status(route, status, retry_after, body)),
            Some(FaultKind::MalformedBody) => Reply::Send(Response::raw(
                200,
                "application/json; charset=utf-8",
                b"{\"key\": {\"kid\": \"https://127.0.0.1/keys/x\", \"kty\": [oops".to_vec(),
            )),
            Some(FaultKind::TruncatedBody) => Reply::Truncate(Response::raw(
                200,
                "application/json; charset=utf-8",
                b"{\"value\": [{\"kid\": \"https://127.0.0.1/keys/trunc".to_vec(),
            )),
            Some(FaultKind::DropConnection) => Reply::Drop,
            Some(FaultKind::LoseResponse) => {
                let _ = serve(shared, route, op, req);
                Reply::Drop
            }
            Some(FaultKind::Latency(d)) => {
                if shared.sleep(d) {
                    Reply::Send(serve(shared, route, op, req))
                } else {
                    Reply::Drop
                }
            }
            // Post-processing kinds are never returned by take_fault(.., false).
            Some(FaultKind::WrongSignatureLength)
            | Some(FaultKind::ForeignSignature)
            | Some(FaultKind::WrongKeyType)
            | None => Reply::Send(serve(shared, route, op, req)),
        }
    };

    let reply = match reply {
        Reply::Send(resp) if resp.status == 200 => {
            Reply::Send(post_fault(shared, route, req, resp))
        }
        other => other,
    };

    let status = match &reply {
        Reply::Send(r) | Reply::Truncate(r) => r.status,
        Reply::Drop => 0,
    };
    shared.state().log.push(RecordedRequest {
        method: req.method.clone(),
        path: req.path.clone(),
        query: req.query.clone(),
        route,
        status,
        authorization: req.header("authorization").map(str::to_string),
        body: String::from_utf8_lossy(&req.body).into_owned(),
        headers: req.headers.clone(),
    });
    reply
}

fn classify(kind: ListenerKind, req: &Request) -> (Route, Op) {
    let segs: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    match kind {
        ListenerKind::Http => match segs.as_slice() {
            ["msi", "token"] => mi_op(req, Op::AppServiceMi),
            ["metadata", "identity", "oauth2", "token"] => mi_op(req, Op::Imds),
            _ => (Route::Any, Op::NotFound),
        },
        ListenerKind::Https => match segs.as_slice() {
            [tenant, "oauth2", "v2.0", "token"] => {
                if req.method == "POST" {
                    (
                        Route::Token,
                        Op::Token {
                            tenant: tenant.to_string(),
                        },
                    )
                } else {
                    (Route::Token, Op::MethodNotAllowed)
                }
            }
            _ => match vault::classify(&req.method, &segs) {
                Some((route, op)) => (route, Op::Vault(op)),
                None => (Route::Any, Op::NotFound),
            },
        },
    }
}

fn mi_op(req: &Request, op: Op) -> (Route, Op) {
    if req.method == "GET" {
        (Route::ManagedIdentity, op)
    } else {
        (Route::ManagedIdentity, Op::MethodNotAllowed)
    }
}

fn serve(shared: &Shared, route: Route, op: Op, req: &Request) -> Response {
    match op {
        Op::Vault(v) => vault::handle(shared, v, req),
        Op::Token { tenant } => identity::token_endpoint(shared, &tenant, req),
        Op::AppServiceMi => identity::app_service(shared, req),
        Op::Imds => identity::imds(shared, req),
        Op::MethodNotAllowed => {
            if matches!(route, Route::Token | Route::ManagedIdentity) {
                identity::entra_error(405, "invalid_request", "method not allowed")
            } else {
                vault::kv_error(405, "MethodNotAllowed", "method not allowed", None)
            }
        }
        Op::NotFound => vault::kv_error(404, "NotFound", "no such resource", None),
    }
}

/// Consumes one use of the first matching injection. `post` selects the kinds that rewrite a
/// successful response (only taken when the route can carry them).
fn take_fault(shared: &Shared, route: Route, post: bool) -> Option<FaultKind> {
    let mut st = shared.state();
    let idx = st.faults.iter().position(|f| {
        let route_ok = f.route == Route::Any || f.route == route;
        let is_post = matches!(
            f.kind,
            FaultKind::WrongSignatureLength | FaultKind::ForeignSignature | FaultKind::WrongKeyType
        );
        route_ok
            && is_post == post
            && match f.kind {
                FaultKind::WrongSignatureLength | FaultKind::ForeignSignature => {
                    route == Route::Sign
                }
                FaultKind::WrongKeyType => matches!(route, Route::GetKey | Route::CreateKey),
                _ => true,
            }
    })?;
    let fault = st.faults.get_mut(idx)?;
    fault.remaining = fault.remaining.saturating_sub(1);
    let kind = fault.kind.clone();
    if fault.remaining == 0 {
        st.faults.remove(idx);
    }
    Some(kind)
}

fn post_fault(shared: &Shared, route: Route, req: &Request, resp: Response) -> Response {
    if !matches!(route, Route::Sign | Route::GetKey | Route::CreateKey) {
        return resp;
    }
    match take_fault(shared, route, true) {
        Some(FaultKind::WrongSignatureLength) => vault::shorten_signature(resp),
        Some(FaultKind::ForeignSignature) => vault::foreign_signature(req, resp),
        Some(FaultKind::WrongKeyType) => vault::swap_key_type(resp),
        _ => resp,
    }
}

fn fault_status(
    route: Route,
    status: u16,
    retry_after: Option<String>,
    body: Option<String>,
) -> Response {
    let mut resp = match body {
        Some(b) => Response::raw(status, "application/json; charset=utf-8", b.into_bytes()),
        None if matches!(route, Route::Token | Route::ManagedIdentity) => identity::entra_error(
            status,
            if status == 429 {
                "temporarily_unavailable"
            } else {
                "server_error"
            },
            "injected fault",
        ),
        None => {
            let code = match status {
                400 => "BadParameter",
                401 => "Unauthorized",
                403 => "Forbidden",
                404 => "KeyNotFound",
                409 => "Conflict",
                429 => "Throttled",
                503 => "ServiceUnavailable",
                s if s >= 500 => "InternalServerError",
                _ => "Error",
            };
            vault::kv_error(status, code, "injected fault", None)
        }
    };
    if let Some(ra) = retry_after {
        resp.headers.push(("Retry-After".to_string(), ra));
    }
    resp
}
