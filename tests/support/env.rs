//! Wiring the plugin binary to a `FakeAzure`.

use super::fake_azure::FakeAzure;
use super::plugin_host::PluginProcess;

pub const TD: &str = "example.org";

/// Environment for a plugin talking to `fake` (trust its CA, its Entra endpoint) plus `extra`.
pub fn plugin_env(fake: &FakeAzure, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v = vec![
        (
            "SSL_CERT_FILE".to_string(),
            fake.ca_pem_path().display().to_string(),
        ),
        ("AZURE_AUTHORITY_HOST".to_string(), fake.authority_host()),
        (
            "AZKV_TEST_MAINTENANCE".to_string(),
            "first_sweep=1h,max_wait=20ms,backoff=50ms,backoff_max=200ms".to_string(),
        ),
    ];
    for (k, val) in extra {
        v.retain(|(name, _)| name != k);
        v.push((k.to_string(), val.to_string()));
    }
    v
}

/// Standard-mode `plugin_data` with static credentials accepted by the fake.
pub fn standard_hcl(fake: &FakeAzure, server_id: &str) -> String {
    format!(
        "{}key_identifier_value = \"{server_id}\"\n",
        vault_hcl(fake)
    )
}

/// `standard_hcl` without a key identifier: the vault URI and the static credentials.
pub fn vault_hcl(fake: &FakeAzure) -> String {
    format!(
        "key_vault_uri = \"{}\"\ntenant_id = \"{}\"\napp_id = \"{}\"\napp_secret = \"{}\"\n",
        fake.vault_uri(),
        FakeAzure::TENANT,
        FakeAzure::CLIENT_ID,
        FakeAzure::CLIENT_SECRET
    )
}

/// Launches, inits and configures a plugin against `fake`.
pub fn start_plugin(fake: &FakeAzure, hcl: &str, extra: &[(&str, &str)]) -> PluginProcess {
    let env = plugin_env(fake, extra);
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let p = PluginProcess::launch(&refs);
    p.init().expect("init");
    p.configure(TD, hcl).expect("configure");
    p
}

/// The values that must never appear in a log line.
pub fn secrets(fake: &FakeAzure) -> Vec<String> {
    let mut s = vec![FakeAzure::CLIENT_SECRET.to_string()];
    s.extend(fake.issued_tokens());
    s
}
