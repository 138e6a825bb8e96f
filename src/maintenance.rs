//! The maintenance thread: every 6 hours it bumps `updated` on the keys this server uses, every
//! 48 hours (and once shortly after start) it sweeps stale keys of the trust domain, and it
//! works through the deletion queue with back-off. It talks to Key Vault without holding any
//! lock the signing path needs.
//!
//! The work is a plain struct (`Maintenance`) whose `run_due` does whatever is due at the
//! injected clock's time, so tests drive weeks of schedule in milliseconds; the thread around it
//! only waits for the next due time or a command.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::azure::types::{KeyVaultApi, UpdateKeyParams};
use crate::clock::{unix_seconds, Clock};
use crate::keys::cache::KeyCache;
use crate::keys::naming::{TAG_SERVER_ID, TAG_TRUST_DOMAIN};

/// A tag every shared-keys-mode key carries; sweeps never delete such keys.
pub const TAG_SHARED: &str = "spire-shared-key";

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
        }
    }
}

/// Test hook: `AZKV_TEST_MAINTENANCE="refresh=2s,sweep=1h,first_sweep=100ms,stale=14d,backoff=50ms,backoff_max=1s,max_wait=50ms"`
/// shortens the schedule so tests of the built binary need not wait hours. Unknown or
/// malformed parts are ignored with a warning.
pub const SETTINGS_ENV: &str = "AZKV_TEST_MAINTENANCE";

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

/// Applies `key=duration` pairs from a comma-separated test-hook value: `set` returns false for
/// a key it does not know. Unknown or malformed parts are logged and ignored.
pub fn apply_duration_settings(
    value: &str,
    what: &str,
    mut set: impl FnMut(&str, Duration) -> bool,
) {
    for part in value.split(',').filter(|p| !p.trim().is_empty()) {
        let applied = part
            .split_once('=')
            .and_then(|(k, v)| parse_duration(v).map(|d| (k.trim(), d)))
            .is_some_and(|(k, d)| set(k, d));
        if !applied {
            log::warn!(part = part, setting = what; "Ignoring malformed test setting");
        }
    }
}

impl Settings {
    pub fn from_env_value(value: Option<&str>) -> Settings {
        let mut s = Settings::default();
        if let Some(value) = value {
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
        }
        s
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PendingDeletion {
    pub name: String,
    pub next_attempt: SystemTime,
    pub backoff: Duration,
}

/// Decides whether a listed key is a shared-keys-mode key of this configuration.
pub type SharedNameCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

pub struct Maintenance {
    vault: Arc<dyn KeyVaultApi>,
    cache: Arc<KeyCache>,
    clock: Arc<dyn Clock>,
    settings: Settings,
    trust_domain: String,
    server_id: String,
    is_shared_name: SharedNameCheck,
    next_refresh: SystemTime,
    next_sweep: SystemTime,
    pending: Vec<PendingDeletion>,
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

impl Maintenance {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vault: Arc<dyn KeyVaultApi>,
        cache: Arc<KeyCache>,
        clock: Arc<dyn Clock>,
        settings: Settings,
        trust_domain: String,
        server_id: String,
        is_shared_name: SharedNameCheck,
        pending: Vec<String>,
    ) -> Self {
        let now = clock.now();
        let mut m = Maintenance {
            next_refresh: now + settings.refresh_interval,
            next_sweep: now + settings.first_sweep_delay,
            vault,
            cache,
            clock,
            settings,
            trust_domain,
            server_id,
            is_shared_name,
            pending: Vec::new(),
        };
        for name in pending {
            m.enqueue(name);
        }
        m
    }

    /// Queues `name` for deletion now (no-op when already queued).
    pub fn enqueue(&mut self, name: String) {
        if self
            .pending
            .iter()
            .any(|p| p.name.eq_ignore_ascii_case(&name))
        {
            return;
        }
        log::debug!(key_name = name.as_str(); "Key enqueued for deletion");
        self.pending.push(PendingDeletion {
            name,
            next_attempt: self.clock.now(),
            backoff: self.settings.delete_backoff_initial,
        });
    }

    pub fn pending_names(&self) -> Vec<String> {
        self.pending.iter().map(|p| p.name.clone()).collect()
    }

    /// The earliest time something is due.
    pub fn next_wake(&self) -> SystemTime {
        let mut t = self.next_refresh.min(self.next_sweep);
        for p in &self.pending {
            t = t.min(p.next_attempt);
        }
        t
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
        for entry in self.cache.entries() {
            match self.vault.update_key(&entry.name, &entry.version, &params) {
                Ok(_) => report.refreshed += 1,
                Err(e) => {
                    log::error!(key_id = entry.spire_id.as_str(), key_name = entry.name.as_str(), reason = e.to_string(); "Failed to refresh key");
                    report.refresh_errors.push(e.to_string());
                }
            }
        }
        log::debug!(refreshed = report.refreshed.to_string(); "Keys refreshed");
    }

    /// Deletes keys of this trust domain not updated for `stale_after`: other servers' keys
    /// and this server's own orphans alike, never a key this server uses, never a shared key.
    fn sweep(&mut self, report: &mut Report) {
        let items = match self.vault.list_keys() {
            Ok(items) => items,
            Err(e) => {
                log::error!(reason = e.to_string(); "Failed to list keys to dispose");
                return;
            }
        };
        let now = unix_seconds(self.clock.now());
        let cutoff = now - self.settings.stale_after.as_secs_f64();
        let in_use: HashSet<String> = self.cache.names_in_use();
        for item in items {
            let Some(name) = item.name() else { continue };
            if item.tags.get(TAG_TRUST_DOMAIN).map(String::as_str)
                != Some(self.trust_domain.as_str())
            {
                continue;
            }
            if in_use.contains(&name.to_ascii_lowercase())
                || item.tags.contains_key(TAG_SHARED)
                || (self.is_shared_name)(name)
            {
                continue;
            }
            let Some(updated) = item.attributes.updated else {
                continue; // cannot judge staleness without it
            };
            if updated < cutoff {
                let owner = item.tags.get(TAG_SERVER_ID).cloned().unwrap_or_default();
                log::info!(key_name = name, server_id = owner.as_str(), own = (owner == self.server_id).to_string(); "Stale key found; deleting it");
                report.swept.push(name.to_string());
                self.enqueue(name.to_string());
            }
        }
    }

    fn process_deletions(&mut self, report: &mut Report) {
        let now = self.clock.now();
        let mut keep = Vec::with_capacity(self.pending.len());
        for mut p in std::mem::take(&mut self.pending) {
            if p.next_attempt > now {
                keep.push(p);
                continue;
            }
            match self.vault.delete_key(&p.name) {
                Ok(()) => {
                    log::debug!(key_name = p.name.as_str(); "Key deleted");
                    report.deleted.push(p.name);
                }
                Err(e) if e.is_not_found() => {
                    log::debug!(key_name = p.name.as_str(); "Key already gone");
                    report.deleted.push(p.name);
                }
                Err(e) => {
                    log::warn!(key_name = p.name.as_str(), reason = e.to_string(), retry_in = format!("{:?}", p.backoff); "Key deletion failed; will retry");
                    report.delete_failures += 1;
                    p.next_attempt = now + p.backoff;
                    p.backoff = (p.backoff * 2).min(self.settings.delete_backoff_max);
                    keep.push(p);
                }
            }
        }
        self.pending = keep;
    }
}

enum Command {
    Delete(String),
    Stop,
}

/// Deletions a stopped maintenance thread had not done, kept for the next thread on the same
/// vault: a reconfigure must not lose them, even when the old thread was still inside a Key
/// Vault call when the new configuration took over (it hands them over when that call ends).
#[derive(Default)]
pub struct Leftovers(Mutex<Vec<(String, String)>>);

impl Leftovers {
    fn put(&self, vault_uri: &str, names: Vec<String>) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.extend(names.into_iter().map(|n| (vault_uri.to_string(), n)));
    }

    /// The names left for `vault_uri`; those of other vaults are dropped (that vault is no
    /// longer configured) with a warning naming each key.
    fn take(&self, vault_uri: &str) -> Vec<String> {
        let all = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        let mut mine = Vec::new();
        for (uri, name) in all {
            if uri == vault_uri {
                mine.push(name);
            } else {
                log::warn!(key_name = name.as_str(), key_vault_uri = uri.as_str(); "Key left undeleted in a vault that is no longer configured");
            }
        }
        mine
    }

    #[cfg(test)]
    pub fn names(&self) -> Vec<String> {
        let all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.iter().map(|(_, n)| n.clone()).collect()
    }
}

/// The running thread. Dropping the handle stops it.
pub struct MaintenanceHandle {
    tx: Sender<Command>,
    done: Receiver<()>,
    /// Set (under its lock) once the thread took its last command: later deletions go
    /// straight to `leftovers`, so none is dropped with the channel.
    closed: Arc<Mutex<bool>>,
    leftovers: Arc<Leftovers>,
    vault_uri: String,
    _thread: Option<JoinHandle<()>>,
}

impl MaintenanceHandle {
    /// Runs `m` on its own thread for the vault at `vault_uri`, first taking over what an
    /// earlier thread on that vault left in `leftovers`; on stop it leaves its own there.
    pub fn spawn(mut m: Maintenance, vault_uri: String, leftovers: Arc<Leftovers>) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded::<Command>();
        let (done_tx, done) = crossbeam_channel::bounded(1);
        let closed = Arc::new(Mutex::new(false));
        let (thread_closed, thread_leftovers, thread_uri) = (
            Arc::clone(&closed),
            Arc::clone(&leftovers),
            vault_uri.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("azkv-maintenance".into())
            .spawn(move || {
                let (leftovers, vault_uri) = (thread_leftovers, thread_uri);
                loop {
                    for name in leftovers.take(&vault_uri) {
                        m.enqueue(name);
                    }
                    m.run_due();
                    let now = m.clock.now();
                    let wait = m
                        .next_wake()
                        .duration_since(now)
                        .unwrap_or(Duration::ZERO)
                        .min(m.settings.max_wait)
                        .max(Duration::from_millis(1));
                    match rx.recv_timeout(wait) {
                        Ok(Command::Delete(name)) => m.enqueue(name),
                        Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                        Err(RecvTimeoutError::Timeout) => {}
                    }
                }
                // Deletions queued after the stop still sit in the channel: keep them too.
                let mut closed = thread_closed.lock().unwrap_or_else(|e| e.into_inner());
                while let Ok(command) = rx.try_recv() {
                    if let Command::Delete(name) = command {
                        m.enqueue(name);
                    }
                }
                *closed = true;
                drop(closed);
                leftovers.put(&vault_uri, m.pending_names());
                let _ = done_tx.send(());
            })
            .ok();
        if thread.is_none() {
            log::error!("could not start the maintenance thread");
        }
        MaintenanceHandle {
            tx,
            done,
            closed,
            leftovers,
            vault_uri,
            _thread: thread,
        }
    }

    pub fn queue_delete(&self, name: String) {
        let closed = self.closed.lock().unwrap_or_else(|e| e.into_inner());
        if *closed || self.tx.send(Command::Delete(name.clone())).is_err() {
            self.leftovers.put(&self.vault_uri, vec![name]);
        }
    }

    /// Stops the thread; waits at most `timeout` for a Key Vault call in flight to finish.
    /// Returns whether it stopped in time (if not, it hands its work over when it does).
    pub fn stop(&self, timeout: Duration) -> bool {
        let _ = self.tx.send(Command::Stop);
        self.done.recv_timeout(timeout).is_ok()
    }
}

impl Drop for MaintenanceHandle {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Stop);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::types::AzureError;
    use crate::clock::ManualClock;
    use crate::keys::cache::KeyEntry;
    use crate::keys::testing::MemoryVault;
    use crate::plugin::proto::keymanager::{KeyType, PublicKey};
    use std::time::UNIX_EPOCH;

    const TD: &str = "test.example.org";
    const SID: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
    const EPOCH: f64 = 1_800_000_000.0;

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

    fn maintenance(clock: &ManualClock, vault: &Arc<MemoryVault>, cache: KeyCache) -> Maintenance {
        let v: Arc<dyn KeyVaultApi> = vault.clone();
        Maintenance::new(
            v,
            Arc::new(cache),
            Arc::new(clock.clone()),
            Settings::default(),
            TD.into(),
            SID.into(),
            Arc::new(|name: &str| name.starts_with("shared-")),
            Vec::new(),
        )
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
    fn sweep_deletes_stale_keys_of_the_trust_domain_only() {
        let (clock, vault) = setup();
        let own = vault.insert(
            "own",
            "EC",
            &[(TAG_TRUST_DOMAIN, TD), (TAG_SERVER_ID, SID)],
            EPOCH,
            EPOCH,
        );
        vault.insert(
            "empty-id",
            "EC",
            &[(TAG_TRUST_DOMAIN, TD), (TAG_SERVER_ID, "")],
            EPOCH,
            EPOCH,
        );
        vault.insert("no-id-tag", "EC", &[(TAG_TRUST_DOMAIN, TD)], EPOCH, EPOCH);
        for i in 0..4 {
            vault.insert(
                &format!("other-{i}"),
                "EC",
                &[(TAG_TRUST_DOMAIN, TD), (TAG_SERVER_ID, "other")],
                EPOCH,
                EPOCH,
            );
        }
        vault.insert(
            "own-orphan",
            "EC",
            &[(TAG_TRUST_DOMAIN, TD), (TAG_SERVER_ID, SID)],
            EPOCH,
            EPOCH,
        );
        vault.insert(
            "other-td-own-id",
            "EC",
            &[(TAG_TRUST_DOMAIN, "o.org"), (TAG_SERVER_ID, SID)],
            EPOCH,
            EPOCH,
        );
        vault.insert(
            "other-td-1",
            "EC",
            &[(TAG_TRUST_DOMAIN, "o.org"), (TAG_SERVER_ID, "x")],
            EPOCH,
            EPOCH,
        );
        vault.insert(
            "shared-jwt",
            "EC",
            &[(TAG_TRUST_DOMAIN, TD), (TAG_SERVER_ID, "x")],
            EPOCH,
            EPOCH,
        );
        vault.insert(
            "tagged-shared",
            "EC",
            &[
                (TAG_TRUST_DOMAIN, TD),
                (TAG_SERVER_ID, "x"),
                (TAG_SHARED, "true"),
            ],
            EPOCH,
            EPOCH,
        );
        vault.insert(
            "fresh-other",
            "EC",
            &[(TAG_TRUST_DOMAIN, TD), (TAG_SERVER_ID, "x")],
            EPOCH + 14.0 * 86400.0,
            EPOCH + 14.0 * 86400.0,
        );
        let mut m = maintenance(&clock, &vault, KeyCache::from_entries([entry("own", &own)]));
        // The first sweep shortly after start finds nothing stale yet.
        clock.advance(Duration::from_secs(61));
        assert!(m.run_due().swept.is_empty());
        clock.advance(Duration::from_secs(14 * 86400 + 1));
        let r = m.run_due();
        let mut swept = r.swept.clone();
        swept.sort();
        assert_eq!(
            swept,
            vec![
                "empty-id",
                "no-id-tag",
                "other-0",
                "other-1",
                "other-2",
                "other-3",
                "own-orphan"
            ]
        );
        assert_eq!(r.deleted.len(), 7);
        assert_eq!(
            vault.names(),
            vec![
                "fresh-other",
                "other-td-1",
                "other-td-own-id",
                "own",
                "shared-jwt",
                "tagged-shared"
            ]
        );
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
        assert!(m.pending_names().is_empty());
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
    fn thread_stops_promptly_and_hands_pending_work_to_the_next() {
        let (clock, vault) = setup();
        let mut m = maintenance(&clock, &vault, KeyCache::default());
        m.settings.max_wait = Duration::from_millis(5);
        vault.fail("delete", AzureError::Transport("down".into()), 1000);
        let leftovers = Arc::new(Leftovers::default());
        let h = MaintenanceHandle::spawn(m, "https://v1".into(), Arc::clone(&leftovers));
        h.queue_delete("k".into());
        let started = std::time::Instant::now();
        assert!(h.stop(Duration::from_secs(2)));
        assert!(started.elapsed() < Duration::from_secs(1));
        // Queued just before the stop, or after it: neither is lost.
        h.queue_delete("late".into());
        let mut left = leftovers.names();
        left.sort();
        assert_eq!(left, vec!["k".to_string(), "late".to_string()]);
        // Only a thread on the same vault takes them over.
        assert_eq!(leftovers.take("https://other"), Vec::<String>::new());
        assert!(leftovers.names().is_empty());
    }

    #[test]
    fn leftovers_go_only_to_the_same_vault() {
        let l = Leftovers::default();
        l.put("https://a", vec!["k1".into(), "k2".into()]);
        l.put("https://b", vec!["k3".into()]);
        assert_eq!(
            l.take("https://a"),
            vec!["k1".to_string(), "k2".to_string()]
        );
        // b's entry was dropped with a warning when a's thread took its own.
        assert!(l.names().is_empty());
    }

    #[test]
    fn a_deletion_queued_after_the_stop_reaches_the_next_thread() {
        let (clock, vault) = setup();
        let leftovers = Arc::new(Leftovers::default());
        let mut m = maintenance(&clock, &vault, KeyCache::default());
        m.settings.max_wait = Duration::from_millis(5);
        let old = MaintenanceHandle::spawn(m, "https://v".into(), Arc::clone(&leftovers));
        assert!(old.stop(Duration::from_secs(2)));
        // A GenerateKey still holding the old configuration rotates a key out now.
        old.queue_delete("rotated-out".into());
        let mut m = maintenance(&clock, &vault, KeyCache::default());
        m.settings.max_wait = Duration::from_millis(5);
        let new = MaintenanceHandle::spawn(m, "https://v".into(), Arc::clone(&leftovers));
        assert!(new.stop(Duration::from_secs(2)));
        // Not lost: the new thread took it over and deleted it (a 404 counts as done).
        assert_eq!(vault.calls("delete"), 1);
        assert!(leftovers.names().is_empty());
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
