//! Shared helpers for integration tests (`mod support;`).
// Not every test binary uses every helper.
#![allow(dead_code)]

pub mod dns;
pub mod env;
pub mod fake_azure;
pub mod plugin_host;
pub mod release;
pub mod verify;
