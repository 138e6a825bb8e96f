//! `azure_key_vault`: a SPIRE server KeyManager plugin that keeps signing keys in Azure Key Vault.
//!
//! Data flows `plugin` (handshake, gRPC services) → `keys` (the key manager core) → `azure`
//! (HTTP, credentials, Key Vault REST), with `keys::maintenance` running refresh, sweep and
//! deletions in the background. README "Architecture" draws it.

// libc calls live in `sys`, each with its SAFETY note; everything else is safe Rust.
#![deny(unsafe_code)]

pub mod azure;
pub mod clock;
pub mod config;
pub mod der;
pub mod error;
#[cfg(test)]
mod fuzz;
pub mod keys;
pub mod log;
pub mod plugin;
pub mod random;
pub mod secret;
#[allow(unsafe_code)]
mod sys;
pub mod telemetry;
pub mod template;
pub mod uri;
