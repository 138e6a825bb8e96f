//! The Key Vault keys REST client (`KeyVaultApi` over `HttpClient` + `TokenCache`).
//!
//! - The bearer token for the vault's cloud scope is sent up front. A 401 is answered once:
//!   the challenge is parsed and checked (see `challenge`: its resource must contain the vault,
//!   its tenant must be allowed), a fresh token fetched, the request re-sent; a second 401 is an
//!   error. The tenant/scope learned that way are kept.
//! - Lists follow `nextLink` to the end (empty pages included), and only to the vault's own
//!   host: the token is never sent anywhere else.
//! - Error bodies become `AzureError::Service` with the innermost `innererror.code`; a 403
//!   names the permission the operation needs.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use log::debug;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::azure::auth::TokenCache;
use crate::azure::challenge::{decide, AllowedTenants, Challenge, Decision};
use crate::azure::deadline::{Deadline, OPERATION_DEADLINE};
use crate::azure::http::{percent_encode, HttpClient, HttpRequest, HttpResponse, Url};
use crate::azure::settings::DEFAULT_API_VERSION;
use crate::azure::throttle::Throttle;
use crate::azure::types::{
    AzureError, CreateKeyParams, KeyBundle, KeyItem, KeyVaultApi, UpdateKeyParams,
};
use crate::secret::Secret;

/// Safety stop for a server that keeps handing out `nextLink`s.
const MAX_PAGES: usize = 10_000;

/// A validated vault base URL (`https://host[:port][/prefix]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultEndpoint {
    pub url: Url,
    /// `https://authority[/prefix]`, no trailing slash.
    base: String,
}

impl VaultEndpoint {
    pub fn parse(uri: &str) -> Result<Self, AzureError> {
        let url = Url::parse(uri)
            .map_err(|e| AzureError::Config(format!("invalid key_vault_uri: {e}")))?;
        if url.scheme != "https" {
            return Err(AzureError::Config(format!(
                "key_vault_uri must use https, got {uri:?}"
            )));
        }
        let base = url.base_without_query("key_vault_uri", uri)?;
        Ok(VaultEndpoint { url, base })
    }
}

/// An api-version safe to put in a query; empty means the default.
pub(crate) fn validate_api_version(v: &str) -> Result<String, AzureError> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(DEFAULT_API_VERSION.to_string());
    }
    if v.len() <= 32
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    {
        Ok(v.to_string())
    } else {
        Err(AzureError::Config(format!(
            "invalid Key Vault api-version {v:?}"
        )))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Create,
    Get,
    List,
    ListVersions,
    Update,
    Delete,
    Sign,
}

impl Op {
    fn permission(self) -> &'static str {
        match self {
            Op::Create => "keys/create",
            Op::Get => "keys/get",
            Op::List | Op::ListVersions => "keys/list",
            Op::Update => "keys/update",
            Op::Delete => "keys/delete",
            Op::Sign => "keys/sign",
        }
    }

    /// The `operation` label of the `key_vault.call` metric: the permission's verb.
    fn metric(self) -> &'static str {
        self.permission().trim_start_matches("keys/")
    }

    fn what(self) -> &'static str {
        match self {
            Op::Create => "create key",
            Op::Get => "get key",
            Op::List => "list keys",
            Op::ListVersions => "list key versions",
            Op::Update => "update key",
            Op::Delete => "delete key",
            Op::Sign => "sign",
        }
    }
}

#[derive(Debug, Clone)]
struct AuthTarget {
    tenant: Option<String>,
    scope: String,
}

pub struct KeyVaultClient {
    vault: VaultEndpoint,
    api_version: String,
    http: Arc<HttpClient>,
    /// Shared by every request to this vault (see `throttle`).
    throttle: Arc<Throttle>,
    tokens: Arc<TokenCache>,
    target: Mutex<AuthTarget>,
    /// Tenants a 401 challenge may send the credential to.
    tenants: AllowedTenants,
    /// Each `KeyVaultApi` call, token and retries included, is over within this.
    operation_deadline: Duration,
}

impl fmt::Debug for KeyVaultClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyVaultClient")
            .field("vault", &self.vault.base)
            .field("api_version", &self.api_version)
            .finish()
    }
}

#[derive(Deserialize)]
struct KeyListResult {
    #[serde(default)]
    value: Option<Vec<KeyItem>>,
    #[serde(default, rename = "nextLink")]
    next_link: Option<String>,
}

#[derive(Serialize)]
struct SignRequest<'a> {
    alg: &'a str,
    value: String,
}

#[derive(Deserialize)]
struct SignResult {
    #[serde(default)]
    value: Option<String>,
}

impl KeyVaultClient {
    pub fn new(
        vault: VaultEndpoint,
        api_version: String,
        scope: String,
        http: Arc<HttpClient>,
        tokens: Arc<TokenCache>,
    ) -> Self {
        let throttle = http.throttle_for(&vault.url.authority());
        KeyVaultClient {
            vault,
            api_version,
            http,
            throttle,
            tokens,
            target: Mutex::new(AuthTarget {
                tenant: None,
                scope,
            }),
            tenants: AllowedTenants::default(),
            operation_deadline: OPERATION_DEADLINE,
        }
    }

    /// Another deadline per operation than `OPERATION_DEADLINE`: for tests that run deadlines
    /// out in real time (the plugin always uses the default).
    pub fn with_operation_deadline(mut self, deadline: Duration) -> Self {
        self.operation_deadline = deadline;
        self
    }

    /// The deadline of an operation starting now.
    fn start(&self) -> Deadline {
        Deadline::after(self.http.clock().as_ref(), self.operation_deadline)
    }

    /// Restricts the tenants a challenge may name (by default any: the token endpoint decides,
    /// as for managed identity).
    pub fn with_allowed_tenants(mut self, tenants: AllowedTenants) -> Self {
        self.tenants = tenants;
        self
    }

    fn target_now(&self) -> AuthTarget {
        self.target
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `<base>/keys/<segment>/...?api-version=...<extra_query>`, each segment percent-encoded.
    fn url(&self, segments: &[&str], extra_query: &str) -> String {
        let mut url = format!("{}/keys", self.vault.base);
        for s in segments {
            url += &format!("/{}", percent_encode(s));
        }
        let v = percent_encode(&self.api_version);
        url + &format!("?api-version={v}{extra_query}")
    }

    fn send(
        &self,
        method: &'static str,
        url: &str,
        body: Option<&[u8]>,
        token: &Secret,
        deadline: &Deadline,
    ) -> Result<HttpResponse, AzureError> {
        let mut req = HttpRequest::new(method, url)
            .header("Authorization", format!("Bearer {}", token.expose()))
            .header("Accept", "application/json")
            .header("x-ms-client-request-id", request_id().to_string());
        if let Some(b) = body {
            req = req.json_body(b.to_vec());
        }
        let resp = self
            .http
            .send_within(&req, *deadline, Some(&self.throttle))?;
        // Routine successes at trace: one line per signature is CPU for the plugin and a JSON
        // line spire-server must parse and drop at its default level.
        if resp.is_success() {
            log::trace!("{} -> HTTP {}", req.describe(), resp.status);
        } else {
            debug!("{} -> HTTP {}", req.describe(), resp.status);
        }
        Ok(resp)
    }

    /// [`Self::exchange`], counted in telemetry by operation and outcome.
    fn execute(
        &self,
        op: Op,
        method: &'static str,
        url: &str,
        body: Option<&[u8]>,
        deadline: &Deadline,
    ) -> Result<HttpResponse, AzureError> {
        let result = self.exchange(op, method, url, body, deadline);
        let outcome = match &result {
            Ok(_) => "ok",
            Err(AzureError::Service { status, .. }) => crate::telemetry::outcome_of_status(*status),
            Err(AzureError::Auth(_)) => "auth",
            Err(_) => "transport",
        };
        crate::telemetry::key_vault_call(op.metric(), outcome);
        result
    }

    /// Sends with the current token; on 401 follows the challenge once. All by `deadline`.
    fn exchange(
        &self,
        op: Op,
        method: &'static str,
        url: &str,
        body: Option<&[u8]>,
        deadline: &Deadline,
    ) -> Result<HttpResponse, AzureError> {
        let target = self.target_now();
        let token = self
            .tokens
            .token(target.tenant.as_deref(), &target.scope, deadline)?;
        let resp = self.send(method, url, body, &token, deadline)?;
        if resp.status != 401 {
            return check(op, resp);
        }
        let challenges = resp.headers.iter().filter(|(k, _)| k == "www-authenticate");
        let Some(challenge) = Challenge::parse_headers(challenges.map(|(_, v)| v.as_str())) else {
            return Err(service_error(op, &resp));
        };
        let vault = self.vault.url.authority();
        let (tenant, scope) = match decide(&challenge, &target.scope, &vault, &self.tenants) {
            Decision::RetrySameScope { tenant } => (tenant.or(target.tenant), target.scope),
            Decision::SwitchScope { scope, tenant } => (tenant.or(target.tenant), scope),
            Decision::Refuse(m) => return Err(AzureError::Auth(m)),
        };
        debug!(
            "Key Vault answered 401 with a challenge; retrying once with a fresh token for {scope}"
        );
        let fresh = self
            .tokens
            .fresh_token(tenant.as_deref(), &scope, &token, deadline)?;
        let resp = self.send(method, url, body, &fresh, deadline)?;
        if resp.status == 401 {
            let mut e = service_error(op, &resp);
            if let AzureError::Service { message, .. } = &mut e {
                message.push_str(
                    " (Key Vault rejected a freshly obtained token: check the identity's tenant)",
                );
            }
            return Err(e);
        }
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = AuthTarget { tenant, scope };
        check(op, resp)
    }

    /// Every page, each page one operation with its own deadline: listings run at Configure
    /// and in the background sweep, never inside SignData, and a vault with thousands of keys
    /// (25 a page) must not run out of one RPC's time.
    fn list_all(&self, op: Op, first: String) -> Result<Vec<KeyItem>, AzureError> {
        let mut url = first;
        let mut items = Vec::new();
        for _ in 0..MAX_PAGES {
            let resp = self.execute(op, "GET", &url, None, &self.start())?;
            let page: KeyListResult = decode(op, &resp)?;
            items.extend(page.value.unwrap_or_default());
            match page.next_link.filter(|l| !l.trim().is_empty()) {
                None => return Ok(items),
                Some(next) => url = self.checked_next_link(&next)?,
            }
        }
        Err(AzureError::Decode(format!(
            "{}: more than {MAX_PAGES} pages; giving up",
            op.what()
        )))
    }

    /// A `nextLink` may only lead back to the vault (same host, default port ignored): the
    /// bearer token goes with it. A missing api-version is added.
    fn checked_next_link(&self, link: &str) -> Result<String, AzureError> {
        let url =
            Url::parse(link).map_err(|e| AzureError::Decode(format!("invalid nextLink: {e}")))?;
        let vault = &self.vault.url;
        if url.scheme != "https" || !url.authority().eq_ignore_ascii_case(&vault.authority()) {
            return Err(AzureError::Decode(format!(
                "nextLink points to {}, not the vault {}; refusing to send the vault token there",
                url.origin(),
                vault.origin()
            )));
        }
        let next = format!("{}{}", vault.origin(), url.path_and_query);
        let sep = match url.query() {
            Some(q) if q.split('&').any(|p| p.starts_with("api-version=")) => return Ok(next),
            Some(_) => '&',
            None => '?',
        };
        let v = percent_encode(&self.api_version);
        Ok(format!("{next}{sep}api-version={v}"))
    }
}

fn require(what: &str, value: &str) -> Result<(), AzureError> {
    let empty = || AzureError::Config(format!("{what} must not be empty"));
    (!value.is_empty()).then_some(()).ok_or_else(empty)
}

/// A request body, as JSON.
fn encode(op: Op, body: &impl Serialize) -> Result<Vec<u8>, AzureError> {
    serde_json::to_vec(body)
        .map_err(|e| AzureError::Config(format!("{}: cannot encode request: {e}", op.what())))
}

fn check(op: Op, resp: HttpResponse) -> Result<HttpResponse, AzureError> {
    if resp.is_success() {
        Ok(resp)
    } else {
        Err(service_error(op, &resp))
    }
}

fn decode<T: for<'de> Deserialize<'de>>(op: Op, resp: &HttpResponse) -> Result<T, AzureError> {
    serde_json::from_slice(&resp.body).map_err(|e| {
        AzureError::Decode(format!(
            "{}: unexpected response body (HTTP {}): {e}",
            op.what(),
            resp.status
        ))
    })
}

/// Innermost `innererror.code`.
fn innermost_code(mut v: &Value) -> Option<String> {
    let mut code = None;
    while let Some(inner) = v.get("innererror").filter(|i| i.is_object()) {
        if let Some(c) = inner.get("code").and_then(Value::as_str) {
            code = Some(c.to_string());
        }
        v = inner;
    }
    code
}

/// Turns a non-2xx answer into `AzureError::Service`.
fn service_error(op: Op, resp: &HttpResponse) -> AzureError {
    let parsed: Option<Value> = serde_json::from_slice(&resp.body).ok();
    let err = parsed.as_ref().and_then(|v| v.get("error"));
    let code = err
        .and_then(|e| e.get("code"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let inner_code = err.and_then(innermost_code);
    let mut message = match (err.and_then(|e| e.get("message")), &parsed) {
        (Some(m), _) => m.as_str().unwrap_or_default().to_string(),
        (None, Some(_)) => String::new(),
        // Not JSON (a proxy or gateway page): a short, single-line excerpt.
        (None, None) => {
            let text = String::from_utf8_lossy(&resp.body);
            let line = text.chars().map(|c| if c.is_control() { ' ' } else { c });
            line.take(200).collect::<String>().trim().to_string()
        }
    };
    if message.is_empty() {
        message = format!("{} failed", op.what());
    }
    message.push_str(&resp.refused_wait_note("the vault"));
    match resp.status {
        403 if inner_code.as_deref() == Some("ForbiddenByFirewall") => {
            message.push_str(" (the vault firewall blocked the request)");
        }
        403 => message.push_str(&format!(
            " (the identity likely lacks the {} permission)",
            op.permission()
        )),
        _ => {}
    }
    AzureError::Service {
        status: resp.status,
        code,
        inner_code,
        message,
    }
}

/// Signature bytes as sent: base64url (with or without padding), or standard base64.
pub(crate) fn decode_signature(value: &str) -> Result<Vec<u8>, AzureError> {
    let cfg = GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true);
    let v: String = value.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = GeneralPurpose::new(&alphabet::URL_SAFE, cfg)
        .decode(&v)
        .or_else(|_| GeneralPurpose::new(&alphabet::STANDARD, cfg).decode(&v))
        .map_err(|e| AzureError::Decode(format!("sign: signature is not base64: {e}")))?;
    if bytes.is_empty() {
        return Err(AzureError::Decode("sign: empty signature".into()));
    }
    Ok(bytes)
}

impl KeyVaultApi for KeyVaultClient {
    fn create_key(&self, name: &str, params: &CreateKeyParams) -> Result<KeyBundle, AzureError> {
        let deadline = self.start();
        require("key name", name)?;
        let body = encode(Op::Create, params)?;
        let url = self.url(&[name, "create"], "");
        let resp = self.execute(Op::Create, "POST", &url, Some(&body), &deadline)?;
        decode(Op::Create, &resp)
    }

    fn get_key(&self, name: &str, version: Option<&str>) -> Result<KeyBundle, AzureError> {
        let deadline = self.start();
        require("key name", name)?;
        let url = match version.filter(|v| !v.is_empty()) {
            Some(v) => self.url(&[name, v], ""),
            None => self.url(&[name], ""),
        };
        let resp = self.execute(Op::Get, "GET", &url, None, &deadline)?;
        decode(Op::Get, &resp)
    }

    fn list_keys(&self) -> Result<Vec<KeyItem>, AzureError> {
        self.list_all(Op::List, self.url(&[], "&maxresults=25"))
    }

    fn list_key_versions(&self, name: &str) -> Result<Vec<KeyItem>, AzureError> {
        require("key name", name)?;
        let url = self.url(&[name, "versions"], "&maxresults=25");
        self.list_all(Op::ListVersions, url)
    }

    fn update_key(
        &self,
        name: &str,
        version: &str,
        params: &UpdateKeyParams,
    ) -> Result<KeyBundle, AzureError> {
        let deadline = self.start();
        require("key name", name)?;
        let body = encode(Op::Update, params)?;
        // An empty version addresses the latest one (`/keys/<name>/`), as the SDKs do.
        let url = self.url(&[name, version], "");
        let resp = self.execute(Op::Update, "PATCH", &url, Some(&body), &deadline)?;
        decode(Op::Update, &resp)
    }

    fn delete_key(&self, name: &str) -> Result<(), AzureError> {
        let deadline = self.start();
        require("key name", name)?;
        let url = self.url(&[name], "");
        self.execute(Op::Delete, "DELETE", &url, None, &deadline)
            .map(|_| ())
    }

    fn sign(
        &self,
        name: &str,
        version: &str,
        alg: &str,
        digest: &[u8],
    ) -> Result<Vec<u8>, AzureError> {
        let deadline = self.start();
        require("key name", name)?;
        require("key version", version)?;
        require("signature algorithm", alg)?;
        let value = URL_SAFE_NO_PAD.encode(digest);
        let body = encode(Op::Sign, &SignRequest { alg, value })?;
        let url = self.url(&[name, version, "sign"], "");
        let clock = self.http.clock();
        let started = clock.now();
        let resp = self.execute(Op::Sign, "POST", &url, Some(&body), &deadline);
        crate::telemetry::sign_elapsed(clock.now().duration_since(started).unwrap_or_default());
        let resp = resp?;
        let result: SignResult = decode(Op::Sign, &resp)?;
        let value = result
            .value
            .ok_or_else(|| AzureError::Decode("sign: response has no value".into()))?;
        decode_signature(&value)
    }
}

/// A fresh `x-ms-client-request-id` (a v4 UUID) without a system call: a random process-wide
/// base plus a counter. The id correlates our logs with Azure's; it needs to be unique, not
/// secret, and reading the system's randomness cost a syscall on every signature.
fn request_id() -> uuid::Uuid {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static BASE: OnceLock<u128> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = *BASE.get_or_init(|| {
        let mut b = [0u8; 16];
        match crate::random::fill(&mut b, "request ids") {
            Ok(()) => u128::from_le_bytes(b),
            // Uniqueness is all an id needs: without randomness (Configure fails first, for the
            // server id or key names) the start time and pid still tell processes apart.
            Err(_) => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                (nanos << 32) ^ u128::from(std::process::id())
            }
        }
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed) as u128;
    // The counter changes only the low bits (XOR keeps ids distinct); the builder then sets the
    // version bits (high half) and the variant bits (bits 62-63, which no count reaches).
    uuid::Builder::from_random_bytes((base ^ n).to_be_bytes()).into_uuid()
}

#[cfg(test)]
impl VaultEndpoint {
    pub(crate) fn base(&self) -> &str {
        &self.base
    }
}

#[cfg(test)]
impl KeyVaultClient {
    /// The tenants a challenge may name.
    pub(crate) fn allowed_tenants(&self) -> &AllowedTenants {
        &self.tenants
    }

    pub(crate) fn api_version(&self) -> &str {
        &self.api_version
    }

    /// The scope tokens are currently requested for.
    pub(crate) fn scope(&self) -> String {
        self.target_now().scope
    }
}

#[cfg(test)]
mod request_id_tests {
    #[test]
    fn request_ids_are_distinct_v4_uuids() {
        let ids: std::collections::HashSet<uuid::Uuid> =
            (0..10_000).map(|_| super::request_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids
            .iter()
            .all(|u| u.get_version_num() == 4 && u.get_variant() == uuid::Variant::RFC4122));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::auth::{AccessToken, ClientSecretCredential, Credential, CredentialError};
    use crate::azure::http::tests::{Answer, Timed};
    use crate::azure::http::{RetryPolicy, Transport, TransportError};
    use crate::clock::Clock;
    use crate::clock::ManualClock;
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, SystemTime};

    fn resp(status: u16, headers: &[(&str, &str)], body: &str) -> HttpResponse {
        HttpResponse {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
            refused_wait: None,
        }
    }

    struct Seen {
        method: String,
        url: String,
        auth: Option<String>,
        body: String,
    }

    struct Script {
        outcomes: Mutex<VecDeque<HttpResponse>>,
        seen: Mutex<Vec<Seen>>,
    }

    impl Transport for Script {
        fn execute(
            &self,
            req: &HttpRequest,
            _timeout: Duration,
        ) -> Result<HttpResponse, TransportError> {
            self.seen.lock().unwrap().push(Seen {
                method: req.method.to_string(),
                url: req.url.clone(),
                auth: req
                    .headers
                    .iter()
                    .find(|(k, _)| k == "Authorization")
                    .map(|(_, v)| v.clone()),
                body: String::from_utf8_lossy(req.body.as_deref().unwrap_or_default()).into_owned(),
            });
            self.outcomes
                .lock()
                .unwrap()
                .pop_front()
                .ok_or(TransportError {
                    message: "script exhausted".into(),
                    retryable: false,
                })
        }
    }

    struct Counter {
        n: AtomicUsize,
        tenants: Mutex<Vec<(Option<String>, String)>>,
    }

    impl Credential for Counter {
        fn name(&self) -> &'static str {
            "Counter"
        }
        fn fetch(&self, tenant: Option<&str>, scope: &str) -> Result<AccessToken, CredentialError> {
            let n = self.n.fetch_add(1, Ordering::SeqCst) + 1;
            self.tenants
                .lock()
                .unwrap()
                .push((tenant.map(str::to_string), scope.to_string()));
            Ok(AccessToken {
                token: Secret::new(format!("tok-{n}")),
                expires_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            })
        }
    }

    fn client(
        vault: &str,
        outcomes: Vec<HttpResponse>,
    ) -> (KeyVaultClient, Arc<Script>, Arc<Counter>) {
        client_allowing(vault, outcomes, AllowedTenants::default())
    }

    fn client_allowing(
        vault: &str,
        outcomes: Vec<HttpResponse>,
        tenants: AllowedTenants,
    ) -> (KeyVaultClient, Arc<Script>, Arc<Counter>) {
        let clock = Arc::new(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        ));
        let script = Arc::new(Script {
            outcomes: Mutex::new(outcomes.into()),
            seen: Mutex::new(Vec::new()),
        });
        let http = Arc::new(HttpClient::new(
            script.clone(),
            clock.clone(),
            RetryPolicy::default(),
        ));
        let cred = Arc::new(Counter {
            n: AtomicUsize::new(0),
            tenants: Mutex::new(Vec::new()),
        });
        let tokens = Arc::new(TokenCache::new(cred.clone(), clock));
        let endpoint = VaultEndpoint::parse(vault).unwrap();
        let scope = crate::azure::cloud::scope_for_vault_host(&endpoint.url.host);
        (
            KeyVaultClient::new(endpoint, "7.6".into(), scope, http, tokens)
                .with_allowed_tenants(tenants),
            script,
            cred,
        )
    }

    const BUNDLE: &str = r#"{"key":{"kid":"https://v.vault.azure.net/keys/k/0123456789abcdef0123456789abcdef","kty":"EC","crv":"P-256","x":"AA","y":"AA"},"attributes":{"enabled":true,"created":1,"updated":2},"tags":{"a":"b"}}"#;

    #[test]
    fn vault_uri_validation() {
        assert!(
            matches!(VaultEndpoint::parse("http://v.vault.azure.net"), Err(AzureError::Config(m)) if m.contains("https"))
        );
        assert!(VaultEndpoint::parse("v.vault.azure.net").is_err());
        assert_eq!(
            VaultEndpoint::parse(" https://v.vault.azure.net/?x=1").unwrap_err().to_string(),
            "invalid Azure settings: key_vault_uri must not have a query, got \" https://v.vault.azure.net/?x=1\""
        );
        let e = VaultEndpoint::parse("https://V.vault.azure.net:443/").unwrap();
        assert_eq!(e.base(), "https://v.vault.azure.net");
        let e = VaultEndpoint::parse("https://127.0.0.1:8443").unwrap();
        assert_eq!(e.base(), "https://127.0.0.1:8443");
        assert_eq!(validate_api_version("").unwrap(), "7.6");
        assert_eq!(validate_api_version("2025-07-01").unwrap(), "2025-07-01");
        assert!(validate_api_version("7.6&x=y").is_err());
    }

    #[test]
    fn get_sends_token_and_api_version_and_encodes_segments() {
        let (c, script, _) = client("https://v.vault.azure.net/", vec![resp(200, &[], BUNDLE)]);
        let b = c
            .get_key("k", Some("0123456789abcdef0123456789abcdef"))
            .unwrap();
        assert_eq!(b.version(), Some("0123456789abcdef0123456789abcdef"));
        let seen = script.seen.lock().unwrap();
        assert_eq!(
            seen[0].url,
            "https://v.vault.azure.net/keys/k/0123456789abcdef0123456789abcdef?api-version=7.6"
        );
        assert_eq!(seen[0].auth.as_deref(), Some("Bearer tok-1"));
        drop(seen);
        let (c, script, _) = client("https://v.vault.azure.net/", vec![resp(200, &[], BUNDLE)]);
        c.get_key("a/b?c", None).unwrap();
        assert_eq!(
            script.seen.lock().unwrap()[0].url,
            "https://v.vault.azure.net/keys/a%2Fb%3Fc?api-version=7.6"
        );
    }

    #[test]
    fn sign_body_and_tolerant_decoding() {
        let digest = [0xfbu8; 32];
        let (c, script, _) = client(
            "https://v.vault.azure.net",
            vec![resp(200, &[], r#"{"kid":"x","value":"-_8"}"#)],
        );
        assert_eq!(
            c.sign("k", "v1", "ES256", &digest).unwrap(),
            vec![0xfb, 0xff]
        );
        let seen = script.seen.lock().unwrap();
        assert_eq!(seen[0].method, "POST");
        assert_eq!(
            seen[0].url,
            "https://v.vault.azure.net/keys/k/v1/sign?api-version=7.6"
        );
        let body: Value = serde_json::from_str(&seen[0].body).unwrap();
        assert_eq!(body["alg"], "ES256");
        assert_eq!(body["value"], URL_SAFE_NO_PAD.encode(digest));
        assert_eq!(decode_signature("-_8=").unwrap(), vec![0xfb, 0xff]);
        assert_eq!(decode_signature("+/8=").unwrap(), vec![0xfb, 0xff]);
        assert_eq!(decode_signature("+/8").unwrap(), vec![0xfb, 0xff]);
        assert!(decode_signature("!!").is_err());
        assert!(decode_signature("").is_err());
        assert!(c.sign("k", "", "ES256", &digest).is_err());
    }

    #[test]
    fn error_bodies_become_service_errors() {
        let body = r#"{"error":{"code":"Conflict","message":"Key k is currently in a deleted but recoverable state","innererror":{"code":"Outer","innererror":{"code":"ObjectIsDeletedButRecoverable"}}}}"#;
        let (c, _, _) = client("https://v.vault.azure.net", vec![resp(409, &[], body)]);
        let e = c.create_key("k", &CreateKeyParams::default()).unwrap_err();
        assert_eq!(
            e,
            AzureError::Service {
                status: 409,
                code: Some("Conflict".into()),
                inner_code: Some("ObjectIsDeletedButRecoverable".into()),
                message: "Key k is currently in a deleted but recoverable state".into()
            }
        );
        assert!(e.is_deleted_but_recoverable());

        let forbidden = r#"{"error":{"code":"Forbidden","message":"Caller is not authorized.","innererror":{"code":"ForbiddenByPolicy"}}}"#;
        let (c, _, _) = client("https://v.vault.azure.net", vec![resp(403, &[], forbidden)]);
        let e = c.sign("k", "v", "ES256", &[0; 32]).unwrap_err();
        assert!(
            e.to_string()
                .contains("the identity likely lacks the keys/sign permission"),
            "{e}"
        );
        assert_eq!(e.status(), Some(403));

        let (c, _, _) = client(
            "https://v.vault.azure.net",
            vec![resp(404, &[], "<html>\nNot\tFound</html>")],
        );
        let e = c.get_key("k", None).unwrap_err();
        assert!(e.is_not_found());
        assert!(
            matches!(&e, AzureError::Service { message, code: None, .. } if message == "<html> Not Found</html>"),
            "{e:?}"
        );

        let (c, _, _) = client("https://v.vault.azure.net", vec![resp(403, &[], "")]);
        let e = c.list_keys().unwrap_err();
        assert!(
            e.to_string()
                .contains("list keys failed (the identity likely lacks the keys/list permission)"),
            "{e}"
        );
    }

    #[test]
    fn malformed_success_bodies_are_decode_errors() {
        let (c, _, _) = client(
            "https://v.vault.azure.net",
            vec![resp(200, &[], "{not json")],
        );
        assert!(matches!(c.get_key("k", None), Err(AzureError::Decode(_))));
        let (c, _, _) = client("https://v.vault.azure.net", vec![resp(200, &[], "{}")]);
        assert!(
            matches!(c.sign("k", "v", "ES256", &[0; 32]), Err(AzureError::Decode(m)) if m.contains("no value"))
        );
    }

    #[test]
    fn paging_follows_next_links_through_empty_pages() {
        let page = |kid: &str, next: Option<&str>| {
            let items = if kid.is_empty() {
                "[]".to_string()
            } else {
                format!(r#"[{{"kid":"https://v.vault.azure.net/keys/{kid}"}}]"#)
            };
            match next {
                Some(n) => resp(
                    200,
                    &[],
                    &format!(r#"{{"value":{items},"nextLink":"{n}"}}"#),
                ),
                None => resp(200, &[], &format!(r#"{{"value":{items},"nextLink":null}}"#)),
            }
        };
        let (c, script, _) = client(
            "https://v.vault.azure.net",
            vec![
                page(
                    "a",
                    Some("https://v.vault.azure.net:443/keys?api-version=7.2&$skiptoken=1"),
                ),
                page("", Some("https://V.vault.azure.net/keys?$skiptoken=2")),
                page("b", None),
            ],
        );
        let items = c.list_keys().unwrap();
        let names: Vec<_> = items.iter().filter_map(|i| i.name()).collect();
        assert_eq!(names, vec!["a", "b"]);
        let seen = script.seen.lock().unwrap();
        assert_eq!(
            seen[0].url,
            "https://v.vault.azure.net/keys?api-version=7.6&maxresults=25"
        );
        assert_eq!(
            seen[1].url,
            "https://v.vault.azure.net/keys?api-version=7.2&$skiptoken=1"
        );
        assert_eq!(
            seen[2].url,
            "https://v.vault.azure.net/keys?$skiptoken=2&api-version=7.6"
        );
        assert!(seen
            .iter()
            .all(|s| s.auth.as_deref() == Some("Bearer tok-1")));
    }

    #[test]
    fn next_link_to_another_host_is_refused() {
        let c = client("https://v.vault.azure.net", vec![]).0;
        for bad in [
            "https://evil.example/keys?x",
            "http://v.vault.azure.net/keys",
            "https://v.vault.azure.net:8443/keys",
            "https://v.vault.azure.net.evil.example/keys",
            "not a url",
        ] {
            assert!(
                matches!(c.checked_next_link(bad), Err(AzureError::Decode(_))),
                "{bad}"
            );
        }
        assert_eq!(
            c.checked_next_link("https://v.vault.azure.net/keys")
                .unwrap(),
            "https://v.vault.azure.net/keys?api-version=7.6"
        );
        let (c, script, _) = client(
            "https://v.vault.azure.net",
            vec![resp(
                200,
                &[],
                r#"{"value":[],"nextLink":"https://evil.example/keys"}"#,
            )],
        );
        assert!(c.list_key_versions("k").is_err());
        assert_eq!(script.seen.lock().unwrap().len(), 1);
    }

    #[test]
    fn challenge_for_same_resource_retries_once_with_fresh_token() {
        let tenant = "00000000-0000-0000-0000-0000000000aa";
        let challenge = format!(
            r#"Bearer authorization="https://login.example/{tenant}", resource="https://vault.azure.net""#
        );
        let (c, script, cred) = client(
            "https://127.0.0.1:8443/",
            vec![
                resp(401, &[("WWW-Authenticate", &challenge)], ""),
                resp(200, &[], BUNDLE),
                resp(200, &[], BUNDLE),
            ],
        );
        c.get_key("k", None).unwrap();
        c.get_key("k", None).unwrap();
        let seen = script.seen.lock().unwrap();
        assert_eq!(seen[0].auth.as_deref(), Some("Bearer tok-1"));
        assert_eq!(seen[1].auth.as_deref(), Some("Bearer tok-2"));
        assert_eq!(seen[2].auth.as_deref(), Some("Bearer tok-2"));
        assert_eq!(cred.n.load(Ordering::SeqCst), 2);
        let asked = cred.tenants.lock().unwrap();
        assert_eq!(
            asked[1],
            (
                Some(tenant.to_string()),
                "https://vault.azure.net/.default".to_string()
            )
        );
    }

    #[test]
    fn challenge_tenant_must_be_configured_or_additionally_allowed() {
        const OWN: &str = "00000000-0000-0000-0000-0000000000aa";
        const FOREIGN: &str = "00000000-0000-0000-0000-0000000000bb";
        let challenge = |tenant: &str| {
            resp(
                401,
                &[(
                    "WWW-Authenticate",
                    &format!(
                        r#"Bearer authorization="https://login.example/{tenant}", resource="https://vault.azure.net""#
                    ),
                )],
                "",
            )
        };
        let scope = "https://vault.azure.net/.default".to_string();
        // The configured tenant, a listed one and `*` are followed: the fresh token comes
        // from the challenge's tenant.
        for (tenant, additional) in [
            (OWN, None),
            (FOREIGN, Some(format!("x.example;{FOREIGN}"))),
            (FOREIGN, Some("*".to_string())),
        ] {
            let (c, script, cred) = client_allowing(
                "https://v.vault.azure.net",
                vec![challenge(tenant), resp(200, &[], BUNDLE)],
                AllowedTenants::new(Some(OWN), additional.as_deref()),
            );
            c.get_key("k", None).unwrap();
            assert_eq!(script.seen.lock().unwrap().len(), 2);
            assert_eq!(
                *cred.tenants.lock().unwrap(),
                vec![
                    (None, scope.clone()),
                    (Some(tenant.to_string()), scope.clone())
                ]
            );
        }
        // Another tenant is refused: no token is requested from it, nothing is re-sent.
        let (c, script, cred) = client_allowing(
            "https://v.vault.azure.net",
            vec![challenge(FOREIGN), resp(200, &[], BUNDLE)],
            AllowedTenants::new(Some(OWN), Some("x.example")),
        );
        let e = c.get_key("k", None).unwrap_err();
        let AzureError::Auth(m) = &e else {
            panic!("{e:?}");
        };
        assert!(m.contains(FOREIGN) && m.contains(OWN), "{m}");
        assert!(m.contains("AZURE_ADDITIONALLY_ALLOWED_TENANTS"), "{m}");
        assert_eq!(*cred.tenants.lock().unwrap(), vec![(None, scope)]);
        assert_eq!(script.seen.lock().unwrap().len(), 1);
    }

    #[test]
    fn second_401_is_an_error() {
        let ch = r#"Bearer resource="https://vault.azure.net""#;
        let (c, script, _) = client(
            "https://v.vault.azure.net",
            vec![
                resp(401, &[("WWW-Authenticate", ch)], ""),
                resp(
                    401,
                    &[("WWW-Authenticate", ch)],
                    r#"{"error":{"code":"Unauthorized","message":"AKV10022: Invalid audience."}}"#,
                ),
                resp(200, &[], BUNDLE),
            ],
        );
        let e = c.get_key("k", None).unwrap_err();
        assert_eq!(e.status(), Some(401));
        assert!(e.to_string().contains("AKV10022"), "{e}");
        assert_eq!(script.seen.lock().unwrap().len(), 2);
    }

    #[test]
    fn challenge_for_foreign_resource_is_refused_without_token_request() {
        let (c, script, cred) = client(
            "https://127.0.0.1:8443",
            vec![resp(
                401,
                &[(
                    "WWW-Authenticate",
                    r#"Bearer resource="https://attacker.example""#,
                )],
                "",
            )],
        );
        let e = c.get_key("k", None).unwrap_err();
        assert!(
            matches!(&e, AzureError::Auth(m) if m.contains("attacker.example")),
            "{e}"
        );
        assert_eq!(script.seen.lock().unwrap().len(), 1);
        assert_eq!(cred.n.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn challenge_for_containing_resource_switches_scope() {
        let (c, script, cred) = client(
            "https://h.managedhsm.example.net",
            vec![
                resp(
                    401,
                    &[(
                        "WWW-Authenticate",
                        r#"Bearer scope="https://managedhsm.example.net/.default""#,
                    )],
                    "",
                ),
                resp(200, &[], BUNDLE),
            ],
        );
        c.get_key("k", None).unwrap();
        assert_eq!(c.scope(), "https://managedhsm.example.net/.default");
        assert_eq!(script.seen.lock().unwrap().len(), 2);
        assert_eq!(
            cred.tenants.lock().unwrap()[1].1,
            "https://managedhsm.example.net/.default"
        );
    }

    #[test]
    fn delete_and_update_shapes() {
        let (c, script, _) = client(
            "https://v.vault.azure.net",
            vec![resp(200, &[], BUNDLE), resp(200, &[], BUNDLE)],
        );
        c.delete_key("k").unwrap();
        let params = UpdateKeyParams {
            key_ops: Some(vec!["sign".into(), "verify".into()]),
            ..Default::default()
        };
        c.update_key("k", "v1", &params).unwrap();
        let seen = script.seen.lock().unwrap();
        assert_eq!(seen[0].method, "DELETE");
        assert_eq!(
            seen[0].url,
            "https://v.vault.azure.net/keys/k?api-version=7.6"
        );
        assert_eq!(seen[1].method, "PATCH");
        assert_eq!(seen[1].body, r#"{"key_ops":["sign","verify"]}"#);
    }

    // -----------------------------------------------------------------------------------------
    // One deadline per operation

    const SECOND: Duration = Duration::from_secs(1);

    /// A client over a `Timed` transport whose every request (token requests included, with
    /// `secret_credential`) takes scripted time on a manual clock.
    fn timed_client(
        script: Vec<(Duration, Answer)>,
        secret_credential: bool,
    ) -> (KeyVaultClient, Arc<Timed>, ManualClock) {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let transport = Arc::new(Timed::new(&clock, script));
        let http = Arc::new(HttpClient::new(
            transport.clone(),
            Arc::new(clock.clone()),
            RetryPolicy::default(),
        ));
        let credential: Arc<dyn Credential> = if secret_credential {
            Arc::new(
                ClientSecretCredential::new(
                    "ClientSecretCredential (test)",
                    "tenant.example",
                    "client",
                    Secret::new("secret"),
                    "https://login.example/",
                    http.clone(),
                )
                .unwrap(),
            )
        } else {
            Arc::new(Counter {
                n: AtomicUsize::new(0),
                tenants: Mutex::new(Vec::new()),
            })
        };
        let tokens = Arc::new(TokenCache::new(credential, Arc::new(clock.clone())));
        let endpoint = VaultEndpoint::parse("https://v.vault.azure.net").unwrap();
        let client = KeyVaultClient::new(
            endpoint,
            "7.6".into(),
            "https://vault.azure.net/.default".into(),
            http,
            tokens,
        );
        (client, transport, clock)
    }

    fn token_answer() -> Result<HttpResponse, TransportError> {
        Ok(resp(
            200,
            &[],
            r#"{"access_token":"at-1","expires_in":3600}"#,
        ))
    }

    fn signed() -> Result<HttpResponse, TransportError> {
        Ok(resp(200, &[], r#"{"kid":"x","value":"-_8"}"#))
    }

    /// Every attempt starts and ends within `limit` of `origin`.
    fn assert_attempts_within(attempts: &[(String, Duration, Duration)], limit: Duration) {
        for (url, at, timeout) in attempts {
            assert!(*at + *timeout <= limit, "{url} at {at:?} for {timeout:?}");
        }
    }

    #[test]
    fn endless_throttling_fails_the_sign_within_the_deadline() {
        let (c, transport, clock) = timed_client(
            vec![(SECOND, || {
                Ok(resp(
                    429,
                    &[("Retry-After", "20")],
                    r#"{"error":{"code":"Throttled","message":"Too many requests"}}"#,
                ))
            })],
            false,
        );
        let start = Clock::now(&clock);
        let e = c.sign("k", "v1", "ES256", &[0; 32]).unwrap_err();
        let spent = Clock::now(&clock).duration_since(start).unwrap();
        assert!(spent < Duration::from_secs(25), "{spent:?}");
        assert_eq!(e.status(), Some(429));
        let m = e.to_string();
        assert!(m.contains("Too many requests"), "{m}");
        assert!(
            m.contains(
                "the vault asked to wait 20 s before a retry, which would end past the deadline"
            ),
            "{m}"
        );
        // One 20 s wait fitted (1 s + 20 s + 1 s = 22 s); the second would not.
        assert_eq!(clock.slept(), vec![Duration::from_secs(20)]);
        let attempts = transport.attempts_since(start);
        assert_eq!(attempts.len(), 2);
        assert_attempts_within(&attempts, Duration::from_secs(25));
        let busy: Duration = attempts.iter().map(|_| SECOND).sum();
        assert!(clock.slept().iter().sum::<Duration>() + busy <= Duration::from_secs(25));
    }

    #[test]
    fn a_slow_token_endpoint_leaves_only_the_rest_for_the_vault() {
        // The token endpoint hangs through a first attempt (12 s) and answers the retry after
        // 7.2 s: the token is there at 20 s. The vault then hangs past the 5 s that are left.
        let (c, transport, clock) = timed_client(
            vec![
                (Duration::from_secs(60), token_answer),
                (Duration::from_millis(7200), token_answer),
                (Duration::from_secs(60), signed),
            ],
            true,
        );
        let start = Clock::now(&clock);
        let e = c.sign("k", "v1", "ES256", &[0; 32]).unwrap_err();
        assert!(matches!(e, AzureError::Transport(_)), "{e:?}");
        assert_eq!(
            Clock::now(&clock).duration_since(start).unwrap(),
            Duration::from_secs(25)
        );
        let attempts = transport.attempts_since(start);
        assert_eq!(attempts.len(), 3, "{attempts:?}");
        assert!(attempts[1].0.contains("/oauth2/v2.0/token"));
        assert!(attempts[2].0.contains("/sign"));
        assert_eq!(attempts[2].1, Duration::from_secs(20));
        assert_eq!(attempts[2].2, Duration::from_secs(5));
        assert_attempts_within(&attempts, Duration::from_secs(25));
        assert_eq!(clock.slept(), vec![Duration::from_millis(800)]);
    }

    #[test]
    fn the_challenge_retry_shares_the_operation_deadline() {
        // Token 8 s, a 401 challenge after 4 s, a fresh token 8 s: the re-sent request gets the
        // 5 s that are left, and answers in time.
        let (c, transport, clock) = timed_client(
            vec![
                (Duration::from_secs(8), token_answer),
                (Duration::from_secs(4), || {
                    Ok(resp(
                        401,
                        &[(
                            "WWW-Authenticate",
                            r#"Bearer resource="https://vault.azure.net""#,
                        )],
                        "",
                    ))
                }),
                (Duration::from_secs(8), token_answer),
                (Duration::from_secs(4), signed),
            ],
            true,
        );
        let start = Clock::now(&clock);
        assert_eq!(
            c.sign("k", "v1", "ES256", &[0; 32]).unwrap(),
            vec![0xfb, 0xff]
        );
        let attempts = transport.attempts_since(start);
        let starts_and_timeouts: Vec<(Duration, Duration)> =
            attempts.iter().map(|(_, at, t)| (*at, *t)).collect();
        let secs = |a: u64, b: u64| (Duration::from_secs(a), Duration::from_secs(b));
        assert_eq!(
            starts_and_timeouts,
            vec![secs(0, 12), secs(8, 12), secs(12, 12), secs(20, 5)]
        );
        assert_attempts_within(&attempts, Duration::from_secs(25));
        // The next operation has a deadline of its own.
        let next = Clock::now(&clock);
        c.sign("k", "v1", "ES256", &[0; 32]).unwrap();
        let last = transport.attempts_since(next);
        assert_eq!(last.last().map(|a| a.2), Some(Duration::from_secs(12)));
    }
}
