//! Startup discovery: find the keys this server owns in the vault and rebuild the cache.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::azure::types::{KeyItem, KeyVaultApi};
use crate::error::{Code, PluginError};
use crate::keys::cache::KeyEntry;
use crate::keys::convert::{fingerprint, parse_jwk};
use crate::keys::naming::{spire_key_id, TAG_SERVER_ID, TAG_TRUST_DOMAIN};
use crate::plugin::proto::keymanager::PublicKey;

/// Key details fetched at once during discovery.
pub const FETCH_PARALLELISM: usize = 16;

/// How to recognize shared keys (shared keys mode); `None` in standard mode.
pub trait SharedKeyMatcher: Sync {
    /// The SPIRE key id of `name` when it is one of this configuration's shared keys.
    fn shared_key_id(&self, name: &str) -> Option<String>;
}

#[derive(Debug, Default)]
pub struct Discovered {
    pub entries: Vec<KeyEntry>,
    /// Older keys of this server for a SPIRE id that has a newer one (a crash between
    /// rotation and deletion): to be deleted.
    pub duplicates: Vec<String>,
}

struct Candidate {
    spire_id: String,
    name: String,
    created: f64,
    shared: bool,
}

pub fn discover(
    vault: &dyn KeyVaultApi,
    trust_domain: &str,
    server_id: &str,
    shared: Option<&dyn SharedKeyMatcher>,
) -> Result<Discovered, PluginError> {
    let items = vault
        .list_keys()
        .map_err(|e| PluginError::internal(format!("failed while listing keys: {e}")))?;

    let mut by_id: HashMap<String, Vec<Candidate>> = HashMap::new();
    for item in &items {
        if let Some(c) = classify(item, trust_domain, server_id, shared) {
            by_id.entry(c.spire_id.clone()).or_default().push(c);
        }
    }

    let mut winners: Vec<Candidate> = Vec::new();
    // (older key, SPIRE id, the name kept instead)
    let mut older: Vec<(String, String, String)> = Vec::new();
    for (_, mut group) in by_id {
        // Newest first; names break ties so every start picks the same one. `total_cmp`: a
        // comparator that is not a total order may make `sort_by` panic.
        group.sort_by(|a, b| {
            b.created
                .total_cmp(&a.created)
                .then_with(|| a.name.cmp(&b.name))
        });
        let mut it = group.into_iter();
        if let Some(w) = it.next() {
            for dup in it.filter(|d| !d.shared) {
                older.push((dup.name, dup.spire_id, w.name.clone()));
            }
            winners.push(w);
        }
    }

    // A listing may name one key twice (pages shifting while keys are created): a key in use
    // is never its own "older duplicate", and each name is deleted once.
    let mut duplicates: Vec<String> = Vec::new();
    for (name, spire_id, kept) in older {
        let in_use = winners.iter().any(|w| w.name.eq_ignore_ascii_case(&name));
        if in_use || duplicates.iter().any(|d| d.eq_ignore_ascii_case(&name)) {
            continue;
        }
        log::warn!(key_id = spire_id.as_str(), key_name = name.as_str(), kept = kept.as_str(); "Found an older key for the same SPIRE key id; it will be deleted");
        duplicates.push(name);
    }

    let entries = fetch_all(vault, winners)?;
    Ok(Discovered {
        entries,
        duplicates,
    })
}

fn classify(
    item: &KeyItem,
    trust_domain: &str,
    server_id: &str,
    shared: Option<&dyn SharedKeyMatcher>,
) -> Option<Candidate> {
    let name = item.name()?;
    if item.tags.get(TAG_TRUST_DOMAIN).map(String::as_str) != Some(trust_domain) {
        return None;
    }
    // A time that is no number (a `"NaN"` string) counts as oldest.
    let created = item
        .attributes
        .created
        .filter(|c| c.is_finite())
        .unwrap_or(0.0);
    if let Some(id) = shared.and_then(|m| m.shared_key_id(name)) {
        return Some(Candidate {
            spire_id: id,
            name: name.to_string(),
            created,
            shared: true,
        });
    }
    if item.tags.get(TAG_SERVER_ID).map(String::as_str) != Some(server_id) {
        return None;
    }
    match spire_key_id(name, &item.tags) {
        Some(id) => Some(Candidate {
            spire_id: id,
            name: name.to_string(),
            created,
            shared: false,
        }),
        None => {
            log::warn!(key_name = name; "Could not get SPIRE Key ID from key");
            None
        }
    }
}

fn fetch_all(
    vault: &dyn KeyVaultApi,
    winners: Vec<Candidate>,
) -> Result<Vec<KeyEntry>, PluginError> {
    let queue = Mutex::new(winners.into_iter());
    let results: Mutex<Vec<Result<KeyEntry, PluginError>>> = Mutex::new(Vec::new());
    let workers = FETCH_PARALLELISM
        .min(queue.lock().map(|q| q.len()).unwrap_or(1))
        .max(1);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let next = queue.lock().ok().and_then(|mut q| q.next());
                let Some(c) = next else { break };
                let r = fetch_one(vault, &c);
                if let Ok(mut res) = results.lock() {
                    let failed = r.is_err();
                    res.push(r);
                    if failed {
                        break;
                    }
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut entries = Vec::with_capacity(results.len());
    for r in results {
        entries.push(r.map_err(|e| e.context("failed to fetch key entry details"))?);
    }
    Ok(entries)
}

pub fn fetch_one_entry(
    vault: &dyn KeyVaultApi,
    spire_id: &str,
    name: &str,
    version: Option<&str>,
    shared: bool,
) -> Result<KeyEntry, PluginError> {
    let bundle = vault
        .get_key(name, version)
        .map_err(|e| PluginError::internal(format!("failed to fetch key details: {e}")))?;
    let kid = bundle.key.kid.clone().unwrap_or_default();
    if bundle.attributes.enabled == Some(false) {
        return Err(PluginError::new(
            Code::FailedPrecondition,
            format!("found disabled SPIRE key: {kid:?}, name: {name:?}"),
        ));
    }
    let version = bundle
        .version()
        .ok_or_else(|| {
            PluginError::internal(format!(
                "malformed get key response: kid {kid:?} has no version"
            ))
        })?
        .to_string();
    let parsed = parse_jwk(&bundle.key)
        .map_err(|e| PluginError::internal(format!("unsupported key spec: {e}")))?;
    log::debug!(key_id = kid.as_str(), key_name = name; "Key loaded");
    Ok(entry_from_parts(
        spire_id,
        name,
        &version,
        parsed.key_type,
        parsed.pkix,
        shared,
    ))
}

fn fetch_one(vault: &dyn KeyVaultApi, c: &Candidate) -> Result<KeyEntry, PluginError> {
    if c.shared {
        // A shared key may carry disabled versions (rotation losers): load the newest enabled.
        let version = crate::keys::shared::latest_enabled_version(vault, &c.name)?;
        return match version {
            Some(v) => fetch_one_entry(vault, &c.spire_id, &c.name, Some(&v), true),
            None => Err(PluginError::new(
                Code::FailedPrecondition,
                format!(
                    "found disabled SPIRE key: name: {:?} has no enabled version",
                    c.name
                ),
            )),
        };
    }
    fetch_one_entry(vault, &c.spire_id, &c.name, None, c.shared)
}

pub fn entry_from_parts(
    spire_id: &str,
    name: &str,
    version: &str,
    key_type: crate::plugin::proto::keymanager::KeyType,
    pkix: Vec<u8>,
    shared: bool,
) -> KeyEntry {
    let fp = fingerprint(&pkix);
    KeyEntry {
        spire_id: spire_id.to_string(),
        name: name.to_string(),
        version: version.to_string(),
        key_type,
        public_key: PublicKey {
            id: spire_id.to_string(),
            r#type: key_type as i32,
            pkix_data: pkix,
            fingerprint: fp,
        },
        shared,
    }
}
