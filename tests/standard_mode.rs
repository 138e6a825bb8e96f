//! Standard mode through the built binary against the fake Key Vault over TLS: the reference's
//! TestGenerateKey / TestSignData / TestGetPublicKey(s) cases, restarts, adoption of the Go
//! plugin's keys, crash healing, rotation and concurrency.

mod support;

use std::sync::Arc;
use std::time::Duration;

use azkv::proto::keymanager::{HashAlgorithm, KeyType, PssOptions, SignerOpts};
use grpcio::RpcStatusCode;
use support::env::{secrets, standard_hcl, start_plugin, TD};
use support::fake_azure::{FakeAzure, FakeKeyType, FaultKind, Route};
use support::verify::{digest, verify};

const SID: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

fn hash(h: HashAlgorithm) -> Option<SignerOpts> {
    Some(SignerOpts::HashAlgorithm(h as i32))
}

fn pss(h: HashAlgorithm, salt: i32) -> Option<SignerOpts> {
    Some(SignerOpts::PssOptions(PssOptions {
        salt_length: salt,
        hash_algorithm: h as i32,
    }))
}

#[test]
fn generate_and_sign_every_type_and_algorithm() {
    let fake = FakeAzure::start();
    let mut p = start_plugin(&fake, &standard_hcl(&fake, SID), &[]);
    let cases = [
        (KeyType::EcP256, HashAlgorithm::Sha256, false, 0),
        (KeyType::EcP384, HashAlgorithm::Sha384, false, 0),
        (KeyType::Rsa2048, HashAlgorithm::Sha256, false, 0),
        (KeyType::Rsa2048, HashAlgorithm::Sha384, false, 0),
        (KeyType::Rsa2048, HashAlgorithm::Sha512, false, 0),
        (KeyType::Rsa2048, HashAlgorithm::Sha256, true, 256),
        (KeyType::Rsa2048, HashAlgorithm::Sha384, true, 384),
        (KeyType::Rsa2048, HashAlgorithm::Sha512, true, 512),
        (KeyType::Rsa4096, HashAlgorithm::Sha256, false, 0),
        (KeyType::Rsa4096, HashAlgorithm::Sha256, true, -1),
    ];
    let mut generated = std::collections::HashMap::new();
    for (kt, h, is_pss, salt) in cases {
        let id = format!("spireKeyID-{}", kt as i32);
        let pk = generated
            .entry(id.clone())
            .or_insert_with(|| p.generate_key(&id, kt).expect("generate"))
            .clone();
        assert_eq!(pk.id, id);
        assert_eq!(p.get_public_key(&id).unwrap(), pk);
        let d = digest(h, b"");
        let opts = if is_pss { pss(h, salt) } else { hash(h) };
        let resp = p.sign(&id, &d, opts).expect("sign");
        assert_eq!(resp.key_fingerprint, pk.fingerprint);
        verify(&pk.pkix_data, h, is_pss, &d, &resp.signature);
    }
    assert_eq!(p.get_public_keys().unwrap().len(), 4);
    // Every key carries the reference's name layout and tags, plus the original id.
    for key in fake.keys() {
        assert!(key.name.starts_with("spire-key-"), "{}", key.name);
        let tags = &key.versions[0].tags;
        assert_eq!(tags["spire-server-td"], TD);
        assert_eq!(tags["spire-server-id"], SID);
        assert!(key.versions[0].key_ops.contains(&"sign".to_string()));
    }
    p.unload();
    p.assert_logs_clean(&secrets(&fake));
}

#[test]
fn reference_error_cases() {
    let fake = FakeAzure::start();
    let p = start_plugin(&fake, &standard_hcl(&fake, SID), &[]);
    p.generate_key("spireKeyID", KeyType::EcP256).unwrap();
    let d = digest(HashAlgorithm::Sha256, b"");
    let (c, m) = p
        .sign(
            "spireKeyID",
            &digest(HashAlgorithm::Sha512, b""),
            hash(HashAlgorithm::Sha512),
        )
        .unwrap_err();
    assert_eq!(
        (c, m.as_str()),
        (
            RpcStatusCode::INVALID_ARGUMENT,
            "unsupported combination of key type: EC_P256 and hashing algorithm: SHA512"
        )
    );
    let (c, m) = p
        .sign(
            "spireKeyID",
            &d,
            hash(HashAlgorithm::UnspecifiedHashAlgorithm),
        )
        .unwrap_err();
    assert_eq!(
        (c, m.as_str()),
        (
            RpcStatusCode::INVALID_ARGUMENT,
            "hash algorithm is required"
        )
    );
    let (c, m) = p
        .sign("does_not_exists", &d, hash(HashAlgorithm::Sha256))
        .unwrap_err();
    assert_eq!(
        (c, m.as_str()),
        (
            RpcStatusCode::NOT_FOUND,
            "key \"does_not_exists\" not found"
        )
    );
    // Strict signing: PSS options on an EC key are refused, not silently signed as ECDSA.
    let (c, _) = p
        .sign("spireKeyID", &d, pss(HashAlgorithm::Sha256, 32))
        .unwrap_err();
    assert_eq!(c, RpcStatusCode::INVALID_ARGUMENT);
    let (c, m) = p.get_public_key("some-other-id").unwrap_err();
    assert_eq!(
        (c, m.as_str()),
        (RpcStatusCode::NOT_FOUND, "key \"some-other-id\" not found")
    );
    fake.inject(
        Route::Sign,
        FaultKind::Status {
            status: 400,
            retry_after: None,
            body: None,
        },
        1,
    );
    let (c, m) = p
        .sign("spireKeyID", &d, hash(HashAlgorithm::Sha256))
        .unwrap_err();
    assert_eq!(c, RpcStatusCode::INTERNAL);
    assert!(m.starts_with("failed to sign: "), "{m}");
    fake.inject(Route::Sign, FaultKind::WrongSignatureLength, 1);
    let (c, m) = p
        .sign("spireKeyID", &d, hash(HashAlgorithm::Sha256))
        .unwrap_err();
    assert_eq!(c, RpcStatusCode::INTERNAL);
    assert!(m.contains("malformed signature response"), "{m}");
}

#[test]
fn restart_reuses_keys_and_acme_ids_survive() {
    let fake = FakeAzure::start();
    let hcl = standard_hcl(&fake, SID);
    let mut p = start_plugin(&fake, &hcl, &[]);
    let ids = [
        "x509-CA-A",
        "JWT-Signer-A",
        "bundle-acme-example.org",
        "bundle-acme-acme_account+key",
    ];
    let mut before = Vec::new();
    for id in ids {
        let pk = p.generate_key(id, KeyType::EcP256).unwrap();
        let d = digest(HashAlgorithm::Sha256, id.as_bytes());
        let s = p.sign(id, &d, hash(HashAlgorithm::Sha256)).unwrap();
        verify(
            &pk.pkix_data,
            HashAlgorithm::Sha256,
            false,
            &d,
            &s.signature,
        );
        before.push(pk);
    }
    for name in fake.key_names() {
        assert!(
            name.len() <= 127 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "{name}"
        );
    }
    p.unload();
    let creates = fake.count(Route::CreateKey);

    let mut p2 = start_plugin(&fake, &hcl, &[]);
    let mut after = p2.get_public_keys().unwrap();
    after.sort_by(|a, b| a.id.cmp(&b.id));
    before.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(after, before);
    assert_eq!(
        fake.count(Route::CreateKey),
        creates,
        "a restart must not create keys"
    );
    p2.unload();
    p2.assert_logs_clean(&secrets(&fake));
}

#[test]
fn adopts_keys_created_by_the_go_plugin() {
    let fake = FakeAzure::start();
    let now = fake.now();
    let tags = [("spire-server-td", TD), ("spire-server-id", SID)];
    fake.insert_key(
        "spire-key-0f8e3e4a-8e16-4b5e-9b0c-1a2b3c4d5e6f-x509-CA-A",
        FakeKeyType::EcP256,
        &tags,
        now,
        now,
        true,
    );
    fake.insert_key(
        "spire-key-1f8e3e4a-8e16-4b5e-9b0c-1a2b3c4d5e6f-JWT-Signer-A",
        FakeKeyType::Rsa2048,
        &tags,
        now,
        now,
        true,
    );
    fake.insert_key(
        "spire-key-2f8e3e4a-8e16-4b5e-9b0c-1a2b3c4d5e6f-x509-CA-B",
        FakeKeyType::EcP256,
        &[("spire-server-td", TD), ("spire-server-id", "other")],
        now,
        now,
        true,
    );
    let p = start_plugin(&fake, &standard_hcl(&fake, SID), &[]);
    let keys = p.get_public_keys().unwrap();
    let ids: Vec<_> = keys.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(ids, vec!["JWT-Signer-A", "x509-CA-A"]);
    let jwt = &keys[0];
    assert_eq!(jwt.r#type, KeyType::Rsa2048 as i32);
    let d = digest(HashAlgorithm::Sha256, b"jwt");
    let s = p
        .sign("JWT-Signer-A", &d, hash(HashAlgorithm::Sha256))
        .unwrap();
    verify(
        &jwt.pkix_data,
        HashAlgorithm::Sha256,
        false,
        &d,
        &s.signature,
    );
    assert_eq!(fake.count(Route::CreateKey), 0);
}

#[test]
fn rotation_deletes_the_replaced_key_and_a_crash_heals_on_restart() {
    let fake = FakeAzure::start();
    let hcl = standard_hcl(&fake, SID);
    let p = start_plugin(&fake, &hcl, &[]);
    let a = p.generate_key("x509-CA-A", KeyType::EcP256).unwrap();
    let first = fake.key_names();
    let b = p.generate_key("x509-CA-A", KeyType::EcP256).unwrap();
    assert_ne!(a.fingerprint, b.fingerprint);
    assert!(
        wait(|| fake.deleted_key_names() == first),
        "rotated-out key not deleted: {:?}",
        fake.deleted_key_names()
    );
    assert_eq!(fake.key_names().len(), 1);
    drop(p);

    // A crash between create and delete leaves two keys for one id: the newest wins, the
    // older is deleted at the next start.
    let now = fake.now();
    let tags = [("spire-server-td", TD), ("spire-server-id", SID)];
    let older = "spire-key-00000000-0000-4000-8000-000000000001-x509-CA-B";
    let newer = "spire-key-00000000-0000-4000-8000-000000000002-x509-CA-B";
    fake.insert_key(
        older,
        FakeKeyType::EcP256,
        &tags,
        now - 60.0,
        now - 60.0,
        true,
    );
    fake.insert_key(newer, FakeKeyType::EcP256, &tags, now, now, true);
    let p = start_plugin(&fake, &hcl, &[]);
    let pk = p.get_public_key("x509-CA-B").unwrap();
    assert_eq!(
        Some(pk.pkix_data.clone()),
        fake.public_key_der(
            newer,
            &fake
                .keys()
                .iter()
                .find(|k| k.name == newer)
                .unwrap()
                .versions[0]
                .version
        )
    );
    assert!(wait(|| fake
        .deleted_key_names()
        .contains(&older.to_string())));
    assert!(fake.key_names().contains(&newer.to_string()));
}

#[test]
fn failed_create_keeps_the_old_key_signing() {
    let fake = FakeAzure::start();
    let p = start_plugin(&fake, &standard_hcl(&fake, SID), &[]);
    let a = p.generate_key("x509-CA-A", KeyType::EcP256).unwrap();
    // More 500s than the client retries.
    fake.inject(
        Route::CreateKey,
        FaultKind::Status {
            status: 500,
            retry_after: Some("0".into()),
            body: None,
        },
        10,
    );
    let (c, m) = p.generate_key("x509-CA-A", KeyType::EcP256).unwrap_err();
    assert_eq!(c, RpcStatusCode::INTERNAL);
    assert!(m.starts_with("failed to create key: "), "{m}");
    let d = digest(HashAlgorithm::Sha256, b"still");
    let s = p
        .sign("x509-CA-A", &d, hash(HashAlgorithm::Sha256))
        .unwrap();
    assert_eq!(s.key_fingerprint, a.fingerprint);
    verify(&a.pkix_data, HashAlgorithm::Sha256, false, &d, &s.signature);
    assert_eq!(fake.key_names().len(), 1);
}

#[test]
fn sixteen_signers_while_another_id_rotates() {
    let fake = FakeAzure::start();
    let p = Arc::new(start_plugin(&fake, &standard_hcl(&fake, SID), &[]));
    let stable = p.generate_key("x509-CA-A", KeyType::EcP256).unwrap();
    p.generate_key("JWT-Signer-A", KeyType::EcP256).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut handles = Vec::new();
    for i in 0..16 {
        let p = Arc::clone(&p);
        let stop = Arc::clone(&stop);
        let stable = stable.clone();
        handles.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || n == 0 {
                let d = digest(HashAlgorithm::Sha256, format!("{i}-{n}").as_bytes());
                let s = p
                    .sign(
                        "x509-CA-A",
                        &d,
                        Some(SignerOpts::HashAlgorithm(HashAlgorithm::Sha256 as i32)),
                    )
                    .expect("sign during rotation");
                assert_eq!(s.key_fingerprint, stable.fingerprint);
                verify(
                    &stable.pkix_data,
                    HashAlgorithm::Sha256,
                    false,
                    &d,
                    &s.signature,
                );
                n += 1;
            }
            n
        }));
    }
    for _ in 0..5 {
        p.generate_key("JWT-Signer-A", KeyType::EcP256).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(total >= 16);
}

#[test]
fn refresh_and_stale_sweep_run_in_the_background() {
    let fake = FakeAzure::start();
    let now = fake.now();
    let stale = now - 15.0 * 86400.0;
    let other = [("spire-server-td", TD), ("spire-server-id", "other-server")];
    fake.insert_key(
        "spire-key-00000000-0000-4000-8000-00000000000a-x509-CA-A",
        FakeKeyType::EcP256,
        &other,
        stale,
        stale,
        true,
    );
    fake.insert_key(
        "spire-key-00000000-0000-4000-8000-00000000000b-x509-CA-A",
        FakeKeyType::EcP256,
        &[("spire-server-td", "other.org"), ("spire-server-id", "x")],
        stale,
        stale,
        true,
    );
    // Never swept: a tag missing, or not our name layout (tags alone never make a key ours).
    fake.insert_key(
        "spire-key-00000000-0000-4000-8000-00000000000c-x509-CA-A",
        FakeKeyType::EcP256,
        &[("spire-server-td", TD)],
        stale,
        stale,
        true,
    );
    fake.insert_key(
        "prod-database-key",
        FakeKeyType::EcP256,
        &other,
        stale,
        stale,
        true,
    );
    let p = start_plugin(
        &fake,
        &standard_hcl(&fake, SID),
        &[(
            "AZKV_TEST_MAINTENANCE",
            "refresh=300ms,sweep=200ms,first_sweep=200ms,max_wait=20ms,backoff=50ms",
        )],
    );
    let pk = p.generate_key("x509-CA-B", KeyType::EcP256).unwrap();
    assert!(
        wait(|| !fake.deleted_key_names().is_empty()),
        "sweep: {:?}",
        fake.deleted_key_names()
    );
    // Several more sweeps run meanwhile (every 200 ms here).
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        fake.deleted_key_names(),
        vec!["spire-key-00000000-0000-4000-8000-00000000000a-x509-CA-A".to_string()]
    );
    // The key in use gets its `updated` bumped by the refresh.
    let own = fake
        .keys()
        .into_iter()
        .find(|k| k.versions[0].tags.get("spire-key-id").map(String::as_str) == Some("x509-CA-B"))
        .unwrap();
    let created = own.versions[0].updated;
    fake.advance(100.0);
    assert!(
        wait(|| fake
            .keys()
            .iter()
            .any(|k| k.name == own.name && k.versions[0].updated > created)),
        "refresh did not happen"
    );
    assert!(fake.count(Route::UpdateKey) >= 1);
    assert_eq!(p.get_public_key("x509-CA-B").unwrap(), pk);
}

fn wait(cond: impl FnMut() -> bool) -> bool {
    azkv_testkit::wait_until(Duration::from_secs(5), Duration::from_millis(10), cond)
}
