//! The in-memory key store: real EC and RSA keys, versions, tags, `key_ops` and soft delete,
//! signing the way Key Vault does. It holds state only; the unit tests' `MemoryVault` puts the
//! plugin's `KeyVaultApi` and fault injection on it, the fake Key Vault its REST API and clock.

use std::collections::{BTreeMap, HashMap};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p256::elliptic_curve::rand_core::OsRng;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rsa::traits::PublicKeyParts;

/// Key types the store can hold.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum KeyKind {
    EcP256,
    EcP384,
    Rsa2048,
    Rsa4096,
}

/// A key's private material.
pub enum KeyMaterial {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    Rsa(Box<rsa::RsaPrivateKey>),
}

/// Why a sign request cannot be served (Key Vault answers 400 BadParameter).
#[derive(Debug)]
pub enum SignError {
    UnsupportedAlgorithm,
    AlgorithmKeyMismatch,
    DigestLength { expected: usize, got: usize },
    Internal,
}

impl KeyMaterial {
    /// RSA generation failing would mean a broken OS RNG: a test setup failure.
    pub fn generate(kind: KeyKind) -> KeyMaterial {
        match kind {
            KeyKind::EcP256 => KeyMaterial::P256(p256::ecdsa::SigningKey::random(&mut OsRng)),
            KeyKind::EcP384 => KeyMaterial::P384(p384::ecdsa::SigningKey::random(&mut OsRng)),
            KeyKind::Rsa2048 => KeyMaterial::Rsa(Box::new(
                rsa::RsaPrivateKey::new(&mut OsRng, 2048).expect("test key store: RSA-2048 keygen"),
            )),
            KeyKind::Rsa4096 => KeyMaterial::Rsa(Box::new(
                rsa::RsaPrivateKey::new(&mut OsRng, 4096).expect("test key store: RSA-4096 keygen"),
            )),
        }
    }

    pub fn kind(&self) -> KeyKind {
        match self {
            KeyMaterial::P256(_) => KeyKind::EcP256,
            KeyMaterial::P384(_) => KeyKind::EcP384,
            KeyMaterial::Rsa(k) if k.size() * 8 >= 4096 => KeyKind::Rsa4096,
            KeyMaterial::Rsa(_) => KeyKind::Rsa2048,
        }
    }

    pub fn kty(&self) -> &'static str {
        match self {
            KeyMaterial::P256(_) | KeyMaterial::P384(_) => "EC",
            KeyMaterial::Rsa(_) => "RSA",
        }
    }

    pub fn crv(&self) -> Option<&'static str> {
        match self {
            KeyMaterial::P256(_) => Some("P-256"),
            KeyMaterial::P384(_) => Some("P-384"),
            KeyMaterial::Rsa(_) => None,
        }
    }

    /// The public JWK members besides `kty`, base64url as Key Vault sends them: `crv`, `x`,
    /// `y` for EC, `n`, `e` for RSA.
    pub fn jwk_members(&self) -> Vec<(&'static str, String)> {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        match self {
            KeyMaterial::P256(sk) => {
                let pt = p256::PublicKey::from(sk.verifying_key()).to_encoded_point(false);
                vec![
                    ("crv", "P-256".into()),
                    ("x", b64(pt.x().map(|x| &x[..]).unwrap_or(&[]))),
                    ("y", b64(pt.y().map(|y| &y[..]).unwrap_or(&[]))),
                ]
            }
            KeyMaterial::P384(sk) => {
                let pt = p384::PublicKey::from(sk.verifying_key()).to_encoded_point(false);
                vec![
                    ("crv", "P-384".into()),
                    ("x", b64(pt.x().map(|x| &x[..]).unwrap_or(&[]))),
                    ("y", b64(pt.y().map(|y| &y[..]).unwrap_or(&[]))),
                ]
            }
            KeyMaterial::Rsa(k) => vec![
                ("n", b64(&k.n().to_bytes_be())),
                ("e", b64(&k.e().to_bytes_be())),
            ],
        }
    }

    /// PKIX SubjectPublicKeyInfo DER.
    pub fn spki_der(&self) -> Option<Vec<u8>> {
        // p256 and rsa share the pkcs8 crate, so one trait import covers both.
        use p256::pkcs8::EncodePublicKey as _;
        match self {
            KeyMaterial::P256(sk) => p256::PublicKey::from(sk.verifying_key())
                .to_public_key_der()
                .ok()
                .map(|d| d.as_bytes().to_vec()),
            KeyMaterial::P384(sk) => p384::PublicKey::from(sk.verifying_key())
                .to_public_key_der()
                .ok()
                .map(|d| d.as_bytes().to_vec()),
            KeyMaterial::Rsa(k) => k
                .to_public_key()
                .to_public_key_der()
                .ok()
                .map(|d| d.as_bytes().to_vec()),
        }
    }

    /// Signs a digest the way Key Vault does: EC → raw r||s, RS* → PKCS#1 v1.5,
    /// PS* → PSS with salt length = hash length.
    pub fn sign(&self, alg: &str, digest: &[u8]) -> Result<Vec<u8>, SignError> {
        use p256::ecdsa::signature::hazmat::PrehashSigner;
        let expected = match alg {
            "ES256" | "RS256" | "PS256" => 32,
            "ES384" | "RS384" | "PS384" => 48,
            "RS512" | "PS512" => 64,
            _ => return Err(SignError::UnsupportedAlgorithm),
        };
        let compatible = match self {
            KeyMaterial::P256(_) => alg == "ES256",
            KeyMaterial::P384(_) => alg == "ES384",
            KeyMaterial::Rsa(_) => alg.starts_with("RS") || alg.starts_with("PS"),
        };
        if !compatible {
            return Err(SignError::AlgorithmKeyMismatch);
        }
        if digest.len() != expected {
            return Err(SignError::DigestLength {
                expected,
                got: digest.len(),
            });
        }
        match self {
            KeyMaterial::P256(sk) => {
                let sig: p256::ecdsa::Signature =
                    sk.sign_prehash(digest).map_err(|_| SignError::Internal)?;
                Ok(sig.to_bytes().to_vec())
            }
            KeyMaterial::P384(sk) => {
                let sig: p384::ecdsa::Signature =
                    sk.sign_prehash(digest).map_err(|_| SignError::Internal)?;
                Ok(sig.to_bytes().to_vec())
            }
            KeyMaterial::Rsa(k) => {
                use rsa::{Pkcs1v15Sign, Pss};
                use sha2::{Sha256, Sha384, Sha512};
                let res = match alg {
                    "RS256" => k.sign(Pkcs1v15Sign::new::<Sha256>(), digest),
                    "RS384" => k.sign(Pkcs1v15Sign::new::<Sha384>(), digest),
                    "RS512" => k.sign(Pkcs1v15Sign::new::<Sha512>(), digest),
                    "PS256" => k.sign_with_rng(&mut OsRng, Pss::new::<Sha256>(), digest),
                    "PS384" => k.sign_with_rng(&mut OsRng, Pss::new::<Sha384>(), digest),
                    _ => k.sign_with_rng(&mut OsRng, Pss::new::<Sha512>(), digest),
                };
                res.map_err(|_| SignError::Internal)
            }
        }
    }
}

/// One key version.
pub struct KeyVersion {
    /// 32 lowercase hex characters, as Key Vault's.
    pub version: String,
    pub created: f64,
    pub updated: f64,
    pub enabled: bool,
    pub tags: HashMap<String, String>,
    pub key_ops: Vec<String>,
    /// As requested at creation (`EC-HSM` stays `EC-HSM`).
    pub kty: String,
    pub material: Arc<KeyMaterial>,
}

impl KeyVersion {
    /// An enabled `sign`/`verify` version of fresh material of `kind`.
    pub fn new(
        version: String,
        kind: KeyKind,
        tags: &[(&str, &str)],
        created: f64,
        updated: f64,
    ) -> KeyVersion {
        let material = KeyMaterial::generate(kind);
        KeyVersion {
            version,
            created,
            updated,
            enabled: true,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            key_ops: vec!["sign".to_string(), "verify".to_string()],
            kty: material.kty().to_string(),
            material: Arc::new(material),
        }
    }
}

/// A key: its name as first written, and its versions, oldest first.
pub struct StoredKey {
    pub name: String,
    /// Deletion time when soft-deleted.
    pub deleted: Option<f64>,
    pub versions: Vec<KeyVersion>,
}

impl StoredKey {
    /// `""` selects the latest version.
    pub fn find_version(&self, version: &str) -> Option<&KeyVersion> {
        if version.is_empty() {
            self.versions.last()
        } else {
            self.versions.iter().find(|v| v.version == version)
        }
    }

    pub fn find_version_mut(&mut self, version: &str) -> Option<&mut KeyVersion> {
        if version.is_empty() {
            self.versions.last_mut()
        } else {
            self.versions.iter_mut().find(|v| v.version == version)
        }
    }
}

/// Keys by lowercase name (Key Vault names are case-insensitive), in name order; the map is
/// reachable through `Deref` for the callers that walk it.
#[derive(Default)]
pub struct KeyStore(BTreeMap<String, StoredKey>);

impl Deref for KeyStore {
    type Target = BTreeMap<String, StoredKey>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for KeyStore {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl KeyStore {
    /// The key `name` unless it is soft-deleted.
    pub fn live(&self, name: &str) -> Option<&StoredKey> {
        self.0
            .get(&name.to_ascii_lowercase())
            .filter(|k| k.deleted.is_none())
    }

    pub fn live_mut(&mut self, name: &str) -> Option<&mut StoredKey> {
        self.0
            .get_mut(&name.to_ascii_lowercase())
            .filter(|k| k.deleted.is_none())
    }

    pub fn is_deleted(&self, name: &str) -> bool {
        self.0
            .get(&name.to_ascii_lowercase())
            .is_some_and(|k| k.deleted.is_some())
    }

    /// Adds `version` to `name`, creating the key if needed; a soft-deleted key of that name is
    /// purged first (a fixture made "by another tool" replaces it).
    pub fn insert(&mut self, name: &str, version: KeyVersion) {
        if self.is_deleted(name) {
            self.purge(name);
        }
        self.push(name, version);
    }

    /// Adds `version` to `name`, creating the key if needed (callers check deletion first).
    pub fn push(&mut self, name: &str, version: KeyVersion) -> &StoredKey {
        let key = self
            .0
            .entry(name.to_ascii_lowercase())
            .or_insert_with(|| StoredKey {
                name: name.to_string(),
                deleted: None,
                versions: Vec::new(),
            });
        key.versions.push(version);
        key
    }

    /// Soft-deletes `name` at `now`; `None` when there is no live key of that name.
    pub fn delete(&mut self, name: &str, now: f64) -> Option<&StoredKey> {
        let key = self.live_mut(name)?;
        key.deleted = Some(now);
        Some(key)
    }

    /// Removes the key entirely (deleted or not); whether there was one.
    pub fn purge(&mut self, name: &str) -> bool {
        self.0.remove(&name.to_ascii_lowercase()).is_some()
    }

    /// Names of the live keys (deleted: false) or the soft-deleted ones (true), sorted.
    pub fn names(&self, deleted: bool) -> Vec<String> {
        let mut v: Vec<String> = self
            .0
            .values()
            .filter(|k| k.deleted.is_some() == deleted)
            .map(|k| k.name.clone())
            .collect();
        v.sort();
        v
    }
}
