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
//!
//! The file is not trusted: iteration counts are capped (per derivation and per file), so a
//! hostile file cannot make a token request spin, and the parser never panics
//! (`src/azure/fuzz_tests.rs`). Everything secret this module makes (the password's BMP
//! encoding, derived keys and IVs, decrypted plaintext) lives in `Zeroizing` buffers, wiped
//! when dropped; the block ciphers wipe their key schedules (their `zeroize` features).

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockCipher, BlockDecryptMut, InnerIvInit, KeyInit};
use ring::digest;
use ring::hmac;
use zeroize::Zeroizing;

use crate::der::{
    DerError, Reader, CONTEXT_0, CONTEXT_0_PRIMITIVE, INTEGER, OCTET_STRING, OID, SEQUENCE,
};

/// Why a PKCS#12 file or an encrypted PKCS#8 key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Pkcs12Error {
    #[error(transparent)]
    Der(#[from] DerError),
    /// The MAC does not verify, or the decrypted bytes are not what they should be.
    #[error("cannot decrypt it: wrong AZURE_CLIENT_CERTIFICATE_PASSWORD, or a damaged file")]
    WrongPassword,
    /// An iteration count that is not a small positive integer (`out_of_range`: above `u32`).
    #[error(
        "iteration count: {}",
        if *.out_of_range { "out of range" } else { "not a small positive integer" }
    )]
    BadIterationCount { out_of_range: bool },
    #[error("{0} iteration count 0 is out of range")]
    ZeroIterations(&'static str),
    #[error(
        "its {kind} iteration count {n} is above the limit of {max}; re-export it with \
         fewer iterations"
    )]
    TooManyIterations {
        kind: &'static str,
        n: u32,
        max: u32,
    },
    /// The file's derivations together exceed `MAX_TOTAL_ROUNDS`.
    #[error(
        "its key derivations need more than {MAX_TOTAL_ROUNDS} rounds in total; re-export it \
         with fewer iterations"
    )]
    TooMuchWork,
    /// An algorithm this module does not handle, or a structure it refuses (the text says
    /// which).
    #[error("{0}")]
    Unusable(&'static str),
}

type Result<T> = std::result::Result<T, Pkcs12Error>;
use Pkcs12Error::Unusable;

/// What a PKCS#12 file holds that a client credential needs.
#[derive(Default)]
pub(crate) struct Decoded {
    /// PKCS#8 `PrivateKeyInfo` DER of each private key found.
    pub keys: Vec<Zeroizing<Vec<u8>>>,
    /// DER of each X.509 certificate found, in file order.
    pub certs: Vec<Vec<u8>>,
}

// Object identifiers, as the bytes of their DER content.
const ID_DATA: &[u8] = b"\x2a\x86\x48\x86\xf7\x0d\x01\x07\x01";
const ID_ENCRYPTED_DATA: &[u8] = b"\x2a\x86\x48\x86\xf7\x0d\x01\x07\x06";
const KEY_BAG: &[u8] = b"\x2a\x86\x48\x86\xf7\x0d\x01\x0c\x0a\x01\x01";
const SHROUDED_KEY_BAG: &[u8] = b"\x2a\x86\x48\x86\xf7\x0d\x01\x0c\x0a\x01\x02";
const CERT_BAG: &[u8] = b"\x2a\x86\x48\x86\xf7\x0d\x01\x0c\x0a\x01\x03";
const X509_CERTIFICATE: &[u8] = b"\x2a\x86\x48\x86\xf7\x0d\x01\x09\x16\x01";
const PBES2: &[u8] = b"\x2a\x86\x48\x86\xf7\x0d\x01\x05\x0d";
const PBKDF2: &[u8] = b"\x2a\x86\x48\x86\xf7\x0d\x01\x05\x0c";
const HMAC_SHA1: &[u8] = b"\x2a\x86\x48\x86\xf7\x0d\x02\x07";
const HMAC_SHA256: &[u8] = b"\x2a\x86\x48\x86\xf7\x0d\x02\x09";
const HMAC_SHA384: &[u8] = b"\x2a\x86\x48\x86\xf7\x0d\x02\x0a";
const HMAC_SHA512: &[u8] = b"\x2a\x86\x48\x86\xf7\x0d\x02\x0b";
const AES128_CBC: &[u8] = b"\x60\x86\x48\x01\x65\x03\x04\x01\x02";
const AES192_CBC: &[u8] = b"\x60\x86\x48\x01\x65\x03\x04\x01\x16";
const AES256_CBC: &[u8] = b"\x60\x86\x48\x01\x65\x03\x04\x01\x2a";
const PBE_SHA1_3DES: &[u8] = b"\x2a\x86\x48\x86\xf7\x0d\x01\x0c\x01\x03";
const PBE_SHA1_RC2_128: &[u8] = b"\x2a\x86\x48\x86\xf7\x0d\x01\x0c\x01\x05";
const PBE_SHA1_RC2_40: &[u8] = b"\x2a\x86\x48\x86\xf7\x0d\x01\x0c\x01\x06";
const SHA1: &[u8] = b"\x2b\x0e\x03\x02\x1a";
const SHA256: &[u8] = b"\x60\x86\x48\x01\x65\x03\x04\x02\x01";
const SHA384: &[u8] = b"\x60\x86\x48\x01\x65\x03\x04\x02\x02";
const SHA512: &[u8] = b"\x60\x86\x48\x01\x65\x03\x04\x02\x03";

/// PBKDF2 iterations above this are refused: OpenSSL 3 writes 2048, Windows and Azure about
/// 2000, the most cautious tools up to 600,000. A file asking for more is broken or hostile.
pub(crate) const MAX_PBKDF2_ITERATIONS: u32 = 1_000_000;
/// The same cap for the PKCS#12 key derivation, of encryption keys and of the MAC key (2048 in
/// OpenSSL, 2000 in Windows, 10,000 to 100,000 in Java keystores).
pub(crate) const MAX_PKCS12_KDF_ITERATIONS: u32 = 1_000_000;
/// Key-derivation rounds (iterations times output blocks) one file may cost in total, so that a
/// file with many encrypted parts cannot multiply the per-derivation caps. A file at the caps
/// with the usual three derivations (MAC, certificates, key) fits.
const MAX_TOTAL_ROUNDS: u64 = 8_000_000;

/// The key-derivation rounds left for one file.
pub(crate) struct Work(u64);

impl Work {
    pub(crate) fn new() -> Self {
        Work(MAX_TOTAL_ROUNDS)
    }

    fn charge(&mut self, iterations: u32, blocks: usize) -> Result<()> {
        let rounds = u64::from(iterations).saturating_mul(blocks as u64);
        if rounds > self.0 {
            return Err(Pkcs12Error::TooMuchWork);
        }
        self.0 -= rounds;
        Ok(())
    }
}

/// An iteration count of the derivation `kind`, refused above `max`.
fn iterations(bytes: &[u8], kind: &'static str, max: u32) -> Result<u32> {
    let bad = |out_of_range| Pkcs12Error::BadIterationCount { out_of_range };
    let v = crate::der::small_unsigned(bytes).ok_or(bad(false))?;
    match u32::try_from(v).map_err(|_| bad(true))? {
        0 => Err(Pkcs12Error::ZeroIterations(kind)),
        n if n > max => Err(Pkcs12Error::TooManyIterations { kind, n, max }),
        n => Ok(n),
    }
}

/// The password as PKCS#12's key derivation takes it: UTF-16BE with a two-byte terminator.
fn bmp_password(password: &str) -> Zeroizing<Vec<u8>> {
    // Sized up front (a UTF-16 unit per UTF-8 byte at most): growing would leave a copy behind.
    let mut out = Zeroizing::new(Vec::with_capacity(2 * password.len() + 2));
    for unit in password.encode_utf16() {
        out.extend_from_slice(&unit.to_be_bytes());
    }
    out.extend_from_slice(&[0, 0]);
    out
}

/// RFC 7292 appendix B.2: `n` bytes of key material for purpose `id` (1 key, 2 IV, 3 MAC),
/// charged to `work`.
fn pkcs12_kdf(
    alg: &'static digest::Algorithm,
    id: u8,
    password: &[u8],
    salt: &[u8],
    rounds: u32,
    n: usize,
    work: &mut Work,
) -> Result<Zeroizing<Vec<u8>>> {
    let (u, v) = (alg.output_len(), alg.block_len());
    work.charge(rounds, n.div_ceil(u))?;
    // The salt and the password, each repeated to a whole number of v-byte blocks.
    let filled = |x: &[u8]| v * x.len().div_ceil(v);
    let mut input = Zeroizing::new(Vec::with_capacity(filled(salt) + filled(password)));
    for x in [salt, password] {
        input.extend((0..filled(x)).map(|i| x[i % x.len()]));
    }
    let diversifier = vec![id; v];
    let mut out = Zeroizing::new(Vec::with_capacity(n));
    // The hash chain, in place (no allocation per round, nothing left behind).
    let mut a = Zeroizing::new([0u8; digest::MAX_OUTPUT_LEN]);
    let mut b = Zeroizing::new([0u8; digest::MAX_BLOCK_LEN]);
    loop {
        let mut ctx = digest::Context::new(alg);
        ctx.update(&diversifier);
        ctx.update(&input);
        a[..u].copy_from_slice(ctx.finish().as_ref());
        for _ in 1..rounds {
            let next = digest::digest(alg, &a[..u]);
            a[..u].copy_from_slice(next.as_ref());
        }
        let take = (n - out.len()).min(u);
        out.extend_from_slice(&a[..take]);
        if out.len() >= n {
            return Ok(out);
        }
        // Each v-byte block of the input becomes (block + B + 1) mod 2^(8v).
        for k in 0..v {
            b[k] = a[k % u];
        }
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

/// Decrypts `data` encrypted under the algorithm `alg` (an AlgorithmIdentifier's content).
fn decrypt(alg: &[u8], data: &[u8], password: &str, work: &mut Work) -> Result<Zeroizing<Vec<u8>>> {
    let mut alg = Reader::new(alg);
    let oid = alg.expect(OID, "encryption algorithm")?;
    let mut params = alg.sequence("encryption parameters")?;
    if oid == PBES2 {
        let mut kdf = params.sequence("PBES2 key derivation")?;
        if kdf.expect(OID, "PBES2 key derivation")? != PBKDF2 {
            return Err(Unusable(
                "PBES2 with a key derivation other than PBKDF2 is not supported",
            ));
        }
        let mut kdf_params = kdf.sequence("PBKDF2 parameters")?;
        let salt = kdf_params.expect(OCTET_STRING, "PBKDF2 salt")?;
        let count = kdf_params.expect(INTEGER, "PBKDF2 iterations")?;
        let rounds = iterations(count, "PBKDF2", MAX_PBKDF2_ITERATIONS)?;
        let (mut prf, mut prf_len) = (ring::pbkdf2::PBKDF2_HMAC_SHA1, 20usize);
        while !kdf_params.is_empty() {
            match kdf_params.read()? {
                (INTEGER, _, _) => {} // key length: implied by the cipher
                (SEQUENCE, content, _) => {
                    (prf, prf_len) = match Reader::new(content).expect(OID, "PBKDF2 PRF")? {
                        HMAC_SHA1 => (ring::pbkdf2::PBKDF2_HMAC_SHA1, 20),
                        HMAC_SHA256 => (ring::pbkdf2::PBKDF2_HMAC_SHA256, 32),
                        HMAC_SHA384 => (ring::pbkdf2::PBKDF2_HMAC_SHA384, 48),
                        HMAC_SHA512 => (ring::pbkdf2::PBKDF2_HMAC_SHA512, 64),
                        _ => return Err(Unusable("unsupported PBKDF2 hash")),
                    }
                }
                _ => return Err(Unusable("bad PBKDF2 parameters")),
            }
        }
        let mut scheme = params.sequence("PBES2 encryption scheme")?;
        let cipher = scheme.expect(OID, "PBES2 cipher")?;
        let iv = scheme.expect(OCTET_STRING, "PBES2 IV")?;
        let key_len: usize = match cipher {
            AES128_CBC => 16,
            AES192_CBC => 24,
            AES256_CBC => 32,
            _ => return Err(Unusable("unsupported PBES2 cipher (AES-CBC expected)")),
        };
        if iv.len() != 16 {
            return Err(Unusable("bad AES IV length"));
        }
        work.charge(rounds, key_len.div_ceil(prf_len))?;
        let mut key = Zeroizing::new([0u8; 32]);
        let key = &mut key[..key_len];
        let rounds = std::num::NonZeroU32::new(rounds).ok_or(Unusable("zero iterations"))?;
        ring::pbkdf2::derive(prf, rounds, salt, password.as_bytes(), key);
        let bad_key = |_| Unusable("bad AES key");
        return match key_len {
            16 => cbc_decrypt(aes::Aes128::new_from_slice(key).map_err(bad_key)?, iv, data),
            24 => cbc_decrypt(aes::Aes192::new_from_slice(key).map_err(bad_key)?, iv, data),
            _ => cbc_decrypt(aes::Aes256::new_from_slice(key).map_err(bad_key)?, iv, data),
        };
    }
    // PKCS#12's own password-based encryption: SHA-1 derives both the key and the IV.
    let salt = params.expect(OCTET_STRING, "PBE salt")?;
    let count = params.expect(INTEGER, "PBE iterations")?;
    let rounds = iterations(count, "PKCS#12 key derivation", MAX_PKCS12_KDF_ITERATIONS)?;
    let key_len = match oid {
        PBE_SHA1_3DES => 24,
        PBE_SHA1_RC2_40 => 5,
        PBE_SHA1_RC2_128 => 16,
        _ => return Err(Unusable("unsupported encryption algorithm")),
    };
    let sha1 = &digest::SHA1_FOR_LEGACY_USE_ONLY;
    let pass = bmp_password(password);
    let key = pkcs12_kdf(sha1, 1, &pass, salt, rounds, key_len, work)?;
    let iv = pkcs12_kdf(sha1, 2, &pass, salt, rounds, 8, work)?;
    if oid == PBE_SHA1_3DES {
        let cipher = des::TdesEde3::new_from_slice(&key).map_err(|_| Unusable("bad 3DES key"))?;
        cbc_decrypt(cipher, &iv, data)
    } else {
        cbc_decrypt(rc2::Rc2::new_with_eff_key_len(&key, key_len * 8), &iv, data)
    }
}

/// CBC decryption with PKCS#7 padding; bad padding means the key was wrong.
fn cbc_decrypt<C>(cipher: C, iv: &[u8], data: &[u8]) -> Result<Zeroizing<Vec<u8>>>
where
    C: BlockDecryptMut + BlockCipher,
{
    // A whole number of blocks, decrypted in a buffer that is wiped whatever happens (a wrong
    // password's garbage included).
    let mut buf = Zeroizing::new(data.to_vec());
    let len = cbc::Decryptor::<C>::inner_iv_slice_init(cipher, iv)
        .map_err(|_| Unusable("bad CBC IV length"))?
        .decrypt_padded_mut::<Pkcs7>(&mut buf)
        .map_err(|_| Pkcs12Error::WrongPassword)?
        .len();
    buf.truncate(len);
    Ok(buf)
}

/// Decrypts an `EncryptedPrivateKeyInfo` (the DER of an `ENCRYPTED PRIVATE KEY` PEM block) to
/// PKCS#8 `PrivateKeyInfo` DER.
pub(crate) fn decrypt_pkcs8(der: &[u8], password: &str) -> Result<Zeroizing<Vec<u8>>> {
    decrypt_pkcs8_with(der, password, &mut Work::new())
}

fn decrypt_pkcs8_with(der: &[u8], password: &str, work: &mut Work) -> Result<Zeroizing<Vec<u8>>> {
    let mut epki = Reader::new(der).sequence("EncryptedPrivateKeyInfo")?;
    let alg = epki.expect(SEQUENCE, "key encryption algorithm")?;
    let data = epki.expect(OCTET_STRING, "encrypted key")?;
    let plain = decrypt(alg, data, password, work)?;
    // A wrong password can still unpad cleanly (1 in 256): the result must parse.
    match Reader::new(&plain).read() {
        Ok((SEQUENCE, _, whole)) if whole.len() == plain.len() => Ok(plain),
        _ => Err(Pkcs12Error::WrongPassword),
    }
}

/// Checks the file's MAC over the authenticated-safe bytes.
fn verify_mac(mac_data: &[u8], content: &[u8], password: &str, work: &mut Work) -> Result<()> {
    let mut mac_data = Reader::new(mac_data);
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
        _ => return Err(Unusable("unsupported PKCS#12 MAC algorithm")),
    };
    let expected = digest_info.expect(OCTET_STRING, "MAC value")?;
    let salt = mac_data.expect(OCTET_STRING, "MAC salt")?;
    let mut rounds = 1; // when absent
    if !mac_data.is_empty() {
        let count = mac_data.expect(INTEGER, "MAC iterations")?;
        rounds = iterations(count, "MAC", MAX_PKCS12_KDF_ITERATIONS)?;
    }
    // An empty password is written as just the terminator by OpenSSL, as nothing by others.
    let mut candidates = vec![bmp_password(password)];
    if password.is_empty() {
        candidates.push(Zeroizing::new(Vec::new()));
    }
    for pass in candidates {
        let key = pkcs12_kdf(kdf_alg, 3, &pass, salt, rounds, kdf_alg.output_len(), work)?;
        if hmac::verify(&hmac::Key::new(hmac_alg, &key), content, expected).is_ok() {
            return Ok(());
        }
    }
    Err(Pkcs12Error::WrongPassword)
}

/// Reads a PKCS#12 file: checks its MAC, decrypts its safes and returns its keys and
/// certificates.
pub(crate) fn decode_pfx(data: &[u8], password: &str) -> Result<Decoded> {
    let work = &mut Work::new();
    let mut pfx = Reader::new(data).sequence("PFX")?;
    if pfx.expect(INTEGER, "PFX version")? != [3] {
        return Err(Unusable("not a PKCS#12 version 3 file"));
    }
    let mut auth_safe = pfx.sequence("PFX content")?;
    if auth_safe.expect(OID, "PFX content type")? != ID_DATA {
        return Err(Unusable(
            "signed (public-key integrity) PKCS#12 files are not supported",
        ));
    }
    let octets = Reader::new(auth_safe.expect(CONTEXT_0, "PFX content")?)
        .expect(OCTET_STRING, "PFX content")?;
    if pfx.is_empty() {
        return Err(Unusable(
            "the PKCS#12 file has no MAC (integrity cannot be checked)",
        ));
    }
    verify_mac(pfx.expect(SEQUENCE, "PFX MAC")?, octets, password, work)?;

    let mut out = Decoded::default();
    let mut safes = Reader::new(octets).sequence("AuthenticatedSafe")?;
    while !safes.is_empty() {
        let mut info = safes.sequence("ContentInfo")?;
        let kind = info.expect(OID, "ContentInfo type")?;
        let content = info.expect(CONTEXT_0, "ContentInfo content")?;
        // Plain safe contents may hold an unencrypted key bag: wiped like decrypted ones.
        let bags = if kind == ID_DATA {
            Zeroizing::new(
                Reader::new(content)
                    .expect(OCTET_STRING, "SafeContents")?
                    .to_vec(),
            )
        } else if kind == ID_ENCRYPTED_DATA {
            let mut encrypted = Reader::new(content).sequence("EncryptedData")?;
            encrypted.expect(INTEGER, "EncryptedData version")?;
            let mut info = encrypted.sequence("EncryptedContentInfo")?;
            info.expect(OID, "EncryptedContentInfo type")?;
            let alg = info.expect(SEQUENCE, "content encryption algorithm")?;
            let data = info.expect(CONTEXT_0_PRIMITIVE, "encrypted content")?;
            decrypt(alg, data, password, work)?
        } else {
            continue; // enveloped data and the like: nothing a credential uses
        };
        read_bags(&bags, password, &mut out, work)?;
    }
    Ok(out)
}

fn read_bags(bags: &[u8], password: &str, out: &mut Decoded, work: &mut Work) -> Result<()> {
    let mut bags = Reader::new(bags).sequence("SafeContents")?;
    while !bags.is_empty() {
        let mut bag = bags.sequence("SafeBag")?;
        let kind = bag.expect(OID, "SafeBag type")?;
        let mut value = Reader::new(bag.expect(CONTEXT_0, "SafeBag value")?);
        if kind == KEY_BAG {
            let (_, _, whole) = value.read()?;
            out.keys.push(Zeroizing::new(whole.to_vec()));
        } else if kind == SHROUDED_KEY_BAG {
            let (_, _, whole) = value.read()?;
            out.keys.push(decrypt_pkcs8_with(whole, password, work)?);
        } else if kind == CERT_BAG {
            let mut cert_bag = value.sequence("CertBag")?;
            if cert_bag.expect(OID, "CertBag type")? == X509_CERTIFICATE {
                let der = Reader::new(cert_bag.expect(CONTEXT_0, "CertBag value")?)
                    .expect(OCTET_STRING, "certificate")?;
                out.certs.push(der.to_vec());
            }
        }
    }
    Ok(())
}

/// Test support for the fuzz loops (`src/azure/fuzz_tests.rs`): the authenticated-safe bytes
/// of a PKCS#12 file, and a file around any such bytes with a MAC that verifies, so that
/// mutations reach the bag parser and the decryption instead of stopping at the MAC.
#[cfg(test)]
pub(crate) mod support {
    use super::*;

    pub(crate) use crate::der::tlv as der;
    use crate::der::unsigned_integer;

    /// The authenticated-safe bytes of a PKCS#12 file (what its MAC covers).
    pub(crate) fn authenticated_safe(pfx: &[u8]) -> Option<Vec<u8>> {
        let mut pfx = Reader::new(pfx).sequence("").ok()?;
        pfx.expect(INTEGER, "").ok()?;
        let mut auth_safe = pfx.sequence("").ok()?;
        auth_safe.expect(OID, "").ok()?;
        let content = auth_safe.expect(CONTEXT_0, "").ok()?;
        Some(Reader::new(content).expect(OCTET_STRING, "").ok()?.to_vec())
    }

    /// A PKCS#12 file holding `safe` with a valid SHA-256 MAC for `password` (one iteration).
    pub(crate) fn pfx_with_mac(safe: &[u8], password: &str) -> Vec<u8> {
        let salt = [7u8; 8];
        let key = pkcs12_kdf(
            &digest::SHA256,
            3,
            &bmp_password(password),
            &salt,
            1,
            32,
            &mut Work::new(),
        )
        .expect("one round is within any budget");
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), safe);
        let algorithm = der(SEQUENCE, &[der(OID, SHA256), vec![0x05, 0x00]].concat());
        let digest_info = der(
            SEQUENCE,
            &[algorithm, der(OCTET_STRING, tag.as_ref())].concat(),
        );
        let mac_data = der(
            SEQUENCE,
            &[
                digest_info,
                der(OCTET_STRING, &salt),
                unsigned_integer(&[1]),
            ]
            .concat(),
        );
        let content = der(
            SEQUENCE,
            &[der(OID, ID_DATA), der(CONTEXT_0, &der(OCTET_STRING, safe))].concat(),
        );
        der(SEQUENCE, &[der(INTEGER, &[3]), content, mac_data].concat())
    }
}

#[cfg(test)]
mod tests {
    use super::support::der;
    use super::*;
    use crate::der::unsigned_integer;

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

    fn plain(keys: &[Zeroizing<Vec<u8>>]) -> Vec<Vec<u8>> {
        keys.iter().map(|k| k.to_vec()).collect()
    }

    #[test]
    fn decodes_modern_legacy_and_passwordless_files() {
        for (file, password) in [
            (MODERN, "pass word ü"),
            (LEGACY, "legacy-pass"),
            (NO_PASSWORD, ""),
        ] {
            let d = decode_pfx(file, password).unwrap();
            assert_eq!(plain(&d.keys), vec![der_of(KEY)], "{password:?}");
            assert_eq!(d.certs, vec![der_of(CERT)], "{password:?}");
        }
    }

    #[test]
    fn wrong_passwords_are_reported_as_such() {
        for (file, password) in [(MODERN, "pass word u"), (LEGACY, ""), (NO_PASSWORD, "x")] {
            let e = decode_pfx(file, password).err().unwrap();
            assert!(
                e.to_string()
                    .contains("wrong AZURE_CLIENT_CERTIFICATE_PASSWORD"),
                "{e}"
            );
        }
        let e = decrypt_pkcs8(&der_of(ENCRYPTED_KEY), "nope").unwrap_err();
        assert!(
            e.to_string()
                .contains("wrong AZURE_CLIENT_CERTIFICATE_PASSWORD"),
            "{e}"
        );
    }

    #[test]
    fn decrypts_an_encrypted_pkcs8_key() {
        assert_eq!(
            *decrypt_pkcs8(&der_of(ENCRYPTED_KEY), "pem-pass").unwrap(),
            der_of(KEY)
        );
    }

    #[test]
    fn the_key_derivation_matches_rfc_7292_test_vectors() {
        // Published PKCS#12 KDF vectors (SHA-1, password "smeg", salt 0A58CF64530D823F,
        // one iteration): key material (id 1) and IV (id 2).
        let salt = [0x0a, 0x58, 0xcf, 0x64, 0x53, 0x0d, 0x82, 0x3f];
        let pass = bmp_password("smeg");
        let sha1 = &digest::SHA1_FOR_LEGACY_USE_ONLY;
        let key = pkcs12_kdf(sha1, 1, &pass, &salt, 1, 24, &mut Work::new()).unwrap();
        assert_eq!(
            *key,
            [
                0x8a, 0xaa, 0xe6, 0x29, 0x7b, 0x6c, 0xb0, 0x46, 0x42, 0xab, 0x5b, 0x07, 0x78, 0x51,
                0x28, 0x4e, 0xb7, 0x12, 0x8f, 0x1a, 0x2a, 0x7f, 0xbc, 0xa3
            ]
        );
        let iv = pkcs12_kdf(sha1, 2, &pass, &salt, 1, 8, &mut Work::new()).unwrap();
        assert_eq!(*iv, [0x79, 0x99, 0x3d, 0xfe, 0x04, 0x8d, 0x3b, 0x76]);
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
                assert_eq!(plain(&d.keys), vec![der_of(KEY)], "byte {i}");
            }
        }
        assert!(decode_pfx(b"\x30\x80\x02\x01\x03", "").is_err());
        assert!(decode_pfx(b"", "").is_err());
    }

    /// An `EncryptedPrivateKeyInfo` under PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) asking for
    /// `iterations`, with garbage ciphertext.
    fn pbes2_key(iterations: u32) -> Vec<u8> {
        let params = [
            der(OCTET_STRING, &[1; 8]),
            unsigned_integer(&iterations.to_be_bytes()),
            der(
                SEQUENCE,
                &[der(OID, HMAC_SHA256), vec![0x05, 0x00]].concat(),
            ),
        ];
        let kdf = der(
            SEQUENCE,
            &[der(OID, PBKDF2), der(SEQUENCE, &params.concat())].concat(),
        );
        let scheme = der(
            SEQUENCE,
            &[der(OID, AES256_CBC), der(OCTET_STRING, &[2; 16])].concat(),
        );
        let alg = der(
            SEQUENCE,
            &[der(OID, PBES2), der(SEQUENCE, &[kdf, scheme].concat())].concat(),
        );
        der(SEQUENCE, &[alg, der(OCTET_STRING, &[3; 32])].concat())
    }

    /// The same under PKCS#12's own PBE (SHA-1, 3DES).
    fn pkcs12_pbe_key(iterations: u32) -> Vec<u8> {
        let params = der(
            SEQUENCE,
            &[
                der(OCTET_STRING, &[1; 8]),
                unsigned_integer(&iterations.to_be_bytes()),
            ]
            .concat(),
        );
        let alg = der(SEQUENCE, &[der(OID, PBE_SHA1_3DES), params].concat());
        der(SEQUENCE, &[alg, der(OCTET_STRING, &[3; 32])].concat())
    }

    /// `MODERN` with its MAC iteration count replaced by `iterations`.
    fn modern_with_mac_iterations(iterations: u32) -> Vec<u8> {
        let mut pfx = Reader::new(MODERN).sequence("").unwrap();
        let (_, _, version) = pfx.read().unwrap();
        let (_, _, auth_safe) = pfx.read().unwrap();
        let mut mac = pfx.sequence("").unwrap();
        let (_, _, digest_info) = mac.read().unwrap();
        let (_, _, salt) = mac.read().unwrap();
        let mac = [
            digest_info,
            salt,
            &unsigned_integer(&iterations.to_be_bytes()),
        ]
        .concat();
        der(
            SEQUENCE,
            &[version, auth_safe, &der(SEQUENCE, &mac)].concat(),
        )
    }

    #[test]
    fn iteration_counts_above_the_caps_are_refused_before_any_work() {
        // The test files are well-formed: at a normal count only the password is wrong.
        let wrong = "wrong AZURE_CLIENT_CERTIFICATE_PASSWORD";
        for file in [pbes2_key(2048), pkcs12_pbe_key(2048)] {
            assert!(decrypt_pkcs8(&file, "p")
                .unwrap_err()
                .to_string()
                .contains(wrong));
        }
        assert!(decode_pfx(&modern_with_mac_iterations(2048), "pass word ü").is_ok());

        let started = std::time::Instant::now();
        let e = decrypt_pkcs8(&pbes2_key(MAX_PBKDF2_ITERATIONS + 1), "p").unwrap_err();
        assert!(
            e.to_string()
                .contains("PBKDF2 iteration count 1000001 is above the limit of 1000000"),
            "{e}"
        );
        let e = decrypt_pkcs8(&pkcs12_pbe_key(MAX_PKCS12_KDF_ITERATIONS + 1), "p").unwrap_err();
        assert!(
            e.to_string()
                .contains("PKCS#12 key derivation iteration count 1000001 is above the limit"),
            "{e}"
        );
        let e = decode_pfx(
            &modern_with_mac_iterations(MAX_PKCS12_KDF_ITERATIONS + 1),
            "pass word ü",
        )
        .err()
        .unwrap();
        assert!(
            e.to_string()
                .contains("MAC iteration count 1000001 is above the limit"),
            "{e}"
        );
        let e = decrypt_pkcs8(&pbes2_key(u32::MAX), "p").unwrap_err();
        assert!(e.to_string().contains("above the limit"), "{e}");
        // Refused from the parameters alone: no derivation ran.
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn a_files_total_key_derivation_work_is_bounded() {
        // Three derivations at the caps fit (MAC, certificate safe, key)...
        let mut work = Work::new();
        for _ in 0..3 {
            work.charge(MAX_PBKDF2_ITERATIONS, 2).unwrap();
        }
        // ... but a file cannot multiply them with more encrypted parts.
        let mut work = Work::new();
        let mut refused = None;
        for i in 0..100 {
            if let Err(e) = work.charge(MAX_PBKDF2_ITERATIONS, 1) {
                refused = Some((i, e));
                break;
            }
        }
        let (i, e) = refused.unwrap();
        assert_eq!(
            i as u64,
            MAX_TOTAL_ROUNDS / u64::from(MAX_PBKDF2_ITERATIONS)
        );
        assert!(e.to_string().contains("rounds in total"), "{e}");
        // Decryption draws on the file's budget and stops before deriving when it is spent.
        let mut work = Work(2047);
        let e = decrypt_pkcs8_with(&pbes2_key(2048), "p", &mut work).unwrap_err();
        assert!(e.to_string().contains("rounds in total"), "{e}");
        let mut work = Work(3 * 2048 - 1);
        let e = decrypt_pkcs8_with(&pkcs12_pbe_key(2048), "p", &mut work).unwrap_err();
        assert!(e.to_string().contains("rounds in total"), "{e}");
    }

    #[test]
    fn key_material_is_wiped_when_dropped() {
        use crate::secret::freed::blocks_holding;
        let key = der_of(KEY);
        // Bytes of the private exponent and primes (the modulus, public, comes first).
        let private = &key[key.len() / 2..key.len() / 2 + 32];
        let password = "pass word ü";
        let bmp = bmp_password(password);
        let mac_key = {
            let mut pfx = Reader::new(MODERN).sequence("").unwrap();
            pfx.read().unwrap();
            pfx.read().unwrap();
            let mut mac = pfx.sequence("").unwrap();
            mac.read().unwrap();
            let salt = mac.expect(OCTET_STRING, "").unwrap();
            let rounds = iterations(mac.expect(INTEGER, "").unwrap(), "MAC", u32::MAX).unwrap();
            pkcs12_kdf(&digest::SHA256, 3, &bmp, salt, rounds, 32, &mut Work::new()).unwrap()
        };
        for (what, pattern) in [
            ("the password's BMP encoding", &bmp[..]),
            ("the derived MAC key", &mac_key[..]),
            ("the decrypted key", private),
        ] {
            let ((), found) = blocks_holding(pattern, || {
                for (file, password) in [(MODERN, password), (LEGACY, "legacy-pass")] {
                    let d = decode_pfx(file, password).unwrap();
                    assert_eq!(*d.keys[0], key);
                }
                let d = decrypt_pkcs8(&der_of(ENCRYPTED_KEY), "pem-pass").unwrap();
                assert_eq!(*d, key);
                // A wrong password's failed attempts leave nothing either.
                assert!(decode_pfx(MODERN, "pass word u").is_err());
            });
            assert_eq!(found, 0, "{what} was left in freed memory");
        }
    }
}
