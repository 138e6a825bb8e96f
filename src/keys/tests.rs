//! Core tests against the in-memory vault: the reference's TestGenerateKey, TestSignData,
//! TestGetPublicKey(s), discovery and crash-healing cases, and concurrency.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::testing::MemoryVault;
use super::*;
use crate::azure::types::{AzureError, JsonWebKey};
use crate::clock::ManualClock;
use crate::error::Code;
use crate::plugin::proto::keymanager::HashAlgorithm;

const TD: &str = "test.example.org";
const SID: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

fn start() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

struct Fixture {
    km: KeyManager,
    vault: Arc<MemoryVault>,
    clock: ManualClock,
}

fn fixture() -> Fixture {
    let clock = ManualClock::new(start());
    let vault = MemoryVault::new(Arc::new(clock.clone()));
    let v: Arc<dyn KeyVaultApi> = vault.clone();
    let km = KeyManager::new(
        Arc::new(clock.clone()),
        Box::new(move |_cfg: &PluginConfig| Ok(Arc::clone(&v))),
        maintenance::Settings {
            max_wait: Duration::from_millis(5),
            ..Default::default()
        },
        shared::Settings {
            max_jitter: Duration::ZERO,
            ..Default::default()
        },
    );
    Fixture { km, vault, clock }
}

fn core() -> CoreConfiguration {
    CoreConfiguration {
        trust_domain: TD.into(),
    }
}

fn standard_hcl() -> String {
    format!("key_vault_uri = \"https://spire-server.vault.azure.net/\"\nkey_identifier_value = \"{SID}\"")
}

/// Shared keys mode: JWT keys named `spire-test-example-org-<id>`.
fn shared_hcl() -> String {
    format!(
        "{}\nshared_keys {{\n jwt_key_template = \"spire-{{{{ .TrustDomain | replace \\\".\\\" \\\"-\\\" }}}}-{{{{ .KeyID }}}}\"\n key_id_extraction_regex = \"^spire-test-example-org-(.+)$\"\n}}",
        standard_hcl()
    )
}

fn configure(f: &Fixture) {
    f.km.configure(Some(&core()), &standard_hcl()).unwrap();
}

/// The maintenance thread's deletions happen on its own thread, in real time.
fn wait_until(cond: impl FnMut() -> bool) -> bool {
    azkv_testkit::wait_until(Duration::from_secs(2), Duration::from_millis(5), cond)
}

fn digest(h: HashAlgorithm) -> Vec<u8> {
    use sha2::Digest;
    match h {
        HashAlgorithm::Sha256 => sha2::Sha256::digest(b"").to_vec(),
        HashAlgorithm::Sha384 => sha2::Sha384::digest(b"").to_vec(),
        _ => sha2::Sha512::digest(b"").to_vec(),
    }
}

/// Verifies a SPIRE-format signature against the PKIX key.
fn verify(pkix: &[u8], h: HashAlgorithm, pss: bool, sig: &[u8]) {
    use p256::pkcs8::DecodePublicKey;
    let d = digest(h);
    if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(pkix) {
        use p256::ecdsa::signature::hazmat::PrehashVerifier;
        let s = p256::ecdsa::Signature::from_der(sig).unwrap();
        k.verify_prehash(&d, &s).unwrap();
    } else if let Ok(k) = p384::ecdsa::VerifyingKey::from_public_key_der(pkix) {
        use p384::ecdsa::signature::hazmat::PrehashVerifier;
        let s = p384::ecdsa::Signature::from_der(sig).unwrap();
        k.verify_prehash(&d, &s).unwrap();
    } else {
        let k = rsa::RsaPublicKey::from_public_key_der(pkix).unwrap();
        use rsa::{Pkcs1v15Sign, Pss};
        use sha2::{Sha256, Sha384, Sha512};
        let r = match (h, pss) {
            (HashAlgorithm::Sha256, false) => k.verify(Pkcs1v15Sign::new::<Sha256>(), &d, sig),
            (HashAlgorithm::Sha384, false) => k.verify(Pkcs1v15Sign::new::<Sha384>(), &d, sig),
            (HashAlgorithm::Sha512, false) => k.verify(Pkcs1v15Sign::new::<Sha512>(), &d, sig),
            (HashAlgorithm::Sha256, true) => k.verify(Pss::new::<Sha256>(), &d, sig),
            (HashAlgorithm::Sha384, true) => k.verify(Pss::new::<Sha384>(), &d, sig),
            _ => k.verify(Pss::new::<Sha512>(), &d, sig),
        };
        r.unwrap();
    }
}

#[test]
fn generate_sign_and_get_every_type() {
    let f = fixture();
    configure(&f);
    let cases = [
        (KeyType::EcP256, HashAlgorithm::Sha256, false),
        (KeyType::EcP384, HashAlgorithm::Sha384, false),
        (KeyType::Rsa2048, HashAlgorithm::Sha256, false),
        (KeyType::Rsa2048, HashAlgorithm::Sha384, false),
        (KeyType::Rsa2048, HashAlgorithm::Sha512, false),
        (KeyType::Rsa2048, HashAlgorithm::Sha256, true),
        (KeyType::Rsa2048, HashAlgorithm::Sha384, true),
        (KeyType::Rsa2048, HashAlgorithm::Sha512, true),
    ];
    for (i, (kt, h, pss)) in cases.into_iter().enumerate() {
        let id = format!("spireKeyID-{i}");
        let pk = f.km.generate_key(&id, kt).unwrap();
        assert_eq!(pk.id, id);
        assert_eq!(pk.r#type, kt as i32);
        assert_eq!(pk.fingerprint, convert::fingerprint(&pk.pkix_data));
        assert_eq!(f.km.get_public_key(&id).unwrap(), pk);
        let opts = if pss {
            SignerOpts::Pss {
                hash: h,
                salt_length: 256,
            }
        } else {
            SignerOpts::Hash(h)
        };
        let sig = f.km.sign_data(&id, &digest(h), opts).unwrap();
        assert_eq!(sig.key_fingerprint, pk.fingerprint);
        verify(&pk.pkix_data, h, pss, &sig.signature);
    }
    assert_eq!(f.km.get_public_keys().unwrap().len(), 8);
    // Names follow the Go plugin's layout and carry the ownership tags.
    for name in f.vault.names() {
        assert!(
            name.starts_with("spire-key-") && name.len() > naming::ID_OFFSET,
            "{name}"
        );
    }
}

#[test]
fn sign_errors_match_the_reference() {
    let f = fixture();
    configure(&f);
    f.km.generate_key("spireKeyID", KeyType::EcP256).unwrap();
    let e =
        f.km.sign_data(
            "does_not_exists",
            &[0; 32],
            SignerOpts::Hash(HashAlgorithm::Sha256),
        )
        .unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (Code::NotFound, "key \"does_not_exists\" not found")
    );
    let e =
        f.km.sign_data(
            "spireKeyID",
            &[0; 64],
            SignerOpts::Hash(HashAlgorithm::Sha512),
        )
        .unwrap_err();
    assert_eq!(e.code, Code::InvalidArgument);
    assert_eq!(
        e.message,
        "unsupported combination of key type: EC_P256 and hashing algorithm: SHA512"
    );
    let e =
        f.km.sign_data(
            "spireKeyID",
            &[0; 32],
            SignerOpts::Hash(HashAlgorithm::UnspecifiedHashAlgorithm),
        )
        .unwrap_err();
    assert_eq!(e.message, "hash algorithm is required");
    f.vault
        .fail("sign", AzureError::Transport("sign error".into()), 1);
    let e =
        f.km.sign_data(
            "spireKeyID",
            &digest(HashAlgorithm::Sha256),
            SignerOpts::Hash(HashAlgorithm::Sha256),
        )
        .unwrap_err();
    assert_eq!(e.code, Code::Internal);
    assert!(e.message.starts_with("failed to sign: "), "{}", e.message);
    let e = f.km.get_public_key("some-other-id").unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (Code::NotFound, "key \"some-other-id\" not found")
    );
}

/// The Key Vault name and version `id` signs with.
fn cached_name_and_version(f: &Fixture, id: &str) -> (String, String) {
    let e = f.km.active().unwrap().cache.get(id).unwrap();
    (e.name.clone(), e.version.clone())
}

#[test]
fn a_substituted_or_corrupted_signature_is_an_error_never_returned() {
    use super::testing::SignFault;
    let f = fixture();
    configure(&f);
    let cases = [
        (KeyType::EcP256, HashAlgorithm::Sha256, false),
        (KeyType::EcP384, HashAlgorithm::Sha384, false),
        (KeyType::Rsa2048, HashAlgorithm::Sha256, false),
        (KeyType::Rsa2048, HashAlgorithm::Sha512, true),
    ];
    for (i, (kt, h, pss)) in cases.into_iter().enumerate() {
        let id = format!("spireKeyID-{i}");
        let pk = f.km.generate_key(&id, kt).unwrap();
        let (name, version) = cached_name_and_version(&f, &id);
        let opts = if pss {
            SignerOpts::Pss {
                hash: h,
                salt_length: -1,
            }
        } else {
            SignerOpts::Hash(h)
        };
        for fault in [SignFault::OtherKey, SignFault::Corrupt] {
            f.vault.fault_signatures(fault, 1);
            let calls = f.vault.calls("sign");
            let e = f.km.sign_data(&id, &digest(h), opts).unwrap_err();
            assert_eq!(e.code, Code::Internal, "{kt:?} {fault:?}");
            assert_eq!(
                e.message,
                format!("failed to sign: Key Vault returned a signature that does not verify with key {name:?} version {version:?}"),
                "{kt:?} {fault:?}"
            );
            // A wrong answer is not retried.
            assert_eq!(f.vault.calls("sign"), calls + 1);
        }
        // The key itself is fine: the next signature verifies.
        let sig = f.km.sign_data(&id, &digest(h), opts).unwrap();
        verify(&pk.pkix_data, h, pss, &sig.signature);
    }
}

/// A key type to insert, a rewrite of its JWK, and why the result is refused.
type UnsupportedJwk = (&'static str, fn(&mut JsonWebKey), &'static str);

/// JWK rewrites that make a key this plugin must not use, and the reason it gives.
fn unsupported_jwks() -> [UnsupportedJwk; 5] {
    fn b64(b: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }
    fn modulus(k: &JsonWebKey) -> Vec<u8> {
        convert::decode_b64(k.n.as_deref().unwrap()).unwrap()
    }
    [
        (
            "RSA",
            |k| k.e = Some(b64(&[1])),
            "unsupported RSA exponent: 1 (must be odd, 3 to 2^31-1)",
        ),
        (
            "RSA",
            |k| k.e = Some(b64(&[1, 0, 0, 0, 1])),
            "unsupported RSA exponent: larger than 2^31-1",
        ),
        (
            "RSA",
            |k| {
                let mut n = modulus(k);
                n[0] = 0x7f;
                k.n = Some(b64(&n));
            },
            "unsupported RSA key size: 2047 bits",
        ),
        (
            "RSA",
            |k| k.crv = Some("P-256".into()),
            "RSA key with EC members (crv, x or y)",
        ),
        (
            "EC",
            |k| k.e = Some("AQAB".into()),
            "EC key with RSA members (n or e)",
        ),
    ]
}

#[test]
fn discovered_keys_of_an_unsupported_spec_are_refused_naming_the_key() {
    for (kty, edit, reason) in unsupported_jwks() {
        let f = fixture();
        let tags = [("spire-server-td", TD), ("spire-server-id", SID)];
        let version = f.vault.insert(CA_A_NEW, kty, &tags, 1.7e9, 1.7e9);
        f.vault.edit_jwk(CA_A_NEW, edit);
        let e = f.km.configure(Some(&core()), &standard_hcl()).unwrap_err();
        assert_eq!(e.code, Code::Internal);
        assert_eq!(
            e.message,
            format!("failed to fetch key entry details: unsupported key spec: {reason} (key {CA_A_NEW:?} version {version:?})")
        );
    }
}

#[test]
fn a_shared_key_version_of_an_unsupported_spec_is_never_adopted() {
    const SHARED: &str = "spire-test-example-org-JWT-Signer-A";
    let hcl = shared_hcl();
    let (_, edit, reason) = unsupported_jwks()[0];
    let f = fixture();
    f.km.configure(Some(&core()), &hcl).unwrap();
    // Another server just made a fresh version, which this plugin cannot use.
    let now = crate::clock::unix_seconds(f.clock.now());
    let version = f
        .vault
        .insert(SHARED, "RSA", &[("spire-server-td", TD)], now, now);
    f.vault.edit_jwk(SHARED, edit);
    let e =
        f.km.generate_key("JWT-Signer-A", KeyType::Rsa2048)
            .unwrap_err();
    assert_eq!(e.code, Code::Internal);
    assert_eq!(
        e.message,
        format!("unsupported key spec: {reason} (key {SHARED:?} version {version:?})")
    );
    assert!(f.km.get_public_key("JWT-Signer-A").is_err());
    // Nor loaded at start.
    let e = f.km.configure(Some(&core()), &hcl).unwrap_err();
    assert!(e.message.contains("unsupported key spec"), "{}", e.message);
}

#[test]
fn rotation_replaces_the_key_and_deletes_the_old_one() {
    let f = fixture();
    configure(&f);
    let a = f.km.generate_key("id", KeyType::EcP256).unwrap();
    let old_name = f.vault.names()[0].clone();
    let b = f.km.generate_key("id", KeyType::Rsa2048).unwrap();
    assert_ne!(a.fingerprint, b.fingerprint);
    let sig =
        f.km.sign_data(
            "id",
            &digest(HashAlgorithm::Sha256),
            SignerOpts::Hash(HashAlgorithm::Sha256),
        )
        .unwrap();
    assert_eq!(sig.key_fingerprint, b.fingerprint);
    assert!(
        wait_until(|| !f.vault.names().contains(&old_name)),
        "old key not deleted"
    );
    assert_eq!(f.vault.names().len(), 1);
}

#[test]
fn failed_create_keeps_the_old_key_usable() {
    let f = fixture();
    configure(&f);
    let a = f.km.generate_key("id", KeyType::EcP256).unwrap();
    f.vault.fail(
        "create",
        AzureError::Service {
            status: 500,
            code: None,
            inner_code: None,
            message: "something went wrong".into(),
        },
        1,
    );
    let e = f.km.generate_key("id", KeyType::EcP256).unwrap_err();
    assert_eq!(e.code, Code::Internal);
    assert!(
        e.message.starts_with("failed to create key: "),
        "{}",
        e.message
    );
    assert!(e.message.contains("something went wrong"));
    let sig =
        f.km.sign_data(
            "id",
            &digest(HashAlgorithm::Sha256),
            SignerOpts::Hash(HashAlgorithm::Sha256),
        )
        .unwrap();
    assert_eq!(sig.key_fingerprint, a.fingerprint);
    verify(&a.pkix_data, HashAlgorithm::Sha256, false, &sig.signature);
    assert_eq!(f.vault.names().len(), 1);
}

#[test]
fn restart_discovers_the_same_keys_and_creates_none() {
    let f = fixture();
    configure(&f);
    let a = f.km.generate_key("x509-CA-A", KeyType::EcP256).unwrap();
    let b =
        f.km.generate_key("bundle-acme-acme_account+key", KeyType::EcP384)
            .unwrap();
    let creates = f.vault.calls("create");
    // A new process: a fresh KeyManager over the same vault.
    let v: Arc<dyn KeyVaultApi> = f.vault.clone();
    let km2 = KeyManager::new(
        Arc::new(f.clock.clone()),
        Box::new(move |_c: &PluginConfig| Ok(Arc::clone(&v))),
        Default::default(),
        Default::default(),
    );
    km2.configure(Some(&core()), &standard_hcl()).unwrap();
    assert_eq!(km2.get_public_key("x509-CA-A").unwrap(), a);
    assert_eq!(
        km2.get_public_key("bundle-acme-acme_account+key").unwrap(),
        b
    );
    assert_eq!(f.vault.calls("create"), creates);
}

const CA_A_OLD: &str = "spire-key-00000000-0000-4000-8000-000000000001-x509-CA-A";
const CA_A_NEW: &str = "spire-key-00000000-0000-4000-8000-000000000002-x509-CA-A";

/// Inserts one key of this server for `x509-CA-A` created at `created`.
fn insert_ca_a(f: &Fixture, name: &str, created: f64) {
    let tags = [("spire-server-td", TD), ("spire-server-id", SID)];
    f.vault.insert(name, "EC", &tags, created, created);
}

/// Two keys of this server for `x509-CA-A`, `CA_A_OLD` 100 s older than `CA_A_NEW`: what a
/// crash between a rotation and its deletion leaves.
fn insert_old_and_new_ca_a(f: &Fixture) {
    let t = 1_800_000_000.0;
    insert_ca_a(f, CA_A_OLD, t - 100.0);
    insert_ca_a(f, CA_A_NEW, t);
}

/// Signs with `x509-CA-A` and checks the signature came from the key GetPublicKey serves.
fn assert_ca_a_signs_with_the_served_key(f: &Fixture) {
    let sig =
        f.km.sign_data(
            "x509-CA-A",
            &digest(HashAlgorithm::Sha256),
            SignerOpts::Hash(HashAlgorithm::Sha256),
        )
        .unwrap();
    let pk = f.km.get_public_key("x509-CA-A").unwrap();
    assert_eq!(sig.key_fingerprint, pk.fingerprint);
}

#[test]
fn a_key_deleted_between_list_and_load_falls_back_to_the_older_one() {
    let f = fixture();
    insert_old_and_new_ca_a(&f);
    // The newest is listed, then gone when its details are read (deleted meanwhile).
    f.vault.fail("get", MemoryVault::not_found(), 1);
    configure(&f);
    assert_ca_a_signs_with_the_served_key(&f);
    // The key in use is the older one, and it is not queued for deletion as a duplicate.
    f.vault.fail("get", MemoryVault::not_found(), 1);
    let found = discovery::discover(f.vault.as_ref(), TD, SID, None, &|_| false).unwrap();
    assert_eq!(found.entries.len(), 1);
    assert_eq!(found.entries[0].name, CA_A_OLD);
    assert!(found.duplicates.is_empty(), "{:?}", found.duplicates);
    // Nothing left at all for an id: the id is simply absent (SPIRE generates a new key).
    let g = fixture();
    insert_ca_a(&g, CA_A_NEW, 1_800_000_000.0);
    g.vault.fail("get", MemoryVault::not_found(), 1);
    configure(&g);
    assert_eq!(
        g.km.get_public_key("x509-CA-A").unwrap_err().code,
        Code::NotFound
    );
}

#[test]
fn adopts_go_plugin_keys_and_ignores_others() {
    let f = fixture();
    let t = 1_800_000_000.0;
    let mine = "spire-key-0f8e3e4a-8e16-4b5e-9b0c-1a2b3c4d5e6f-x509-CA-A";
    f.vault.insert(
        mine,
        "EC",
        &[("spire-server-td", TD), ("spire-server-id", SID)],
        t,
        t,
    );
    f.vault.insert(
        "spire-key-0f8e3e4a-8e16-4b5e-9b0c-1a2b3c4d5e6f-x509-CA-B",
        "EC",
        &[("spire-server-td", TD), ("spire-server-id", "other")],
        t,
        t,
    );
    f.vault.insert(
        "spire-key-0f8e3e4a-8e16-4b5e-9b0c-1a2b3c4d5e6f-JWT-Signer-A",
        "EC",
        &[("spire-server-td", "other.org"), ("spire-server-id", SID)],
        t,
        t,
    );
    f.vault.insert(
        "short",
        "EC",
        &[("spire-server-td", TD), ("spire-server-id", SID)],
        t,
        t,
    );
    f.vault.insert("untagged", "EC", &[], t, t);
    configure(&f);
    let keys = f.km.get_public_keys().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].id, "x509-CA-A");
}

#[test]
fn crash_between_rotation_and_deletion_heals_on_start() {
    let f = fixture();
    insert_old_and_new_ca_a(&f);
    configure(&f);
    assert_ca_a_signs_with_the_served_key(&f);
    assert!(
        wait_until(|| f.vault.names() == vec![CA_A_NEW.to_string()]),
        "{:?}",
        f.vault.names()
    );
}

#[test]
fn discovery_errors() {
    let f = fixture();
    let t = 1_800_000_000.0;
    let name = "spire-key-00000000-0000-4000-8000-000000000001-x509-CA-A";
    f.vault.insert(
        name,
        "EC",
        &[("spire-server-td", TD), ("spire-server-id", SID)],
        t,
        t,
    );
    f.vault.fail(
        "list",
        AzureError::Transport("fake list keys error".into()),
        1,
    );
    let e = f.km.configure(Some(&core()), &standard_hcl()).unwrap_err();
    assert_eq!(e.code, Code::Internal);
    assert!(
        e.message.starts_with("failed while listing keys: "),
        "{}",
        e.message
    );
    assert!(e.message.contains("fake list keys error"));
    f.vault
        .fail("get", AzureError::Transport("get key error".into()), 1);
    let e = f.km.configure(Some(&core()), &standard_hcl()).unwrap_err();
    assert_eq!(e.code, Code::Internal);
    assert!(
        e.message.contains("failed to fetch key details: "),
        "{}",
        e.message
    );
    assert!(e.message.contains("get key error"));
    f.vault.set_enabled(name, false);
    let e = f.km.configure(Some(&core()), &standard_hcl()).unwrap_err();
    assert_eq!(e.code, Code::FailedPrecondition);
    assert!(
        e.message.contains("found disabled SPIRE key"),
        "{}",
        e.message
    );
}

#[test]
fn failed_reconfigure_keeps_the_old_state() {
    let f = fixture();
    configure(&f);
    let a = f.km.generate_key("id", KeyType::EcP256).unwrap();
    assert!(f
        .km
        .configure(Some(&core()), "key_vault_uri = \"\"")
        .is_err());
    f.vault
        .fail("list", AzureError::Transport("down".into()), 1);
    assert!(f.km.configure(Some(&core()), &standard_hcl()).is_err());
    assert_eq!(f.km.get_public_key("id").unwrap(), a);
    f.km.sign_data(
        "id",
        &digest(HashAlgorithm::Sha256),
        SignerOpts::Hash(HashAlgorithm::Sha256),
    )
    .unwrap();
}

#[test]
fn signing_never_mismatches_under_concurrent_rotation() {
    let f = Arc::new(fixture());
    configure(&f);
    f.km.generate_key("busy", KeyType::EcP256).unwrap();
    f.km.generate_key("rotating", KeyType::EcP256).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut handles = Vec::new();
    for _ in 0..16 {
        let f = Arc::clone(&f);
        let stop = Arc::clone(&stop);
        handles.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for id in ["busy", "rotating"] {
                    let sig =
                        f.km.sign_data(
                            id,
                            &digest(HashAlgorithm::Sha256),
                            SignerOpts::Hash(HashAlgorithm::Sha256),
                        )
                        .unwrap();
                    // The fingerprint always belongs to the key that made the signature.
                    let pk =
                        f.km.get_public_keys()
                            .unwrap()
                            .into_iter()
                            .find(|k| k.fingerprint == sig.key_fingerprint);
                    if let Some(pk) = pk {
                        verify(&pk.pkix_data, HashAlgorithm::Sha256, false, &sig.signature);
                    }
                    n += 1;
                }
            }
            n
        }));
    }
    for _ in 0..20 {
        f.km.generate_key("rotating", KeyType::EcP256).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(total > 0);
}

#[test]
fn shared_keys_converge_and_stay_per_server_for_x509() {
    let f = fixture();
    let hcl = shared_hcl();
    f.km.configure(Some(&core()), &hcl).unwrap();
    let jwt = f.km.generate_key("JWT-Signer-A", KeyType::EcP256).unwrap();
    assert!(
        f.vault
            .names()
            .contains(&"spire-test-example-org-JWT-Signer-A".to_string()),
        "{:?}",
        f.vault.names()
    );
    f.km.generate_key("x509-CA-A", KeyType::EcP256).unwrap();
    assert!(f
        .vault
        .names()
        .iter()
        .any(|n| n.starts_with("spire-key-") && n.ends_with("-x509-CA-A")));
    // A second rotation within the freshness window reuses the version.
    let again = f.km.generate_key("JWT-Signer-A", KeyType::EcP256).unwrap();
    assert_eq!(again, jwt);
    assert_eq!(f.vault.versions("spire-test-example-org-JWT-Signer-A"), 1);
    // Older than 15 minutes: a new version.
    f.clock.advance(Duration::from_secs(16 * 60));
    let rotated = f.km.generate_key("JWT-Signer-A", KeyType::EcP256).unwrap();
    assert_ne!(rotated.fingerprint, jwt.fingerprint);
    assert_eq!(f.vault.versions("spire-test-example-org-JWT-Signer-A"), 2);
}

#[test]
fn validate_reports_shared_key_names_that_configure_would_refuse() {
    let f = fixture();
    let bad = format!(
        "{}\nshared_keys {{\n jwt_key_template = \"spire_{{{{ .KeyID }}}}\"\n key_id_extraction_regex = \"^spire_(.+)$\"\n}}",
        standard_hcl()
    );
    let (valid, notes) = f.km.validate(Some(&core()), &bad);
    assert!(!valid);
    assert!(
        notes[0].contains("not a valid Key Vault key name"),
        "{notes:?}"
    );
    let (valid, notes) = f.km.validate(Some(&core()), &standard_hcl());
    assert!(valid && notes.is_empty(), "{notes:?}");
}

#[test]
fn reconfigure_during_rotations_loses_no_key_and_no_deletion() {
    let f = Arc::new(fixture());
    configure(&f);
    let ids: [&'static str; 4] = ["a", "b", "c", "d"];
    let rotators: Vec<_> = ids
        .into_iter()
        .map(|id| {
            let f = Arc::clone(&f);
            std::thread::spawn(move || {
                let mut last = None;
                for _ in 0..25 {
                    // Key Vault stamps `created` in seconds: keep rotations apart.
                    f.clock.advance(Duration::from_secs(1));
                    last = Some(f.km.generate_key(id, KeyType::EcP256).unwrap());
                }
                last.unwrap()
            })
        })
        .collect();
    for _ in 0..10 {
        configure(&f);
    }
    let last: Vec<PublicKey> = rotators.into_iter().map(|h| h.join().unwrap()).collect();
    // Every id serves the key its last GenerateKey returned, not one a reconfigure's discovery
    // saw before that GenerateKey finished.
    for (id, pk) in ids.iter().zip(&last) {
        assert_eq!(&f.km.get_public_key(id).unwrap(), pk, "{id}");
    }
    // And every key rotated out was deleted, whichever configuration queued it.
    assert!(
        wait_until(|| f.vault.names().len() == ids.len()),
        "left in the vault: {:?}",
        f.vault.names()
    );
}
