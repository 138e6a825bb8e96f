//! What the Azure layer is built from: the plugin's settings and a snapshot of the environment.
//! A leaf module, so every part of the layer reads them without importing the layer's root.

use std::collections::HashMap;
use std::fmt;

use crate::secret::Secret;

/// A snapshot of the process environment (`std::env::vars().collect()` in production). Passed
/// in rather than read globally so tests never mutate the real process environment.
pub type EnvSnapshot = HashMap<String, String>;

/// Default Key Vault REST api-version: accepted by real Azure and every lowkey-vault release.
pub(crate) const DEFAULT_API_VERSION: &str = "7.6";

/// `tenant_id` + `app_id` + `app_secret` from the plugin configuration.
#[derive(Clone, Debug)]
pub struct StaticCredentials {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: Secret,
}

/// Everything [`super::connect`] needs.
#[derive(Clone)]
pub struct AzureSettings {
    /// `key_vault_uri`; must be `https`.
    pub vault_uri: String,
    /// Static credentials from the plugin config; when set they win over the default chain.
    pub static_credentials: Option<StaticCredentials>,
    /// Environment snapshot (credential variables, `AZURE_AUTHORITY_HOST`,
    /// `AZURE_ADDITIONALLY_ALLOWED_TENANTS`, proxies, CA files).
    pub env: EnvSnapshot,
    /// Key Vault api-version; empty means [`DEFAULT_API_VERSION`].
    pub api_version: String,
}

impl fmt::Debug for AzureSettings {
    // The environment can hold AZURE_CLIENT_SECRET and proxy passwords: list names only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.env.keys().collect();
        names.sort();
        f.debug_struct("AzureSettings")
            .field("vault_uri", &self.vault_uri)
            .field("static_credentials", &self.static_credentials)
            .field("env_names", &names)
            .field("api_version", &self.api_version)
            .finish()
    }
}

/// A non-empty, trimmed environment value.
pub(crate) fn env_get<'a>(env: &'a EnvSnapshot, name: &str) -> Option<&'a str> {
    env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
}
