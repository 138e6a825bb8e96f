//! Encoding helpers of the fake's key API (the keys themselves live in the shared key store,
//! `testkit/src/vault.rs`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// A Key Vault version id: 32 lowercase hex characters.
pub(super) fn new_version_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Decodes base64url (padding optional), falling back to standard base64, as Azure clients
/// differ in what they send.
pub(super) fn b64_decode_lenient(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::STANDARD_NO_PAD;
    let trimmed = s.trim().trim_end_matches('=');
    URL_SAFE_NO_PAD
        .decode(trimmed)
        .ok()
        .or_else(|| STANDARD_NO_PAD.decode(trimmed).ok())
}

pub(super) fn b64url(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}
