//! `azure_key_vault`: launched by spire-server through `plugin_cmd`.

use std::sync::Arc;

use azkv::{
    cookie_ok, maintenance, prepare_signals, serve, shared, AzureError, Clock, KeyManager,
    KeyVaultApi, PluginConfig, PluginError, SystemClock, COOKIE_KEY, NOT_A_PROGRAM,
};

fn main() {
    if !cookie_ok(std::env::var(COOKIE_KEY).ok().as_deref()) {
        eprintln!("{NOT_A_PROGRAM}");
        std::process::exit(1);
    }
    let signals = prepare_signals();
    azkv::init_logging();
    // gRPC core writes its own text diagnostics to stderr otherwise; route them through `log`.
    grpcio::redirect_log();
    // A panic message must reach spire-server's log as an hclog line, not as bare stderr text.
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        log::error!(thread = name, panic = info.to_string(); "Plugin thread panicked");
    }));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // Metrics go to spire-server every second, the status line is hourly; test builds may
    // shorten both.
    #[cfg(feature = "test-hooks")]
    let (flush, status) = (
        env_duration(azkv::FLUSH_INTERVAL_ENV).unwrap_or(azkv::FLUSH_INTERVAL),
        env_duration(azkv::STATUS_INTERVAL_ENV).unwrap_or(azkv::STATUS_INTERVAL),
    );
    #[cfg(not(feature = "test-hooks"))]
    let (flush, status) = (azkv::FLUSH_INTERVAL, azkv::STATUS_INTERVAL);
    let registry = azkv::telemetry_global();
    if let Err(e) = azkv::spawn_telemetry(registry, Arc::clone(&clock), flush, status) {
        // Metrics then only sum up in memory (bounded); signing is unaffected.
        log::warn!(reason = e.to_string(); "Could not start the telemetry thread; no metrics or status line");
    }
    let core = Arc::new(key_manager(clock));
    let code = serve(core, signals);
    // Skip destructors: grpcio's threads and pending streams must not delay the exit.
    std::process::exit(code);
}

/// A duration such as `100ms` in the environment variable `var` (test builds only).
#[cfg(feature = "test-hooks")]
fn env_duration(var: &str) -> Option<std::time::Duration> {
    maintenance::parse_duration(&std::env::var(var).ok()?)
}

/// The production wiring: system clock, the Azure layer, the process environment.
fn key_manager(clock: Arc<dyn Clock>) -> KeyManager {
    let connector_clock = Arc::clone(&clock);
    let connector = Box::new(move |cfg: &PluginConfig| {
        let settings = azkv::AzureSettings {
            vault_uri: cfg.key_vault_uri.clone(),
            static_credentials: cfg
                .static_credentials
                .as_ref()
                .map(|c| azkv::StaticCredentials {
                    tenant_id: c.tenant_id.clone(),
                    client_id: c.app_id.clone(),
                    client_secret: c.app_secret.clone(),
                }),
            // Read at each Configure, so a reconfigure picks up rotated settings.
            env: std::env::vars().collect(),
            api_version: String::new(),
        };
        azkv::connect(settings, Arc::clone(&connector_clock))
            .map(|c| c as Arc<dyn KeyVaultApi>)
            .map_err(|e| match e {
                AzureError::Config(m) => PluginError::invalid_argument(m),
                other => {
                    PluginError::internal(format!("failed to create Key Vault client: {other}"))
                }
            })
    });
    #[cfg(feature = "test-hooks")]
    let (settings, shared_settings) = (
        maintenance::Settings::from_env_value(
            std::env::var(maintenance::SETTINGS_ENV).ok().as_deref(),
        ),
        shared::Settings::from_env_value(std::env::var(shared::SETTINGS_ENV).ok().as_deref()),
    );
    // The shipped binary has no schedule knobs: a shortened `stale` would make the first
    // sweep delete every other server's keys.
    #[cfg(not(feature = "test-hooks"))]
    let (settings, shared_settings) = (
        maintenance::Settings::default(),
        shared::Settings::default(),
    );
    KeyManager::new(clock, connector, settings, shared_settings)
}
