//! The Azure layer (`azkv::azure`) against the fake Key Vault + Entra ID + managed identity
//! servers over real TLS on 127.0.0.1: every operation, every credential type, retries and
//! back-offs (recorded by a `ManualClock`, never slept), paging, 401 challenges, token-cache
//! sharing under concurrency, fault handling, and a scan for leaked secrets.
//!
//! Tests only ever talk to 127.0.0.1: IMDS is pointed at a closed loopback port or at the
//! fake through the test-only `AZURE_IMDS_ENDPOINT` override.

mod support;

use std::net::TcpListener;
use std::sync::{Arc, Barrier, Mutex, Once};
use std::time::{Duration, SystemTime};

use azkv::log_record_allowed;
use azkv::Secret;
use azkv::{
    connect, connect_with_deadline, AzureError, AzureSettings, EnvSnapshot, KeyVaultApi,
    KeyVaultClient, StaticCredentials,
};
use azkv::{CreateKeyParams, UpdateKeyParams};
use azkv::{ManualClock, SystemClock};
use support::fake_azure::{FakeAzure, FakeKeyType, FaultKind, Route};

// ---------------------------------------------------------------------------------------------
// helpers

/// One captured log record.
struct Captured {
    thread: std::thread::ThreadId,
    level: log::Level,
    target: String,
    line: String,
}

/// Every log record emitted by any test in this binary (scanned for secrets).
static LOGS: Mutex<Vec<Captured>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        LOGS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Captured {
                thread: std::thread::current().id(),
                level: record.level(),
                target: record.target().to_string(),
                line: format!("{} {}: {}", record.level(), record.target(), record.args()),
            });
    }
    fn flush(&self) {}
}

/// Captures everything at TRACE, including dependencies' records.
fn capture_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        log::set_boxed_logger(Box::new(Capture)).unwrap();
        log::set_max_level(log::LevelFilter::Trace);
    });
}

/// A loopback URL nobody listens on (IMDS "absent").
fn closed_loopback_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}/metadata/identity/oauth2/token")
}

/// Trust the fake's CA, use its authority, and keep IMDS on a dead loopback port.
fn base_env(fake: &FakeAzure) -> EnvSnapshot {
    let mut env = EnvSnapshot::new();
    env.insert(
        "SSL_CERT_FILE".into(),
        fake.ca_pem_path().display().to_string(),
    );
    env.insert("AZURE_AUTHORITY_HOST".into(), fake.authority_host());
    env.insert("AZURE_IMDS_ENDPOINT".into(), closed_loopback_url());
    env
}

fn static_credentials() -> StaticCredentials {
    StaticCredentials {
        tenant_id: FakeAzure::TENANT.into(),
        client_id: FakeAzure::CLIENT_ID.into(),
        client_secret: Secret::new(FakeAzure::CLIENT_SECRET),
    }
}

fn new_clock() -> ManualClock {
    ManualClock::new(SystemTime::now())
}

fn client(
    fake: &FakeAzure,
    env: EnvSnapshot,
    statics: Option<StaticCredentials>,
    clock: &ManualClock,
) -> Arc<KeyVaultClient> {
    capture_logs();
    connect(
        AzureSettings {
            vault_uri: fake.vault_uri(),
            static_credentials: statics,
            env,
            api_version: String::new(),
        },
        Arc::new(clock.clone()),
    )
    .unwrap()
}

fn static_client(fake: &FakeAzure, clock: &ManualClock) -> Arc<KeyVaultClient> {
    client(fake, base_env(fake), Some(static_credentials()), clock)
}

fn ec_params(tags: &[(&str, &str)]) -> CreateKeyParams {
    CreateKeyParams {
        kty: "EC".into(),
        crv: Some("P-256".into()),
        key_ops: vec!["sign".into(), "verify".into()],
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

fn insert_ec(fake: &FakeAzure, name: &str) -> String {
    let now = fake.now();
    fake.insert_key(name, FakeKeyType::EcP256, &[], now, now, true)
}

/// The bearer tokens the vault saw, in order.
fn vault_bearers(fake: &FakeAzure) -> Vec<String> {
    fake.requests()
        .into_iter()
        .filter(|r| !matches!(r.route, Route::Token | Route::ManagedIdentity))
        .filter_map(|r| r.authorization)
        .collect()
}

fn assert_authenticated_with_issued_token(fake: &FakeAzure) {
    let issued = fake.issued_tokens();
    assert_eq!(issued.len(), 1, "exactly one token issued");
    let bearers = vault_bearers(fake);
    assert!(!bearers.is_empty());
    for b in bearers {
        assert_eq!(b, format!("Bearer {}", issued[0]));
    }
}

fn verify_es256(fake: &FakeAzure, name: &str, version: &str, digest: &[u8], sig: &[u8]) {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    use p256::pkcs8::DecodePublicKey;
    let der = fake.public_key_der(name, version).unwrap();
    let vk = p256::ecdsa::VerifyingKey::from_public_key_der(&der).unwrap();
    let sig = p256::ecdsa::Signature::from_slice(sig).unwrap();
    vk.verify_prehash(digest, &sig).unwrap();
}

// ---------------------------------------------------------------------------------------------
// operations

#[test]
fn every_operation_round_trips() {
    let fake = FakeAzure::start();
    let clock = new_clock();
    let kv = static_client(&fake, &clock);

    let created = kv
        .create_key(
            "spire-key-1",
            &ec_params(&[("spire-server-td", "example.org")]),
        )
        .unwrap();
    let version = created.version().unwrap().to_string();
    assert_eq!(created.name(), Some("spire-key-1"));
    assert_eq!(created.key.kty.as_deref(), Some("EC"));
    assert_eq!(created.tags["spire-server-td"], "example.org");

    let latest = kv.get_key("spire-key-1", None).unwrap();
    assert_eq!(latest.version(), Some(version.as_str()));
    let exact = kv.get_key("spire-key-1", Some(&version)).unwrap();
    assert_eq!(exact.key.x, created.key.x);

    // A second create adds a version.
    let v2 = kv
        .create_key("spire-key-1", &ec_params(&[]))
        .unwrap()
        .version()
        .unwrap()
        .to_string();
    assert_ne!(v2, version);
    let versions = kv.list_key_versions("spire-key-1").unwrap();
    let mut got: Vec<_> = versions.iter().filter_map(|i| i.version()).collect();
    got.sort();
    let mut want = vec![version.as_str(), v2.as_str()];
    want.sort();
    assert_eq!(got, want);

    kv.create_key("spire-key-2", &ec_params(&[])).unwrap();
    let mut names: Vec<_> = kv
        .list_keys()
        .unwrap()
        .iter()
        .filter_map(|i| i.name().map(str::to_string))
        .collect();
    names.sort();
    assert_eq!(names, vec!["spire-key-1", "spire-key-2"]);

    let updated = kv
        .update_key(
            "spire-key-1",
            &v2,
            &UpdateKeyParams {
                tags: Some([("a".to_string(), "b".to_string())].into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(updated.tags.get("a").map(String::as_str), Some("b"));
    assert!(!updated.tags.contains_key("spire-server-td"));

    let digest = [7u8; 32];
    let sig = kv.sign("spire-key-1", &v2, "ES256", &digest).unwrap();
    assert_eq!(sig.len(), 64);
    verify_es256(&fake, "spire-key-1", &v2, &digest, &sig);

    kv.delete_key("spire-key-2").unwrap();
    assert_eq!(fake.deleted_key_names(), vec!["spire-key-2".to_string()]);
    assert!(kv.get_key("spire-key-2", None).unwrap_err().is_not_found());

    // Creating on the soft-deleted name is recognisable.
    let e = kv.create_key("spire-key-2", &ec_params(&[])).unwrap_err();
    assert!(e.is_deleted_but_recoverable(), "{e}");

    assert_eq!(fake.count(Route::Token), 1);
    assert!(clock.slept().is_empty());
}

// ---------------------------------------------------------------------------------------------
// credentials

#[test]
fn static_config_secret_wins_over_environment() {
    let fake = FakeAzure::start();
    insert_ec(&fake, "k");
    let mut env = base_env(&fake);
    // A broken environment credential must not be consulted.
    env.insert("AZURE_TENANT_ID".into(), FakeAzure::TENANT.into());
    env.insert("AZURE_CLIENT_ID".into(), "someone-else".into());
    env.insert("AZURE_CLIENT_SECRET".into(), "wrong".into());
    let kv = client(&fake, env, Some(static_credentials()), &new_clock());
    kv.get_key("k", None).unwrap();
    let token_req = fake
        .requests()
        .into_iter()
        .find(|r| r.route == Route::Token)
        .unwrap();
    assert!(token_req.path.contains(FakeAzure::TENANT));
    assert!(token_req.body.contains(FakeAzure::CLIENT_ID));
    assert_authenticated_with_issued_token(&fake);
}

#[test]
fn environment_secret_credential() {
    let fake = FakeAzure::start();
    insert_ec(&fake, "k");
    let mut env = base_env(&fake);
    env.insert("AZURE_TENANT_ID".into(), FakeAzure::TENANT.into());
    env.insert("AZURE_CLIENT_ID".into(), FakeAzure::CLIENT_ID.into());
    env.insert(
        "AZURE_CLIENT_SECRET".into(),
        FakeAzure::CLIENT_SECRET.into(),
    );
    let kv = client(&fake, env, None, &new_clock());
    kv.get_key("k", None).unwrap();
    assert_eq!(fake.count(Route::Token), 1);
    assert_eq!(fake.count(Route::ManagedIdentity), 0);
    assert_authenticated_with_issued_token(&fake);
}

/// A fresh RSA key (PKCS#8 PEM) and a self-signed certificate for it.
fn rsa_client_cert() -> (String, String, Vec<u8>) {
    use rsa::pkcs8::EncodePrivateKey;
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let key_pem = key
        .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
        .unwrap()
        .to_string();
    let kp = rcgen::KeyPair::from_pem(&key_pem).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["azkv-client.test".to_string()])
        .unwrap()
        .self_signed(&kp)
        .unwrap();
    (cert.pem(), key_pem, cert.der().to_vec())
}

fn temp_file(name: &str, contents: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("azkv-azure-layer-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn environment_certificate_credential() {
    let fake = FakeAzure::start();
    insert_ec(&fake, "k");
    let (cert_pem, key_pem, cert_der) = rsa_client_cert();
    fake.register_client_certificate("cert-client", cert_der);
    let path = temp_file("client.pem", &format!("{cert_pem}{key_pem}"));
    let mut env = base_env(&fake);
    env.insert("AZURE_TENANT_ID".into(), FakeAzure::TENANT.into());
    env.insert("AZURE_CLIENT_ID".into(), "cert-client".into());
    env.insert(
        "AZURE_CLIENT_CERTIFICATE_PATH".into(),
        path.display().to_string(),
    );
    let kv = client(&fake, env, None, &new_clock());
    kv.get_key("k", None).unwrap();
    let token_req = fake
        .requests()
        .into_iter()
        .find(|r| r.route == Route::Token)
        .unwrap();
    assert_eq!(token_req.status, 200);
    assert!(token_req.body.contains("client_assertion="));
    assert!(!token_req.body.contains("client_secret"));
    assert_authenticated_with_issued_token(&fake);
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

#[test]
fn password_protected_pkcs12_certificate_credential() {
    let fake = FakeAzure::start();
    insert_ec(&fake, "k");
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pkcs12");
    let cert_pem = std::fs::read_to_string(format!("{data}/cert.pem")).unwrap();
    let cert_der = pem::parse(&cert_pem).unwrap().contents().to_vec();
    fake.register_client_certificate("pfx-client", cert_der);
    let mut env = base_env(&fake);
    env.insert("AZURE_TENANT_ID".into(), FakeAzure::TENANT.into());
    env.insert("AZURE_CLIENT_ID".into(), "pfx-client".into());
    env.insert(
        "AZURE_CLIENT_CERTIFICATE_PATH".into(),
        format!("{data}/legacy.p12"),
    );
    env.insert(
        "AZURE_CLIENT_CERTIFICATE_PASSWORD".into(),
        "legacy-pass".into(),
    );
    let kv = client(&fake, env.clone(), None, &new_clock());
    kv.get_key("k", None).unwrap();
    assert_authenticated_with_issued_token(&fake);

    // A wrong password: a readable error that names the setting, never the password.
    env.insert(
        "AZURE_CLIENT_CERTIFICATE_PASSWORD".into(),
        "not-the-password".into(),
    );
    let kv = client(&fake, env, None, &new_clock());
    let e = kv.get_key("k", None).unwrap_err().to_string();
    assert!(e.contains("wrong AZURE_CLIENT_CERTIFICATE_PASSWORD"), "{e}");
    assert!(!e.contains("not-the-password"), "{e}");
}

#[test]
fn unregistered_certificate_is_a_readable_auth_error() {
    let fake = FakeAzure::start();
    let (cert_pem, key_pem, _) = rsa_client_cert();
    let path = temp_file("client.pem", &format!("{cert_pem}{key_pem}"));
    let mut env = base_env(&fake);
    env.insert("AZURE_TENANT_ID".into(), FakeAzure::TENANT.into());
    env.insert("AZURE_CLIENT_ID".into(), "cert-client".into());
    env.insert(
        "AZURE_CLIENT_CERTIFICATE_PATH".into(),
        path.display().to_string(),
    );
    let kv = client(&fake, env, None, &new_clock());
    let e = kv.list_keys().unwrap_err();
    assert!(matches!(e, AzureError::Auth(_)), "{e}");
    assert!(e.to_string().contains("EnvironmentCredential"), "{e}");
    assert!(e.to_string().contains("invalid_client"), "{e}");
    // A configured credential that fails stops the chain: IMDS is not tried.
    assert_eq!(fake.count(Route::ManagedIdentity), 0);
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

#[test]
fn workload_identity_credential_rereads_token_file() {
    let fake = FakeAzure::start();
    insert_ec(&fake, "k");
    fake.register_federated_token("wi-client", "federated-token-one");
    fake.register_federated_token("wi-client", "federated-token-two");
    fake.set_token_lifetime(600);
    let path = temp_file("token", "federated-token-one\n");
    let mut env = base_env(&fake);
    env.insert("AZURE_TENANT_ID".into(), FakeAzure::TENANT.into());
    env.insert("AZURE_CLIENT_ID".into(), "wi-client".into());
    env.insert(
        "AZURE_FEDERATED_TOKEN_FILE".into(),
        path.display().to_string(),
    );
    let clock = new_clock();
    let kv = client(&fake, env, None, &clock);
    kv.get_key("k", None).unwrap();
    assert_authenticated_with_issued_token(&fake);

    // Kubelet rotates the file; the next token request uses the new content.
    std::fs::write(&path, "federated-token-two").unwrap();
    clock.advance(Duration::from_secs(600));
    kv.get_key("k", None).unwrap();
    let assertions: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.route == Route::Token)
        .map(|r| r.body)
        .collect();
    assert_eq!(assertions.len(), 2);
    assert!(assertions[0].contains("client_assertion=federated-token-one"));
    assert!(assertions[1].contains("client_assertion=federated-token-two"));
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

#[test]
fn app_service_managed_identity() {
    let fake = FakeAzure::start();
    insert_ec(&fake, "k");
    let mut env = base_env(&fake);
    env.insert("IDENTITY_ENDPOINT".into(), fake.identity_endpoint());
    env.insert("IDENTITY_HEADER".into(), fake.identity_header());
    let kv = client(&fake, env, None, &new_clock());
    kv.get_key("k", None).unwrap();
    let mi = fake
        .requests()
        .into_iter()
        .find(|r| r.route == Route::ManagedIdentity)
        .unwrap();
    assert_eq!(mi.status, 200);
    assert!(mi.query.contains("api-version=2019-08-01"));
    assert!(mi.query.contains("resource=https%3A%2F%2Fvault.azure.net"));
    assert_eq!(fake.count(Route::Token), 0);
    assert_authenticated_with_issued_token(&fake);
}

#[test]
fn imds_managed_identity_via_test_override() {
    let fake = FakeAzure::start();
    insert_ec(&fake, "k");
    let mut env = base_env(&fake);
    env.insert("AZURE_IMDS_ENDPOINT".into(), fake.imds_endpoint());
    env.insert("AZURE_CLIENT_ID".into(), "user-assigned-id".into());
    let kv = client(&fake, env, None, &new_clock());
    kv.get_key("k", None).unwrap();
    let mi = fake
        .requests()
        .into_iter()
        .find(|r| r.route == Route::ManagedIdentity)
        .unwrap();
    assert_eq!(mi.status, 200);
    assert!(mi.query.contains("api-version=2018-02-01"));
    assert!(mi.query.contains("client_id=user-assigned-id"));
    assert!(mi
        .headers
        .iter()
        .any(|(k, v)| k == "metadata" && v == "true"));
    assert_authenticated_with_issued_token(&fake);
}

#[test]
fn no_credential_gives_one_aggregated_error() {
    let fake = FakeAzure::start();
    let kv = client(&fake, base_env(&fake), None, &new_clock());
    let e = kv.list_keys().unwrap_err();
    let AzureError::Auth(msg) = &e else {
        panic!("expected Auth, got {e:?}");
    };
    for name in [
        "EnvironmentCredential",
        "WorkloadIdentityCredential",
        "ManagedIdentityCredential",
    ] {
        assert!(msg.contains(name), "{msg}");
    }
    assert_eq!(fake.requests().len(), 0);
}

// ---------------------------------------------------------------------------------------------
// retries

#[test]
fn throttling_and_unavailability_are_retried_with_recorded_backoff() {
    let fake = FakeAzure::start();
    insert_ec(&fake, "k");
    let clock = new_clock();
    let kv = static_client(&fake, &clock);
    fake.inject(
        Route::GetKey,
        FaultKind::Status {
            status: 429,
            retry_after: Some("2".into()),
            body: None,
        },
        1,
    );
    kv.get_key("k", None).unwrap();
    assert_eq!(clock.slept(), vec![Duration::from_secs(2)]);
    assert_eq!(fake.count(Route::GetKey), 2);

    fake.reset_log();
    fake.inject(
        Route::GetKey,
        FaultKind::Status {
            status: 503,
            retry_after: None,
            body: None,
        },
        2,
    );
    kv.get_key("k", None).unwrap();
    assert_eq!(
        clock.slept()[1..],
        [Duration::from_millis(800), Duration::from_millis(1600)]
    );
    assert_eq!(fake.count(Route::GetKey), 3);
}

#[test]
fn retries_are_bounded_and_long_hints_are_not_waited_for() {
    let fake = FakeAzure::start();
    insert_ec(&fake, "k");
    let clock = new_clock();
    let kv = static_client(&fake, &clock);
    fake.inject(
        Route::GetKey,
        FaultKind::Status {
            status: 500,
            retry_after: None,
            body: None,
        },
        10,
    );
    let e = kv.get_key("k", None).unwrap_err();
    assert_eq!(e.status(), Some(500));
    assert_eq!(fake.count(Route::GetKey), 4);
    assert_eq!(clock.slept().len(), 3);

    fake.reset_log();
    let before = clock.slept().len();
    let kv = static_client(&fake, &clock);
    fake.inject(Route::GetKey, FaultKind::DropConnection, 100);
    fake.inject(
        Route::GetKey,
        FaultKind::Status {
            status: 429,
            retry_after: Some("120".into()),
            body: None,
        },
        1,
    );
    let _ = kv.get_key("k", None);
    // Whichever fault came first, nothing was slept for 120 s.
    assert!(clock.slept()[before..]
        .iter()
        .all(|d| *d <= Duration::from_secs(10)));
}

/// A client on the real clock whose operations each have `deadline`.
fn real_time_client(fake: &FakeAzure, deadline: Duration) -> Arc<KeyVaultClient> {
    capture_logs();
    connect_with_deadline(
        AzureSettings {
            vault_uri: fake.vault_uri(),
            static_credentials: Some(static_credentials()),
            env: base_env(fake),
            api_version: String::new(),
        },
        Arc::new(SystemClock),
        deadline,
    )
    .unwrap()
}

/// Real time, against the fake over TLS: whatever the vault does (hang, keep throttling) and
/// however slow the token endpoint is, a sign returns by its operation's deadline (3 s here;
/// 25 s in the plugin). The margin covers the socket layer's slack and a loaded machine.
#[test]
fn a_sign_returns_within_its_deadline_whatever_the_vault_does() {
    const DEADLINE: Duration = Duration::from_secs(3);
    const MARGIN: Duration = Duration::from_millis(900);
    let fake = FakeAzure::start();
    let v = insert_ec(&fake, "k");
    let digest = [7u8; 32];

    // The vault hangs (for longer than one 12 s attempt).
    let kv = real_time_client(&fake, DEADLINE);
    kv.get_key("k", None).unwrap(); // token cached
    fake.inject(Route::Sign, FaultKind::Latency(Duration::from_secs(20)), 1);
    let started = std::time::Instant::now();
    let e = kv.sign("k", &v, "ES256", &digest).unwrap_err();
    let spent = started.elapsed();
    assert!(matches!(e, AzureError::Transport(_)), "{e:?}");
    assert!(spent < DEADLINE + MARGIN, "{spent:?}: {e}");

    // The vault keeps throttling with Retry-After: 20.
    let kv = real_time_client(&fake, DEADLINE);
    fake.inject(
        Route::Sign,
        FaultKind::Status {
            status: 429,
            retry_after: Some("20".into()),
            body: None,
        },
        100,
    );
    let started = std::time::Instant::now();
    let e = kv.sign("k", &v, "ES256", &digest).unwrap_err();
    let spent = started.elapsed();
    assert_eq!(e.status(), Some(429), "{e}");
    assert!(
        e.to_string().contains("the vault asked to wait 20 s"),
        "{e}"
    );
    assert!(spent < DEADLINE + MARGIN, "{spent:?}: {e}");

    // The token endpoint takes 2 s of the 3; the hanging vault gets only the rest.
    let fake = FakeAzure::start();
    let v = insert_ec(&fake, "k");
    let kv = real_time_client(&fake, DEADLINE);
    fake.inject(Route::Token, FaultKind::Latency(Duration::from_secs(2)), 1);
    fake.inject(Route::Sign, FaultKind::Latency(Duration::from_secs(20)), 1);
    let started = std::time::Instant::now();
    let e = kv.sign("k", &v, "ES256", &digest).unwrap_err();
    let spent = started.elapsed();
    assert!(spent < DEADLINE + MARGIN, "{spent:?}: {e}");
    assert!(matches!(e, AzureError::Transport(_)), "{e:?}");
    assert_eq!(fake.count(Route::Token), 1);
    // The sign reached the vault (its fault was taken), and was not answered in time.
    assert_eq!(fake.pending_faults(), 0);
    assert_eq!(fake.count(Route::Sign), 0);

    // With the vault answering again, a sign works as before.
    let fake = FakeAzure::start();
    let v = insert_ec(&fake, "k");
    let kv = real_time_client(&fake, DEADLINE);
    assert_eq!(kv.sign("k", &v, "ES256", &digest).unwrap().len(), 64);
}

#[test]
fn non_retryable_client_errors_are_not_retried() {
    let fake = FakeAzure::start();
    let v = insert_ec(&fake, "k");
    let clock = new_clock();
    let kv = static_client(&fake, &clock);
    fake.inject(
        Route::Sign,
        FaultKind::Status {
            status: 403,
            retry_after: None,
            body: None,
        },
        1,
    );
    let e = kv.sign("k", &v, "ES256", &[1; 32]).unwrap_err();
    assert_eq!(e.status(), Some(403));
    assert!(
        e.to_string()
            .contains("the identity likely lacks the keys/sign permission"),
        "{e}"
    );
    assert_eq!(fake.count(Route::Sign), 1);

    fake.inject(
        Route::CreateKey,
        FaultKind::Status {
            status: 400,
            retry_after: None,
            body: None,
        },
        1,
    );
    let e = kv.create_key("k2", &ec_params(&[])).unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert_eq!(fake.count(Route::CreateKey), 1);
    // The real service rejects bad names; so does the fake, without retries.
    let e = kv.get_key("bad_name!", None).unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert!(clock.slept().is_empty());
}

// ---------------------------------------------------------------------------------------------
// paging and challenges

#[test]
fn paging_crosses_many_pages_including_empty_ones() {
    let fake = FakeAzure::start();
    for i in 0..60 {
        insert_ec(&fake, &format!("key-{i:02}"));
    }
    fake.set_empty_pages(true);
    let kv = static_client(&fake, &new_clock());
    let mut names: Vec<_> = kv
        .list_keys()
        .unwrap()
        .iter()
        .filter_map(|i| i.name().map(str::to_string))
        .collect();
    names.sort();
    let want: Vec<_> = (0..60).map(|i| format!("key-{i:02}")).collect();
    assert_eq!(names, want);
    // 3 full pages of 25/25/10 with empty pages between them.
    assert!(
        fake.count(Route::ListKeys) >= 5,
        "{}",
        fake.count(Route::ListKeys)
    );

    for _ in 0..30 {
        let now = fake.now();
        fake.insert_key("versioned", FakeKeyType::EcP256, &[], now, now, true);
    }
    assert_eq!(kv.list_key_versions("versioned").unwrap().len(), 30);
}

#[test]
fn revoked_token_challenge_is_answered_with_one_new_token() {
    let fake = FakeAzure::start();
    insert_ec(&fake, "k");
    let kv = static_client(&fake, &new_clock());
    kv.get_key("k", None).unwrap();
    assert_eq!(fake.count(Route::Token), 1);
    fake.revoke_tokens();
    kv.get_key("k", None).unwrap();
    assert_eq!(fake.count(Route::Token), 2);
    let statuses: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.route == Route::GetKey)
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![200, 401, 200]);
    // The new token keeps being used.
    kv.get_key("k", None).unwrap();
    kv.list_keys().unwrap();
    assert_eq!(fake.count(Route::Token), 2);
    let issued = fake.issued_tokens();
    assert_eq!(
        vault_bearers(&fake).last().unwrap(),
        &format!("Bearer {}", issued[1])
    );
}

#[test]
fn repeated_401_is_an_error_not_a_loop() {
    let fake = FakeAzure::start();
    insert_ec(&fake, "k");
    let kv = static_client(&fake, &new_clock());
    kv.get_key("k", None).unwrap();
    fake.inject(
        Route::GetKey,
        FaultKind::Status {
            status: 401,
            retry_after: None,
            body: None,
        },
        5,
    );
    let e = kv.get_key("k", None).unwrap_err();
    assert_eq!(e.status(), Some(401));
    assert!(fake.count(Route::GetKey) <= 3);
}

// ---------------------------------------------------------------------------------------------
// token sharing

#[test]
fn fifty_concurrent_callers_share_one_token_request() {
    let fake = FakeAzure::start();
    insert_ec(&fake, "k");
    // Slow token endpoint: every caller arrives while the first fetch is in flight.
    fake.inject(
        Route::Token,
        FaultKind::Latency(Duration::from_millis(300)),
        1,
    );
    let kv = static_client(&fake, &new_clock());
    let barrier = Arc::new(Barrier::new(50));
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let kv = kv.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                kv.get_key("k", None)
                    .map(|b| b.version().map(str::to_string))
            })
        })
        .collect();
    for h in handles {
        assert!(h.join().unwrap().unwrap().is_some());
    }
    assert_eq!(fake.count(Route::Token), 1);
    assert_eq!(fake.count(Route::GetKey), 50);
}

#[test]
fn thousand_signs_use_one_token() {
    let fake = FakeAzure::start();
    let v = insert_ec(&fake, "k");
    let kv = static_client(&fake, &new_clock());
    let digest = [9u8; 32];
    for _ in 0..1000 {
        assert_eq!(kv.sign("k", &v, "ES256", &digest).unwrap().len(), 64);
    }
    assert_eq!(fake.count(Route::Token), 1);
    assert_eq!(fake.count(Route::Sign), 1000);
}

// ---------------------------------------------------------------------------------------------
// faults

#[test]
fn malformed_truncated_and_dropped_answers_are_clear_errors() {
    let fake = FakeAzure::start();
    let v = insert_ec(&fake, "k");
    let clock = new_clock();
    let kv = static_client(&fake, &clock);
    kv.get_key("k", None).unwrap();

    fake.inject(Route::GetKey, FaultKind::MalformedBody, 1);
    let e = kv.get_key("k", None).unwrap_err();
    assert!(matches!(e, AzureError::Decode(_)), "{e:?}");
    assert!(e.to_string().contains("get key"), "{e}");

    fake.inject(Route::Sign, FaultKind::MalformedBody, 1);
    assert!(matches!(
        kv.sign("k", &v, "ES256", &[0; 32]),
        Err(AzureError::Decode(_))
    ));

    // Transient transport faults are retried...
    fake.inject(Route::GetKey, FaultKind::TruncatedBody, 1);
    kv.get_key("k", None).unwrap();
    fake.inject(Route::GetKey, FaultKind::DropConnection, 1);
    kv.get_key("k", None).unwrap();

    // ...and reported clearly when they persist.
    fake.inject(Route::GetKey, FaultKind::TruncatedBody, 4);
    let e = kv.get_key("k", None).unwrap_err();
    assert!(matches!(e, AzureError::Transport(_)), "{e:?}");
    assert!(e.to_string().contains("GET https://127.0.0.1:"), "{e}");
    fake.inject(Route::ListKeys, FaultKind::DropConnection, 4);
    let e = kv.list_keys().unwrap_err();
    assert!(matches!(e, AzureError::Transport(_)), "{e:?}");

    // Token endpoint faults surface as auth errors naming the credential.
    let kv2 = static_client(&fake, &clock);
    fake.inject(Route::Token, FaultKind::MalformedBody, 1);
    let e = kv2.get_key("k", None).unwrap_err();
    assert!(e.to_string().contains("token"), "{e}");
    kv2.get_key("k", None).unwrap();
}

#[test]
fn untrusted_server_certificate_fails_fast_with_a_hint() {
    let fake = FakeAzure::start();
    let mut env = base_env(&fake);
    env.remove("SSL_CERT_FILE");
    let clock = new_clock();
    let kv = client(&fake, env, Some(static_credentials()), &clock);
    let e = kv.list_keys().unwrap_err();
    let text = e.to_string();
    assert!(text.contains("SSL_CERT_FILE"), "{text}");
    assert!(clock.slept().is_empty(), "TLS failures are not retried");
}

// ---------------------------------------------------------------------------------------------
// secrets

#[test]
fn no_secret_or_token_in_errors_or_logs() {
    let fake = FakeAzure::start();
    let v = insert_ec(&fake, "k");
    let clock = new_clock();
    let mut errors: Vec<String> = Vec::new();
    fn record(errors: &mut Vec<String>, e: AzureError) {
        errors.push(e.to_string());
        errors.push(format!("{e:?}"));
    }

    // Happy path, a challenge, faults on every route.
    let kv = static_client(&fake, &clock);
    kv.sign("k", &v, "ES256", &[3; 32]).unwrap();
    fake.revoke_tokens();
    kv.get_key("k", None).unwrap();
    // As many faults as attempts: 403 and 401 (no challenge) are not retried, 500 is 3 times.
    for (route, status, times) in [
        (Route::GetKey, 403u16, 1),
        (Route::Sign, 401, 1),
        (Route::ListKeys, 500, 4),
    ] {
        fake.inject(
            route,
            FaultKind::Status {
                status,
                retry_after: None,
                body: None,
            },
            times,
        );
    }
    record(&mut errors, kv.get_key("k", None).unwrap_err());
    record(
        &mut errors,
        kv.sign("k", &v, "ES256", &[3; 32]).unwrap_err(),
    );
    record(&mut errors, kv.list_keys().unwrap_err());
    fake.inject(Route::GetKey, FaultKind::MalformedBody, 1);
    record(&mut errors, kv.get_key("k", None).unwrap_err());
    errors.push(format!("{kv:?}"));

    // Rejected secrets (static and environment).
    let wrong = "wrong-secret-value-must-not-leak";
    let bad = client(
        &fake,
        base_env(&fake),
        Some(StaticCredentials {
            client_secret: Secret::new(wrong),
            ..static_credentials()
        }),
        &clock,
    );
    record(&mut errors, bad.list_keys().unwrap_err());
    let mut env = base_env(&fake);
    env.insert("AZURE_TENANT_ID".into(), FakeAzure::TENANT.into());
    env.insert("AZURE_CLIENT_ID".into(), FakeAzure::CLIENT_ID.into());
    env.insert("AZURE_CLIENT_SECRET".into(), wrong.into());
    let settings = AzureSettings {
        vault_uri: fake.vault_uri(),
        static_credentials: Some(static_credentials()),
        env: env.clone(),
        api_version: String::new(),
    };
    errors.push(format!("{settings:?}"));
    record(
        &mut errors,
        client(&fake, env, None, &clock).list_keys().unwrap_err(),
    );

    // Workload identity and App Service: their proofs must not leak either.
    let federated = "federated-assertion-must-not-leak";
    fake.register_federated_token("wi", federated);
    let path = temp_file("token", federated);
    let mut env = base_env(&fake);
    env.insert("AZURE_TENANT_ID".into(), FakeAzure::TENANT.into());
    env.insert("AZURE_CLIENT_ID".into(), "wi".into());
    env.insert(
        "AZURE_FEDERATED_TOKEN_FILE".into(),
        path.display().to_string(),
    );
    let wi = client(&fake, env, None, &clock);
    wi.get_key("k", None).unwrap();
    fake.inject(
        Route::Token,
        FaultKind::Status {
            status: 400,
            retry_after: None,
            body: None,
        },
        1,
    );
    clock.advance(Duration::from_secs(3600));
    record(&mut errors, wi.get_key("k", None).unwrap_err());
    let mut env = base_env(&fake);
    env.insert("IDENTITY_ENDPOINT".into(), fake.identity_endpoint());
    env.insert("IDENTITY_HEADER".into(), fake.identity_header());
    client(&fake, env, None, &clock).get_key("k", None).unwrap();

    let assertions: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.route == Route::Token)
        .flat_map(|r| {
            r.body
                .split('&')
                .filter_map(|kv| kv.strip_prefix("client_assertion=").map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut secrets = vec![
        FakeAzure::CLIENT_SECRET.to_string(),
        wrong.to_string(),
        federated.to_string(),
        fake.identity_header(),
    ];
    secrets.extend(assertions);
    secrets.extend(fake.issued_tokens());
    assert!(fake.issued_tokens().len() >= 4);

    // What the plugin's logger emits: everything `log_record_allowed` lets through.
    let me = std::thread::current().id();
    let (logs, wire_dump) = {
        let all = LOGS.lock().unwrap_or_else(|e| e.into_inner());
        let logs: Vec<String> = all
            .iter()
            .filter(|c| log_record_allowed(&c.target, c.level))
            .map(|c| c.line.clone())
            .collect();
        // This thread's dropped records: ureq_proto's hex dump rows, whose ASCII column
        // follows the last double space.
        let wire_dump: String = all
            .iter()
            .filter(|c| c.thread == me && !log_record_allowed(&c.target, c.level))
            .map(|c| c.line.rsplit("  ").next().unwrap_or("").to_string())
            .collect();
        (logs, wire_dump)
    };
    assert!(
        logs.iter().any(|l| l.contains("azkv::azure")),
        "the logger captured none of our records"
    );
    assert!(errors.len() >= 10);
    for s in &secrets {
        for line in errors.iter().chain(logs.iter()) {
            assert!(!line.contains(s.as_str()), "secret leaked into: {line}");
        }
    }
    // The filter is what keeps them out: the dropped wire dump does hold the tokens.
    if !wire_dump.is_empty() {
        assert!(
            fake.issued_tokens()
                .iter()
                .any(|t| wire_dump.contains(t.as_str())),
            "expected the dropped ureq_proto dump to contain a token"
        );
    }
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}
