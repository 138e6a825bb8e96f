//! Key Vault wire types and the `KeyVaultApi` trait the key manager core talks to.
//!
//! The core never sees HTTP: it gets a `dyn KeyVaultApi`, implemented by the real REST client
//! (`azure::keyvault::KeyVaultClient`) and by in-memory fakes in unit tests.

use std::collections::HashMap;

use serde::{Deserialize, Deserializer, Serialize};

/// A JSON Web Key as Key Vault returns it (the wire types Key Vault answers with are read,
/// never written). Byte fields stay base64url text here; the key manager core decodes them
/// (tolerantly) when it converts to PKIX.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct JsonWebKey {
    pub kid: Option<String>,
    pub kty: Option<String>,
    pub key_ops: Vec<String>,
    pub n: Option<String>,
    pub e: Option<String>,
    pub crv: Option<String>,
    pub x: Option<String>,
    pub y: Option<String>,
}

/// Key attributes. Times are unix seconds; Key Vault may send fractional numbers, so they are
/// read as JSON numbers (or numeric strings) and kept as `f64`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct KeyAttributes {
    pub enabled: Option<bool>,
    #[serde(deserialize_with = "de_time")]
    pub created: Option<f64>,
    #[serde(deserialize_with = "de_time")]
    pub updated: Option<f64>,
    #[serde(deserialize_with = "de_time")]
    pub nbf: Option<f64>,
    #[serde(deserialize_with = "de_time")]
    pub exp: Option<f64>,
    #[serde(rename = "recoveryLevel")]
    pub recovery_level: Option<String>,
}

fn de_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        F(f64),
        S(String),
    }
    let t = match Option::<Num>::deserialize(d)? {
        None => return Ok(None),
        Some(Num::F(f)) => f,
        Some(Num::S(s)) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| serde::de::Error::custom(format!("invalid time value {s:?}")))?,
    };
    // "NaN" or "inf" is no time at all: treat it as absent rather than poison comparisons.
    Ok(t.is_finite().then_some(t))
}

/// `KeyBundle`: the answer to create, get and update.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct KeyBundle {
    pub key: JsonWebKey,
    pub attributes: KeyAttributes,
    pub tags: HashMap<String, String>,
}

impl KeyBundle {
    /// Key name parsed from `key.kid` (`https://vault/keys/<name>/<version>`).
    pub fn name(&self) -> Option<&str> {
        Some(parse_kid(self.key.kid.as_deref()?)?.0)
    }

    /// Key version parsed from `key.kid`.
    pub fn version(&self) -> Option<&str> {
        parse_kid(self.key.kid.as_deref()?)?.1
    }
}

/// An element of a list result: no key material. `kid` is versionless in `/keys` and versioned
/// in `/keys/<name>/versions`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct KeyItem {
    pub kid: String,
    pub attributes: KeyAttributes,
    pub tags: HashMap<String, String>,
}

impl KeyItem {
    pub fn name(&self) -> Option<&str> {
        Some(parse_kid(&self.kid)?.0)
    }

    pub fn version(&self) -> Option<&str> {
        parse_kid(&self.kid)?.1
    }
}

/// Splits `https://host[:port]/keys/<name>[/<version>]` into name and optional version.
pub(crate) fn parse_kid(kid: &str) -> Option<(&str, Option<&str>)> {
    let rest = kid.split_once("://").map(|(_, r)| r).unwrap_or(kid);
    let path = rest.split_once('/').map(|(_, p)| p)?;
    let path = path.split(['?', '#']).next().unwrap_or("");
    let mut parts = path.split('/').filter(|s| !s.is_empty());
    if parts.next()? != "keys" {
        return None;
    }
    Some((parts.next()?, parts.next()))
}

/// Parameters of `POST /keys/<name>/create`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CreateKeyParams {
    pub kty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// Always sent: lowkey-vault defaults to no operations at all.
    pub key_ops: Vec<String>,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub tags: HashMap<String, String>,
}

/// Parameters of `PATCH /keys/<name>/<version>`. `None` fields are not sent (left unchanged);
/// `tags`, when sent, replaces the whole tag set.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct UpdateKeyParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ops: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<UpdateAttributes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<HashMap<String, String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct UpdateAttributes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// Every failure of the Azure layer. `Display` never contains a secret or a token.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AzureError {
    /// The service answered with a non-success status.
    #[error("Key Vault returned HTTP {status}{}", service_detail(.code, .inner_code, .message))]
    Service {
        status: u16,
        /// `error.code`, e.g. `Forbidden`, `KeyNotFound`, `Conflict`.
        code: Option<String>,
        /// The innermost `innererror.code`, e.g. `ObjectIsDeletedButRecoverable`.
        inner_code: Option<String>,
        message: String,
    },
    /// Connection refused or reset, TLS failure, timeout.
    #[error("transport error: {0}")]
    Transport(String),
    /// A 2xx answer whose body could not be understood.
    #[error("malformed response: {0}")]
    Decode(String),
    /// No credential could produce a token (the message aggregates every attempt).
    #[error("authentication failed: {0}")]
    Auth(String),
    /// Unusable settings: a non-https vault URI, an unreadable certificate file, ...
    #[error("invalid Azure settings: {0}")]
    Config(String),
    /// The vault throttles (HTTP 429) and the request could not be sent again before the
    /// operation's deadline (see `throttle`): the vault rejected every attempt, so nothing was
    /// done.
    #[error("Key Vault is throttling requests: {0}")]
    Throttled(String),
}

/// What follows the status in a [`AzureError::Service`] message: ` (code/inner)`, then
/// `: message` when there is one.
fn service_detail(code: &Option<String>, inner_code: &Option<String>, message: &str) -> String {
    let codes = match (code, inner_code) {
        (Some(c), Some(i)) => format!(" ({c}/{i})"),
        (Some(c), None) | (None, Some(c)) => format!(" ({c})"),
        (None, None) => String::new(),
    };
    if message.is_empty() {
        codes
    } else {
        format!("{codes}: {message}")
    }
}

impl AzureError {
    pub fn status(&self) -> Option<u16> {
        match self {
            AzureError::Service { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// 409 on a name that is soft-deleted. lowkey-vault sends no inner code, so any 409 on
    /// create whose message speaks of a deleted entity counts too.
    pub fn is_deleted_but_recoverable(&self) -> bool {
        match self {
            AzureError::Service {
                status: 409,
                inner_code,
                message,
                ..
            } => {
                inner_code.as_deref() == Some("ObjectIsDeletedButRecoverable")
                    || message.to_ascii_lowercase().contains("deleted")
            }
            _ => false,
        }
    }
}

/// The Key Vault keys operations the key manager needs. Implementations are blocking and
/// thread-safe; they hold no lock across network I/O.
pub trait KeyVaultApi: Send + Sync {
    /// `POST /keys/<name>/create`: a new key, or a new version when the name exists.
    fn create_key(&self, name: &str, params: &CreateKeyParams) -> Result<KeyBundle, AzureError>;
    /// `GET /keys/<name>/<version>`, or the latest version when `version` is `None`.
    fn get_key(&self, name: &str, version: Option<&str>) -> Result<KeyBundle, AzureError>;
    /// `GET /keys`, every page.
    fn list_keys(&self) -> Result<Vec<KeyItem>, AzureError>;
    /// `GET /keys/<name>/versions`, every page.
    fn list_key_versions(&self, name: &str) -> Result<Vec<KeyItem>, AzureError>;
    /// `PATCH /keys/<name>/<version>`.
    fn update_key(
        &self,
        name: &str,
        version: &str,
        params: &UpdateKeyParams,
    ) -> Result<KeyBundle, AzureError>;
    /// `DELETE /keys/<name>` (soft delete; all versions).
    fn delete_key(&self, name: &str) -> Result<(), AzureError>;
    /// `POST /keys/<name>/<version>/sign` with `digest` (already hashed). Returns the raw
    /// signature bytes as Key Vault sends them (EC: `r||s`).
    fn sign(
        &self,
        name: &str,
        version: &str,
        alg: &str,
        digest: &[u8],
    ) -> Result<Vec<u8>, AzureError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The service error's text is what SPIRE logs and tests match on: codes in parentheses
    /// (outer/inner when both), then the message when there is one.
    #[test]
    fn service_error_messages() {
        let some = |s: &str| Some(s.to_string());
        for (code, inner_code, message, want) in [
            (
                some("C"),
                some("I"),
                "m",
                "Key Vault returned HTTP 409 (C/I): m",
            ),
            (some("C"), None, "m", "Key Vault returned HTTP 409 (C): m"),
            (None, some("I"), "m", "Key Vault returned HTTP 409 (I): m"),
            (None, None, "m", "Key Vault returned HTTP 409: m"),
            (
                some("C"),
                some("I"),
                "",
                "Key Vault returned HTTP 409 (C/I)",
            ),
            (None, None, "", "Key Vault returned HTTP 409"),
        ] {
            let e = AzureError::Service {
                status: 409,
                code,
                inner_code,
                message: message.to_string(),
            };
            assert_eq!(e.to_string(), want);
        }
        assert_eq!(
            AzureError::Throttled("t".into()).to_string(),
            "Key Vault is throttling requests: t"
        );
    }

    #[test]
    fn kid_parsing() {
        assert_eq!(
            parse_kid("https://v.vault.azure.net/keys/abc/0123"),
            Some(("abc", Some("0123")))
        );
        assert_eq!(
            parse_kid("https://v.vault.azure.net:443/keys/abc"),
            Some(("abc", None))
        );
        assert_eq!(parse_kid("https://v/secrets/abc"), None);
        assert_eq!(parse_kid("garbage"), None);
    }

    #[test]
    fn times_accept_fractions_and_strings() {
        let a: KeyAttributes =
            serde_json::from_str(r#"{"created":1493937.66,"updated":"12","enabled":true}"#)
                .unwrap();
        assert_eq!(a.created, Some(1493937.66));
        assert_eq!(a.updated, Some(12.0));
        let b: KeyAttributes =
            serde_json::from_str(r#"{"created":"NaN","updated":"inf"}"#).unwrap();
        assert_eq!((b.created, b.updated), (None, None));
    }
}
