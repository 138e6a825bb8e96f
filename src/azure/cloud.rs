//! Sovereign-cloud mapping: the vault host decides the token scope and the default Entra
//! authority host; `AZURE_AUTHORITY_HOST` overrides the authority.

use crate::azure::http::Url;
use crate::azure::settings::{env_get, EnvSnapshot};
use crate::azure::types::AzureError;

/// Public-cloud Key Vault scope, also used for hosts matching no known suffix (emulators,
/// loopback, custom DNS): a challenge then corrects it if needed.
pub(crate) const PUBLIC_VAULT_SCOPE: &str = "https://vault.azure.net/.default";

const PUBLIC_AUTHORITY: &str = "https://login.microsoftonline.com/";
const CHINA_AUTHORITY: &str = "https://login.chinacloudapi.cn/";
const US_GOV_AUTHORITY: &str = "https://login.microsoftonline.us/";

/// (vault host suffix, authority host); the cloud's resource is `https://` + the suffix.
const CLOUDS: &[(&str, &str)] = &[
    ("vault.azure.net", PUBLIC_AUTHORITY),
    ("managedhsm.azure.net", PUBLIC_AUTHORITY),
    ("vault.azure.cn", CHINA_AUTHORITY),
    ("managedhsm.azure.cn", CHINA_AUTHORITY),
    ("vault.usgovcloudapi.net", US_GOV_AUTHORITY),
    ("managedhsm.usgovcloudapi.net", US_GOV_AUTHORITY),
];

fn cloud_for(host: &str) -> Option<&'static (&'static str, &'static str)> {
    let host = host_without_port(host).to_ascii_lowercase();
    CLOUDS
        .iter()
        .find(|(suffix, _)| host.ends_with(&format!(".{suffix}")))
}

/// Strips a `:port` (not from a bracketed IPv6 literal's inside).
pub(crate) fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .and_then(|(h, _)| host.get(..=h.len()))
            .unwrap_or(host);
    }
    host.split(':').next().unwrap_or(host)
}

/// The OAuth2 v2 scope for a vault host (`myvault.vault.azure.cn` →
/// `https://vault.azure.cn/.default`); unknown hosts get [`PUBLIC_VAULT_SCOPE`].
pub(crate) fn scope_for_vault_host(host: &str) -> String {
    cloud_for(host)
        .map(|(suffix, _)| format!("https://{suffix}/.default"))
        .unwrap_or_else(|| PUBLIC_VAULT_SCOPE.to_string())
}

/// The default authority host for a vault host's cloud (public for unknown hosts).
pub(crate) fn default_authority_for_vault_host(host: &str) -> &'static str {
    cloud_for(host)
        .map(|(_, authority)| *authority)
        .unwrap_or(PUBLIC_AUTHORITY)
}

/// The authority host to use: `AZURE_AUTHORITY_HOST` if set, else the vault's cloud default.
/// Always `https` and normalized to end with `/`: the client secret and assertions go there.
pub(crate) fn authority_host(vault_host: &str, env: &EnvSnapshot) -> Result<String, AzureError> {
    let Some(configured) = env_get(env, "AZURE_AUTHORITY_HOST") else {
        return Ok(default_authority_for_vault_host(vault_host).to_string());
    };
    let url = Url::parse(configured)
        .map_err(|e| AzureError::Config(format!("AZURE_AUTHORITY_HOST: {e}")))?;
    if url.scheme != "https" {
        return Err(AzureError::Config(format!(
            "AZURE_AUTHORITY_HOST must be an https URL, got {configured:?}"
        )));
    }
    Ok(url.base_without_query("AZURE_AUTHORITY_HOST", configured)? + "/")
}

/// `https://vault.azure.net/.default` → `https://vault.azure.net`: the v1 "resource" form
/// used by managed identity endpoints and compared against challenges.
pub(crate) fn resource_from_scope(scope: &str) -> String {
    scope
        .trim()
        .trim_end_matches("/.default")
        .trim_end_matches('/')
        .to_string()
}

/// Normalized resource identity for comparisons: lower-cased, no `/.default`, no trailing `/`.
pub(crate) fn normalize_resource(resource_or_scope: &str) -> String {
    resource_from_scope(resource_or_scope).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_per_cloud() {
        assert_eq!(
            scope_for_vault_host("myvault.vault.azure.net"),
            "https://vault.azure.net/.default"
        );
        assert_eq!(
            scope_for_vault_host("MyVault.Vault.Azure.CN:443"),
            "https://vault.azure.cn/.default"
        );
        assert_eq!(
            scope_for_vault_host("v.vault.usgovcloudapi.net"),
            "https://vault.usgovcloudapi.net/.default"
        );
        assert_eq!(
            scope_for_vault_host("hsm.managedhsm.azure.net"),
            "https://managedhsm.azure.net/.default"
        );
        // Unknown / emulator hosts: public scope.
        assert_eq!(scope_for_vault_host("127.0.0.1:8443"), PUBLIC_VAULT_SCOPE);
        assert_eq!(scope_for_vault_host("localhost"), PUBLIC_VAULT_SCOPE);
        assert_eq!(
            scope_for_vault_host("vault.azure.net.evil.com"),
            PUBLIC_VAULT_SCOPE
        );
        // The bare suffix is not a vault.
        assert_eq!(scope_for_vault_host("vault.azure.cn"), PUBLIC_VAULT_SCOPE);
        assert_eq!(scope_for_vault_host("[::1]:8443"), PUBLIC_VAULT_SCOPE);
    }

    #[test]
    fn authorities_per_cloud_and_override() {
        let env = EnvSnapshot::new();
        assert_eq!(
            authority_host("v.vault.azure.cn", &env).unwrap(),
            "https://login.chinacloudapi.cn/"
        );
        assert_eq!(
            authority_host("v.vault.usgovcloudapi.net", &env).unwrap(),
            "https://login.microsoftonline.us/"
        );
        assert_eq!(
            authority_host("127.0.0.1", &env).unwrap(),
            "https://login.microsoftonline.com/"
        );
        let mut env = EnvSnapshot::new();
        env.insert(
            "AZURE_AUTHORITY_HOST".into(),
            "https://127.0.0.1:9443".into(),
        );
        assert_eq!(
            authority_host("v.vault.azure.cn", &env).unwrap(),
            "https://127.0.0.1:9443/"
        );
        env.insert(
            "AZURE_AUTHORITY_HOST".into(),
            "https://login.example/base//".into(),
        );
        assert_eq!(
            authority_host("x", &env).unwrap(),
            "https://login.example/base/"
        );
        env.insert(
            "AZURE_AUTHORITY_HOST".into(),
            "https://login.example/?x=1".into(),
        );
        assert_eq!(
            authority_host("x", &env).unwrap_err().to_string(),
            "invalid Azure settings: AZURE_AUTHORITY_HOST must not have a query, got \"https://login.example/?x=1\""
        );
        env.insert(
            "AZURE_AUTHORITY_HOST".into(),
            "http://127.0.0.1:9443".into(),
        );
        assert!(matches!(
            authority_host("x", &env),
            Err(AzureError::Config(_))
        ));
    }

    #[test]
    fn resource_forms() {
        assert_eq!(
            resource_from_scope("https://vault.azure.net/.default"),
            "https://vault.azure.net"
        );
        assert_eq!(
            resource_from_scope("https://vault.azure.net/"),
            "https://vault.azure.net"
        );
        assert_eq!(
            normalize_resource("HTTPS://Vault.Azure.Net"),
            normalize_resource("https://vault.azure.net/.default")
        );
    }
}
