//! What every credential is and shares: the token it returns, the `Credential` trait (and
//! `HttpCredential` for those that make one HTTP request per token), tenant checks and the
//! reading of token endpoint answers. A leaf of `auth`, so the credentials never import their
//! parent module.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::azure::deadline::Deadline;
use crate::azure::http::HttpClient;
use crate::azure::types::AzureError;
use crate::secret::Secret;

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
    let mut parts = vec![format!("HTTP {status}")];
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        match v.get("error") {
            Some(Value::String(code)) => parts.push(code.clone()),
            Some(Value::Object(o)) => {
                let fields = ["code", "message"]
                    .iter()
                    .filter_map(|k| o.get(*k)?.as_str());
                parts.extend(fields.map(str::to_owned));
            }
            _ => {}
        }
        let description = ["error_description", "message", "Message"]
            .iter()
            .find_map(|k| v.get(*k)?.as_str());
        if let Some(d) = description {
            parts.push(d.lines().next().unwrap_or("").to_string());
        }
    }
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
