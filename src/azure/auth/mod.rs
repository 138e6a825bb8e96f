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
mod credential;
mod entra;
mod managed_identity;
pub(crate) mod pkcs12;

use std::sync::Arc;

use crate::azure::http::HttpClient;
use crate::azure::settings::{EnvSnapshot, StaticCredentials};
use crate::azure::types::AzureError;

pub(crate) use cache::TokenCache;
#[cfg(test)]
pub(crate) use certificate::ClientCertificate;
pub(crate) use chain::ChainCredential;
#[cfg(test)]
pub(crate) use credential::{
    describe_token_error, parse_token_response, AccessToken, CredentialError,
};
pub(crate) use credential::{validate_tenant, Credential};
pub(crate) use entra::ClientSecretCredential;
pub(crate) use managed_identity::ManagedIdentityCredential;

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
        _ => crate::azure::settings::env_get(env, "AZURE_TENANT_ID").map(str::to_string),
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
    let v = match crate::azure::settings::env_get(env, "AZURE_TOKEN_CREDENTIALS") {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::secret::Secret;
    use std::time::{Duration, SystemTime};

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
