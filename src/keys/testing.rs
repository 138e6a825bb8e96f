//! An in-memory Key Vault for unit tests of the core and the maintenance logic: `KeyVaultApi` on
//! the key store the integration tests' fake Key Vault also serves (`testkit/src/vault.rs`: real
//! EC and RSA keys, versions, tags, soft delete), plus injected failures and call counts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use azkv_testkit::vault::{KeyKind, KeyMaterial, KeyStore, KeyVersion, StoredKey};

use crate::azure::types::*;
use crate::clock::{unix_seconds, Clock};

/// A sign answer that is a 200 but wrong (see `MemoryVault::fault_signatures`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SignFault {
    /// A valid signature by a fresh key of the same type: a substituted key or answer.
    OtherKey,
    /// The real signature with one bit flipped.
    Corrupt,
}

#[derive(Default)]
pub(crate) struct State {
    pub keys: KeyStore,
    pub failures: Vec<(&'static str, AzureError, usize)>,
    /// The next `.1` successful signs answer wrongly.
    pub sign_fault: Option<(SignFault, usize)>,
    /// Rewrites of the JWK that `get` answers for a key name (a key made by another tool).
    pub jwk_edits: HashMap<String, fn(&mut JsonWebKey)>,
    pub calls: HashMap<&'static str, usize>,
    pub version_counter: u64,
    /// Ops whose next calls take effect but answer with a transport error (a lost response).
    pub lost: Vec<(&'static str, usize)>,
    /// Key times in whole seconds, as Key Vault reports them (so two creates tie).
    pub whole_seconds: bool,
}

pub(crate) struct MemoryVault {
    pub state: Mutex<State>,
    pub clock: Arc<dyn Clock>,
}

/// The live key `name`'s version `version` (exactly; no "latest" shorthand).
fn find<'a>(s: &'a State, name: &str, version: &str) -> Option<(&'a StoredKey, &'a KeyVersion)> {
    let key = s.keys.live(name)?;
    let v = key.versions.iter().find(|v| v.version == version)?;
    Some((key, v))
}

impl MemoryVault {
    pub(crate) fn new(clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(MemoryVault {
            state: Mutex::new(State::default()),
            clock,
        })
    }

    fn now(&self) -> f64 {
        let t = unix_seconds(self.clock.now());
        if self.state.lock().unwrap().whole_seconds {
            t.floor()
        } else {
            t
        }
    }

    /// Key times in whole seconds from now on, as Key Vault reports them.
    pub(crate) fn use_whole_seconds(&self) {
        self.state.lock().unwrap().whole_seconds = true;
    }

    /// The next `times` calls of `op` take effect, but their answer is lost.
    pub(crate) fn lose(&self, op: &'static str, times: usize) {
        self.state.lock().unwrap().lost.push((op, times));
    }

    fn answer_lost(s: &mut State, op: &'static str) -> bool {
        match s.lost.iter_mut().find(|(o, n)| *o == op && *n > 0) {
            Some((_, n)) => {
                *n -= 1;
                true
            }
            None => false,
        }
    }

    /// Whether `name` exists (not deleted) and its `version` is enabled.
    pub(crate) fn is_live(&self, name: &str, version: &str) -> bool {
        find(&self.state.lock().unwrap(), name, version).is_some_and(|(_, v)| v.enabled)
    }

    /// The next `times` calls of `op` fail with `err`.
    pub(crate) fn fail(&self, op: &'static str, err: AzureError, times: usize) {
        self.state.lock().unwrap().failures.push((op, err, times));
    }

    pub(crate) fn clear_failures(&self) {
        self.state.lock().unwrap().failures.clear();
    }

    /// The next `times` signs succeed with a wrong signature of the right length.
    pub(crate) fn fault_signatures(&self, fault: SignFault, times: usize) {
        self.state.lock().unwrap().sign_fault = Some((fault, times));
    }

    /// `get` answers the JWK of `name` rewritten by `edit`.
    pub(crate) fn edit_jwk(&self, name: &str, edit: fn(&mut JsonWebKey)) {
        self.state
            .lock()
            .unwrap()
            .jwk_edits
            .insert(name.to_string(), edit);
    }

    pub(crate) fn calls(&self, op: &'static str) -> usize {
        *self.state.lock().unwrap().calls.get(op).unwrap_or(&0)
    }

    /// Live key names, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        self.state.lock().unwrap().keys.names(false)
    }

    pub(crate) fn versions(&self, name: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .keys
            .live(name)
            .map_or(0, |k| k.versions.len())
    }

    /// `updated` of the live key `name`'s latest version.
    pub(crate) fn updated(&self, name: &str) -> f64 {
        self.with_versions(name, |vs| vs.last().unwrap().updated)
    }

    /// Runs `f` on the versions of the live key `name` (panics when there is none).
    pub(crate) fn with_versions<T>(
        &self,
        name: &str,
        f: impl FnOnce(&mut Vec<KeyVersion>) -> T,
    ) -> T {
        let mut s = self.state.lock().unwrap();
        f(&mut s.keys.live_mut(name).unwrap().versions)
    }

    fn enter(&self, op: &'static str) -> Result<std::sync::MutexGuard<'_, State>, AzureError> {
        let mut s = self.state.lock().unwrap();
        *s.calls.entry(op).or_default() += 1;
        if let Some(pos) = s.failures.iter().position(|(o, _, n)| *o == op && *n > 0) {
            let err = s.failures[pos].1.clone();
            s.failures[pos].2 -= 1;
            return Err(err);
        }
        Ok(s)
    }

    pub(crate) fn not_found() -> AzureError {
        AzureError::Service {
            status: 404,
            code: Some("KeyNotFound".into()),
            inner_code: None,
            message: "not found".into(),
        }
    }

    fn next_version(s: &mut State) -> String {
        s.version_counter += 1;
        format!("{:032x}", s.version_counter)
    }

    /// Inserts a key version directly (a fixture made "by another plugin").
    pub(crate) fn insert(
        &self,
        name: &str,
        kty: &str,
        tags: &[(&str, &str)],
        created: f64,
        updated: f64,
    ) -> String {
        let kind = key_kind(kty, None);
        let mut s = self.state.lock().unwrap();
        let version = Self::next_version(&mut s);
        let v = KeyVersion::new(version.clone(), kind, tags, created, updated);
        s.keys.insert(name, v);
        version
    }

    pub(crate) fn set_enabled(&self, name: &str, enabled: bool) {
        self.with_versions(name, |vs| vs.last_mut().unwrap().enabled = enabled);
    }

    fn bundle(name: &str, v: &KeyVersion) -> KeyBundle {
        let mut key = JsonWebKey {
            kid: Some(format!(
                "https://memory.vault.azure.net/keys/{name}/{}",
                v.version
            )),
            key_ops: v.key_ops.clone(),
            kty: Some(v.material.kty().into()),
            ..Default::default()
        };
        for (member, value) in v.material.jwk_members() {
            let field = match member {
                "crv" => &mut key.crv,
                "x" => &mut key.x,
                "y" => &mut key.y,
                "n" => &mut key.n,
                _ => &mut key.e,
            };
            *field = Some(value);
        }
        KeyBundle {
            key,
            attributes: KeyAttributes {
                enabled: Some(v.enabled),
                created: Some(v.created),
                updated: Some(v.updated),
                ..Default::default()
            },
            tags: v.tags.clone(),
        }
    }

    fn item(name: &str, v: &KeyVersion, versioned: bool) -> KeyItem {
        KeyItem {
            kid: if versioned {
                format!("https://memory.vault.azure.net/keys/{name}/{}", v.version)
            } else {
                format!("https://memory.vault.azure.net/keys/{name}")
            },
            attributes: KeyAttributes {
                enabled: Some(v.enabled),
                created: Some(v.created),
                updated: Some(v.updated),
                ..Default::default()
            },
            tags: v.tags.clone(),
        }
    }
}

/// The key type a create (`kty` with its curve or size) or a fixture (`EC-P384`, `RSA-4096`)
/// asks for.
fn key_kind(kty: &str, size_or_crv: Option<&str>) -> KeyKind {
    match (kty, size_or_crv) {
        ("EC", Some("P-384")) | ("EC-P384", _) => KeyKind::EcP384,
        ("EC", _) | ("EC-P256", _) => KeyKind::EcP256,
        ("RSA", Some("4096")) | ("RSA-4096", _) => KeyKind::Rsa4096,
        _ => KeyKind::Rsa2048,
    }
}

impl KeyVaultApi for MemoryVault {
    fn create_key(&self, name: &str, params: &CreateKeyParams) -> Result<KeyBundle, AzureError> {
        let size = params.key_size.map(|s| s.to_string());
        let hint = params.crv.clone().or(size);
        let material = KeyMaterial::generate(key_kind(&params.kty, hint.as_deref()));
        let now = self.now();
        let mut s = self.enter("create")?;
        if s.keys.is_deleted(name) {
            return Err(AzureError::Service {
                status: 409,
                code: Some("Conflict".into()),
                inner_code: Some("ObjectIsDeletedButRecoverable".into()),
                message: "deleted but recoverable".into(),
            });
        }
        let v = KeyVersion {
            version: Self::next_version(&mut s),
            created: now,
            updated: now,
            enabled: true,
            tags: params.tags.clone(),
            key_ops: params.key_ops.clone(),
            kty: material.kty().into(),
            material: Arc::new(material),
        };
        let b = Self::bundle(name, &v);
        s.keys.push(name, v);
        if Self::answer_lost(&mut s, "create") {
            return Err(AzureError::Transport(
                "connection reset after the request".into(),
            ));
        }
        Ok(b)
    }

    fn get_key(&self, name: &str, version: Option<&str>) -> Result<KeyBundle, AzureError> {
        let s = self.enter("get")?;
        let versions = &s.keys.live(name).ok_or_else(Self::not_found)?.versions;
        let v = match version {
            None => versions.last(),
            Some(ver) => versions.iter().find(|v| v.version == ver),
        }
        .ok_or_else(Self::not_found)?;
        let mut bundle = Self::bundle(name, v);
        if let Some(edit) = s.jwk_edits.get(name) {
            edit(&mut bundle.key);
        }
        Ok(bundle)
    }

    fn list_keys(&self) -> Result<Vec<KeyItem>, AzureError> {
        let s = self.enter("list")?;
        let mut items: Vec<_> = s
            .keys
            .values()
            .filter(|k| k.deleted.is_none())
            .filter_map(|k| {
                k.versions
                    .last()
                    .map(|last| Self::item(&k.name, last, false))
            })
            .collect();
        items.sort_by(|a, b| a.kid.cmp(&b.kid));
        Ok(items)
    }

    fn list_key_versions(&self, name: &str) -> Result<Vec<KeyItem>, AzureError> {
        let s = self.enter("versions")?;
        let key = s.keys.live(name).ok_or_else(Self::not_found)?;
        Ok(key
            .versions
            .iter()
            .map(|v| Self::item(name, v, true))
            .collect())
    }

    fn update_key(
        &self,
        name: &str,
        version: &str,
        params: &UpdateKeyParams,
    ) -> Result<KeyBundle, AzureError> {
        let now = self.now();
        let mut s = self.enter("update")?;
        let v = s
            .keys
            .live_mut(name)
            .and_then(|k| k.versions.iter_mut().find(|v| v.version == version))
            .ok_or_else(Self::not_found)?;
        if let Some(ops) = &params.key_ops {
            v.key_ops = ops.clone();
        }
        if let Some(enabled) = params.attributes.as_ref().and_then(|a| a.enabled) {
            v.enabled = enabled;
        }
        if let Some(tags) = &params.tags {
            v.tags = tags.clone();
        }
        v.updated = now;
        Ok(Self::bundle(name, v))
    }

    fn delete_key(&self, name: &str) -> Result<(), AzureError> {
        let now = self.now();
        let mut s = self.enter("delete")?;
        s.keys.delete(name, now).ok_or_else(Self::not_found)?;
        if Self::answer_lost(&mut s, "delete") {
            return Err(AzureError::Transport(
                "connection reset after the request".into(),
            ));
        }
        Ok(())
    }

    fn sign(
        &self,
        name: &str,
        version: &str,
        alg: &str,
        digest: &[u8],
    ) -> Result<Vec<u8>, AzureError> {
        let (material, fault) = {
            let mut s = self.enter("sign")?;
            let fault = match &mut s.sign_fault {
                Some((f, n)) if *n > 0 => {
                    *n -= 1;
                    Some(*f)
                }
                _ => None,
            };
            let (_, v) = find(&s, name, version).ok_or_else(Self::not_found)?;
            if !v.enabled {
                return Err(AzureError::Service {
                    status: 403,
                    code: Some("Forbidden".into()),
                    inner_code: None,
                    message: "disabled".into(),
                });
            }
            (Arc::clone(&v.material), fault)
        };
        let sign = |m: &KeyMaterial| {
            m.sign(alg, digest).map_err(|_| AzureError::Service {
                status: 400,
                code: Some("BadParameter".into()),
                inner_code: None,
                message: format!("bad alg {alg}"),
            })
        };
        match fault {
            None => sign(&material),
            Some(SignFault::Corrupt) => {
                let mut sig = sign(&material)?;
                if let Some(last) = sig.last_mut() {
                    *last ^= 1;
                }
                Ok(sig)
            }
            Some(SignFault::OtherKey) => sign(&KeyMaterial::generate(material.kind())),
        }
    }
}
