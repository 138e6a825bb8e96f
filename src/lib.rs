//! `azure_key_vault`: a SPIRE server KeyManager plugin that keeps signing keys in Azure Key Vault.
//!
//! Data flows `plugin` (handshake, gRPC services) → `keys` (the key manager core) → `azure`
//! (HTTP, credentials, Key Vault REST), with `keys::maintenance` running refresh, sweep and
//! deletions in the background. README "Architecture" draws it.

// libc calls live in `sys`, each with its SAFETY note; everything else is safe Rust.
#![deny(unsafe_code)]
// Modules are private; what the binary and the tests use is re-exported below.
#![deny(unreachable_pub)]

mod azure;
mod clock;
mod config;
mod der;
mod error;
#[cfg(test)]
mod fuzz;
mod keys;
mod log;
mod plugin;
mod random;
mod secret;
#[allow(unsafe_code)]
mod sys;
mod telemetry;
mod template;
mod uri;

// The binary's wiring (src/main.rs).
pub use azure::types::{AzureError, KeyVaultApi};
pub use azure::{connect, AzureSettings, StaticCredentials};
pub use clock::{Clock, SystemClock};
pub use config::PluginConfig;
pub use error::PluginError;
pub use keys::{maintenance, shared, KeyManager};
pub use log::init as init_logging;
pub use plugin::handshake::{cookie_ok, COOKIE_KEY, NOT_A_PROGRAM};
pub use plugin::server::{prepare_signals, serve};
pub use telemetry::{
    global as telemetry_global, spawn as spawn_telemetry, FLUSH_INTERVAL, STATUS_INTERVAL,
};
#[cfg(feature = "test-hooks")]
pub use telemetry::{FLUSH_INTERVAL_ENV, STATUS_INTERVAL_ENV};

// What the integration tests and the benchmark drive directly: the wire messages, the Azure
// layer against the fake Key Vault, and the signature check.
pub use azure::http::log_record_allowed;
pub use azure::types::{CreateKeyParams, UpdateKeyParams};
pub use azure::{connect_with_deadline, EnvSnapshot, KeyVaultClient};
pub use clock::ManualClock;
pub use keys::convert::MALFORMED_SIGNATURE;
pub use keys::discovery::FETCH_PARALLELISM;
pub use keys::verify::SignatureVerifier;
pub use plugin::proto;
pub use secret::Secret;
