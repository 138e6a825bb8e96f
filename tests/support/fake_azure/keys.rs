//! Key material held by the fake: generation, JWK export, SPKI export and signing.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p256::elliptic_curve::rand_core::OsRng;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rsa::traits::PublicKeyParts;

use super::FakeKeyType;

pub(super) enum Material {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    Rsa(Box<rsa::RsaPrivateKey>),
}

/// Why a sign request cannot be served (→ 400 BadParameter).
pub(super) enum SignError {
    UnsupportedAlgorithm,
    AlgorithmKeyMismatch,
    DigestLength { expected: usize, got: usize },
    Internal,
}

impl Material {
    /// RSA generation failing would mean a broken OS RNG: a test setup failure.
    pub fn generate(kind: FakeKeyType) -> Material {
        match kind {
            FakeKeyType::EcP256 => Material::P256(p256::ecdsa::SigningKey::random(&mut OsRng)),
            FakeKeyType::EcP384 => Material::P384(p384::ecdsa::SigningKey::random(&mut OsRng)),
            FakeKeyType::Rsa2048 => Material::Rsa(Box::new(
                rsa::RsaPrivateKey::new(&mut OsRng, 2048).expect("fake_azure: RSA-2048 keygen"),
            )),
            FakeKeyType::Rsa4096 => Material::Rsa(Box::new(
                rsa::RsaPrivateKey::new(&mut OsRng, 4096).expect("fake_azure: RSA-4096 keygen"),
            )),
        }
    }

    pub fn kty(&self) -> &'static str {
        match self {
            Material::P256(_) | Material::P384(_) => "EC",
            Material::Rsa(_) => "RSA",
        }
    }

    pub fn crv(&self) -> Option<&'static str> {
        match self {
            Material::P256(_) => Some("P-256"),
            Material::P384(_) => Some("P-384"),
            Material::Rsa(_) => None,
        }
    }

    /// Adds the public JWK members (`crv`/`x`/`y` or `n`/`e`) to `jwk`.
    pub fn add_jwk_fields(&self, jwk: &mut serde_json::Map<String, serde_json::Value>) {
        let b64 = |b: &[u8]| serde_json::Value::String(URL_SAFE_NO_PAD.encode(b));
        match self {
            Material::P256(sk) => {
                let pt = p256::PublicKey::from(sk.verifying_key()).to_encoded_point(false);
                jwk.insert("crv".into(), "P-256".into());
                jwk.insert("x".into(), b64(pt.x().map(|x| &x[..]).unwrap_or(&[])));
                jwk.insert("y".into(), b64(pt.y().map(|y| &y[..]).unwrap_or(&[])));
            }
            Material::P384(sk) => {
                let pt = p384::PublicKey::from(sk.verifying_key()).to_encoded_point(false);
                jwk.insert("crv".into(), "P-384".into());
                jwk.insert("x".into(), b64(pt.x().map(|x| &x[..]).unwrap_or(&[])));
                jwk.insert("y".into(), b64(pt.y().map(|y| &y[..]).unwrap_or(&[])));
            }
            Material::Rsa(k) => {
                jwk.insert("n".into(), b64(&k.n().to_bytes_be()));
                jwk.insert("e".into(), b64(&k.e().to_bytes_be()));
            }
        }
    }

    pub fn spki_der(&self) -> Option<Vec<u8>> {
        // p256 and rsa share the pkcs8 crate, so one trait import covers both.
        use p256::pkcs8::EncodePublicKey as _;
        match self {
            Material::P256(sk) => p256::PublicKey::from(sk.verifying_key())
                .to_public_key_der()
                .ok()
                .map(|d| d.as_bytes().to_vec()),
            Material::P384(sk) => p384::PublicKey::from(sk.verifying_key())
                .to_public_key_der()
                .ok()
                .map(|d| d.as_bytes().to_vec()),
            Material::Rsa(k) => k
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
            Material::P256(_) => alg == "ES256",
            Material::P384(_) => alg == "ES384",
            Material::Rsa(_) => alg.starts_with("RS") || alg.starts_with("PS"),
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
            Material::P256(sk) => {
                let sig: p256::ecdsa::Signature =
                    sk.sign_prehash(digest).map_err(|_| SignError::Internal)?;
                Ok(sig.to_bytes().to_vec())
            }
            Material::P384(sk) => {
                let sig: p384::ecdsa::Signature =
                    sk.sign_prehash(digest).map_err(|_| SignError::Internal)?;
                Ok(sig.to_bytes().to_vec())
            }
            Material::Rsa(k) => {
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

/// A Key Vault version id: 32 lowercase hex characters.
pub(super) fn new_version_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Decodes base64url (padding optional), falling back to standard base64, as Azure clients
/// differ in what they send.
pub(super) fn b64_decode_lenient(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::STANDARD_NO_PAD;
    let trimmed = s.trim().trim_end_matches('=');
    URL_SAFE_NO_PAD
        .decode(trimmed)
        .ok()
        .or_else(|| STANDARD_NO_PAD.decode(trimmed).ok())
}

pub(super) fn b64url(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}
