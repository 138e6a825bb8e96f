//! Shared keys mode: several servers publish the same JWT signing keys. Only `JWT-Signer-*` ids
//! are shared; their Key Vault name comes from `jwt_key_template`, and a rotation adds a version
//! to that one key.
//!
//! Convergence: a rotation first adopts a version created by any server within the freshness
//! window (15 minutes). Otherwise it waits a random moment, looks again, and only then creates
//! a version; after a settle period (longer than Key Vault's 1-second `created` resolution plus
//! a peer's check-to-create gap) it re-reads the versions and every server adopts the same one:
//! the earliest `created` inside the window, ties broken by version id. A server whose own
//! version lost disables it, so exactly one new version stays usable.

use std::collections::HashMap;
use std::time::Duration;

use crate::azure::types::{
    CreateKeyParams, KeyItem, KeyVaultApi, UpdateAttributes, UpdateKeyParams,
};
use crate::clock::{unix_seconds, Clock};
use crate::config::SharedKeysConfig;
use crate::error::{Code, PluginError};
use crate::keys::cache::KeyEntry;
use crate::keys::discovery::{fetch_one_entry, SharedKeyMatcher};
use crate::keys::naming::{is_valid_name, key_tags};
use crate::maintenance::TAG_SHARED;
use crate::plugin::proto::keymanager::KeyType;
use crate::template::TemplateContext;

pub const SHARED_PREFIX: &str = "JWT-Signer-";

pub fn is_shared_key_id(id: &str) -> bool {
    id.starts_with(SHARED_PREFIX)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// A version younger than this is adopted instead of rotating.
    pub freshness: Duration,
    /// Wait after creating a version before re-reading the versions (convergence).
    pub settle: Duration,
    /// Random wait before a first creation (spreads servers starting together).
    pub max_jitter: Duration,
    /// Wait between writing a rotation claim and reading it back (longer than any peer's
    /// read-to-write gap, as in Fischer's mutual exclusion).
    pub claim_wait: Duration,
    /// A claim older than this is abandoned (its writer died).
    pub claim_ttl: Duration,
    /// How long a server that lost the claim waits for the winner's version.
    pub peer_wait: Duration,
    /// Polling interval while waiting for the winner.
    pub poll: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            freshness: Duration::from_secs(15 * 60),
            settle: Duration::from_secs(2),
            max_jitter: Duration::from_millis(1500),
            claim_wait: Duration::from_millis(1500),
            claim_ttl: Duration::from_secs(30),
            peer_wait: Duration::from_secs(15),
            poll: Duration::from_millis(250),
        }
    }
}

/// Test hook: `AZKV_TEST_SHARED="freshness=15m,settle=2s,jitter=1500ms,claim_wait=1500ms,claim_ttl=30s,peer_wait=15s,poll=250ms"`.
pub const SETTINGS_ENV: &str = "AZKV_TEST_SHARED";

impl Settings {
    pub fn from_env_value(value: Option<&str>) -> Settings {
        let mut s = Settings::default();
        if let Some(value) = value {
            crate::maintenance::apply_duration_settings(value, SETTINGS_ENV, |key, d| {
                match key {
                    "freshness" => s.freshness = d,
                    "settle" => s.settle = d,
                    "jitter" => s.max_jitter = d,
                    "claim_wait" => s.claim_wait = d,
                    "claim_ttl" => s.claim_ttl = d,
                    "peer_wait" => s.peer_wait = d,
                    "poll" => s.poll = d,
                    _ => return false,
                }
                true
            });
        }
        s
    }
}

#[derive(Clone)]
pub struct SharedKeys {
    config: SharedKeysConfig,
    trust_domain: String,
    server_id: String,
}

impl SharedKeys {
    /// Checks at Configure time that the template renders valid Key Vault names and that the
    /// regex finds the key id again in them, so a bad pair fails now rather than at rotation.
    pub fn new(
        config: SharedKeysConfig,
        trust_domain: &str,
        server_id: &str,
    ) -> Result<Self, PluginError> {
        let shared = SharedKeys {
            config,
            trust_domain: trust_domain.to_string(),
            server_id: server_id.to_string(),
        };
        for id in ["JWT-Signer-A", "JWT-Signer-B"] {
            let name = shared
                .name_for(id)
                .map_err(|e| PluginError::invalid_argument(e.message))?;
            if shared.shared_key_id(&name).as_deref() != Some(id) {
                return Err(PluginError::invalid_argument(format!(
                    "key_id_extraction_regex does not recover the key id {id:?} from the name {name:?} rendered by jwt_key_template"
                )));
            }
        }
        Ok(shared)
    }

    /// The Key Vault name of a shared key, validated.
    pub fn name_for(&self, key_id: &str) -> Result<String, PluginError> {
        let ctx = TemplateContext {
            trust_domain: &self.trust_domain,
            server_id: &self.server_id,
            key_id,
        };
        let name = self.config.jwt_key_template.render(&ctx).map_err(|e| {
            PluginError::internal(format!(
                "could not generate key name: failed to execute jwt_key_template: {e}"
            ))
        })?;
        if !is_valid_name(&name) {
            return Err(PluginError::invalid_argument(format!(
                "jwt_key_template rendered {name:?} for key id {key_id:?}, which is not a valid Key Vault key name (1-127 characters of 0-9, a-z, A-Z and -)"
            )));
        }
        Ok(name)
    }

    pub fn tags(&self, key_id: &str) -> HashMap<String, String> {
        let mut t = key_tags(&self.trust_domain, &self.server_id, key_id);
        t.insert(TAG_SHARED.to_string(), "true".to_string());
        t
    }

    /// Rotation of a shared key; see the module comment.
    pub fn generate(
        &self,
        vault: &dyn KeyVaultApi,
        clock: &dyn Clock,
        settings: &Settings,
        key_id: &str,
        key_type: KeyType,
        params: CreateKeyParams,
    ) -> Result<KeyEntry, PluginError> {
        let r = Rotation {
            shared: self,
            vault,
            clock,
            settings,
            key_id,
            key_type,
            params,
            name: self.name_for(key_id)?,
        };
        if let Some(entry) = r.adopt_fresh()? {
            log::info!(key_id = key_id, key_name = r.name.as_str(), version = entry.version.as_str(); "Shared key is already fresh; reusing it");
            return Ok(entry);
        }
        match vault.get_key(&r.name, None) {
            Ok(latest) => r.rotate_with_claim(latest),
            Err(e) if e.is_not_found() => r.first_creation(),
            Err(e) => Err(PluginError::internal(format!(
                "failed to fetch key details: {e}"
            ))),
        }
    }
}

/// Tag on a shared key's latest version claiming the next rotation: `<nonce>|<unix secs>`.
pub const TAG_ROTATION_CLAIM: &str = "spire-rotation-claim";

/// One GenerateKey of a shared key id.
struct Rotation<'a> {
    shared: &'a SharedKeys,
    vault: &'a dyn KeyVaultApi,
    clock: &'a dyn Clock,
    settings: &'a Settings,
    key_id: &'a str,
    key_type: KeyType,
    params: CreateKeyParams,
    name: String,
}

impl Rotation<'_> {
    fn adopt_fresh(&self) -> Result<Option<KeyEntry>, PluginError> {
        self.shared.adopt_fresh(
            self.vault,
            self.clock,
            self.settings,
            self.key_id,
            &self.name,
            self.key_type,
        )
    }

    /// The key does not exist yet: no version to hold a claim, so spread the servers with a
    /// random wait, look again, and converge after creating.
    fn first_creation(&self) -> Result<KeyEntry, PluginError> {
        self.clock.sleep(jitter(self.settings.max_jitter));
        if let Some(entry) = self.adopt_fresh()? {
            log::info!(key_id = self.key_id, key_name = self.name.as_str(); "Shared key was just created by another server; reusing it");
            return Ok(entry);
        }
        self.create_and_converge()
    }

    /// The key exists: claim the rotation on its latest version (write, wait, read back), so
    /// that of several servers rotating together exactly one creates the new version and the
    /// others adopt it.
    fn rotate_with_claim(
        &self,
        latest: crate::azure::types::KeyBundle,
    ) -> Result<KeyEntry, PluginError> {
        let Some(version) = latest.version().map(str::to_string) else {
            return self.create_and_converge();
        };
        let now = unix_seconds(self.clock.now());
        if let Some(ts) = latest
            .tags
            .get(TAG_ROTATION_CLAIM)
            .and_then(|c| claim_time(c))
        {
            if now - ts < self.settings.claim_ttl.as_secs_f64() {
                return self.wait_for_peer();
            }
        }
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let mut tags = latest.tags.clone();
        tags.insert(
            TAG_ROTATION_CLAIM.to_string(),
            format!("{nonce}|{}", now as u64),
        );
        let claim = UpdateKeyParams {
            tags: Some(tags),
            ..Default::default()
        };
        if let Err(e) = self.vault.update_key(&self.name, &version, &claim) {
            log::warn!(key_name = self.name.as_str(), reason = e.to_string(); "Could not claim the shared key rotation; rotating without a claim");
            return self.create_and_converge();
        }
        self.clock.sleep(self.settings.claim_wait);
        let after = self
            .vault
            .get_key(&self.name, Some(&version))
            .map_err(|e| PluginError::internal(format!("failed to fetch key details: {e}")))?;
        let ours = after
            .tags
            .get(TAG_ROTATION_CLAIM)
            .is_some_and(|c| c.starts_with(&nonce));
        if ours {
            log::debug!(key_name = self.name.as_str(); "Shared key rotation claimed");
            self.create_and_converge()
        } else {
            self.wait_for_peer()
        }
    }

    /// Another server holds the claim: adopt its version when it appears. If it never does
    /// (the claimant died), rotate anyway.
    fn wait_for_peer(&self) -> Result<KeyEntry, PluginError> {
        log::info!(key_id = self.key_id, key_name = self.name.as_str(); "Another server is rotating this shared key; waiting for its version");
        let deadline = self.clock.now() + self.settings.peer_wait;
        while self.clock.now() < deadline {
            self.clock.sleep(self.settings.poll);
            if let Some(entry) = self.adopt_fresh()? {
                log::info!(key_id = self.key_id, key_name = self.name.as_str(), version = entry.version.as_str(); "Adopted the shared key version another server created");
                return Ok(entry);
            }
        }
        log::warn!(key_name = self.name.as_str(); "The server that claimed the rotation did not create a version in time; rotating here");
        self.create_and_converge()
    }

    fn create_and_converge(&self) -> Result<KeyEntry, PluginError> {
        let (vault, name) = (self.vault, self.name.as_str());
        let created = vault.create_key(name, &self.params).map_err(|e| {
            if e.is_deleted_but_recoverable() {
                PluginError::new(
                    Code::FailedPrecondition,
                    format!("shared key {name:?} is soft-deleted in Key Vault (deleted but recoverable): recover it or purge it, then retry"),
                )
            } else {
                PluginError::internal(format!("failed to create key: {e}"))
            }
        })?;
        let own_version = created.version().unwrap_or_default().to_string();
        log::info!(key_id = self.key_id, key_name = name, version = own_version.as_str(); "Shared key version created");
        self.clock.sleep(self.settings.settle);
        match self.adopt_fresh()? {
            Some(entry) => {
                if !own_version.is_empty() && entry.version != own_version {
                    log::info!(key_name = name, adopted = entry.version.as_str(), disabled = own_version.as_str(); "Another server's version won; disabling ours");
                    let disable = UpdateKeyParams {
                        attributes: Some(UpdateAttributes {
                            enabled: Some(false),
                        }),
                        ..Default::default()
                    };
                    if let Err(e) = vault.update_key(name, &own_version, &disable) {
                        log::warn!(key_name = name, version = own_version.as_str(), reason = e.to_string(); "Could not disable the unused shared key version");
                    }
                }
                Ok(entry)
            }
            // Our version is not visible yet (or clocks disagree): use what we made.
            None => fetch_one_entry(vault, self.key_id, name, Some(&own_version), true),
        }
    }
}

fn claim_time(claim: &str) -> Option<f64> {
    claim
        .rsplit_once('|')
        .and_then(|(_, ts)| ts.trim().parse::<f64>().ok())
}

impl SharedKeys {
    /// The earliest enabled version created within the freshness window with the requested
    /// type, if any.
    fn adopt_fresh(
        &self,
        vault: &dyn KeyVaultApi,
        clock: &dyn Clock,
        settings: &Settings,
        key_id: &str,
        name: &str,
        key_type: KeyType,
    ) -> Result<Option<KeyEntry>, PluginError> {
        let versions = match vault.list_key_versions(name) {
            Ok(v) => v,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => {
                return Err(PluginError::internal(format!(
                    "failed to list key versions: {e}"
                )))
            }
        };
        let cutoff = unix_seconds(clock.now()) - settings.freshness.as_secs_f64();
        for v in fresh_candidates(versions, cutoff) {
            let Some(version) = v.version() else { continue };
            match fetch_one_entry(vault, key_id, name, Some(version), true) {
                Ok(entry) if entry.key_type == key_type => return Ok(Some(entry)),
                Ok(_) => continue,
                Err(e) if e.code == Code::FailedPrecondition => continue, // disabled meanwhile
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

/// Enabled versions created at or after `cutoff`, earliest first, ties by version id.
pub fn fresh_candidates(versions: Vec<KeyItem>, cutoff: f64) -> Vec<KeyItem> {
    let mut v: Vec<KeyItem> = versions
        .into_iter()
        .filter(|i| i.attributes.enabled != Some(false))
        .filter(|i| i.attributes.created.is_some_and(|c| c >= cutoff))
        .collect();
    v.sort_by(|a, b| {
        let ca = a.attributes.created.unwrap_or(0.0);
        let cb = b.attributes.created.unwrap_or(0.0);
        ca.partial_cmp(&cb)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.version().cmp(&b.version()))
    });
    v
}

/// The newest enabled version of a shared key (what a restarted server loads).
pub fn latest_enabled_version(
    vault: &dyn KeyVaultApi,
    name: &str,
) -> Result<Option<String>, PluginError> {
    let versions = vault
        .list_key_versions(name)
        .map_err(|e| PluginError::internal(format!("failed to fetch key details: {e}")))?;
    let best = versions
        .iter()
        .filter(|i| i.attributes.enabled != Some(false))
        .max_by(|a, b| {
            let ca = a.attributes.created.unwrap_or(0.0);
            let cb = b.attributes.created.unwrap_or(0.0);
            // Among equal times the smallest version id wins, as in adoption.
            ca.partial_cmp(&cb)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then_with(|| b.version().cmp(&a.version()))
        });
    Ok(best.and_then(|i| i.version().map(str::to_string)))
}

fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let r = uuid::Uuid::new_v4().as_u128() as u64;
    Duration::from_nanos(r % (max.as_nanos() as u64).max(1))
}

impl SharedKeyMatcher for SharedKeys {
    /// A name is a shared key only when the regex captures an id that is shared AND the
    /// template maps that id back to exactly this name, so an over-broad regex never picks up
    /// another server's per-server keys.
    ///
    /// The capture is a hint: when it holds more than the id (the documented sample regex
    /// `^spire-[^-]+-(.+)$` captures `com-JWT-Signer-A` from `spire-example-com-JWT-Signer-A`),
    /// the id starting at `JWT-Signer-` inside it is tried too; the template check decides.
    fn shared_key_id(&self, name: &str) -> Option<String> {
        let caps = self.config.key_id_extraction_regex.captures(name)?;
        let captured = caps.get(1)?.as_str();
        let candidates = std::iter::once(captured).chain(
            captured
                .match_indices(SHARED_PREFIX)
                .map(|(i, _)| &captured[i..]),
        );
        for id in candidates {
            if !is_shared_key_id(id) {
                continue;
            }
            if let Ok(expected) = self.name_for(id) {
                if expected.eq_ignore_ascii_case(name) {
                    return Some(id.to_string());
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::KeyNameTemplate;

    #[test]
    fn a_runaway_template_fails_configure_fast_as_invalid_argument() {
        let src =
            r#"spire-{{ .KeyID }}{{ range until 100000 }}{{ $_ := until 100000 | uniq }}{{ end }}"#;
        let config = SharedKeysConfig {
            jwt_key_template: KeyNameTemplate::parse(src).unwrap(),
            jwt_key_template_src: src.to_string(),
            key_id_extraction_regex: regex::Regex::new("^spire-(.+)$").unwrap(),
        };
        let started = std::time::Instant::now();
        let e = SharedKeys::new(config, "example.org", "server-1")
            .err()
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(e.code, Code::InvalidArgument);
        assert!(e.message.contains("jwt_key_template"), "{}", e.message);
        assert!(e.message.contains("step limit"), "{}", e.message);
    }
}
