//! Credentials (hand-rolled OAuth2 client-credentials and managed identity over `ureq`) and the
//! per-(tenant, scope) token cache.
//!
//! Order (README "Credentials"): static config secret wins; otherwise environment (secret or
//! certificate) → workload identity → managed identity, the first that succeeds being kept.
//!
//! Decisions:
//! - The authority host must be `https` (also for loopback fakes): secrets and assertions go
//!   there. Managed identity endpoints may be plain `http` (IMDS and App Service are).
//! - A tenant learned from a Key Vault challenge replaces the credential's configured tenant
//!   for that token request (as the Go SDK does since azkeys 1.2) when it is that tenant or
//!   listed in `AZURE_ADDITIONALLY_ALLOWED_TENANTS` (checked in `challenge::decide`); the
//!   authority host is never taken from a challenge. Managed identity ignores tenants.
//! - `AZURE_IMDS_ENDPOINT` (a full token URL) overrides the IMDS address so tests never touch
//!   169.254.169.254. Only builds with the `test-hooks` feature read it.

mod cache;
mod certificate;
mod chain;
mod entra;
mod managed_identity;
pub(crate) mod pkcs12;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::azure::deadline::Deadline;
use crate::azure::http::HttpClient;
use crate::azure::types::AzureError;
use crate::azure::{EnvSnapshot, StaticCredentials};
use crate::secret::Secret;

pub(crate) use cache::TokenCache;
#[cfg(test)]
pub(crate) use certificate::ClientCertificate;
pub(crate) use chain::ChainCredential;
pub(crate) use entra::ClientSecretCredential;
pub(crate) use managed_identity::ManagedIdentityCredential;

/// An access token and when it stops being valid (`Debug` redacts the token).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AccessToken {
    pub token: Secret,
    pub expires_at: SystemTime,
}

/// Why a credential produced no token.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CredentialError {
    /// Not configured here (variables missing, IMDS unreachable): the chain moves on.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Configured but failed (rejected secret, unreadable token file): the chain stops.
    #[error("{0}")]
    Failed(#[source] AzureError),
}

/// A source of access tokens. Implementations are blocking and thread-safe.
pub trait Credential: Send + Sync {
    /// Short name for logs and aggregated errors, e.g. `WorkloadIdentityCredential`.
    fn name(&self) -> &'static str;
    /// A new token for `scope` (`https://vault.azure.net/.default`), from `tenant` when given
    /// (a tenant learned from a challenge) or the credential's own.
    fn fetch(&self, tenant: Option<&str>, scope: &str) -> Result<AccessToken, CredentialError>;

    /// [`Credential::fetch`] with every network call over by `deadline` (the Key Vault
    /// operation's). Every credential here that talks to the network overrides it; the default
    /// suits those that do not (test fakes).
    fn fetch_within(
        &self,
        tenant: Option<&str>,
        scope: &str,
        _deadline: Deadline,
    ) -> Result<AccessToken, CredentialError> {
        self.fetch(tenant, scope)
    }
}

/// A credential whose token requests all go through its one HTTP client (the Entra token
/// endpoint's credentials): `fetch` uses the client as it is, `fetch_within` the client bound to
/// the Key Vault operation's deadline. Implementing this gives the [`Credential`].
pub(crate) trait HttpCredential: Send + Sync {
    fn credential_name(&self) -> &'static str;
    fn http(&self) -> &HttpClient;
    /// A new token, every request over `http`.
    fn fetch_over(
        &self,
        http: &HttpClient,
        tenant: Option<&str>,
        scope: &str,
    ) -> Result<AccessToken, CredentialError>;
}

impl<T: HttpCredential> Credential for T {
    fn name(&self) -> &'static str {
        self.credential_name()
    }

    fn fetch(&self, tenant: Option<&str>, scope: &str) -> Result<AccessToken, CredentialError> {
        self.fetch_over(self.http(), tenant, scope)
    }

    fn fetch_within(
        &self,
        tenant: Option<&str>,
        scope: &str,
        deadline: Deadline,
    ) -> Result<AccessToken, CredentialError> {
        self.fetch_over(&self.http().within(deadline), tenant, scope)
    }
}

/// Builds the credential the plugin uses: the static secret alone when configured, else the
/// default chain. Reads configuration only (no network, no token files).
pub(crate) fn build_credential(
    static_credentials: Option<StaticCredentials>,
    env: &EnvSnapshot,
    authority: &str,
    http: Arc<HttpClient>,
) -> Result<Arc<dyn Credential>, AzureError> {
    if let Some(s) = static_credentials {
        let cred = ClientSecretCredential::new(
            "ClientSecretCredential (plugin config)",
            &s.tenant_id,
            &s.client_id,
            s.client_secret,
            authority,
            http,
        )?;
        return Ok(Arc::new(ChainCredential::new(vec![Box::new(cred)])));
    }
    Ok(Arc::new(default_chain(env, authority, http)?))
}

/// The tenant the credential authenticates to by its own configuration: the static
/// `tenant_id`, else `AZURE_TENANT_ID` when the chain holds the environment or workload
/// identity credential (both read it). `None` when only managed identity can be used: it has
/// no tenant of its own.
pub(crate) fn configured_tenant(
    static_credentials: Option<&StaticCredentials>,
    env: &EnvSnapshot,
) -> Option<String> {
    if let Some(s) = static_credentials {
        return Some(s.tenant_id.trim().to_string());
    }
    match narrowed_to(env) {
        Ok(Some(name)) if name == CHAIN_NAMES[2] => None,
        _ => crate::azure::env_get(env, "AZURE_TENANT_ID").map(str::to_string),
    }
}

/// The default chain's credentials, in order.
const CHAIN_NAMES: [&str; 3] = [
    "EnvironmentCredential",
    "WorkloadIdentityCredential",
    "ManagedIdentityCredential",
];

/// The one credential `AZURE_TOKEN_CREDENTIALS` keeps, `None` for all of them.
fn narrowed_to(env: &EnvSnapshot) -> Result<Option<&'static str>, AzureError> {
    let v = match crate::azure::env_get(env, "AZURE_TOKEN_CREDENTIALS") {
        Some(v) if !v.eq_ignore_ascii_case("prod") => v,
        _ => return Ok(None),
    };
    if let Some(name) = CHAIN_NAMES.iter().find(|n| n.eq_ignore_ascii_case(v)) {
        return Ok(Some(name));
    }
    let developer = ["dev", "AzureCLICredential", "AzureDeveloperCLICredential"]
        .iter()
        .any(|d| d.eq_ignore_ascii_case(v));
    let names = CHAIN_NAMES.join(", ");
    Err(AzureError::Config(if developer {
        format!(
            "AZURE_TOKEN_CREDENTIALS={v} selects developer credentials, which this plugin does \
             not have; use prod or one of {names}"
        )
    } else {
        format!(
            "AZURE_TOKEN_CREDENTIALS has an unknown value {v:?}; expected prod or one of {names}"
        )
    }))
}

/// The Azure SDKs' default chain (production credentials only), narrowed by
/// `AZURE_TOKEN_CREDENTIALS` as they narrow it: unset or `prod` keeps all three, a credential's
/// name keeps that one alone; developer credentials (`dev`, the CLIs) are not in a plugin.
fn default_chain(
    env: &EnvSnapshot,
    authority: &str,
    http: Arc<HttpClient>,
) -> Result<ChainCredential, AzureError> {
    let only = narrowed_to(env)?;
    let all: [Box<dyn Credential>; 3] = [
        Box::new(entra::environment(env, authority, http.clone())),
        Box::new(entra::workload_identity(env, authority, http.clone())),
        Box::new(ManagedIdentityCredential::from_env(env, http)),
    ];
    let wanted = CHAIN_NAMES.map(|name| only.is_none_or(|o| o == name));
    let sources = all.into_iter().zip(wanted).filter(|(_, w)| *w);
    Ok(ChainCredential::new(sources.map(|(c, _)| c).collect()))
}

pub(crate) fn failed(m: String) -> CredentialError {
    CredentialError::Failed(AzureError::Auth(m))
}

/// A tenant id safe to put in a URL path: a GUID or a domain (`^[0-9a-zA-Z-.]+$`).
pub(crate) fn validate_tenant(tenant: &str) -> Result<&str, AzureError> {
    let t = tenant.trim();
    if !t.is_empty()
        && t.len() <= 256
        && !t.starts_with('.')
        && !t.contains("..")
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        Ok(t)
    } else {
        Err(AzureError::Config(format!(
            "invalid tenant id {t:?}: expected a GUID or a domain name"
        )))
    }
}

fn number_or_numeric_string(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|f| f.is_finite())
}

/// Parses an Entra or managed identity token response. `expires_in` (seconds from now) wins
/// over `expires_on` (epoch seconds); both may be numbers or numeric strings. Errors never
/// quote the body: it holds the token.
pub(crate) fn parse_token_response(
    body: &[u8],
    now: SystemTime,
) -> Result<AccessToken, TokenResponseError> {
    let v: Value = serde_json::from_slice(body).map_err(TokenResponseError::NotJson)?;
    let token = v
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or(TokenResponseError::NoAccessToken)?;
    let expires_at = if let Some(secs) = number_or_numeric_string(v.get("expires_in")) {
        now + Duration::from_secs_f64(secs.clamp(0.0, 1e9))
    } else if let Some(epoch) = number_or_numeric_string(v.get("expires_on")) {
        SystemTime::UNIX_EPOCH + Duration::from_secs_f64(epoch.clamp(0.0, 1e11))
    } else {
        return Err(TokenResponseError::NoExpiry);
    };
    Ok(AccessToken {
        token: Secret::new(token),
        expires_at,
    })
}

/// Why a token response cannot be used. `Display` never quotes the body (it holds the token);
/// serde_json's error only gives a position.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TokenResponseError {
    #[error("token response is not JSON ({0})")]
    NotJson(#[source] serde_json::Error),
    #[error("token response has no access_token")]
    NoAccessToken,
    #[error("token response has neither a numeric expires_in nor expires_on")]
    NoExpiry,
}

/// A readable reason from an OAuth2 / managed identity error body: `error` + the first line of
/// `error_description` (AADSTS code and text), or `error.code` + `error.message`. Bounded.
pub(crate) fn describe_token_error(status: u16, body: &[u8]) -> String {
    let mut parts = Vec::new();
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        match v.get("error") {
            Some(Value::String(code)) => parts.push(code.clone()),
            Some(Value::Object(o)) => {
                if let Some(c) = o.get("code").and_then(Value::as_str) {
                    parts.push(c.to_string());
                }
                if let Some(m) = o.get("message").and_then(Value::as_str) {
                    parts.push(m.to_string());
                }
            }
            _ => {}
        }
        for key in ["error_description", "message", "Message"] {
            if let Some(d) = v.get(key).and_then(Value::as_str) {
                parts.push(d.lines().next().unwrap_or("").to_string());
                break;
            }
        }
    }
    parts.insert(0, format!("HTTP {status}"));
    truncate(parts.join(": "), 400)
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An environment holding `pairs`.
    pub(crate) fn env_of(pairs: &[(&str, &str)]) -> EnvSnapshot {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn azure_token_credentials_narrows_the_chain() {
        let clock = crate::clock::ManualClock::new(now());
        let http = Arc::new(HttpClient::new(
            Arc::new(crate::azure::http::tests::Scripted::new(vec![])),
            Arc::new(clock.clone()),
            crate::azure::http::RetryPolicy::default(),
        ));
        let chain = |value: Option<&str>| {
            let env: EnvSnapshot = value
                .map(|v| ("AZURE_TOKEN_CREDENTIALS".to_string(), v.to_string()))
                .into_iter()
                .collect();
            default_chain(&env, "https://login.test/", http.clone()).map(|c| c.source_names())
        };
        let all = vec![
            "EnvironmentCredential",
            "WorkloadIdentityCredential",
            "ManagedIdentityCredential (IMDS)",
        ];
        assert_eq!(chain(None).unwrap(), all);
        assert_eq!(chain(Some("prod")).unwrap(), all);
        assert_eq!(chain(Some(" PROD ")).unwrap(), all);
        assert_eq!(
            chain(Some("managedidentitycredential")).unwrap(),
            vec!["ManagedIdentityCredential (IMDS)"]
        );
        assert_eq!(
            chain(Some("WorkloadIdentityCredential")).unwrap(),
            vec!["WorkloadIdentityCredential"]
        );
        let e = chain(Some("dev")).unwrap_err().to_string();
        assert!(e.contains("developer credentials"), "{e}");
        let e = chain(Some("AzureCLICredential")).unwrap_err().to_string();
        assert!(e.contains("developer credentials"), "{e}");
        let e = chain(Some("Everything")).unwrap_err().to_string();
        assert!(e.contains("unknown value \"Everything\""), "{e}");
    }

    #[test]
    fn configured_tenant_is_the_static_or_environment_one() {
        let env = env_of;
        let statics = StaticCredentials {
            tenant_id: " static.example ".into(),
            client_id: "c".into(),
            client_secret: Secret::new("s"),
        };
        let with_tenant = env(&[("AZURE_TENANT_ID", "env.example")]);
        assert_eq!(
            configured_tenant(Some(&statics), &with_tenant).as_deref(),
            Some("static.example")
        );
        assert_eq!(
            configured_tenant(None, &with_tenant).as_deref(),
            Some("env.example")
        );
        let workload_only = env(&[
            ("AZURE_TENANT_ID", "env.example"),
            ("AZURE_TOKEN_CREDENTIALS", "WorkloadIdentityCredential"),
        ]);
        assert_eq!(
            configured_tenant(None, &workload_only).as_deref(),
            Some("env.example")
        );
        // Managed identity alone has no tenant of its own.
        let mi_only = env(&[
            ("AZURE_TENANT_ID", "env.example"),
            ("AZURE_TOKEN_CREDENTIALS", "ManagedIdentityCredential"),
        ]);
        assert_eq!(configured_tenant(None, &mi_only), None);
        assert_eq!(configured_tenant(None, &EnvSnapshot::new()), None);
    }

    #[test]
    fn token_response_numbers_and_strings() {
        let t = parse_token_response(
            br#"{"token_type":"Bearer","expires_in":3599,"access_token":"eyJ.a.b"}"#,
            now(),
        )
        .unwrap();
        assert_eq!(t.token.expose(), "eyJ.a.b");
        assert_eq!(t.expires_at, now() + Duration::from_secs(3599));

        let t = parse_token_response(
            br#"{"access_token":"x","expires_in":"86399","expires_on":"1"}"#,
            now(),
        )
        .unwrap();
        assert_eq!(t.expires_at, now() + Duration::from_secs(86399));

        let t = parse_token_response(br#"{"access_token":"x","expires_on":"1700003600"}"#, now())
            .unwrap();
        assert_eq!(t.expires_at, now() + Duration::from_secs(3600));
        let t = parse_token_response(br#"{"access_token":"x","expires_on":1700000060}"#, now())
            .unwrap();
        assert_eq!(t.expires_at, now() + Duration::from_secs(60));
    }

    #[test]
    fn token_response_errors_do_not_quote_the_body() {
        let e = parse_token_response(br#"{"access_token":"sekrit-token"}"#, now())
            .unwrap_err()
            .to_string();
        assert!(e.contains("expires"), "{e}");
        assert!(!e.contains("sekrit"));
        let e = parse_token_response(br#"{"access_token":"sekrit","expires_in":"soon"}"#, now())
            .unwrap_err()
            .to_string();
        assert!(!e.contains("sekrit"));
        assert!(parse_token_response(b"{\"expires_in\":5}", now()).is_err());
        assert!(parse_token_response(b"<html>", now()).is_err());
        assert!(parse_token_response(br#"{"access_token":"","expires_in":5}"#, now()).is_err());
    }

    #[test]
    fn token_error_descriptions() {
        let m = describe_token_error(
            401,
            br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: x","error_codes":[7000215]}"#,
        );
        assert_eq!(
            m,
            "HTTP 401: invalid_client: AADSTS7000215: Invalid client secret provided."
        );
        let m = describe_token_error(
            400,
            br#"{"error":{"code":"BadRequest","message":"No managed identity"}}"#,
        );
        assert_eq!(m, "HTTP 400: BadRequest: No managed identity");
        assert_eq!(describe_token_error(502, b"<html>bad gateway"), "HTTP 502");
        assert!(
            describe_token_error(
                400,
                format!(r#"{{"error":"{}"}}"#, "x".repeat(2000)).as_bytes()
            )
            .len()
                < 420
        );
    }

    #[test]
    fn tenant_validation() {
        assert!(validate_tenant("72f988bf-86f1-41af-91ab-2d7cd011db47").is_ok());
        assert!(validate_tenant("contoso.onmicrosoft.com").is_ok());
        assert!(validate_tenant("").is_err());
        assert!(validate_tenant("a/b").is_err());
        assert!(validate_tenant("a?b").is_err());
        assert!(validate_tenant("..").is_err());
        assert!(validate_tenant(".x").is_err());
    }

    #[test]
    fn access_token_debug_is_redacted() {
        let t = AccessToken {
            token: Secret::new("tok-value"),
            expires_at: now(),
        };
        assert!(!format!("{t:?}").contains("tok-value"));
    }
}
