//! Startup discovery: find the keys this server owns in the vault and rebuild the cache.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::azure::types::{AzureError, KeyBundle, KeyItem, KeyVaultApi};
use crate::error::PluginError;
use crate::keys::cache::KeyEntry;
use crate::keys::convert::{fingerprint, parse_jwk, ParsedKey};
use crate::keys::naming::{spire_key_id, TAG_SERVER_ID, TAG_TRUST_DOMAIN};
use crate::plugin::proto::keymanager::PublicKey;

/// Key details fetched at once during discovery.
pub const FETCH_PARALLELISM: usize = 16;

/// How to recognize shared keys (shared keys mode); `None` in standard mode.
pub(crate) trait SharedKeyMatcher: Sync {
    /// The SPIRE key id of `name` when it is one of this configuration's shared keys.
    fn shared_key_id(&self, name: &str) -> Option<String>;
}

#[derive(Debug, Default)]
pub(crate) struct Discovered {
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

pub(crate) fn discover(
    vault: &dyn KeyVaultApi,
    trust_domain: &str,
    server_id: &str,
    shared: Option<&dyn SharedKeyMatcher>,
    queued_for_deletion: &dyn Fn(&str) -> bool,
) -> Result<Discovered, PluginError> {
    let items = (vault.list_keys()).map_err(|e| azure_to_plugin("failed while listing keys", e))?;

    let mut by_id: HashMap<String, Vec<Candidate>> = HashMap::new();
    for item in &items {
        if let Some(c) = classify(item, trust_domain, server_id, shared) {
            if queued_for_deletion(&c.name) {
                log::debug!(key_id = c.spire_id.as_str(), key_name = c.name.as_str(); "Key queued for deletion; not adopted");
                continue;
            }
            by_id.entry(c.spire_id.clone()).or_default().push(c);
        }
    }

    // Newest first; names break ties so every start picks the same one. `total_cmp`: a
    // comparator that is not a total order may make `sort_by` panic.
    let groups: Vec<Vec<Candidate>> = by_id
        .into_values()
        .map(|mut group| {
            group.sort_by(|a, b| {
                b.created
                    .total_cmp(&a.created)
                    .then_with(|| a.name.cmp(&b.name))
            });
            group
        })
        .collect();

    let loaded = fetch_all(vault, groups)?;

    // Older keys of an id than the one loaded are left over from a rotation whose deletion
    // never happened. A listing may name one key twice (pages shifting while keys are
    // created): a key in use is never its own "older duplicate", and each name is deleted once.
    let mut duplicates: Vec<String> = Vec::new();
    for l in &loaded {
        for (name, spire_id) in &l.older {
            let in_use = loaded
                .iter()
                .any(|o| o.entry.name.eq_ignore_ascii_case(name));
            if in_use || duplicates.iter().any(|d| d.eq_ignore_ascii_case(name)) {
                continue;
            }
            log::warn!(key_id = spire_id.as_str(), key_name = name.as_str(), kept = l.entry.name.as_str(); "Found an older key for the same SPIRE key id; it will be deleted");
            duplicates.push(name.clone());
        }
    }
    Ok(Discovered {
        entries: loaded.into_iter().map(|l| l.entry).collect(),
        duplicates,
    })
}

/// The key loaded for one SPIRE id, and the older keys of that id (name, SPIRE id).
struct Loaded {
    entry: KeyEntry,
    older: Vec<(String, String)>,
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
    let (spire_id, shared) = match shared.and_then(|m| m.shared_key_id(name)) {
        Some(id) => (id, true),
        None if item.tags.get(TAG_SERVER_ID).map(String::as_str) != Some(server_id) => return None,
        None => {
            let Some(id) = spire_key_id(name, &item.tags) else {
                log::warn!(key_name = name; "Could not get SPIRE Key ID from key");
                return None;
            };
            (id, false)
        }
    };
    Some(Candidate {
        spire_id,
        name: name.to_string(),
        created,
        shared,
    })
}

/// Loads the newest key of each group, `FETCH_PARALLELISM` at a time. A key listed but gone
/// by the time its details are read (deleted meanwhile: a rotation's clean-up, another
/// process) is skipped for the next older key of its id, rather than failing Configure.
fn fetch_all(
    vault: &dyn KeyVaultApi,
    groups: Vec<Vec<Candidate>>,
) -> Result<Vec<Loaded>, PluginError> {
    let queue = Mutex::new(groups.into_iter());
    let results: Mutex<Vec<Result<Option<Loaded>, PluginError>>> = Mutex::new(Vec::new());
    let workers = FETCH_PARALLELISM
        .min(queue.lock().map(|q| q.len()).unwrap_or(1))
        .max(1);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let next = queue.lock().ok().and_then(|mut q| q.next());
                let Some(group) = next else { break };
                let r = load_group(vault, group);
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
    let mut loaded = Vec::with_capacity(results.len());
    for r in results {
        if let Some(l) = r.map_err(|e| e.context("failed to fetch key entry details"))? {
            loaded.push(l);
        }
    }
    Ok(loaded)
}

fn load_group(
    vault: &dyn KeyVaultApi,
    group: Vec<Candidate>,
) -> Result<Option<Loaded>, PluginError> {
    let mut it = group.into_iter();
    while let Some(c) = it.next() {
        match fetch_one(vault, &c)? {
            Some(entry) => {
                let older = it
                    .filter(|d| !d.shared)
                    .map(|d| (d.name, d.spire_id))
                    .collect();
                return Ok(Some(Loaded { entry, older }));
            }
            None => {
                log::warn!(key_id = c.spire_id.as_str(), key_name = c.name.as_str(); "Listed key was deleted before it could be loaded; trying an older key of the same id");
            }
        }
    }
    Ok(None)
}

pub(crate) fn azure_to_plugin(prefix: &str, e: AzureError) -> PluginError {
    PluginError::internal(format!("{prefix}: {e}"))
}

/// A key or its versions could not be read.
pub(crate) fn fetch_failed(e: AzureError) -> PluginError {
    azure_to_plugin("failed to fetch key details", e)
}

pub(crate) fn fetch_one_entry(
    vault: &dyn KeyVaultApi,
    spire_id: &str,
    name: &str,
    version: Option<&str>,
    shared: bool,
) -> Result<KeyEntry, PluginError> {
    let bundle = vault.get_key(name, version).map_err(fetch_failed)?;
    entry_from_bundle(spire_id, name, &bundle, shared)
}

fn entry_from_bundle(
    spire_id: &str,
    name: &str,
    bundle: &KeyBundle,
    shared: bool,
) -> Result<KeyEntry, PluginError> {
    let kid = bundle.key.kid.clone().unwrap_or_default();
    if bundle.attributes.enabled == Some(false) {
        return Err(PluginError::failed_precondition(format!(
            "found disabled SPIRE key: {kid:?}, name: {name:?}"
        )));
    }
    let Some(version) = bundle.version() else {
        let message = format!("malformed get key response: kid {kid:?} has no version");
        return Err(PluginError::internal(message));
    };
    // A key this plugin cannot serve (another type or size, a malformed or inconsistent JWK)
    // is refused, naming it, rather than cached.
    let parsed = parse_jwk(&bundle.key).map_err(|e| {
        PluginError::internal(format!(
            "unsupported key spec: {e} (key {name:?} version {version:?})"
        ))
    })?;
    log::debug!(key_id = kid.as_str(), key_name = name; "Key loaded");
    Ok(entry_from_parts(spire_id, name, version, parsed, shared))
}

/// The entry for `c`, or `None` when the key no longer exists.
fn fetch_one(vault: &dyn KeyVaultApi, c: &Candidate) -> Result<Option<KeyEntry>, PluginError> {
    if c.shared {
        // A shared key may carry disabled versions (rotation losers): load the newest enabled.
        let version = latest_enabled_version(vault, &c.name)?;
        return match version {
            Some(v) => fetch_one_entry(vault, &c.spire_id, &c.name, Some(&v), true).map(Some),
            None => Err(PluginError::failed_precondition(format!(
                "found disabled SPIRE key: name: {:?} has no enabled version",
                c.name
            ))),
        };
    }
    match vault.get_key(&c.name, None) {
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(fetch_failed(e)),
        Ok(bundle) => entry_from_bundle(&c.spire_id, &c.name, &bundle, c.shared).map(Some),
    }
}

/// The newest enabled version of a shared key (what a restarted server loads).
pub(crate) fn latest_enabled_version(
    vault: &dyn KeyVaultApi,
    name: &str,
) -> Result<Option<String>, PluginError> {
    let versions = vault.list_key_versions(name).map_err(fetch_failed)?;
    let best = versions
        .iter()
        .filter(|i| i.attributes.enabled != Some(false))
        // Among equal times the smallest version id wins, as in adoption.
        .max_by(|a, b| by_created(a, b).then(b.version().cmp(&a.version())));
    Ok(best.and_then(|i| i.version().map(str::to_string)))
}

/// Versions by `created` (a missing time counts as 0).
pub(crate) fn by_created(a: &KeyItem, b: &KeyItem) -> std::cmp::Ordering {
    let created = |i: &KeyItem| i.attributes.created.unwrap_or(0.0);
    (created(a).partial_cmp(&created(b))).unwrap_or(std::cmp::Ordering::Equal)
}

pub(crate) fn entry_from_parts(
    spire_id: &str,
    name: &str,
    version: &str,
    ParsedKey { key_type, pkix }: ParsedKey,
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
