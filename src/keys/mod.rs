//! The key manager core: configuration state, the key cache, key generation, signing and
//! public keys. It talks to Key Vault only through `KeyVaultApi`, so it is tested without a
//! network; the transport reaches it through `PluginCore`.

pub(crate) mod algorithm;
pub(crate) mod cache;
pub(crate) mod convert;
pub(crate) mod discovery;
#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod interleaving_tests;
pub mod maintenance;
pub(crate) mod naming;
pub(crate) mod server_id;
pub mod shared;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
pub(crate) mod verify;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::azure::types::{AzureError, CreateKeyParams, KeyVaultApi};
use crate::clock::Clock;
use crate::config::{KeyIdentifierSource, PluginConfig};
use crate::error::PluginError;
use crate::plugin::proto::config::CoreConfiguration;
use crate::plugin::proto::keymanager::{KeyType, PublicKey};
use crate::plugin::{PluginCore, Signature, SignerOpts};
use cache::{lock, read, write, KeyCache, KeyEntry, SigningKey};
use discovery::{azure_to_plugin, entry_from_parts, SharedKeyMatcher};
use maintenance::{DeletionQueue, Maintenance, MaintenanceHandle};

/// Builds the Key Vault client for a configuration (the Azure layer in production, an
/// in-memory vault in tests).
pub(crate) type VaultConnector =
    dyn Fn(&PluginConfig) -> Result<Arc<dyn KeyVaultApi>, PluginError> + Send + Sync;

/// How long `stop` waits for a maintenance call in flight.
const MAINTENANCE_STOP_WAIT: Duration = Duration::from_secs(2);

/// Everything that exists once Configure succeeded. Replaced as a whole on reconfigure.
struct Active {
    config: PluginConfig,
    server_id: String,
    vault: Arc<dyn KeyVaultApi>,
    cache: Arc<KeyCache>,
    shared: Option<shared::SharedKeys>,
    maintenance: MaintenanceHandle,
    /// One lock per SPIRE key id: generations of one id are serialized, other ids and all
    /// signing proceed.
    generation_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl Active {
    fn generation_lock(&self, id: &str) -> Arc<Mutex<()>> {
        let mut locks = lock(&self.generation_locks);
        Arc::clone(locks.entry(id.to_string()).or_default())
    }
}

pub struct KeyManager {
    clock: Arc<dyn Clock>,
    connector: Box<VaultConnector>,
    settings: maintenance::Settings,
    shared_settings: shared::Settings,
    state: RwLock<Option<Arc<Active>>>,
    /// Serializes Configure calls; never taken by the signing path.
    configure_lock: Mutex<()>,
    /// Held (read) by GenerateKey for its whole run and (write) by Configure from discovery
    /// to the swap: a key created meanwhile would miss the new cache, and a key it rotates
    /// out would be queued on a maintenance thread already stopped.
    key_writes: RwLock<()>,
    /// Deletions owed to Key Vault, kept across reconfigures; every one re-checks when it runs
    /// that the configuration in force does not use the key.
    deletions: Arc<DeletionQueue>,
}

impl KeyManager {
    pub fn new(
        clock: Arc<dyn Clock>,
        connector: Box<VaultConnector>,
        settings: maintenance::Settings,
        shared_settings: shared::Settings,
    ) -> Self {
        KeyManager {
            clock,
            connector,
            settings,
            shared_settings,
            state: RwLock::new(None),
            configure_lock: Mutex::new(()),
            key_writes: RwLock::new(()),
            deletions: Arc::new(DeletionQueue::default()),
        }
    }

    fn active(&self) -> Result<Arc<Active>, PluginError> {
        read(&self.state)
            .clone()
            .ok_or_else(|| PluginError::failed_precondition("plugin not configured"))
    }

    fn resolve_server_id(config: &PluginConfig) -> Result<String, PluginError> {
        match &config.key_identifier {
            KeyIdentifierSource::Value(v) => Ok(v.clone()),
            KeyIdentifierSource::File(path) => {
                let (id, created) = server_id::load_or_create(path)?;
                if created {
                    log::info!(server_id = id.as_str(), path = path.display().to_string(); "Created a new server id file");
                }
                Ok(id)
            }
            KeyIdentifierSource::None => {
                let id = crate::random::uuid_v4("a server id")?
                    .hyphenated()
                    .to_string();
                log::warn!(server_id = id.as_str(); "No key identifier configured: per-server keys (X.509 CA) use a server id generated for this start and will be recreated after a restart (the old ones are swept later). Set key_identifier_file to keep them across restarts");
                Ok(id)
            }
        }
    }

    fn create_params(
        key_type: KeyType,
        tags: HashMap<String, String>,
    ) -> Result<CreateKeyParams, PluginError> {
        let (kty, key_size, crv) = match key_type {
            KeyType::EcP256 => ("EC", None, Some("P-256")),
            KeyType::EcP384 => ("EC", None, Some("P-384")),
            KeyType::Rsa2048 => ("RSA", Some(2048), None),
            KeyType::Rsa4096 => ("RSA", Some(4096), None),
            KeyType::UnspecifiedKeyType => {
                return Err(PluginError::invalid_argument("key type is required"))
            }
        };
        Ok(CreateKeyParams {
            kty: kty.to_string(),
            key_size,
            crv: crv.map(str::to_string),
            key_ops: vec!["sign".into(), "verify".into()],
            tags,
        })
    }

    /// Standard mode: a brand-new key under a fresh name; the cache switches only after Key
    /// Vault created it, and the replaced key is queued for deletion.
    fn generate_standard(
        &self,
        active: &Active,
        id: &str,
        key_type: KeyType,
    ) -> Result<PublicKey, PluginError> {
        let name = naming::new_key_name(id)?;
        let tags = naming::key_tags(&active.config.trust_domain, &active.server_id, id);
        let params = Self::create_params(key_type, tags)?;
        let bundle = active.vault.create_key(&name, &params).map_err(|e| {
            // The key may exist although its answer was lost or unreadable (a reset after the
            // request went out, a 5xx after the commit, a garbled 2xx). The name is fresh and
            // ours: delete it (a 404 is fine) rather than leave an orphan a restart would adopt.
            if create_outcome_unknown(&e) {
                active.maintenance.queue_delete(name.clone());
            }
            PluginError::internal(format!("failed to create key: {e}"))
        })?;
        let entry = entry_from_created(id, &name, &bundle, key_type, false).inspect_err(|_| {
            // Never leave a key we will not use behind.
            active.maintenance.queue_delete(name.clone());
        })?;
        log::debug!(key_id = bundle.key.kid.clone().unwrap_or_default(), key_name = name.as_str(), algorithm = params.kty.as_str(); "Key created");
        let public_key = entry.public_key.clone();
        if let Some(old) = active.cache.insert(entry) {
            if !old.shared && !old.name.eq_ignore_ascii_case(&name) {
                active.maintenance.queue_delete(old.name.clone());
            }
        }
        Ok(public_key)
    }
}

/// Whether a failed create may still have created the key.
fn create_outcome_unknown(e: &AzureError) -> bool {
    match e {
        AzureError::Transport(_) | AzureError::Decode(_) => true,
        AzureError::Service { status, .. } => *status >= 500,
        // Every attempt was answered 429 (or none was sent): nothing was created.
        AzureError::Auth(_) | AzureError::Config(_) | AzureError::Throttled(_) => false,
    }
}

/// A cache entry from a create response, checked against the requested type.
fn entry_from_created(
    id: &str,
    name: &str,
    bundle: &crate::azure::types::KeyBundle,
    requested: KeyType,
    shared: bool,
) -> Result<KeyEntry, PluginError> {
    let parsed = convert::parse_jwk(&bundle.key)
        .map_err(|e| PluginError::internal(format!("failed to marshal public key: {e}")))?;
    if parsed.key_type != requested {
        return Err(PluginError::internal(format!(
            "Key Vault returned a {} key for a {} request",
            algorithm::key_type_name(parsed.key_type),
            algorithm::key_type_name(requested)
        )));
    }
    let version = bundle
        .version()
        .ok_or_else(|| PluginError::internal("malformed create key response: no key version"))?;
    Ok(entry_from_parts(id, name, version, parsed, shared))
}

enum SignFailure {
    Plugin(PluginError),
    Vault(AzureError),
}

impl SignFailure {
    fn into_plugin(self) -> PluginError {
        match self {
            SignFailure::Plugin(e) => e,
            SignFailure::Vault(e) => azure_to_plugin("failed to sign", e),
        }
    }
}

/// Signs with one cache entry and reports that entry's fingerprint, so the signature and the
/// fingerprint always belong to the same key. The signature is first verified with that key:
/// a wrong key, a corrupted or a substituted answer is an error, never handed to SPIRE.
fn sign_with(
    active: &Active,
    entry: &SigningKey,
    data: &[u8],
    opts: SignerOpts,
) -> Result<Signature, SignFailure> {
    let alg = algorithm::select(entry.key_type, opts, data).map_err(SignFailure::Plugin)?;
    let raw = active
        .vault
        .sign(&entry.name, &entry.version, alg, data)
        .map_err(SignFailure::Vault)?;
    let signature = convert::signature_to_spire(entry.key_type, &raw)
        .map_err(|e| SignFailure::Plugin(PluginError::internal(e.to_string())))?;
    entry
        .check(alg, data, &signature)
        .map_err(SignFailure::Plugin)?;
    Ok(Signature {
        signature,
        key_fingerprint: entry.fingerprint().to_string(),
    })
}

fn core_config(core: Option<&CoreConfiguration>) -> Option<crate::config::CoreConfig> {
    core.map(|c| crate::config::CoreConfig {
        trust_domain: c.trust_domain.clone(),
    })
}

/// Parses and validates; the first problem is the Configure error (InvalidArgument).
fn load_config(core: Option<&CoreConfiguration>, hcl: &str) -> Result<PluginConfig, PluginError> {
    crate::config::validate(core_config(core).as_ref(), hcl)
        .into_result()
        .map_err(|e| PluginError::invalid_argument(e.message()))
}

#[cfg(test)]
impl KeyManager {
    /// Runs the maintenance work due now on the calling thread (with `background` off, the
    /// only way it runs), so tests step through schedules deterministically.
    pub fn run_maintenance(&self) -> maintenance::Report {
        match self.active() {
            Ok(active) => active.maintenance.run_now(),
            Err(_) => maintenance::Report::default(),
        }
    }

    /// The Key Vault names the configuration in force serves, by SPIRE key id.
    pub fn served_names(&self) -> Vec<(String, String)> {
        match self.active() {
            Ok(active) => active
                .cache
                .entries()
                .iter()
                .map(|e| (e.spire_id.clone(), e.name.clone()))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    pub fn queued_deletions(&self) -> Vec<String> {
        self.deletions.names()
    }
}

impl PluginCore for KeyManager {
    fn configure(&self, core: Option<&CoreConfiguration>, hcl: &str) -> Result<(), PluginError> {
        let _serial = lock(&self.configure_lock);
        let config = load_config(core, hcl)?;
        for note in config.ignored_key_notes() {
            log::warn!("{note}");
        }
        let server_id = Self::resolve_server_id(&config)?;
        log::debug!(server_id = server_id.as_str(); "Loaded server id");
        let vault = (self.connector)(&config)?;
        let shared = (config.shared_keys.clone())
            .map(|s| shared::SharedKeys::new(s, &config.trust_domain, &server_id))
            .transpose()?;

        let _no_key_writes = write(&self.key_writes);
        // A key queued for deletion (rotated out, a lost create's orphan) is never adopted,
        // even when it ties with the key that replaced it.
        let queued = |name: &str| self.deletions.contains(name);
        let found = discovery::discover(
            vault.as_ref(),
            &config.trust_domain,
            &server_id,
            shared.as_ref().map(|s| s as &dyn SharedKeyMatcher),
            &queued,
        )?;
        log::info!(keys = found.entries.len().to_string(), duplicates = found.duplicates.len().to_string(); "Keys discovered");

        let previous = read(&self.state).clone();
        if let Some(prev) = &previous {
            // Its queued deletions stay in `deletions` for the new thread.
            if !prev.maintenance.stop(MAINTENANCE_STOP_WAIT) {
                log::debug!("The previous maintenance thread is still in a Key Vault call; it starts no other");
            }
        }
        let cache = Arc::new(KeyCache::from_entries(found.entries));
        let matcher = shared.clone();
        let shared_check: maintenance::SharedNameCheck = Arc::new(move |name: &str| {
            (matcher.as_ref()).is_some_and(|s| s.shared_key_id(name).is_some())
        });
        // From here on the new keys are the ones no deletion may touch.
        self.deletions
            .adopt(&config.key_vault_uri, Arc::clone(&cache));
        let m = Maintenance::new(
            maintenance::Scope {
                vault: Arc::clone(&vault),
                vault_uri: config.key_vault_uri.clone(),
                cache: Arc::clone(&cache),
                trust_domain: config.trust_domain.clone(),
                server_id: server_id.clone(),
                is_shared_name: shared_check,
            },
            Arc::clone(&self.deletions),
            Arc::clone(&self.clock),
            self.settings.clone(),
        );
        let active = Arc::new(Active {
            config,
            server_id,
            vault,
            cache,
            shared,
            maintenance: MaintenanceHandle::spawn(m),
            generation_locks: Mutex::new(HashMap::new()),
        });
        for name in found.duplicates {
            active.maintenance.queue_delete(name);
        }
        *write(&self.state) = Some(active);
        log::info!("Plugin configured");
        Ok(())
    }

    fn validate(&self, core: Option<&CoreConfiguration>, hcl: &str) -> (bool, Vec<String>) {
        let v = crate::config::validate(core_config(core).as_ref(), hcl);
        let mut notes = v.notes();
        let mut valid = v.is_valid();
        // Also what Configure checks once the server id is known: rendered shared key names.
        if let Some(cfg) = v.config() {
            if let Some(shared) = &cfg.shared_keys {
                let probe_id = match &cfg.key_identifier {
                    KeyIdentifierSource::Value(v) => v.clone(),
                    _ => uuid::Uuid::nil().hyphenated().to_string(),
                };
                if let Err(e) =
                    shared::SharedKeys::new(shared.clone(), &cfg.trust_domain, &probe_id)
                {
                    valid = false;
                    notes.insert(0, e.message);
                }
            }
        }
        (valid, notes)
    }

    fn generate_key(&self, key_id: &str, key_type: KeyType) -> Result<PublicKey, PluginError> {
        let _keys_may_change = read(&self.key_writes);
        let active = self.active()?;
        let generation = active.generation_lock(key_id);
        let _serial = lock(&generation);
        match &active.shared {
            Some(shared) if shared::is_shared_key_id(key_id) => {
                let entry = shared.generate(
                    active.vault.as_ref(),
                    self.clock.as_ref(),
                    &self.shared_settings,
                    key_id,
                    key_type,
                    Self::create_params(key_type, shared.tags(key_id))?,
                )?;
                let public_key = entry.public_key.clone();
                if let Some(old) = active.cache.insert(entry) {
                    // A per-server JWT key from before shared mode: rotated out like any key.
                    if !old.shared {
                        active.maintenance.queue_delete(old.name.clone());
                    }
                }
                Ok(public_key)
            }
            _ => self.generate_standard(&active, key_id, key_type),
        }
    }

    fn get_public_key(&self, key_id: &str) -> Result<PublicKey, PluginError> {
        let active = self.active()?;
        active
            .cache
            .get(key_id)
            .map(|e| e.public_key.clone())
            .ok_or_else(|| PluginError::not_found(format!("key {key_id:?} not found")))
    }

    fn get_public_keys(&self) -> Result<Vec<PublicKey>, PluginError> {
        let active = self.active()?;
        Ok(active
            .cache
            .entries()
            .iter()
            .map(|e| e.public_key.clone())
            .collect())
    }

    fn sign_data(
        &self,
        key_id: &str,
        data: &[u8],
        opts: SignerOpts,
    ) -> Result<Signature, PluginError> {
        let active = self.active()?;
        let entry = active
            .cache
            .get(key_id)
            .ok_or_else(|| PluginError::not_found(format!("key {key_id:?} not found")))?;
        match sign_with(&active, &entry, data, opts) {
            // A rotation replaced (and deleted) the key while this request was in flight:
            // sign with the key that replaced it.
            Err(SignFailure::Vault(e)) if e.is_not_found() => match active.cache.get(key_id) {
                Some(current) if current.name != entry.name => {
                    sign_with(&active, &current, data, opts).map_err(SignFailure::into_plugin)
                }
                _ => Err(azure_to_plugin("failed to sign", e)),
            },
            other => other.map_err(SignFailure::into_plugin),
        }
    }

    fn deinit(&self) {
        if let Some(active) = read(&self.state).as_ref() {
            // Deinit runs on gRPC's completion-queue thread: ask, never wait.
            active.maintenance.request_stop();
        }
    }
}
