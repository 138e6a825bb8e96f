//! `azure_key_vault`: a SPIRE server KeyManager plugin that keeps signing keys in Azure Key Vault.
//!
//! Data flows `plugin` (handshake, gRPC services) → `keys` (the key manager core) → `azure`
//! (HTTP, credentials, Key Vault REST), with `maintenance` running refresh, sweep and deletions
//! in the background.

pub mod azure;
pub mod clock;
pub mod config;
pub mod error;
#[cfg(test)]
mod fuzz;
pub mod keys;
pub mod log;
pub mod maintenance;
pub mod plugin;
pub mod random;
pub mod secret;
pub mod telemetry;
pub mod template;
