//! Shared keys mode: several servers publish the same JWT signing keys. Only `JWT-Signer-*` ids
//! are shared; their Key Vault name comes from `jwt_key_template`, and a rotation adds a version
//! to that one key.
//!
//! Claim protocol: a rotation first adopts a version any server created within the freshness
//! window (15 minutes). Otherwise, when the key exists, the servers claim the rotation with the
//! tag `spire-rotation-claim` (`naming::TAG_ROTATION_CLAIM`, `<nonce>|<unix secs>`; there is no
//! separate lock tag) on its latest version: write, wait, read back; the last writer wins and
//! only it creates. The others wait for its version, or for the claim to expire when its writer
//! died, then claim again. A first creation has no version to hold a claim: each server waits a
//! random moment, looks again, and only then creates, so several may create.
//!
//! Convergence: after creating, a server waits a settle period (longer than Key Vault's 1-second
//! `created` resolution plus a peer's check-to-create gap) and re-reads the versions; every
//! server adopts the earliest `created` inside the window, ties broken by version id. The
//! creator disables the versions that lost (its own, and any a dead peer or a retried create
//! left enabled), so exactly one new version stays usable. A version younger than the settle
//! period is adopted only after waiting it out too, never one its creator is about to disable.

use std::collections::HashMap;
use std::time::Duration;

use crate::azure::types::{
    CreateKeyParams, KeyBundle, KeyItem, KeyVaultApi, UpdateAttributes, UpdateKeyParams,
};
use crate::clock::{unix_seconds, Clock};
use crate::config::SharedKeysConfig;
use crate::error::{Code, PluginError};
use crate::keys::cache::KeyEntry;
use crate::keys::discovery::{
    azure_to_plugin, by_created, fetch_failed, fetch_one_entry, SharedKeyMatcher,
};
use crate::keys::naming::{is_valid_name, key_tags, TAG_ROTATION_CLAIM, TAG_SHARED};
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
    /// A claim older than this is abandoned (its writer died): the servers waiting on it claim
    /// the rotation again. Longer than a claimant's claim-to-create time.
    pub claim_ttl: Duration,
    /// Polling interval while waiting for the winner's version.
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
            poll: Duration::from_millis(250),
        }
    }
}

/// Test hook (test builds only): `AZKV_TEST_SHARED="freshness=15m,settle=2s,jitter=1500ms,claim_wait=1500ms,claim_ttl=30s,poll=250ms"`.
#[cfg(any(test, feature = "test-hooks"))]
pub const SETTINGS_ENV: &str = "AZKV_TEST_SHARED";

#[cfg(any(test, feature = "test-hooks"))]
impl Settings {
    pub fn from_env_value(value: Option<&str>) -> Settings {
        let mut s = Settings::default();
        crate::keys::maintenance::apply_duration_settings(value, SETTINGS_ENV, |key, d| {
            match key {
                "freshness" => s.freshness = d,
                "settle" => s.settle = d,
                "jitter" => s.max_jitter = d,
                "claim_wait" => s.claim_wait = d,
                "claim_ttl" => s.claim_ttl = d,
                "poll" => s.poll = d,
                _ => return false,
            }
            true
        });
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
            vault,
            clock,
            settings,
            key_id,
            key_type,
            params,
            name: self.name_for(key_id)?,
        };
        if let Some(entry) = r.adopt_settled()? {
            log::info!(key_id = key_id, key_name = r.name.as_str(), version = entry.version.as_str(); "Shared key is already fresh; reusing it");
            return Ok(entry);
        }
        match vault.get_key(&r.name, None) {
            Ok(latest) => r.rotate_with_claim(latest),
            Err(e) if e.is_not_found() => r.first_creation(),
            Err(e) => Err(fetch_failed(e)),
        }
    }
}

/// Key Vault stamps `created` in whole seconds.
const CREATED_RESOLUTION: Duration = Duration::from_secs(1);
/// How far a server's clock may be behind Key Vault's when it judges whether a version is old
/// enough to be final.
const CLOCK_SKEW: Duration = Duration::from_secs(5);
/// Claims lost or waited out in one GenerateKey before rotating without a claim.
const MAX_CLAIM_ROUNDS: usize = 3;

/// One GenerateKey of a shared key id.
struct Rotation<'a> {
    vault: &'a dyn KeyVaultApi,
    clock: &'a dyn Clock,
    settings: &'a Settings,
    key_id: &'a str,
    key_type: KeyType,
    params: CreateKeyParams,
    name: String,
}

/// What reading back a claim found.
enum Claim {
    Won,
    /// Another server's claim replaced ours: the claimed version as read back.
    Lost(Box<KeyBundle>),
    /// The claim could not be written.
    NotWritten,
}

impl Rotation<'_> {
    /// The earliest enabled version created within the freshness window with the requested
    /// type, if any.
    fn adopt_fresh(&self) -> Result<Option<Fresh>, PluginError> {
        Ok(self.fresh_versions(1)?.pop())
    }

    /// Up to `limit` enabled versions created within the freshness window with the requested
    /// type, earliest first (ties by version id).
    fn fresh_versions(&self, limit: usize) -> Result<Vec<Fresh>, PluginError> {
        let (vault, name) = (self.vault, self.name.as_str());
        let versions = match vault.list_key_versions(name) {
            Ok(v) => v,
            Err(e) if e.is_not_found() => return Ok(Vec::new()),
            Err(e) => return Err(azure_to_plugin("failed to list key versions", e)),
        };
        let cutoff = unix_seconds(self.clock.now()) - self.settings.freshness.as_secs_f64();
        let mut found = Vec::new();
        for v in fresh_candidates(versions, cutoff) {
            if found.len() >= limit {
                break;
            }
            let Some(version) = v.version() else { continue };
            match fetch_one_entry(vault, self.key_id, name, Some(version), true) {
                Ok(entry) if entry.key_type == self.key_type => found.push(Fresh {
                    entry,
                    created: v.attributes.created.unwrap_or(cutoff),
                }),
                Ok(_) => continue,
                Err(e) if e.code == Code::FailedPrecondition => continue, // disabled meanwhile
                // The earliest is known: a later one that cannot be read just stays as it is.
                Err(e) if !found.is_empty() => {
                    log::warn!(key_name = name, version = version, reason = e.message.as_str(); "Could not read a later shared key version");
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(found)
    }

    /// The version every server converges on, once it is final. A version younger than the
    /// settle period can still lose to one a peer created in the same second (a tie broken by
    /// version id), and then its creator disables it; so such a version is adopted only after
    /// waiting the settle period and reading the versions again, as its creator does.
    fn adopt_settled(&self) -> Result<Option<KeyEntry>, PluginError> {
        let Some(first) = self.adopt_fresh()? else {
            return Ok(None);
        };
        let final_after = self.settings.settle + CREATED_RESOLUTION + CLOCK_SKEW;
        let age = unix_seconds(self.clock.now()) - first.created;
        let adopted = if age >= final_after.as_secs_f64() {
            Some(first.entry)
        } else {
            log::debug!(key_name = self.name.as_str(), version = first.entry.version.as_str(); "Shared key version is new; waiting the settle period before adopting");
            self.clock.sleep(self.settings.settle);
            self.adopt_fresh()?.map(|f| f.entry)
        };
        if adopted.is_some() {
            crate::telemetry::shared_key_adoption();
        }
        Ok(adopted)
    }

    /// The key does not exist yet: no version to hold a claim, so spread the servers with a
    /// random wait, look again, and converge after creating.
    fn first_creation(&self) -> Result<KeyEntry, PluginError> {
        self.clock.sleep(jitter(self.settings.max_jitter));
        if let Some(entry) = self.adopt_settled()? {
            log::info!(key_id = self.key_id, key_name = self.name.as_str(); "Shared key was just created by another server; reusing it");
            return Ok(entry);
        }
        self.create_and_converge()
    }

    /// The key exists: claim the rotation on its latest version (write, wait, read back), so
    /// that of several servers rotating together exactly one creates the new version and the
    /// others adopt it. A claim whose writer died is waited out, then claimed again.
    fn rotate_with_claim(&self, mut latest: KeyBundle) -> Result<KeyEntry, PluginError> {
        for _ in 0..MAX_CLAIM_ROUNDS {
            let Some(version) = latest.version().map(str::to_string) else {
                return self.create_and_converge();
            };
            // A peer created this version after our first look: it is the new one.
            if self.is_fresh(&latest) {
                if let Some(entry) = self.adopt_settled()? {
                    return Ok(entry);
                }
            }
            if let Some(remaining) = self.live_claim(&latest) {
                if let Some(entry) = self.wait_for_peer(remaining)? {
                    return Ok(entry);
                }
                latest = self.vault.get_key(&self.name, None).map_err(fetch_failed)?;
                continue;
            }
            match self.claim(&version, &latest)? {
                Claim::Won => {
                    // A peer that won an earlier claim may have created its version while we
                    // were claiming (our read of the latest version came before its create).
                    if let Some(entry) = self.adopt_settled()? {
                        return Ok(entry);
                    }
                    log::debug!(key_name = self.name.as_str(); "Shared key rotation claimed");
                    return self.create_and_converge();
                }
                Claim::Lost(after) => latest = *after,
                Claim::NotWritten => return self.create_and_converge(),
            }
        }
        log::warn!(key_name = self.name.as_str(); "Other servers kept the shared key rotation claimed without creating a version; rotating here");
        self.create_and_converge()
    }

    fn is_fresh(&self, bundle: &KeyBundle) -> bool {
        let cutoff = unix_seconds(self.clock.now()) - self.settings.freshness.as_secs_f64();
        bundle.attributes.enabled != Some(false)
            && bundle.attributes.created.is_some_and(|c| c >= cutoff)
    }

    /// How long the rotation claim on `bundle` still holds, if it does. A timestamp more than
    /// one TTL ahead comes from a wrong clock and holds nothing, so no wait exceeds two TTLs.
    fn live_claim(&self, bundle: &KeyBundle) -> Option<Duration> {
        let ts = bundle
            .tags
            .get(TAG_ROTATION_CLAIM)
            .and_then(|c| claim_time(c))?;
        let now = unix_seconds(self.clock.now());
        let ttl = self.settings.claim_ttl.as_secs_f64();
        if ts + ttl <= now || ts - now >= ttl {
            return None;
        }
        Duration::try_from_secs_f64(ts + ttl - now).ok()
    }

    /// [`Self::write_claim`], counted in telemetry by outcome.
    fn claim(&self, version: &str, latest: &KeyBundle) -> Result<Claim, PluginError> {
        let claim = self.write_claim(version, latest)?;
        crate::telemetry::shared_key_claim(match &claim {
            Claim::Won => "won",
            Claim::Lost(_) => "lost",
            Claim::NotWritten => "not_written",
        });
        Ok(claim)
    }

    /// Writes our claim on `version`, waits, and reads it back.
    fn write_claim(&self, version: &str, latest: &KeyBundle) -> Result<Claim, PluginError> {
        let now = unix_seconds(self.clock.now());
        let nonce = crate::random::uuid_v4("a rotation claim")?
            .simple()
            .to_string();
        let mut tags = latest.tags.clone();
        tags.insert(
            TAG_ROTATION_CLAIM.to_string(),
            format!("{nonce}|{}", now as u64),
        );
        let claim = UpdateKeyParams {
            tags: Some(tags),
            ..Default::default()
        };
        if let Err(e) = self.vault.update_key(&self.name, version, &claim) {
            log::warn!(key_name = self.name.as_str(), reason = e.to_string(); "Could not claim the shared key rotation; rotating without a claim");
            return Ok(Claim::NotWritten);
        }
        self.clock.sleep(self.settings.claim_wait);
        let after = (self.vault.get_key(&self.name, Some(version))).map_err(fetch_failed)?;
        let ours = after
            .tags
            .get(TAG_ROTATION_CLAIM)
            .is_some_and(|c| c.starts_with(&nonce));
        Ok(if ours {
            Claim::Won
        } else {
            Claim::Lost(Box::new(after))
        })
    }

    /// Another server holds the claim for `remaining`: adopt its version when it appears.
    /// `None` when the claim ran out first (its writer died or failed).
    fn wait_for_peer(&self, remaining: Duration) -> Result<Option<KeyEntry>, PluginError> {
        log::info!(key_id = self.key_id, key_name = self.name.as_str(); "Another server is rotating this shared key; waiting for its version");
        let deadline = self.clock.now() + remaining;
        while self.clock.now() < deadline {
            self.clock.sleep(self.settings.poll);
            if let Some(entry) = self.adopt_settled()? {
                log::info!(key_id = self.key_id, key_name = self.name.as_str(), version = entry.version.as_str(); "Adopted the shared key version another server created");
                return Ok(Some(entry));
            }
        }
        log::warn!(key_name = self.name.as_str(); "The server that claimed the shared key rotation created no version before its claim expired; claiming it again");
        Ok(None)
    }

    fn create_and_converge(&self) -> Result<KeyEntry, PluginError> {
        let (vault, name) = (self.vault, self.name.as_str());
        let created = vault.create_key(name, &self.params).map_err(|e| {
            if e.is_deleted_but_recoverable() {
                PluginError::failed_precondition(format!("shared key {name:?} is soft-deleted in Key Vault (deleted but recoverable): recover it or purge it, then retry"))
            } else {
                PluginError::internal(format!("failed to create key: {e}"))
            }
        })?;
        let own_version = created.version().unwrap_or_default().to_string();
        log::info!(key_id = self.key_id, key_name = name, version = own_version.as_str(); "Shared key version created");
        self.clock.sleep(self.settings.settle);
        let mut fresh = self.fresh_versions(usize::MAX)?;
        if fresh.is_empty() {
            // Our version is not visible yet (or clocks disagree): use what we made.
            return fetch_one_entry(vault, self.key_id, name, Some(&own_version), true);
        }
        let chosen = fresh.remove(0).entry;
        // Every later fresh version of this type lost: ours, a peer's whose creator died before
        // disabling it, or one a retried create left behind when its response was lost.
        let mut losers: Vec<String> = fresh.into_iter().map(|f| f.entry.version).collect();
        if !own_version.is_empty()
            && own_version != chosen.version
            && !losers.contains(&own_version)
        {
            losers.push(own_version.clone());
        }
        for loser in losers {
            let message = match loser == own_version {
                true => "Another server's version won; disabling ours",
                false => "Disabling a shared key version that lost and is still enabled",
            };
            log::info!(key_name = name, adopted = chosen.version.as_str(), disabled = loser.as_str(); "{message}");
            let disable = UpdateKeyParams {
                attributes: Some(UpdateAttributes {
                    enabled: Some(false),
                }),
                ..Default::default()
            };
            if let Err(e) = vault.update_key(name, &loser, &disable) {
                log::warn!(key_name = name, version = loser.as_str(), reason = e.to_string(); "Could not disable the unused shared key version");
            }
        }
        Ok(chosen)
    }
}

fn claim_time(claim: &str) -> Option<f64> {
    claim
        .rsplit_once('|')
        .and_then(|(_, ts)| ts.trim().parse::<f64>().ok())
        .filter(|t| t.is_finite())
}

/// A fresh version and its `created` time.
struct Fresh {
    entry: KeyEntry,
    created: f64,
}

/// Enabled versions created at or after `cutoff`, earliest first, ties by version id.
pub fn fresh_candidates(versions: Vec<KeyItem>, cutoff: f64) -> Vec<KeyItem> {
    let mut v: Vec<KeyItem> = versions
        .into_iter()
        .filter(|i| i.attributes.enabled != Some(false))
        .filter(|i| i.attributes.created.is_some_and(|c| c >= cutoff))
        .collect();
    v.sort_by(|a, b| by_created(a, b).then(a.version().cmp(&b.version())));
    v
}

fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let mut r = [0u8; 8];
    // Only spreads servers apart: without randomness (Configure already failed then, for the
    // server id or key names) no jitter is the safe choice.
    if crate::random::fill(&mut r, "rotation jitter").is_err() {
        return Duration::ZERO;
    }
    Duration::from_nanos(u64::from_le_bytes(r) % (max.as_nanos() as u64).max(1))
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
    use std::sync::{Arc, Mutex};
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::*;
    use crate::azure::types::{AzureError, KeyBundle};
    use crate::clock::ManualClock;
    use crate::keys::testing::MemoryVault;
    use crate::template::KeyNameTemplate;

    const ID: &str = "JWT-Signer-A";
    const NAME: &str = "spire-JWT-Signer-A";

    type Hook = Box<dyn FnOnce(&MemoryVault) + Send>;

    /// A `MemoryVault` where other servers act at chosen moments: a hook runs just before the
    /// n-th call (1-based) of an operation, as if a peer's request landed then. Every call is
    /// logged with the clock's time.
    struct Peers {
        vault: Arc<MemoryVault>,
        clock: ManualClock,
        hooks: Mutex<Vec<(&'static str, usize, Hook)>>,
        log: Mutex<Vec<(&'static str, f64)>>,
    }

    impl Peers {
        fn new(clock: &ManualClock) -> Peers {
            Peers {
                vault: MemoryVault::new(Arc::new(clock.clone())),
                clock: clock.clone(),
                hooks: Mutex::new(Vec::new()),
                log: Mutex::new(Vec::new()),
            }
        }

        fn before(
            &self,
            op: &'static str,
            nth: usize,
            hook: impl FnOnce(&MemoryVault) + Send + 'static,
        ) {
            self.hooks.lock().unwrap().push((op, nth, Box::new(hook)));
        }

        fn step(&self, op: &'static str) {
            let n = {
                let mut log = self.log.lock().unwrap();
                log.push((op, unix_seconds(self.clock.now())));
                log.iter().filter(|(o, _)| *o == op).count()
            };
            let due: Vec<Hook> = {
                let mut hooks = self.hooks.lock().unwrap();
                let (due, rest) = std::mem::take(&mut *hooks)
                    .into_iter()
                    .partition(|(o, k, _)| *o == op && *k == n);
                *hooks = rest;
                due.into_iter().map(|(_, _, h)| h).collect()
            };
            for hook in due {
                hook(&self.vault);
            }
        }

        fn calls(&self, op: &str) -> Vec<f64> {
            let log = self.log.lock().unwrap();
            log.iter()
                .filter(|(o, _)| *o == op)
                .map(|(_, t)| *t)
                .collect()
        }

        fn ops(&self) -> Vec<&'static str> {
            self.log.lock().unwrap().iter().map(|(o, _)| *o).collect()
        }
    }

    impl KeyVaultApi for Peers {
        fn create_key(
            &self,
            name: &str,
            params: &CreateKeyParams,
        ) -> Result<KeyBundle, AzureError> {
            self.step("create");
            self.vault.create_key(name, params)
        }
        fn get_key(&self, name: &str, version: Option<&str>) -> Result<KeyBundle, AzureError> {
            self.step("get");
            self.vault.get_key(name, version)
        }
        fn list_keys(&self) -> Result<Vec<KeyItem>, AzureError> {
            self.step("list");
            self.vault.list_keys()
        }
        fn list_key_versions(&self, name: &str) -> Result<Vec<KeyItem>, AzureError> {
            self.step("versions");
            self.vault.list_key_versions(name)
        }
        fn update_key(
            &self,
            name: &str,
            version: &str,
            params: &UpdateKeyParams,
        ) -> Result<KeyBundle, AzureError> {
            self.step("update");
            self.vault.update_key(name, version, params)
        }
        fn delete_key(&self, name: &str) -> Result<(), AzureError> {
            self.step("delete");
            self.vault.delete_key(name)
        }
        fn sign(
            &self,
            name: &str,
            version: &str,
            alg: &str,
            digest: &[u8],
        ) -> Result<Vec<u8>, AzureError> {
            self.step("sign");
            self.vault.sign(name, version, alg, digest)
        }
    }

    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn settings() -> Settings {
        Settings {
            max_jitter: Duration::ZERO,
            ..Settings::default()
        }
    }

    fn generate(peers: &Peers) -> Result<KeyEntry, PluginError> {
        let config = SharedKeysConfig {
            jwt_key_template: KeyNameTemplate::parse("spire-{{ .KeyID }}").unwrap(),
            jwt_key_template_src: "spire-{{ .KeyID }}".into(),
            key_id_extraction_regex: regex::Regex::new("^spire-(.+)$").unwrap(),
        };
        let shared = SharedKeys::new(config, "example.org", "server-1").unwrap();
        let params = CreateKeyParams {
            kty: "EC".into(),
            key_size: None,
            crv: Some("P-256".into()),
            key_ops: vec!["sign".into(), "verify".into()],
            tags: shared.tags(ID),
        };
        shared.generate(
            peers,
            &peers.clock,
            &settings(),
            ID,
            KeyType::EcP256,
            params,
        )
    }

    /// A version of NAME made by a peer, created at `created`.
    fn peer_version(vault: &MemoryVault, created: f64, tags: &[(&str, &str)]) -> String {
        vault.insert(NAME, "EC", tags, created, created)
    }

    fn enabled(vault: &MemoryVault, version: &str) -> bool {
        vault.with_versions(NAME, |vs| {
            vs.iter().any(|v| v.version == version && v.enabled)
        })
    }

    fn stale(clock: &ManualClock) -> f64 {
        unix_seconds(clock.now()) - 20.0 * 60.0
    }

    #[test]
    fn a_peer_version_seen_before_it_settled_is_not_adopted_if_it_loses() {
        let clock = ManualClock::new(t0());
        let peers = Peers::new(&clock);
        let now = unix_seconds(t0());
        // After our random wait a peer's version V is there...
        let v = Arc::new(Mutex::new(String::new()));
        let v2 = Arc::clone(&v);
        peers.before("versions", 2, move |vault| {
            *v2.lock().unwrap() = peer_version(vault, now, &[]);
        });
        // ...then a third server's version E shows up, created the same second with a smaller
        // version id, so V's creator adopts E and disables V.
        let e = "0".repeat(32);
        let (e2, v3) = (e.clone(), Arc::clone(&v));
        peers.before("versions", 3, move |vault| {
            peer_version(vault, now, &[]);
            let v = v3.lock().unwrap().clone();
            vault.with_versions(NAME, |versions| {
                versions.last_mut().unwrap().version = e2;
                versions
                    .iter_mut()
                    .find(|x| x.version == v)
                    .unwrap()
                    .enabled = false;
            });
        });
        let entry = generate(&peers).unwrap();
        assert_eq!(entry.version, e, "adopted the version that lost");
        assert!(enabled(&peers.vault, &entry.version));
        assert!(peers.calls("create").is_empty());
    }

    #[test]
    fn a_creator_disables_every_version_of_its_type_that_lost() {
        let clock = ManualClock::new(t0());
        let peers = Peers::new(&clock);
        let now = unix_seconds(t0());
        let ids = Arc::new(Mutex::new(Vec::new()));
        let ids2 = Arc::clone(&ids);
        // Just before our create: the winner W (same second, smallest id), an orphan O from a
        // peer that died before disabling it (a second later), and a P-384 version R of a
        // server configured with another key type, which is not ours to judge.
        peers.before("create", 1, move |vault| {
            peer_version(vault, now, &[]);
            let w = "0".repeat(32);
            vault.with_versions(NAME, |vs| vs[0].version = w.clone());
            let o = peer_version(vault, now + 1.0, &[]);
            let r = vault.insert(NAME, "EC-P384", &[], now, now);
            ids2.lock().unwrap().extend([w, o, r]);
        });
        let entry = generate(&peers).unwrap();
        let [w, o, r] = ids.lock().unwrap().clone().try_into().unwrap();
        assert_eq!(entry.version, w);
        let ours = peers.vault.with_versions(NAME, |vs| {
            vs.iter()
                .map(|v| v.version.clone())
                .find(|v| ![&w, &o, &r].contains(&v))
                .unwrap()
        });
        assert!(enabled(&peers.vault, &w));
        assert!(!enabled(&peers.vault, &ours), "our losing version");
        assert!(!enabled(&peers.vault, &o), "the dead peer's losing version");
        assert!(enabled(&peers.vault, &r), "another key type");
    }

    #[test]
    fn a_version_a_peer_created_while_we_claimed_is_adopted_not_duplicated() {
        // The peer's version lands before our read of the latest version (get #1), or while
        // we wait on our claim (before the read-back, get #2).
        for nth_get in [1, 2] {
            let clock = ManualClock::new(t0());
            let peers = Peers::new(&clock);
            peer_version(&peers.vault, stale(&clock), &[]);
            let peer = Arc::new(Mutex::new(String::new()));
            let (p2, c2) = (Arc::clone(&peer), clock.clone());
            peers.before("get", nth_get, move |vault| {
                *p2.lock().unwrap() = peer_version(vault, unix_seconds(c2.now()), &[]);
            });
            let entry = generate(&peers).unwrap();
            assert_eq!(entry.version, *peer.lock().unwrap(), "case get #{nth_get}");
            assert_eq!(peers.vault.versions(NAME), 2, "case get #{nth_get}");
            assert!(peers.calls("create").is_empty(), "case get #{nth_get}");
        }
    }

    #[test]
    fn a_dead_servers_claim_is_waited_out_then_claimed_again() {
        let clock = ManualClock::new(t0());
        let peers = Peers::new(&clock);
        let now = unix_seconds(t0());
        let s = settings();
        // A server wrote its claim 5 s ago and died before creating.
        let claimed_at = now - 5.0;
        let dead = format!("deadbeef|{}", claimed_at as u64);
        let v1 = peer_version(&peers.vault, stale(&clock), &[(TAG_ROTATION_CLAIM, &dead)]);
        let entry = generate(&peers).unwrap();

        let creates = peers.calls("create");
        assert_eq!(creates.len(), 1, "{:?}", peers.ops());
        let expiry = claimed_at + s.claim_ttl.as_secs_f64();
        assert!(
            creates[0] >= expiry,
            "created at {} before the claim expired at {expiry}",
            creates[0]
        );
        let bound = expiry + (s.poll + s.claim_wait).as_secs_f64();
        assert!(
            creates[0] <= bound,
            "created at {}, later than {bound}",
            creates[0]
        );
        // The claim was taken over (written again, by us) before creating.
        let ops = peers.ops();
        let create_at = ops.iter().position(|o| *o == "create").unwrap();
        assert!(ops[..create_at].contains(&"update"), "{ops:?}");
        let tag = peers.vault.get_key(NAME, Some(&v1)).unwrap().tags[TAG_ROTATION_CLAIM].clone();
        assert!(!tag.starts_with("deadbeef"), "{tag}");
        assert!(enabled(&peers.vault, &entry.version));
        assert_ne!(entry.version, v1);
    }

    #[test]
    fn a_claim_stamped_by_a_clock_far_ahead_or_unreadable_holds_nothing() {
        for claim in [
            "deadbeef|1800003600",
            "deadbeef|NaN",
            "deadbeef|inf",
            "garbage",
        ] {
            let clock = ManualClock::new(t0());
            let peers = Peers::new(&clock);
            peer_version(&peers.vault, stale(&clock), &[(TAG_ROTATION_CLAIM, claim)]);
            generate(&peers).unwrap();
            let creates = peers.calls("create");
            assert_eq!(creates.len(), 1, "{claim}");
            let waited = creates[0] - unix_seconds(t0());
            assert!(
                waited <= settings().claim_wait.as_secs_f64(),
                "{claim}: waited {waited} s before creating"
            );
            assert_eq!(peers.calls("update").len(), 1, "{claim}: claimed first");
        }
    }

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
