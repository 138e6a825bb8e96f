//! The Azure layer: a hand-written Key Vault REST client and the Entra ID / managed identity
//! credentials it authenticates with, over a blocking `ureq` agent. No Azure SDK.
//!
//! The rest of the plugin calls [`connect`] once and then talks to the returned client through
//! the [`types::KeyVaultApi`] trait.

pub(crate) mod auth;
pub(crate) mod challenge;
pub(crate) mod cloud;
pub(crate) mod deadline;
#[cfg(test)]
mod fuzz_tests;
pub(crate) mod http;
pub(crate) mod keyvault;
pub(crate) mod settings;
pub(crate) mod throttle;
pub(crate) mod transport;
pub(crate) mod types;

use std::sync::Arc;

use crate::clock::Clock;

use auth::TokenCache;
pub use keyvault::KeyVaultClient;
use settings::env_get;
pub use settings::{AzureSettings, EnvSnapshot, StaticCredentials};
use types::AzureError;

/// Builds the Key Vault client: validates the vault URI, loads TLS roots and proxy settings,
/// and assembles the credential chain and token cache. Performs no network I/O; the first
/// token is fetched by the first Key Vault call. Each Key Vault operation is over within
/// [`deadline::OPERATION_DEADLINE`].
pub fn connect(
    settings: AzureSettings,
    clock: Arc<dyn Clock>,
) -> Result<Arc<KeyVaultClient>, AzureError> {
    connect_with_deadline(settings, clock, deadline::OPERATION_DEADLINE)
}

/// [`connect`] with another per-operation deadline. For tests that run a deadline out in real
/// time and must stay short; the plugin uses `connect`.
pub fn connect_with_deadline(
    settings: AzureSettings,
    clock: Arc<dyn Clock>,
    operation_deadline: std::time::Duration,
) -> Result<Arc<KeyVaultClient>, AzureError> {
    let vault = keyvault::VaultEndpoint::parse(&settings.vault_uri)?;
    let api_version = keyvault::validate_api_version(&settings.api_version)?;
    let transport = Arc::new(transport::UreqTransport::from_env(&settings.env)?);
    let http = Arc::new(http::HttpClient::new(
        transport,
        clock.clone(),
        http::RetryPolicy::default(),
    ));
    let authority = cloud::authority_host(&vault.url.host, &settings.env)?;
    let scope = cloud::scope_for_vault_host(&vault.url.host);
    let tenants = challenge::AllowedTenants::new(
        auth::configured_tenant(settings.static_credentials.as_ref(), &settings.env).as_deref(),
        env_get(&settings.env, challenge::ADDITIONALLY_ALLOWED_TENANTS),
    );
    let credential = auth::build_credential(
        settings.static_credentials,
        &settings.env,
        &authority,
        http.clone(),
    )?;
    let tokens = Arc::new(TokenCache::new(credential, clock));
    Ok(Arc::new(
        KeyVaultClient::new(vault, api_version, scope, http, tokens)
            .with_allowed_tenants(tenants)
            .with_operation_deadline(operation_deadline),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::settings::DEFAULT_API_VERSION;
    use crate::clock::ManualClock;
    use crate::secret::Secret;
    use std::time::SystemTime;

    fn settings(uri: &str) -> AzureSettings {
        AzureSettings {
            vault_uri: uri.to_string(),
            static_credentials: None,
            env: EnvSnapshot::new(),
            api_version: String::new(),
        }
    }

    #[test]
    fn connect_rejects_plain_http_vaults() {
        let clock = Arc::new(ManualClock::new(SystemTime::now()));
        let err = connect(settings("http://v.vault.azure.net/"), clock).unwrap_err();
        assert!(
            matches!(err, AzureError::Config(ref m) if m.contains("https")),
            "{err}"
        );
    }

    #[test]
    fn connect_builds_without_network() {
        let clock = Arc::new(ManualClock::new(SystemTime::now()));
        let client = connect(settings("https://v.vault.azure.net"), clock).unwrap();
        assert_eq!(client.api_version(), DEFAULT_API_VERSION);
        assert_eq!(client.scope(), "https://vault.azure.net/.default");
    }

    #[test]
    fn connect_allows_the_configured_and_listed_tenants() {
        let clock = Arc::new(ManualClock::new(SystemTime::now()));
        let mut s = settings("https://v.vault.azure.net");
        s.env.insert("AZURE_TENANT_ID".into(), "env.example".into());
        s.env.insert(
            challenge::ADDITIONALLY_ALLOWED_TENANTS.into(),
            "a.example; b.example".into(),
        );
        let client = connect(s.clone(), clock.clone()).unwrap();
        assert_eq!(
            client.allowed_tenants(),
            &challenge::AllowedTenants::new(Some("env.example"), Some("a.example;b.example"))
        );
        s.static_credentials = Some(StaticCredentials {
            tenant_id: "static.example".into(),
            client_id: "c".into(),
            client_secret: Secret::new("s"),
        });
        let client = connect(s, clock).unwrap();
        assert!(client.allowed_tenants().check("static.example").is_ok());
        assert!(client.allowed_tenants().check("b.example").is_ok());
        assert!(client.allowed_tenants().check("env.example").is_err());
    }

    #[test]
    fn settings_debug_hides_env_values_and_secret() {
        let mut s = settings("https://v.vault.azure.net");
        s.env
            .insert("AZURE_CLIENT_SECRET".into(), "very-secret-value".into());
        s.static_credentials = Some(StaticCredentials {
            tenant_id: "t".into(),
            client_id: "c".into(),
            client_secret: Secret::new("another-secret"),
        });
        let d = format!("{s:?}");
        assert!(d.contains("AZURE_CLIENT_SECRET"));
        assert!(!d.contains("very-secret-value"));
        assert!(!d.contains("another-secret"));
    }
}
