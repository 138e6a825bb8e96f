//! A key in use is never deleted: seeded, bounded, randomized interleavings of rotations, lost
//! create answers, failing and succeeding deletions, `created` ties, crashes, reconfigures and
//! sweeps over the in-memory vault. After every step, every key the plugin serves must exist, be
//! enabled and sign. A failing seed is shrunk to the shortest step list that still fails.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use super::naming::test_uuids;
use super::testing::MemoryVault;
use super::*;
use crate::azure::types::AzureError;
use crate::clock::ManualClock;
use crate::fuzz::{scaled, Rng};
use crate::plugin::proto::keymanager::HashAlgorithm;

const TD: &str = "test.example.org";
const SID: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
const IDS: [&str; 3] = ["x509-CA-A", "JWT-Signer-A", "bundle-acme-example.org"];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    /// GenerateKey for `IDS[i]`.
    Rotate(usize),
    /// GenerateKey for `IDS[i]` whose create takes effect in Key Vault but whose answer is lost.
    RotateLostAnswer(usize),
    /// The next `n` deletions fail with 503.
    DeletesFail(usize),
    /// The next deletion takes effect but its answer is lost.
    DeleteAnswerLost,
    /// The clock moves by `ms` (under a second: the next create ties on `created`).
    Tick(u64),
    /// Whatever maintenance is due runs (deletions, refresh, sweep).
    Maintain,
    /// Configure again with the same configuration.
    Reconfigure,
    /// The process dies (queued deletions are lost) and a new one configures.
    CrashAndRestart,
    /// Two weeks pass: the refresh and the stale sweep run.
    Sweep,
}

fn random_step(rng: &mut Rng) -> Step {
    match rng.below(14) {
        0..=2 => Step::Rotate(rng.below(IDS.len())),
        3 => Step::RotateLostAnswer(rng.below(IDS.len())),
        4 => Step::DeletesFail(1 + rng.below(3)),
        5 => Step::DeleteAnswerLost,
        6 | 7 => Step::Tick(rng.below(900) as u64),
        8 => Step::Tick(1000 + rng.below(5000) as u64),
        9 | 10 => Step::Maintain,
        11 => Step::Reconfigure,
        12 => Step::CrashAndRestart,
        _ => Step::Sweep,
    }
}

struct World {
    clock: ManualClock,
    vault: Arc<MemoryVault>,
    km: KeyManager,
}

fn plugin(clock: &ManualClock, vault: &Arc<MemoryVault>) -> KeyManager {
    let v: Arc<dyn KeyVaultApi> = vault.clone();
    let km = KeyManager::new(
        Arc::new(clock.clone()),
        Box::new(move |_cfg: &PluginConfig| Ok(Arc::clone(&v))),
        maintenance::Settings {
            background: false,
            ..Default::default()
        },
        shared::Settings::default(),
    );
    configure(&km);
    km
}

fn configure(km: &KeyManager) {
    let hcl = format!(
        "key_vault_uri = \"https://spire-server.vault.azure.net/\"\nkey_identifier_value = \"{SID}\""
    );
    let core = CoreConfiguration {
        trust_domain: TD.into(),
    };
    km.configure(Some(&core), &hcl).expect("configure");
}

impl World {
    fn new() -> World {
        let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        let vault = MemoryVault::new(Arc::new(clock.clone()));
        vault.use_whole_seconds();
        let km = plugin(&clock, &vault);
        World { clock, vault, km }
    }

    fn apply(&mut self, step: Step) {
        let unavailable = || AzureError::Service {
            status: 503,
            code: Some("ServiceUnavailable".into()),
            inner_code: None,
            message: "try later".into(),
        };
        match step {
            // A failed GenerateKey is fine here (SPIRE retries); only what is served matters.
            Step::Rotate(i) => {
                let _ = self.km.generate_key(IDS[i], KeyType::EcP256);
            }
            Step::RotateLostAnswer(i) => {
                self.vault.lose("create", 1);
                let _ = self.km.generate_key(IDS[i], KeyType::EcP256);
            }
            Step::DeletesFail(n) => self.vault.fail("delete", unavailable(), n),
            Step::DeleteAnswerLost => self.vault.lose("delete", 1),
            Step::Tick(ms) => self.clock.advance(Duration::from_millis(ms)),
            Step::Maintain => {
                self.km.run_maintenance();
            }
            Step::Reconfigure => configure(&self.km),
            Step::CrashAndRestart => {
                self.km = plugin(&self.clock, &self.vault);
            }
            Step::Sweep => {
                self.clock.advance(Duration::from_secs(14 * 86400 + 60));
                self.km.run_maintenance();
            }
        }
    }

    /// Every id the plugin serves has a live, enabled key that signs with the served key.
    fn check(&self) -> Result<(), String> {
        let digest = {
            use sha2::Digest;
            sha2::Sha256::digest(b"interleaving").to_vec()
        };
        for (id, name) in self.km.served_names() {
            let entry = self
                .km
                .active()
                .ok()
                .and_then(|a| a.cache.get(&id))
                .ok_or(format!("{id}: not in the cache"))?;
            if !self.vault.is_live(&name, &entry.version) {
                return Err(format!(
                    "{id}: served key {name} (version {}) is deleted or disabled",
                    entry.version
                ));
            }
            let signature = self
                .km
                .sign_data(&id, &digest, SignerOpts::Hash(HashAlgorithm::Sha256))
                .map_err(|e| format!("{id}: sign failed: {}", e.message))?;
            let public_key = self.km.get_public_key(&id).map_err(|e| e.message)?;
            verify_p256(&public_key.pkix_data, &digest, &signature.signature)
                .map_err(|e| format!("{id}: {e}"))?;
        }
        Ok(())
    }
}

fn verify_p256(pkix: &[u8], digest: &[u8], der: &[u8]) -> Result<(), String> {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    use p256::pkcs8::DecodePublicKey;
    let key = p256::ecdsa::VerifyingKey::from_public_key_der(pkix).map_err(|e| e.to_string())?;
    let sig = p256::ecdsa::Signature::from_der(der).map_err(|e| e.to_string())?;
    key.verify_prehash(digest, &sig)
        .map_err(|_| "signature does not verify with the served public key".to_string())
}

/// Runs `steps` from a fresh world; the first invariant violation, with its step index.
fn run(seed: u64, steps: &[Step]) -> Option<(usize, String)> {
    test_uuids::seed(seed);
    let mut world = World::new();
    let mut failure = None;
    for (i, step) in steps.iter().enumerate() {
        world.apply(*step);
        if let Err(e) = world.check() {
            failure = Some((i, e));
            break;
        }
    }
    test_uuids::clear();
    failure
}

/// The shortest step list (removing one step or a run of steps at a time) that still fails.
fn shrink(seed: u64, mut steps: Vec<Step>) -> Vec<Step> {
    let mut chunk = steps.len() / 2;
    while chunk >= 1 {
        let mut start = 0;
        while start < steps.len() {
            let mut candidate = steps.clone();
            let end = (start + chunk).min(candidate.len());
            candidate.drain(start..end);
            if run(seed, &candidate).is_some() {
                steps = candidate;
            } else {
                start += chunk;
            }
        }
        chunk /= 2;
    }
    steps
}

#[test]
fn a_key_in_use_is_never_deleted_whatever_the_interleaving() {
    const STEPS_PER_RUN: usize = 100;
    let runs = scaled(100); // 10,000 steps in CI
    for run_index in 0..runs as u64 {
        let seed = 0xA11C_E5AF_E000 + run_index;
        let mut rng = Rng::new(seed);
        let steps: Vec<Step> = (0..STEPS_PER_RUN).map(|_| random_step(&mut rng)).collect();
        if let Some((at, why)) = run(seed, &steps) {
            let steps = &steps[..=at];
            let shortest = shrink(seed, steps.to_vec());
            let (_, shortest_why) = run(seed, &shortest).unwrap_or((0, why.clone()));
            panic!(
                "seed {seed:#x}: {why} after step {at}\nshortest failing steps ({}): {shortest:?}\n  -> {shortest_why}",
                shortest.len()
            );
        }
    }
}

/// The two paths found by review, replayed exactly.
#[test]
fn a_queued_deletion_is_never_adopted_by_a_reconfigure() {
    use Step::*;
    // Two rotations within one second (equal `created`), the older key's deletion failing and
    // waiting in back-off, then a reconfigure.
    let tie = [
        Rotate(0),
        DeletesFail(3),
        Rotate(0),
        Maintain,
        Reconfigure,
        Maintain,
        Tick(3000),
        Maintain,
        Tick(5000),
        Maintain,
        Tick(10_000),
        Maintain,
    ];
    // A create that timed out after Key Vault made the key: its orphan is queued, not adopted.
    let orphan = [
        Rotate(0),
        Tick(1500),
        DeletesFail(3),
        RotateLostAnswer(0),
        Maintain,
        Reconfigure,
        Tick(10_000),
        Maintain,
    ];
    for (label, steps) in [("tie", &tie[..]), ("orphan", &orphan[..])] {
        for seed in 0..32 {
            if let Some((at, why)) = run(seed, steps) {
                panic!(
                    "{label}, seed {seed}: {why} after step {at} ({:?})",
                    steps[at]
                );
            }
        }
    }
    // And the served key survives: the vault still holds it after all deletions ran.
    let mut world = World::new();
    for step in tie {
        world.apply(step);
    }
    assert_eq!(world.km.served_names().len(), 1);
    assert!(world.km.queued_deletions().is_empty());
}
