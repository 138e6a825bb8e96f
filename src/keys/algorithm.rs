//! Which Key Vault signing algorithm serves a SPIRE SignData request.

use crate::error::PluginError;
use crate::plugin::proto::keymanager::{HashAlgorithm, KeyType};
use crate::plugin::SignerOpts;

/// Go's protobuf enum names, used verbatim in the reference's error messages.
pub(crate) fn key_type_name(t: KeyType) -> &'static str {
    match t {
        KeyType::UnspecifiedKeyType => "UNSPECIFIED_KEY_TYPE",
        KeyType::EcP256 => "EC_P256",
        KeyType::EcP384 => "EC_P384",
        KeyType::Rsa2048 => "RSA_2048",
        KeyType::Rsa4096 => "RSA_4096",
    }
}

pub(crate) fn hash_name(h: HashAlgorithm) -> &'static str {
    match h {
        HashAlgorithm::UnspecifiedHashAlgorithm => "UNSPECIFIED_HASH_ALGORITHM",
        HashAlgorithm::Sha224 => "SHA224",
        HashAlgorithm::Sha256 => "SHA256",
        HashAlgorithm::Sha384 => "SHA384",
        HashAlgorithm::Sha512 => "SHA512",
        HashAlgorithm::Sha3224 => "SHA3_224",
        HashAlgorithm::Sha3256 => "SHA3_256",
        HashAlgorithm::Sha3384 => "SHA3_384",
        HashAlgorithm::Sha3512 => "SHA3_512",
        HashAlgorithm::Sha512224 => "SHA512_224",
        HashAlgorithm::Sha512256 => "SHA512_256",
    }
}

fn digest_len(h: HashAlgorithm) -> usize {
    match h {
        HashAlgorithm::Sha256 => 32,
        HashAlgorithm::Sha384 => 48,
        _ => 64,
    }
}

/// The JOSE algorithm name Key Vault expects, after checking the digest length.
pub(crate) fn select(
    key_type: KeyType,
    opts: SignerOpts,
    digest: &[u8],
) -> Result<&'static str, PluginError> {
    let (hash, pss) = match opts {
        SignerOpts::Hash(h) => (h, false),
        SignerOpts::Pss { hash, .. } => (hash, true),
    };
    if hash == HashAlgorithm::UnspecifiedHashAlgorithm {
        return Err(PluginError::invalid_argument("hash algorithm is required"));
    }
    let is_ec = matches!(key_type, KeyType::EcP256 | KeyType::EcP384);
    if is_ec && pss {
        // The reference silently signs ECDSA here; a PSS request on an EC key is a caller bug.
        return Err(PluginError::invalid_argument(format!(
            "unsupported combination of key type: {} and RSA-PSS signer options",
            key_type_name(key_type)
        )));
    }
    let alg = match (key_type, hash, pss) {
        (KeyType::EcP256, HashAlgorithm::Sha256, false) => "ES256",
        (KeyType::EcP384, HashAlgorithm::Sha384, false) => "ES384",
        (KeyType::Rsa2048 | KeyType::Rsa4096, HashAlgorithm::Sha256, false) => "RS256",
        (KeyType::Rsa2048 | KeyType::Rsa4096, HashAlgorithm::Sha384, false) => "RS384",
        (KeyType::Rsa2048 | KeyType::Rsa4096, HashAlgorithm::Sha512, false) => "RS512",
        (KeyType::Rsa2048 | KeyType::Rsa4096, HashAlgorithm::Sha256, true) => "PS256",
        (KeyType::Rsa2048 | KeyType::Rsa4096, HashAlgorithm::Sha384, true) => "PS384",
        (KeyType::Rsa2048 | KeyType::Rsa4096, HashAlgorithm::Sha512, true) => "PS512",
        _ => {
            return Err(PluginError::invalid_argument(format!(
                "unsupported combination of key type: {} and hashing algorithm: {}",
                key_type_name(key_type),
                hash_name(hash)
            )))
        }
    };
    if digest.len() != digest_len(hash) {
        return Err(PluginError::invalid_argument(format!(
            "data must be a {} digest of {} bytes, got {} bytes",
            hash_name(hash),
            digest_len(hash),
            digest.len()
        )));
    }
    Ok(alg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;

    fn h(x: HashAlgorithm) -> SignerOpts {
        SignerOpts::Hash(x)
    }
    fn pss(x: HashAlgorithm) -> SignerOpts {
        SignerOpts::Pss {
            hash: x,
            salt_length: -1,
        }
    }

    #[test]
    fn reference_table() {
        use HashAlgorithm::*;
        use KeyType::*;
        let cases = [
            (EcP256, h(Sha256), "ES256"),
            (EcP384, h(Sha384), "ES384"),
            (Rsa2048, h(Sha256), "RS256"),
            (Rsa2048, h(Sha384), "RS384"),
            (Rsa2048, h(Sha512), "RS512"),
            (Rsa2048, pss(Sha256), "PS256"),
            (Rsa2048, pss(Sha384), "PS384"),
            (Rsa4096, pss(Sha512), "PS512"),
            (Rsa4096, h(Sha256), "RS256"),
        ];
        for (kt, opts, want) in cases {
            let hash = match opts {
                SignerOpts::Hash(x) | SignerOpts::Pss { hash: x, .. } => x,
            };
            assert_eq!(select(kt, opts, &vec![0; digest_len(hash)]).unwrap(), want);
        }
    }

    #[test]
    fn rejections() {
        let e = select(KeyType::EcP256, h(HashAlgorithm::Sha512), &[0; 64]).unwrap_err();
        assert_eq!(e.code, Code::InvalidArgument);
        assert_eq!(
            e.message,
            "unsupported combination of key type: EC_P256 and hashing algorithm: SHA512"
        );
        let e = select(
            KeyType::EcP256,
            h(HashAlgorithm::UnspecifiedHashAlgorithm),
            &[],
        )
        .unwrap_err();
        assert_eq!(e.message, "hash algorithm is required");
        let e = select(KeyType::EcP256, pss(HashAlgorithm::Sha256), &[0; 32]).unwrap_err();
        assert_eq!(e.code, Code::InvalidArgument);
        assert!(e.message.contains("RSA-PSS"));
        let e = select(KeyType::Rsa2048, h(HashAlgorithm::Sha3256), &[0; 32]).unwrap_err();
        assert!(e.message.contains("SHA3_256"));
        let e = select(KeyType::EcP256, h(HashAlgorithm::Sha256), &[0; 20]).unwrap_err();
        assert_eq!(e.code, Code::InvalidArgument);
    }
}
