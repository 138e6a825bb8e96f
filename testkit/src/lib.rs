//! Test support shared by the unit tests in `src/`, the integration tests (`tests/support`) and
//! the examples: one deterministic RNG, one bounded poll, and one in-memory key store with real
//! keys. The unit tests' `MemoryVault` (`src/keys/testing.rs`) and the HTTPS fake Key Vault
//! (`tests/support/fake_azure.rs`) both keep their keys in `vault::KeyStore`.
//!
//! It is a dev-dependency of the plugin, so none of it is built into the plugin binary. It does
//! not depend on the plugin: the plugin's own unit tests link it, and a second copy of the
//! plugin's types there would not be the ones under test.

mod poll;
mod rng;
pub mod vault;

pub use poll::{poll_until, wait_until};
pub use rng::Rng;
