//! Credentials (hand-rolled OAuth2 client-credentials and managed identity over `ureq`) and the
//! per-(tenant, scope) token cache.
//!
//! Order (PRODUCT.md §3): static config secret wins; otherwise environment (secret or
//! certificate) → workload identity → managed identity, the first that succeeds being kept.
//!
//! Decisions:
//! - The authority host must be `https` (also for loopback fakes): secrets and assertions go
//!   there. Managed identity endpoints may be plain `http` (IMDS and App Service are).
//! - A tenant learned from a Key Vault challenge replaces the credential's configured tenant
//!   for that token request (as the Go SDK does since azkeys 1.2); the authority host is never
//!   taken from a challenge. Managed identity ignores tenants.
//! - `AZURE_IMDS_ENDPOINT` (a full token URL) overrides the IMDS address. It exists for tests
//!   only, so they never touch 169.254.169.254.

mod cache;
mod certificate;
mod chain;
mod entra;
mod managed_identity;
pub(crate) mod pkcs12;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::azure::http::HttpClient;
use crate::azure::types::AzureError;
use crate::azure::{EnvSnapshot, StaticCredentials};
use crate::clock::Clock;
use crate::secret::Secret;

pub use cache::{TokenCache, REFRESH_BEFORE_EXPIRY};
pub use certificate::{ClientCertificate, ClientCertificateCredential};
pub use chain::ChainCredential;
pub use entra::{ClientSecretCredential, EnvironmentCredential, WorkloadIdentityCredential};
pub use managed_identity::ManagedIdentityCredential;

/// An access token and when it stops being valid.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub token: Secret,
    pub expires_at: SystemTime,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &self.token)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Why a credential produced no token.
#[derive(Debug, Clone, PartialEq)]
pub enum CredentialError {
    /// Not configured here (variables missing, IMDS unreachable): the chain moves on.
    Unavailable(String),
    /// Configured but failed (rejected secret, unreadable token file): the chain stops.
    Failed(AzureError),
}

impl fmt::Display for CredentialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialError::Unavailable(m) => write!(f, "unavailable: {m}"),
            CredentialError::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// A source of access tokens. Implementations are blocking and thread-safe.
pub trait Credential: Send + Sync {
    /// Short name for logs and aggregated errors, e.g. `WorkloadIdentityCredential`.
    fn name(&self) -> &'static str;
    /// A new token for `scope` (`https://vault.azure.net/.default`), from `tenant` when given
    /// (a tenant learned from a challenge) or the credential's own.
    fn fetch(&self, tenant: Option<&str>, scope: &str) -> Result<AccessToken, CredentialError>;
}

/// Builds the credential the plugin uses: the static secret alone when configured, else the
/// default chain. Reads configuration only (no network, no token files).
pub fn build_credential(
    static_credentials: Option<StaticCredentials>,
    env: &EnvSnapshot,
    authority: &str,
    http: Arc<HttpClient>,
    clock: Arc<dyn Clock>,
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
    Ok(Arc::new(default_chain(env, authority, http, clock)?))
}

/// The Azure SDKs' default chain (production credentials only), narrowed by
/// `AZURE_TOKEN_CREDENTIALS` as they narrow it: unset or `prod` keeps all three, a credential's
/// name keeps that one alone; developer credentials (`dev`, the CLIs) are not in a plugin.
fn default_chain(
    env: &EnvSnapshot,
    authority: &str,
    http: Arc<HttpClient>,
    clock: Arc<dyn Clock>,
) -> Result<ChainCredential, AzureError> {
    const NAMES: [&str; 3] = [
        "EnvironmentCredential",
        "WorkloadIdentityCredential",
        "ManagedIdentityCredential",
    ];
    let only = match crate::azure::env_get(env, "AZURE_TOKEN_CREDENTIALS")
        .map(str::trim)
        .filter(|v| !v.is_empty())
    {
        None => None,
        Some(v) if v.eq_ignore_ascii_case("prod") => None,
        Some(v) => match NAMES.iter().find(|n| n.eq_ignore_ascii_case(v)) {
            Some(name) => Some(*name),
            None => {
                let developer = ["dev", "AzureCLICredential", "AzureDeveloperCLICredential"]
                    .iter()
                    .any(|d| d.eq_ignore_ascii_case(v));
                return Err(AzureError::Config(if developer {
                    format!(
                        "AZURE_TOKEN_CREDENTIALS={v} selects developer credentials, which this \
                         plugin does not have; use prod or one of {}",
                        NAMES.join(", ")
                    )
                } else {
                    format!(
                        "AZURE_TOKEN_CREDENTIALS has an unknown value {v:?}; expected prod or \
                         one of {}",
                        NAMES.join(", ")
                    )
                }));
            }
        },
    };
    let wanted = |name: &str| only.is_none_or(|o| o == name);
    let mut sources: Vec<Box<dyn Credential>> = Vec::new();
    if wanted(NAMES[0]) {
        sources.push(Box::new(EnvironmentCredential::from_env(
            env,
            authority,
            http.clone(),
            clock,
        )));
    }
    if wanted(NAMES[1]) {
        sources.push(Box::new(WorkloadIdentityCredential::from_env(
            env,
            authority,
            http.clone(),
        )));
    }
    if wanted(NAMES[2]) {
        sources.push(Box::new(ManagedIdentityCredential::from_env(env, http)));
    }
    Ok(ChainCredential::new(sources))
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
pub fn parse_token_response(body: &[u8], now: SystemTime) -> Result<AccessToken, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("token response is not JSON ({e})"))?;
    let token = v
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("token response has no access_token")?;
    let expires_at = if let Some(secs) = number_or_numeric_string(v.get("expires_in")) {
        now + Duration::from_secs_f64(secs.clamp(0.0, 1e9))
    } else if let Some(epoch) = number_or_numeric_string(v.get("expires_on")) {
        SystemTime::UNIX_EPOCH + Duration::from_secs_f64(epoch.clamp(0.0, 1e11))
    } else {
        return Err("token response has neither a numeric expires_in nor expires_on".into());
    };
    Ok(AccessToken {
        token: Secret::new(token),
        expires_at,
    })
}

/// A readable reason from an OAuth2 / managed identity error body: `error` + the first line of
/// `error_description` (AADSTS code and text), or `error.code` + `error.message`. Bounded.
pub fn describe_token_error(status: u16, body: &[u8]) -> String {
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
    let mut msg = format!("HTTP {status}");
    if !parts.is_empty() {
        msg.push_str(": ");
        msg.push_str(&parts.join(": "));
    }
    truncate(msg, 400)
}

pub(crate) fn truncate(mut s: String, max: usize) -> String {
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
mod tests {
    use super::*;

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
            default_chain(
                &env,
                "https://login.test/",
                http.clone(),
                Arc::new(clock.clone()),
            )
            .map(|c| c.source_names())
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
        let e = parse_token_response(br#"{"access_token":"sekrit-token"}"#, now()).unwrap_err();
        assert!(e.contains("expires"), "{e}");
        assert!(!e.contains("sekrit"));
        let e = parse_token_response(br#"{"access_token":"sekrit","expires_in":"soon"}"#, now())
            .unwrap_err();
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
