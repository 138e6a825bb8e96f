//! Shared keys mode with several plugin processes against one fake Key Vault: template naming,
//! regex discovery, freshness, and convergence of concurrent rotations.

mod support;

use std::sync::{Arc, Barrier};

use azkv::proto::keymanager::{HashAlgorithm, KeyType, SignerOpts};
use grpcio::RpcStatusCode;
use support::env::{plugin_env, secrets};
use support::fake_azure::{agent_trusting, FakeAzure, FakeKeyType, Route};
use support::plugin_host::PluginProcess;
use support::verify::{digest, verify};

const TD: &str = "example.com";
const TEMPLATE: &str = r#"spire-{{ .TrustDomain | replace \".\" \"-\" }}-{{ .KeyID }}"#;
const REGEX: &str = "^spire-[^-]+-(.+)$";
/// Short coordination waits: the fake answers in microseconds, far below these.
const SHARED_TIMING: &str = "settle=400ms,claim_wait=400ms,jitter=300ms,poll=100ms";

fn shared_hcl(fake: &FakeAzure, server_id: &str, template: &str, regex: &str) -> String {
    format!(
        "key_vault_uri = \"{}\"\nkey_identifier_value = \"{server_id}\"\ntenant_id = \"{}\"\napp_id = \"{}\"\napp_secret = \"{}\"\nshared_keys {{\n  jwt_key_template = \"{template}\"\n  key_id_extraction_regex = \"{regex}\"\n}}\n",
        fake.vault_uri(),
        FakeAzure::TENANT,
        FakeAzure::CLIENT_ID,
        FakeAzure::CLIENT_SECRET
    )
}

fn launch(fake: &FakeAzure) -> PluginProcess {
    let env = plugin_env(fake, &[("AZKV_TEST_SHARED", SHARED_TIMING)]);
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let p = PluginProcess::launch(&refs);
    p.init().unwrap();
    p
}

fn server(fake: &FakeAzure, n: usize) -> PluginProcess {
    let p = launch(fake);
    p.configure(
        TD,
        &shared_hcl(fake, &format!("server-{n}"), TEMPLATE, REGEX),
    )
    .expect("configure");
    p
}

fn versions(fake: &FakeAzure, name: &str) -> Vec<support::fake_azure::FakeKeyVersion> {
    fake.keys()
        .into_iter()
        .find(|k| k.name == name)
        .map(|k| k.versions)
        .unwrap_or_default()
}

/// Every server rotates `id` at the same moment; returns their public keys.
fn rotate_together(servers: &[PluginProcess], id: &str) -> Vec<azkv::proto::keymanager::PublicKey> {
    let barrier = Arc::new(Barrier::new(servers.len()));
    std::thread::scope(|s| {
        let handles: Vec<_> = servers
            .iter()
            .map(|p| {
                let b = Arc::clone(&barrier);
                s.spawn(move || {
                    b.wait();
                    p.generate_key(id, KeyType::EcP256).expect("rotation")
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn sample_config_names_jwt_keys_by_template_and_keeps_x509_per_server() {
    let fake = FakeAzure::start();
    let p = server(&fake, 1);
    let jwt = p.generate_key("JWT-Signer-A", KeyType::EcP256).unwrap();
    assert!(
        fake.key_names()
            .contains(&"spire-example-com-JWT-Signer-A".to_string()),
        "{:?}",
        fake.key_names()
    );
    p.generate_key("x509-CA-A", KeyType::EcP256).unwrap();
    let x509: Vec<_> = fake
        .key_names()
        .into_iter()
        .filter(|n| n.ends_with("-x509-CA-A"))
        .collect();
    assert_eq!(x509.len(), 1);
    assert!(x509[0].starts_with("spire-key-"), "{x509:?}");
    let d = digest(HashAlgorithm::Sha256, b"jwt");
    let s = p
        .sign(
            "JWT-Signer-A",
            &d,
            Some(SignerOpts::HashAlgorithm(HashAlgorithm::Sha256 as i32)),
        )
        .unwrap();
    assert_eq!(s.key_fingerprint, jwt.fingerprint);
    verify(
        &jwt.pkix_data,
        HashAlgorithm::Sha256,
        false,
        &d,
        &s.signature,
    );

    // A restarted server discovers the shared key through the regex and creates nothing.
    let creates = fake.count(Route::CreateKey);
    let p2 = server(&fake, 2);
    assert_eq!(p2.get_public_key("JWT-Signer-A").unwrap(), jwt);
    assert!(
        p2.get_public_key("x509-CA-A").is_err(),
        "another server's X.509 key must not be adopted"
    );
    assert_eq!(fake.count(Route::CreateKey), creates);
    p.assert_logs_clean(&secrets(&fake));
    p2.assert_logs_clean(&secrets(&fake));
}

#[test]
fn concurrent_rotations_converge_on_one_new_version() {
    let fake = FakeAzure::start();
    let now = fake.now();
    let stale = now - 20.0 * 60.0;
    // Existing keys whose versions are older than the 15-minute freshness window.
    for id in ["JWT-Signer-A", "JWT-Signer-B"] {
        let tags = [
            ("spire-server-td", TD),
            ("spire-server-id", "server-0"),
            ("spire-key-id", id),
            ("spire-shared-key", "true"),
        ];
        fake.insert_key(
            &format!("spire-example-com-{id}"),
            FakeKeyType::EcP256,
            &tags,
            stale,
            stale,
            true,
        );
    }
    let servers: Vec<_> = (1..=5).map(|n| server(&fake, n)).collect();
    for p in &servers {
        assert_eq!(p.get_public_keys().unwrap().len(), 2, "discovered by regex");
    }

    // Two servers, then five, rotating the same id at once.
    for (id, group) in [
        ("JWT-Signer-A", &servers[..2]),
        ("JWT-Signer-B", &servers[..]),
    ] {
        let name = format!("spire-example-com-{id}");
        let keys = rotate_together(group, id);
        let first = &keys[0];
        for k in &keys {
            assert_eq!(k.fingerprint, first.fingerprint, "{id}: servers disagree");
        }
        let v = versions(&fake, &name);
        assert_eq!(
            v.len(),
            2,
            "{id}: exactly one new version expected, got {}",
            v.len()
        );
        assert!(v.iter().all(|x| x.enabled));
        for p in group {
            assert_eq!(p.get_public_key(id).unwrap().fingerprint, first.fingerprint);
        }
    }
    for p in &servers {
        p.assert_logs_clean(&secrets(&fake));
    }
}

#[test]
fn first_creation_by_two_servers_publishes_one_key() {
    let fake = FakeAzure::start();
    let servers: Vec<_> = (1..=2).map(|n| server(&fake, n)).collect();
    let keys = rotate_together(&servers, "JWT-Signer-A");
    assert_eq!(keys[0].fingerprint, keys[1].fingerprint);
    let v = versions(&fake, "spire-example-com-JWT-Signer-A");
    // Without a version to hold a claim, both may create; only one stays enabled.
    assert_eq!(v.iter().filter(|x| x.enabled).count(), 1, "{v:?}");
}

#[test]
fn a_stale_version_triggers_a_new_one_and_a_fresh_one_is_reused() {
    let fake = FakeAzure::start();
    let p = server(&fake, 1);
    let a = p.generate_key("JWT-Signer-A", KeyType::EcP256).unwrap();
    let again = p.generate_key("JWT-Signer-A", KeyType::EcP256).unwrap();
    assert_eq!(a, again, "a version younger than 15 minutes is reused");
    assert_eq!(versions(&fake, "spire-example-com-JWT-Signer-A").len(), 1);
    // Age the version past the window (the fake's clock stamps `created`).
    fake.set_now(fake.now() + 16.0 * 60.0);
    let stale_tags = [
        ("spire-server-td", TD),
        ("spire-server-id", "x"),
        ("spire-key-id", "JWT-Signer-B"),
        ("spire-shared-key", "true"),
    ];
    fake.insert_key(
        "spire-example-com-JWT-Signer-B",
        FakeKeyType::EcP256,
        &stale_tags,
        fake.now() - 16.0 * 60.0 - 86400.0,
        0.0,
        true,
    );
    let b = p.generate_key("JWT-Signer-B", KeyType::EcP256).unwrap();
    assert_eq!(versions(&fake, "spire-example-com-JWT-Signer-B").len(), 2);
    assert_eq!(p.get_public_key("JWT-Signer-B").unwrap(), b);
}

#[test]
fn broad_regex_never_adopts_another_servers_x509_key() {
    let fake = FakeAzure::start();
    // A standard-mode server of the same trust domain.
    let std_env = plugin_env(&fake, &[]);
    let refs: Vec<(&str, &str)> = std_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let other = PluginProcess::launch(&refs);
    other.init().unwrap();
    other
        .configure(TD, &support::env::standard_hcl(&fake, "other-server"))
        .unwrap();
    other.generate_key("x509-CA-A", KeyType::EcP256).unwrap();
    other.generate_key("JWT-Signer-A", KeyType::EcP256).unwrap();
    let p = server(&fake, 1);
    assert!(
        p.get_public_keys().unwrap().is_empty(),
        "{:?}",
        p.get_public_keys().unwrap()
    );
}

#[test]
fn bad_shared_key_settings_fail_at_configure() {
    let fake = FakeAzure::start();
    let p = launch(&fake);
    let cases = [
        (
            r#"spire-{{ .KeyID"#,
            REGEX,
            "failed to parse jwt_key_template",
        ),
        (
            r#"spire-{{ .KeyID | nosuchfunc }}"#,
            REGEX,
            "failed to parse jwt_key_template",
        ),
        (
            r#"spire-{{ now }}-{{ .KeyID }}"#,
            REGEX,
            "failed to parse jwt_key_template",
        ),
        (TEMPLATE, "^spire-[^-]+-.+$", "exactly one capturing group"),
        (TEMPLATE, "^spire-(a)-(b)$", "exactly one capturing group"),
        (
            TEMPLATE,
            "^spire-([$",
            "failed to compile key_id_extraction_regex",
        ),
        (
            r#"spire_{{ .TrustDomain }}_{{ .KeyID }}"#,
            REGEX,
            "not a valid Key Vault key name",
        ),
        (
            r#"spire-{{ .KeyID }}"#,
            "^other-(.+)$",
            "does not recover the key id",
        ),
    ];
    for (template, regex, want) in cases {
        let (code, msg) = p
            .configure(TD, &shared_hcl(&fake, "s", template, regex))
            .unwrap_err();
        assert_eq!(
            code,
            RpcStatusCode::INVALID_ARGUMENT,
            "{template} {regex}: {msg}"
        );
        assert!(
            msg.contains(want),
            "{template} {regex}: got {msg:?}, want {want:?}"
        );
    }
}

#[test]
fn soft_deleted_shared_name_is_a_clear_failed_precondition() {
    let fake = FakeAzure::start();
    let p = server(&fake, 1);
    p.generate_key("JWT-Signer-A", KeyType::EcP256).unwrap();
    assert_eq!(versions(&fake, "spire-example-com-JWT-Signer-A").len(), 1);
    // Someone deletes the shared key (soft delete): Key Vault keeps the name reserved.
    delete_key(&fake, "spire-example-com-JWT-Signer-A");
    assert_eq!(
        fake.deleted_key_names(),
        vec!["spire-example-com-JWT-Signer-A".to_string()]
    );
    let (code, msg) = p.generate_key("JWT-Signer-A", KeyType::EcP256).unwrap_err();
    assert_eq!(code, RpcStatusCode::FAILED_PRECONDITION, "{msg}");
    assert!(msg.contains("recover it or purge it"), "{msg}");
}

fn delete_key(fake: &FakeAzure, name: &str) {
    let agent = agent_trusting(&fake.ca_pem());
    let token = token(fake, &agent);
    let url = format!("{}keys/{name}?api-version=7.6", fake.vault_uri());
    let resp = agent
        .delete(&url)
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap();
    assert_eq!(resp.status(), 200);
}

fn token(fake: &FakeAzure, agent: &ureq::Agent) -> String {
    let url = format!(
        "{}{}/oauth2/v2.0/token",
        fake.authority_host(),
        FakeAzure::TENANT
    );
    let mut resp = agent
        .post(&url)
        .send_form([
            ("grant_type", "client_credentials"),
            ("client_id", FakeAzure::CLIENT_ID),
            ("client_secret", FakeAzure::CLIENT_SECRET),
            ("scope", "https://vault.azure.net/.default"),
        ])
        .unwrap();
    assert_eq!(resp.status(), 200, "token request refused");
    let v: serde_json::Value =
        serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    v["access_token"].as_str().unwrap().to_string()
}
