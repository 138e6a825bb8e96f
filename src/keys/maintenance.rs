//! The maintenance thread: every 6 hours it bumps `updated` on the keys this server uses, every
//! 48 hours (and once shortly after start) it sweeps stale keys of the trust domain, and it
//! works through the deletion queue with back-off. It talks to Key Vault without holding any
//! lock the signing path needs.
//!
//! The work is a plain struct (`Maintenance`) whose `run_due` does whatever is due at the
//! injected clock's time, so tests drive weeks of schedule in milliseconds; the thread around it
//! only waits for the next due time or a command.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::azure::types::{KeyItem, KeyVaultApi, UpdateKeyParams};
use crate::clock::{unix_seconds, Clock};
use crate::keys::cache::{lock, KeyCache};
use crate::keys::naming::{is_standard_name, TAG_SERVER_ID, TAG_SHARED, TAG_TRUST_DOMAIN};

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub refresh_interval: Duration,
    pub sweep_interval: Duration,
    pub first_sweep_delay: Duration,
    pub stale_after: Duration,
    pub delete_backoff_initial: Duration,
    pub delete_backoff_max: Duration,
    /// Longest real wait between checks of the clock.
    pub max_wait: Duration,
    /// Run on a thread of its own (production). Off, the schedule only advances when
    /// `MaintenanceHandle::run_now` is called, so tests step through it deterministically.
    pub background: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            refresh_interval: Duration::from_secs(6 * 3600),
            sweep_interval: Duration::from_secs(48 * 3600),
            first_sweep_delay: Duration::from_secs(60),
            stale_after: Duration::from_secs(14 * 24 * 3600),
            delete_backoff_initial: Duration::from_secs(2),
            delete_backoff_max: Duration::from_secs(60),
            max_wait: Duration::from_secs(60),
            background: true,
        }
    }
}

/// Test hook (only in builds with the `test-hooks` feature, never in the shipped binary):
/// `AZKV_TEST_MAINTENANCE="refresh=2s,sweep=1h,first_sweep=100ms,stale=14d,backoff=50ms,backoff_max=1s,max_wait=50ms"`
/// shortens the schedule so tests of the built binary need not wait hours. Unknown or
/// malformed parts are ignored with a warning.
#[cfg(any(test, feature = "test-hooks"))]
pub const SETTINGS_ENV: &str = "AZKV_TEST_MAINTENANCE";

#[cfg(any(test, feature = "test-hooks"))]
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let secs = |mult: u64| n.checked_mul(mult).map(Duration::from_secs);
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86400),
        _ => None,
    }
}

/// Applies `key=duration` pairs from a comma-separated test-hook value, if any: `set` returns
/// false for a key it does not know. Unknown or malformed parts are logged and ignored.
#[cfg(any(test, feature = "test-hooks"))]
pub fn apply_duration_settings(
    value: Option<&str>,
    what: &str,
    mut set: impl FnMut(&str, Duration) -> bool,
) {
    let parts = value.unwrap_or_default().split(',');
    for part in parts.filter(|p| !p.trim().is_empty()) {
        let applied = part
            .split_once('=')
            .and_then(|(k, v)| parse_duration(v).map(|d| (k.trim(), d)))
            .is_some_and(|(k, d)| set(k, d));
        if !applied {
            log::warn!(part = part, setting = what; "Ignoring malformed test setting");
        }
    }
}

#[cfg(any(test, feature = "test-hooks"))]
impl Settings {
    pub fn from_env_value(value: Option<&str>) -> Settings {
        let mut s = Settings::default();
        apply_duration_settings(value, SETTINGS_ENV, |key, d| {
            match key {
                "refresh" => s.refresh_interval = d,
                "sweep" => s.sweep_interval = d,
                "first_sweep" => s.first_sweep_delay = d,
                "stale" => s.stale_after = d,
                "backoff" => s.delete_backoff_initial = d,
                "backoff_max" => s.delete_backoff_max = d,
                "max_wait" => s.max_wait = d,
                _ => return false,
            }
            true
        });
        s
    }
}

#[derive(Debug, Clone, PartialEq)]
struct PendingDeletion {
    vault_uri: String,
    name: String,
    next_attempt: SystemTime,
    backoff: Duration,
    /// A maintenance thread is deleting it right now: still counts as queued, so no
    /// configuration adopts the name while the call is in flight.
    in_flight: bool,
}

/// The deletions owed to Key Vault, kept across reconfigures (one per `KeyManager`), and the
/// keys in use by the configuration in force. Every deletion re-checks, at the moment it runs,
/// that its name is not in use: a key SPIRE signs with is never deleted, whatever rotated,
/// failed, timed out or was reconfigured before.
#[derive(Default)]
pub struct DeletionQueue {
    state: Mutex<QueueState>,
}

#[derive(Default)]
struct QueueState {
    /// The vault of the configuration in force; entries of another vault are dropped when a
    /// configuration on a different vault takes over.
    vault_uri: String,
    pending: Vec<PendingDeletion>,
    /// The cache of the configuration in force: names in it are never deleted.
    in_use: Option<Arc<KeyCache>>,
}

/// What `DeletionQueue::next_due` hands a maintenance thread.
pub struct DueDeletion {
    pub name: String,
    backoff: Duration,
}

impl DeletionQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        lock(&self.state)
    }

    /// Queues `name` (a key of the vault at `vault_uri`) for deletion at `now`; no-op when it
    /// is already queued.
    pub fn push(&self, vault_uri: &str, name: String, now: SystemTime, backoff: Duration) {
        let mut s = self.lock();
        if s.pending.iter().any(|p| p.name.eq_ignore_ascii_case(&name)) {
            return;
        }
        log::debug!(key_name = name.as_str(); "Key enqueued for deletion");
        s.pending.push(PendingDeletion {
            vault_uri: vault_uri.to_string(),
            name,
            next_attempt: now,
            backoff,
            in_flight: false,
        });
    }

    /// Whether `name` waits for deletion or is being deleted: discovery never adopts it.
    pub fn contains(&self, name: &str) -> bool {
        self.lock()
            .pending
            .iter()
            .any(|p| p.name.eq_ignore_ascii_case(name))
    }

    /// A new configuration takes over: its keys are the ones in use from now on. Queued names
    /// it uses are dropped (it chose them), and so are entries of a vault it does not use.
    pub fn adopt(&self, vault_uri: &str, in_use: Arc<KeyCache>) {
        let mut s = self.lock();
        let names = in_use.names_in_use();
        s.pending.retain(|p| {
            if p.vault_uri != vault_uri {
                log::warn!(key_name = p.name.as_str(), key_vault_uri = p.vault_uri.as_str(); "Key left undeleted in a vault that is no longer configured");
                return false;
            }
            if names.contains(&p.name.to_ascii_lowercase()) {
                log::warn!(key_name = p.name.as_str(); "Key queued for deletion is in use by the new configuration; it is kept");
                return false;
            }
            true
        });
        s.vault_uri = vault_uri.to_string();
        s.in_use = Some(in_use);
    }

    /// The next deletion due at `now` for `vault_uri`, marked in flight. Names in use by the
    /// configuration in force are dropped from the queue here, at the last moment.
    pub fn next_due(&self, vault_uri: &str, now: SystemTime) -> Option<DueDeletion> {
        let mut s = self.lock();
        if s.vault_uri != vault_uri {
            return None; // a configuration on another vault has taken over
        }
        let in_use = s
            .in_use
            .as_ref()
            .map(|c| c.names_in_use())
            .unwrap_or_default();
        s.pending.retain(|p| {
            let used = in_use.contains(&p.name.to_ascii_lowercase());
            if used {
                log::warn!(key_name = p.name.as_str(); "Key queued for deletion is in use; it is kept");
            }
            !used
        });
        let p = s
            .pending
            .iter_mut()
            .find(|p| !p.in_flight && p.next_attempt <= now)?;
        p.in_flight = true;
        Some(DueDeletion {
            name: p.name.clone(),
            backoff: p.backoff,
        })
    }

    /// The deletion of `due.name` is done (deleted, or already gone).
    fn done(&self, due: &DueDeletion) {
        self.lock()
            .pending
            .retain(|p| !(p.in_flight && p.name == due.name));
    }

    /// The deletion failed: try again after its back-off, doubled up to `max` for the next.
    fn retry_later(&self, due: &DueDeletion, now: SystemTime, max: Duration) {
        let mut s = self.lock();
        if let Some(p) = s
            .pending
            .iter_mut()
            .find(|p| p.in_flight && p.name == due.name)
        {
            p.in_flight = false;
            // Never due again at the same instant: one attempt per name per run.
            p.next_attempt = now + due.backoff.max(Duration::from_millis(1));
            p.backoff = (due.backoff * 2).min(max);
        }
    }

    /// The earliest time a deletion for `vault_uri` is due.
    fn next_attempt(&self, vault_uri: &str) -> Option<SystemTime> {
        let s = self.lock();
        if s.vault_uri != vault_uri {
            return None;
        }
        s.pending
            .iter()
            .filter(|p| !p.in_flight)
            .map(|p| p.next_attempt)
            .min()
    }

    pub fn names(&self) -> Vec<String> {
        self.lock().pending.iter().map(|p| p.name.clone()).collect()
    }
}

/// Decides whether a listed key is a shared-keys-mode key of this configuration.
pub type SharedNameCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// What a maintenance thread works for: one configuration's vault and keys.
pub struct Maintenance {
    scope: Scope,
    deletions: Arc<DeletionQueue>,
    clock: Arc<dyn Clock>,
    settings: Settings,
    next_refresh: SystemTime,
    next_sweep: SystemTime,
    /// Set when the configuration is replaced: no further deletion is started.
    stopping: Arc<AtomicBool>,
    /// Names the sweep queued, so their deletion is counted as the sweep's, not a rotation's.
    swept: HashSet<String>,
}

/// What one `run_due` did, for tests and logs.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    pub refreshed: usize,
    pub refresh_errors: Vec<String>,
    pub swept: Vec<String>,
    pub deleted: Vec<String>,
    pub delete_failures: usize,
}

/// The configuration a maintenance thread serves.
pub struct Scope {
    pub vault: Arc<dyn KeyVaultApi>,
    pub vault_uri: String,
    pub cache: Arc<KeyCache>,
    pub trust_domain: String,
    pub server_id: String,
    pub is_shared_name: SharedNameCheck,
}

impl Maintenance {
    pub fn new(
        scope: Scope,
        deletions: Arc<DeletionQueue>,
        clock: Arc<dyn Clock>,
        settings: Settings,
    ) -> Self {
        let now = clock.now();
        Maintenance {
            next_refresh: now + settings.refresh_interval,
            next_sweep: now + settings.first_sweep_delay,
            scope,
            deletions,
            clock,
            settings,
            stopping: Arc::new(AtomicBool::new(false)),
            swept: HashSet::new(),
        }
    }

    /// Queues `name` for deletion now (no-op when already queued).
    pub fn enqueue(&self, name: String) {
        self.deletions.push(
            &self.scope.vault_uri,
            name,
            self.clock.now(),
            self.settings.delete_backoff_initial,
        );
    }

    /// The earliest time something is due.
    pub fn next_wake(&self) -> SystemTime {
        let t = self.next_refresh.min(self.next_sweep);
        match self.deletions.next_attempt(&self.scope.vault_uri) {
            Some(d) => t.min(d),
            None => t,
        }
    }

    /// Does everything due at the clock's current time.
    pub fn run_due(&mut self) -> Report {
        let mut report = Report::default();
        let now = self.clock.now();
        if now >= self.next_refresh {
            self.refresh(&mut report);
            self.next_refresh = now + self.settings.refresh_interval;
        }
        if now >= self.next_sweep {
            self.sweep(&mut report);
            self.next_sweep = now + self.settings.sweep_interval;
        }
        self.process_deletions(&mut report);
        report
    }

    /// PATCHes the pinned version of every cached key with its key_ops: a no-op whose only
    /// effect is a fresh `updated`, which keeps other servers' sweeps away from our keys.
    fn refresh(&mut self, report: &mut Report) {
        let params = UpdateKeyParams {
            key_ops: Some(vec!["sign".into(), "verify".into()]),
            ..Default::default()
        };
        let Scope { vault, cache, .. } = &self.scope;
        for entry in cache.entries() {
            match vault.update_key(&entry.name, &entry.version, &params) {
                Ok(_) => report.refreshed += 1,
                Err(e) => {
                    log::error!(key_id = entry.spire_id.as_str(), key_name = entry.name.as_str(), reason = e.to_string(); "Failed to refresh key");
                    report.refresh_errors.push(e.to_string());
                }
            }
        }
        log::debug!(refreshed = report.refreshed.to_string(); "Keys refreshed");
    }

    /// Whether a listed key is one the sweep may judge: our name layout (the Go plugin's
    /// `spire-key-<uuid>-<id>`, which our encoded ids keep), both ownership tags, this trust
    /// domain, and not a shared key. Tags alone are not enough: whoever may write tags could
    /// otherwise point our delete permission at any key.
    fn sweepable(&self, item: &KeyItem, name: &str) -> bool {
        is_standard_name(name)
            && item.tags.get(TAG_TRUST_DOMAIN).map(String::as_str)
                == Some(self.scope.trust_domain.as_str())
            && item.tags.contains_key(TAG_SERVER_ID)
            && !item.tags.contains_key(TAG_SHARED)
            && !(self.scope.is_shared_name)(name)
    }

    /// Deletes keys of this trust domain not updated for `stale_after`: other servers' keys
    /// and this server's own orphans alike, never a key this server uses, never a shared key.
    fn sweep(&mut self, report: &mut Report) {
        let items = match self.scope.vault.list_keys() {
            Ok(items) => items,
            Err(e) => {
                log::error!(reason = e.to_string(); "Failed to list keys to dispose");
                return;
            }
        };
        let now = unix_seconds(self.clock.now());
        let cutoff = now - self.settings.stale_after.as_secs_f64();
        let in_use: HashSet<String> = self.scope.cache.names_in_use();
        for item in items {
            let Some(name) = item.name() else { continue };
            if !self.sweepable(&item, name) || in_use.contains(&name.to_ascii_lowercase()) {
                continue;
            }
            let Some(updated) = item.attributes.updated else {
                continue; // cannot judge staleness without it
            };
            if updated < cutoff {
                let owner = item.tags.get(TAG_SERVER_ID).cloned().unwrap_or_default();
                log::info!(key_name = name, server_id = owner.as_str(), own = (owner == self.scope.server_id).to_string(); "Stale key found; deleting it");
                report.swept.push(name.to_string());
                self.swept.insert(name.to_string());
                self.enqueue(name.to_string());
            }
        }
    }

    /// The `reason` label of a finished deletion: the sweep's, or a key this server replaced.
    fn deletion_reason(&mut self, name: &str) -> &'static str {
        if self.swept.remove(name) {
            "sweep"
        } else {
            "rotation"
        }
    }

    fn process_deletions(&mut self, report: &mut Report) {
        while !self.stopping.load(Ordering::SeqCst) {
            let now = self.clock.now();
            let Some(due) = self.deletions.next_due(&self.scope.vault_uri, now) else {
                break;
            };
            match self.scope.vault.delete_key(&due.name) {
                Ok(()) => log::debug!(key_name = due.name.as_str(); "Key deleted"),
                Err(e) if e.is_not_found() => {
                    log::debug!(key_name = due.name.as_str(); "Key already gone")
                }
                Err(e) => {
                    log::warn!(key_name = due.name.as_str(), reason = e.to_string(), retry_in = format!("{:?}", due.backoff); "Key deletion failed; will retry");
                    report.delete_failures += 1;
                    let max = self.settings.delete_backoff_max;
                    self.deletions.retry_later(&due, now, max);
                    continue;
                }
            }
            crate::telemetry::key_deleted(self.deletion_reason(&due.name));
            self.deletions.done(&due);
            report.deleted.push(due.name);
        }
    }
}

enum Command {
    /// Something was queued: look at the schedule again.
    Wake,
    Stop,
}

/// A configuration's maintenance: its thread, or (tests) the work itself to run by hand.
pub struct MaintenanceHandle {
    tx: Sender<Command>,
    done: Receiver<()>,
    deletions: Arc<DeletionQueue>,
    vault_uri: String,
    clock: Arc<dyn Clock>,
    backoff: Duration,
    stopping: Arc<AtomicBool>,
    work: Arc<Mutex<Maintenance>>,
}

impl MaintenanceHandle {
    /// Runs `m` on its own thread, or keeps it to be run by `run_now` when
    /// `settings.background` is off.
    pub fn spawn(m: Maintenance) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded::<Command>();
        let (done_tx, done) = crossbeam_channel::bounded(1);
        let background = m.settings.background;
        let handle = MaintenanceHandle {
            tx,
            done,
            deletions: Arc::clone(&m.deletions),
            vault_uri: m.scope.vault_uri.clone(),
            clock: Arc::clone(&m.clock),
            backoff: m.settings.delete_backoff_initial,
            stopping: Arc::clone(&m.stopping),
            work: Arc::new(Mutex::new(m)),
        };
        if !background {
            let _ = done_tx.send(());
            return handle;
        }
        let work = Arc::clone(&handle.work);
        let spawned = std::thread::Builder::new()
            .name("azkv-maintenance".into())
            .spawn(move || {
                loop {
                    let wait = {
                        let mut m = lock(&work);
                        m.run_due();
                        let now = m.clock.now();
                        m.next_wake()
                            .duration_since(now)
                            .unwrap_or(Duration::ZERO)
                            .min(m.settings.max_wait)
                            .max(Duration::from_millis(1))
                    };
                    match rx.recv_timeout(wait) {
                        Ok(Command::Wake) | Err(RecvTimeoutError::Timeout) => {}
                        Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                let _ = done_tx.send(());
            });
        if spawned.is_err() {
            log::error!("could not start the maintenance thread");
        }
        handle
    }

    /// Queues `name` for deletion. The queue outlives this configuration: a deletion queued
    /// after a stop is done by the next configuration's thread on the same vault.
    pub fn queue_delete(&self, name: String) {
        self.deletions
            .push(&self.vault_uri, name, self.clock.now(), self.backoff);
        let _ = self.tx.send(Command::Wake);
    }

    /// Tells the thread to stop and returns at once: it starts no other Key Vault call. For
    /// Deinit and Shutdown, which run on gRPC's completion-queue thread and must not wait.
    pub fn request_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.tx.send(Command::Stop);
    }

    /// Stops the thread; waits at most `timeout` for a Key Vault call in flight to finish.
    /// Returns whether it stopped in time.
    pub fn stop(&self, timeout: Duration) -> bool {
        self.request_stop();
        self.done.recv_timeout(timeout).is_ok()
    }

    /// Runs whatever is due now on the calling thread (tests drive the schedule with it).
    pub fn run_now(&self) -> Report {
        lock(&self.work).run_due()
    }
}

impl Drop for MaintenanceHandle {
    fn drop(&mut self) {
        self.request_stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::types::AzureError;
    use crate::clock::ManualClock;
    use crate::keys::cache::KeyEntry;
    use crate::keys::naming::new_key_name;
    use crate::keys::testing::MemoryVault;
    use crate::plugin::proto::keymanager::{KeyType, PublicKey};
    use std::time::UNIX_EPOCH;

    const TD: &str = "test.example.org";
    const SID: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
    const EPOCH: f64 = 1_800_000_000.0;
    const URI: &str = "https://v";

    fn setup() -> (ManualClock, Arc<MemoryVault>) {
        let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(EPOCH as u64));
        let vault = MemoryVault::new(Arc::new(clock.clone()));
        (clock, vault)
    }

    fn entry(name: &str, version: &str) -> KeyEntry {
        KeyEntry {
            spire_id: name.to_string(),
            name: name.to_string(),
            version: version.to_string(),
            key_type: KeyType::EcP256,
            public_key: PublicKey::default(),
            shared: false,
        }
    }

    fn maintenance_on(
        clock: &ManualClock,
        vault: &Arc<MemoryVault>,
        cache: KeyCache,
        deletions: &Arc<DeletionQueue>,
    ) -> Maintenance {
        let v: Arc<dyn KeyVaultApi> = vault.clone();
        let cache = Arc::new(cache);
        deletions.adopt(URI, Arc::clone(&cache));
        Maintenance::new(
            Scope {
                vault: v,
                vault_uri: URI.into(),
                cache,
                trust_domain: TD.into(),
                server_id: SID.into(),
                is_shared_name: Arc::new(|name: &str| name.contains("-shared-")),
            },
            Arc::clone(deletions),
            Arc::new(clock.clone()),
            Settings {
                background: false,
                ..Settings::default()
            },
        )
    }

    fn maintenance(clock: &ManualClock, vault: &Arc<MemoryVault>, cache: KeyCache) -> Maintenance {
        maintenance_on(clock, vault, cache, &Arc::new(DeletionQueue::default()))
    }

    #[test]
    fn refresh_bumps_only_keys_in_use_every_six_hours() {
        let (clock, vault) = setup();
        let own = vault.insert(
            "own",
            "EC",
            &[(TAG_TRUST_DOMAIN, TD), (TAG_SERVER_ID, SID)],
            EPOCH,
            EPOCH,
        );
        vault.insert(
            "same-td-other",
            "EC",
            &[(TAG_TRUST_DOMAIN, TD), (TAG_SERVER_ID, "x")],
            EPOCH,
            EPOCH,
        );
        vault.insert(
            "other-td-same-id",
            "EC",
            &[(TAG_TRUST_DOMAIN, "o"), (TAG_SERVER_ID, SID)],
            EPOCH,
            EPOCH,
        );
        let mut m = maintenance(&clock, &vault, KeyCache::from_entries([entry("own", &own)]));
        assert_eq!(m.run_due().refreshed, 0, "nothing due at start");
        clock.advance(Duration::from_secs(6 * 3600));
        let r = m.run_due();
        assert_eq!(r.refreshed, 1);
        assert_eq!(vault.updated("own"), EPOCH + 6.0 * 3600.0);
        assert_eq!(vault.updated("same-td-other"), EPOCH);
        assert_eq!(vault.updated("other-td-same-id"), EPOCH);
        assert_eq!(vault.names().len(), 3, "refresh removes nothing");
        // A failing update is reported, not fatal.
        vault.fail("update", AzureError::Transport("update failure".into()), 1);
        clock.advance(Duration::from_secs(6 * 3600));
        let r = m.run_due();
        assert_eq!(
            r.refresh_errors,
            vec!["transport error: update failure".to_string()]
        );
    }

    #[test]
    fn sweep_deletes_only_stale_keys_of_our_layout_and_tags() {
        let (clock, vault) = setup();
        let name = |label: &str| new_key_name(label).unwrap();
        let own = name("x509-CA-A");
        let own_version = vault.insert(
            &own,
            "EC",
            &[(TAG_TRUST_DOMAIN, TD), (TAG_SERVER_ID, SID)],
            EPOCH,
            EPOCH,
        );
        let mut expect_swept = Vec::new();
        let mut expect_kept = vec![own.clone()];
        let mut add = |n: String, tags: &[(&str, &str)], updated: f64, swept: bool| {
            vault.insert(&n, "EC", tags, updated, updated);
            if swept {
                expect_swept.push(n);
            } else {
                expect_kept.push(n);
            }
        };
        // Deleted: stale, our layout, both tags, this trust domain.
        add(
            name("empty-id"),
            &[(TAG_TRUST_DOMAIN, TD), (TAG_SERVER_ID, "")],
            EPOCH,
            true,
        );
        for i in 0..3 {
            add(
                name(&format!("other-{i}")),
                &[(TAG_TRUST_DOMAIN, TD), (TAG_SERVER_ID, "o")],
                EPOCH,
                true,
            );
        }
        add(
            name("own-orphan"),
            &[(TAG_TRUST_DOMAIN, TD), (TAG_SERVER_ID, SID)],
            EPOCH,
            true,
        );
        add(
            name("bundle-acme-a.org"),
            &[(TAG_TRUST_DOMAIN, TD), (TAG_SERVER_ID, "o")],
            EPOCH,
            true,
        );
        // Kept: a tag is missing, another trust domain, shared, fresh, or not our layout.
        add(name("no-id-tag"), &[(TAG_TRUST_DOMAIN, TD)], EPOCH, false);
        add(
            name("other-td"),
            &[(TAG_TRUST_DOMAIN, "o.org"), (TAG_SERVER_ID, SID)],
            EPOCH,
            false,
        );
        add(
            name("JWT-shared-A"),
            &[(TAG_TRUST_DOMAIN, TD), (TAG_SERVER_ID, "x")],
            EPOCH,
            false,
        );
        add(
            name("tagged-shared"),
            &[
                (TAG_TRUST_DOMAIN, TD),
                (TAG_SERVER_ID, "x"),
                (TAG_SHARED, "true"),
            ],
            EPOCH,
            false,
        );
        let fresh = EPOCH + 14.0 * 86400.0;
        add(
            name("fresh"),
            &[(TAG_TRUST_DOMAIN, TD), (TAG_SERVER_ID, "x")],
            fresh,
            false,
        );
        // Someone who may only write tags points our sweep at keys that are not SPIRE's.
        let both = [(TAG_TRUST_DOMAIN, TD), (TAG_SERVER_ID, "x")];
        add("prod-database-key".into(), &both, EPOCH, false);
        add(
            "spire-key-not-a-uuid-at-all-0000000000000-x".into(),
            &both,
            EPOCH,
            false,
        );
        add("spire-example-org-JWT-Signer-A".into(), &both, EPOCH, false);
        let mut m = maintenance(
            &clock,
            &vault,
            KeyCache::from_entries([entry(&own, &own_version)]),
        );
        // The first sweep shortly after start finds nothing stale yet.
        clock.advance(Duration::from_secs(61));
        assert!(m.run_due().swept.is_empty());
        clock.advance(Duration::from_secs(14 * 86400 + 1));
        let r = m.run_due();
        let mut swept = r.swept.clone();
        swept.sort();
        expect_swept.sort();
        assert_eq!(swept, expect_swept);
        assert_eq!(r.deleted.len(), expect_swept.len());
        expect_kept.sort();
        assert_eq!(vault.names(), expect_kept);
    }

    #[test]
    fn deletions_retry_with_doubling_backoff_and_404_counts_as_done() {
        let (clock, vault) = setup();
        vault.insert("victim", "EC", &[], EPOCH, EPOCH);
        let mut m = maintenance(&clock, &vault, KeyCache::default());
        vault.fail("delete", AzureError::Transport("down".into()), 3);
        m.enqueue("victim".into());
        m.enqueue("victim".into()); // no duplicates
        assert_eq!(m.run_due().delete_failures, 1);
        let mut waits = Vec::new();
        for _ in 0..3 {
            let wait = m.next_wake().duration_since(clock.now()).unwrap();
            waits.push(wait);
            clock.advance(wait);
            m.run_due();
        }
        assert_eq!(
            waits,
            vec![
                Duration::from_secs(2),
                Duration::from_secs(4),
                Duration::from_secs(8)
            ]
        );
        assert!(vault.names().is_empty());
        m.enqueue("gone".into());
        assert_eq!(m.run_due().deleted, vec!["gone".to_string()]);
        assert!(m.deletions.names().is_empty());
    }

    #[test]
    fn backoff_is_capped_at_sixty_seconds() {
        let (clock, vault) = setup();
        vault.insert("victim", "EC", &[], EPOCH, EPOCH);
        let mut m = maintenance(&clock, &vault, KeyCache::default());
        vault.fail("delete", AzureError::Transport("down".into()), 10);
        m.enqueue("victim".into());
        let mut last = Duration::ZERO;
        for _ in 0..10 {
            m.run_due();
            last = m.next_wake().duration_since(clock.now()).unwrap();
            clock.advance(last);
        }
        assert_eq!(last, Duration::from_secs(60));
    }

    #[test]
    fn a_deletion_rechecks_use_when_it_runs() {
        let (clock, vault) = setup();
        let version = vault.insert("k", "EC", &[], EPOCH, EPOCH);
        let deletions = Arc::new(DeletionQueue::default());
        let mut m = maintenance_on(&clock, &vault, KeyCache::default(), &deletions);
        vault.fail("delete", AzureError::Transport("down".into()), 1);
        m.enqueue("k".into());
        assert_eq!(m.run_due().delete_failures, 1);
        // While the deletion waits in back-off, a configuration starts using the key.
        let adopted = Arc::new(KeyCache::from_entries([entry("K", &version)]));
        deletions.adopt(URI, Arc::clone(&adopted));
        assert!(deletions.names().is_empty(), "adopting drops the deletion");
        // Queued again while in use (however that happens): still never deleted.
        m.enqueue("k".into());
        let mut m2 = maintenance_on(&clock, &vault, KeyCache::default(), &deletions);
        deletions.adopt(URI, adopted);
        clock.advance(Duration::from_secs(60));
        assert!(m2.run_due().deleted.is_empty());
        assert_eq!(vault.names(), vec!["k"]);
        assert_eq!(vault.calls("delete"), 1);
    }

    #[test]
    fn queued_and_in_flight_names_count_as_queued() {
        let q = DeletionQueue::default();
        q.adopt(URI, Arc::new(KeyCache::default()));
        let t = UNIX_EPOCH;
        q.push(URI, "a".into(), t, Duration::from_secs(1));
        assert!(
            q.contains("A"),
            "Key Vault names compare case-insensitively"
        );
        let due = q.next_due(URI, t).unwrap();
        assert!(
            q.next_due(URI, t).is_none(),
            "in flight: not handed out twice"
        );
        assert!(q.contains("a"), "in flight still counts as queued");
        q.done(&due);
        assert!(!q.contains("a"));
        // Another vault's configuration takes over: the old vault's names are dropped.
        q.push(URI, "b".into(), t, Duration::from_secs(1));
        q.adopt("https://other", Arc::new(KeyCache::default()));
        assert!(q.names().is_empty());
        assert!(q.next_due(URI, t).is_none());
    }

    #[test]
    fn thread_stops_promptly_and_the_queue_outlives_it() {
        let (clock, vault) = setup();
        let deletions = Arc::new(DeletionQueue::default());
        let mut m = maintenance_on(&clock, &vault, KeyCache::default(), &deletions);
        m.settings.max_wait = Duration::from_millis(5);
        m.settings.background = true;
        vault.fail("delete", AzureError::Transport("down".into()), 1000);
        let h = MaintenanceHandle::spawn(m);
        h.queue_delete("k".into());
        let started = std::time::Instant::now();
        assert!(h.stop(Duration::from_secs(2)));
        assert!(started.elapsed() < Duration::from_secs(1));
        // Queued just before the stop, or after it: neither is lost.
        h.queue_delete("late".into());
        let mut left = deletions.names();
        left.sort();
        assert_eq!(left, vec!["k".to_string(), "late".to_string()]);
        // The next thread on the same vault does them.
        vault.clear_failures();
        let mut m = maintenance_on(&clock, &vault, KeyCache::default(), &deletions);
        clock.advance(Duration::from_secs(120));
        assert_eq!(m.run_due().deleted.len(), 2);
        assert!(deletions.names().is_empty());
    }

    /// A vault whose deletions block until released: a maintenance call in flight.
    struct BlockingDeletes {
        inner: Arc<MemoryVault>,
        release: Mutex<crossbeam_channel::Receiver<()>>,
        entered: crossbeam_channel::Sender<()>,
    }

    impl KeyVaultApi for BlockingDeletes {
        fn create_key(
            &self,
            name: &str,
            params: &crate::azure::types::CreateKeyParams,
        ) -> Result<crate::azure::types::KeyBundle, AzureError> {
            self.inner.create_key(name, params)
        }
        fn get_key(
            &self,
            name: &str,
            version: Option<&str>,
        ) -> Result<crate::azure::types::KeyBundle, AzureError> {
            self.inner.get_key(name, version)
        }
        fn list_keys(&self) -> Result<Vec<KeyItem>, AzureError> {
            self.inner.list_keys()
        }
        fn list_key_versions(&self, name: &str) -> Result<Vec<KeyItem>, AzureError> {
            self.inner.list_key_versions(name)
        }
        fn update_key(
            &self,
            name: &str,
            version: &str,
            params: &UpdateKeyParams,
        ) -> Result<crate::azure::types::KeyBundle, AzureError> {
            self.inner.update_key(name, version, params)
        }
        fn delete_key(&self, name: &str) -> Result<(), AzureError> {
            let _ = self.entered.send(());
            let _ = self.release.lock().unwrap().recv();
            self.inner.delete_key(name)
        }
        fn sign(
            &self,
            name: &str,
            version: &str,
            alg: &str,
            digest: &[u8],
        ) -> Result<Vec<u8>, AzureError> {
            self.inner.sign(name, version, alg, digest)
        }
    }

    #[test]
    fn a_stop_request_never_waits_for_a_call_in_flight() {
        let (clock, vault) = setup();
        vault.insert("k", "EC", &[], EPOCH, EPOCH);
        let (release_tx, release_rx) = crossbeam_channel::bounded(1);
        let (entered_tx, entered_rx) = crossbeam_channel::bounded(1);
        let blocking: Arc<dyn KeyVaultApi> = Arc::new(BlockingDeletes {
            inner: Arc::clone(&vault),
            release: Mutex::new(release_rx),
            entered: entered_tx,
        });
        let deletions = Arc::new(DeletionQueue::default());
        let cache = Arc::new(KeyCache::default());
        deletions.adopt(URI, Arc::clone(&cache));
        let m = Maintenance::new(
            Scope {
                vault: blocking,
                vault_uri: URI.into(),
                cache,
                trust_domain: TD.into(),
                server_id: SID.into(),
                is_shared_name: Arc::new(|_: &str| false),
            },
            Arc::clone(&deletions),
            Arc::new(clock.clone()),
            Settings {
                max_wait: Duration::from_millis(5),
                ..Settings::default()
            },
        );
        let h = MaintenanceHandle::spawn(m);
        h.queue_delete("k".into());
        entered_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the deletion started");
        let started = std::time::Instant::now();
        h.request_stop();
        assert!(
            started.elapsed() < Duration::from_millis(50),
            "request_stop waited {:?} for the call in flight",
            started.elapsed()
        );
        assert!(!h.stop(Duration::from_millis(20)), "still in the call");
        release_tx.send(()).unwrap();
        assert!(h.stop(Duration::from_secs(5)), "ends once the call returns");
        assert!(deletions.names().is_empty(), "the call in flight completed");
    }

    #[test]
    fn env_settings() {
        let s = Settings::from_env_value(Some(
            "refresh=2s,sweep=1h,first_sweep=100ms,bogus,stale=14d",
        ));
        assert_eq!(s.refresh_interval, Duration::from_secs(2));
        assert_eq!(s.sweep_interval, Duration::from_secs(3600));
        assert_eq!(s.first_sweep_delay, Duration::from_millis(100));
        assert_eq!(s.stale_after, Duration::from_secs(14 * 86400));
        assert_eq!(Settings::from_env_value(None), Settings::default());
        assert_eq!(parse_duration("99999999999999999999d"), None);
        assert_eq!(parse_duration("999999999999999999d"), None);
        assert_eq!(parse_duration("5x"), None);
    }
}
