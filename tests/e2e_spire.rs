//! End to end: the real `spire-server` (v1.13, from the Go module proxy through
//! `.ci/install-peers.sh`) loads the plugin binary with `plugin_cmd` + `plugin_checksum`, keeps
//! its CA and JWT keys in a Key Vault emulator reached over TLS with managed-identity auth, and
//! mints SVIDs that verify against its bundle. See tests/e2e/mod.rs for the vault backends.
//!
//! Each test has its own spire-server(s), data dir, sqlite datastore, socket, port and trust
//! domain; the emulator is shared by the whole binary.

mod e2e;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use azkv_testkit::poll_until;
use e2e::short_id;
use e2e::spire::{ConfigFormat, ServerSpec, SpireServer};
use e2e::vault::{vault, Vault, VaultKey};
use e2e::verify::{openssl_uri_san, openssl_verify, Bundle, Jwt, PubKey};

const AUDIENCE: &str = "e2e-audience";

fn trust_domain(kind: &str) -> String {
    format!("{kind}-{}.test", short_id())
}

/// name → public key (latest version) of the given vault keys.
fn pubkeys(vault: &Vault, keys: &[VaultKey]) -> BTreeMap<String, PubKey> {
    keys.iter()
        .filter_map(|k| {
            vault
                .key_jwk(&k.name)
                .map(|j| (k.name.clone(), PubKey::from_jwk(&j)))
        })
        .collect()
}

fn key_ids(keys: &[VaultKey]) -> BTreeSet<String> {
    keys.iter()
        .map(|k| {
            k.name
                .rsplit_once("-x509-CA-")
                .map(|(_, s)| format!("x509-CA-{s}"))
                .or_else(|| {
                    k.name
                        .rsplit_once("-JWT-Signer-")
                        .map(|(_, s)| format!("JWT-Signer-{s}"))
                })
                .unwrap_or_else(|| k.name.clone())
        })
        .collect()
}

/// PEM of the bundle's CA certificates whose public key is one of `keys`.
fn ca_pem_for(bundle: &Bundle, keys: &[PubKey]) -> String {
    let mut pem = String::new();
    for jwk in bundle.json["keys"].as_array().cloned().unwrap_or_default() {
        if jwk["use"] != "x509-svid" || !keys.contains(&PubKey::from_jwk(&jwk)) {
            continue;
        }
        for cert in jwk["x5c"].as_array().cloned().unwrap_or_default() {
            let der = STANDARD
                .decode(cert.as_str().unwrap_or_default())
                .expect("x5c is base64");
            let b64 = STANDARD.encode(der);
            pem.push_str("-----BEGIN CERTIFICATE-----\n");
            for chunk in b64.as_bytes().chunks(64) {
                pem.push_str(std::str::from_utf8(chunk).expect("ascii"));
                pem.push('\n');
            }
            pem.push_str("-----END CERTIFICATE-----\n");
        }
    }
    pem
}

/// Mints an X509-SVID and a JWT-SVID and checks them: the X509-SVID chains to the bundle and
/// to a CA whose key is one of `vault_keys`; the JWT-SVID's signature verifies with the bundle
/// key named by its `kid`, which is one of `vault_keys`. Returns the JWT and its key.
fn mint_and_verify(s: &SpireServer, vault_keys: &[PubKey]) -> (Jwt, PubKey) {
    let bundle = s.bundle();
    let id = s.spiffe_id("workload");

    let minted = s.x509_mint(&id);
    let svid = minted.join("svid.pem");
    openssl_verify(&s.bundle_pem(), &svid).unwrap_or_else(|e| panic!("X509-SVID vs bundle: {e}"));
    assert_eq!(openssl_uri_san(&svid), id, "X509-SVID URI SAN");
    let vault_cas = ca_pem_for(&bundle, vault_keys);
    assert!(!vault_cas.is_empty(), "no bundle CA has a key in the vault");
    let vault_ca_file = minted.join("vault-cas.pem");
    std::fs::write(&vault_ca_file, vault_cas).expect("write CA subset");
    openssl_verify(&vault_ca_file, &svid).unwrap_or_else(|e| {
        panic!("X509-SVID is not signed by a CA whose key is in the vault: {e}")
    });

    let token = s.jwt_mint(&id, AUDIENCE);
    let jwt = Jwt::parse(&token);
    let key = jwt
        .verify_with_bundle(&bundle)
        .unwrap_or_else(|e| panic!("JWT-SVID vs bundle: {e}\nheader {}", jwt.header));
    assert!(
        vault_keys.contains(&key),
        "the JWT signing key is not a vault key"
    );
    assert_eq!(jwt.claims["sub"], id.as_str());
    let aud_ok = match &jwt.claims["aud"] {
        Value::String(a) => a == AUDIENCE,
        Value::Array(a) => a.iter().any(|x| x == AUDIENCE),
        _ => false,
    };
    assert!(aud_ok, "aud claim: {}", jwt.claims);
    (jwt, key)
}

fn has_log(entries: &[Value], level: &str, msg: &str) -> bool {
    entries
        .iter()
        .any(|e| e["level"] == level && e["msg"].as_str().is_some_and(|m| m.contains(msg)))
}

/// The plugin's hclog JSON lines arrive in spire-server's log parsed (right level, message,
/// fields), never as raw JSON text, and nothing went wrong at error level.
fn assert_plugin_log_shape(s: &SpireServer) {
    assert_plugin_entries_shape(s, &s.plugin_log());
}

/// `assert_plugin_log_shape` on some of the plugin's entries (one run of a server whose log
/// also holds the built-in plugin's).
fn assert_plugin_entries_shape(s: &SpireServer, entries: &[Value]) {
    assert!(
        !entries.is_empty(),
        "no plugin log lines in {}",
        s.log_path().display()
    );
    for e in entries {
        let msg = e["msg"].as_str().unwrap_or_default();
        assert!(
            !msg.trim_start().starts_with('{'),
            "a plugin line reached SPIRE unparsed: {e}"
        );
        assert_eq!(
            e["external"], true,
            "plugin line without external=true: {e}"
        );
        assert_ne!(e["level"], "error", "plugin error: {e}");
    }
}

fn keys_table(vault: &Vault, keys: &[VaultKey]) -> String {
    keys.iter()
        .map(|k| {
            let jwk = vault.key_jwk(&k.name).unwrap_or(Value::Null);
            format!(
                "  {} [{} {}] tags={:?}",
                k.name,
                jwk["kty"].as_str().unwrap_or("?"),
                jwk["crv"].as_str().unwrap_or(""),
                k.tags
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Standard mode, HCL config: healthy, logs at the right levels, CA and JWT keys live in the
/// vault, SVIDs verify, and a restart reuses the same keys.
#[test]
fn standard_mode_serves_from_vault_and_restart_reuses_keys() {
    let vault = vault();
    let td = trust_domain("std");
    let mut spec = ServerSpec::new("std", &td, vault);
    let dir = e2e::TempDir::new("azkv-e2e-id");
    let id_file = dir.path.join("server_id");
    spec.plugin_data_set("key_identifier_file", json!(id_file.display().to_string()))
        .plugin_data_set("bogus_option", json!("x"));
    let prometheus = e2e::free_port();
    spec.prometheus_port = Some(prometheus);
    let mut s = SpireServer::new(spec, vault);
    s.validate_config();

    let t = s.start_healthy();
    eprintln!("[std] healthy after {:.1}s", t.as_secs_f64());

    // Logs: SPIRE turned the plugin's hclog lines into its own entries at the right levels.
    let log = s.plugin_log();
    assert!(
        has_log(&log, "info", "Plugin configured"),
        "{}",
        s.log_text()
    );
    assert!(has_log(&log, "info", "Keys discovered"));
    assert!(has_log(&log, "debug", "Key created"));
    assert!(has_log(
        &log,
        "warning",
        "unknown configuration key \"bogus_option\" is ignored"
    ));
    assert_plugin_log_shape(&s);

    // Keys: one per SPIRE key id, tagged with the trust domain and the id-file's server id.
    let server_id = std::fs::read_to_string(&id_file)
        .expect("server id file")
        .trim()
        .to_string();
    assert!(!server_id.is_empty());
    let keys = vault.keys_of_trust_domain(&td);
    eprintln!("[std] vault keys:\n{}", keys_table(vault, &keys));
    assert_eq!(
        key_ids(&keys),
        BTreeSet::from(["JWT-Signer-A".to_string(), "x509-CA-A".to_string()]),
        "{keys:?}"
    );
    for k in &keys {
        assert!(k.name.starts_with("spire-key-"), "{}", k.name);
        assert_eq!(k.tags.get("spire-server-id"), Some(&server_id), "{k:?}");
    }
    let live: Vec<PubKey> = pubkeys(vault, &keys).into_values().collect();

    // Bundle: every CA and JWT authority is a key in the vault.
    let bundle = s.bundle();
    let cas = bundle.x509_authorities();
    assert_eq!(cas.len(), 1, "{}", bundle.json);
    assert!(live.contains(&cas[0]), "bundle CA key is not in the vault");
    for (kid, k) in bundle.jwt_authorities() {
        assert!(live.contains(&k), "JWT authority {kid} is not in the vault");
    }
    mint_and_verify(&s, &live);

    // Metrics: the plugin dialed spire-server's Metrics host service through the broker, and
    // spire-server took what was sent (a failed send is a warning, after which sending stops).
    assert!(
        has_log(
            &s.plugin_log(),
            "debug",
            "Sending metrics to spire-server's Metrics host service"
        ),
        "{}",
        s.log_text()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !has_log(
            &s.plugin_log(),
            "warning",
            "Sending metrics to spire-server failed"
        ),
        "{}",
        s.log_text()
    );
    // And they reach the operator's sink: spire-server's Prometheus endpoint lists the
    // plugin's Key Vault call counter after the mints.
    let metrics = poll_until(Duration::from_secs(10), Duration::from_millis(200), || {
        let body = http_get_local(prometheus, "/metrics")?;
        body.lines()
            .any(|l| {
                l.contains("azure_key_vault_key_vault_call") && l.contains("operation=\"sign\"")
            })
            .then_some(body)
    });
    assert!(
        metrics.is_some(),
        "no azure_key_vault_key_vault_call{{operation=\"sign\"}} on spire-server's /metrics:\n{}",
        http_get_local(prometheus, "/metrics").unwrap_or_default()
    );

    // Restart: same keys, nothing new in the vault, same bundle, still serving.
    let clean = s.stop();
    assert!(clean, "spire-server did not exit on SIGTERM within 20s");
    assert!(
        !s.log_text().contains("plugin failed to exit gracefully"),
        "the plugin had to be killed on unload"
    );
    let t = s.start_healthy();
    eprintln!("[std] healthy again after {:.1}s", t.as_secs_f64());
    let after = vault.keys_of_trust_domain(&td);
    assert_eq!(after, keys, "restart changed the vault's keys");
    assert_eq!(
        pubkeys(vault, &after).into_values().collect::<Vec<_>>(),
        live
    );
    let discovered: Vec<Value> = s
        .plugin_log()
        .into_iter()
        .filter(|e| e["msg"] == "Keys discovered")
        .collect();
    assert_eq!(discovered.len(), 2, "one discovery per start");
    assert_eq!(discovered[1]["keys"], "2", "{}", discovered[1]);
    assert_eq!(s.bundle().x509_authorities(), cas, "restart changed the CA");
    mint_and_verify(&s, &live);
    assert_plugin_log_shape(&s);
}

/// A short CA TTL makes SPIRE prepare and activate new X.509 CA and JWT keys, then reuse the
/// slots: the plugin creates new vault keys and deletes the replaced ones.
#[test]
fn ca_rotation_creates_new_keys_and_deletes_old_ones() {
    let vault = vault();
    let td = trust_domain("rot");
    let mut spec = ServerSpec::new("rot", &td, vault);
    spec.ca_ttl = "30s".into();
    spec.x509_svid_ttl = "5s".into();
    spec.jwt_svid_ttl = "5s".into();
    spec.plugin_data_set("key_identifier_value", json!(format!("rot-{}", short_id())));
    spec.env.push((
        "AZKV_TEST_MAINTENANCE".into(),
        "refresh=2s,sweep=1h,first_sweep=100ms,stale=14d,backoff=50ms,backoff_max=1s,max_wait=50ms"
            .into(),
    ));
    let mut s = SpireServer::new(spec, vault);
    let started = Instant::now();
    s.start_healthy();

    let initial = vault.keys_of_trust_domain(&td);
    // Normally the two A-slot keys; more if SPIRE already prepared the B slot on a slow machine.
    assert!(initial.len() >= 2, "{initial:?}");
    let initial_names: Vec<String> = initial.iter().map(|k| k.name.clone()).collect();
    eprintln!("[rot] initial keys:\n{}", keys_table(vault, &initial));

    // Both initial keys get replaced (slot A is re-prepared after B took over) and deleted.
    let deleted = poll_until(Duration::from_secs(150), Duration::from_secs(1), || {
        initial_names
            .iter()
            .all(|n| vault.is_deleted(n))
            .then_some(())
    });
    let now = vault.keys_of_trust_domain(&td);
    assert!(
        deleted.is_some(),
        "initial keys not deleted after {:?}; live keys:\n{}\n--- log ---\n{}",
        started.elapsed(),
        keys_table(vault, &now),
        e2e::tail(&s.log_text(), 40)
    );
    eprintln!(
        "[rot] initial keys deleted after {:.0}s; live keys:\n{}",
        started.elapsed().as_secs_f64(),
        keys_table(vault, &now)
    );
    assert!(now.iter().all(|k| !initial_names.contains(&k.name)));
    let ids = key_ids(&now);
    assert!(
        ids.contains("x509-CA-A") || ids.contains("x509-CA-B"),
        "{ids:?}"
    );
    assert!(s.healthcheck(), "unhealthy after rotation");

    let log = s.plugin_log();
    assert!(has_log(&log, "debug", "Key deleted"), "no deletion logged");
    assert!(
        has_log(&log, "debug", "Keys refreshed"),
        "maintenance refresh never ran"
    );
    assert_plugin_log_shape(&s);

    // What SPIRE signs with now lives in the vault.
    let live: Vec<PubKey> = pubkeys(vault, &now).into_values().collect();
    mint_and_verify(&s, &live);
}

/// The server config written as JSON: SPIRE hands the plugin `plugin_data` with quoted keys.
/// RSA JWT keys (RS256) and a P-384 CA, with a static key identifier.
#[test]
fn json_server_config_with_rsa_jwt_and_p384_ca() {
    let vault = vault();
    let td = trust_domain("json");
    let mut spec = ServerSpec::new("json", &td, vault);
    spec.format = ConfigFormat::Json;
    spec.ca_key_type = "ec-p384".into();
    spec.jwt_key_type = "rsa-2048".into();
    spec.plugin_data_set("key_identifier_value", json!("json-server"))
        .plugin_data_set("bogus_json_option", json!("x"));
    let mut s = SpireServer::new(spec, vault);
    s.validate_config();
    s.start_healthy();

    let log = s.plugin_log();
    assert!(
        has_log(&log, "info", "Plugin configured"),
        "{}",
        s.log_text()
    );
    assert!(
        has_log(&log, "warning", "\"bogus_json_option\""),
        "quoted keys not parsed"
    );
    assert_plugin_log_shape(&s);

    let keys = vault.keys_of_trust_domain(&td);
    eprintln!("[json] vault keys:\n{}", keys_table(vault, &keys));
    assert_eq!(keys.len(), 2, "{keys:?}");
    for k in &keys {
        assert_eq!(
            k.tags.get("spire-server-id").map(String::as_str),
            Some("json-server")
        );
        let jwk = vault.key_jwk(&k.name).expect("key");
        if k.name.ends_with("JWT-Signer-A") {
            assert!(
                jwk["kty"].as_str().unwrap_or_default().starts_with("RSA"),
                "{jwk}"
            );
        } else {
            assert_eq!(jwk["crv"], "P-384", "{jwk}");
        }
    }
    let live: Vec<PubKey> = pubkeys(vault, &keys).into_values().collect();
    let (jwt, _) = mint_and_verify(&s, &live);
    assert_eq!(jwt.alg(), "RS256");
}

/// Shared keys: two spire-servers of one trust domain, separate data dirs and key
/// identifiers, started together against one vault, converge on one JWT key and publish it;
/// their X.509 CA keys stay per server.
#[test]
fn shared_keys_two_servers_publish_the_same_jwt_key() {
    let vault = vault();
    let td = trust_domain("shared");
    let slug = td.replace('.', "-");
    let shared = json!({
        "jwt_key_template": "spire-{{ .TrustDomain | replace \".\" \"-\" }}-{{ .KeyID }}",
        "key_id_extraction_regex": format!("^spire-{}-(.+)$", regex::escape(&slug)),
    });
    let mk = |label: &str| {
        let mut spec = ServerSpec::new(label, &td, vault);
        spec.plugin_data_set("key_identifier_value", json!(format!("server-{label}")))
            .plugin_data_set("shared_keys", shared.clone());
        spec.env
            .push(("AZKV_TEST_SHARED".into(), "settle=1s,jitter=300ms".into()));
        SpireServer::new(spec, vault)
    };
    let mut a = mk("a");
    let mut b = mk("b");
    a.validate_config();
    a.start();
    b.start();
    a.wait_healthy();
    b.wait_healthy();

    // One shared JWT key name in the vault; one X.509 CA key per server.
    let shared_keys = vault.keys_named(&format!("spire-{slug}-"));
    eprintln!("[shared] shared keys:\n{}", keys_table(vault, &shared_keys));
    let names: Vec<&str> = shared_keys.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, vec![format!("spire-{slug}-JWT-Signer-A").as_str()]);
    let ca_keys: Vec<VaultKey> = vault
        .keys_of_trust_domain(&td)
        .into_iter()
        .filter(|k| k.name.contains("x509-CA"))
        .collect();
    eprintln!("[shared] CA keys:\n{}", keys_table(vault, &ca_keys));
    let owners: BTreeSet<&str> = ca_keys
        .iter()
        .filter_map(|k| k.tags.get("spire-server-id").map(String::as_str))
        .collect();
    assert_eq!(
        owners,
        BTreeSet::from(["server-a", "server-b"]),
        "{ca_keys:?}"
    );

    // Both bundles publish the same JWT public key, the one the vault holds.
    let ba = a.bundle();
    let bb = b.bundle();
    let ja = ba.jwt_authorities();
    let jb = bb.jwt_authorities();
    eprintln!(
        "[shared] JWT kids: a={:?} b={:?}",
        ja.iter().map(|(k, _)| k).collect::<Vec<_>>(),
        jb.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    let keys_a: BTreeSet<PubKey> = ja.iter().map(|(_, k)| k.clone()).collect();
    let keys_b: BTreeSet<PubKey> = jb.iter().map(|(_, k)| k.clone()).collect();
    assert_eq!(keys_a.len(), 1);
    assert_eq!(keys_a, keys_b, "the two servers publish different JWT keys");
    let vault_jwt = PubKey::from_jwk(&vault.key_jwk(names[0]).expect("shared key"));
    assert!(
        keys_a.contains(&vault_jwt),
        "published JWT key is not the vault's current version"
    );
    assert_ne!(
        ba.x509_authorities(),
        bb.x509_authorities(),
        "X.509 CA keys must stay per server"
    );

    // A token from either server verifies with the other's bundle key.
    let live_a: Vec<PubKey> = pubkeys(vault, &ca_keys)
        .into_values()
        .chain([vault_jwt.clone()])
        .collect();
    let (jwt_a, _) = mint_and_verify(&a, &live_a);
    let (jwt_b, _) = mint_and_verify(&b, &live_a);
    jwt_a
        .verify_with(&jb[0].1)
        .expect("a's JWT with b's bundle key");
    jwt_b
        .verify_with(&ja[0].1)
        .expect("b's JWT with a's bundle key");

    let logs: Vec<Value> = a.plugin_log().into_iter().chain(b.plugin_log()).collect();
    assert!(
        has_log(&logs, "info", "Shared key version created"),
        "no shared key creation logged"
    );
    assert_plugin_log_shape(&a);
    assert_plugin_log_shape(&b);
}

/// Names of `keys`.
fn names(keys: &[VaultKey]) -> BTreeSet<String> {
    keys.iter().map(|k| k.name.clone()).collect()
}

/// A bundle's authorities as sets (`bundle show` does not keep an order): CA keys, and JWT
/// keys with their kids.
fn authorities(b: &Bundle) -> (BTreeSet<PubKey>, BTreeSet<(String, PubKey)>) {
    (
        b.x509_authorities().into_iter().collect(),
        b.jwt_authorities().into_iter().collect(),
    )
}

/// Switching between SPIRE's built-in `azure_key_vault` KeyManager (Microsoft's Go SDK, managed
/// identity through `DefaultAzureCredential`) and this plugin on one server, both ways, with
/// the same `plugin_data`:
/// 1. built-in: creates the keys; SVIDs verify;
/// 2. plugin: serves the built-in's keys (same bundle, same JWT keys, nothing created), SVIDs
///    verify; a forced rotation (`localauthority` prepare/activate, twice) makes it create keys
///    and delete the built-in's replaced ones;
/// 3. built-in again: serves the plugin's keys, nothing created or deleted, SVIDs verify.
///
/// The vault is the in-repo fake reached as `https://<name>.vault.azure.net/` through a CONNECT
/// proxy: the Go SDK sends its token only to such a host.
fn switch_builtin_plugin_builtin(label: &str, ca_key_type: &str, jwt_key_type: &str) {
    let vault = e2e::vault::fake_vault();
    let fake = vault.fake.expect("fake_vault() is the fake");
    let host = e2e::fake_azure::FakeAzure::PUBLIC_VAULT_HOST;
    let proxy = e2e::proxy::ConnectProxy::start(&format!("{host}:443"), fake.https_addr());
    let td = trust_domain(label);
    // More keys than one list page holds (25), so both plugins follow `nextLink`s through the
    // proxy (untagged: neither adopts them).
    let now = fake.now();
    for i in 0..26 {
        fake.insert_key(
            &format!("filler-{label}-{}-{i}", short_id()),
            e2e::fake_azure::FakeKeyType::EcP256,
            &[],
            now,
            now,
            true,
        );
    }
    let id_dir = e2e::TempDir::new("azkv-e2e-switch-id");
    let id_file = id_dir.path.join("server_id");

    let mut spec = ServerSpec::new(label, &td, vault);
    spec.ca_key_type = ca_key_type.into();
    spec.jwt_key_type = jwt_key_type.into();
    spec.plugin_data_set("key_vault_uri", json!(format!("https://{host}/")))
        .plugin_data_set("key_identifier_file", json!(id_file.display().to_string()));
    // Only the vault goes through the proxy: both clients never proxy loopback, where the
    // managed-identity endpoint is.
    spec.env.push(("HTTPS_PROXY".into(), proxy.url()));
    spec.builtin = true;
    let builtin_spec = spec.clone();
    let mut plugin_spec = spec;
    plugin_spec.builtin = false;
    // Maintenance on a short schedule so the replaced keys are deleted within the test.
    plugin_spec.env.push((
        "AZKV_TEST_MAINTENANCE".into(),
        "refresh=1h,sweep=1h,first_sweep=1h,stale=14d,backoff=50ms,backoff_max=1s,max_wait=50ms"
            .into(),
    ));

    // --- Run A: the built-in creates the keys.
    let mut s = SpireServer::new(builtin_spec.clone(), vault);
    s.start_healthy();
    let keys_a = vault.keys_of_trust_domain(&td);
    eprintln!(
        "[{label}] A: built-in's keys:\n{}",
        keys_table(vault, &keys_a)
    );
    assert_eq!(
        key_ids(&keys_a),
        BTreeSet::from(["JWT-Signer-A".to_string(), "x509-CA-A".to_string()]),
        "{keys_a:?}"
    );
    let server_id =
        std::fs::read_to_string(&id_file).expect("server id file written by the built-in");
    for k in &keys_a {
        assert!(k.name.starts_with("spire-key-"), "{}", k.name);
        assert_eq!(k.tags.get("spire-server-id"), Some(&server_id), "{k:?}");
        // This plugin tags its keys with the SPIRE id; the built-in does not.
        assert!(
            !k.tags.contains_key("spire-key-id"),
            "not a built-in key: {k:?}"
        );
    }
    let targets = proxy.targets();
    assert!(
        !targets.is_empty() && targets.iter().all(|t| t == &format!("CONNECT {host}:443")),
        "the built-in did not reach the vault through the proxy: {targets:?}"
    );
    let live_a: Vec<PubKey> = pubkeys(vault, &keys_a).into_values().collect();
    let bundle_a = s.bundle();
    mint_and_verify(&s, &live_a);
    assert!(s.stop(), "built-in spire-server did not exit on SIGTERM");

    // --- Run B: the plugin serves the built-in's keys, then rotates them.
    let connects_before_b = proxy.targets().len();
    let log_before_b = s.plugin_log().len();
    s.reconfigure(plugin_spec);
    s.start_healthy();
    let run_b_log = |s: &SpireServer| s.plugin_log().split_off(log_before_b);
    let keys_b0 = vault.keys_of_trust_domain(&td);
    assert_eq!(
        names(&keys_b0),
        names(&keys_a),
        "the plugin changed the vault's keys at start"
    );
    assert_eq!(
        pubkeys(vault, &keys_b0).into_values().collect::<Vec<_>>(),
        live_a
    );
    let bundle_b = s.bundle();
    assert_eq!(
        authorities(&bundle_b),
        authorities(&bundle_a),
        "the bundle's keys changed"
    );
    let discovered: Vec<Value> = run_b_log(&s)
        .into_iter()
        .filter(|e| e["msg"] == "Keys discovered")
        .collect();
    assert_eq!(discovered.len(), 1, "{discovered:?}");
    assert_eq!(discovered[0]["keys"], "2", "{}", discovered[0]);
    assert!(
        proxy.targets().len() > connects_before_b,
        "the plugin did not reach the vault through the proxy"
    );
    mint_and_verify(&s, &live_a);

    // Rotation: activate a new CA and JWT key (slot B), then prepare slot A again, which
    // replaces the built-in's keys: the plugin creates new ones and deletes the old.
    s.rotate_authority("x509");
    s.rotate_authority("jwt");
    s.prepare_authority("x509");
    s.prepare_authority("jwt");
    let a_names: Vec<String> = keys_a.iter().map(|k| k.name.clone()).collect();
    let deleted = poll_until(Duration::from_secs(60), Duration::from_millis(500), || {
        a_names.iter().all(|n| vault.is_deleted(n)).then_some(())
    });
    let keys_b = vault.keys_of_trust_domain(&td);
    eprintln!(
        "[{label}] B: keys after rotation:\n{}",
        keys_table(vault, &keys_b)
    );
    assert!(
        deleted.is_some(),
        "the built-in's replaced keys were not deleted; live keys:\n{}\n--- log ---\n{}",
        keys_table(vault, &keys_b),
        e2e::tail(&s.log_text(), 40)
    );
    assert_eq!(
        key_ids(&keys_b),
        BTreeSet::from([
            "JWT-Signer-A".to_string(),
            "JWT-Signer-B".to_string(),
            "x509-CA-A".to_string(),
            "x509-CA-B".to_string(),
        ]),
        "{keys_b:?}"
    );
    assert!(names(&keys_b).is_disjoint(&names(&keys_a)), "{keys_b:?}");
    for k in &keys_b {
        assert_eq!(k.tags.get("spire-server-id"), Some(&server_id), "{k:?}");
        assert_eq!(k.tags.get("spire-server-td"), Some(&td), "{k:?}");
    }
    let live_b: Vec<PubKey> = pubkeys(vault, &keys_b).into_values().collect();
    mint_and_verify(&s, &live_b);
    let bundle_b = s.bundle();
    assert_plugin_entries_shape(&s, &run_b_log(&s));
    assert!(
        s.stop(),
        "spire-server with the plugin did not exit on SIGTERM"
    );

    // --- Run A again: the built-in serves the plugin's keys; nothing lost or duplicated.
    s.reconfigure(builtin_spec);
    s.start_healthy();
    let keys_a2 = vault.keys_of_trust_domain(&td);
    eprintln!("[{label}] A again: keys:\n{}", keys_table(vault, &keys_a2));
    assert_eq!(
        names(&keys_a2),
        names(&keys_b),
        "the built-in changed the vault's keys"
    );
    assert_eq!(
        pubkeys(vault, &keys_a2).into_values().collect::<Vec<_>>(),
        live_b
    );
    for n in &a_names {
        assert!(vault.is_deleted(n), "{n} came back");
    }
    let bundle_a2 = s.bundle();
    assert_eq!(
        authorities(&bundle_a2),
        authorities(&bundle_b),
        "the bundle's keys changed"
    );
    mint_and_verify(&s, &live_b);
    // SPIRE asks for every journal key at start: had the built-in missed one, it would have
    // generated a new key by now.
    let keys_end = vault.keys_of_trust_domain(&td);
    assert_eq!(names(&keys_end), names(&keys_b), "{keys_end:?}");
    let builtin_errors: Vec<Value> = s
        .plugin_log()
        .into_iter()
        .filter(|e| e["external"] == false && (e["level"] == "error" || e["level"] == "warning"))
        .collect();
    assert!(
        builtin_errors.is_empty(),
        "built-in plugin: {builtin_errors:?}"
    );
    let go_requests = assert_go_sdk_requests_ok(fake);
    assert!(
        go_requests > 0,
        "no request from the Go SDK reached the fake"
    );
}

/// Every request Microsoft's Go SDK sent the fake (its User-Agent starts with `azsdk-go`) got a
/// success, or the 401 challenge to a request without a token: a shape the SDK rejects shows
/// as a failed server, one it should never have caused shows here. Returns how many there were.
fn assert_go_sdk_requests_ok(fake: &e2e::fake_azure::FakeAzure) -> usize {
    let go: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| {
            r.headers
                .iter()
                .any(|(k, v)| k == "user-agent" && v.starts_with("azsdk-go"))
        })
        .collect();
    for r in &go {
        let challenge = r.status == 401 && r.authorization.is_none();
        assert!(
            (200..300).contains(&r.status) || challenge,
            "the fake answered the Go SDK {} {} with {}",
            r.method,
            r.path,
            r.status
        );
    }
    go.len()
}

/// EC keys: a P-384 CA and a P-256 JWT key (ES256).
#[test]
fn switching_builtin_to_plugin_and_back_ec() {
    switch_builtin_plugin_builtin("switch-ec", "ec-p384", "ec-p256");
}

/// RSA keys: RSA-2048 CA and JWT key (RS256).
#[test]
fn switching_builtin_to_plugin_and_back_rsa() {
    switch_builtin_plugin_builtin("switch-rsa", "rsa-2048", "rsa-2048");
}

/// The body of `GET path` from a plain-HTTP server on 127.0.0.1:`port` (spire-server's
/// Prometheus endpoint), or `None` when it does not answer.
fn http_get_local(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
}
