//! Client certificate credential (`AZURE_CLIENT_CERTIFICATE_PATH`): a PEM or PKCS#12 file
//! holding the certificate and its RSA private key signs a client-assertion JWT (PS256, header `x5t#S256`
//! = base64url(SHA-256(certificate DER)), `aud` = the token endpoint URL, `iss` = `sub` = client
//! id, random `jti`, valid for 10 minutes).
//!
//! The parsed file is kept and reused while its identity (device, inode), size, modification
//! and change times stay the same: a token request does not decrypt the key again, and a
//! rotated file (rewritten in place or renamed over) is picked up at the next token request.
//! A file that cannot be used (broken, wrong password) is not decrypted again either until it
//! changes. It may be 1 MiB at most.
//!
//! `AZURE_CLIENT_CERTIFICATE_PASSWORD` decrypts a PKCS#12 file or an `ENCRYPTED PRIVATE KEY`
//! (PKCS#8) PEM block (`pkcs12.rs`). OpenSSL's traditional encrypted PEM (`Proc-Type:
//! 4,ENCRYPTED`, MD5-derived keys) is refused with a conversion hint.
//!
//! Key material: the file's bytes, PEM key blocks and decrypted keys are held in `Zeroizing`
//! buffers and wiped when dropped. The assertion is signed with ring directly, so the only
//! other copy is the parsed key inside ring's `RsaKeyPair` (ring does not wipe it on drop); it
//! exists once per file version, in the cache.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::{RsaKeyPair, RSA_PSS_SHA256};
use serde::Serialize;
use zeroize::Zeroizing;

use super::pkcs12::Pkcs12Error;
use crate::azure::types::AzureError;
use crate::secret::Secret;

const ASSERTION_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// Largest certificate file read: a certificate, its chain and a key take a few KiB.
const MAX_FILE_SIZE: u64 = 1 << 20;

/// Why the contents of a certificate file cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CertificateError {
    /// A password-protected PKCS#12 file, and no `AZURE_CLIENT_CERTIFICATE_PASSWORD`.
    #[error("the PKCS#12 file is password-protected: set AZURE_CLIENT_CERTIFICATE_PASSWORD")]
    PasswordMissing,
    /// Neither PEM nor a PKCS#12 file that can be read.
    #[error("not PEM, and not a usable PKCS#12 file: {0}")]
    NotPkcs12(#[source] Pkcs12Error),
    /// The PEM bundle's `ENCRYPTED PRIVATE KEY` block cannot be decrypted.
    #[error("the private key {0}")]
    EncryptedKey(#[source] Pkcs12Error),
    #[error("not a valid PEM file ({0})")]
    Pem(#[source] pem::PemError),
    /// ring refuses the key as an RSA private key.
    #[error("the private key is not a usable RSA key ({0})")]
    NotRsa(ring::error::KeyRejected),
    /// A missing or mismatched part, or an unsupported format (the text says which).
    #[error("{0}")]
    Unusable(&'static str),
}

use CertificateError::Unusable;

/// A parsed certificate + RSA key, ready to sign assertions.
pub(crate) struct ClientCertificate {
    cert_der: Vec<u8>,
    /// The file's other certificates (its chain), in file order: sent in `x5c` on request.
    others: Vec<Vec<u8>>,
    key: RsaKeyPair,
}

#[derive(Serialize)]
struct JwtHeader<'a> {
    alg: &'static str,
    typ: &'static str,
    #[serde(rename = "x5t#S256")]
    x5t_s256: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    x5c: Option<Vec<String>>,
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
    pub(crate) fn from_file(data: &[u8], password: Option<&str>) -> Result<Self, CertificateError> {
        let text_start = &data[..data.len().min(4096)];
        let looks_pem = text_start.windows(11).any(|w| w == b"-----BEGIN ");
        if looks_pem {
            return Self::from_pem(data, password);
        }
        let decoded = super::pkcs12::decode_pfx(data, password.unwrap_or(""));
        let super::pkcs12::Decoded { keys, mut certs } =
            decoded.map_err(|e| match (e, password) {
                (Pkcs12Error::WrongPassword, None) => CertificateError::PasswordMissing,
                (e, _) => CertificateError::NotPkcs12(e),
            })?;
        if keys.is_empty() {
            return Err(Unusable("the PKCS#12 file holds no private key"));
        }
        if certs.is_empty() {
            return Err(Unusable("the PKCS#12 file holds no certificate"));
        }
        // The client certificate is the one the key belongs to (a file may carry its chain).
        let mut key_error = None;
        for key_der in &keys {
            match parse_rsa_key("PRIVATE KEY", key_der) {
                Ok(key) => {
                    if let Some(i) = certs.iter().position(|c| holds_key(c, &key)) {
                        let cert_der = certs.remove(i);
                        return Ok(ClientCertificate {
                            cert_der,
                            others: certs,
                            key,
                        });
                    }
                }
                Err(e) => key_error = Some(e),
            }
        }
        Err(key_error.unwrap_or(Unusable(
            "no certificate in the PKCS#12 file belongs to its private key",
        )))
    }

    /// Parses a PEM bundle: the first `CERTIFICATE` is the client certificate; the key is a
    /// `PRIVATE KEY` (PKCS#8), `RSA PRIVATE KEY` (PKCS#1) or, with a password,
    /// `ENCRYPTED PRIVATE KEY` block matching it (an encrypted key wins over a plain one).
    pub(crate) fn from_pem(data: &[u8], password: Option<&str>) -> Result<Self, CertificateError> {
        let blocks = pem::parse_many(data).map_err(CertificateError::Pem)?;
        if blocks.is_empty() {
            return Err(Unusable("no PEM blocks found"));
        }
        // Each block is taken apart by value, so that every non-certificate block's contents
        // (key material or not) end in a buffer wiped on drop.
        let mut certs = Vec::new();
        let mut encrypted: Option<Zeroizing<Vec<u8>>> = None;
        let mut plain: Option<(String, bool, Zeroizing<Vec<u8>>)> = None;
        let mut ec_key = false;
        for block in blocks {
            if block.tag() == "CERTIFICATE" {
                certs.push(block.into_contents());
                continue;
            }
            let tag = block.tag().to_string();
            let traditional = block
                .headers()
                .get("Proc-Type")
                .is_some_and(|v| v.contains("ENCRYPTED"));
            let contents = Zeroizing::new(block.into_contents());
            match tag.as_str() {
                "ENCRYPTED PRIVATE KEY" if encrypted.is_none() => encrypted = Some(contents),
                "PRIVATE KEY" | "RSA PRIVATE KEY" if plain.is_none() => {
                    plain = Some((tag, traditional, contents))
                }
                "EC PRIVATE KEY" => ec_key = true,
                _ => {}
            }
        }
        let mut certs = certs.into_iter();
        let cert_der = certs.next().ok_or(Unusable("no CERTIFICATE block found"))?;
        let others: Vec<Vec<u8>> = certs.collect();
        if let Some(encrypted) = encrypted {
            let password = password.ok_or(Unusable(
                "the private key is encrypted: set AZURE_CLIENT_CERTIFICATE_PASSWORD",
            ))?;
            let key = super::pkcs12::decrypt_pkcs8(&encrypted, password)
                .map_err(CertificateError::EncryptedKey)?;
            plain = Some(("PRIVATE KEY".to_string(), false, key));
        }
        let (key_tag, traditional, key_der) = plain.ok_or(Unusable(if ec_key {
            "the private key is an EC key; only RSA keys are supported"
        } else {
            "no PRIVATE KEY or RSA PRIVATE KEY block found"
        }))?;
        if traditional {
            return Err(Unusable(
                "the private key uses OpenSSL's traditional PEM encryption, which is \
                 not supported; convert it with `openssl pkcs8 -topk8 -v2 aes-256-cbc \
                 -in key.pem -out key-pkcs8.pem` (keeping the password) or store it \
                 unencrypted and protect the file with permissions",
            ));
        }
        let key = parse_rsa_key(&key_tag, &key_der)?;
        if !holds_key(&cert_der, &key) {
            return Err(Unusable(
                "the private key does not belong to the first certificate",
            ));
        }
        Ok(ClientCertificate {
            cert_der,
            others,
            key,
        })
    }

    /// base64url(SHA-256(certificate DER)), the `x5t#S256` header value.
    pub(crate) fn thumbprint_s256(&self) -> String {
        URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, &self.cert_der))
    }

    /// A signed client assertion for `audience` (the token endpoint URL). With `send_chain`
    /// the header also carries the certificate and the file's other certificates in `x5c`
    /// (`AZURE_CLIENT_SEND_CERTIFICATE_CHAIN`, for subject name / issuer authentication).
    pub(crate) fn assertion(
        &self,
        client_id: &str,
        audience: &str,
        now: SystemTime,
        send_chain: bool,
    ) -> Result<Secret, AzureError> {
        let thumbprint = self.thumbprint_s256();
        let x5c = send_chain.then(|| {
            use base64::engine::general_purpose::STANDARD;
            std::iter::once(&self.cert_der)
                .chain(&self.others)
                .map(|der| STANDARD.encode(der))
                .collect()
        });
        let header = JwtHeader {
            alg: "PS256",
            typ: "JWT",
            x5t_s256: &thumbprint,
            x5c,
        };
        let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let claims = Claims {
            aud: audience,
            iss: client_id,
            sub: client_id,
            jti: crate::random::uuid_v4("a client assertion id")
                .map_err(|e| AzureError::Auth(e.to_string()))?
                .to_string(),
            nbf: now_secs,
            iat: now_secs,
            exp: now_secs + ASSERTION_LIFETIME.as_secs(),
        };
        let encode = |json: serde_json::Result<Vec<u8>>, what: &str| {
            json.map(|b| URL_SAFE_NO_PAD.encode(b))
                .map_err(|e| AzureError::Auth(format!("cannot encode the assertion {what} ({e})")))
        };
        let mut jwt = format!(
            "{}.{}",
            encode(serde_json::to_vec(&header), "header")?,
            encode(serde_json::to_vec(&claims), "claims")?
        );
        let mut signature = vec![0u8; self.key.public().modulus_len()];
        let rng = ring::rand::SystemRandom::new();
        self.key
            .sign(&RSA_PSS_SHA256, &rng, jwt.as_bytes(), &mut signature)
            .map_err(|_| AzureError::Auth("cannot sign the client assertion".into()))?;
        jwt.push('.');
        jwt.push_str(&URL_SAFE_NO_PAD.encode(&signature));
        Ok(Secret::new(jwt))
    }
}

/// An RSA private key from `PRIVATE KEY` (PKCS#8) or `RSA PRIVATE KEY` (PKCS#1) DER.
fn parse_rsa_key(key_tag: &str, key_der: &[u8]) -> Result<RsaKeyPair, CertificateError> {
    if key_tag == "PRIVATE KEY" {
        RsaKeyPair::from_pkcs8(key_der)
    } else {
        RsaKeyPair::from_der(key_der)
    }
    .map_err(CertificateError::NotRsa)
}

/// Whether `cert_der` is the certificate of `key`: its SubjectPublicKeyInfo embeds the key's
/// RSAPublicKey DER verbatim.
fn holds_key(cert_der: &[u8], key: &RsaKeyPair) -> bool {
    let public = key.public().as_ref();
    cert_der.windows(public.len()).any(|w| w == public)
}

/// What identifies one version of the certificate file: a rewrite changes the size or the
/// times (the change time cannot be set back), a rename over it changes the inode.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Files parsed on this thread: tests count what a credential wrapped elsewhere does.
    pub(crate) static PARSED_ON_THIS_THREAD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A parsed certificate, or why the file cannot be used (`AzureError::Auth`).
pub(crate) type Parsed = Result<Arc<ClientCertificate>, AzureError>;

/// The certificate file `AZURE_CLIENT_CERTIFICATE_PATH` names, parsed again only when it
/// changes.
pub(crate) struct CertificateFile {
    pub(crate) path: PathBuf,
    /// `AZURE_CLIENT_CERTIFICATE_PASSWORD`.
    pub(crate) password: Option<Secret>,
    /// `AZURE_CLIENT_SEND_CERTIFICATE_CHAIN`: put the chain in the assertion's `x5c`.
    pub(crate) send_chain: bool,
    /// The file last parsed, its stamp, and the certificate or why the file is unusable (a
    /// broken file or a wrong password is not decrypted again until the file changes).
    pub(crate) parsed: Mutex<Option<(FileStamp, Parsed)>>,
}

impl CertificateFile {
    /// The certificate in the file now: the one parsed last if the file is unchanged, else
    /// the file read and parsed again.
    pub(crate) fn certificate(&self) -> Parsed {
        let path = &self.path;
        let unreadable = |e: std::io::Error| {
            AzureError::Auth(format!(
                "AZURE_CLIENT_CERTIFICATE_PATH {path:?} cannot be read: {e}"
            ))
        };
        let mut file = File::open(path).map_err(unreadable)?;
        let stamp = FileStamp::of(&file.metadata().map_err(unreadable)?);
        // Held while parsing, so that concurrent token requests decrypt the file once. No
        // network I/O happens under it.
        let mut parsed = self.parsed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, outcome)) = parsed.as_ref().filter(|(seen, _)| *seen == stamp) {
            return outcome.clone();
        }
        if stamp.size > MAX_FILE_SIZE {
            return Err(AzureError::Auth(format!(
                "AZURE_CLIENT_CERTIFICATE_PATH {path:?} is {} bytes long; the limit is \
                 {MAX_FILE_SIZE}",
                stamp.size
            )));
        }
        // Sized up front: a growing buffer would leave copies of a plain key behind.
        let mut data = Zeroizing::new(Vec::with_capacity(stamp.size as usize + 1));
        (&mut file)
            .take(MAX_FILE_SIZE)
            .read_to_end(&mut data)
            .map_err(unreadable)?;
        #[cfg(test)]
        PARSED_ON_THIS_THREAD.with(|n| n.set(n.get() + 1));
        let outcome =
            ClientCertificate::from_file(&data, self.password.as_ref().map(Secret::expose))
                .map(Arc::new)
                .map_err(|e| {
                    AzureError::Auth(format!("AZURE_CLIENT_CERTIFICATE_PATH {path:?}: {e}"))
                });
        *parsed = Some((stamp, outcome.clone()));
        outcome
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::azure::auth::entra::{EntraCredential, Proof};
    use crate::azure::auth::Credential;
    use jsonwebtoken::Algorithm;

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
        use crate::der::{Reader, BIT_STRING};
        let mut spki = Reader::new(spki).sequence("SubjectPublicKeyInfo").unwrap();
        spki.sequence("AlgorithmIdentifier").unwrap();
        // The BIT STRING's first byte counts its unused bits (0).
        &spki.expect(BIT_STRING, "subjectPublicKey").unwrap()[1..]
    }

    #[test]
    fn clear_errors_for_unsupported_inputs() {
        let (cert_pem, key_pem, _) = rsa_cert_pem();
        let e = ClientCertificate::from_file(b"\x30\x82\x01\x00binary-pfx", None)
            .err()
            .unwrap();
        assert!(e.to_string().contains("PKCS#12"), "{e}");
        let e = ClientCertificate::from_file(key_pem.as_bytes(), None)
            .err()
            .unwrap();
        assert!(e.to_string().contains("CERTIFICATE"), "{e}");
        let e = ClientCertificate::from_file(cert_pem.as_bytes(), None)
            .err()
            .unwrap();
        assert!(e.to_string().contains("PRIVATE KEY"), "{e}");
        let enc = format!(
            "{cert_pem}\n-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
        );
        let e = ClientCertificate::from_file(enc.as_bytes(), None)
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .contains("set AZURE_CLIENT_CERTIFICATE_PASSWORD"),
            "{e}"
        );
        let traditional = key_pem.replace(
            "-----BEGIN PRIVATE KEY-----\n",
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: DES-EDE3-CBC,0011223344556677\n\n",
        ).replace("END PRIVATE KEY", "END RSA PRIVATE KEY");
        let e =
            ClientCertificate::from_file(format!("{cert_pem}{traditional}").as_bytes(), Some("p"))
                .err()
                .unwrap();
        assert!(e.to_string().contains("openssl pkcs8 -topk8"), "{e}");
        let ec = rcgen::KeyPair::generate().unwrap();
        let mixed = format!("{cert_pem}\n{}", ec.serialize_pem());
        let e = ClientCertificate::from_file(mixed.as_bytes(), None)
            .err()
            .unwrap();
        assert!(e.to_string().contains("RSA"), "{e}");
        // A key that does not match the certificate.
        let (other_cert, _, _) = rsa_cert_pem();
        let wrong = format!("{other_cert}\n{key_pem}");
        let e = ClientCertificate::from_file(wrong.as_bytes(), None)
            .err()
            .unwrap();
        assert!(e.to_string().contains("does not belong"), "{e}");
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
            assert!(
                e.to_string()
                    .contains("wrong AZURE_CLIENT_CERTIFICATE_PASSWORD"),
                "{e}"
            );
        }
        // No password given for a protected PKCS#12 file: says which setting is missing.
        let e = ClientCertificate::from_file(MODERN, None).err().unwrap();
        assert!(matches!(e, CertificateError::PasswordMissing), "{e:?}");
        assert!(
            e.to_string()
                .contains("password-protected: set AZURE_CLIENT_CERTIFICATE_PASSWORD"),
            "{e}"
        );
        // A file protected by an empty password needs none.
        const NO_PASSWORD: &[u8] = include_bytes!("../../../tests/data/pkcs12/nopass.p12");
        assert!(ClientCertificate::from_file(NO_PASSWORD, None).is_ok());
    }

    /// A credential for the file at `path`, over a transport that always issues a token.
    fn credential_for(path: &std::path::Path) -> EntraCredential {
        use crate::azure::http::tests::{resp, Scripted};
        use crate::azure::http::{HttpClient, RetryPolicy};
        use crate::clock::ManualClock;
        let ok = || {
            let mut r = resp(200, &[]);
            r.body = br#"{"token_type":"Bearer","expires_in":3599,"access_token":"at"}"#.to_vec();
            Ok(r)
        };
        let clock = Arc::new(ManualClock::new(
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        ));
        let http = Arc::new(HttpClient::new(
            Arc::new(Scripted::new((0..10).map(|_| ok()).collect())),
            clock.clone(),
            RetryPolicy::default(),
        ));
        let password = Some(Secret::new("pass word ü"));
        let file = CertificateFile {
            path: path.to_path_buf(),
            password,
            send_chain: false,
            parsed: Mutex::default(),
        };
        let proof = Proof::Certificate(file);
        EntraCredential::with(
            "x",
            "tenant",
            "client",
            proof,
            "https://login.example/",
            http,
        )
        .unwrap()
    }

    #[test]
    fn the_file_is_parsed_once_per_version() {
        const MODERN: &[u8] = include_bytes!("../../../tests/data/pkcs12/modern.p12");
        const CERT: &str = include_str!("../../../tests/data/pkcs12/cert.pem");
        let dir = std::env::temp_dir().join(format!("azkv-cert-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("client.p12");
        std::fs::write(&path, MODERN).unwrap();
        let cred = credential_for(&path);
        let before = PARSED_ON_THIS_THREAD.with(|n| n.get());
        let parses = || PARSED_ON_THIS_THREAD.with(|n| n.get()) - before;
        let cert_der = || match &cred.proof {
            Proof::Certificate(file) => file.certificate().unwrap().cert_der.clone(),
            _ => unreachable!(),
        };

        // Token requests for an unchanged file reuse the decrypted key.
        cred.fetch(None, "scope-1").unwrap();
        cred.fetch(None, "scope-2").unwrap();
        cred.fetch(Some("other-tenant"), "scope-1").unwrap();
        assert_eq!(parses(), 1, "an unchanged file was parsed again");

        // PEM bundles padded to one size (trailing newlines are fine in PEM).
        let bundle = |cert: &str, key: &str| {
            let mut b = format!("{cert}{key}");
            assert!(b.len() <= 8192);
            b.push_str(&"\n".repeat(8192 - b.len()));
            b
        };
        // Rewritten in place with another certificate (another size): the next request uses it.
        let (cert_pem, key_pem, cert_der_now) = rsa_cert_pem();
        std::fs::write(&path, bundle(&cert_pem, &key_pem)).unwrap();
        cred.fetch(None, "scope-1").unwrap();
        assert_eq!(parses(), 2);
        assert_eq!(cert_der(), cert_der_now);
        cred.fetch(None, "scope-1").unwrap();
        assert_eq!(parses(), 2);

        // Replaced by a rename (a new inode) with a file of the same size: parsed again.
        let (other_pem, other_key, other_der) = rsa_cert_pem();
        let tmp = dir.join("client.new");
        std::fs::write(&tmp, bundle(&other_pem, &other_key)).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        cred.fetch(None, "scope-1").unwrap();
        assert_eq!(parses(), 3);
        assert_eq!(cert_der(), other_der);

        // A broken file fails every request (not parsed again while unchanged) until fixed.
        std::fs::write(&path, CERT).unwrap();
        for _ in 0..2 {
            let e = cred.fetch(None, "scope-1").unwrap_err().to_string();
            assert!(e.to_string().contains("PRIVATE KEY"), "{e}");
        }
        assert_eq!(parses(), 4);
        std::fs::write(&path, MODERN).unwrap();
        cred.fetch(None, "scope-1").unwrap();
        assert_eq!(parses(), 5);
        std::fs::remove_file(&path).unwrap();
        let e = cred.fetch(None, "scope-1").unwrap_err().to_string();
        assert!(e.to_string().contains("cannot be read"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn parsed_keys_leave_no_plain_copy_in_freed_memory() {
        use crate::secret::freed::blocks_holding;
        const MODERN: &[u8] = include_bytes!("../../../tests/data/pkcs12/modern.p12");
        const CERT: &str = include_str!("../../../tests/data/pkcs12/cert.pem");
        const KEY: &str = include_str!("../../../tests/data/pkcs12/key.pem");
        const ENC_KEY: &str = include_str!("../../../tests/data/pkcs12/enc-key.pem");
        let key = pem::parse(KEY).unwrap().into_contents();
        // Bytes of the private exponent and primes (the modulus, public, comes first).
        let private = &key[key.len() / 2..key.len() / 2 + 32];
        let plain_bundle = format!("{CERT}{KEY}");
        let encrypted_bundle = format!("{CERT}{ENC_KEY}");
        let ((), found) = blocks_holding(private, || {
            for (data, password) in [
                (MODERN, Some("pass word ü")),
                (plain_bundle.as_bytes(), None),
                (encrypted_bundle.as_bytes(), Some("pem-pass")),
            ] {
                let c = ClientCertificate::from_file(data, password).unwrap();
                c.assertion("client", "https://login.example/t", SystemTime::now(), true)
                    .unwrap();
            }
        });
        assert_eq!(
            found, 0,
            "a dropped certificate left its key in freed memory"
        );
    }
}
