//! Token cache per (tenant, scope).
//!
//! - A token is refreshed `min(5 min, half its lifetime)` before it expires.
//! - At most one fetch per key is in flight. Callers without a usable token wait on a
//!   `Condvar` for it (no stampede); callers holding a still-valid token in the refresh window
//!   keep using it while someone else refreshes, so signing never waits on Entra.
//! - A failed refresh falls back to the still-valid token, and is not retried for 30 s.
//! - Waiters on a fetch that failed get its error instead of each retrying in turn.
//! - The lock is never held across the credential's network I/O.
//! - Every call belongs to a Key Vault operation and keeps to its deadline: waiting for another
//!   caller's fetch ends with it, and a fetch's HTTP calls are bounded by it.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use log::{debug, warn};

use super::credential::{Credential, CredentialError};
use crate::azure::deadline::Deadline;
use crate::azure::types::AzureError;
use crate::clock::Clock;
use crate::secret::Secret;

/// How long before expiry a token is refreshed (capped at half the token's lifetime).
pub(crate) const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);
/// Minimum gap between proactive refresh attempts after one failed.
const FAILED_REFRESH_BACKOFF: Duration = Duration::from_secs(30);

type Key = (Option<String>, String);

struct Cached {
    token: Secret,
    expires_at: SystemTime,
    refresh_at: SystemTime,
}

#[derive(Default)]
struct Entry {
    token: Option<Cached>,
    fetching: bool,
    /// Bumped when a fetch completes (successfully or not).
    generation: u64,
    last_error: Option<AzureError>,
    last_failure: Option<SystemTime>,
}

impl Entry {
    /// The cached token, unless it expired or is the one just `rejected`.
    fn usable(&self, now: SystemTime, rejected: Option<&Secret>) -> Option<&Cached> {
        let ok = |c: &&Cached| now < c.expires_at && rejected.is_none_or(|r| *r != c.token);
        self.token.as_ref().filter(ok)
    }
}

pub struct TokenCache {
    credential: Arc<dyn Credential>,
    clock: Arc<dyn Clock>,
    entries: Mutex<HashMap<Key, Entry>>,
    changed: Condvar,
}

impl TokenCache {
    pub fn new(credential: Arc<dyn Credential>, clock: Arc<dyn Clock>) -> Self {
        TokenCache {
            credential,
            clock,
            entries: Mutex::new(HashMap::new()),
            changed: Condvar::new(),
        }
    }

    /// A valid token for (tenant, scope), from the cache when possible, by `deadline`.
    pub fn token(
        &self,
        tenant: Option<&str>,
        scope: &str,
        deadline: &Deadline,
    ) -> Result<Secret, AzureError> {
        self.get(tenant, scope, None, deadline)
    }

    /// A token other than `rejected` (which the service just refused with 401), by
    /// `deadline`. Concurrent callers that were refused the same token share one fetch.
    pub fn fresh_token(
        &self,
        tenant: Option<&str>,
        scope: &str,
        rejected: &Secret,
        deadline: &Deadline,
    ) -> Result<Secret, AzureError> {
        self.get(tenant, scope, Some(rejected), deadline)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(
        &self,
        tenant: Option<&str>,
        scope: &str,
        rejected: Option<&Secret>,
        deadline: &Deadline,
    ) -> Result<Secret, AzureError> {
        let key: Key = (tenant.map(str::to_string), scope.to_string());
        let mut map = self.lock();
        let mut waited_on: Option<u64> = None;
        loop {
            let now = self.clock.now();
            let entry = map.entry(key.clone()).or_default();
            if let Some(c) = entry.usable(now, rejected) {
                let recently_failed = entry.last_failure.is_some_and(|t| {
                    now.duration_since(t).unwrap_or_default() < FAILED_REFRESH_BACKOFF
                });
                if now < c.refresh_at || entry.fetching || recently_failed {
                    return Ok(c.token.clone());
                }
            } else if entry.fetching {
                waited_on = Some(entry.generation);
                let left = deadline.remaining(self.clock.as_ref());
                if left.is_zero() {
                    return Err(AzureError::Transport(format!(
                        "no access token for {scope}: {} passed while another caller's token \
                         request was still running",
                        deadline.describe()
                    )));
                }
                map = self
                    .changed
                    .wait_timeout(map, left)
                    .map(|(m, _)| m)
                    .unwrap_or_else(|e| e.into_inner().0);
                continue;
            } else if let Some(g) = waited_on {
                if entry.generation != g {
                    if let Some(e) = &entry.last_error {
                        return Err(e.clone());
                    }
                }
            }
            entry.fetching = true;
            break;
        }
        drop(map);

        let mut guard = FetchGuard {
            cache: self,
            key: &key,
            armed: true,
        };
        let started = self.clock.now();
        let result = self.credential.fetch_within(tenant, scope, *deadline);
        guard.armed = false;

        let now = self.clock.now();
        let elapsed = now.duration_since(started).unwrap_or_default();
        crate::telemetry::token_fetch_elapsed(result.is_ok(), elapsed);
        let mut map = self.lock();
        let entry = map.entry(key.clone()).or_default();
        entry.fetching = false;
        entry.generation = entry.generation.wrapping_add(1);
        let out = match result {
            Ok(t) => {
                let lifetime = t.expires_at.duration_since(now).unwrap_or_default();
                let early = REFRESH_BEFORE_EXPIRY.min(lifetime / 2);
                let refresh_at = t.expires_at.checked_sub(early).unwrap_or(t.expires_at);
                let secs = lifetime.as_secs();
                debug!("obtained an access token for {scope} valid for {secs}s");
                entry.token = Some(Cached {
                    token: t.token.clone(),
                    expires_at: t.expires_at,
                    refresh_at,
                });
                entry.last_error = None;
                entry.last_failure = None;
                Ok(t.token)
            }
            Err(e) => {
                let err = match e {
                    CredentialError::Failed(e) => e,
                    CredentialError::Unavailable(m) => {
                        AzureError::Auth(format!("{}: {m}", self.credential.name()))
                    }
                };
                entry.last_error = Some(err.clone());
                entry.last_failure = Some(now);
                match entry.usable(now, rejected) {
                    Some(c) => {
                        warn!(
                            "token refresh failed, using the cached token until it expires: {err}"
                        );
                        Ok(c.token.clone())
                    }
                    None => Err(err),
                }
            }
        };
        drop(map);
        self.changed.notify_all();
        out
    }
}

/// Clears the in-flight flag if the credential panics, so waiters are not stuck forever.
struct FetchGuard<'a> {
    cache: &'a TokenCache,
    key: &'a Key,
    armed: bool,
}

impl Drop for FetchGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut map = self.cache.lock();
        if let Some(e) = map.get_mut(self.key) {
            e.fetching = false;
            e.generation = e.generation.wrapping_add(1);
            e.last_error = Some(AzureError::Auth("the credential panicked".into()));
        }
        drop(map);
        self.cache.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::super::AccessToken;
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Barrier;

    /// Issues `tok-N` tokens living `lifetime`; optionally slow (a real sleep widens the race
    /// window for the concurrency test; time-based logic uses the manual clock) or failing.
    struct Fake {
        clock: ManualClock,
        lifetime: Duration,
        fetches: AtomicUsize,
        fail: Mutex<bool>,
        delay: Duration,
    }

    impl Fake {
        fn new(clock: &ManualClock, lifetime: Duration) -> Arc<Fake> {
            Arc::new(Fake {
                clock: clock.clone(),
                lifetime,
                fetches: AtomicUsize::new(0),
                fail: Mutex::new(false),
                delay: Duration::ZERO,
            })
        }
        fn fetches(&self) -> usize {
            self.fetches.load(Ordering::SeqCst)
        }
    }

    impl Credential for Fake {
        fn name(&self) -> &'static str {
            "Fake"
        }
        fn fetch(&self, _t: Option<&str>, _s: &str) -> Result<AccessToken, CredentialError> {
            let n = self.fetches.fetch_add(1, Ordering::SeqCst) + 1;
            if !self.delay.is_zero() {
                std::thread::sleep(self.delay);
            }
            if *self.fail.lock().unwrap() {
                return Err(CredentialError::Unavailable("endpoint down".into()));
            }
            Ok(AccessToken {
                token: Secret::new(format!("tok-{n}")),
                expires_at: Clock::now(&self.clock) + self.lifetime,
            })
        }
    }

    fn setup(lifetime: Duration) -> (ManualClock, Arc<Fake>, TokenCache) {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let fake = Fake::new(&clock, lifetime);
        let cache = TokenCache::new(fake.clone(), Arc::new(clock.clone()));
        (clock, fake, cache)
    }

    /// A deadline none of these tests reaches (the cache consults it only while waiting).
    fn unbounded() -> Deadline {
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(4_000_000_000);
        Deadline::after(&ManualClock::new(far), Duration::from_secs(25))
    }

    /// The token `cache` gives for `SCOPE` now.
    fn token(cache: &TokenCache) -> String {
        cache
            .token(None, SCOPE, &unbounded())
            .unwrap()
            .expose()
            .to_string()
    }

    const HOUR: Duration = Duration::from_secs(3600);
    const SCOPE: &str = "https://vault.azure.net/.default";

    #[test]
    fn thousand_gets_within_lifetime_fetch_once() {
        let (clock, fake, cache) = setup(HOUR);
        for _ in 0..1000 {
            assert_eq!(token(&cache), "tok-1");
            clock.advance(Duration::from_secs(3));
        }
        assert_eq!(fake.fetches(), 1);
    }

    #[test]
    fn concurrent_callers_on_empty_cache_share_one_fetch() {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let fake = Arc::new(Fake {
            clock: clock.clone(),
            lifetime: HOUR,
            fetches: AtomicUsize::new(0),
            fail: Mutex::new(false),
            delay: Duration::from_millis(50),
        });
        let cache = Arc::new(TokenCache::new(fake.clone(), Arc::new(clock)));
        let barrier = Arc::new(Barrier::new(50));
        let handles: Vec<_> = (0..50)
            .map(|_| {
                let cache = cache.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    cache
                        .token(None, SCOPE, &unbounded())
                        .unwrap()
                        .expose()
                        .to_string()
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), "tok-1");
        }
        assert_eq!(fake.fetches(), 1);
    }

    #[test]
    fn refreshes_five_minutes_before_expiry() {
        let (clock, fake, cache) = setup(HOUR);
        assert_eq!(token(&cache), "tok-1");
        clock.advance(HOUR - Duration::from_secs(5 * 60 + 1));
        assert_eq!(token(&cache), "tok-1");
        clock.advance(Duration::from_secs(2));
        assert_eq!(token(&cache), "tok-2");
        assert_eq!(fake.fetches(), 2);
    }

    #[test]
    fn short_lived_tokens_refresh_at_half_life() {
        let (clock, fake, cache) = setup(Duration::from_secs(120));
        cache.token(None, SCOPE, &unbounded()).unwrap();
        clock.advance(Duration::from_secs(59));
        assert_eq!(token(&cache), "tok-1");
        clock.advance(Duration::from_secs(2));
        assert_eq!(token(&cache), "tok-2");
        assert_eq!(fake.fetches(), 2);
    }

    #[test]
    fn failed_refresh_keeps_valid_token_and_backs_off() {
        let (clock, fake, cache) = setup(HOUR);
        cache.token(None, SCOPE, &unbounded()).unwrap();
        *fake.fail.lock().unwrap() = true;
        clock.advance(HOUR - Duration::from_secs(60));
        // In the refresh window: the refresh fails, the old token is still served.
        assert_eq!(token(&cache), "tok-1");
        assert_eq!(fake.fetches(), 2);
        // Within 30 s no new attempt is made.
        clock.advance(Duration::from_secs(10));
        assert_eq!(token(&cache), "tok-1");
        assert_eq!(fake.fetches(), 2);
        // After 30 s, another attempt (still failing, still served).
        clock.advance(Duration::from_secs(25));
        assert_eq!(token(&cache), "tok-1");
        assert_eq!(fake.fetches(), 3);
        // Once expired, the error surfaces.
        clock.advance(Duration::from_secs(60));
        let e = cache.token(None, SCOPE, &unbounded()).unwrap_err();
        assert_eq!(e, AzureError::Auth("Fake: endpoint down".into()));
        // Recovery.
        *fake.fail.lock().unwrap() = false;
        assert_eq!(token(&cache), "tok-5");
    }

    #[test]
    fn rejected_token_forces_one_new_fetch() {
        let (_clock, fake, cache) = setup(HOUR);
        let t1 = cache.token(None, SCOPE, &unbounded()).unwrap();
        let t2 = cache.fresh_token(None, SCOPE, &t1, &unbounded()).unwrap();
        assert_eq!(t2.expose(), "tok-2");
        // A second caller rejecting the same old token gets the new one without a fetch.
        assert_eq!(
            cache
                .fresh_token(None, SCOPE, &t1, &unbounded())
                .unwrap()
                .expose(),
            "tok-2"
        );
        assert_eq!(token(&cache), "tok-2");
        assert_eq!(fake.fetches(), 2);
    }

    #[test]
    fn keys_are_per_tenant_and_scope() {
        let (_clock, fake, cache) = setup(HOUR);
        cache.token(None, SCOPE, &unbounded()).unwrap();
        cache.token(Some("t1"), SCOPE, &unbounded()).unwrap();
        cache
            .token(
                Some("t1"),
                "https://managedhsm.azure.net/.default",
                &unbounded(),
            )
            .unwrap();
        cache.token(Some("t1"), SCOPE, &unbounded()).unwrap();
        assert_eq!(fake.fetches(), 3);
    }

    /// Records the deadline each fetch was given; takes `delay` of real time.
    struct Timed {
        clock: ManualClock,
        delay: Duration,
        deadlines: Mutex<Vec<Deadline>>,
    }

    impl Credential for Timed {
        fn name(&self) -> &'static str {
            "Timed"
        }
        fn fetch(&self, _t: Option<&str>, _s: &str) -> Result<AccessToken, CredentialError> {
            Err(CredentialError::Unavailable(
                "called without a deadline".into(),
            ))
        }
        fn fetch_within(
            &self,
            _t: Option<&str>,
            _s: &str,
            deadline: Deadline,
        ) -> Result<AccessToken, CredentialError> {
            self.deadlines.lock().unwrap().push(deadline);
            std::thread::sleep(self.delay);
            Ok(AccessToken {
                token: Secret::new("tok"),
                expires_at: Clock::now(&self.clock) + HOUR,
            })
        }
    }

    #[test]
    fn the_operation_deadline_bounds_fetching_and_waiting() {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let cred = Arc::new(Timed {
            clock: clock.clone(),
            delay: Duration::from_millis(1500),
            deadlines: Mutex::new(Vec::new()),
        });
        let cache = Arc::new(TokenCache::new(cred.clone(), Arc::new(clock.clone())));
        let deadline = Deadline::after(&clock, Duration::from_secs(25));
        // The fetch gets the caller's deadline.
        let fetcher = {
            let cache = cache.clone();
            std::thread::spawn(move || cache.token(None, SCOPE, &deadline))
        };
        let started =
            azkv_testkit::wait_until(Duration::from_secs(10), Duration::from_millis(5), || {
                !cred.deadlines.lock().unwrap().is_empty()
            });
        assert!(started, "the fetch never started");
        assert_eq!(*cred.deadlines.lock().unwrap(), vec![deadline]);
        // A caller whose deadline has passed does not wait for that fetch to finish.
        let spent = Deadline::after(&clock, Duration::ZERO);
        let e = cache.token(None, SCOPE, &spent).unwrap_err();
        assert!(
            matches!(&e, AzureError::Transport(m) if m.contains("deadline of this operation passed")),
            "{e:?}"
        );
        assert!(!fetcher.is_finished(), "the caller waited for the fetch");
        assert_eq!(fetcher.join().unwrap().unwrap().expose(), "tok");
        assert_eq!(cred.deadlines.lock().unwrap().len(), 1);
    }
}
