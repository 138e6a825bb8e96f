//! Checking what spire-server hands out: public keys as comparable values (from a Key Vault
//! JWK or a SPIFFE bundle JWK), JWT-SVID signatures against the bundle's JWKS, and X509-SVIDs
//! against the bundle with `openssl verify`.

use std::path::Path;
use std::process::Command;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;

/// A public key reduced to its parameters, so a Key Vault JWK and a SPIRE bundle JWK compare.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PubKey {
    Ec { crv: String, x: Vec<u8>, y: Vec<u8> },
    Rsa { n: Vec<u8>, e: Vec<u8> },
}

fn b64(v: &Value, field: &str) -> Vec<u8> {
    let s = v[field]
        .as_str()
        .unwrap_or_else(|| panic!("JWK without {field}: {v}"));
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .unwrap_or_else(|e| panic!("JWK {field} is not base64url ({e}): {v}"))
}

fn strip_zeros(mut b: Vec<u8>) -> Vec<u8> {
    let lead = b.iter().take_while(|x| **x == 0).count();
    b.drain(..lead);
    b
}

/// Uncompressed SEC1 point `04 || x || y`.
fn sec1(x: &[u8], y: &[u8]) -> Vec<u8> {
    let mut p = vec![4u8];
    p.extend_from_slice(x);
    p.extend_from_slice(y);
    p
}

impl PubKey {
    /// From a JWK: Key Vault (`kty` EC / EC-HSM / RSA / RSA-HSM) or SPIFFE bundle.
    pub fn from_jwk(jwk: &Value) -> PubKey {
        let kty = jwk["kty"].as_str().unwrap_or_default();
        if kty.starts_with("EC") {
            PubKey::Ec {
                crv: jwk["crv"].as_str().unwrap_or_default().to_string(),
                x: b64(jwk, "x"),
                y: b64(jwk, "y"),
            }
        } else if kty.starts_with("RSA") {
            PubKey::Rsa {
                n: strip_zeros(b64(jwk, "n")),
                e: strip_zeros(b64(jwk, "e")),
            }
        } else {
            panic!("unexpected JWK kty {kty:?}: {jwk}")
        }
    }

    /// Verifies a JWS signature (`alg` ES256 / ES384 / RS256 / RS384 / RS512 / PS256…).
    pub fn verify_jws(&self, alg: &str, signing_input: &[u8], sig: &[u8]) -> Result<(), String> {
        use p256::ecdsa::signature::Verifier as _;
        match (self, alg) {
            (PubKey::Ec { crv, x, y }, "ES256") if crv == "P-256" => {
                let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1(x, y))
                    .map_err(|e| format!("P-256 key: {e}"))?;
                let sig = p256::ecdsa::Signature::from_slice(sig)
                    .map_err(|e| format!("ES256 signature: {e}"))?;
                key.verify(signing_input, &sig).map_err(|e| e.to_string())
            }
            (PubKey::Ec { crv, x, y }, "ES384") if crv == "P-384" => {
                let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(&sec1(x, y))
                    .map_err(|e| format!("P-384 key: {e}"))?;
                let sig = p384::ecdsa::Signature::from_slice(sig)
                    .map_err(|e| format!("ES384 signature: {e}"))?;
                key.verify(signing_input, &sig).map_err(|e| e.to_string())
            }
            (PubKey::Rsa { n, e }, alg) if alg.starts_with("RS") || alg.starts_with("PS") => {
                use sha2::Digest as _;
                let key = rsa::RsaPublicKey::new(
                    rsa::BigUint::from_bytes_be(n),
                    rsa::BigUint::from_bytes_be(e),
                )
                .map_err(|e| format!("RSA key: {e}"))?;
                use rsa::{Pkcs1v15Sign, Pss};
                use sha2::{Sha256, Sha384, Sha512};
                let res = match alg {
                    "RS256" => key.verify(
                        Pkcs1v15Sign::new::<Sha256>(),
                        &Sha256::digest(signing_input),
                        sig,
                    ),
                    "RS384" => key.verify(
                        Pkcs1v15Sign::new::<Sha384>(),
                        &Sha384::digest(signing_input),
                        sig,
                    ),
                    "RS512" => key.verify(
                        Pkcs1v15Sign::new::<Sha512>(),
                        &Sha512::digest(signing_input),
                        sig,
                    ),
                    "PS256" => {
                        key.verify(Pss::new::<Sha256>(), &Sha256::digest(signing_input), sig)
                    }
                    "PS384" => {
                        key.verify(Pss::new::<Sha384>(), &Sha384::digest(signing_input), sig)
                    }
                    "PS512" => {
                        key.verify(Pss::new::<Sha512>(), &Sha512::digest(signing_input), sig)
                    }
                    other => return Err(format!("unsupported RSA alg {other}")),
                };
                res.map_err(|e| e.to_string())
            }
            (k, alg) => Err(format!("alg {alg} does not fit key {k:?}")),
        }
    }
}

/// A SPIFFE bundle in JWKS form (`spire-server bundle show -format spiffe`).
#[derive(Debug, Clone)]
pub struct Bundle {
    pub json: Value,
}

impl Bundle {
    pub fn parse(text: &str) -> Bundle {
        Bundle {
            json: serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("bundle is not JSON ({e}):\n{text}")),
        }
    }

    fn keys_for(&self, usage: &str) -> Vec<&Value> {
        self.json["keys"]
            .as_array()
            .map(|a| a.iter().filter(|k| k["use"] == usage).collect())
            .unwrap_or_default()
    }

    /// Public keys of the X.509 CAs (`use` = x509-svid).
    pub fn x509_authorities(&self) -> Vec<PubKey> {
        self.keys_for("x509-svid")
            .into_iter()
            .map(PubKey::from_jwk)
            .collect()
    }

    /// JWT signing keys (`use` = jwt-svid) as (kid, key).
    pub fn jwt_authorities(&self) -> Vec<(String, PubKey)> {
        self.keys_for("jwt-svid")
            .into_iter()
            .map(|k| {
                (
                    k["kid"].as_str().unwrap_or_default().to_string(),
                    PubKey::from_jwk(k),
                )
            })
            .collect()
    }
}

/// A JWT split into its parts.
pub struct Jwt {
    pub header: Value,
    pub claims: Value,
    pub signing_input: String,
    pub signature: Vec<u8>,
}

impl Jwt {
    pub fn parse(token: &str) -> Jwt {
        let parts: Vec<&str> = token.trim().split('.').collect();
        assert_eq!(parts.len(), 3, "not a compact JWS: {token}");
        let dec = |s: &str| {
            URL_SAFE_NO_PAD
                .decode(s)
                .unwrap_or_else(|e| panic!("JWT part is not base64url ({e}): {s}"))
        };
        Jwt {
            header: serde_json::from_slice(&dec(parts[0])).expect("JWT header JSON"),
            claims: serde_json::from_slice(&dec(parts[1])).expect("JWT claims JSON"),
            signing_input: format!("{}.{}", parts[0], parts[1]),
            signature: dec(parts[2]),
        }
    }

    pub fn alg(&self) -> &str {
        self.header["alg"].as_str().unwrap_or_default()
    }

    pub fn kid(&self) -> &str {
        self.header["kid"].as_str().unwrap_or_default()
    }

    /// Verifies against the bundle key with the token's `kid`.
    pub fn verify_with_bundle(&self, bundle: &Bundle) -> Result<PubKey, String> {
        let key = bundle
            .jwt_authorities()
            .into_iter()
            .find(|(kid, _)| kid == self.kid())
            .map(|(_, k)| k)
            .ok_or_else(|| format!("no JWT authority with kid {:?} in the bundle", self.kid()))?;
        key.verify_jws(self.alg(), self.signing_input.as_bytes(), &self.signature)?;
        Ok(key)
    }

    /// Verifies with a given key (ignoring `kid`).
    pub fn verify_with(&self, key: &PubKey) -> Result<(), String> {
        key.verify_jws(self.alg(), self.signing_input.as_bytes(), &self.signature)
    }
}

/// `openssl verify -CAfile bundle svid`: the X509-SVID chains to the bundle.
pub fn openssl_verify(bundle_pem: &Path, svid_pem: &Path) -> Result<(), String> {
    let (ok, out, err) = super::run(
        Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(bundle_pem)
            .arg(svid_pem),
    );
    if ok && out.contains(": OK") {
        Ok(())
    } else {
        Err(format!("openssl verify failed:\n{out}\n{err}"))
    }
}

/// The URI SAN of a certificate, through `openssl x509 -ext subjectAltName`.
pub fn openssl_uri_san(cert_pem: &Path) -> String {
    let (ok, out, err) = super::run(
        Command::new("openssl")
            .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
            .arg(cert_pem),
    );
    assert!(ok, "openssl x509 failed: {err}");
    out.split(|c: char| c == ',' || c.is_whitespace())
        .find_map(|t| t.strip_prefix("URI:"))
        .unwrap_or_default()
        .to_string()
}
