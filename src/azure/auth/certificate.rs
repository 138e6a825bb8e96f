//! Client certificate credential (`AZURE_CLIENT_CERTIFICATE_PATH`): a PEM or PKCS#12 file
//! holding the certificate and its RSA private key signs a client-assertion JWT (PS256, header `x5t#S256`
//! = base64url(SHA-256(certificate DER)), `aud` = the token endpoint URL, `iss` = `sub` = client
//! id, random `jti`, valid for 10 minutes). The file is re-read on every token request, so a
//! rotated certificate is picked up.
//!
//! `AZURE_CLIENT_CERTIFICATE_PASSWORD` decrypts a PKCS#12 file or an `ENCRYPTED PRIVATE KEY`
//! (PKCS#8) PEM block (`pkcs12.rs`). OpenSSL's traditional encrypted PEM (`Proc-Type:
//! 4,ENCRYPTED`, MD5-derived keys) is refused with a conversion hint.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use super::entra::request_token;
use super::{AccessToken, Credential, CredentialError};
use crate::azure::http::HttpClient;
use crate::azure::types::AzureError;
use crate::clock::Clock;
use crate::secret::Secret;

const ASSERTION_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// A parsed certificate + RSA key, ready to sign assertions.
pub struct ClientCertificate {
    cert_der: Vec<u8>,
    /// The file's other certificates (its chain), in file order: sent in `x5c` on request.
    others: Vec<Vec<u8>>,
    key: EncodingKey,
}

#[derive(Serialize)]
struct Claims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: String,
    nbf: u64,
    iat: u64,
    exp: u64,
}

impl ClientCertificate {
    /// Parses the file `AZURE_CLIENT_CERTIFICATE_PATH` names: PEM, or else PKCS#12, decrypted
    /// with `password` when one is set.
    pub fn from_file(data: &[u8], password: Option<&str>) -> Result<Self, String> {
        let text_start = &data[..data.len().min(4096)];
        let looks_pem = text_start.windows(11).any(|w| w == b"-----BEGIN ");
        if looks_pem {
            return Self::from_pem(data, password);
        }
        let decoded = super::pkcs12::decode_pfx(data, password.unwrap_or("")).map_err(|e| {
            if password.is_none() && e.contains("wrong AZURE_CLIENT_CERTIFICATE_PASSWORD") {
                "the PKCS#12 file is password-protected: set \
                     AZURE_CLIENT_CERTIFICATE_PASSWORD"
                    .to_string()
            } else {
                format!("not PEM, and not a usable PKCS#12 file: {e}")
            }
        })?;
        let super::pkcs12::Decoded { keys, mut certs } = decoded;
        if keys.is_empty() {
            return Err("the PKCS#12 file holds no private key".into());
        }
        if certs.is_empty() {
            return Err("the PKCS#12 file holds no certificate".into());
        }
        // The client certificate is the one the key belongs to (a file may carry its chain).
        let mut key_error = None;
        for key_der in &keys {
            let (public, key) = match parse_rsa_key("PRIVATE KEY", key_der) {
                Ok(parsed) => parsed,
                Err(e) => {
                    key_error = Some(e);
                    continue;
                }
            };
            if let Some(i) = certs.iter().position(|c| holds_key(c, &public)) {
                let cert_der = certs.remove(i);
                return Ok(ClientCertificate {
                    cert_der,
                    others: certs,
                    key,
                });
            }
        }
        Err(key_error.unwrap_or_else(|| {
            "no certificate in the PKCS#12 file belongs to its private key".into()
        }))
    }

    /// Parses a PEM bundle: the first `CERTIFICATE` is the client certificate; the key is a
    /// `PRIVATE KEY` (PKCS#8), `RSA PRIVATE KEY` (PKCS#1) or, with a password,
    /// `ENCRYPTED PRIVATE KEY` block matching it.
    pub fn from_pem(data: &[u8], password: Option<&str>) -> Result<Self, String> {
        let blocks = pem::parse_many(data).map_err(|e| format!("not a valid PEM file ({e})"))?;
        if blocks.is_empty() {
            return Err("no PEM blocks found".into());
        }
        let mut certs = blocks
            .iter()
            .filter(|b| b.tag() == "CERTIFICATE")
            .map(|b| b.contents().to_vec());
        let cert_der = certs.next().ok_or("no CERTIFICATE block found")?;
        let others: Vec<Vec<u8>> = certs.collect();
        if let Some(encrypted) = blocks.iter().find(|b| b.tag() == "ENCRYPTED PRIVATE KEY") {
            let password = password
                .ok_or("the private key is encrypted: set AZURE_CLIENT_CERTIFICATE_PASSWORD")?;
            let key = super::pkcs12::decrypt_pkcs8(encrypted.contents(), password)
                .map_err(|e| format!("the private key {e}"))?;
            return Self::from_parts(cert_der, others, "PRIVATE KEY", &key);
        }
        let key_block = blocks
            .iter()
            .find(|b| b.tag() == "PRIVATE KEY" || b.tag() == "RSA PRIVATE KEY")
            .ok_or_else(|| {
                if blocks.iter().any(|b| b.tag() == "EC PRIVATE KEY") {
                    "the private key is an EC key; only RSA keys are supported".to_string()
                } else {
                    "no PRIVATE KEY or RSA PRIVATE KEY block found".to_string()
                }
            })?;
        if key_block
            .headers()
            .get("Proc-Type")
            .is_some_and(|v| v.contains("ENCRYPTED"))
        {
            return Err(
                "the private key uses OpenSSL's traditional PEM encryption, which is \
                        not supported; convert it with `openssl pkcs8 -topk8 -v2 aes-256-cbc \
                        -in key.pem -out key-pkcs8.pem` (keeping the password) or store it \
                        unencrypted and protect the file with permissions"
                    .into(),
            );
        }
        Self::from_parts(cert_der, others, key_block.tag(), key_block.contents())
    }

    /// A certificate and its RSA key (`key_tag` `PRIVATE KEY`: PKCS#8, `RSA PRIVATE KEY`:
    /// PKCS#1), checked to belong together.
    fn from_parts(
        cert_der: Vec<u8>,
        others: Vec<Vec<u8>>,
        key_tag: &str,
        key_der: &[u8],
    ) -> Result<Self, String> {
        let (public, key) = parse_rsa_key(key_tag, key_der)?;
        if !holds_key(&cert_der, &public) {
            return Err("the private key does not belong to the first certificate".into());
        }
        Ok(ClientCertificate {
            cert_der,
            others,
            key,
        })
    }

    /// base64url(SHA-256(certificate DER)), the `x5t#S256` header value.
    pub fn thumbprint_s256(&self) -> String {
        URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, &self.cert_der))
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// A signed client assertion for `audience` (the token endpoint URL). With `send_chain`
    /// the header also carries the certificate and the file's other certificates in `x5c`
    /// (`AZURE_CLIENT_SEND_CERTIFICATE_CHAIN`, for subject name / issuer authentication).
    pub fn assertion(
        &self,
        client_id: &str,
        audience: &str,
        now: SystemTime,
        send_chain: bool,
    ) -> Result<Secret, String> {
        let mut header = Header::new(Algorithm::PS256);
        header.typ = Some("JWT".into());
        header.x5t_s256 = Some(self.thumbprint_s256());
        if send_chain {
            use base64::engine::general_purpose::STANDARD;
            header.x5c = Some(
                std::iter::once(&self.cert_der)
                    .chain(&self.others)
                    .map(|der| STANDARD.encode(der))
                    .collect(),
            );
        }
        let now_secs = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let claims = Claims {
            aud: audience,
            iss: client_id,
            sub: client_id,
            jti: crate::random::uuid_v4("a client assertion id")
                .map_err(|e| e.to_string())?
                .to_string(),
            nbf: now_secs,
            iat: now_secs,
            exp: now_secs + ASSERTION_LIFETIME.as_secs(),
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map(Secret::new)
            .map_err(|e| format!("cannot sign the client assertion ({e})"))
    }
}

/// An RSA private key (`key_tag` `PRIVATE KEY`: PKCS#8, `RSA PRIVATE KEY`: PKCS#1): its
/// RSAPublicKey DER, and the key ready to sign.
fn parse_rsa_key(key_tag: &str, key_der: &[u8]) -> Result<(Vec<u8>, EncodingKey), String> {
    let pair = if key_tag == "PRIVATE KEY" {
        ring::signature::RsaKeyPair::from_pkcs8(key_der)
    } else {
        ring::signature::RsaKeyPair::from_der(key_der)
    }
    .map_err(|e| format!("the private key is not a usable RSA key ({e})"))?;
    let public = ring::signature::KeyPair::public_key(&pair)
        .as_ref()
        .to_vec();
    let key_pem = pem::encode(&pem::Pem::new(key_tag, key_der));
    let key = EncodingKey::from_rsa_pem(key_pem.as_bytes())
        .map_err(|e| format!("the private key cannot be used for signing ({e})"))?;
    Ok((public, key))
}

/// Whether `cert_der` is the certificate of the key whose RSAPublicKey DER is `public`: its
/// SubjectPublicKeyInfo embeds that DER verbatim.
fn holds_key(cert_der: &[u8], public: &[u8]) -> bool {
    cert_der.windows(public.len()).any(|w| w == public)
}

/// How to read the certificate file and what to send.
pub struct CertificateOptions {
    /// `AZURE_CLIENT_CERTIFICATE_PASSWORD`.
    pub password: Option<Secret>,
    /// `AZURE_CLIENT_SEND_CERTIFICATE_CHAIN`: put the chain in the assertion's `x5c`.
    pub send_chain: bool,
}

/// Client credentials with a certificate assertion.
pub struct ClientCertificateCredential {
    tenant: String,
    client_id: String,
    path: PathBuf,
    options: CertificateOptions,
    authority: String,
    http: Arc<HttpClient>,
    clock: Arc<dyn Clock>,
}

impl ClientCertificateCredential {
    pub fn new(
        tenant: &str,
        client_id: &str,
        path: PathBuf,
        options: CertificateOptions,
        authority: &str,
        http: Arc<HttpClient>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        ClientCertificateCredential {
            tenant: tenant.to_string(),
            client_id: client_id.to_string(),
            path,
            options,
            authority: authority.to_string(),
            http,
            clock,
        }
    }
}

impl Credential for ClientCertificateCredential {
    fn name(&self) -> &'static str {
        "EnvironmentCredential (client certificate)"
    }

    fn fetch(&self, tenant: Option<&str>, scope: &str) -> Result<AccessToken, CredentialError> {
        let fail = |m: String| CredentialError::Failed(AzureError::Auth(m));
        let data = std::fs::read(&self.path).map_err(|e| {
            fail(format!(
                "AZURE_CLIENT_CERTIFICATE_PATH {:?} cannot be read: {e}",
                self.path
            ))
        })?;
        let password = self.options.password.as_ref().map(Secret::expose);
        let cert = ClientCertificate::from_file(&data, password).map_err(|m| {
            fail(format!(
                "AZURE_CLIENT_CERTIFICATE_PATH {:?}: {m}",
                self.path
            ))
        })?;
        let tenant = tenant.unwrap_or(&self.tenant);
        let now = self.clock.now();
        request_token(&self.http, &self.authority, tenant, scope, |endpoint| {
            let assertion =
                cert.assertion(&self.client_id, endpoint, now, self.options.send_chain)?;
            Ok(vec![
                ("client_id".to_string(), Secret::new(self.client_id.clone())),
                (
                    "client_assertion_type".to_string(),
                    Secret::new("urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                ),
                ("client_assertion".to_string(), assertion),
            ])
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh 2048-bit RSA key as PKCS#8 PEM (ring, behind rcgen, cannot generate RSA).
    pub(crate) fn rsa_key_pem() -> String {
        use rsa::pkcs8::EncodePrivateKey;
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
            .unwrap()
            .to_string()
    }

    /// A self-signed RSA certificate and its PKCS#8 key, as PEM, plus the certificate DER.
    pub(crate) fn rsa_cert_pem() -> (String, String, Vec<u8>) {
        let key_pem = rsa_key_pem();
        let key = rcgen::KeyPair::from_pem(&key_pem).unwrap();
        let params = rcgen::CertificateParams::new(vec!["client.test".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key_pem, cert.der().to_vec())
    }

    #[test]
    fn parses_and_signs_verifiable_assertion() {
        let (cert_pem, key_pem, cert_der) = rsa_cert_pem();
        let bundle = format!("{cert_pem}\n{key_pem}");
        let cert = ClientCertificate::from_file(bundle.as_bytes(), None).unwrap();
        let expected =
            URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, &cert_der));
        assert_eq!(cert.thumbprint_s256(), expected);

        let now = SystemTime::now();
        let aud = "https://login.example/tenant/oauth2/v2.0/token";
        let jwt = cert.assertion("client-1", aud, now, false).unwrap();
        let header = jsonwebtoken::decode_header(jwt.expose()).unwrap();
        assert_eq!(header.alg, Algorithm::PS256);
        assert_eq!(header.x5t_s256.as_deref(), Some(expected.as_str()));
        assert_eq!(header.x5c, None);
        // With the chain requested, x5c holds the certificate (standard base64 DER) first.
        let (ca_pem, _, ca_der) = rsa_cert_pem();
        let with_ca = format!("{cert_pem}\n{key_pem}\n{ca_pem}");
        let chained = ClientCertificate::from_file(with_ca.as_bytes(), None).unwrap();
        let jwt2 = chained.assertion("client-1", aud, now, true).unwrap();
        let x5c = jsonwebtoken::decode_header(jwt2.expose())
            .unwrap()
            .x5c
            .unwrap();
        use base64::engine::general_purpose::STANDARD;
        assert_eq!(
            x5c,
            vec![STANDARD.encode(&cert_der), STANDARD.encode(&ca_der)]
        );

        // Verify the signature with the certificate's public key.
        let kp = rcgen::KeyPair::from_pem(&key_pem).unwrap();
        let spki = kp.public_key_der();
        let dk = jsonwebtoken::DecodingKey::from_rsa_der(rsa_public_from_spki(&spki));
        let mut v = jsonwebtoken::Validation::new(Algorithm::PS256);
        v.set_audience(&[aud]);
        v.set_issuer(&["client-1"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(jwt.expose(), &dk, &v).unwrap();
        assert_eq!(data.claims["sub"], "client-1");
        assert_eq!(
            data.claims["exp"].as_u64().unwrap() - data.claims["nbf"].as_u64().unwrap(),
            600
        );
        assert!(data.claims["jti"].as_str().unwrap().len() >= 32);
    }

    /// SubjectPublicKeyInfo DER → the embedded RSAPublicKey (the BIT STRING contents).
    fn rsa_public_from_spki(spki: &[u8]) -> &[u8] {
        // SEQUENCE { SEQUENCE { oid, NULL }, BIT STRING { 0x00, RSAPublicKey } }: the
        // RSAPublicKey is the trailing SEQUENCE (0x30 0x82 ...).
        let pos = spki.windows(2).rposition(|w| w == [0x03, 0x82]).unwrap();
        &spki[pos + 5..]
    }

    #[test]
    fn clear_errors_for_unsupported_inputs() {
        let (cert_pem, key_pem, _) = rsa_cert_pem();
        let e = ClientCertificate::from_file(b"\x30\x82\x01\x00binary-pfx", None)
            .err()
            .unwrap();
        assert!(e.contains("PKCS#12"), "{e}");
        let e = ClientCertificate::from_file(key_pem.as_bytes(), None)
            .err()
            .unwrap();
        assert!(e.contains("CERTIFICATE"), "{e}");
        let e = ClientCertificate::from_file(cert_pem.as_bytes(), None)
            .err()
            .unwrap();
        assert!(e.contains("PRIVATE KEY"), "{e}");
        let enc = format!(
            "{cert_pem}\n-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
        );
        let e = ClientCertificate::from_file(enc.as_bytes(), None)
            .err()
            .unwrap();
        assert!(e.contains("set AZURE_CLIENT_CERTIFICATE_PASSWORD"), "{e}");
        let traditional = key_pem.replace(
            "-----BEGIN PRIVATE KEY-----\n",
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: DES-EDE3-CBC,0011223344556677\n\n",
        ).replace("END PRIVATE KEY", "END RSA PRIVATE KEY");
        let e =
            ClientCertificate::from_file(format!("{cert_pem}{traditional}").as_bytes(), Some("p"))
                .err()
                .unwrap();
        assert!(e.contains("openssl pkcs8 -topk8"), "{e}");
        let ec = rcgen::KeyPair::generate().unwrap();
        let mixed = format!("{cert_pem}\n{}", ec.serialize_pem());
        let e = ClientCertificate::from_file(mixed.as_bytes(), None)
            .err()
            .unwrap();
        assert!(e.contains("RSA"), "{e}");
        // A key that does not match the certificate.
        let (other_cert, _, _) = rsa_cert_pem();
        let wrong = format!("{other_cert}\n{key_pem}");
        let e = ClientCertificate::from_file(wrong.as_bytes(), None)
            .err()
            .unwrap();
        assert!(e.contains("does not belong"), "{e}");
        // PKCS#1 keys work too.
        let pkcs1 = {
            use rsa::pkcs1::EncodeRsaPrivateKey;
            use rsa::pkcs8::DecodePrivateKey;
            rsa::RsaPrivateKey::from_pkcs8_pem(&key_pem)
                .unwrap()
                .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
                .unwrap()
                .to_string()
        };
        assert!(
            ClientCertificate::from_file(format!("{cert_pem}{pkcs1}").as_bytes(), None).is_ok()
        );
    }

    #[test]
    fn password_protected_files_sign_with_the_right_key() {
        const CERT: &str = include_str!("../../../tests/data/pkcs12/cert.pem");
        const MODERN: &[u8] = include_bytes!("../../../tests/data/pkcs12/modern.p12");
        const LEGACY: &[u8] = include_bytes!("../../../tests/data/pkcs12/legacy.p12");
        const ENC_KEY: &str = include_str!("../../../tests/data/pkcs12/enc-key.pem");
        let cert_der = pem::parse(CERT).unwrap().contents().to_vec();
        let thumb = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, &cert_der));
        let pem_bundle = format!("{CERT}{ENC_KEY}");
        for (data, password) in [
            (MODERN, "pass word ü"),
            (LEGACY, "legacy-pass"),
            (pem_bundle.as_bytes(), "pem-pass"),
        ] {
            let c = ClientCertificate::from_file(data, Some(password)).unwrap();
            assert_eq!(c.thumbprint_s256(), thumb);
            assert!(c
                .assertion(
                    "client",
                    "https://login.example/t/oauth2/v2.0/token",
                    SystemTime::now(),
                    true
                )
                .is_ok());
            let e = ClientCertificate::from_file(data, Some("wrong"))
                .err()
                .unwrap();
            assert!(e.contains("wrong AZURE_CLIENT_CERTIFICATE_PASSWORD"), "{e}");
        }
        // No password given for a protected PKCS#12 file: says which setting is missing.
        let e = ClientCertificate::from_file(MODERN, None).err().unwrap();
        assert!(
            e.contains("password-protected: set AZURE_CLIENT_CERTIFICATE_PASSWORD"),
            "{e}"
        );
        // A file protected by an empty password needs none.
        const NO_PASSWORD: &[u8] = include_bytes!("../../../tests/data/pkcs12/nopass.p12");
        assert!(ClientCertificate::from_file(NO_PASSWORD, None).is_ok());
    }
}
