//! Managed identity: App Service / Functions style (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`),
//! Azure Arc-enabled servers (`IDENTITY_ENDPOINT` + `IMDS_ENDPOINT`: the local agent answers a
//! first request with a challenge naming a key file only root and the agent's group can read,
//! whose content authenticates the second), else the instance metadata service (IMDS). Service
//! Fabric (`IDENTITY_SERVER_THUMBPRINT`) is recognized and refused with a clear error.
//!
//! IMDS is absent outside Azure and its link-local address may black-hole packets, so until it
//! has answered once, requests to it use a 1 s connect timeout and no transport retries; a
//! connection failure then means "unavailable" and the chain ends quickly.
//! `AZURE_IMDS_ENDPOINT` (a full token URL) overrides the IMDS address, in test builds only.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::credential::{
    describe_token_error, failed, parse_token_response, AccessToken, CredentialError,
    HttpCredential,
};
use crate::azure::cloud::resource_from_scope;
use crate::azure::http::{percent_encode, HttpClient, HttpRequest, Url};
use crate::azure::settings::{env_get, EnvSnapshot};
use crate::azure::types::AzureError;
use crate::secret::Secret;

const DEFAULT_IMDS: &str = "http://169.254.169.254/metadata/identity/oauth2/token";
const IMDS_API_VERSION: &str = "2018-02-01";
const APP_SERVICE_API_VERSION: &str = "2019-08-01";
const ARC_API_VERSION: &str = "2019-11-01";
/// Where the Arc agent writes its challenge key files (Linux); a challenge naming any other
/// file is refused, so a rogue local endpoint cannot make us read and send an arbitrary file.
const ARC_KEY_DIR: &str = "/var/opt/azcmagent/tokens";
/// The agent's key files are small; a larger one is not one of them.
const ARC_KEY_MAX_BYTES: u64 = 4096;

enum Source {
    AppService {
        endpoint: String,
        header: Secret,
    },
    Arc {
        endpoint: String,
        /// Directory the challenge's key file must be in (`ARC_KEY_DIR`; tests use another).
        key_dir: std::path::PathBuf,
    },
    Imds {
        endpoint: String,
    },
    Broken(String),
}

pub(crate) struct ManagedIdentityCredential {
    source: Source,
    /// User-assigned identity (`AZURE_CLIENT_ID`); `None` = system-assigned.
    client_id: Option<String>,
    http: Arc<HttpClient>,
    /// IMDS answered once: later requests get normal timeouts and retries.
    imds_seen: AtomicBool,
}

/// The source `make` builds from `value` as a normalised URL (a fragment is dropped), else a
/// broken one with the reason the credential reports when asked for a token.
fn checked_endpoint(var: &str, value: &str, make: impl FnOnce(String) -> Source) -> Source {
    match Url::parse(value) {
        Ok(url) => make(url.to_string()),
        Err(e) => Source::Broken(format!("{var}: {e}")),
    }
}

/// The IMDS token URL. Test builds (the `test-hooks` feature) let `AZURE_IMDS_ENDPOINT`
/// point it at a local fake; the shipped binary always uses the real address.
fn imds_endpoint(env: &EnvSnapshot) -> (&'static str, &str) {
    #[cfg(any(test, feature = "test-hooks"))]
    if let Some(v) = env_get(env, "AZURE_IMDS_ENDPOINT") {
        return ("AZURE_IMDS_ENDPOINT", v);
    }
    #[cfg(not(any(test, feature = "test-hooks")))]
    let _ = env;
    ("IMDS", DEFAULT_IMDS)
}

impl ManagedIdentityCredential {
    pub(crate) fn from_env(env: &EnvSnapshot, http: Arc<HttpClient>) -> Self {
        Self::from_env_with_arc_dir(env, http, std::path::Path::new(ARC_KEY_DIR))
    }

    fn from_env_with_arc_dir(
        env: &EnvSnapshot,
        http: Arc<HttpClient>,
        arc_key_dir: &std::path::Path,
    ) -> Self {
        // The Azure SDKs' detection order.
        let source = match (
            env_get(env, "IDENTITY_ENDPOINT"),
            env_get(env, "IDENTITY_HEADER"),
            env_get(env, "IMDS_ENDPOINT"),
        ) {
            (Some(_), Some(_), _) if env_get(env, "IDENTITY_SERVER_THUMBPRINT").is_some() => {
                Source::Broken(
                    "Service Fabric managed identity (IDENTITY_SERVER_THUMBPRINT is set) is not \
                     supported; use a client secret, a certificate or workload identity"
                        .into(),
                )
            }
            (Some(endpoint), Some(header), _) => {
                checked_endpoint("IDENTITY_ENDPOINT", endpoint, |endpoint| {
                    let header = Secret::new(header);
                    Source::AppService { endpoint, header }
                })
            }
            (Some(_), None, Some(_)) if env_get(env, "AZURE_CLIENT_ID").is_some() => {
                Source::Broken(
                    "Azure Arc managed identity supports only the system-assigned identity; \
                     unset AZURE_CLIENT_ID"
                        .into(),
                )
            }
            (Some(endpoint), None, Some(_)) => {
                checked_endpoint("IDENTITY_ENDPOINT", endpoint, |endpoint| {
                    let key_dir = arc_key_dir.to_path_buf();
                    Source::Arc { endpoint, key_dir }
                })
            }
            _ => {
                let (var, value) = imds_endpoint(env);
                checked_endpoint(var, value, |endpoint| Source::Imds { endpoint })
            }
        };
        ManagedIdentityCredential {
            source,
            client_id: env_get(env, "AZURE_CLIENT_ID").map(str::to_string),
            http,
            imds_seen: AtomicBool::new(false),
        }
    }

    /// A token request to `endpoint` with `header` (the endpoint's proof of a local caller).
    fn request(
        &self,
        endpoint: &str,
        api_version: &str,
        scope: &str,
        header: (&str, &str),
    ) -> HttpRequest {
        let sep = if endpoint.contains('?') { '&' } else { '?' };
        let mut url = format!(
            "{endpoint}{sep}api-version={api_version}&resource={}",
            percent_encode(&resource_from_scope(scope))
        );
        if let Some(id) = &self.client_id {
            url.push_str("&client_id=");
            url.push_str(&percent_encode(id));
        }
        HttpRequest::new("GET", url)
            .header(header.0, header.1)
            .header("Accept", "application/json")
    }

    /// The token in a successful answer, whichever endpoint gave it.
    fn token_from(&self, body: &[u8]) -> Result<AccessToken, CredentialError> {
        parse_token_response(body, self.http.clock().now()).map_err(|m| {
            CredentialError::Failed(AzureError::Decode(format!("managed identity: {m}")))
        })
    }

    /// Azure Arc: the first request is answered 401 with `WWW-Authenticate: Basic realm=<key
    /// file>`; the file's content, sent as `Authorization: Basic <content>`, gets the token.
    fn fetch_arc(
        &self,
        http: &HttpClient,
        endpoint: &str,
        key_dir: &std::path::Path,
        scope: &str,
    ) -> Result<AccessToken, CredentialError> {
        let request = || self.request(endpoint, ARC_API_VERSION, scope, ("Metadata", "true"));
        let challenge = http.send(&request()).map_err(CredentialError::Failed)?;
        if challenge.status != 401 {
            return Err(failed(format!(
                "the Azure Arc identity endpoint answered HTTP {} instead of a challenge",
                challenge.status
            )));
        }
        let realm = challenge
            .header("WWW-Authenticate")
            .and_then(|v| v.trim().strip_prefix("Basic realm="))
            .map(|p| p.trim().trim_matches('"'))
            .ok_or_else(|| failed("the Azure Arc challenge names no key file".into()))?;
        let key = read_arc_key(std::path::Path::new(realm), key_dir)?;
        let resp = http
            .send(&request().header("Authorization", format!("Basic {}", key.expose())))
            .map_err(CredentialError::Failed)?;
        if !resp.is_success() {
            return Err(failed(format!(
                "the Azure Arc identity endpoint refused the token request: {}{}",
                describe_token_error(resp.status, &resp.body),
                resp.refused_wait_note("the identity endpoint")
            )));
        }
        self.token_from(&resp.body)
    }
}

impl HttpCredential for ManagedIdentityCredential {
    fn credential_name(&self) -> &'static str {
        match self.source {
            Source::AppService { .. } => "ManagedIdentityCredential (App Service)",
            Source::Arc { .. } => "ManagedIdentityCredential (Azure Arc)",
            _ => "ManagedIdentityCredential (IMDS)",
        }
    }

    fn http(&self) -> &HttpClient {
        &self.http
    }

    fn fetch_over(
        &self,
        http: &HttpClient,
        _tenant: Option<&str>,
        scope: &str,
    ) -> Result<AccessToken, CredentialError> {
        let req = match &self.source {
            Source::Broken(m) => {
                return Err(CredentialError::Failed(AzureError::Config(m.clone())));
            }
            Source::AppService { endpoint, header } => {
                let header = ("X-IDENTITY-HEADER", header.expose());
                self.request(endpoint, APP_SERVICE_API_VERSION, scope, header)
            }
            Source::Arc { endpoint, key_dir } => {
                return self.fetch_arc(http, endpoint, key_dir, scope);
            }
            Source::Imds { endpoint } => {
                let mut req = self.request(endpoint, IMDS_API_VERSION, scope, ("Metadata", "true"));
                req.probe = !self.imds_seen.load(Ordering::Relaxed);
                req
            }
        };
        let is_imds = matches!(self.source, Source::Imds { .. });
        let resp = match http.send(&req) {
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
            return Err(failed(format!(
                "managed identity endpoint refused the token request: {reason}{}",
                resp.refused_wait_note("the identity endpoint")
            )));
        }
        self.token_from(&resp.body)
    }
}

/// Reads the Arc agent's challenge key, refusing anything but a small `.key` file directly in
/// `key_dir` (the path comes from an HTTP answer).
fn read_arc_key(
    path: &std::path::Path,
    key_dir: &std::path::Path,
) -> Result<Secret, CredentialError> {
    let shown = path.display();
    let in_dir = path.parent() == Some(key_dir)
        && path.extension().is_some_and(|e| e == "key")
        && !path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir));
    if !in_dir {
        return Err(failed(format!(
            "the Azure Arc challenge names {shown}, not a .key file in {}",
            key_dir.display()
        )));
    }
    let meta =
        std::fs::metadata(path).map_err(|e| failed(format!("Azure Arc key file {shown}: {e}")))?;
    if !meta.is_file() || meta.len() > ARC_KEY_MAX_BYTES {
        return Err(failed(format!(
            "Azure Arc key file {shown} is not a file of at most {ARC_KEY_MAX_BYTES} bytes"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        failed(format!("Azure Arc key file {shown} cannot be read: {e} (the plugin's user must be in the himds group)"))
    })?;
    Ok(Secret::new(text.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::auth::tests::env_of;
    use crate::azure::auth::Credential;
    use crate::azure::deadline::Deadline;
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
        fn execute(
            &self,
            req: &HttpRequest,
            timeout: Duration,
        ) -> Result<HttpResponse, TransportError> {
            self.seen
                .lock()
                .unwrap()
                .push((req.url.clone(), req.headers.clone(), req.probe));
            self.inner.execute(req, timeout)
        }
    }

    fn setup(
        env: &[(&str, &str)],
        outcomes: Vec<Result<HttpResponse, TransportError>>,
    ) -> (ManagedIdentityCredential, Arc<Recorder>) {
        setup_with_arc_dir(env, outcomes, std::path::Path::new(ARC_KEY_DIR))
    }

    fn setup_with_arc_dir(
        env: &[(&str, &str)],
        outcomes: Vec<Result<HttpResponse, TransportError>>,
        arc_key_dir: &std::path::Path,
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
        (
            ManagedIdentityCredential::from_env_with_arc_dir(&env_of(env), http, arc_key_dir),
            rec,
        )
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

    /// An Azure Arc environment (plus `extra`) whose challenge key files must be in `dir`.
    fn arc_setup(
        dir: &std::path::Path,
        extra: &[(&str, &str)],
        outcomes: Vec<Result<HttpResponse, TransportError>>,
    ) -> (ManagedIdentityCredential, Arc<Recorder>) {
        let mut env = vec![
            (
                "IDENTITY_ENDPOINT",
                "http://localhost:40342/metadata/identity/oauth2/token",
            ),
            ("IMDS_ENDPOINT", "http://localhost:40342"),
        ];
        env.extend_from_slice(extra);
        setup_with_arc_dir(&env, outcomes, dir)
    }

    fn challenge(realm: &str) -> Result<HttpResponse, TransportError> {
        Ok(resp(
            401,
            &[("WWW-Authenticate", &format!("Basic realm={realm}"))],
        ))
    }

    #[test]
    fn azure_arc_answers_the_challenge_with_the_key_file() {
        let dir = std::env::temp_dir().join(format!("azkv-arc-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("abc.key");
        std::fs::write(&key, "arc-secret\n").unwrap();
        let (c, rec) = arc_setup(
            &dir,
            &[],
            vec![
                challenge(key.to_str().unwrap()),
                token_body(r#"{"access_token":"a","expires_on":"1700003600","resource":"r"}"#),
            ],
        );
        assert_eq!(c.name(), "ManagedIdentityCredential (Azure Arc)");
        let t = c.fetch(None, "https://vault.azure.net/.default").unwrap();
        assert_eq!(t.token.expose(), "a");
        let seen = rec.seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(
            seen[0].0,
            "http://localhost:40342/metadata/identity/oauth2/token?api-version=2019-11-01&resource=https%3A%2F%2Fvault.azure.net"
        );
        assert!(seen[0]
            .1
            .contains(&("Metadata".to_string(), "true".to_string())));
        assert!(!seen[0].1.iter().any(|(k, _)| k == "Authorization"));
        assert!(seen[1]
            .1
            .contains(&("Authorization".to_string(), "Basic arc-secret".to_string())));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn azure_arc_refuses_key_files_outside_the_agent_directory() {
        let dir = std::env::temp_dir().join(format!("azkv-arc-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("big.key"), vec![b'x'; 5000]).unwrap();
        for realm in [
            "/etc/passwd".to_string(),
            format!("{}/../x.key", dir.display()),
            format!("{}/sub/x.key", dir.display()),
            format!("{}/notakey.txt", dir.display()),
            format!("{}/big.key", dir.display()),
            format!("{}/missing.key", dir.display()),
        ] {
            let (c, rec) = arc_setup(&dir, &[], vec![challenge(&realm)]);
            let e = c
                .fetch(None, "https://vault.azure.net/.default")
                .unwrap_err();
            assert!(matches!(e, CredentialError::Failed(_)), "{realm}");
            // Nothing was sent back.
            assert_eq!(rec.seen.lock().unwrap().len(), 1, "{realm}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn arc_user_assigned_and_service_fabric_are_clear_errors() {
        let dir = std::env::temp_dir();
        let (c, _) = arc_setup(&dir, &[("AZURE_CLIENT_ID", "uai")], vec![]);
        let e = format!(
            "{:?}",
            c.fetch(None, "https://vault.azure.net/.default")
                .unwrap_err()
        );
        assert!(e.contains("system-assigned"), "{e}");
        let (c, _) = setup(
            &[
                (
                    "IDENTITY_ENDPOINT",
                    "https://127.0.0.1:2377/metadata/identity/oauth2/token",
                ),
                ("IDENTITY_HEADER", "h"),
                ("IDENTITY_SERVER_THUMBPRINT", "abc"),
            ],
            vec![],
        );
        let e = format!(
            "{:?}",
            c.fetch(None, "https://vault.azure.net/.default")
                .unwrap_err()
        );
        assert!(e.contains("Service Fabric"), "{e}");
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

    #[test]
    fn fetch_within_cuts_identity_requests_to_the_deadline() {
        use crate::azure::http::tests::{Answer, Timed};
        let answer: Answer =
            || token_body(r#"{"access_token":"a","expires_on":"1700003600","resource":"r"}"#);
        for env in [
            vec![("AZURE_IMDS_ENDPOINT", "http://127.0.0.1:9/t")],
            vec![
                ("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token"),
                ("IDENTITY_HEADER", "h"),
            ],
        ] {
            let clock =
                ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
            let transport = Arc::new(Timed::new(&clock, vec![(Duration::from_secs(1), answer)]));
            let http = Arc::new(HttpClient::new(
                transport.clone(),
                Arc::new(clock.clone()),
                RetryPolicy::default(),
            ));
            let c = ManagedIdentityCredential::from_env(&env_of(&env), http);
            let start = crate::clock::Clock::now(&clock);
            let deadline = Deadline::after(&clock, Duration::from_secs(3));
            c.fetch_within(None, "s", deadline).unwrap();
            let timeouts: Vec<Duration> = transport
                .attempts_since(start)
                .iter()
                .map(|a| a.2)
                .collect();
            assert_eq!(timeouts, vec![Duration::from_secs(3)], "{env:?}");
        }
    }
}
