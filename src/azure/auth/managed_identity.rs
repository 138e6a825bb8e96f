//! Managed identity: App Service / Functions style (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`)
//! when those are set, else the instance metadata service (IMDS).
//!
//! IMDS is absent outside Azure and its link-local address may black-hole packets, so until it
//! has answered once, requests to it use a 1 s connect timeout and no transport retries; a
//! connection failure then means "unavailable" and the chain ends quickly.
//! `AZURE_IMDS_ENDPOINT` (a full token URL) overrides the IMDS address: for tests only.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::{describe_token_error, parse_token_response, AccessToken, Credential, CredentialError};
use crate::azure::cloud::resource_from_scope;
use crate::azure::http::{percent_encode, HttpClient, HttpRequest, Url};
use crate::azure::types::AzureError;
use crate::azure::{env_get, EnvSnapshot};
use crate::secret::Secret;

const DEFAULT_IMDS: &str = "http://169.254.169.254/metadata/identity/oauth2/token";
const IMDS_API_VERSION: &str = "2018-02-01";
const APP_SERVICE_API_VERSION: &str = "2019-08-01";

enum Source {
    AppService { endpoint: String, header: Secret },
    Imds { endpoint: String },
    Broken(String),
}

pub struct ManagedIdentityCredential {
    source: Source,
    /// User-assigned identity (`AZURE_CLIENT_ID`); `None` = system-assigned.
    client_id: Option<String>,
    http: Arc<HttpClient>,
    /// IMDS answered once: later requests get normal timeouts and retries.
    imds_seen: AtomicBool,
}

fn checked_endpoint(var: &str, value: &str) -> Result<String, String> {
    let url = Url::parse(value).map_err(|e| format!("{var}: {e}"))?;
    if url.path_and_query.contains('#') {
        return Err(format!("{var} must not contain a fragment"));
    }
    Ok(url.to_string())
}

impl ManagedIdentityCredential {
    pub fn from_env(env: &EnvSnapshot, http: Arc<HttpClient>) -> Self {
        let source = match (
            env_get(env, "IDENTITY_ENDPOINT"),
            env_get(env, "IDENTITY_HEADER"),
        ) {
            (Some(endpoint), Some(header)) => match checked_endpoint("IDENTITY_ENDPOINT", endpoint)
            {
                Ok(endpoint) => Source::AppService {
                    endpoint,
                    header: Secret::new(header),
                },
                Err(m) => Source::Broken(m),
            },
            _ => {
                let (var, value) = match env_get(env, "AZURE_IMDS_ENDPOINT") {
                    Some(v) => ("AZURE_IMDS_ENDPOINT", v),
                    None => ("IMDS", DEFAULT_IMDS),
                };
                match checked_endpoint(var, value) {
                    Ok(endpoint) => Source::Imds { endpoint },
                    Err(m) => Source::Broken(m),
                }
            }
        };
        ManagedIdentityCredential {
            source,
            client_id: env_get(env, "AZURE_CLIENT_ID").map(str::to_string),
            http,
            imds_seen: AtomicBool::new(false),
        }
    }

    fn url(&self, endpoint: &str, api_version: &str, scope: &str) -> String {
        let sep = if endpoint.contains('?') { '&' } else { '?' };
        let mut url = format!(
            "{endpoint}{sep}api-version={api_version}&resource={}",
            percent_encode(&resource_from_scope(scope))
        );
        if let Some(id) = &self.client_id {
            url.push_str("&client_id=");
            url.push_str(&percent_encode(id));
        }
        url
    }
}

impl Credential for ManagedIdentityCredential {
    fn name(&self) -> &'static str {
        match self.source {
            Source::AppService { .. } => "ManagedIdentityCredential (App Service)",
            _ => "ManagedIdentityCredential (IMDS)",
        }
    }

    fn fetch(&self, _tenant: Option<&str>, scope: &str) -> Result<AccessToken, CredentialError> {
        let (req, is_imds) = match &self.source {
            Source::Broken(m) => {
                return Err(CredentialError::Failed(AzureError::Config(m.clone())));
            }
            Source::AppService { endpoint, header } => (
                HttpRequest::new("GET", self.url(endpoint, APP_SERVICE_API_VERSION, scope))
                    .header("X-IDENTITY-HEADER", header.expose())
                    .header("Accept", "application/json"),
                false,
            ),
            Source::Imds { endpoint } => {
                let mut req = HttpRequest::new("GET", self.url(endpoint, IMDS_API_VERSION, scope))
                    .header("Metadata", "true")
                    .header("Accept", "application/json");
                req.probe = !self.imds_seen.load(Ordering::Relaxed);
                (req, true)
            }
        };
        let resp = match self.http.send(&req) {
            Ok(r) => r,
            Err(e) if is_imds && req.probe => {
                return Err(CredentialError::Unavailable(format!(
                    "no managed identity endpoint answered ({e})"
                )));
            }
            Err(e) => return Err(CredentialError::Failed(e)),
        };
        if is_imds {
            self.imds_seen.store(true, Ordering::Relaxed);
        }
        if !resp.is_success() {
            let reason = describe_token_error(resp.status, &resp.body);
            // IMDS 400: no identity assigned to this VM (or the user-assigned id is unknown).
            if is_imds && resp.status == 400 {
                return Err(CredentialError::Unavailable(format!(
                    "IMDS has no matching identity ({reason})"
                )));
            }
            return Err(CredentialError::Failed(AzureError::Auth(format!(
                "managed identity endpoint refused the token request: {reason}"
            ))));
        }
        parse_token_response(&resp.body, self.http.clock().now()).map_err(|m| {
            CredentialError::Failed(AzureError::Decode(format!("managed identity: {m}")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::http::tests::{resp, Scripted};
    use crate::azure::http::{HttpResponse, RetryPolicy, Transport, TransportError};
    use crate::clock::ManualClock;
    use std::sync::Mutex;
    use std::time::{Duration, SystemTime};

    /// (url, headers, probe) of each request.
    type SeenRequest = (String, Vec<(String, String)>, bool);

    struct Recorder {
        inner: Scripted,
        seen: Mutex<Vec<SeenRequest>>,
    }

    impl Transport for Recorder {
        fn execute(&self, req: &HttpRequest) -> Result<HttpResponse, TransportError> {
            self.seen
                .lock()
                .unwrap()
                .push((req.url.clone(), req.headers.clone(), req.probe));
            self.inner.execute(req)
        }
    }

    fn setup(
        env: &[(&str, &str)],
        outcomes: Vec<Result<HttpResponse, TransportError>>,
    ) -> (ManagedIdentityCredential, Arc<Recorder>) {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let rec = Arc::new(Recorder {
            inner: Scripted::new(outcomes),
            seen: Mutex::new(Vec::new()),
        });
        let http = Arc::new(HttpClient::new(
            rec.clone(),
            Arc::new(clock),
            RetryPolicy::default(),
        ));
        let env: EnvSnapshot = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        (ManagedIdentityCredential::from_env(&env, http), rec)
    }

    fn token_body(body: &str) -> Result<HttpResponse, TransportError> {
        let mut r = resp(200, &[]);
        r.body = body.as_bytes().to_vec();
        Ok(r)
    }

    #[test]
    fn app_service_request_shape() {
        let (c, rec) = setup(
            &[
                ("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token"),
                ("IDENTITY_HEADER", "hdr-secret"),
                ("AZURE_CLIENT_ID", "uai-1"),
            ],
            vec![token_body(
                r#"{"access_token":"a","expires_on":"1700003600","resource":"r"}"#,
            )],
        );
        let t = c
            .fetch(Some("ignored"), "https://vault.azure.net/.default")
            .unwrap();
        assert_eq!(
            t.expires_at,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_003_600)
        );
        let seen = rec.seen.lock().unwrap();
        assert_eq!(
            seen[0].0,
            "http://127.0.0.1:9/msi/token?api-version=2019-08-01&resource=https%3A%2F%2Fvault.azure.net&client_id=uai-1"
        );
        assert!(seen[0]
            .1
            .contains(&("X-IDENTITY-HEADER".to_string(), "hdr-secret".to_string())));
        assert!(!seen[0].2);
    }

    #[test]
    fn imds_probe_then_normal_requests() {
        let (c, rec) = setup(
            &[(
                "AZURE_IMDS_ENDPOINT",
                "http://127.0.0.1:9/metadata/identity/oauth2/token",
            )],
            vec![
                token_body(r#"{"access_token":"a","expires_in":"86399","expires_on":"1"}"#),
                token_body(r#"{"access_token":"b","expires_in":"86399"}"#),
            ],
        );
        c.fetch(None, "https://vault.azure.net/.default").unwrap();
        c.fetch(None, "https://vault.azure.net/.default").unwrap();
        let seen = rec.seen.lock().unwrap();
        assert_eq!(
            seen[0].0,
            "http://127.0.0.1:9/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net"
        );
        assert!(seen[0]
            .1
            .contains(&("Metadata".to_string(), "true".to_string())));
        assert!(seen[0].2, "first IMDS request is a probe");
        assert!(!seen[1].2, "later requests are not");
    }

    #[test]
    fn unreachable_imds_is_unavailable_without_retries() {
        let (c, rec) = setup(
            &[(
                "AZURE_IMDS_ENDPOINT",
                "http://127.0.0.1:9/metadata/identity/oauth2/token",
            )],
            vec![Err(TransportError {
                message: "connection refused".into(),
                retryable: true,
            })],
        );
        assert!(
            matches!(c.fetch(None, "s"), Err(CredentialError::Unavailable(m)) if m.contains("connection refused"))
        );
        assert_eq!(rec.seen.lock().unwrap().len(), 1);
    }

    #[test]
    fn imds_400_is_unavailable_other_errors_fail() {
        let mut r400 = resp(400, &[]);
        r400.body =
            br#"{"error":"invalid_request","error_description":"Identity not found"}"#.to_vec();
        let (c, _) = setup(
            &[("AZURE_IMDS_ENDPOINT", "http://127.0.0.1:9/t")],
            vec![Ok(r400)],
        );
        assert!(
            matches!(c.fetch(None, "s"), Err(CredentialError::Unavailable(m)) if m.contains("Identity not found"))
        );
        let (c, _) = setup(
            &[
                ("IDENTITY_ENDPOINT", "http://127.0.0.1:9/t"),
                ("IDENTITY_HEADER", "h"),
            ],
            vec![Ok(resp(403, &[]))],
        );
        assert!(matches!(
            c.fetch(None, "s"),
            Err(CredentialError::Failed(_))
        ));
        let (c, _) = setup(
            &[("IDENTITY_ENDPOINT", "ftp://x"), ("IDENTITY_HEADER", "h")],
            vec![],
        );
        assert!(matches!(
            c.fetch(None, "s"),
            Err(CredentialError::Failed(AzureError::Config(_)))
        ));
    }
}
