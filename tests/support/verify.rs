//! Checks SPIRE-format signatures (ECDSA as ASN.1 DER, RSA raw) against a PKIX public key.

use sha2::Digest;

use azkv::proto::keymanager::HashAlgorithm;

pub fn digest(h: HashAlgorithm, msg: &[u8]) -> Vec<u8> {
    match h {
        HashAlgorithm::Sha256 => sha2::Sha256::digest(msg).to_vec(),
        HashAlgorithm::Sha384 => sha2::Sha384::digest(msg).to_vec(),
        HashAlgorithm::Sha512 => sha2::Sha512::digest(msg).to_vec(),
        other => panic!("no digest for {other:?}"),
    }
}

/// Panics unless `sig` is a valid signature of `digest` by the key in `pkix`.
pub fn verify(pkix: &[u8], h: HashAlgorithm, pss: bool, digest: &[u8], sig: &[u8]) {
    use p256::pkcs8::DecodePublicKey;
    if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(pkix) {
        use p256::ecdsa::signature::hazmat::PrehashVerifier;
        let s = p256::ecdsa::Signature::from_der(sig).expect("P-256 signature is DER");
        k.verify_prehash(digest, &s)
            .expect("P-256 signature verifies");
    } else if let Ok(k) = p384::ecdsa::VerifyingKey::from_public_key_der(pkix) {
        use p384::ecdsa::signature::hazmat::PrehashVerifier;
        let s = p384::ecdsa::Signature::from_der(sig).expect("P-384 signature is DER");
        k.verify_prehash(digest, &s)
            .expect("P-384 signature verifies");
    } else {
        let k = rsa::RsaPublicKey::from_public_key_der(pkix).expect("PKIX parses");
        use rsa::{Pkcs1v15Sign, Pss};
        use sha2::{Sha256, Sha384, Sha512};
        let r = match (h, pss) {
            (HashAlgorithm::Sha256, false) => k.verify(Pkcs1v15Sign::new::<Sha256>(), digest, sig),
            (HashAlgorithm::Sha384, false) => k.verify(Pkcs1v15Sign::new::<Sha384>(), digest, sig),
            (HashAlgorithm::Sha512, false) => k.verify(Pkcs1v15Sign::new::<Sha512>(), digest, sig),
            (HashAlgorithm::Sha256, true) => k.verify(Pss::new::<Sha256>(), digest, sig),
            (HashAlgorithm::Sha384, true) => k.verify(Pss::new::<Sha384>(), digest, sig),
            _ => k.verify(Pss::new::<Sha512>(), digest, sig),
        };
        r.expect("RSA signature verifies");
    }
}
