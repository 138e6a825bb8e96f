//! The credential chain: tries each source in order; the first one that yields a token is kept
//! for every later request. An "unavailable" source passes to the next; a configured source
//! that fails stops the chain (as DefaultAzureCredential does). All failures are reported in
//! one readable `AzureError::Auth`.

use std::sync::Mutex;

use log::info;

use super::credential::{AccessToken, Credential, CredentialError};
use crate::azure::deadline::Deadline;
use crate::azure::types::AzureError;

pub(crate) struct ChainCredential {
    sources: Vec<Box<dyn Credential>>,
    selected: Mutex<Option<usize>>,
}

impl ChainCredential {
    pub(crate) fn new(sources: Vec<Box<dyn Credential>>) -> Self {
        ChainCredential {
            sources,
            selected: Mutex::new(None),
        }
    }

    /// The names of the sources, in the order they are tried.
    #[cfg(test)]
    pub(crate) fn source_names(&self) -> Vec<&'static str> {
        self.sources.iter().map(|c| c.name()).collect()
    }

    /// Name of the credential in use, once one has succeeded.
    #[cfg(test)]
    pub(crate) fn selected_name(&self) -> Option<&'static str> {
        let i = (*self.selected.lock().unwrap_or_else(|e| e.into_inner()))?;
        self.sources.get(i).map(|c| c.name())
    }

    /// Runs the chain, asking each source with `fetch`.
    fn run(
        &self,
        fetch: impl Fn(&dyn Credential) -> Result<AccessToken, CredentialError>,
    ) -> Result<AccessToken, CredentialError> {
        // Every attempt is counted by credential kind and outcome.
        let fetch = |c: &dyn Credential| {
            let result = fetch(c);
            let outcome = match &result {
                Ok(_) => "ok",
                Err(CredentialError::Unavailable(_)) => "unavailable",
                Err(CredentialError::Failed(_)) => "error",
            };
            crate::telemetry::token_fetch(c.name(), outcome);
            result
        };
        let selected = *self.selected.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = selected.and_then(|i| self.sources.get(i)) {
            return fetch(c.as_ref()).map_err(|e| {
                CredentialError::Failed(AzureError::Auth(format!("{}: {e}", c.name())))
            });
        }
        let mut reasons = Vec::new();
        for (i, c) in self.sources.iter().enumerate() {
            match fetch(c.as_ref()) {
                Ok(t) => {
                    info!("authenticating to Azure with {}", c.name());
                    *self.selected.lock().unwrap_or_else(|e| e.into_inner()) = Some(i);
                    return Ok(t);
                }
                Err(e) => {
                    reasons.push(format!("{}: {e}", c.name()));
                    if let CredentialError::Failed(_) = e {
                        break;
                    }
                }
            }
        }
        let msg = if self.sources.len() == 1 {
            reasons.join("; ")
        } else {
            format!("no credential could obtain a token: {}", reasons.join("; "))
        };
        Err(CredentialError::Failed(AzureError::Auth(msg)))
    }
}

impl Credential for ChainCredential {
    fn name(&self) -> &'static str {
        "credential chain"
    }

    fn fetch(&self, tenant: Option<&str>, scope: &str) -> Result<AccessToken, CredentialError> {
        self.run(|c| c.fetch(tenant, scope))
    }

    fn fetch_within(
        &self,
        tenant: Option<&str>,
        scope: &str,
        deadline: Deadline,
    ) -> Result<AccessToken, CredentialError> {
        self.run(|c| c.fetch_within(tenant, scope, deadline))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::SystemTime;

    struct Stub {
        name: &'static str,
        outcome: Result<(), CredentialError>,
        calls: Arc<AtomicUsize>,
    }

    impl Credential for Stub {
        fn name(&self) -> &'static str {
            self.name
        }
        fn fetch(&self, _: Option<&str>, _: &str) -> Result<AccessToken, CredentialError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.outcome.clone().map(|_| AccessToken {
                token: Secret::new(self.name),
                expires_at: SystemTime::now(),
            })
        }
    }

    fn stub(
        name: &'static str,
        outcome: Result<(), CredentialError>,
    ) -> (Box<dyn Credential>, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        (
            Box::new(Stub {
                name,
                outcome,
                calls: calls.clone(),
            }),
            calls,
        )
    }

    fn unavailable(m: &str) -> Result<(), CredentialError> {
        Err(CredentialError::Unavailable(m.into()))
    }

    #[test]
    fn first_success_is_kept() {
        let (a, a_calls) = stub("A", unavailable("no env"));
        let (b, b_calls) = stub("B", Ok(()));
        let (c, c_calls) = stub("C", Ok(()));
        let chain = ChainCredential::new(vec![a, b, c]);
        assert_eq!(chain.fetch(None, "s").unwrap().token.expose(), "B");
        assert_eq!(chain.selected_name(), Some("B"));
        chain.fetch(None, "s").unwrap();
        assert_eq!(a_calls.load(Ordering::SeqCst), 1);
        assert_eq!(b_calls.load(Ordering::SeqCst), 2);
        assert_eq!(c_calls.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn all_unavailable_aggregates_every_reason() {
        let (a, _) = stub(
            "EnvironmentCredential",
            unavailable("AZURE_TENANT_ID not set"),
        );
        let (b, _) = stub(
            "WorkloadIdentityCredential",
            unavailable("AZURE_FEDERATED_TOKEN_FILE not set"),
        );
        let (c, _) = stub(
            "ManagedIdentityCredential (IMDS)",
            unavailable("no endpoint answered"),
        );
        let chain = ChainCredential::new(vec![a, b, c]);
        let Err(CredentialError::Failed(AzureError::Auth(m))) = chain.fetch(None, "s") else {
            panic!("expected an aggregated auth error");
        };
        assert_eq!(
            m,
            "no credential could obtain a token: EnvironmentCredential: unavailable: AZURE_TENANT_ID not set; \
             WorkloadIdentityCredential: unavailable: AZURE_FEDERATED_TOKEN_FILE not set; \
             ManagedIdentityCredential (IMDS): unavailable: no endpoint answered"
        );
    }

    #[test]
    fn a_configured_failure_stops_the_chain() {
        let (a, _) = stub(
            "A",
            Err(CredentialError::Failed(AzureError::Auth(
                "bad secret".into(),
            ))),
        );
        let (b, b_calls) = stub("B", Ok(()));
        let chain = ChainCredential::new(vec![a, b]);
        let e = chain.fetch(None, "s").unwrap_err();
        assert!(
            e.to_string()
                .contains("A: authentication failed: bad secret"),
            "{e}"
        );
        assert_eq!(b_calls.load(Ordering::SeqCst), 0);
        assert_eq!(chain.selected_name(), None);
    }

    /// Hands out a token only through `fetch_within`, recording the deadline.
    struct NeedsDeadline(Arc<Mutex<Vec<Deadline>>>);

    impl Credential for NeedsDeadline {
        fn name(&self) -> &'static str {
            "NeedsDeadline"
        }
        fn fetch(&self, _: Option<&str>, _: &str) -> Result<AccessToken, CredentialError> {
            Err(CredentialError::Unavailable("no deadline given".into()))
        }
        fn fetch_within(
            &self,
            _: Option<&str>,
            _: &str,
            deadline: Deadline,
        ) -> Result<AccessToken, CredentialError> {
            self.0.lock().unwrap().push(deadline);
            Ok(AccessToken {
                token: Secret::new("t"),
                expires_at: SystemTime::now(),
            })
        }
    }

    #[test]
    fn the_deadline_reaches_the_sources() {
        let (a, _) = stub("A", unavailable("no env"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let chain = ChainCredential::new(vec![a, Box::new(NeedsDeadline(seen.clone()))]);
        let clock = crate::clock::ManualClock::new(SystemTime::UNIX_EPOCH);
        let deadline = Deadline::after(&clock, std::time::Duration::from_secs(7));
        // Before a source is selected, and after.
        chain.fetch_within(None, "s", deadline).unwrap();
        chain.fetch_within(None, "s", deadline).unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![deadline, deadline]);
        assert_eq!(chain.selected_name(), Some("NeedsDeadline"));
    }
}
