//! Key material conversions: Key Vault JWK → PKIX DER (SubjectPublicKeyInfo), Key Vault's raw
//! `r||s` ECDSA signatures → ASN.1 DER, and the key fingerprint. The structures are tiny and
//! fixed; `crate::der` writes them.

use base64::Engine;

use crate::azure::types::JsonWebKey;
use crate::der::{magnitude, tlv, unsigned_integer, BIT_STRING, NULL, OID, SEQUENCE};
use crate::plugin::proto::keymanager::KeyType;

const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];

/// Decodes base64url with or without padding; standard base64 is accepted too.
pub(crate) fn decode_b64(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let trimmed = s.trim().trim_end_matches('=');
    URL_SAFE_NO_PAD
        .decode(trimmed)
        .or_else(|_| STANDARD_NO_PAD.decode(trimmed))
}

/// The largest RSA public exponent Go's crypto/rsa accepts.
const MAX_RSA_EXPONENT: u64 = (1 << 31) - 1;

/// A public key taken from a Key Vault JWK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedKey {
    pub key_type: KeyType,
    pub pkix: Vec<u8>,
}

/// Why a JWK cannot be served; `Display` names what is unsupported. Values from Key Vault
/// are shortened and cleaned for messages (`shown`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum JwkError {
    #[error("invalid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("unsupported RSA key size: {0} bits")]
    RsaSize(usize),
    #[error("unsupported RSA exponent: {0} (must be odd, 3 to 2^31-1)")]
    RsaExponent(u64),
    #[error("unsupported EC curve: {0}")]
    Curve(String),
    #[error("EC public key is not a point on {0}")]
    NotOnCurve(String),
    #[error("unsupported key type: {0}")]
    KeyType(String),
    /// A missing, malformed or foreign member (the text says which).
    #[error("{0}")]
    Invalid(&'static str),
}

use JwkError::Invalid;

/// The decoded bytes of a JWK member, `Invalid(missing)` when it is absent.
fn member(value: &Option<String>, missing: &'static str) -> Result<Vec<u8>, JwkError> {
    Ok(decode_b64(value.as_deref().ok_or(Invalid(missing))?)?)
}

/// SubjectPublicKeyInfo DER: the AlgorithmIdentifier holding `alg`, the key as a BIT STRING.
fn spki(alg: &[Vec<u8>], key: &[u8]) -> Vec<u8> {
    let bits = [&[0u8][..], key].concat();
    tlv(
        SEQUENCE,
        &[tlv(SEQUENCE, &alg.concat()), tlv(BIT_STRING, &bits)].concat(),
    )
}

/// The SPIRE key type of a JWK: RSA with a modulus of exactly 2048 or 4096 bits, EC P-256 /
/// P-384 by curve; `-HSM` variants (Managed HSM) are accepted. The key must be usable as what
/// it claims to be: an odd modulus and an odd exponent between 3 and 2^31-1 (Go's crypto/rsa,
/// which SPIRE verifies with, refuses larger ones), EC coordinates of the curve's size on the
/// curve, and no members of the other family (an RSA key with `crv`, an EC key with `n`).
/// Errors name what is unsupported.
pub(crate) fn parse_jwk(jwk: &JsonWebKey) -> Result<ParsedKey, JwkError> {
    let kty = jwk.kty.as_deref().ok_or(Invalid("key type is missing"))?;
    match kty {
        "RSA" | "RSA-HSM" => {
            let n = member(&jwk.n, "RSA key without modulus (n)")?;
            let e = member(&jwk.e, "RSA key without exponent (e)")?;
            let n_bytes = magnitude(&n);
            let bits = n_bytes
                .first()
                .map_or(0, |top| n_bytes.len() * 8 - top.leading_zeros() as usize);
            let key_type = match bits {
                2048 => KeyType::Rsa2048,
                4096 => KeyType::Rsa4096,
                other => return Err(JwkError::RsaSize(other)),
            };
            if n_bytes.last().is_some_and(|b| b & 1 == 0) {
                return Err(Invalid("RSA modulus is even"));
            }
            let e = magnitude(&e);
            if e.is_empty() {
                return Err(Invalid("RSA key with a zero exponent"));
            }
            if e.len() > 4 {
                return Err(Invalid("unsupported RSA exponent: larger than 2^31-1"));
            }
            let exponent = e.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b));
            if exponent < 3 || exponent % 2 == 0 || exponent > MAX_RSA_EXPONENT {
                return Err(JwkError::RsaExponent(exponent));
            }
            if jwk.crv.is_some() || jwk.x.is_some() || jwk.y.is_some() {
                return Err(Invalid("RSA key with EC members (crv, x or y)"));
            }
            let rsa_key = [unsigned_integer(n_bytes), unsigned_integer(e)].concat();
            let alg = [tlv(OID, OID_RSA_ENCRYPTION), tlv(NULL, &[])];
            Ok(ParsedKey {
                key_type,
                pkix: spki(&alg, &tlv(SEQUENCE, &rsa_key)),
            })
        }
        "EC" | "EC-HSM" => {
            let crv = jwk
                .crv
                .as_deref()
                .ok_or(Invalid("EC key without curve (crv)"))?;
            let (key_type, size, oid) = match crv {
                "P-256" => (KeyType::EcP256, 32, OID_P256),
                "P-384" => (KeyType::EcP384, 48, OID_P384),
                other => return Err(JwkError::Curve(shown(other))),
            };
            let x = fixed_width(&member(&jwk.x, "EC key without x")?, size)
                .ok_or(Invalid("EC x coordinate has the wrong length"))?;
            let y = fixed_width(&member(&jwk.y, "EC key without y")?, size)
                .ok_or(Invalid("EC y coordinate has the wrong length"))?;
            let point = [&[0x04][..], &x, &y].concat();
            let on_curve = match key_type {
                KeyType::EcP256 => p256::PublicKey::from_sec1_bytes(&point).is_ok(),
                _ => p384::PublicKey::from_sec1_bytes(&point).is_ok(),
            };
            if !on_curve {
                return Err(JwkError::NotOnCurve(crv.to_string()));
            }
            if jwk.n.is_some() || jwk.e.is_some() {
                return Err(Invalid("EC key with RSA members (n or e)"));
            }
            Ok(ParsedKey {
                key_type,
                pkix: spki(&[tlv(OID, OID_EC_PUBLIC_KEY), tlv(OID, oid)], &point),
            })
        }
        other => Err(JwkError::KeyType(shown(other))),
    }
}

/// A value from Key Vault for an error message: at most 32 characters, control characters
/// replaced, so a hostile or broken response cannot flood logs or break lines.
fn shown(v: &str) -> String {
    let mut out: String = v
        .chars()
        .take(32)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if v.chars().nth(32).is_some() {
        out.push('…');
    }
    out
}

/// Left-pads (or strips leading zeros from) a big-endian coordinate to exactly `size` bytes.
fn fixed_width(b: &[u8], size: usize) -> Option<Vec<u8>> {
    let s = magnitude(b);
    if s.len() > size {
        return None;
    }
    let mut v = vec![0u8; size - s.len()];
    v.extend_from_slice(s);
    Some(v)
}

/// Why Key Vault's signature cannot be handed to SPIRE.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SignatureError {
    /// An EC signature of the wrong length, or with a zero `r` or `s`.
    #[error("{MALFORMED_SIGNATURE}")]
    Malformed,
    #[error("malformed signature response: RSA signature is {got} bytes, expected {want}")]
    RsaLength { got: usize, want: usize },
    #[error("key type is required")]
    NoKeyType,
}

/// The message SPIRE's reference plugin returns for a malformed EC signature.
pub const MALFORMED_SIGNATURE: &str = "failed to convert Key Vault signature to ASN.1/DER format: rpc error: code = Internal desc = malformed signature response";

/// Converts Key Vault's signature into what SPIRE's Go signers expect: ASN.1 DER
/// `SEQUENCE { r, s }` for ECDSA (from raw `r||s`), the raw bytes for RSA. Lengths are checked.
pub(crate) fn signature_to_spire(key_type: KeyType, raw: &[u8]) -> Result<Vec<u8>, SignatureError> {
    let (rsa, want) = match key_type {
        KeyType::EcP256 => (false, 64),
        KeyType::EcP384 => (false, 96),
        KeyType::Rsa2048 => (true, 256),
        KeyType::Rsa4096 => (true, 512),
        KeyType::UnspecifiedKeyType => return Err(SignatureError::NoKeyType),
    };
    if rsa && raw.len() != want {
        let got = raw.len();
        return Err(SignatureError::RsaLength { got, want });
    }
    if rsa {
        return Ok(raw.to_vec());
    }
    if raw.len() != want {
        return Err(SignatureError::Malformed);
    }
    let (r, s) = raw.split_at(want / 2);
    if magnitude(r).is_empty() || magnitude(s).is_empty() {
        return Err(SignatureError::Malformed);
    }
    Ok(tlv(
        SEQUENCE,
        &[unsigned_integer(r), unsigned_integer(s)].concat(),
    ))
}

/// Lowercase hex SHA-256 of the PKIX DER, the fingerprint convention of every SPIRE built-in.
pub(crate) fn fingerprint(pkix: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, pkix);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use rsa::traits::PublicKeyParts;

    fn b64(b: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(b)
    }

    #[test]
    fn ec_p256_jwk_to_pkix_matches_reference_encoding() {
        let sk = p256::SecretKey::from_slice(&[7u8; 32]).unwrap();
        let pt = sk.public_key().to_encoded_point(false);
        let jwk = JsonWebKey {
            kty: Some("EC-HSM".into()),
            crv: Some("P-256".into()),
            x: Some(b64(pt.x().unwrap())),
            y: Some(b64(pt.y().unwrap())),
            ..Default::default()
        };
        let parsed = parse_jwk(&jwk).unwrap();
        assert_eq!(parsed.key_type, KeyType::EcP256);
        use p256::pkcs8::EncodePublicKey;
        let want = sk.public_key().to_public_key_der().unwrap();
        assert_eq!(parsed.pkix, want.as_bytes());
    }

    #[test]
    fn ec_p384_with_leading_zero_padding() {
        let sk = p384::SecretKey::from_slice(&[9u8; 48]).unwrap();
        let pt = sk.public_key().to_encoded_point(false);
        let mut x = vec![0u8];
        x.extend_from_slice(pt.x().unwrap());
        let jwk = JsonWebKey {
            kty: Some("EC".into()),
            crv: Some("P-384".into()),
            x: Some(b64(&x)),
            y: Some(format!("{}==", b64(pt.y().unwrap()))),
            ..Default::default()
        };
        let parsed = parse_jwk(&jwk).unwrap();
        use p384::pkcs8::EncodePublicKey;
        assert_eq!(
            parsed.pkix,
            sk.public_key().to_public_key_der().unwrap().as_bytes()
        );
    }

    #[test]
    fn ec_point_off_curve_is_rejected() {
        let jwk = JsonWebKey {
            kty: Some("EC".into()),
            crv: Some("P-256".into()),
            x: Some(b64(&[1u8; 32])),
            y: Some(b64(&[2u8; 32])),
            ..Default::default()
        };
        assert!(parse_jwk(&jwk)
            .unwrap_err()
            .to_string()
            .contains("not a point"));
    }

    #[test]
    fn rsa_jwk_to_pkix_matches_reference_encoding() {
        let mut rng = rand_core_rng();
        let sk = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
        let pk = sk.to_public_key();
        let jwk = JsonWebKey {
            kty: Some("RSA-HSM".into()),
            n: Some(b64(&pk.n().to_bytes_be())),
            e: Some(b64(&pk.e().to_bytes_be())),
            ..Default::default()
        };
        let parsed = parse_jwk(&jwk).unwrap();
        assert_eq!(parsed.key_type, KeyType::Rsa2048);
        use rsa::pkcs8::EncodePublicKey;
        assert_eq!(parsed.pkix, pk.to_public_key_der().unwrap().as_bytes());
    }

    fn rand_core_rng() -> impl rsa::rand_core::CryptoRngCore {
        rsa::rand_core::OsRng
    }

    #[test]
    fn unsupported_keys() {
        let mut jwk = JsonWebKey {
            kty: Some("EC".into()),
            crv: Some("P-521".into()),
            ..Default::default()
        };
        assert!(parse_jwk(&jwk)
            .unwrap_err()
            .to_string()
            .contains("unsupported EC curve"));
        jwk.kty = None;
        assert_eq!(
            parse_jwk(&jwk).unwrap_err().to_string(),
            "key type is missing"
        );
        jwk.kty = Some("RSA".into());
        jwk.n = Some(b64(&[0xffu8; 128]));
        jwk.e = Some("AQAB".into());
        assert!(parse_jwk(&jwk)
            .unwrap_err()
            .to_string()
            .contains("1024 bits"));
        jwk.kty = Some("oct".into());
        assert!(parse_jwk(&jwk)
            .unwrap_err()
            .to_string()
            .contains("unsupported key type"));
    }

    /// A well-formed 2048-bit RSA JWK (top bit set, odd modulus, exponent 65537).
    fn rsa_jwk() -> JsonWebKey {
        let mut n = vec![0xC5u8; 256];
        n[255] |= 1;
        JsonWebKey {
            kty: Some("RSA".into()),
            n: Some(b64(&n)),
            e: Some("AQAB".into()),
            ..Default::default()
        }
    }

    #[test]
    fn rsa_keys_are_exactly_2048_or_4096_bits_with_a_sane_exponent() {
        assert_eq!(parse_jwk(&rsa_jwk()).unwrap().key_type, KeyType::Rsa2048);
        let with_n = |n: &[u8]| JsonWebKey {
            n: Some(b64(n)),
            ..rsa_jwk()
        };
        let with_e = |e: &[u8]| JsonWebKey {
            e: Some(b64(e)),
            ..rsa_jwk()
        };
        let mut n4096 = vec![0x80u8; 512];
        n4096[511] = 1;
        assert_eq!(
            parse_jwk(&with_n(&n4096)).unwrap().key_type,
            KeyType::Rsa4096
        );
        // 256 bytes, but the top bit is clear: 2047 bits (a leading zero byte is fine).
        let mut n = vec![0x7Fu8; 256];
        n[255] = 1;
        assert_eq!(
            parse_jwk(&with_n(&n)).unwrap_err().to_string(),
            "unsupported RSA key size: 2047 bits"
        );
        n[0] = 0x80;
        let padded = [vec![0u8], n.clone()].concat();
        assert_eq!(
            parse_jwk(&with_n(&padded)).unwrap().key_type,
            KeyType::Rsa2048
        );
        n[255] = 2;
        assert_eq!(
            parse_jwk(&with_n(&n)).unwrap_err().to_string(),
            "RSA modulus is even"
        );
        for (e, want) in [
            (&[0u8][..], "RSA key with a zero exponent"),
            (
                &[1],
                "unsupported RSA exponent: 1 (must be odd, 3 to 2^31-1)",
            ),
            (
                &[2],
                "unsupported RSA exponent: 2 (must be odd, 3 to 2^31-1)",
            ),
            (
                &[1, 0, 0],
                "unsupported RSA exponent: 65536 (must be odd, 3 to 2^31-1)",
            ),
            (
                &[0x80, 0, 0, 1],
                "unsupported RSA exponent: 2147483649 (must be odd, 3 to 2^31-1)",
            ),
            (
                &[1, 0, 0, 0, 1],
                "unsupported RSA exponent: larger than 2^31-1",
            ),
        ] {
            assert_eq!(
                parse_jwk(&with_e(e)).unwrap_err().to_string(),
                want,
                "{e:?}"
            );
        }
        for e in [&[3u8][..], &[0, 1, 0, 1], &[0x7f, 0xff, 0xff, 0xff]] {
            assert!(parse_jwk(&with_e(e)).is_ok(), "{e:?}");
        }
    }

    #[test]
    fn members_of_the_other_key_family_are_refused() {
        let edits: [fn(&mut JsonWebKey); 3] = [
            |k| k.crv = Some("P-256".into()),
            |k| k.x = Some("AQAB".into()),
            |k| k.y = Some("AQAB".into()),
        ];
        for edit in edits {
            let mut jwk = rsa_jwk();
            edit(&mut jwk);
            assert_eq!(
                parse_jwk(&jwk).unwrap_err().to_string(),
                "RSA key with EC members (crv, x or y)"
            );
        }
        let sk = p256::SecretKey::from_slice(&[7u8; 32]).unwrap();
        let pt = sk.public_key().to_encoded_point(false);
        let ec = JsonWebKey {
            kty: Some("EC".into()),
            crv: Some("P-256".into()),
            x: Some(b64(pt.x().unwrap())),
            y: Some(b64(pt.y().unwrap())),
            ..Default::default()
        };
        assert!(parse_jwk(&ec).is_ok());
        let edits: [fn(&mut JsonWebKey); 2] =
            [|k| k.n = Some("AQAB".into()), |k| k.e = Some("AQAB".into())];
        for edit in edits {
            let mut jwk = ec.clone();
            edit(&mut jwk);
            assert_eq!(
                parse_jwk(&jwk).unwrap_err().to_string(),
                "EC key with RSA members (n or e)"
            );
        }
    }

    #[test]
    fn ecdsa_raw_to_der() {
        let mut raw = vec![0u8; 64];
        raw[0] = 0x80; // r needs a leading zero in DER
        raw[31] = 1;
        raw[63] = 5; // s = 5 (minimal)
        let der = signature_to_spire(KeyType::EcP256, &raw).unwrap();
        let sig = p256::ecdsa::Signature::from_der(&der).unwrap();
        assert_eq!(sig.to_bytes().to_vec(), raw);
        assert_eq!(
            signature_to_spire(KeyType::EcP256, &raw[..63])
                .unwrap_err()
                .to_string(),
            MALFORMED_SIGNATURE
        );
        assert!(signature_to_spire(KeyType::EcP384, &raw).is_err());
        assert!(signature_to_spire(KeyType::Rsa2048, &[1u8; 255]).is_err());
        assert_eq!(
            signature_to_spire(KeyType::Rsa2048, &[1u8; 256])
                .unwrap()
                .len(),
            256
        );
    }

    #[test]
    fn fingerprint_is_lowercase_sha256_hex() {
        assert_eq!(
            fingerprint(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn base64_tolerance() {
        assert_eq!(decode_b64("AQAB").unwrap(), vec![1, 0, 1]);
        assert_eq!(decode_b64("-_8=").unwrap(), vec![0xfb, 0xff]);
        assert_eq!(decode_b64("+/8").unwrap(), vec![0xfb, 0xff]);
        assert!(decode_b64("***").is_err());
    }
}
