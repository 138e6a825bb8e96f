//! The in-memory key cache: SPIRE key id → the Key Vault key (name + pinned version), its
//! public key and the verifier of that key. Readers clone `Arc`s under a short read lock;
//! nothing holds the lock across network I/O, so signing never waits on rotation or maintenance.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::error::PluginError;
use crate::keys::verify::{PublicKeyError, SignatureVerifier, VerifyError};
use crate::plugin::proto::keymanager::{KeyType, PublicKey};

/// The key manager's locks ignore poisoning: no code panics mid-update while holding one, and
/// a panic in one request must not fail every later one.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Clone, PartialEq)]
pub struct KeyEntry {
    /// The SPIRE key id (`x509-CA-A`, `JWT-Signer-B`, `bundle-acme-…`).
    pub spire_id: String,
    /// The Key Vault key name.
    pub name: String,
    /// The key version every sign and refresh call pins.
    pub version: String,
    pub key_type: KeyType,
    /// What SPIRE gets: id, type, PKIX DER and fingerprint.
    pub public_key: PublicKey,
    /// A shared-keys-mode key (never deleted by this plugin).
    pub shared: bool,
}

impl KeyEntry {
    pub fn fingerprint(&self) -> &str {
        &self.public_key.fingerprint
    }
}

/// A cache entry with the verifier of its public key, parsed once when the entry is cached.
/// Both come out of the cache together, so a signature is always checked against the key
/// whose fingerprint goes back to SPIRE.
#[derive(Debug, Clone)]
pub struct SigningKey {
    entry: Arc<KeyEntry>,
    /// Parsed from `entry.public_key.pkix_data`, the exact key SPIRE was given; an error
    /// (a key that cannot verify) fails every signature of the entry.
    verifier: Arc<Result<SignatureVerifier, PublicKeyError>>,
}

/// Reads as the entry it holds.
impl std::ops::Deref for SigningKey {
    type Target = KeyEntry;

    fn deref(&self) -> &KeyEntry {
        &self.entry
    }
}

impl SigningKey {
    fn new(entry: KeyEntry) -> Self {
        let verifier = SignatureVerifier::from_pkix(entry.key_type, &entry.public_key.pkix_data);
        SigningKey {
            entry: Arc::new(entry),
            verifier: Arc::new(verifier),
        }
    }

    /// Checks a signature in SPIRE's format made with `alg` over `digest` (see
    /// `SignatureVerifier::verify`). Errors are Internal `failed to sign: …` naming the key.
    pub fn check(&self, alg: &str, digest: &[u8], signature: &[u8]) -> Result<(), PluginError> {
        let (name, version) = (&self.entry.name, &self.entry.version);
        let verifier = self.verifier.as_ref().as_ref().map_err(|e| {
            PluginError::internal(format!(
                "failed to sign: cannot verify signatures of key {name:?} version {version:?}: {e}"
            ))
        })?;
        verifier.verify(alg, digest, signature).map_err(|e| match e {
            VerifyError::Mismatch => PluginError::internal(format!(
                "failed to sign: Key Vault returned a signature that does not verify with key {name:?} version {version:?}"
            )),
            VerifyError::WrongAlgorithm(m) => {
                PluginError::internal(format!("failed to sign: key {name:?}: {m}"))
            }
        })
    }
}

#[derive(Debug, Default)]
pub struct KeyCache {
    map: RwLock<HashMap<String, SigningKey>>,
}

impl KeyCache {
    pub fn from_entries(entries: impl IntoIterator<Item = KeyEntry>) -> Self {
        let map = entries
            .into_iter()
            .map(|e| (e.spire_id.clone(), SigningKey::new(e)))
            .collect();
        KeyCache {
            map: RwLock::new(map),
        }
    }

    /// The entry of `spire_id` with its verifier.
    pub fn get(&self, spire_id: &str) -> Option<SigningKey> {
        read(&self.map).get(spire_id).cloned()
    }

    /// Puts `entry` in place and returns the entry it replaced.
    pub fn insert(&self, entry: KeyEntry) -> Option<Arc<KeyEntry>> {
        // Parsed before the lock: readers never wait on it.
        let key = SigningKey::new(entry);
        write(&self.map)
            .insert(key.entry.spire_id.clone(), key)
            .map(|old| old.entry)
    }

    /// Every entry, sorted by SPIRE key id so answers are stable.
    pub fn entries(&self) -> Vec<Arc<KeyEntry>> {
        let mut v: Vec<_> = read(&self.map)
            .values()
            .map(|k| Arc::clone(&k.entry))
            .collect();
        v.sort_by(|a, b| a.spire_id.cmp(&b.spire_id));
        v
    }

    /// Key Vault names in use, compared case-insensitively like Key Vault does.
    pub fn names_in_use(&self) -> HashSet<String> {
        read(&self.map)
            .values()
            .map(|k| k.entry.name.to_ascii_lowercase())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;
    use crate::keys::convert::{signature_to_spire, ParsedKey};
    use crate::keys::discovery::entry_from_parts;
    use p256::ecdsa::signature::hazmat::PrehashSigner;
    use p256::pkcs8::EncodePublicKey;

    fn p256_entry(id: &str, version: &str, key: &p256::ecdsa::SigningKey) -> KeyEntry {
        let pkix = key.verifying_key().to_public_key_der().unwrap();
        let parsed = ParsedKey {
            key_type: KeyType::EcP256,
            pkix: pkix.as_bytes().to_vec(),
        };
        entry_from_parts(id, "name", version, parsed, false)
    }

    fn spire_signature(key: &p256::ecdsa::SigningKey, digest: &[u8]) -> Vec<u8> {
        let s: p256::ecdsa::Signature = key.sign_prehash(digest).unwrap();
        signature_to_spire(KeyType::EcP256, &s.to_bytes()).unwrap()
    }

    #[test]
    fn a_replaced_entry_is_checked_with_its_own_key() {
        let (old, new) = (
            p256::ecdsa::SigningKey::from_slice(&[1; 32]).unwrap(),
            p256::ecdsa::SigningKey::from_slice(&[2; 32]).unwrap(),
        );
        let digest = [7u8; 32];
        let cache = KeyCache::from_entries([p256_entry("id", "v1", &old)]);
        let before = cache.get("id").unwrap();
        assert!(before
            .check("ES256", &digest, &spire_signature(&old, &digest))
            .is_ok());
        cache.insert(p256_entry("id", "v2", &new));
        let after = cache.get("id").unwrap();
        assert_eq!(after.entry.version, "v2");
        assert!(after
            .check("ES256", &digest, &spire_signature(&new, &digest))
            .is_ok());
        let e = after
            .check("ES256", &digest, &spire_signature(&old, &digest))
            .unwrap_err();
        assert_eq!(e.code, Code::Internal);
        assert_eq!(
            e.message,
            "failed to sign: Key Vault returned a signature that does not verify with key \"name\" version \"v2\""
        );
        // A request in flight keeps the key it started with.
        assert!(before
            .check("ES256", &digest, &spire_signature(&old, &digest))
            .is_ok());
    }

    #[test]
    fn an_entry_whose_key_cannot_verify_signs_nothing() {
        let entry = KeyEntry {
            spire_id: "id".into(),
            name: "name".into(),
            version: "v1".into(),
            key_type: KeyType::EcP256,
            public_key: PublicKey::default(),
            shared: false,
        };
        let cache = KeyCache::default();
        cache.insert(entry);
        let e = cache
            .get("id")
            .unwrap()
            .check("ES256", &[0; 32], &[0x30, 0x00])
            .unwrap_err();
        assert_eq!(e.code, Code::Internal);
        assert!(
            e.message.starts_with(
                "failed to sign: cannot verify signatures of key \"name\" version \"v1\": public key is not a valid EC_P256 key"
            ),
            "{}",
            e.message
        );
    }
}
