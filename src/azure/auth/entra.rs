//! Microsoft Entra ID client-credentials grant: `POST {authority}{tenant}/oauth2/v2.0/token`,
//! form-encoded, with a client secret, a certificate assertion or a federated (workload
//! identity) token as the client's proof.

use std::path::PathBuf;
use std::sync::Arc;

use super::certificate::CertificateFile;
use super::credential::{
    describe_token_error, failed, parse_token_response, validate_tenant, AccessToken, Credential,
    CredentialError, HttpCredential,
};
use crate::azure::deadline::Deadline;
use crate::azure::http::{form_encode, HttpClient, HttpRequest};
use crate::azure::settings::{env_get, EnvSnapshot};
use crate::azure::types::AzureError;
use crate::secret::Secret;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How the client proves who it is.
pub(super) enum Proof {
    Secret(Secret),
    /// Re-read for every request: kubelet rotates the projected token.
    FederatedTokenFile(PathBuf),
    Certificate(CertificateFile),
}

/// An Entra ID application (tenant, client id, proof) asking for tokens.
pub(crate) struct EntraCredential {
    name: &'static str,
    tenant: String,
    client_id: String,
    pub(super) proof: Proof,
    authority: String,
    http: Arc<HttpClient>,
}

/// Client id + client secret: [`EntraCredential::new`].
pub(crate) type ClientSecretCredential = EntraCredential;

impl EntraCredential {
    /// Client id + client secret; `name` is for logs.
    pub(crate) fn new(
        name: &'static str,
        tenant: &str,
        client_id: &str,
        secret: Secret,
        authority: &str,
        http: Arc<HttpClient>,
    ) -> Result<Self, AzureError> {
        let tenant = validate_tenant(tenant)?;
        if client_id.trim().is_empty() || secret.is_empty() {
            return Err(AzureError::Config(format!(
                "{name}: the client id and secret must not be empty"
            )));
        }
        let proof = Proof::Secret(secret);
        Self::with(name, tenant, client_id.trim(), proof, authority, http)
    }

    pub(super) fn with(
        name: &'static str,
        tenant: &str,
        client_id: &str,
        proof: Proof,
        authority: &str,
        http: Arc<HttpClient>,
    ) -> Result<Self, AzureError> {
        Ok(EntraCredential {
            name,
            tenant: validate_tenant(tenant)?.to_string(),
            client_id: client_id.to_string(),
            proof,
            authority: authority.to_string(),
            http,
        })
    }

    /// Requests a token. `proof` receives the token endpoint URL (the assertion audience) and
    /// returns the secret or the assertion.
    fn request(
        &self,
        http: &HttpClient,
        tenant: &str,
        scope: &str,
        proof: impl FnOnce(&str) -> Result<Secret, AzureError>,
    ) -> Result<AccessToken, CredentialError> {
        let tenant = validate_tenant(tenant).map_err(CredentialError::Failed)?;
        let endpoint = format!("{}{tenant}/oauth2/v2.0/token", self.authority);
        let proof = proof(&endpoint).map_err(CredentialError::Failed)?;
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("scope", scope),
            ("client_id", &self.client_id),
        ];
        match self.proof {
            Proof::Secret(_) => form.push(("client_secret", proof.expose())),
            _ => form.extend([
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", proof.expose()),
            ]),
        }
        let req = HttpRequest::new("POST", endpoint.clone())
            .header("Accept", "application/json")
            .form_body(form_encode(&form));
        let resp = http.send(&req).map_err(CredentialError::Failed)?;
        if !resp.is_success() {
            return Err(failed(format!(
                "token request to {endpoint} was refused: {}{}",
                describe_token_error(resp.status, &resp.body),
                resp.refused_wait_note("the token endpoint")
            )));
        }
        parse_token_response(&resp.body, http.clock().now())
            .map_err(|m| CredentialError::Failed(AzureError::Decode(format!("{endpoint}: {m}"))))
    }
}

impl HttpCredential for EntraCredential {
    fn credential_name(&self) -> &'static str {
        self.name
    }

    fn http(&self) -> &HttpClient {
        &self.http
    }

    fn fetch_over(
        &self,
        http: &HttpClient,
        tenant: Option<&str>,
        scope: &str,
    ) -> Result<AccessToken, CredentialError> {
        let tenant = tenant.unwrap_or(&self.tenant);
        match &self.proof {
            Proof::Secret(secret) => self.request(http, tenant, scope, |_| Ok(secret.clone())),
            Proof::FederatedTokenFile(path) => {
                let raw = std::fs::read_to_string(path).map_err(|e| {
                    failed(format!(
                        "AZURE_FEDERATED_TOKEN_FILE {path:?} cannot be read: {e}"
                    ))
                })?;
                let assertion = Secret::new(raw.trim());
                if assertion.is_empty() {
                    return Err(failed(format!(
                        "AZURE_FEDERATED_TOKEN_FILE {path:?} is empty"
                    )));
                }
                self.request(http, tenant, scope, |_| Ok(assertion))
            }
            Proof::Certificate(file) => {
                let cert = file.certificate().map_err(CredentialError::Failed)?;
                let now = http.clock().now();
                self.request(http, tenant, scope, |endpoint| {
                    cert.assertion(&self.client_id, endpoint, now, file.send_chain)
                })
            }
        }
    }
}

/// A credential the environment configures, or why it cannot be used: `Unavailable` (not
/// configured: the chain moves on) or `Failed` (configured wrongly: the chain stops).
pub(super) struct FromEnv {
    name: &'static str,
    setup: Result<EntraCredential, CredentialError>,
}

impl Credential for FromEnv {
    fn name(&self) -> &'static str {
        self.name
    }

    fn fetch(&self, tenant: Option<&str>, scope: &str) -> Result<AccessToken, CredentialError> {
        (self.setup.as_ref().map_err(Clone::clone)?).fetch(tenant, scope)
    }

    fn fetch_within(
        &self,
        tenant: Option<&str>,
        scope: &str,
        deadline: Deadline,
    ) -> Result<AccessToken, CredentialError> {
        (self.setup.as_ref().map_err(Clone::clone)?).fetch_within(tenant, scope, deadline)
    }
}

/// EnvironmentCredential: `AZURE_TENANT_ID` + `AZURE_CLIENT_ID` + (`AZURE_CLIENT_SECRET` or
/// `AZURE_CLIENT_CERTIFICATE_PATH` [+ `AZURE_CLIENT_CERTIFICATE_PASSWORD`]).
pub(super) fn environment(env: &EnvSnapshot, authority: &str, http: Arc<HttpClient>) -> FromEnv {
    let tenant = env_get(env, "AZURE_TENANT_ID");
    let client = env_get(env, "AZURE_CLIENT_ID");
    let secret = env_get(env, "AZURE_CLIENT_SECRET");
    let cert = env_get(env, "AZURE_CLIENT_CERTIFICATE_PATH");
    let setup = match (tenant, client, secret, cert) {
        (Some(t), Some(c), Some(s), _) => {
            let name = "EnvironmentCredential (client secret)";
            EntraCredential::new(name, t, c, Secret::new(s), authority, http)
                .map_err(CredentialError::Failed)
        }
        // One credential for the process: it keeps the parsed certificate per file version.
        (Some(t), Some(c), None, Some(path)) => {
            let file = CertificateFile {
                path: PathBuf::from(path),
                password: env_get(env, "AZURE_CLIENT_CERTIFICATE_PASSWORD").map(Secret::new),
                send_chain: env_get(env, "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN")
                    .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true")),
                parsed: Default::default(),
            };
            let name = "EnvironmentCredential (client certificate)";
            EntraCredential::with(name, t, c, Proof::Certificate(file), authority, http)
                .map_err(CredentialError::Failed)
        }
        (Some(_), Some(_), None, None) => Err(CredentialError::Unavailable(
            "AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH is not set".into(),
        )),
        _ => Err(CredentialError::Unavailable(
            "AZURE_TENANT_ID and AZURE_CLIENT_ID are not both set".into(),
        )),
    };
    FromEnv {
        name: "EnvironmentCredential",
        setup,
    }
}

/// WorkloadIdentityCredential (AKS): `AZURE_FEDERATED_TOKEN_FILE` + `AZURE_CLIENT_ID` +
/// `AZURE_TENANT_ID`.
pub(super) fn workload_identity(
    env: &EnvSnapshot,
    authority: &str,
    http: Arc<HttpClient>,
) -> FromEnv {
    let name = "WorkloadIdentityCredential";
    let vars = [
        "AZURE_FEDERATED_TOKEN_FILE",
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
    ]
    .map(|v| (v, env_get(env, v)));
    let setup = match vars {
        [(_, Some(file)), (_, Some(client)), (_, Some(tenant))] => {
            let proof = Proof::FederatedTokenFile(PathBuf::from(file));
            EntraCredential::with(name, tenant, client, proof, authority, http)
                .map_err(CredentialError::Failed)
        }
        _ => {
            let missing: Vec<&str> = vars.iter().filter(|v| v.1.is_none()).map(|v| v.0).collect();
            let missing = missing.join(", ");
            Err(CredentialError::Unavailable(format!("{missing} not set")))
        }
    };
    FromEnv { name, setup }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::auth::tests::env_of;
    use crate::azure::http::tests::{resp, Scripted};
    use crate::azure::http::{HttpRequest, HttpResponse};
    use crate::azure::http::{RetryPolicy, Transport, TransportError};
    use crate::clock::ManualClock;
    use std::sync::Mutex;
    use std::time::{Duration, SystemTime};

    /// Records request method, URL and body; answers from a script.
    struct Recorder {
        inner: Scripted,
        seen: Mutex<Vec<(String, String, String)>>,
    }

    impl Transport for Recorder {
        fn execute(
            &self,
            req: &HttpRequest,
            timeout: Duration,
        ) -> Result<HttpResponse, TransportError> {
            self.seen.lock().unwrap().push((
                req.method.to_string(),
                req.url.clone(),
                String::from_utf8_lossy(req.body.as_deref().unwrap_or_default()).into_owned(),
            ));
            self.inner.execute(req, timeout)
        }
    }

    fn scripted(outcomes: Vec<HttpResponse>) -> (Arc<HttpClient>, Arc<Recorder>) {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let rec = Arc::new(Recorder {
            inner: Scripted::new(outcomes.into_iter().map(Ok).collect()),
            seen: Mutex::new(Vec::new()),
        });
        (
            Arc::new(HttpClient::new(
                rec.clone(),
                Arc::new(clock),
                RetryPolicy::default(),
            )),
            rec,
        )
    }

    fn ok_token() -> HttpResponse {
        let mut r = resp(200, &[]);
        r.body = br#"{"token_type":"Bearer","expires_in":3599,"access_token":"at-1"}"#.to_vec();
        r
    }

    #[test]
    fn client_secret_form_and_endpoint() {
        let (http, rec) = scripted(vec![ok_token()]);
        let c = ClientSecretCredential::new(
            "x",
            "tenant-1.example",
            "client-1",
            Secret::new("s3cr&t"),
            "https://login.example/",
            http,
        )
        .unwrap();
        let t = c.fetch(None, "https://vault.azure.net/.default").unwrap();
        assert_eq!(t.token.expose(), "at-1");
        let seen = rec.seen.lock().unwrap();
        assert_eq!(seen[0].0, "POST");
        assert_eq!(
            seen[0].1,
            "https://login.example/tenant-1.example/oauth2/v2.0/token"
        );
        assert_eq!(
            seen[0].2,
            "grant_type=client_credentials&scope=https%3A%2F%2Fvault.azure.net%2F.default&client_id=client-1&client_secret=s3cr%26t"
        );
    }

    #[test]
    fn challenge_tenant_overrides_and_refusals_are_readable() {
        let mut refused = resp(401, &[]);
        refused.body = br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}"#.to_vec();
        let (http, rec) = scripted(vec![refused]);
        let c = ClientSecretCredential::new(
            "x",
            "t1",
            "c",
            Secret::new("pw-value"),
            "https://l/",
            http,
        )
        .unwrap();
        let e = c.fetch(Some("t2"), "s").unwrap_err();
        assert_eq!(
            rec.seen.lock().unwrap()[0].1,
            "https://l/t2/oauth2/v2.0/token"
        );
        let msg = e.to_string();
        assert!(msg.contains("AADSTS7000215"), "{msg}");
        assert!(!msg.contains("pw-value"));
        // A tenant that would escape the path is refused before any request.
        let (http, rec) = scripted(vec![]);
        let c = ClientSecretCredential::new("x", "t1", "c", Secret::new("pw"), "https://l/", http)
            .unwrap();
        assert!(matches!(
            c.fetch(Some("../x"), "s"),
            Err(CredentialError::Failed(AzureError::Config(_)))
        ));
        assert!(rec.seen.lock().unwrap().is_empty());
    }

    #[test]
    fn environment_credential_availability() {
        let (http, _) = scripted(vec![]);
        let mut env = EnvSnapshot::new();
        let c = environment(&env, "https://l/", http.clone());
        assert!(matches!(
            c.fetch(None, "s"),
            Err(CredentialError::Unavailable(_))
        ));
        env.insert("AZURE_TENANT_ID".into(), "t".into());
        env.insert("AZURE_CLIENT_ID".into(), "c".into());
        let c = environment(&env, "https://l/", http.clone());
        assert!(
            matches!(c.fetch(None, "s"), Err(CredentialError::Unavailable(m)) if m.contains("AZURE_CLIENT_SECRET"))
        );
        env.insert(
            "AZURE_CLIENT_CERTIFICATE_PATH".into(),
            "/nonexistent/cert.pem".into(),
        );
        let c = environment(&env, "https://l/", http.clone());
        assert!(
            matches!(c.fetch(None, "s"), Err(CredentialError::Failed(AzureError::Auth(m))) if m.contains("cannot be read"))
        );
        env.insert("AZURE_TENANT_ID".into(), "bad/tenant".into());
        env.insert("AZURE_CLIENT_SECRET".into(), "x".into());
        let c = environment(&env, "https://l/", http);
        assert!(matches!(
            c.fetch(None, "s"),
            Err(CredentialError::Failed(AzureError::Config(_)))
        ));
    }

    #[test]
    fn workload_identity_rereads_the_token_file() {
        let dir = std::env::temp_dir().join(format!("azkv-wi-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "federated-1\n").unwrap();
        let (http, rec) = scripted(vec![ok_token(), ok_token()]);
        let mut env = EnvSnapshot::new();
        env.insert("AZURE_TENANT_ID".into(), "t".into());
        env.insert("AZURE_CLIENT_ID".into(), "c".into());
        env.insert(
            "AZURE_FEDERATED_TOKEN_FILE".into(),
            file.display().to_string(),
        );
        let c = workload_identity(&env, "https://l/", http);
        c.fetch(None, "s").unwrap();
        std::fs::write(&file, "federated-2").unwrap();
        c.fetch(None, "s").unwrap();
        let seen = rec.seen.lock().unwrap();
        assert!(
            seen[0].2.ends_with("client_assertion=federated-1"),
            "{}",
            seen[0].2
        );
        assert!(seen[1].2.ends_with("client_assertion=federated-2"));
        assert!(seen[0].2.contains("client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"));
        std::fs::remove_file(&file).unwrap();
        let e = c.fetch(None, "s").unwrap_err();
        assert!(e.to_string().contains("cannot be read"));
        std::fs::remove_dir_all(&dir).unwrap();

        let c = workload_identity(&EnvSnapshot::new(), "https://l/", http_only());
        assert!(
            matches!(c.fetch(None, "s"), Err(CredentialError::Unavailable(m)) if m.contains("AZURE_FEDERATED_TOKEN_FILE"))
        );
    }

    fn http_only() -> Arc<HttpClient> {
        scripted(vec![]).0
    }

    #[test]
    fn the_environment_certificate_is_parsed_once_across_token_requests() {
        use crate::azure::auth::certificate::PARSED_ON_THIS_THREAD;
        use crate::azure::http::tests::{Answer, Timed};
        let dir = std::env::temp_dir().join(format!("azkv-once-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_pem, key_pem, _) = super::super::certificate::tests::rsa_cert_pem();
        let cert = dir.join("client.pem");
        std::fs::write(&cert, format!("{cert_pem}\n{key_pem}")).unwrap();
        let env = env_of(&[
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_CLIENT_CERTIFICATE_PATH", &cert.display().to_string()),
        ]);
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let answer: Answer = || Ok(ok_token());
        let transport = Arc::new(Timed::new(&clock, vec![(Duration::from_millis(1), answer)]));
        let http = Arc::new(HttpClient::new(
            transport,
            Arc::new(clock.clone()),
            RetryPolicy::default(),
        ));
        let cred = environment(&env, "https://l/", http);
        let before = PARSED_ON_THIS_THREAD.with(|n| n.get());
        for _ in 0..3 {
            let deadline = crate::azure::deadline::Deadline::after(&clock, Duration::from_secs(25));
            cred.fetch_within(None, "s", deadline).unwrap();
        }
        assert_eq!(
            PARSED_ON_THIS_THREAD.with(|n| n.get()) - before,
            1,
            "the certificate file was decrypted again for an unchanged file"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fetch_within_cuts_every_token_request_to_the_deadline() {
        use crate::azure::http::tests::{Answer, Timed};
        let dir = std::env::temp_dir().join(format!("azkv-dl-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_pem, key_pem, _) = super::super::certificate::tests::rsa_cert_pem();
        let cert = dir.join("client.pem");
        std::fs::write(&cert, format!("{cert_pem}\n{key_pem}")).unwrap();
        let federated = dir.join("token");
        std::fs::write(&federated, "federated").unwrap();
        let base = [("AZURE_TENANT_ID", "t"), ("AZURE_CLIENT_ID", "c")];
        let answer: Answer = || Ok(ok_token());
        type Make = Box<dyn Fn(Arc<HttpClient>) -> Box<dyn Credential>>;
        let cert_path = cert.display().to_string();
        let token_path = federated.display().to_string();
        let credentials: Vec<(&str, Make)> = vec![
            (
                "client secret",
                Box::new(|http| {
                    Box::new(
                        ClientSecretCredential::new(
                            "x",
                            "t",
                            "c",
                            Secret::new("s"),
                            "https://l/",
                            http,
                        )
                        .unwrap(),
                    )
                }),
            ),
            (
                "environment secret",
                Box::new(move |http| {
                    let env = env_of(&[base[0], base[1], ("AZURE_CLIENT_SECRET", "s")]);
                    Box::new(environment(&env, "https://l/", http))
                }),
            ),
            (
                "environment certificate",
                Box::new(move |http| {
                    let env = env_of(&[
                        base[0],
                        base[1],
                        ("AZURE_CLIENT_CERTIFICATE_PATH", cert_path.as_str()),
                    ]);
                    Box::new(environment(&env, "https://l/", http))
                }),
            ),
            (
                "workload identity",
                Box::new(move |http| {
                    let env = env_of(&[
                        base[0],
                        base[1],
                        ("AZURE_FEDERATED_TOKEN_FILE", token_path.as_str()),
                    ]);
                    Box::new(workload_identity(&env, "https://l/", http))
                }),
            ),
        ];
        for (what, make) in credentials {
            let clock =
                ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
            let transport = Arc::new(Timed::new(&clock, vec![(Duration::from_secs(1), answer)]));
            let http = Arc::new(HttpClient::new(
                transport.clone(),
                Arc::new(clock.clone()),
                RetryPolicy::default(),
            ));
            let cred = make(http);
            let start = crate::clock::Clock::now(&clock);
            let deadline = crate::azure::deadline::Deadline::after(&clock, Duration::from_secs(3));
            cred.fetch_within(None, "s", deadline).unwrap();
            // Without a deadline, a request gets a whole attempt.
            cred.fetch(None, "s").unwrap();
            let attempts = transport.attempts_since(start);
            let timeouts: Vec<Duration> = attempts.iter().map(|a| a.2).collect();
            assert_eq!(
                timeouts,
                vec![Duration::from_secs(3), Duration::from_secs(12)],
                "{what}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
