//! Password-protected client certificates: PKCS#12 files (`.pfx`/`.p12`) and encrypted PKCS#8
//! keys (`ENCRYPTED PRIVATE KEY` PEM blocks), decrypted with `AZURE_CLIENT_CERTIFICATE_PASSWORD`.
//!
//! Supported, which covers OpenSSL 3 (`openssl pkcs12 -export`, its default and `-legacy`),
//! OpenSSL 1.x and Windows exports:
//! - PBES2: PBKDF2 with HMAC-SHA1/256/384/512, AES-128/192/256-CBC (the current default);
//! - PKCS#12 PBE with SHA-1: 3-key triple DES, 40- and 128-bit RC2 (older exports);
//! - the file's MAC (HMAC-SHA1/256/384/512 keyed by the PKCS#12 key derivation) is checked
//!   first, so a wrong password is reported as such rather than as garbage.
//!
//! DER only (what OpenSSL and Azure write); a BER file with indefinite lengths is refused with
//! a hint to re-export it. Public-key integrity mode (a signed PFX) is refused too.

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockCipher, BlockDecryptMut, InnerIvInit, KeyInit};
use ring::digest;
use ring::hmac;

/// What a PKCS#12 file holds that a client credential needs.
pub struct Decoded {
    /// PKCS#8 `PrivateKeyInfo` DER of each private key found.
    pub keys: Vec<Vec<u8>>,
    /// DER of each X.509 certificate found, in file order.
    pub certs: Vec<Vec<u8>>,
}

// Object identifiers, as the bytes of their DER content.
const ID_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
const ID_ENCRYPTED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x06];
const KEY_BAG: &[u8] = &[
    0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x01,
];
const SHROUDED_KEY_BAG: &[u8] = &[
    0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x02,
];
const CERT_BAG: &[u8] = &[
    0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x03,
];
const X509_CERTIFICATE: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x16, 0x01];
const PBES2: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0d];
const PBKDF2: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0c];
const HMAC_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x07];
const HMAC_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x09];
const HMAC_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x0a];
const HMAC_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x0b];
const AES128_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x02];
const AES192_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x16];
const AES256_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a];
const PBE_SHA1_3DES: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x03];
const PBE_SHA1_RC2_128: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x05];
const PBE_SHA1_RC2_40: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x06];
const SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
const SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
const SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
const SHA512: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const CONTEXT_0: u8 = 0xa0;
const CONTEXT_0_PRIMITIVE: u8 = 0x80;

/// Key-derivation work above this is refused: a file asking for more is broken or hostile.
const MAX_ITERATIONS: u32 = 10_000_000;

/// A reader over DER: one tag-length-value at a time.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The next element: (tag, content, the whole encoding).
    fn read(&mut self) -> Result<(u8, &'a [u8], &'a [u8]), String> {
        let d = self.0;
        if d.len() < 2 {
            return Err("truncated DER".into());
        }
        let tag = d[0];
        if tag & 0x1f == 0x1f {
            return Err("unsupported DER tag".into());
        }
        let (len, header) = match d[1] {
            l if l < 0x80 => (l as usize, 2),
            0x80 => {
                return Err(
                    "BER indefinite lengths are not supported; re-export the file \
                            with `openssl pkcs12`"
                        .into(),
                )
            }
            l => {
                let n = (l & 0x7f) as usize;
                if n > 4 || d.len() < 2 + n {
                    return Err("bad DER length".into());
                }
                let len = d[2..2 + n]
                    .iter()
                    .fold(0usize, |acc, b| (acc << 8) | *b as usize);
                (len, 2 + n)
            }
        };
        if d.len() - header < len {
            return Err("truncated DER".into());
        }
        let whole = &d[..header + len];
        self.0 = &d[header + len..];
        Ok((tag, &whole[header..], whole))
    }

    fn expect(&mut self, tag: u8, what: &str) -> Result<&'a [u8], String> {
        match self.read()? {
            (t, content, _) if t == tag => Ok(content),
            (t, _, _) => Err(format!("{what}: unexpected DER tag 0x{t:02x}")),
        }
    }

    /// A sequence's content, as a reader.
    fn sequence(&mut self, what: &str) -> Result<Der<'a>, String> {
        self.expect(SEQUENCE, what).map(Der)
    }
}

fn small_uint(bytes: &[u8], what: &str) -> Result<u32, String> {
    if bytes.is_empty() || bytes.len() > 5 || bytes[0] & 0x80 != 0 {
        return Err(format!("{what}: not a small positive integer"));
    }
    let v = bytes.iter().fold(0u64, |acc, b| (acc << 8) | *b as u64);
    u32::try_from(v).map_err(|_| format!("{what}: out of range"))
}

fn iterations(bytes: &[u8]) -> Result<u32, String> {
    let n = small_uint(bytes, "iteration count")?;
    if n == 0 || n > MAX_ITERATIONS {
        return Err(format!("iteration count {n} is out of range"));
    }
    Ok(n)
}

/// The password as PKCS#12's key derivation takes it: UTF-16BE with a two-byte terminator.
fn bmp_password(password: &str) -> Vec<u8> {
    let mut out: Vec<u8> = password.encode_utf16().flat_map(u16::to_be_bytes).collect();
    out.extend_from_slice(&[0, 0]);
    out
}

/// RFC 7292 appendix B.2: `n` bytes of key material for purpose `id` (1 key, 2 IV, 3 MAC).
fn pkcs12_kdf(
    alg: &'static digest::Algorithm,
    id: u8,
    password: &[u8],
    salt: &[u8],
    rounds: u32,
    n: usize,
) -> Vec<u8> {
    let (u, v) = (alg.output_len(), alg.block_len());
    let fill = |x: &[u8]| -> Vec<u8> {
        if x.is_empty() {
            return Vec::new();
        }
        (0..v * x.len().div_ceil(v))
            .map(|i| x[i % x.len()])
            .collect()
    };
    let diversifier = vec![id; v];
    let mut input = [fill(salt), fill(password)].concat();
    let mut out = Vec::with_capacity(n);
    loop {
        let mut ctx = digest::Context::new(alg);
        ctx.update(&diversifier);
        ctx.update(&input);
        let mut a = ctx.finish().as_ref().to_vec();
        for _ in 1..rounds {
            a = digest::digest(alg, &a).as_ref().to_vec();
        }
        let take = (n - out.len()).min(u);
        out.extend_from_slice(&a[..take]);
        if out.len() >= n {
            return out;
        }
        // Each v-byte block of the input becomes (block + B + 1) mod 2^(8v).
        let b: Vec<u8> = (0..v).map(|k| a[k % u]).collect();
        for block in input.chunks_mut(v) {
            let mut carry = 1u16;
            for k in (0..v).rev() {
                let sum = block[k] as u16 + b[k] as u16 + carry;
                block[k] = sum as u8;
                carry = sum >> 8;
            }
        }
    }
}

fn wrong_password() -> String {
    "cannot decrypt it: wrong AZURE_CLIENT_CERTIFICATE_PASSWORD, or a damaged file".into()
}

/// Decrypts `data` encrypted under the algorithm `alg` (an AlgorithmIdentifier's content).
fn decrypt(alg: &[u8], data: &[u8], password: &str) -> Result<Vec<u8>, String> {
    let mut alg = Der(alg);
    let oid = alg.expect(OID, "encryption algorithm")?;
    let mut params = alg.sequence("encryption parameters")?;
    if oid == PBES2 {
        let mut kdf = params.sequence("PBES2 key derivation")?;
        if kdf.expect(OID, "PBES2 key derivation")? != PBKDF2 {
            return Err("PBES2 with a key derivation other than PBKDF2 is not supported".into());
        }
        let mut kdf_params = kdf.sequence("PBKDF2 parameters")?;
        let salt = kdf_params.expect(OCTET_STRING, "PBKDF2 salt")?;
        let rounds = iterations(kdf_params.expect(INTEGER, "PBKDF2 iterations")?)?;
        let mut prf = ring::pbkdf2::PBKDF2_HMAC_SHA1;
        while !kdf_params.is_empty() {
            match kdf_params.read()? {
                (INTEGER, _, _) => {} // key length: implied by the cipher
                (SEQUENCE, content, _) => {
                    prf = match Der(content).expect(OID, "PBKDF2 PRF")? {
                        HMAC_SHA1 => ring::pbkdf2::PBKDF2_HMAC_SHA1,
                        HMAC_SHA256 => ring::pbkdf2::PBKDF2_HMAC_SHA256,
                        HMAC_SHA384 => ring::pbkdf2::PBKDF2_HMAC_SHA384,
                        HMAC_SHA512 => ring::pbkdf2::PBKDF2_HMAC_SHA512,
                        _ => return Err("unsupported PBKDF2 hash".into()),
                    }
                }
                _ => return Err("bad PBKDF2 parameters".into()),
            }
        }
        let mut scheme = params.sequence("PBES2 encryption scheme")?;
        let cipher = scheme.expect(OID, "PBES2 cipher")?;
        let iv = scheme.expect(OCTET_STRING, "PBES2 IV")?;
        let key_len = match cipher {
            AES128_CBC => 16,
            AES192_CBC => 24,
            AES256_CBC => 32,
            _ => return Err("unsupported PBES2 cipher (AES-CBC expected)".into()),
        };
        if iv.len() != 16 {
            return Err("bad AES IV length".into());
        }
        let mut key = vec![0u8; key_len];
        let rounds = std::num::NonZeroU32::new(rounds).ok_or("zero iterations")?;
        ring::pbkdf2::derive(prf, rounds, salt, password.as_bytes(), &mut key);
        let bad_key = |_| "bad AES key".to_string();
        return match key_len {
            16 => cbc_decrypt(
                aes::Aes128::new_from_slice(&key).map_err(bad_key)?,
                iv,
                data,
            ),
            24 => cbc_decrypt(
                aes::Aes192::new_from_slice(&key).map_err(bad_key)?,
                iv,
                data,
            ),
            _ => cbc_decrypt(
                aes::Aes256::new_from_slice(&key).map_err(bad_key)?,
                iv,
                data,
            ),
        };
    }
    // PKCS#12's own password-based encryption: SHA-1 derives both the key and the IV.
    let salt = params.expect(OCTET_STRING, "PBE salt")?;
    let rounds = iterations(params.expect(INTEGER, "PBE iterations")?)?;
    let sha1 = &digest::SHA1_FOR_LEGACY_USE_ONLY;
    let pass = bmp_password(password);
    let derive = |id: u8, n: usize| pkcs12_kdf(sha1, id, &pass, salt, rounds, n);
    match oid {
        PBE_SHA1_3DES => {
            let cipher = des::TdesEde3::new_from_slice(&derive(1, 24))
                .map_err(|_| "bad 3DES key".to_string())?;
            cbc_decrypt(cipher, &derive(2, 8), data)
        }
        PBE_SHA1_RC2_40 | PBE_SHA1_RC2_128 => {
            let bits = if oid == PBE_SHA1_RC2_40 { 40 } else { 128 };
            let cipher = rc2::Rc2::new_with_eff_key_len(&derive(1, bits / 8), bits);
            cbc_decrypt(cipher, &derive(2, 8), data)
        }
        _ => Err("unsupported encryption algorithm".into()),
    }
}

/// CBC decryption with PKCS#7 padding; bad padding means the key was wrong.
fn cbc_decrypt<C>(cipher: C, iv: &[u8], data: &[u8]) -> Result<Vec<u8>, String>
where
    C: BlockDecryptMut + BlockCipher,
{
    cbc::Decryptor::<C>::inner_iv_slice_init(cipher, iv)
        .map_err(|_| "bad CBC IV length".to_string())?
        .decrypt_padded_vec_mut::<Pkcs7>(data)
        .map_err(|_| wrong_password())
}

/// Decrypts an `EncryptedPrivateKeyInfo` (the DER of an `ENCRYPTED PRIVATE KEY` PEM block) to
/// PKCS#8 `PrivateKeyInfo` DER.
pub fn decrypt_pkcs8(der: &[u8], password: &str) -> Result<Vec<u8>, String> {
    let mut epki = Der(der).sequence("EncryptedPrivateKeyInfo")?;
    let alg = epki.expect(SEQUENCE, "key encryption algorithm")?;
    let data = epki.expect(OCTET_STRING, "encrypted key")?;
    let plain = decrypt(alg, data, password)?;
    // A wrong password can still unpad cleanly (1 in 256): the result must parse.
    match Der(&plain).read() {
        Ok((SEQUENCE, _, whole)) if whole.len() == plain.len() => Ok(plain),
        _ => Err(wrong_password()),
    }
}

/// Checks the file's MAC over the authenticated-safe bytes.
fn verify_mac(mac_data: &[u8], content: &[u8], password: &str) -> Result<(), String> {
    let mut mac_data = Der(mac_data);
    let mut digest_info = mac_data.sequence("MAC digest info")?;
    let mut alg = digest_info.sequence("MAC algorithm")?;
    let (kdf_alg, hmac_alg) = match alg.expect(OID, "MAC algorithm")? {
        SHA1 => (
            &digest::SHA1_FOR_LEGACY_USE_ONLY,
            hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        ),
        SHA256 => (&digest::SHA256, hmac::HMAC_SHA256),
        SHA384 => (&digest::SHA384, hmac::HMAC_SHA384),
        SHA512 => (&digest::SHA512, hmac::HMAC_SHA512),
        _ => return Err("unsupported PKCS#12 MAC algorithm".into()),
    };
    let expected = digest_info.expect(OCTET_STRING, "MAC value")?;
    let salt = mac_data.expect(OCTET_STRING, "MAC salt")?;
    let rounds = if mac_data.is_empty() {
        1
    } else {
        iterations(mac_data.expect(INTEGER, "MAC iterations")?)?
    };
    // An empty password is written as just the terminator by OpenSSL, as nothing by others.
    let mut candidates = vec![bmp_password(password)];
    if password.is_empty() {
        candidates.push(Vec::new());
    }
    for pass in candidates {
        let key = pkcs12_kdf(kdf_alg, 3, &pass, salt, rounds, kdf_alg.output_len());
        if hmac::verify(&hmac::Key::new(hmac_alg, &key), content, expected).is_ok() {
            return Ok(());
        }
    }
    Err(wrong_password())
}

/// Reads a PKCS#12 file: checks its MAC, decrypts its safes and returns its keys and
/// certificates.
pub fn decode_pfx(data: &[u8], password: &str) -> Result<Decoded, String> {
    let mut pfx = Der(data).sequence("PFX")?;
    if pfx.expect(INTEGER, "PFX version")? != [3] {
        return Err("not a PKCS#12 version 3 file".into());
    }
    let mut auth_safe = pfx.sequence("PFX content")?;
    if auth_safe.expect(OID, "PFX content type")? != ID_DATA {
        return Err("signed (public-key integrity) PKCS#12 files are not supported".into());
    }
    let octets =
        Der(auth_safe.expect(CONTEXT_0, "PFX content")?).expect(OCTET_STRING, "PFX content")?;
    if pfx.is_empty() {
        return Err("the PKCS#12 file has no MAC (integrity cannot be checked)".into());
    }
    verify_mac(pfx.expect(SEQUENCE, "PFX MAC")?, octets, password)?;

    let mut out = Decoded {
        keys: Vec::new(),
        certs: Vec::new(),
    };
    let mut safes = Der(octets).sequence("AuthenticatedSafe")?;
    while !safes.is_empty() {
        let mut info = safes.sequence("ContentInfo")?;
        let kind = info.expect(OID, "ContentInfo type")?;
        let content = info.expect(CONTEXT_0, "ContentInfo content")?;
        let bags = if kind == ID_DATA {
            Der(content).expect(OCTET_STRING, "SafeContents")?.to_vec()
        } else if kind == ID_ENCRYPTED_DATA {
            let mut encrypted = Der(content).sequence("EncryptedData")?;
            encrypted.expect(INTEGER, "EncryptedData version")?;
            let mut info = encrypted.sequence("EncryptedContentInfo")?;
            info.expect(OID, "EncryptedContentInfo type")?;
            let alg = info.expect(SEQUENCE, "content encryption algorithm")?;
            let data = info.expect(CONTEXT_0_PRIMITIVE, "encrypted content")?;
            decrypt(alg, data, password)?
        } else {
            continue; // enveloped data and the like: nothing a credential uses
        };
        read_bags(&bags, password, &mut out)?;
    }
    Ok(out)
}

fn read_bags(safe_contents: &[u8], password: &str, out: &mut Decoded) -> Result<(), String> {
    let mut bags = Der(safe_contents).sequence("SafeContents")?;
    while !bags.is_empty() {
        let mut bag = bags.sequence("SafeBag")?;
        let kind = bag.expect(OID, "SafeBag type")?;
        let mut value = Der(bag.expect(CONTEXT_0, "SafeBag value")?);
        if kind == KEY_BAG {
            let (_, _, whole) = value.read()?;
            out.keys.push(whole.to_vec());
        } else if kind == SHROUDED_KEY_BAG {
            let (_, _, whole) = value.read()?;
            out.keys.push(decrypt_pkcs8(whole, password)?);
        } else if kind == CERT_BAG {
            let mut cert_bag = value.sequence("CertBag")?;
            if cert_bag.expect(OID, "CertBag type")? == X509_CERTIFICATE {
                let der = Der(cert_bag.expect(CONTEXT_0, "CertBag value")?)
                    .expect(OCTET_STRING, "certificate")?;
                out.certs.push(der.to_vec());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made with OpenSSL 3.0: `openssl pkcs12 -export` (AES-256-CBC, PBKDF2-SHA256, SHA-256
    /// MAC), the same with `-legacy` (3DES key, RC2-40 certificate, SHA-1 MAC), one with an
    /// empty password, and `openssl pkcs8 -topk8 -v2 aes-256-cbc -v2prf hmacWithSHA256`.
    const MODERN: &[u8] = include_bytes!("../../../tests/data/pkcs12/modern.p12");
    const LEGACY: &[u8] = include_bytes!("../../../tests/data/pkcs12/legacy.p12");
    const NO_PASSWORD: &[u8] = include_bytes!("../../../tests/data/pkcs12/nopass.p12");
    const ENCRYPTED_KEY: &str = include_str!("../../../tests/data/pkcs12/enc-key.pem");
    const KEY: &str = include_str!("../../../tests/data/pkcs12/key.pem");
    const CERT: &str = include_str!("../../../tests/data/pkcs12/cert.pem");

    fn der_of(pem_text: &str) -> Vec<u8> {
        pem::parse(pem_text).unwrap().contents().to_vec()
    }

    #[test]
    fn decodes_modern_legacy_and_passwordless_files() {
        for (file, password) in [
            (MODERN, "pass word ü"),
            (LEGACY, "legacy-pass"),
            (NO_PASSWORD, ""),
        ] {
            let d = decode_pfx(file, password).unwrap();
            assert_eq!(d.keys, vec![der_of(KEY)], "{password:?}");
            assert_eq!(d.certs, vec![der_of(CERT)], "{password:?}");
        }
    }

    #[test]
    fn wrong_passwords_are_reported_as_such() {
        for (file, password) in [(MODERN, "pass word u"), (LEGACY, ""), (NO_PASSWORD, "x")] {
            let e = decode_pfx(file, password).err().unwrap();
            assert!(e.contains("wrong AZURE_CLIENT_CERTIFICATE_PASSWORD"), "{e}");
        }
        let e = decrypt_pkcs8(&der_of(ENCRYPTED_KEY), "nope").unwrap_err();
        assert!(e.contains("wrong AZURE_CLIENT_CERTIFICATE_PASSWORD"), "{e}");
    }

    #[test]
    fn decrypts_an_encrypted_pkcs8_key() {
        assert_eq!(
            decrypt_pkcs8(&der_of(ENCRYPTED_KEY), "pem-pass").unwrap(),
            der_of(KEY)
        );
    }

    #[test]
    fn the_key_derivation_matches_rfc_7292_test_vectors() {
        // Published PKCS#12 KDF vectors (SHA-1, password "smeg", salt 0A58CF64530D823F,
        // one iteration): key material (id 1) and IV (id 2).
        let salt = [0x0a, 0x58, 0xcf, 0x64, 0x53, 0x0d, 0x82, 0x3f];
        let pass = bmp_password("smeg");
        let key = pkcs12_kdf(&digest::SHA1_FOR_LEGACY_USE_ONLY, 1, &pass, &salt, 1, 24);
        assert_eq!(
            key,
            [
                0x8a, 0xaa, 0xe6, 0x29, 0x7b, 0x6c, 0xb0, 0x46, 0x42, 0xab, 0x5b, 0x07, 0x78, 0x51,
                0x28, 0x4e, 0xb7, 0x12, 0x8f, 0x1a, 0x2a, 0x7f, 0xbc, 0xa3
            ]
        );
        let iv = pkcs12_kdf(&digest::SHA1_FOR_LEGACY_USE_ONLY, 2, &pass, &salt, 1, 8);
        assert_eq!(iv, [0x79, 0x99, 0x3d, 0xfe, 0x04, 0x8d, 0x3b, 0x76]);
    }

    #[test]
    fn damaged_files_fail_cleanly() {
        // Every truncation and a flipped byte at every position: an error, never a panic, and
        // never keys from a file whose MAC does not match.
        for cut in 0..MODERN.len() {
            assert!(decode_pfx(&MODERN[..cut], "pass word ü").is_err());
        }
        for i in (0..MODERN.len()).step_by(7) {
            let mut bad = MODERN.to_vec();
            bad[i] ^= 0x40;
            if let Ok(d) = decode_pfx(&bad, "pass word ü") {
                // Only bytes outside what the MAC covers (the MAC's own salt) may change and
                // still decode, and then to the same content.
                assert_eq!(d.keys, vec![der_of(KEY)], "byte {i}");
            }
        }
        assert!(decode_pfx(b"\x30\x80\x02\x01\x03", "").is_err());
        assert!(decode_pfx(b"", "").is_err());
    }
}
