//! An in-memory Key Vault for unit tests of the core and the maintenance logic: real EC and RSA
//! keys, versions, tags, soft delete, injected failures and call counts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rsa::traits::PublicKeyParts;

use crate::azure::types::*;
use crate::clock::{unix_seconds, Clock};

pub enum Secret {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    Rsa(Box<rsa::RsaPrivateKey>),
}

pub struct Version {
    pub version: String,
    pub created: f64,
    pub updated: f64,
    pub enabled: bool,
    pub tags: HashMap<String, String>,
    pub key_ops: Vec<String>,
    pub secret: Arc<Secret>,
}

/// A sign answer that is a 200 but wrong (see `MemoryVault::fault_signatures`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignFault {
    /// A valid signature by a fresh key of the same type: a substituted key or answer.
    OtherKey,
    /// The real signature with one bit flipped.
    Corrupt,
}

#[derive(Default)]
pub struct State {
    pub keys: HashMap<String, Vec<Version>>,
    pub deleted: HashMap<String, Vec<Version>>,
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

pub struct MemoryVault {
    pub state: Mutex<State>,
    pub clock: Arc<dyn Clock>,
}

impl MemoryVault {
    pub fn new(clock: Arc<dyn Clock>) -> Arc<Self> {
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
    pub fn use_whole_seconds(&self) {
        self.state.lock().unwrap().whole_seconds = true;
    }

    /// The next `times` calls of `op` take effect, but their answer is lost.
    pub fn lose(&self, op: &'static str, times: usize) {
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
    pub fn is_live(&self, name: &str, version: &str) -> bool {
        self.state
            .lock()
            .unwrap()
            .keys
            .get(name)
            .and_then(|vs| vs.iter().find(|v| v.version == version))
            .is_some_and(|v| v.enabled)
    }

    /// The next `times` calls of `op` fail with `err`.
    pub fn fail(&self, op: &'static str, err: AzureError, times: usize) {
        self.state.lock().unwrap().failures.push((op, err, times));
    }

    pub fn clear_failures(&self) {
        self.state.lock().unwrap().failures.clear();
    }

    /// The next `times` signs succeed with a wrong signature of the right length.
    pub fn fault_signatures(&self, fault: SignFault, times: usize) {
        self.state.lock().unwrap().sign_fault = Some((fault, times));
    }

    /// `get` answers the JWK of `name` rewritten by `edit`.
    pub fn edit_jwk(&self, name: &str, edit: fn(&mut JsonWebKey)) {
        self.state
            .lock()
            .unwrap()
            .jwk_edits
            .insert(name.to_string(), edit);
    }

    pub fn calls(&self, op: &'static str) -> usize {
        *self.state.lock().unwrap().calls.get(op).unwrap_or(&0)
    }

    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<_> = self.state.lock().unwrap().keys.keys().cloned().collect();
        v.sort();
        v
    }

    pub fn versions(&self, name: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .keys
            .get(name)
            .map(|v| v.len())
            .unwrap_or(0)
    }

    pub fn updated(&self, name: &str) -> f64 {
        self.state.lock().unwrap().keys[name]
            .last()
            .unwrap()
            .updated
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

    pub fn not_found() -> AzureError {
        AzureError::Service {
            status: 404,
            code: Some("KeyNotFound".into()),
            inner_code: None,
            message: "not found".into(),
        }
    }

    /// Inserts a key version directly (a fixture made "by another plugin").
    pub fn insert(
        &self,
        name: &str,
        kty: &str,
        tags: &[(&str, &str)],
        created: f64,
        updated: f64,
    ) -> String {
        let secret = Arc::new(make_secret(kty, None));
        let mut s = self.state.lock().unwrap();
        s.version_counter += 1;
        let version = format!("{:032x}", s.version_counter);
        s.keys.entry(name.to_string()).or_default().push(Version {
            version: version.clone(),
            created,
            updated,
            enabled: true,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            key_ops: vec!["sign".into(), "verify".into()],
            secret,
        });
        version
    }

    pub fn set_enabled(&self, name: &str, enabled: bool) {
        self.state
            .lock()
            .unwrap()
            .keys
            .get_mut(name)
            .unwrap()
            .last_mut()
            .unwrap()
            .enabled = enabled;
    }

    fn bundle(name: &str, v: &Version) -> KeyBundle {
        let mut key = JsonWebKey {
            kid: Some(format!(
                "https://memory.vault.azure.net/keys/{name}/{}",
                v.version
            )),
            key_ops: v.key_ops.clone(),
            ..Default::default()
        };
        match v.secret.as_ref() {
            Secret::P256(k) => {
                let p = k.verifying_key().to_encoded_point(false);
                key.kty = Some("EC".into());
                key.crv = Some("P-256".into());
                key.x = Some(URL_SAFE_NO_PAD.encode(p.x().unwrap()));
                key.y = Some(URL_SAFE_NO_PAD.encode(p.y().unwrap()));
            }
            Secret::P384(k) => {
                let p = k.verifying_key().to_encoded_point(false);
                key.kty = Some("EC".into());
                key.crv = Some("P-384".into());
                key.x = Some(URL_SAFE_NO_PAD.encode(p.x().unwrap()));
                key.y = Some(URL_SAFE_NO_PAD.encode(p.y().unwrap()));
            }
            Secret::Rsa(k) => {
                key.kty = Some("RSA".into());
                key.n = Some(URL_SAFE_NO_PAD.encode(k.n().to_bytes_be()));
                key.e = Some(URL_SAFE_NO_PAD.encode(k.e().to_bytes_be()));
            }
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

    fn item(name: &str, v: &Version, versioned: bool) -> KeyItem {
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

fn make_secret(kty: &str, size_or_crv: Option<&str>) -> Secret {
    let mut rng = rsa::rand_core::OsRng;
    match (kty, size_or_crv) {
        ("EC", Some("P-384")) | ("EC-P384", _) => {
            Secret::P384(p384::ecdsa::SigningKey::random(&mut rng))
        }
        ("EC", _) | ("EC-P256", _) => Secret::P256(p256::ecdsa::SigningKey::random(&mut rng)),
        ("RSA", Some("4096")) | ("RSA-4096", _) => {
            Secret::Rsa(Box::new(rsa::RsaPrivateKey::new(&mut rng, 4096).unwrap()))
        }
        _ => Secret::Rsa(Box::new(rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap())),
    }
}

impl KeyVaultApi for MemoryVault {
    fn create_key(&self, name: &str, params: &CreateKeyParams) -> Result<KeyBundle, AzureError> {
        let size = params.key_size.map(|s| s.to_string());
        let hint = params.crv.clone().or(size);
        let secret = Arc::new(make_secret(&params.kty, hint.as_deref()));
        let now = self.now();
        let mut s = self.enter("create")?;
        if s.deleted.contains_key(name) {
            return Err(AzureError::Service {
                status: 409,
                code: Some("Conflict".into()),
                inner_code: Some("ObjectIsDeletedButRecoverable".into()),
                message: "deleted but recoverable".into(),
            });
        }
        s.version_counter += 1;
        let v = Version {
            version: format!("{:032x}", s.version_counter),
            created: now,
            updated: now,
            enabled: true,
            tags: params.tags.clone(),
            key_ops: params.key_ops.clone(),
            secret,
        };
        let b = Self::bundle(name, &v);
        s.keys.entry(name.to_string()).or_default().push(v);
        if Self::answer_lost(&mut s, "create") {
            return Err(AzureError::Transport(
                "connection reset after the request".into(),
            ));
        }
        Ok(b)
    }

    fn get_key(&self, name: &str, version: Option<&str>) -> Result<KeyBundle, AzureError> {
        let s = self.enter("get")?;
        let versions = s.keys.get(name).ok_or_else(Self::not_found)?;
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
            .iter()
            .filter_map(|(n, v)| v.last().map(|last| Self::item(n, last, false)))
            .collect();
        items.sort_by(|a, b| a.kid.cmp(&b.kid));
        Ok(items)
    }

    fn list_key_versions(&self, name: &str) -> Result<Vec<KeyItem>, AzureError> {
        let s = self.enter("versions")?;
        let versions = s.keys.get(name).ok_or_else(Self::not_found)?;
        Ok(versions.iter().map(|v| Self::item(name, v, true)).collect())
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
            .get_mut(name)
            .and_then(|vs| vs.iter_mut().find(|v| v.version == version))
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
        let mut s = self.enter("delete")?;
        let v = s.keys.remove(name).ok_or_else(Self::not_found)?;
        s.deleted.insert(name.to_string(), v);
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
        let (secret, fault) = {
            let mut s = self.enter("sign")?;
            let fault = match &mut s.sign_fault {
                Some((f, n)) if *n > 0 => {
                    *n -= 1;
                    Some(*f)
                }
                _ => None,
            };
            let v = s
                .keys
                .get(name)
                .and_then(|vs| vs.iter().find(|v| v.version == version))
                .ok_or_else(Self::not_found)?;
            if !v.enabled {
                return Err(AzureError::Service {
                    status: 403,
                    code: Some("Forbidden".into()),
                    inner_code: None,
                    message: "disabled".into(),
                });
            }
            (Arc::clone(&v.secret), fault)
        };
        match fault {
            None => sign_with_secret(&secret, alg, digest),
            Some(SignFault::Corrupt) => {
                let mut sig = sign_with_secret(&secret, alg, digest)?;
                if let Some(last) = sig.last_mut() {
                    *last ^= 1;
                }
                Ok(sig)
            }
            Some(SignFault::OtherKey) => {
                let other = match secret.as_ref() {
                    Secret::P256(_) => make_secret("EC", Some("P-256")),
                    Secret::P384(_) => make_secret("EC", Some("P-384")),
                    Secret::Rsa(k) => make_secret("RSA", Some(&(k.size() * 8).to_string())),
                };
                sign_with_secret(&other, alg, digest)
            }
        }
    }
}

/// Key Vault's sign: raw `r||s` for ECDSA, PKCS#1 v1.5 or PSS (salt = hash length) for RSA.
fn sign_with_secret(secret: &Secret, alg: &str, digest: &[u8]) -> Result<Vec<u8>, AzureError> {
    use p256::ecdsa::signature::hazmat::PrehashSigner;
    let bad = || AzureError::Service {
        status: 400,
        code: Some("BadParameter".into()),
        inner_code: None,
        message: format!("bad alg {alg}"),
    };
    match (secret, alg) {
        (Secret::P256(k), "ES256") => {
            let sig: p256::ecdsa::Signature = k.sign_prehash(digest).map_err(|_| bad())?;
            Ok(sig.to_bytes().to_vec())
        }
        (Secret::P384(k), "ES384") => {
            let sig: p384::ecdsa::Signature = k.sign_prehash(digest).map_err(|_| bad())?;
            Ok(sig.to_bytes().to_vec())
        }
        (Secret::Rsa(k), a) => {
            use rsa::{Pkcs1v15Sign, Pss};
            use sha2::{Sha256, Sha384, Sha512};
            let mut rng = rsa::rand_core::OsRng;
            let r = match a {
                "RS256" => k.sign(Pkcs1v15Sign::new::<Sha256>(), digest),
                "RS384" => k.sign(Pkcs1v15Sign::new::<Sha384>(), digest),
                "RS512" => k.sign(Pkcs1v15Sign::new::<Sha512>(), digest),
                "PS256" => k.sign_with_rng(&mut rng, Pss::new_with_salt::<Sha256>(32), digest),
                "PS384" => k.sign_with_rng(&mut rng, Pss::new_with_salt::<Sha384>(48), digest),
                "PS512" => k.sign_with_rng(&mut rng, Pss::new_with_salt::<Sha512>(64), digest),
                _ => return Err(bad()),
            };
            r.map_err(|_| bad())
        }
        _ => Err(bad()),
    }
}
