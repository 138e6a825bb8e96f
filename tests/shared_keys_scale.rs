//! Shared keys mode at scale: 16 plugin processes on one fake Key Vault rotating `JWT-Signer-A`
//! at the same moment (a first creation, then a rotation through the claim protocol), and a
//! server SIGKILLed between writing its rotation claim and creating the version.
//!
//! The fake's clock follows the wall clock in whole seconds, like Key Vault's `created`, so
//! versions made in the same second tie and are ordered by version id, as in the real service.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use azkv::proto::keymanager::{
    GenerateKeyRequest, HashAlgorithm, KeyType, PublicKey, SignerOpts, GENERATE_KEY,
};
use support::env::{plugin_env, secrets};
use support::fake_azure::{FakeAzure, FakeKeyType, FakeKeyVersion, FaultKind, Route};
use support::plugin_host::PluginProcess;
use support::verify::{digest, verify};

const SERVERS: usize = 16;
const TD: &str = "example.com";
const TEMPLATE: &str = r#"spire-{{ .TrustDomain | replace \".\" \"-\" }}-{{ .KeyID }}"#;
const REGEX: &str = "^spire-[^-]+-(.+)$";
const ID: &str = "JWT-Signer-A";
const NAME: &str = "spire-example-com-JWT-Signer-A";

// Coordination waits, generous for 16 processes sharing 2 cores: the claim wait must exceed
// any server's read-to-write gap, the settle period 1 s (`created` resolution) plus a
// check-to-create gap.
const SETTLE: Duration = Duration::from_millis(1500);
const CLAIM_WAIT: Duration = Duration::from_millis(1000);
const JITTER: Duration = Duration::from_millis(2000);
const POLL: Duration = Duration::from_millis(100);
const CLAIM_TTL: Duration = Duration::from_secs(6);
/// Request round trips and scheduling of 16 processes on a loaded 2-core machine.
const MARGIN: Duration = Duration::from_millis(1500);

/// The two tests each run 16 processes against timing bounds: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn timing(claim_wait: Duration) -> String {
    timing_with(claim_wait, JITTER)
}

fn timing_with(claim_wait: Duration, jitter: Duration) -> String {
    format!(
        "settle={}ms,claim_wait={}ms,jitter={}ms,poll={}ms,claim_ttl={}ms",
        SETTLE.as_millis(),
        claim_wait.as_millis(),
        jitter.as_millis(),
        POLL.as_millis(),
        CLAIM_TTL.as_millis()
    )
}

fn shared_hcl(fake: &FakeAzure, server_id: &str) -> String {
    format!(
        "key_vault_uri = \"{}\"\nkey_identifier_value = \"{server_id}\"\ntenant_id = \"{}\"\napp_id = \"{}\"\napp_secret = \"{}\"\nshared_keys {{\n  jwt_key_template = \"{TEMPLATE}\"\n  key_id_extraction_regex = \"{REGEX}\"\n}}\n",
        fake.vault_uri(),
        FakeAzure::TENANT,
        FakeAzure::CLIENT_ID,
        FakeAzure::CLIENT_SECRET
    )
}

fn server(fake: &FakeAzure, n: usize, timing: &str) -> PluginProcess {
    let env = plugin_env(fake, &[("AZKV_TEST_SHARED", timing)]);
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let p = PluginProcess::launch(&refs);
    p.init().expect("init");
    p.configure(TD, &shared_hcl(fake, &format!("server-{n}")))
        .expect("configure");
    p
}

/// Launches servers `ids` in parallel (startup is most of a test's time otherwise).
fn servers(fake: &FakeAzure, ids: std::ops::Range<usize>, timing: &str) -> Vec<PluginProcess> {
    std::thread::scope(|s| {
        let handles: Vec<_> = ids
            .map(|n| s.spawn(move || server(fake, n, timing)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Runs `body` while the fake's clock follows the wall clock in whole seconds.
fn with_wall_clock<T>(fake: &FakeAzure, body: impl FnOnce() -> T) -> T {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                fake.set_now(wall_seconds().floor());
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        fake.set_now(wall_seconds().floor());
        // Stops the ticker also when `body` panics (the scope joins it before unwinding on).
        let _stop = StopOnDrop(&stop);
        body()
    })
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn wall_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn versions(fake: &FakeAzure) -> Vec<FakeKeyVersion> {
    fake.keys()
        .into_iter()
        .find(|k| k.name == NAME)
        .map(|k| k.versions)
        .unwrap_or_default()
}

fn stale_shared_key(fake: &FakeAzure) {
    let stale = wall_seconds().floor() - 20.0 * 60.0;
    let tags = [
        ("spire-server-td", TD),
        ("spire-server-id", "server-0"),
        ("spire-key-id", ID),
        ("spire-shared-key", "true"),
    ];
    fake.insert_key(NAME, FakeKeyType::EcP256, &tags, stale, stale, true);
}

/// What one simultaneous GenerateKey by every server produced, times relative to the barrier.
struct Round {
    keys: Vec<PublicKey>,
    /// When each GenerateKey returned.
    returned: Vec<Duration>,
    /// When each version that appeared during the round was first seen on the fake.
    appeared: HashMap<String, Duration>,
    /// CreateKey requests the fake answered during the round.
    creates: usize,
    /// Versions that existed before the round.
    before: HashSet<String>,
    /// When the barrier released the servers.
    start: Instant,
}

/// Every server calls GenerateKey(JWT-Signer-A) at the same moment.
fn rotate_together(fake: &FakeAzure, servers: &[&PluginProcess]) -> Round {
    let before: HashSet<String> = versions(fake).into_iter().map(|v| v.version).collect();
    let creates = fake.count(Route::CreateKey);
    let barrier = Barrier::new(servers.len() + 1);
    let done = AtomicBool::new(false);
    let (keys, returned, appeared, start) = std::thread::scope(|s| {
        let handles: Vec<_> = servers
            .iter()
            .map(|p| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let key = p.generate_key(ID, KeyType::EcP256).expect("GenerateKey");
                    (key, Instant::now())
                })
            })
            .collect();
        let watcher = s.spawn(|| {
            let mut seen = HashMap::new();
            while !done.load(Ordering::Relaxed) {
                for v in versions(fake) {
                    if !before.contains(&v.version) {
                        seen.entry(v.version).or_insert_with(Instant::now);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            seen
        });
        barrier.wait();
        let start = Instant::now();
        let stop_watcher = StopOnDrop(&done);
        let (keys, ends): (Vec<_>, Vec<_>) = handles.into_iter().map(|h| h.join().unwrap()).unzip();
        drop(stop_watcher);
        (keys, ends, watcher.join().unwrap(), start)
    });
    Round {
        keys,
        returned: returned.iter().map(|t| t.duration_since(start)).collect(),
        appeared: appeared
            .into_iter()
            .map(|(v, t)| (v, t.saturating_duration_since(start)))
            .collect(),
        creates: fake.count(Route::CreateKey) - creates,
        before,
        start,
    }
}

/// Every server returned and serves the same key; it is one version, enabled, the only new one
/// enabled, and signatures by every server verify with it. Returns the version and the latest
/// return after the barrier.
fn check_converged(
    fake: &FakeAzure,
    servers: &[&PluginProcess],
    round: &Round,
) -> (String, Duration) {
    let key = &round.keys[0];
    for k in &round.keys {
        assert_eq!(k, key, "servers returned different keys");
    }
    let all = versions(fake);
    let served: Vec<&FakeKeyVersion> = all
        .iter()
        .filter(|v| fake.public_key_der(NAME, &v.version).as_deref() == Some(&key.pkix_data[..]))
        .collect();
    assert_eq!(served.len(), 1, "the served key is one version");
    let served = served[0];
    assert!(
        served.enabled,
        "the served version {} is disabled",
        served.version
    );
    assert!(
        !round.before.contains(&served.version),
        "a new version is served"
    );
    let new_enabled: Vec<&str> = all
        .iter()
        .filter(|v| !round.before.contains(&v.version) && v.enabled)
        .map(|v| v.version.as_str())
        .collect();
    assert_eq!(
        new_enabled,
        [served.version.as_str()],
        "one new version stays usable"
    );
    let d = digest(HashAlgorithm::Sha256, b"shared at scale");
    for p in servers {
        assert_eq!(&p.get_public_key(ID).expect("GetPublicKey"), key);
        let s = p
            .sign(
                ID,
                &d,
                Some(SignerOpts::HashAlgorithm(HashAlgorithm::Sha256 as i32)),
            )
            .expect("SignData");
        assert_eq!(s.key_fingerprint, key.fingerprint);
        verify(
            &key.pkix_data,
            HashAlgorithm::Sha256,
            false,
            &d,
            &s.signature,
        );
    }
    let last = round.returned.iter().max().copied().unwrap_or_default();
    (served.version.clone(), last)
}

/// Every server serves `version` within the settle period (plus one poll and the margin) of
/// its appearance on the fake.
fn check_served_within_settle(round: &Round, version: &str, last: Duration) {
    let appeared = round.appeared[version];
    let bound = SETTLE + POLL + MARGIN;
    assert!(
        last.saturating_sub(appeared) <= bound,
        "last server served {version} {:?} after it appeared (bound {bound:?})",
        last.saturating_sub(appeared)
    );
}

#[test]
fn sixteen_servers_create_then_rotate_one_shared_version() {
    let _serial = serial();
    let fake = FakeAzure::start();
    with_wall_clock(&fake, || {
        let procs = servers(&fake, 0..SERVERS, &timing(CLAIM_WAIT));
        let all: Vec<&PluginProcess> = procs.iter().collect();

        // First creation: no version to hold a claim, so after their random waits several
        // servers may create; they converge on one and the others disable theirs.
        let round = rotate_together(&fake, &all);
        let (first, last) = check_converged(&fake, &all, &round);
        let bound = JITTER + SETTLE + MARGIN;
        assert!(
            last <= bound,
            "first creation took {last:?} (bound {bound:?})"
        );
        assert_eq!(round.creates, versions(&fake).len());
        eprintln!(
            "first creation: {} version(s) created, all served {first} after {last:?}",
            round.creates
        );

        // Rotation: the version is now older than the freshness window. Exactly one server
        // wins the claim and creates; the others adopt its version.
        fake.age_key(NAME, 20.0 * 60.0);
        let round = rotate_together(&fake, &all);
        let (second, last) = check_converged(&fake, &all, &round);
        assert_ne!(second, first);
        assert_eq!(round.creates, 1, "one CreateKey for the rotation");
        assert_eq!(versions(&fake).len(), round.before.len() + 1);
        let bound = CLAIM_WAIT + SETTLE + POLL + MARGIN;
        assert!(last <= bound, "rotation took {last:?} (bound {bound:?})");
        check_served_within_settle(&round, &second, last);
        eprintln!("rotation: 1 version created, all served {second} after {last:?}");

        for p in &procs {
            p.assert_logs_clean(&secrets(&fake));
        }
    });
}

#[test]
fn a_server_killed_after_claiming_leaves_the_rotation_to_the_others() {
    let _serial = serial();
    let fake = FakeAzure::start();
    stale_shared_key(&fake);
    with_wall_clock(&fake, || {
        // The victim waits long after writing its claim, so it is killed inside the protocol.
        let mut victim = server(&fake, 0, &timing(Duration::from_secs(30)));
        let procs = servers(&fake, 1..SERVERS, &timing(CLAIM_WAIT));
        let others: Vec<&PluginProcess> = procs.iter().collect();
        for p in others.iter().copied().chain([&victim]) {
            assert!(
                p.get_public_key(ID).is_ok(),
                "the stale version is discovered"
            );
        }

        let client = victim.client();
        let call = std::thread::spawn(move || {
            let req = GenerateKeyRequest {
                key_id: ID.into(),
                key_type: KeyType::EcP256 as i32,
            };
            let opt = grpcio::CallOption::default().timeout(Duration::from_secs(60));
            client.unary_call(&GENERATE_KEY, &req, opt).is_ok()
        });
        let claimed =
            azkv_testkit::poll_until(Duration::from_secs(15), Duration::from_millis(5), || {
                let claim = fake.requests().into_iter().any(|r| {
                    r.route == Route::UpdateKey
                        && r.status == 200
                        && r.body.contains("spire-rotation-claim")
                });
                claim.then(Instant::now)
            })
            .expect("the victim never claimed");
        victim.kill9();
        assert!(
            !call.join().unwrap(),
            "the killed server's GenerateKey cannot succeed"
        );
        assert_eq!(fake.count(Route::CreateKey), 0, "killed before creating");
        let v1 = versions(&fake);
        assert_eq!(v1.len(), 1);
        assert!(v1[0].tags.contains_key("spire-rotation-claim"));

        // The others honor the dead claim until it expires, then one of them claims and
        // creates: one new version, served by all, soon after the claim's TTL.
        let round = rotate_together(&fake, &others);
        let (version, last) = check_converged(&fake, &others, &round);
        assert_eq!(round.creates, 1, "one CreateKey after the dead claim");
        assert_eq!(versions(&fake).len(), 2);
        let since_claim = |d: Duration| round.start.duration_since(claimed) + d;
        let appeared = since_claim(round.appeared[&version]);
        // The claim is stamped in whole seconds: it may expire up to 1 s early.
        let earliest = CLAIM_TTL - Duration::from_secs(1);
        assert!(
            appeared >= earliest,
            "created {appeared:?} after the claim, before it expired"
        );
        let bound = CLAIM_TTL + CLAIM_WAIT + SETTLE + POLL + MARGIN;
        assert!(
            since_claim(last) <= bound,
            "served {:?} after the dead claim (bound {bound:?})",
            since_claim(last)
        );
        check_served_within_settle(&round, &version, last);
        eprintln!(
            "dead claim: version {version} created {appeared:?} after the claim, all served after {:?}",
            since_claim(last)
        );

        // Nothing stuck: the next rotation runs at claim speed.
        fake.age_key(NAME, 20.0 * 60.0);
        let round = rotate_together(&fake, &others);
        let (next, last) = check_converged(&fake, &others, &round);
        assert_ne!(next, version);
        assert_eq!(round.creates, 1);
        let bound = CLAIM_WAIT + SETTLE + POLL + MARGIN;
        assert!(
            last <= bound,
            "next rotation took {last:?} (bound {bound:?})"
        );
        for p in &others {
            p.assert_logs_clean(&secrets(&fake));
        }
    });
}

#[test]
fn sixteen_servers_creating_at_once_or_after_a_lost_response_keep_one_version_usable() {
    let _serial = serial();
    let fake = FakeAzure::start();
    with_wall_clock(&fake, || {
        // No random wait: the servers all look before any version exists, so many create;
        // they converge on one and the creators disable the rest.
        let procs = servers(&fake, 0..SERVERS, &timing_with(CLAIM_WAIT, Duration::ZERO));
        let all: Vec<&PluginProcess> = procs.iter().collect();
        let round = rotate_together(&fake, &all);
        let (first, last) = check_converged(&fake, &all, &round);
        assert_eq!(round.creates, versions(&fake).len());
        let bound = SETTLE + SETTLE + MARGIN;
        assert!(
            last <= bound,
            "first creation took {last:?} (bound {bound:?})"
        );
        eprintln!(
            "first creation without jitter: {} versions created, all served {first} after {last:?}",
            round.creates
        );

        // The winner's create is served but its response lost: its client retries, so the
        // vault gets two new versions. Exactly one stays usable and every server serves it.
        fake.age_key(NAME, 20.0 * 60.0);
        fake.inject(Route::CreateKey, FaultKind::LoseResponse, 1);
        let round = rotate_together(&fake, &all);
        let (second, last) = check_converged(&fake, &all, &round);
        assert_ne!(second, first);
        assert_eq!(round.creates, 2, "the lost create and its retry");
        assert_eq!(versions(&fake).len(), round.before.len() + 2);
        // The retry waits the HTTP client's first back-off (800 ms) before creating again.
        let bound = CLAIM_WAIT + Duration::from_millis(800) + SETTLE + POLL + MARGIN;
        assert!(last <= bound, "rotation took {last:?} (bound {bound:?})");
        eprintln!("lost create response: 2 versions created, all served {second} after {last:?}");
        for p in &procs {
            p.assert_logs_clean(&secrets(&fake));
        }
    });
}
