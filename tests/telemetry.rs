//! Metrics through spire-server's Metrics host service: the test host serves it on a socket of
//! its own and announces it on the broker stream, as spire-server does; the plugin's metrics
//! must arrive there with SPIRE-style keys and labels. A host without the service gets nothing.

mod support;

use std::time::Duration;

use azkv::proto::keymanager::{HashAlgorithm, KeyType, SignerOpts};
use support::env::{plugin_env, secrets, standard_hcl, TD};
use support::fake_azure::{FakeAzure, FakeKeyType, FaultKind, Route};
use support::plugin_host::{PluginProcess, ReceivedMetric};
use support::verify::digest;

const SID: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
/// The plugin's metrics flush period here (a second in production).
const FLUSH: &str = "100ms";

fn launch(fake: &FakeAzure) -> PluginProcess {
    let env = plugin_env(
        fake,
        &[
            ("AZKV_TEST_STATUS_INTERVAL", "1s"),
            ("AZKV_TEST_METRICS_FLUSH", FLUSH),
        ],
    );
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    PluginProcess::launch(&refs)
}

fn key(parts: &[&str]) -> Vec<String> {
    std::iter::once("azure_key_vault")
        .chain(parts.iter().copied())
        .map(str::to_string)
        .collect()
}

fn labels(l: &[(&str, &str)]) -> Vec<(String, String)> {
    l.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Sum of the values of `method` calls with `key` and exactly `labels`.
fn total(got: &[ReceivedMetric], method: &str, k: &[&str], l: &[(&str, &str)]) -> f32 {
    let (k, l) = (key(k), labels(l));
    got.iter()
        .filter(|m| m.method == method && m.key == k && m.labels == l)
        .map(|m| m.val)
        .sum()
}

fn count(got: &[ReceivedMetric], method: &str, k: &[&str]) -> usize {
    let k = key(k);
    got.iter()
        .filter(|m| m.method == method && m.key == k)
        .count()
}

fn wait_until(p: &PluginProcess, mut cond: impl FnMut(&[ReceivedMetric]) -> bool) -> bool {
    azkv_testkit::wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        cond(&p.received_metrics())
    })
}

fn sign(p: &PluginProcess, id: &str) {
    let d = digest(HashAlgorithm::Sha256, b"data");
    let opts = Some(SignerOpts::HashAlgorithm(HashAlgorithm::Sha256 as i32));
    p.sign(id, &d, opts).expect("sign");
}

#[test]
fn metrics_reach_the_host_service_with_spire_style_keys_and_labels() {
    let fake = FakeAzure::start();
    let mut p = launch(&fake);
    p.init().expect("init");
    p.configure(TD, &standard_hcl(&fake, SID))
        .expect("configure");
    p.generate_key("x509-CA-A", KeyType::EcP256).unwrap();
    sign(&p, "x509-CA-A");
    // One 429 asking for a 1 s wait: retried after honouring it.
    fake.inject(
        Route::Sign,
        FaultKind::Status {
            status: 429,
            retry_after: Some("1".into()),
            body: None,
        },
        1,
    );
    sign(&p, "x509-CA-A");
    // A refusal is not retried and fails the sign.
    fake.inject(
        Route::Sign,
        FaultKind::Status {
            status: 403,
            retry_after: None,
            body: None,
        },
        1,
    );
    let d = digest(HashAlgorithm::Sha256, b"data");
    let opts = Some(SignerOpts::HashAlgorithm(HashAlgorithm::Sha256 as i32));
    assert!(p.sign("x509-CA-A", &d, opts).is_err());
    // Revoked tokens: the vault answers 401 and the plugin fetches a fresh token.
    fake.revoke_tokens();
    sign(&p, "x509-CA-A");
    // Rotation: a new key, the old one deleted in the background.
    p.generate_key("x509-CA-A", KeyType::EcP256).unwrap();

    // What must arrive, once every flush has gone out: (what, figure, expected).
    let expected = |g: &[ReceivedMetric]| -> Vec<(&'static str, f32, f32)> {
        let call = |op, outcome| {
            total(
                g,
                "IncrCounter",
                &["key_vault", "call"],
                &[("operation", op), ("outcome", outcome)],
            )
        };
        vec![
            ("signs ok", call("sign", "ok"), 3.0),
            ("signs refused", call("sign", "4xx"), 1.0),
            ("creates", call("create", "ok"), 2.0),
            ("deletes", call("delete", "ok"), 1.0),
            (
                "keys deleted by rotation",
                total(
                    g,
                    "IncrCounter",
                    &["key", "deleted"],
                    &[("reason", "rotation")],
                ),
                1.0,
            ),
            (
                "429 retries",
                total(g, "IncrCounter", &["http", "retry"], &[("reason", "429")]),
                1.0,
            ),
            (
                "seconds waited for Retry-After",
                total(
                    g,
                    "IncrCounter",
                    &["http", "retry_after_wait_seconds"],
                    &[("reason", "429")],
                ),
                1.0,
            ),
            // The first token, then the fresh one after the 401.
            (
                "token fetches",
                total(
                    g,
                    "IncrCounter",
                    &["token", "fetch"],
                    &[("credential", "client_secret"), ("outcome", "ok")],
                ),
                2.0,
            ),
            (
                "token fetch samples",
                count(g, "AddSample", &["token", "fetch", "elapsed_time"]) as f32,
                2.0,
            ),
            // Failed signs are timed too.
            (
                "sign samples",
                count(g, "AddSample", &["key_vault", "sign", "elapsed_time"]) as f32,
                4.0,
            ),
        ]
    };
    let all_arrived = |g: &[ReceivedMetric]| expected(g).iter().all(|(_, got, want)| got == want);
    // Polls until every flush is in (or 10 s): then each figure must be exactly as expected.
    wait_until(&p, all_arrived);
    let got = p.received_metrics();
    for (what, figure, want) in expected(&got) {
        assert_eq!(figure, want, "{what}; metrics received: {got:#?}");
    }
    // The sign that waited out the 429 took at least that second.
    assert!(
        got.iter()
            .filter(|m| m.key == key(&["key_vault", "sign", "elapsed_time"]))
            .any(|m| m.val >= 1000.0),
        "{got:#?}"
    );
    assert_eq!(count(&got, "IncrCounter", &["telemetry", "dropped"]), 0);

    // The same counts in the status line (every second here, hourly in production).
    assert!(p.wait_for_log(
        "key_vault.call{operation=sign,outcome=ok}=",
        Duration::from_secs(5)
    ));
    let status = p
        .stderr_lines()
        .into_iter()
        .filter(|l| l.contains("Key Vault status"))
        .collect::<Vec<_>>();
    assert!(
        status
            .iter()
            .any(|l| l.contains("http.retry{reason=429}=1")),
        "{status:#?}"
    );
    p.unload();
    p.assert_logs_clean(&secrets(&fake));
}

#[test]
fn a_host_without_the_metrics_service_gets_no_calls_and_no_error() {
    let fake = FakeAzure::start();
    let mut p = launch(&fake);
    p.init_offering(&["spire.hostservice.server.agentstore.v1.AgentStore"])
        .expect("init");
    p.configure(TD, &standard_hcl(&fake, SID))
        .expect("configure");
    p.generate_key("x509-CA-A", KeyType::EcP256).unwrap();
    sign(&p, "x509-CA-A");
    assert!(p.wait_for_log("offers no Metrics host service", Duration::from_secs(5)));
    // The status line shows the sign, so the metrics were drained, and none went to the host.
    assert!(p.wait_for_log(
        "key_vault.call{operation=sign,outcome=ok}=1",
        Duration::from_secs(5)
    ));
    assert_eq!(p.received_metrics(), Vec::new());
    let lines = p.stderr_lines();
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("\"@level\":\"warn\"") || l.contains("\"@level\":\"error\"")),
        "{lines:#?}"
    );
    p.unload();
}

#[test]
fn sweep_deletions_are_counted_as_the_sweeps() {
    let fake = FakeAzure::start();
    let stale = fake.now() - 15.0 * 86400.0;
    fake.insert_key(
        "spire-key-00000000-0000-4000-8000-00000000000a-x509-CA-A",
        FakeKeyType::EcP256,
        &[("spire-server-td", TD), ("spire-server-id", "other-server")],
        stale,
        stale,
        true,
    );
    let env = plugin_env(
        &fake,
        &[
            (
                "AZKV_TEST_MAINTENANCE",
                "first_sweep=200ms,max_wait=20ms,backoff=50ms",
            ),
            ("AZKV_TEST_METRICS_FLUSH", FLUSH),
        ],
    );
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut p = PluginProcess::launch(&refs);
    p.init().expect("init");
    p.configure(TD, &standard_hcl(&fake, SID))
        .expect("configure");
    let swept = |g: &[ReceivedMetric]| {
        total(
            g,
            "IncrCounter",
            &["key", "deleted"],
            &[("reason", "sweep")],
        )
    };
    assert!(
        wait_until(&p, |g| swept(g) == 1.0),
        "{:#?}",
        p.received_metrics()
    );
    assert_eq!(
        total(
            &p.received_metrics(),
            "IncrCounter",
            &["key", "deleted"],
            &[("reason", "rotation")]
        ),
        0.0
    );
    p.unload();
}

#[test]
fn shared_key_adoptions_and_claims_are_counted() {
    const SHARED_TD: &str = "example.com";
    let fake = FakeAzure::start();
    let env = plugin_env(
        &fake,
        &[
            (
                "AZKV_TEST_SHARED",
                "settle=400ms,claim_wait=400ms,jitter=300ms,poll=100ms",
            ),
            ("AZKV_TEST_METRICS_FLUSH", FLUSH),
        ],
    );
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut p = PluginProcess::launch(&refs);
    p.init().expect("init");
    let hcl = format!(
        "{}key_identifier_value = \"server-1\"\nshared_keys {{\n  jwt_key_template = \"spire-{{{{ .KeyID }}}}\"\n  key_id_extraction_regex = \"^spire-(JWT-.+)$\"\n}}\n",
        support::env::vault_hcl(&fake)
    );
    p.configure(SHARED_TD, &hcl).expect("configure");
    let a = p.generate_key("JWT-Signer-A", KeyType::EcP256).unwrap();
    // A version younger than the freshness window is adopted, not replaced.
    let again = p.generate_key("JWT-Signer-A", KeyType::EcP256).unwrap();
    assert_eq!(a, again);
    // A stale version: this server claims the rotation and creates the next one.
    fake.set_now(fake.now() + 16.0 * 60.0);
    fake.insert_key(
        "spire-JWT-Signer-B",
        FakeKeyType::EcP256,
        &[
            ("spire-server-td", SHARED_TD),
            ("spire-server-id", "x"),
            ("spire-key-id", "JWT-Signer-B"),
            ("spire-shared-key", "true"),
        ],
        fake.now() - 16.0 * 60.0 - 86400.0,
        0.0,
        true,
    );
    p.generate_key("JWT-Signer-B", KeyType::EcP256).unwrap();
    let claims_won = |g: &[ReceivedMetric]| {
        total(
            g,
            "IncrCounter",
            &["shared_key", "claim"],
            &[("outcome", "won")],
        )
    };
    let adoptions =
        |g: &[ReceivedMetric]| total(g, "IncrCounter", &["shared_key", "adoption"], &[]);
    assert!(
        wait_until(&p, |g| claims_won(g) == 1.0 && adoptions(g) >= 1.0),
        "{:#?}",
        p.received_metrics()
    );
    p.unload();
}

#[test]
fn metrics_the_host_refused_arrive_once_it_answers_again() {
    let fake = FakeAzure::start();
    let mut p = launch(&fake);
    p.init().expect("init");
    // The host's first Metrics call fails: the plugin warns, backs off, re-dials and sends on.
    p.refuse_metrics(1);
    p.configure(TD, &standard_hcl(&fake, SID))
        .expect("configure");
    p.generate_key("x509-CA-A", KeyType::EcP256).unwrap();
    sign(&p, "x509-CA-A");
    assert!(p.wait_for_log(
        "Sending metrics to spire-server failed; retrying with backoff",
        Duration::from_secs(5)
    ));
    sign(&p, "x509-CA-A");
    let arrived = |g: &[ReceivedMetric]| {
        let call = |op| {
            total(
                g,
                "IncrCounter",
                &["key_vault", "call"],
                &[("operation", op), ("outcome", "ok")],
            )
        };
        // Every sample (two signs, one token fetch) either reached the host or is counted as
        // dropped.
        let samples = count(g, "AddSample", &["key_vault", "sign", "elapsed_time"]) as f32
            + count(g, "AddSample", &["token", "fetch", "elapsed_time"]) as f32
            + total(g, "IncrCounter", &["telemetry", "dropped"], &[]);
        (call("create"), call("sign"), samples)
    };
    // Counters are kept across the failure, so the sums arrive exact.
    wait_until(&p, |g| arrived(g) == (1.0, 2.0, 3.0));
    let got = p.received_metrics();
    assert_eq!(arrived(&got), (1.0, 2.0, 3.0), "{got:#?}");
    assert!(p.wait_for_log(
        "Sending metrics to spire-server works again",
        Duration::from_secs(5)
    ));
    let warnings = p
        .stderr_lines()
        .into_iter()
        .filter(|l| l.contains("Sending metrics to spire-server failed"))
        .count();
    assert_eq!(warnings, 1, "one warning per outage");
    p.unload();
    p.assert_logs_clean(&secrets(&fake));
}
