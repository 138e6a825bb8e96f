//! Test PKI for the lowkey-vault backend: a CA and an RSA server certificate for
//! 127.0.0.1/localhost, handed to lowkey as a PKCS#12 keystore (its TLS settings only offer
//! ECDHE_RSA suites on TLS 1.2, hence RSA). The plugin trusts the CA through `SSL_CERT_FILE`.

use std::path::{Path, PathBuf};
use std::process::Command;

use rsa::pkcs8::{EncodePrivateKey, LineEnding};

pub const KEYSTORE_PASSWORD: &str = "changeit";

pub struct TestPki {
    pub ca_pem: PathBuf,
    pub keystore_p12: PathBuf,
}

/// Writes ca.pem, server.pem, server.key and keystore.p12 into `dir`.
pub fn make_lowkey_pki(dir: &Path) -> TestPki {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "azkv e2e test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");

    let rsa_key = rsa::RsaPrivateKey::new(&mut p256::elliptic_curve::rand_core::OsRng, 2048)
        .expect("RSA key");
    let rsa_pem = rsa_key.to_pkcs8_pem(LineEnding::LF).expect("PKCS#8 PEM");
    let srv_key = rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&rsa_pem, &rcgen::PKCS_RSA_SHA256)
        .expect("rcgen RSA key");
    let mut srv_params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("server params");
    srv_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    srv_params.is_ca = rcgen::IsCa::ExplicitNoCa;
    srv_params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    srv_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let srv_cert = srv_params
        .signed_by(&srv_key, &ca_cert, &ca_key)
        .expect("server cert");

    let ca_pem = dir.join("ca.pem");
    let srv_pem = dir.join("server.pem");
    let srv_key_pem = dir.join("server.key");
    let p12 = dir.join("keystore.p12");
    std::fs::write(&ca_pem, ca_cert.pem()).expect("write ca.pem");
    std::fs::write(&srv_pem, srv_cert.pem()).expect("write server.pem");
    std::fs::write(&srv_key_pem, rsa_pem.as_bytes()).expect("write server.key");

    let (ok, out, err) = super::run(
        Command::new("openssl")
            .args(["pkcs12", "-export", "-name", "lowkey-vault"])
            .arg("-in")
            .arg(&srv_pem)
            .arg("-inkey")
            .arg(&srv_key_pem)
            .arg("-certfile")
            .arg(&ca_pem)
            .arg("-out")
            .arg(&p12)
            .arg("-passout")
            .arg(format!("pass:{KEYSTORE_PASSWORD}")),
    );
    assert!(
        ok,
        "openssl pkcs12 -export failed (openssl is needed to build lowkey's keystore):\n{out}\n{err}"
    );
    TestPki {
        ca_pem,
        keystore_p12: p12,
    }
}
