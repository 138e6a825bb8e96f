//! Fault matrix through the built binary against the fake Key Vault (issue 8): throttling,
//! server errors, connection resets, broken bodies, wrong key material, a token endpoint that
//! goes down, expiring and revoked tokens, and a `kill -9` in the middle of GenerateKey.
//!
//! Every test ends the same way: the plugin still answers (GetPublicKeys, and a SignData that
//! verifies against the key in use), the keys in use are live in the fake, nothing of this
//! server was deleted that should not have been, and every log line is clean hclog JSON without
//! a secret.
//!
//! Timeouts: the client's per-call timeout is 30 s (`CALL_TIMEOUT` in src/azure/http.rs), too
//! slow to trigger here, so a request dying mid-way is covered by `DropConnection` (no answer)
//! and `TruncatedBody` (the connection closes inside the body); the client classifies a timeout
//! as the same retryable transport error.

mod support;

use std::time::{Duration, Instant};

use azkv::proto::keymanager::{HashAlgorithm, KeyType, PublicKey, SignerOpts};
use grpcio::RpcStatusCode;
use support::env::{plugin_env, secrets, standard_hcl, start_plugin, TD};
use support::fake_azure::{FakeAzure, FaultKind, Route};
use support::plugin_host::PluginProcess;
use support::verify::{digest, verify};

const SID: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

fn sha(h: HashAlgorithm) -> Option<SignerOpts> {
    Some(SignerOpts::HashAlgorithm(h as i32))
}

fn hash_for(pk: &PublicKey) -> HashAlgorithm {
    if pk.r#type == KeyType::EcP384 as i32 {
        HashAlgorithm::Sha384
    } else {
        HashAlgorithm::Sha256
    }
}

fn status(code: u16, retry_after: Option<&str>) -> FaultKind {
    FaultKind::Status {
        status: code,
        retry_after: retry_after.map(str::to_string),
        body: None,
    }
}

/// Signs with `pk.id` and checks the signature against `pk` (and the fingerprint).
fn sign_verifies(p: &PluginProcess, pk: &PublicKey, msg: &[u8]) {
    let h = hash_for(pk);
    let d = digest(h, msg);
    let s = p
        .sign(&pk.id, &d, sha(h))
        .unwrap_or_else(|e| panic!("SignData {}: {e:?}", pk.id));
    assert_eq!(s.key_fingerprint, pk.fingerprint);
    verify(&pk.pkix_data, h, false, &d, &s.signature);
}

/// The live (not deleted) fake key whose latest version holds `pk`.
fn live_name_of(fake: &FakeAzure, pk: &PublicKey) -> Option<String> {
    fake.keys()
        .into_iter()
        .filter(|k| !k.deleted)
        .find(|k| fake.public_key_der(&k.name, "").as_deref() == Some(pk.pkix_data.as_slice()))
        .map(|k| k.name)
}

/// Live fake keys tagged for this server and SPIRE key id `id`.
fn live_keys_for(fake: &FakeAzure, id: &str) -> Vec<String> {
    fake.keys()
        .into_iter()
        .filter(|k| !k.deleted)
        .filter(|k| {
            k.versions.last().is_some_and(|v| {
                v.tags.get("spire-key-id").map(String::as_str) == Some(id)
                    && v.tags.get("spire-server-id").map(String::as_str) == Some(SID)
            })
        })
        .map(|k| k.name)
        .collect()
}

/// The end state every test must reach: the plugin answers, publishes exactly `in_use`, signs
/// with each of them (verified), and each lives in the fake; the deleted keys are exactly
/// `deleted`; SPIRE's unload still works; the logs are clean.
fn assert_healthy(
    mut p: PluginProcess,
    fake: &FakeAzure,
    in_use: &[&PublicKey],
    deleted: &[String],
) {
    let mut published = p.get_public_keys().expect("GetPublicKeys after the faults");
    published.sort_by(|a, b| a.id.cmp(&b.id));
    let mut want: Vec<PublicKey> = in_use.iter().map(|k| (*k).clone()).collect();
    want.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(published, want, "published keys changed");
    for pk in in_use {
        sign_verifies(&p, pk, b"still alive after the faults");
        assert!(
            live_name_of(fake, pk).is_some(),
            "key in use for {} is not live in the vault",
            pk.id
        );
    }
    let mut got = fake.deleted_key_names();
    got.sort();
    let mut want_deleted = deleted.to_vec();
    want_deleted.sort();
    assert_eq!(got, want_deleted, "unexpected deletions");
    // A clean unload (which also spares the host the slow teardown of a channel to a dead
    // process).
    p.unload();
    assert!(p.exited.is_some_and(|s| s.success()), "{:?}", p.exited);
    p.assert_logs_clean(&secrets(fake));
}

/// Bounded poll for background work (maintenance deletions, a killed request finishing).
fn wait_until(limit: Duration, cond: impl FnMut() -> bool) -> bool {
    azkv_testkit::wait_until(limit, Duration::from_millis(10), cond)
}

/// Statuses the fake answered for `route` since the last `reset_log`.
fn statuses(fake: &FakeAzure, route: Route) -> Vec<u16> {
    fake.requests()
        .iter()
        .filter(|r| r.route == route)
        .map(|r| r.status)
        .collect()
}

// ---------------------------------------------------------------------------------------
// 429 storms

#[test]
fn throttled_sign_waits_for_retry_after_and_succeeds() {
    let fake = FakeAzure::start();
    let p = start_plugin(&fake, &standard_hcl(&fake, SID), &[]);
    let pk = p.generate_key("x509-CA-A", KeyType::EcP256).unwrap();

    fake.reset_log();
    fake.inject(Route::Sign, status(429, Some("1")), 3);
    let start = Instant::now();
    sign_verifies(&p, &pk, b"throttled");
    let took = start.elapsed();
    assert_eq!(statuses(&fake, Route::Sign), vec![429, 429, 429, 200]);
    // Retry-After: 1 three times, honored (not the 0.8 s back-off schedule, not skipped).
    assert!(took >= Duration::from_millis(2900), "took {took:?}");
    assert!(took < Duration::from_secs(15), "took {took:?}");

    // A hint that would end past the operation's 25 s deadline is not waited for: a prompt,
    // clear failure.
    fake.reset_log();
    fake.inject(Route::Sign, status(429, Some("120")), 1);
    let start = Instant::now();
    let d = digest(HashAlgorithm::Sha256, b"x");
    let (c, m) = p.sign(&pk.id, &d, sha(HashAlgorithm::Sha256)).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(c, RpcStatusCode::INTERNAL);
    assert!(
        m.starts_with("failed to sign: Key Vault returned HTTP 429"),
        "{m}"
    );
    assert!(
        m.contains("the vault asked to wait 120 s before a retry"),
        "{m}"
    );
    assert_eq!(statuses(&fake, Route::Sign), vec![429]);
    assert!(p.wait_for_log(
        "asking to wait 120 s, past the 25 s deadline",
        Duration::from_secs(2)
    ));
    // That 429 paused every caller for 10 s (the cap on a shared pause), not 120 s: the next
    // sign waits it out and succeeds.
    let start = Instant::now();
    sign_verifies(&p, &pk, b"after the pause");
    let took = start.elapsed();
    assert!(took >= Duration::from_secs(8), "took {took:?}");
    assert!(took < Duration::from_secs(15), "took {took:?}");

    assert_healthy(p, &fake, &[&pk], &[]);
}

/// A burst against a vault limited to 50 signs/s (token bucket 2 deep, 429 + `Retry-After: 1`
/// over it): 16 signers, 150 signatures. Retrying on their own (3 times each, as before
/// `src/azure/throttle.rs`), more than half of them failed. The signers share the vault's pause and the learned rate,
/// so throttling fails none of them.
#[test]
fn a_throttled_burst_fails_no_signature() {
    const LIMIT: f64 = 50.0;
    const SIGNERS: usize = 16;
    const SIGNATURES: usize = 150;
    const BURST: f64 = 2.0;
    let fake = FakeAzure::start();
    let p = std::sync::Arc::new(start_plugin(&fake, &standard_hcl(&fake, SID), &[]));
    let pk = p.generate_key("x509-CA-A", KeyType::EcP256).unwrap();
    fake.reset_log();
    fake.limit_signs(LIMIT, BURST);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..SIGNERS)
        .map(|_| {
            let (p, pk, next) = (p.clone(), pk.clone(), next.clone());
            std::thread::spawn(move || {
                let mut failed = Vec::new();
                let mut slowest = Duration::ZERO;
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if n >= SIGNATURES {
                        return (failed, slowest);
                    }
                    let d = digest(HashAlgorithm::Sha256, format!("burst {n}").as_bytes());
                    let t = Instant::now();
                    match p.sign(&pk.id, &d, sha(HashAlgorithm::Sha256)) {
                        Ok(s) => verify(
                            &pk.pkix_data,
                            HashAlgorithm::Sha256,
                            false,
                            &d,
                            &s.signature,
                        ),
                        Err(e) => failed.push(format!("{e:?}")),
                    }
                    slowest = slowest.max(t.elapsed());
                }
            })
        })
        .collect();
    // Cached reads never wait behind the throttled signatures.
    let mut slowest_read = Duration::ZERO;
    while next.load(std::sync::atomic::Ordering::SeqCst) < SIGNATURES {
        let t = Instant::now();
        assert_eq!(p.get_public_key(&pk.id).unwrap(), pk);
        slowest_read = slowest_read.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut failed = Vec::new();
    let mut slowest = Duration::ZERO;
    for h in handles {
        let (f, s) = h.join().unwrap();
        failed.extend(f);
        slowest = slowest.max(s);
    }
    let elapsed = start.elapsed();
    let answers = statuses(&fake, Route::Sign);
    let throttled = answers.iter().filter(|s| **s == 429).count();
    let rate = SIGNATURES as f64 / elapsed.as_secs_f64();
    eprintln!(
        "{SIGNATURES} signatures by {SIGNERS} signers in {elapsed:.2?}: {rate:.1}/s against a \
         limit of {LIMIT}/s (burst {BURST}); {throttled} of {} sign requests answered 429; \
         slowest signature {slowest:.2?}, slowest GetPublicKey meanwhile {slowest_read:.2?}",
        answers.len()
    );
    assert!(failed.is_empty(), "{} failed: {failed:?}", failed.len());
    assert_eq!(answers.iter().filter(|s| **s == 200).count(), SIGNATURES);
    assert!(throttled > 0, "the limit was never reached: {answers:?}");
    // No signature came near SPIRE's 30 s.
    assert!(slowest < Duration::from_secs(20), "{slowest:?}");
    // Well under the 1 s pauses the signers waited through.
    assert!(
        slowest_read < Duration::from_millis(500),
        "{slowest_read:?}"
    );
    let p = std::sync::Arc::into_inner(p).unwrap();
    assert_healthy(p, &fake, &[&pk], &[]);
}

#[test]
fn throttled_create_retries_without_duplicating_keys() {
    let fake = FakeAzure::start();
    let p = start_plugin(&fake, &standard_hcl(&fake, SID), &[]);
    let old = p.generate_key("x509-CA-A", KeyType::EcP256).unwrap();
    let old_name = live_name_of(&fake, &old).unwrap();

    fake.reset_log();
    fake.inject(Route::CreateKey, status(429, Some("1")), 2);
    let start = Instant::now();
    let new = p.generate_key("x509-CA-A", KeyType::EcP256).unwrap();
    assert!(start.elapsed() >= Duration::from_millis(1900));
    assert_eq!(statuses(&fake, Route::CreateKey), vec![429, 429, 200]);
    assert_ne!(new.fingerprint, old.fingerprint);
    // The rotated-out key goes; exactly one key remains for the id.
    assert!(wait_until(Duration::from_secs(5), || fake
        .deleted_key_names()
        .contains(&old_name)));
    assert_eq!(live_keys_for(&fake, "x509-CA-A").len(), 1);
    assert_healthy(p, &fake, &[&new], &[old_name]);
}

// ---------------------------------------------------------------------------------------
// 500/503 bursts

#[test]
fn server_error_bursts_are_retried_then_reported() {
    let fake = FakeAzure::start();
    // A burst during discovery: list and get both retried, Configure succeeds.
    let hcl = standard_hcl(&fake, SID);
    let mut p = start_plugin(&fake, &hcl, &[]);
    let pk = p.generate_key("x509-CA-A", KeyType::EcP256).unwrap();
    let rsa = p.generate_key("JWT-Signer-A", KeyType::Rsa2048).unwrap();
    p.unload();

    fake.reset_log();
    fake.inject(Route::ListKeys, status(503, Some("0")), 2);
    fake.inject(Route::GetKey, status(500, Some("0")), 2);
    let p = start_plugin(&fake, &hcl, &[]);
    assert_eq!(statuses(&fake, Route::ListKeys), vec![503, 503, 200]);
    assert_eq!(
        statuses(&fake, Route::GetKey)
            .iter()
            .filter(|s| **s == 500)
            .count(),
        2
    );

    // A short burst on sign, one without a hint (the 0.8 s back-off applies).
    fake.reset_log();
    fake.inject(Route::Sign, status(500, None), 1);
    fake.inject(Route::Sign, status(503, Some("0")), 1);
    fake.inject(Route::Sign, status(502, Some("0")), 1);
    let start = Instant::now();
    sign_verifies(&p, &pk, b"burst");
    assert!(start.elapsed() >= Duration::from_millis(750));
    assert_eq!(statuses(&fake, Route::Sign), vec![500, 503, 502, 200]);

    // A burst longer than the retries: 4 attempts, then a clear error; the next call works.
    fake.reset_log();
    fake.inject(Route::Sign, status(503, Some("0")), 4);
    let d = digest(HashAlgorithm::Sha256, b"down");
    let (c, m) = p.sign(&rsa.id, &d, sha(HashAlgorithm::Sha256)).unwrap_err();
    assert_eq!(c, RpcStatusCode::INTERNAL);
    assert!(
        m.starts_with("failed to sign: Key Vault returned HTTP 503 (ServiceUnavailable)"),
        "{m}"
    );
    assert_eq!(statuses(&fake, Route::Sign), vec![503; 4]);
    assert_eq!(fake.pending_faults(), 0);
    sign_verifies(&p, &rsa, b"recovered");

    // A failed create (500s past the retries) leaves the old key signing, no new key.
    fake.inject(Route::CreateKey, status(500, Some("0")), 4);
    let (c, m) = p.generate_key("x509-CA-A", KeyType::EcP256).unwrap_err();
    assert_eq!(c, RpcStatusCode::INTERNAL);
    assert!(m.starts_with("failed to create key: "), "{m}");
    assert_eq!(live_keys_for(&fake, "x509-CA-A").len(), 1);

    assert_healthy(p, &fake, &[&pk, &rsa], &[]);
}

// ---------------------------------------------------------------------------------------
// Connection resets and requests dying mid-way

#[test]
fn connection_resets_and_truncated_bodies_are_retried() {
    let fake = FakeAzure::start();
    let hcl = standard_hcl(&fake, SID);
    let mut p = start_plugin(&fake, &hcl, &[]);
    let old = p.generate_key("x509-CA-A", KeyType::EcP256).unwrap();
    let old_name = live_name_of(&fake, &old).unwrap();

    fake.reset_log();
    fake.inject(Route::Sign, FaultKind::DropConnection, 1);
    fake.inject(Route::Sign, FaultKind::TruncatedBody, 1);
    sign_verifies(&p, &old, b"reset");
    assert_eq!(statuses(&fake, Route::Sign), vec![0, 200, 200]);

    // Create: the dropped attempt created nothing, the retry creates exactly one key.
    fake.reset_log();
    fake.inject(Route::CreateKey, FaultKind::DropConnection, 1);
    fake.inject(Route::CreateKey, FaultKind::TruncatedBody, 1);
    let new = p.generate_key("x509-CA-A", KeyType::EcP256).unwrap();
    assert_eq!(statuses(&fake, Route::CreateKey), vec![0, 200, 200]);
    assert!(wait_until(Duration::from_secs(5), || fake
        .deleted_key_names()
        .contains(&old_name)));
    assert_eq!(live_keys_for(&fake, "x509-CA-A").len(), 1);

    // Discovery through resets: list and get.
    p.unload();
    fake.reset_log();
    fake.inject(Route::ListKeys, FaultKind::TruncatedBody, 1);
    fake.inject(Route::GetKey, FaultKind::DropConnection, 1);
    let p = start_plugin(&fake, &hcl, &[]);
    assert_eq!(statuses(&fake, Route::ListKeys), vec![200, 200]);
    assert_eq!(statuses(&fake, Route::GetKey), vec![0, 200]);
    assert_eq!(p.get_public_key("x509-CA-A").unwrap(), new);

    // More resets than retries: a clear transport error naming the request, then recovery.
    fake.reset_log();
    fake.inject(Route::Sign, FaultKind::DropConnection, 4);
    let d = digest(HashAlgorithm::Sha256, b"x");
    let (c, m) = p.sign(&new.id, &d, sha(HashAlgorithm::Sha256)).unwrap_err();
    assert_eq!(c, RpcStatusCode::INTERNAL);
    assert!(
        m.starts_with("failed to sign: transport error: POST https://127.0.0.1:"),
        "{m}"
    );
    assert!(m.contains("/sign"), "{m}");
    assert!(
        !m.contains("api-version"),
        "the query stays out of errors: {m}"
    );
    assert_eq!(statuses(&fake, Route::Sign), vec![0; 4]);

    assert_healthy(p, &fake, &[&new], &[old_name]);
}

// ---------------------------------------------------------------------------------------
// Malformed and truncated JSON

#[test]
fn malformed_bodies_fail_cleanly_without_losing_keys() {
    let fake = FakeAzure::start();
    let hcl = standard_hcl(&fake, SID);
    let mut p = start_plugin(&fake, &hcl, &[]);
    let pk = p.generate_key("x509-CA-A", KeyType::EcP256).unwrap();

    // Sign: a 200 with broken JSON is not retried (it is not transient) and is reported.
    fake.reset_log();
    fake.inject(Route::Sign, FaultKind::MalformedBody, 1);
    let d = digest(HashAlgorithm::Sha256, b"x");
    let (c, m) = p.sign(&pk.id, &d, sha(HashAlgorithm::Sha256)).unwrap_err();
    assert_eq!(c, RpcStatusCode::INTERNAL);
    assert!(
        m.starts_with(
            "failed to sign: malformed response: sign: unexpected response body (HTTP 200)"
        ),
        "{m}"
    );
    assert_eq!(statuses(&fake, Route::Sign), vec![200]);

    // Create: GenerateKey fails, the old key keeps signing.
    fake.inject(Route::CreateKey, FaultKind::MalformedBody, 1);
    let (c, m) = p.generate_key("x509-CA-A", KeyType::EcP256).unwrap_err();
    assert_eq!(c, RpcStatusCode::INTERNAL);
    assert!(
        m.starts_with(
            "failed to create key: malformed response: create key: unexpected response body"
        ),
        "{m}"
    );
    sign_verifies(&p, &pk, b"old key still signs");
    // Key Vault may have created that key before the answer broke: the plugin deletes the
    // name it asked for (here the fake created nothing, so the delete finds nothing).
    let asked = fake
        .requests()
        .iter()
        .rev()
        .find(|r| r.route == Route::CreateKey)
        .and_then(|r| r.path.strip_suffix("/create").map(str::to_string))
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || fake.requests().iter().any(|r| r
            .route
            == Route::DeleteKey
            && r.path == asked
            && r.status == 404)),
        "no cleanup of {asked}"
    );
    p.unload();

    // Discovery: a broken list or get fails Configure with a clear error and deletes nothing;
    // the next Configure works and finds the same key.
    for (route, kind, want) in [
        (
            Route::ListKeys,
            FaultKind::MalformedBody,
            "failed while listing keys: malformed response: list keys: unexpected response body",
        ),
        (
            Route::GetKey,
            FaultKind::MalformedBody,
            "failed to fetch key entry details: failed to fetch key details: malformed response: get key: unexpected response body",
        ),
        (
            Route::ListKeys,
            FaultKind::TruncatedBody,
            "failed while listing keys: transport error: GET https://127.0.0.1:",
        ),
    ] {
        let env = plugin_env(&fake, &[]);
        let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut p = PluginProcess::launch(&refs);
        p.init().unwrap();
        // Truncation is retried like any transport error: fail every attempt.
        let times = if matches!(kind, FaultKind::TruncatedBody) { 4 } else { 1 };
        fake.inject(route, kind, times);
        let (c, m) = p.configure(TD, &hcl).unwrap_err();
        assert_eq!(c, RpcStatusCode::INTERNAL, "{m}");
        assert!(m.starts_with(want), "{route:?}: {m}");
        assert_eq!(fake.pending_faults(), 0);
        p.configure(TD, &hcl).expect("configure after the fault");
        assert_eq!(p.get_public_key("x509-CA-A").unwrap(), pk);
        assert!(fake.deleted_key_names().is_empty());
        p.assert_logs_clean(&secrets(&fake));
        p.unload();
    }

    let p = start_plugin(&fake, &hcl, &[]);
    assert_eq!(live_keys_for(&fake, "x509-CA-A").len(), 1);
    assert_healthy(p, &fake, &[&pk], &[]);
}

// ---------------------------------------------------------------------------------------
// Wrong key material

#[test]
fn wrong_key_type_on_create_fails_and_the_unusable_key_is_deleted() {
    let fake = FakeAzure::start();
    let p = start_plugin(&fake, &standard_hcl(&fake, SID), &[]);
    let ec = p.generate_key("x509-CA-A", KeyType::EcP256).unwrap();
    let rsa = p.generate_key("JWT-Signer-A", KeyType::Rsa2048).unwrap();
    let before = fake.key_names();

    // EC P-256 created, answered as P-384 (coordinates off that curve).
    fake.inject(Route::CreateKey, FaultKind::WrongKeyType, 1);
    let (c, m) = p.generate_key("x509-CA-A", KeyType::EcP256).unwrap_err();
    assert_eq!(c, RpcStatusCode::INTERNAL);
    assert_eq!(
        m,
        "failed to marshal public key: EC public key is not a point on P-384"
    );
    // RSA created, answered as an EC key without coordinates.
    fake.inject(Route::CreateKey, FaultKind::WrongKeyType, 1);
    let (c, m) = p
        .generate_key("JWT-Signer-A", KeyType::Rsa2048)
        .unwrap_err();
    assert_eq!(c, RpcStatusCode::INTERNAL);
    assert_eq!(m, "failed to marshal public key: EC key without x");

    // Both keys Key Vault really created are deleted; the old ones stay and keep signing.
    let unusable: Vec<String> = fake
        .keys()
        .into_iter()
        .map(|k| k.name)
        .filter(|n| !before.contains(n))
        .collect();
    assert_eq!(unusable.len(), 2, "{unusable:?}");
    assert!(
        wait_until(Duration::from_secs(5), || {
            let d = fake.deleted_key_names();
            unusable.iter().all(|n| d.contains(n))
        }),
        "unusable keys not deleted: {:?}",
        fake.deleted_key_names()
    );
    assert_eq!(fake.key_names(), before);
    assert_healthy(p, &fake, &[&ec, &rsa], &unusable);
}

#[test]
fn wrong_key_type_at_discovery_fails_configure_clearly() {
    let fake = FakeAzure::start();
    let hcl = standard_hcl(&fake, SID);
    let mut p = start_plugin(&fake, &hcl, &[]);
    let pk = p.generate_key("x509-CA-A", KeyType::EcP384).unwrap();
    p.unload();

    let env = plugin_env(&fake, &[]);
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let p = PluginProcess::launch(&refs);
    p.init().unwrap();
    let name = live_name_of(&fake, &pk).expect("the key in use");
    let key = fake.keys().into_iter().find(|k| k.name == name).unwrap();
    let version = key.versions.last().unwrap().version.clone();
    fake.inject(Route::GetKey, FaultKind::WrongKeyType, 1);
    let (c, m) = p.configure(TD, &hcl).unwrap_err();
    assert_eq!(c, RpcStatusCode::INTERNAL);
    assert_eq!(
        m,
        format!("failed to fetch key entry details: unsupported key spec: EC x coordinate has the wrong length (key {name:?} version {version:?})")
    );
    // Not configured: the key calls say so rather than serve a half-built cache.
    let (c, _) = p.get_public_keys().unwrap_err();
    assert_eq!(c, RpcStatusCode::FAILED_PRECONDITION);
    // The key was not touched; the next Configure loads it.
    p.configure(TD, &hcl).unwrap();
    assert_healthy(p, &fake, &[&pk], &[]);
}

#[test]
fn signature_of_the_wrong_length_is_an_error_not_a_bad_signature() {
    let fake = FakeAzure::start();
    let p = start_plugin(&fake, &standard_hcl(&fake, SID), &[]);
    let ec = p.generate_key("x509-CA-A", KeyType::EcP256).unwrap();
    let rsa = p.generate_key("JWT-Signer-A", KeyType::Rsa2048).unwrap();
    let d = digest(HashAlgorithm::Sha256, b"short");

    fake.reset_log();
    fake.inject(Route::Sign, FaultKind::WrongSignatureLength, 1);
    let (c, m) = p.sign(&ec.id, &d, sha(HashAlgorithm::Sha256)).unwrap_err();
    assert_eq!(c, RpcStatusCode::INTERNAL);
    assert_eq!(m, azkv::MALFORMED_SIGNATURE);

    fake.inject(Route::Sign, FaultKind::WrongSignatureLength, 1);
    let (c, m) = p.sign(&rsa.id, &d, sha(HashAlgorithm::Sha256)).unwrap_err();
    assert_eq!(c, RpcStatusCode::INTERNAL);
    assert_eq!(
        m,
        "malformed signature response: RSA signature is 255 bytes, expected 256"
    );
    // Not retried: a wrong answer is not a transient failure.
    assert_eq!(statuses(&fake, Route::Sign), vec![200, 200]);
    assert_healthy(p, &fake, &[&ec, &rsa], &[]);
}

#[test]
fn signature_by_another_key_is_an_error_not_a_bad_signature() {
    let fake = FakeAzure::start();
    let p = start_plugin(&fake, &standard_hcl(&fake, SID), &[]);
    let ec = p.generate_key("x509-CA-A", KeyType::EcP256).unwrap();
    let rsa = p.generate_key("JWT-Signer-A", KeyType::Rsa2048).unwrap();
    let d = digest(HashAlgorithm::Sha256, b"substituted");

    fake.reset_log();
    for pk in [&ec, &rsa] {
        let name = live_name_of(&fake, pk).expect("the key in use");
        let key = fake.keys().into_iter().find(|k| k.name == name).unwrap();
        let version = key.versions.last().unwrap().version.clone();
        // Key Vault answers 200 with a valid signature, but by a key that is not this one.
        fake.inject(Route::Sign, FaultKind::ForeignSignature, 1);
        let (c, m) = p.sign(&pk.id, &d, sha(HashAlgorithm::Sha256)).unwrap_err();
        assert_eq!(c, RpcStatusCode::INTERNAL);
        assert_eq!(
            m,
            format!("failed to sign: Key Vault returned a signature that does not verify with key {name:?} version {version:?}")
        );
    }
    assert_eq!(fake.pending_faults(), 0);
    // Not retried: a wrong answer is not a transient failure.
    assert_eq!(statuses(&fake, Route::Sign), vec![200, 200]);
    assert_healthy(p, &fake, &[&ec, &rsa], &[]);
}

// ---------------------------------------------------------------------------------------
// Tokens

#[test]
fn token_endpoint_down_then_back() {
    let fake = FakeAzure::start();
    let hcl = standard_hcl(&fake, SID);
    let env = plugin_env(&fake, &[]);
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let p = PluginProcess::launch(&refs);
    p.init().unwrap();

    // Down for longer than the retries at the first Configure.
    fake.inject(Route::Token, status(503, Some("0")), 4);
    let (c, m) = p.configure(TD, &hcl).unwrap_err();
    assert_eq!(c, RpcStatusCode::INTERNAL);
    let endpoint = format!(
        "{}{}/oauth2/v2.0/token",
        fake.authority_host(),
        FakeAzure::TENANT
    );
    assert!(
        m.starts_with("failed while listing keys: authentication failed: "),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "token request to {endpoint} was refused: HTTP 503: server_error"
        )),
        "{m}"
    );
    assert_eq!(statuses(&fake, Route::Token), vec![503; 4]);
    assert_eq!(
        fake.count(Route::ListKeys),
        0,
        "no vault call without a token"
    );

    // Back: the next Configure works at once (no lingering back-off without a token).
    p.configure(TD, &hcl).unwrap();
    let pk = p.generate_key("x509-CA-A", KeyType::EcP256).unwrap();

    // Down again while the cached token is revoked: the 401 challenge cannot be answered.
    fake.reset_log();
    fake.revoke_tokens();
    fake.inject(Route::Token, status(503, Some("0")), 4);
    let d = digest(HashAlgorithm::Sha256, b"x");
    let (c, m) = p.sign(&pk.id, &d, sha(HashAlgorithm::Sha256)).unwrap_err();
    assert_eq!(c, RpcStatusCode::INTERNAL);
    assert!(
        m.starts_with("failed to sign: authentication failed: "),
        "{m}"
    );
    assert!(m.contains("token request to"), "{m}");
    assert_eq!(statuses(&fake, Route::Sign), vec![401]);
    // Back again: one challenge, one new token, signed.
    fake.reset_log();
    sign_verifies(&p, &pk, b"back");
    assert_eq!(statuses(&fake, Route::Sign), vec![401, 200]);
    assert_eq!(statuses(&fake, Route::Token), vec![200]);
    assert_healthy(p, &fake, &[&pk], &[]);
}

#[test]
fn revoked_token_costs_one_challenge_and_one_new_token() {
    let fake = FakeAzure::start();
    let p = start_plugin(&fake, &standard_hcl(&fake, SID), &[]);
    let pk = p.generate_key("x509-CA-A", KeyType::EcP256).unwrap();

    fake.reset_log();
    fake.revoke_tokens();
    sign_verifies(&p, &pk, b"after revocation");
    assert_eq!(statuses(&fake, Route::Sign), vec![401, 200]);
    assert_eq!(statuses(&fake, Route::Token), vec![200]);
    // The new token is kept: later calls need no challenge and no token request.
    fake.reset_log();
    sign_verifies(&p, &pk, b"again");
    p.generate_key("JWT-Signer-A", KeyType::EcP256).unwrap();
    assert_eq!(statuses(&fake, Route::Sign), vec![200]);
    assert_eq!(statuses(&fake, Route::CreateKey), vec![200]);
    assert_eq!(fake.count(Route::Token), 0);
    let jwt = p.get_public_key("JWT-Signer-A").unwrap();
    assert_healthy(p, &fake, &[&pk, &jwt], &[]);
}

#[test]
fn expired_tokens_are_refreshed_before_use_and_server_clock_skew_is_harmless() {
    let fake = FakeAzure::start();
    // The token service's clock is a day behind ours: `exp` claims lie in the past. The
    // plugin trusts `expires_in` (relative), so this changes nothing.
    fake.set_now(fake.now() - 86_400.0);
    let p = start_plugin(&fake, &standard_hcl(&fake, SID), &[]);
    let pk = p.generate_key("x509-CA-A", KeyType::EcP256).unwrap();
    assert_eq!(fake.count(Route::Token), 1);

    // Tokens that are already expired on arrival (lifetime 0): every call needs a new one,
    // and the plugin fetches it up front instead of presenting an expired token.
    fake.set_token_lifetime(0);
    fake.revoke_tokens();
    fake.reset_log();
    sign_verifies(&p, &pk, b"first");
    assert_eq!(statuses(&fake, Route::Sign), vec![401, 200]);
    for i in 0..3 {
        fake.reset_log();
        sign_verifies(&p, &pk, format!("expired {i}").as_bytes());
        assert_eq!(statuses(&fake, Route::Token), vec![200], "round {i}");
        assert_eq!(statuses(&fake, Route::Sign), vec![200], "round {i}");
    }
    // The fake's clock jumps two days ahead: still no effect on signing.
    fake.set_token_lifetime(3600);
    fake.advance(2.0 * 86_400.0);
    fake.reset_log();
    sign_verifies(&p, &pk, b"skewed");
    sign_verifies(&p, &pk, b"cached");
    assert_eq!(statuses(&fake, Route::Token), vec![200]);
    assert_eq!(statuses(&fake, Route::Sign), vec![200, 200]);
    assert_healthy(p, &fake, &[&pk], &[]);
}

// ---------------------------------------------------------------------------------------
// Faults in the background: refresh, stale sweep, deletions

#[test]
fn maintenance_rides_out_faults_and_deletes_only_the_rotated_key() {
    let fake = FakeAzure::start();
    let p = start_plugin(
        &fake,
        &standard_hcl(&fake, SID),
        &[(
            "AZKV_TEST_MAINTENANCE",
            "refresh=300ms,first_sweep=100ms,sweep=300ms,max_wait=20ms,backoff=50ms,backoff_max=200ms",
        )],
    );
    let old = p.generate_key("x509-CA-A", KeyType::EcP256).unwrap();
    let old_name = live_name_of(&fake, &old).unwrap();
    let jwt = p.generate_key("JWT-Signer-A", KeyType::EcP256).unwrap();

    // Every background call path fails for a while: refresh (500s past the retries, then a
    // broken body), the sweep's listing (broken body, then resets past the retries), and the
    // deletion of the rotated-out key (503s for two whole attempts).
    fake.reset_log();
    fake.inject(Route::UpdateKey, status(500, Some("0")), 4);
    fake.inject(Route::UpdateKey, FaultKind::MalformedBody, 1);
    fake.inject(Route::ListKeys, FaultKind::MalformedBody, 1);
    fake.inject(Route::ListKeys, FaultKind::DropConnection, 4);
    fake.inject(Route::DeleteKey, status(503, Some("0")), 8);
    let new = p.generate_key("x509-CA-A", KeyType::EcP256).unwrap();

    assert!(
        wait_until(Duration::from_secs(20), || {
            fake.pending_faults() == 0
                && fake.deleted_key_names().contains(&old_name)
                && statuses(&fake, Route::UpdateKey).contains(&200)
                && statuses(&fake, Route::ListKeys).contains(&200)
        }),
        "maintenance did not recover: pending faults {}, deleted {:?}, update {:?}, list {:?}",
        fake.pending_faults(),
        fake.deleted_key_names(),
        statuses(&fake, Route::UpdateKey),
        statuses(&fake, Route::ListKeys),
    );
    // The deletion was retried until it went through, once.
    let deletes = statuses(&fake, Route::DeleteKey);
    assert_eq!(
        deletes.iter().filter(|s| **s == 503).count(),
        8,
        "{deletes:?}"
    );
    assert!(deletes.contains(&200), "{deletes:?}");
    assert!(p.wait_for_log("\"@level\":\"warn\"", Duration::from_secs(1)));
    // Signing never waited on any of it.
    assert_healthy(p, &fake, &[&new, &jwt], &[old_name]);
}

// ---------------------------------------------------------------------------------------
// kill -9 during GenerateKey

#[test]
fn kill_during_generate_key_then_restart_heals() {
    let fake = FakeAzure::start();
    let hcl = standard_hcl(&fake, SID);
    let mut p = start_plugin(&fake, &hcl, &[]);
    let old = p.generate_key("x509-CA-A", KeyType::EcP256).unwrap();
    let other = p.generate_key("JWT-Signer-A", KeyType::EcP256).unwrap();
    let old_name = live_name_of(&fake, &old).unwrap();
    // The new key must be unambiguously newer (Key Vault times have 1 s resolution).
    fake.advance(60.0);

    // The create reaches Key Vault and is held there; the plugin dies while waiting.
    fake.inject(
        Route::CreateKey,
        FaultKind::Latency(Duration::from_millis(1500)),
        1,
    );
    let pid = p.child.id() as libc::pid_t;
    std::thread::scope(|s| {
        let call = s.spawn(|| p.generate_key("x509-CA-A", KeyType::EcP256));
        assert!(
            wait_until(Duration::from_secs(10), || fake.pending_faults() == 0),
            "the create never reached the vault"
        );
        // SIGKILL now, while the create is inside the fake (PluginProcess::kill9 needs
        // `&mut`, which the in-flight call borrows; it reaps the process below).
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        let r = call.join().unwrap();
        assert!(r.is_err(), "GenerateKey must not complete: {r:?}");
    });
    p.kill9();
    assert!(p.exited.is_some());
    // Key Vault finishes the create although nobody reads the answer: two keys for the id.
    assert!(wait_until(Duration::from_secs(10), || {
        live_keys_for(&fake, "x509-CA-A").len() == 2
    }));
    let orphan = live_keys_for(&fake, "x509-CA-A")
        .into_iter()
        .find(|n| *n != old_name)
        .unwrap();
    let orphan_der = fake.public_key_der(&orphan, "").unwrap();

    // Restart: Configure works, the newest key wins, the older one is deleted.
    let p = start_plugin(&fake, &hcl, &[]);
    let now = p.get_public_key("x509-CA-A").unwrap();
    assert_eq!(now.pkix_data, orphan_der);
    assert_ne!(now.fingerprint, old.fingerprint);
    assert!(
        wait_until(Duration::from_secs(5), || fake
            .deleted_key_names()
            .contains(&old_name)),
        "older duplicate not deleted: {:?}",
        fake.deleted_key_names()
    );
    assert_eq!(live_keys_for(&fake, "x509-CA-A"), vec![orphan]);
    assert_eq!(p.get_public_key("JWT-Signer-A").unwrap(), other);
    assert_healthy(p, &fake, &[&now, &other], &[old_name]);
}
