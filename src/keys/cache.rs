//! The in-memory key cache: SPIRE key id → the Key Vault key (name + pinned version) and its
//! public key. Readers clone an `Arc` under a short read lock; nothing holds the lock across
//! network I/O, so signing never waits on rotation or maintenance.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use crate::plugin::proto::keymanager::{KeyType, PublicKey};

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

#[derive(Debug, Default)]
pub struct KeyCache {
    map: RwLock<HashMap<String, Arc<KeyEntry>>>,
}

impl KeyCache {
    pub fn from_entries(entries: impl IntoIterator<Item = KeyEntry>) -> Self {
        let map = entries
            .into_iter()
            .map(|e| (e.spire_id.clone(), Arc::new(e)))
            .collect();
        KeyCache {
            map: RwLock::new(map),
        }
    }

    pub fn get(&self, spire_id: &str) -> Option<Arc<KeyEntry>> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(spire_id)
            .cloned()
    }

    /// Puts `entry` in place and returns the entry it replaced.
    pub fn insert(&self, entry: KeyEntry) -> Option<Arc<KeyEntry>> {
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(entry.spire_id.clone(), Arc::new(entry))
    }

    /// Every entry, sorted by SPIRE key id so answers are stable.
    pub fn entries(&self) -> Vec<Arc<KeyEntry>> {
        let mut v: Vec<_> = self
            .map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.spire_id.cmp(&b.spire_id));
        v
    }

    /// Key Vault names in use, compared case-insensitively like Key Vault does.
    pub fn names_in_use(&self) -> HashSet<String> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|e| e.name.to_ascii_lowercase())
            .collect()
    }
}
