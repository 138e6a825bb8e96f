//! Local verification of Key Vault's signatures against the public key SPIRE was given, so a
//! wrong key, a corrupted answer or a substituted one becomes an error instead of a signature
//! SPIRE would publish. SignData carries a digest, not the message, so every check is on the
//! prehashed digest: ECDSA with the p256/p384 crates' arithmetic and fixed-base tables
//! (`comb`), RSA (PKCS#1 v1.5 and PSS) with `rsa`.

mod comb;

use std::sync::{Arc, OnceLock};

use p256::elliptic_curve::group::Group as _;
use p256::pkcs8::DecodePublicKey;
use p256::NistP256;
use p384::NistP384;
use rsa::sha2::{Sha256, Sha384, Sha512};
use rsa::{Pkcs1v15Sign, Pss, RsaPublicKey};

use crate::keys::algorithm::key_type_name;
use crate::plugin::proto::keymanager::KeyType;

/// A public key parsed once (per cache entry), ready to check signatures.
#[derive(Debug, Clone)]
pub struct SignatureVerifier {
    key: Key,
}

#[derive(Debug, Clone)]
enum Key {
    P256(Arc<EcKey<NistP256>>),
    P384(Arc<EcKey<NistP384>>),
    Rsa(RsaPublicKey),
}

/// An EC public key and its table (`comb`), built on the first check, so a key that never
/// signs (or a Configure that caches many) never pays for it.
struct EcKey<C: p256::elliptic_curve::CurveArithmetic> {
    point: C::AffinePoint,
    table: OnceLock<comb::Table<C>>,
}

impl<C: p256::elliptic_curve::CurveArithmetic> EcKey<C> {
    fn new(point: C::AffinePoint) -> Arc<Self> {
        Arc::new(EcKey {
            point,
            table: OnceLock::new(),
        })
    }

    fn table(&self) -> &comb::Table<C> {
        self.table
            .get_or_init(|| comb::Table::new(self.point.into()))
    }
}

impl<C: p256::elliptic_curve::CurveArithmetic> std::fmt::Debug for EcKey<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcKey")
            .field("table_built", &self.table.get().is_some())
            .finish()
    }
}

/// The generators' tables, built on first use and shared by every key of the curve.
fn p256_generator() -> &'static comb::Table<NistP256> {
    static TABLE: OnceLock<comb::Table<NistP256>> = OnceLock::new();
    TABLE.get_or_init(|| comb::Table::new(p256::ProjectivePoint::generator()))
}

fn p384_generator() -> &'static comb::Table<NistP384> {
    static TABLE: OnceLock<comb::Table<NistP384>> = OnceLock::new();
    TABLE.get_or_init(|| comb::Table::new(p384::ProjectivePoint::generator()))
}

/// Why a signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// The signature does not verify with this key: another key made it, or it was damaged.
    Mismatch,
    /// `alg` is not an algorithm of this key (a caller bug; `algorithm::select` prevents it).
    WrongAlgorithm(String),
}

/// Why a public key cannot back a verifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKeyError {
    NoKeyType,
    /// Not a key of `key_type` (another type or size, or bad DER); `detail` says what.
    Invalid {
        key_type: KeyType,
        detail: String,
    },
}

impl std::fmt::Display for PublicKeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublicKeyError::NoKeyType => f.write_str("key type is required"),
            PublicKeyError::Invalid { key_type, detail } => {
                let name = key_type_name(*key_type);
                write!(f, "public key is not a valid {name} key: {detail}")
            }
        }
    }
}

impl std::error::Error for PublicKeyError {}

impl SignatureVerifier {
    /// Parses the SubjectPublicKeyInfo DER that SPIRE receives for a key of `key_type`; a key
    /// of another type or size is refused.
    pub fn from_pkix(key_type: KeyType, pkix: &[u8]) -> Result<Self, PublicKeyError> {
        let bad = |e: &dyn std::fmt::Display| PublicKeyError::Invalid {
            key_type,
            detail: e.to_string(),
        };
        let key = match key_type {
            KeyType::EcP256 => {
                let k =
                    p256::ecdsa::VerifyingKey::from_public_key_der(pkix).map_err(|e| bad(&e))?;
                Key::P256(EcKey::new(*k.as_affine()))
            }
            KeyType::EcP384 => {
                let k =
                    p384::ecdsa::VerifyingKey::from_public_key_der(pkix).map_err(|e| bad(&e))?;
                Key::P384(EcKey::new(*k.as_affine()))
            }
            KeyType::Rsa2048 | KeyType::Rsa4096 => {
                let k = RsaPublicKey::from_public_key_der(pkix).map_err(|e| bad(&e))?;
                let want = if key_type == KeyType::Rsa2048 {
                    2048
                } else {
                    4096
                };
                use rsa::traits::PublicKeyParts;
                if k.n().bits() != want {
                    return Err(bad(&format!("modulus of {} bits", k.n().bits())));
                }
                Key::Rsa(k)
            }
            KeyType::UnspecifiedKeyType => return Err(PublicKeyError::NoKeyType),
        };
        Ok(SignatureVerifier { key })
    }

    /// Checks `signature` in the format SPIRE receives (ASN.1 DER for ECDSA, raw bytes for
    /// RSA) over `digest`, for the Key Vault algorithm `alg` it was requested with. PSS is
    /// checked with Key Vault's salt length, the hash length (the request's salt length is
    /// not sent to Key Vault, see `algorithm::select`).
    pub fn verify(&self, alg: &str, digest: &[u8], signature: &[u8]) -> Result<(), VerifyError> {
        let ok = match (&self.key, alg) {
            (Key::P256(k), "ES256") => p256::ecdsa::Signature::from_der(signature).is_ok_and(|s| {
                let (r, s) = s.split_scalars();
                comb::verify_prehash(p256_generator(), k.table(), digest, &r, &s)
            }),
            (Key::P384(k), "ES384") => p384::ecdsa::Signature::from_der(signature).is_ok_and(|s| {
                let (r, s) = s.split_scalars();
                comb::verify_prehash(p384_generator(), k.table(), digest, &r, &s)
            }),
            (Key::Rsa(k), _) => {
                let r = match alg {
                    "RS256" => k.verify(Pkcs1v15Sign::new::<Sha256>(), digest, signature),
                    "RS384" => k.verify(Pkcs1v15Sign::new::<Sha384>(), digest, signature),
                    "RS512" => k.verify(Pkcs1v15Sign::new::<Sha512>(), digest, signature),
                    "PS256" => k.verify(Pss::new_with_salt::<Sha256>(32), digest, signature),
                    "PS384" => k.verify(Pss::new_with_salt::<Sha384>(48), digest, signature),
                    "PS512" => k.verify(Pss::new_with_salt::<Sha512>(64), digest, signature),
                    _ => return Err(self.wrong_algorithm(alg)),
                };
                r.is_ok()
            }
            _ => return Err(self.wrong_algorithm(alg)),
        };
        ok.then_some(()).ok_or(VerifyError::Mismatch)
    }

    fn wrong_algorithm(&self, alg: &str) -> VerifyError {
        let kind = match self.key {
            Key::P256(_) => "an EC P-256",
            Key::P384(_) => "an EC P-384",
            Key::Rsa(_) => "an RSA",
        };
        // `alg` comes from `algorithm::select`, never from Key Vault, so it is short and clean.
        VerifyError::WrongAlgorithm(format!(
            "algorithm {alg} cannot be verified with {kind} key"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::convert::signature_to_spire;
    use p256::pkcs8::EncodePublicKey;
    use rsa::sha2::Digest;

    fn p256_key(seed: u8) -> p256::ecdsa::SigningKey {
        p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap()
    }

    fn p384_key(seed: u8) -> p384::ecdsa::SigningKey {
        p384::ecdsa::SigningKey::from_slice(&[seed; 48]).unwrap()
    }

    fn rsa_key() -> rsa::RsaPrivateKey {
        rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap()
    }

    fn der(k: &impl EncodePublicKey) -> Vec<u8> {
        k.to_public_key_der().unwrap().as_bytes().to_vec()
    }

    /// Key Vault's answer for `alg` by `signer`, in the format SPIRE receives.
    enum Signer<'a> {
        P256(&'a p256::ecdsa::SigningKey),
        P384(&'a p384::ecdsa::SigningKey),
        Rsa(&'a rsa::RsaPrivateKey),
    }

    fn sign(signer: Signer<'_>, alg: &str, digest: &[u8]) -> Vec<u8> {
        use p256::ecdsa::signature::hazmat::PrehashSigner;
        let mut rng = rsa::rand_core::OsRng;
        match signer {
            Signer::P256(k) => {
                let s: p256::ecdsa::Signature = k.sign_prehash(digest).unwrap();
                signature_to_spire(KeyType::EcP256, &s.to_bytes()).unwrap()
            }
            Signer::P384(k) => {
                let s: p384::ecdsa::Signature = k.sign_prehash(digest).unwrap();
                signature_to_spire(KeyType::EcP384, &s.to_bytes()).unwrap()
            }
            Signer::Rsa(k) => match alg {
                "RS256" => k.sign(Pkcs1v15Sign::new::<Sha256>(), digest),
                "RS384" => k.sign(Pkcs1v15Sign::new::<Sha384>(), digest),
                "RS512" => k.sign(Pkcs1v15Sign::new::<Sha512>(), digest),
                "PS256" => k.sign_with_rng(&mut rng, Pss::new_with_salt::<Sha256>(32), digest),
                "PS384" => k.sign_with_rng(&mut rng, Pss::new_with_salt::<Sha384>(48), digest),
                _ => k.sign_with_rng(&mut rng, Pss::new_with_salt::<Sha512>(64), digest),
            }
            .unwrap(),
        }
    }

    fn digest_for(alg: &str) -> Vec<u8> {
        match &alg[2..] {
            "256" => Sha256::digest(b"payload").to_vec(),
            "384" => Sha384::digest(b"payload").to_vec(),
            _ => Sha512::digest(b"payload").to_vec(),
        }
    }

    #[test]
    fn every_algorithm_verifies_and_a_flipped_bit_does_not() {
        let (ec256, ec384, rsa) = (p256_key(1), p384_key(2), rsa_key());
        let rsa_pkix = der(&rsa.to_public_key());
        let cases: Vec<(KeyType, Vec<u8>, &str)> = vec![
            (KeyType::EcP256, der(ec256.verifying_key()), "ES256"),
            (KeyType::EcP384, der(ec384.verifying_key()), "ES384"),
            (KeyType::Rsa2048, rsa_pkix.clone(), "RS256"),
            (KeyType::Rsa2048, rsa_pkix.clone(), "RS384"),
            (KeyType::Rsa2048, rsa_pkix.clone(), "RS512"),
            (KeyType::Rsa2048, rsa_pkix.clone(), "PS256"),
            (KeyType::Rsa2048, rsa_pkix.clone(), "PS384"),
            (KeyType::Rsa2048, rsa_pkix, "PS512"),
        ];
        for (kt, pkix, alg) in cases {
            let v = SignatureVerifier::from_pkix(kt, &pkix).unwrap();
            let signer = match kt {
                KeyType::EcP256 => Signer::P256(&ec256),
                KeyType::EcP384 => Signer::P384(&ec384),
                _ => Signer::Rsa(&rsa),
            };
            let d = digest_for(alg);
            let mut sig = sign(signer, alg, &d);
            assert_eq!(v.verify(alg, &d, &sig), Ok(()), "{alg}");
            // Another digest, then a corrupted signature.
            let mut other = d.clone();
            other[0] ^= 0x80;
            assert_eq!(
                v.verify(alg, &other, &sig),
                Err(VerifyError::Mismatch),
                "{alg}"
            );
            let last = sig.len() - 1;
            sig[last] ^= 1;
            assert_eq!(v.verify(alg, &d, &sig), Err(VerifyError::Mismatch), "{alg}");
        }
    }

    /// The tables (`comb`) accept exactly what the p256/p384 crates' own prehash verification
    /// accepts: valid signatures over digests of every accepted length (shorter ones are
    /// padded, longer ones truncated), and no signature over another digest or by another key.
    #[test]
    fn tables_agree_with_the_crates_verification() {
        use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
        let digest = |seed: u8, len: usize| -> Vec<u8> {
            (0..len)
                .map(|i| Sha512::digest([seed, i as u8])[i % 64])
                .collect()
        };
        for seed in 1..=24u8 {
            let len = [15, 16, 20, 32, 33, 48, 64][usize::from(seed) % 7];
            let d = digest(seed, len);
            let other = digest(seed.wrapping_add(100), len);

            let (sk, foreign) = (p256_key(seed), p256_key(seed.wrapping_add(50)));
            let v =
                SignatureVerifier::from_pkix(KeyType::EcP256, &der(sk.verifying_key())).unwrap();
            for (signer, over) in [(&sk, &d), (&sk, &other), (&foreign, &d)] {
                let Ok(sig) = PrehashSigner::<p256::ecdsa::Signature>::sign_prehash(signer, over)
                else {
                    // Too short a digest to sign: it must not verify either.
                    assert!(v.verify("ES256", &d, &[0x30, 0]).is_err());
                    continue;
                };
                let theirs = sk.verifying_key().verify_prehash(&d, &sig).is_ok();
                let ours = v.verify("ES256", &d, sig.to_der().as_bytes()).is_ok();
                assert_eq!(ours, theirs, "P-256 seed {seed} digest length {len}");
                assert_eq!(ours, std::ptr::eq(signer, &sk) && std::ptr::eq(over, &d));
            }

            let (sk, foreign) = (p384_key(seed), p384_key(seed.wrapping_add(50)));
            let v =
                SignatureVerifier::from_pkix(KeyType::EcP384, &der(sk.verifying_key())).unwrap();
            for (signer, over) in [(&sk, &d), (&sk, &other), (&foreign, &d)] {
                let Ok(sig) = PrehashSigner::<p384::ecdsa::Signature>::sign_prehash(signer, over)
                else {
                    assert!(v.verify("ES384", &d, &[0x30, 0]).is_err());
                    continue;
                };
                let theirs = sk.verifying_key().verify_prehash(&d, &sig).is_ok();
                let ours = v.verify("ES384", &d, sig.to_der().as_bytes()).is_ok();
                assert_eq!(ours, theirs, "P-384 seed {seed} digest length {len}");
                assert_eq!(ours, std::ptr::eq(signer, &sk) && std::ptr::eq(over, &d));
            }
        }
    }

    #[test]
    fn another_keys_signature_is_refused() {
        let d = digest_for("ES256");
        let v = SignatureVerifier::from_pkix(KeyType::EcP256, &der(p256_key(1).verifying_key()))
            .unwrap();
        let foreign = sign(Signer::P256(&p256_key(9)), "ES256", &d);
        assert_eq!(v.verify("ES256", &d, &foreign), Err(VerifyError::Mismatch));

        let d = digest_for("ES384");
        let v = SignatureVerifier::from_pkix(KeyType::EcP384, &der(p384_key(2).verifying_key()))
            .unwrap();
        let foreign = sign(Signer::P384(&p384_key(9)), "ES384", &d);
        assert_eq!(v.verify("ES384", &d, &foreign), Err(VerifyError::Mismatch));

        let (ours, theirs) = (rsa_key(), rsa_key());
        let v =
            SignatureVerifier::from_pkix(KeyType::Rsa2048, &der(&ours.to_public_key())).unwrap();
        for alg in ["RS256", "PS256"] {
            let d = digest_for(alg);
            let foreign = sign(Signer::Rsa(&theirs), alg, &d);
            assert_eq!(
                v.verify(alg, &d, &foreign),
                Err(VerifyError::Mismatch),
                "{alg}"
            );
        }
    }

    #[test]
    fn only_the_format_and_scheme_key_vault_uses_verify() {
        let ec = p256_key(1);
        let v = SignatureVerifier::from_pkix(KeyType::EcP256, &der(ec.verifying_key())).unwrap();
        let d = digest_for("ES256");
        // Key Vault's raw r||s is converted to DER before SPIRE (and the check) sees it.
        use p256::ecdsa::signature::hazmat::PrehashSigner;
        let raw: p256::ecdsa::Signature = ec.sign_prehash(&d).unwrap();
        assert_eq!(
            v.verify("ES256", &d, &raw.to_bytes()),
            Err(VerifyError::Mismatch)
        );

        let rsa = rsa_key();
        let v = SignatureVerifier::from_pkix(KeyType::Rsa2048, &der(&rsa.to_public_key())).unwrap();
        let d = digest_for("PS256");
        // PKCS#1 v1.5 is not PSS, and PSS is checked with the hash-length salt Key Vault uses.
        let pkcs1 = sign(Signer::Rsa(&rsa), "RS256", &d);
        assert_eq!(v.verify("PS256", &d, &pkcs1), Err(VerifyError::Mismatch));
        let short_salt = rsa
            .sign_with_rng(
                &mut rsa::rand_core::OsRng,
                Pss::new_with_salt::<Sha256>(20),
                &d,
            )
            .unwrap();
        assert_eq!(
            v.verify("PS256", &d, &short_salt),
            Err(VerifyError::Mismatch)
        );
        // An algorithm of another key type is a caller bug, reported as such.
        assert!(matches!(
            v.verify("ES256", &d, &pkcs1),
            Err(VerifyError::WrongAlgorithm(m)) if m == "algorithm ES256 cannot be verified with an RSA key"
        ));
    }

    #[test]
    fn a_key_of_another_type_or_size_is_refused() {
        let p384 = der(p384_key(2).verifying_key());
        let e = SignatureVerifier::from_pkix(KeyType::EcP256, &p384)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("public key is not a valid EC_P256 key"),
            "{e}"
        );
        let rsa = der(&rsa_key().to_public_key());
        let e = SignatureVerifier::from_pkix(KeyType::Rsa4096, &rsa)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "public key is not a valid RSA_4096 key: modulus of 2048 bits"
        );
        assert!(SignatureVerifier::from_pkix(KeyType::EcP256, &rsa).is_err());
        assert!(SignatureVerifier::from_pkix(KeyType::Rsa2048, &p384).is_err());
        assert!(SignatureVerifier::from_pkix(KeyType::EcP256, &[]).is_err());
        assert!(SignatureVerifier::from_pkix(KeyType::UnspecifiedKeyType, &rsa).is_err());
    }
}
