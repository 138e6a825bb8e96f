//! Bounded fuzz/property tests of everything the Azure layer reads from the network:
//! `Retry-After` values, `WWW-Authenticate` challenges, token responses and errors, the Key
//! Vault wire types, and the REST client end to end over a transport that answers at random;
//! and of the client certificate files it reads from disk (PKCS#12, encrypted PKCS#8).
//! Invariants: never a panic; bounded retries and waits; a token only ever goes to the vault, a
//! client secret only to the authority; no secret or token in any error; no file makes the
//! certificate parser spin past its key-derivation caps.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::auth::{
    describe_token_error, parse_token_response, validate_tenant, ClientSecretCredential, TokenCache,
};
use super::challenge::{decide, vault_in_resource_domain, AllowedTenants, Challenge, Decision};
use super::http::{
    parse_retry_after, retry_after_hint, HttpClient, HttpRequest, HttpResponse, RetryPolicy,
    Transport, TransportError, Url,
};
use super::keyvault::{decode_signature, KeyVaultClient, VaultEndpoint};
use super::types::{
    parse_kid, CreateKeyParams, JsonWebKey, KeyAttributes, KeyBundle, KeyItem, KeyVaultApi,
    UpdateKeyParams,
};
use crate::clock::ManualClock;
use crate::fuzz::{json_value, mutate, mutate_bytes, scaled, Rng, EDGE_NUMBER_STRINGS};
use crate::secret::Secret;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

// ---------------------------------------------------------------------------------------------
// Retry-After

fn retry_after_value(rng: &mut Rng) -> String {
    match rng.below(6) {
        0 => EDGE_NUMBER_STRINGS[rng.below(EDGE_NUMBER_STRINGS.len())].to_string(),
        1 => httpdate::fmt_http_date(now() + Duration::from_secs(rng.below(100_000) as u64)),
        2 => mutate(rng, "Wed, 21 Oct 2015 07:28:00 GMT", "0123456789 :,"),
        3 => rng.lossy_string(32),
        4 => format!("{}", rng.next_u64() as f64 / (1u64 << rng.below(64)) as f64),
        _ => (rng.below(20) as u64).to_string(),
    }
}

#[test]
fn retry_after_parsing_is_total() {
    let mut rng = Rng::new(0xA2_0001);
    for _ in 0..scaled(20_000) {
        let v = retry_after_value(&mut rng);
        if let Some(d) = parse_retry_after(&v, now()) {
            assert!(
                d <= Duration::from_secs(1_000_000_000) || v.contains(' '),
                "{v:?}"
            );
        }
        let mut headers = Vec::new();
        for name in ["retry-after", "retry-after-ms", "x-ms-retry-after-ms"] {
            if rng.one_in(2) {
                headers.push((name.to_string(), retry_after_value(&mut rng)));
            }
        }
        let resp = HttpResponse {
            status: 429,
            headers,
            body: Vec::new(),
            refused_wait: None,
        };
        let _ = retry_after_hint(&resp, now());
    }
}

#[test]
fn regression_huge_millisecond_hints_do_not_panic() {
    // Found by `retry_after_parsing_is_total`: `retry-after-ms: 1e300` overflowed
    // `Duration::from_secs_f64`, a panic in the middle of a Key Vault call.
    for v in [
        "1e300",
        "1e20",
        "18446744073709551616000",
        "1.7976931348623157e308",
    ] {
        for name in ["retry-after-ms", "x-ms-retry-after-ms"] {
            let resp = HttpResponse {
                status: 429,
                headers: vec![(name.to_string(), v.to_string())],
                body: Vec::new(),
                refused_wait: None,
            };
            let hint = retry_after_hint(&resp, now()).expect("a huge hint is still a hint");
            assert!(hint > RetryPolicy::default().max_delay);
        }
    }
}

type Answer =
    Box<dyn Fn(&mut Rng, &HttpRequest) -> Result<HttpResponse, TransportError> + Send + Sync>;

/// (url, headers, body) of one request.
type Sent = (String, Vec<(String, String)>, Vec<u8>);

/// Answers every request from a script generator; records what was sent.
struct FuzzTransport {
    rng: Mutex<Rng>,
    answer: Answer,
    sent: Mutex<Vec<Sent>>,
}

impl Transport for FuzzTransport {
    fn execute(
        &self,
        req: &HttpRequest,
        _timeout: Duration,
    ) -> Result<HttpResponse, TransportError> {
        self.sent.lock().unwrap().push((
            req.url.clone(),
            req.headers.clone(),
            req.body.clone().unwrap_or_default(),
        ));
        let mut rng = self.rng.lock().unwrap();
        (self.answer)(&mut rng, req)
    }
}

#[test]
fn retries_stay_bounded_whatever_the_hints() {
    let mut rng = Rng::new(0xA2_0002);
    for i in 0..scaled(3_000) {
        let transport = Arc::new(FuzzTransport {
            rng: Mutex::new(Rng::new(i as u64 + 1)),
            answer: Box::new(|rng, _| {
                if rng.one_in(8) {
                    return Err(TransportError {
                        message: "reset".into(),
                        retryable: !rng.one_in(4),
                    });
                }
                let status = *rng.pick(&[200u16, 408, 429, 500, 502, 503, 504, 400, 401]);
                let mut headers = Vec::new();
                for name in ["retry-after", "retry-after-ms", "x-ms-retry-after-ms"] {
                    if rng.one_in(3) {
                        headers.push((name.to_string(), retry_after_value(rng)));
                    }
                }
                Ok(HttpResponse {
                    status,
                    headers,
                    body: Vec::new(),
                    refused_wait: None,
                })
            }),
            sent: Mutex::new(Vec::new()),
        });
        let clock = ManualClock::new(now());
        let policy = RetryPolicy::default();
        let client = HttpClient::new(transport.clone(), Arc::new(clock.clone()), policy);
        let mut req = HttpRequest::new("GET", "https://v.vault.azure.net/keys");
        req.probe = rng.one_in(10);
        let _ = client.send(&req);
        let calls = transport.sent.lock().unwrap().len();
        assert!(calls <= 1 + policy.max_retries as usize, "{calls} calls");
        // Every wait, whatever the hints, ends within the call's deadline.
        let slept: Duration = clock.slept().iter().sum();
        assert!(slept < policy.budget, "slept {slept:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// WWW-Authenticate

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

fn challenge_seeds() -> Vec<String> {
    vec![
        format!(r#"Bearer authorization="https://login.windows.net/{TENANT}", resource="https://vault.azure.net""#),
        format!("bearer authorization=https://login.microsoftonline.com/{TENANT}/ scope=https://managedhsm.azure.net/.default"),
        r#"Bearer resource="https://localhost:8443", authorization_uri="https://localhost:8443/keys/k/create""#.to_string(),
        r#"Basic realm="x", Bearer authorization="https://login.microsoftonline.com/contoso.onmicrosoft.com", error="in\"valid", claims=eyJ=="#.to_string(),
        r#"Bearer resource="https://vault.azure.net.evil.example", authorization="https://login.microsoftonline.com/common""#.to_string(),
    ]
}

#[test]
fn challenges_never_redirect_a_token_outside_the_vault_domain() {
    let seeds = challenge_seeds();
    let hosts = [
        "myvault.vault.azure.net",
        "myvault.vault.azure.net:443",
        "127.0.0.1:8443",
        "vault.azure.net",
        "x.managedhsm.azure.net",
        "evilvault.azure.net",
    ];
    let scopes = [
        "https://vault.azure.net/.default",
        "https://managedhsm.azure.net/.default",
        "https://vault.azure.cn/.default",
    ];
    let mut rng = Rng::new(0xA2_0003);
    let mut switched = 0;
    for i in 0..scaled(20_000) {
        let header = if i % 4 == 0 {
            rng.lossy_string(80)
        } else {
            let seed = rng.pick(&seeds).clone();
            let donor = rng.pick(&seeds).clone();
            mutate(&mut rng, &seed, &donor)
        };
        let Some(ch) = Challenge::parse_headers([header.as_str(), "Basic realm=\"r\""]) else {
            continue;
        };
        if let Some(t) = ch.tenant() {
            assert!(validate_tenant(&t).is_ok(), "tenant {t:?} from {header:?}");
        }
        let _ = ch.scope();
        let host = *rng.pick(&hosts);
        let current = *rng.pick(&scopes);
        // Half the time only the seeds' tenant is allowed; a followed tenant must be allowed.
        let allowed = if rng.one_in(2) {
            AllowedTenants::new(Some(TENANT), None)
        } else {
            AllowedTenants::default()
        };
        let followed_tenant_is_allowed = |t: &Option<String>| {
            assert!(
                t.as_deref().is_none_or(|t| allowed.check(t).is_ok()),
                "{header:?} followed to tenant {t:?}"
            )
        };
        match decide(&ch, current, host, &allowed) {
            Decision::SwitchScope { scope, tenant } => {
                followed_tenant_is_allowed(&tenant);
                switched += 1;
                assert!(
                    vault_in_resource_domain(host, &scope),
                    "{header:?} → {scope}"
                );
                if let Some(r) = &ch.resource {
                    assert!(vault_in_resource_domain(host, r), "{header:?}");
                }
                assert_eq!(tenant, ch.tenant());
            }
            Decision::RetrySameScope { tenant } => {
                followed_tenant_is_allowed(&tenant);
                assert_eq!(tenant, ch.tenant());
            }
            Decision::Refuse(m) => assert!(!m.is_empty()),
        }
    }
    assert!(switched > 100, "only {switched} scope switches exercised");
}

// ---------------------------------------------------------------------------------------------
// Token responses

const TOKEN: &str = "eyJ0eXAiOiJKV1QifQ.c2VjcmV0LXRva2Vu.c2ln";

fn token_seeds() -> Vec<String> {
    vec![
        format!(
            r#"{{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"{TOKEN}"}}"#
        ),
        format!(
            r#"{{"access_token":"{TOKEN}","expires_on":"1700003600","resource":"https://vault.azure.net","token_type":"Bearer"}}"#
        ),
        format!(
            r#"{{"access_token":"{TOKEN}","expires_in":"86399","expires_on":1700086399,"refresh_in":43199}}"#
        ),
    ]
}

#[test]
fn token_responses_parse_or_fail_without_quoting_the_token() {
    let seeds = token_seeds();
    let mut rng = Rng::new(0xA2_0004);
    let mut ok = 0;
    for i in 0..scaled(20_000) {
        let body = match i % 4 {
            0 => {
                let mut v = json_value(
                    &mut rng,
                    3,
                    &[
                        "access_token",
                        "expires_in",
                        "expires_on",
                        "token_type",
                        TOKEN,
                        "error",
                    ],
                );
                if rng.one_in(2) {
                    if let Some(o) = v.as_object_mut() {
                        o.insert("access_token".into(), Value::String(TOKEN.into()));
                    }
                }
                v.to_string()
            }
            1 => rng.lossy_string(100),
            _ => {
                let seed = rng.pick(&seeds).clone();
                let donor = rng.pick(&seeds).clone();
                mutate(&mut rng, &seed, &donor)
            }
        };
        match parse_token_response(body.as_bytes(), now()).map_err(|e| e.to_string()) {
            Ok(t) => {
                ok += 1;
                assert!(!t.token.is_empty());
                if t.token.expose().contains("c2VjcmV0LXRva2Vu") {
                    assert!(!format!("{t:?}").contains("c2VjcmV0LXRva2Vu"));
                }
                // At most ~31 years ahead (expires_in is clamped to 1e9 s, expires_on to 1e11).
                assert!(t.expires_at <= UNIX_EPOCH + Duration::from_secs(100_000_000_000));
            }
            Err(e) => {
                assert!(!e.contains(TOKEN) && !e.contains("c2VjcmV0LXRva2Vu"), "{e}");
                assert!(!e.is_empty());
            }
        }
        let status = *rng.pick(&[400u16, 401, 403, 500, 503]);
        let d = describe_token_error(status, body.as_bytes());
        assert!(d.starts_with(&format!("HTTP {status}")));
        assert!(d.len() <= 404, "{} bytes", d.len());
    }
    assert!(ok > 1_000, "only {ok} token responses parsed");
}

// ---------------------------------------------------------------------------------------------
// Key Vault wire types

const KEYS: &[&str] = &[
    "kid",
    "kty",
    "key_ops",
    "n",
    "e",
    "crv",
    "x",
    "y",
    "key",
    "attributes",
    "tags",
    "enabled",
    "created",
    "updated",
    "nbf",
    "exp",
    "recoveryLevel",
    "value",
    "nextLink",
    "key_size",
    "https://v.vault.azure.net/keys/k/0123",
    "EC",
    "P-256",
];

#[test]
fn wire_types_decode_or_fail_cleanly() {
    let mut rng = Rng::new(0xA2_0005);
    for _ in 0..scaled(20_000) {
        let v = json_value(&mut rng, 4, KEYS);
        let text = if rng.one_in(3) {
            mutate(&mut rng, &v.to_string(), "{}[]\":,")
        } else {
            v.to_string()
        };
        if let Ok(b) = serde_json::from_str::<KeyBundle>(&text) {
            let _ = (b.name(), b.version());
        }
        if let Ok(i) = serde_json::from_str::<KeyItem>(&text) {
            let _ = (i.name(), i.version());
        }
        let _ = serde_json::from_str::<KeyAttributes>(&text);
        let _ = serde_json::from_str::<JsonWebKey>(&text);
        let _ = serde_json::from_str::<CreateKeyParams>(&text);
        let _ = serde_json::from_str::<UpdateKeyParams>(&text);
        let kid = rng.lossy_string(40);
        if let Some((name, version)) = parse_kid(&kid) {
            assert!(!name.is_empty() && !name.contains('/'));
            assert!(version.is_none_or(|v| !v.is_empty() && !v.contains('/')));
        }
        let _ = decode_signature(&rng.lossy_string(40));
    }
}

// ---------------------------------------------------------------------------------------------
// The REST client end to end

const VAULT: &str = "https://myvault.vault.azure.net";
const AUTHORITY: &str = "https://login.microsoftonline.com/";
const CLIENT_SECRET: &str = "client-secret-value-never-shown";

fn vault_body(rng: &mut Rng, path: &str) -> Vec<u8> {
    if rng.one_in(6) {
        return rng.bytes(60);
    }
    if rng.one_in(6) {
        return json_value(rng, 4, KEYS).to_string().into_bytes();
    }
    let kid = format!("{VAULT}/keys/k/{:032x}", rng.next_u64());
    let bundle = json!({
        "key": {"kid": kid, "kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"},
        "attributes": {"enabled": true, "created": rng.pick(&EDGE_NUMBER_STRINGS).to_string(), "updated": 1},
        "tags": {"a": "b"},
    });
    let v = if path.ends_with("/sign") {
        let sig = *rng.pick(&["AQID", "", "***", "AQ==", " A Q "]);
        json!({"kid": kid, "value": sig})
    } else if path.ends_with("/keys") || path.ends_with("/versions") {
        let next = match rng.below(8) {
            0 => json!(format!("{VAULT}/keys?$skiptoken=abc&api-version=7.6")),
            1 => json!("https://attacker.example/keys?$skiptoken=1"),
            2 => json!("http://myvault.vault.azure.net/keys"),
            3 => json!(rng.lossy_string(20)),
            4 => json!(format!("{VAULT}:8443/keys")),
            _ => Value::Null,
        };
        json!({"value": [{"kid": format!("{VAULT}/keys/k"), "attributes": {}, "tags": {}}], "nextLink": next})
    } else {
        bundle
    };
    let mut text = v.to_string();
    if rng.one_in(5) {
        text = mutate(rng, &text, "{}[]\",:");
    }
    text.into_bytes()
}

fn challenge_header(rng: &mut Rng) -> String {
    let seeds = [
        format!(r#"Bearer authorization="https://login.windows.net/{TENANT}", resource="https://vault.azure.net""#),
        r#"Bearer authorization="https://login.windows.net/common", resource="https://vault.azure.net.evil.example""#.to_string(),
        format!(r#"Bearer authorization="https://login.windows.net/{TENANT}", scope="https://vault.azure.net/.default""#),
        r#"Bearer authorization="https://login.windows.net/contoso.onmicrosoft.com", resource="https://attacker.example""#.to_string(),
        "Bearer".to_string(),
    ];
    let s = rng.pick(&seeds).clone();
    if rng.one_in(3) {
        mutate(rng, &s, "\"=, ")
    } else {
        s
    }
}

#[test]
fn rest_client_survives_any_answer_and_keeps_secrets_in_place() {
    let mut rng = Rng::new(0xA2_0006);
    let issued: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let (mut ok, mut failed) = (0, 0);
    for round in 0..scaled(1_500) as u64 {
        // Only this round's client can hold this round's tokens.
        issued.lock().unwrap().clear();
        let issued_here = Arc::clone(&issued);
        let transport = Arc::new(FuzzTransport {
            rng: Mutex::new(Rng::new(round + 11)),
            answer: Box::new(move |rng, req| {
                if rng.one_in(20) {
                    return Err(TransportError {
                        message: "connection reset".into(),
                        retryable: rng.one_in(2),
                    });
                }
                let url = Url::parse(&req.url).map_err(|m| TransportError {
                    message: m.to_string(),
                    retryable: false,
                })?;
                if req.url.contains("/oauth2/v2.0/token") {
                    let token = format!(
                        "tok{}x{:016x}",
                        issued_here.lock().unwrap().len(),
                        rng.next_u64()
                    );
                    issued_here.lock().unwrap().push(token.clone());
                    let status = if rng.one_in(6) {
                        *rng.pick(&[400u16, 401, 429, 500])
                    } else {
                        200
                    };
                    let mut body = json!({
                        "access_token": token,
                        "expires_in": json_value(rng, 0, &["3599"]),
                        "token_type": "Bearer",
                    })
                    .to_string();
                    if rng.one_in(6) {
                        body = mutate(rng, &body, "{}\":");
                    }
                    return Ok(HttpResponse {
                        status,
                        headers: Vec::new(),
                        body: body.into_bytes(),
                        refused_wait: None,
                    });
                }
                let status = *rng.pick(&[
                    200u16, 200, 200, 200, 401, 401, 403, 404, 409, 429, 500, 503, 400,
                ]);
                let mut headers = Vec::new();
                if status == 401 && !rng.one_in(8) {
                    headers.push(("www-authenticate".to_string(), challenge_header(rng)));
                }
                if rng.one_in(4) {
                    headers.push(("retry-after".to_string(), retry_after_value(rng)));
                }
                Ok(HttpResponse {
                    status,
                    headers,
                    body: vault_body(rng, url.path()),
                    refused_wait: None,
                })
            }),
            sent: Mutex::new(Vec::new()),
        });
        let clock = Arc::new(ManualClock::new(now()));
        let http = Arc::new(HttpClient::new(
            transport.clone(),
            clock.clone(),
            RetryPolicy::default(),
        ));
        let credential = ClientSecretCredential::new(
            "ClientSecretCredential (fuzz)",
            TENANT,
            "client-id",
            Secret::new(CLIENT_SECRET),
            AUTHORITY,
            http.clone(),
        )
        .unwrap();
        let tokens = Arc::new(TokenCache::new(Arc::new(credential), clock.clone()));
        let client = KeyVaultClient::new(
            VaultEndpoint::parse(VAULT).unwrap(),
            "7.6".into(),
            "https://vault.azure.net/.default".into(),
            http,
            tokens,
        );
        for _ in 0..4 {
            let params = CreateKeyParams {
                kty: "EC".into(),
                crv: Some("P-256".into()),
                key_ops: vec!["sign".into()],
                ..Default::default()
            };
            let result: Result<(), String> = match rng.below(7) {
                0 => client.list_keys().map(|_| ()).map_err(|e| e.to_string()),
                1 => client
                    .list_key_versions("k")
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                2 => client
                    .get_key("k", None)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                3 => client
                    .create_key("k", &params)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                4 => client
                    .update_key("k", "v", &UpdateKeyParams::default())
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                5 => client.delete_key("k").map_err(|e| e.to_string()),
                _ => client
                    .sign("k", "v", "ES256", &[7u8; 32])
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            };
            match &result {
                Ok(()) => ok += 1,
                Err(e) => {
                    failed += 1;
                    assert!(!e.is_empty());
                    assert!(!e.contains(CLIENT_SECRET), "client secret in {e}");
                    for t in issued.lock().unwrap().iter() {
                        assert!(!e.contains(t.as_str()), "token in {e}");
                    }
                }
            }
        }
        // Where things were sent: the token only to the vault over https, the secret only to
        // the authority, and nothing anywhere else (a hostile nextLink is not followed).
        for (url, headers, body) in transport.sent.lock().unwrap().iter() {
            let u = Url::parse(url).unwrap();
            let auth = headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("authorization"));
            let has_secret = String::from_utf8_lossy(body).contains(CLIENT_SECRET);
            if u.host == "myvault.vault.azure.net" {
                assert_eq!(u.scheme, "https");
                assert_eq!(u.effective_port(), 443, "{url}");
                assert!(auth && !has_secret, "{url}");
            } else {
                assert_eq!(u.origin(), "https://login.microsoftonline.com", "{url}");
                assert!(!auth, "bearer token sent to {url}");
            }
        }
    }
    assert!(ok > 500 && failed > 500, "ok {ok}, failed {failed}");
}

#[test]
fn regression_malformed_challenge_tenant_is_ignored() {
    // Found by `challenges_never_redirect_a_token_outside_the_vault_domain`: a challenge
    // tenant like `contoso.onmicrosoftgin..c` passed the challenge's check but not the
    // credential's, so every retry failed with "invalid tenant id" instead of using the
    // configured tenant.
    for t in [
        "contoso..com",
        "a.b..c",
        &format!("{}.com", "a".repeat(300)),
    ] {
        let c = Challenge::parse(&format!(
            r#"Bearer authorization="https://login.microsoftonline.com/{t}", resource="https://vault.azure.net""#
        ))
        .unwrap();
        assert_eq!(c.tenant(), None, "{t}");
    }
}

// ---------------------------------------------------------------------------------------------
// Client certificate files

const P12_MODERN: &[u8] = include_bytes!("../../tests/data/pkcs12/modern.p12");
const P12_LEGACY: &[u8] = include_bytes!("../../tests/data/pkcs12/legacy.p12");
const P12_NO_PASSWORD: &[u8] = include_bytes!("../../tests/data/pkcs12/nopass.p12");
const CERT_PEM: &str = include_str!("../../tests/data/pkcs12/cert.pem");
const ENCRYPTED_KEY_PEM: &str = include_str!("../../tests/data/pkcs12/enc-key.pem");

/// Mutations of the real PKCS#12 files and encrypted key (`tests/data/pkcs12`): of the raw
/// bytes (mostly stopped by the DER walk or the MAC), and of the authenticated contents
/// re-sealed with a valid MAC, so that they reach the bag parser, the algorithm parameters
/// (iteration counts included) and the decryption. The PKCS#8 key is fuzzed alone and inside a
/// PEM bundle. Never a panic, never the password in an error, never long.
#[test]
fn certificate_files_never_panic_or_spin() {
    use super::auth::pkcs12::support::{authenticated_safe, pfx_with_mac};
    use super::auth::pkcs12::{decode_pfx, decrypt_pkcs8};
    use super::auth::ClientCertificate;
    use std::time::Instant;

    let files = [
        (P12_MODERN, "pass word ü"),
        (P12_LEGACY, "legacy-pass"),
        (P12_NO_PASSWORD, ""),
    ];
    let safes: Vec<(Vec<u8>, &str)> = files
        .iter()
        .map(|(f, p)| (authenticated_safe(f).unwrap(), *p))
        .collect();
    let encrypted_key = pem::parse(ENCRYPTED_KEY_PEM).unwrap().into_contents();
    let mut rng = Rng::new(0xA2_0007);
    let (mut ok, mut failed, mut slowest) = (0, 0, Duration::ZERO);
    for _ in 0..scaled(250) {
        let (input, password) = match rng.below(8) {
            0 | 1 => {
                let (file, password) = rng.pick(&files);
                (mutate_bytes(&mut rng, file), *password)
            }
            2..=5 => {
                let (safe, password) = rng.pick(&safes);
                (
                    pfx_with_mac(&mutate_bytes(&mut rng, safe), password),
                    *password,
                )
            }
            _ => (mutate_bytes(&mut rng, &encrypted_key), "pem-pass"),
        };
        let started = Instant::now();
        let is_pfx = !input.is_empty() && rng.below(8) != 0;
        let result = if is_pfx {
            decode_pfx(&input, password).map(|_| ())
        } else {
            decrypt_pkcs8(&input, password).map(|_| ())
        }
        .map_err(|e| e.to_string());
        // The whole credential path now and then: PKCS#12 as is, the key in a PEM bundle.
        let whole = if rng.one_in(4) {
            let data = if is_pfx {
                input.clone()
            } else {
                let block = pem::encode(&pem::Pem::new("ENCRYPTED PRIVATE KEY", input.clone()));
                format!("{CERT_PEM}{block}").into_bytes()
            };
            Some(
                ClientCertificate::from_file(&data, Some(password))
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            )
        } else {
            None
        };
        for r in std::iter::once(&result).chain(whole.as_ref()) {
            match r {
                Ok(()) => ok += 1,
                Err(e) => {
                    failed += 1;
                    assert!(!e.is_empty());
                    assert!(
                        password.is_empty() || !e.contains(password),
                        "password in {e}"
                    );
                }
            }
        }
        slowest = slowest.max(started.elapsed());
    }
    // The iteration caps bound each file's work; in practice mutations stay far below them.
    assert!(
        slowest < Duration::from_secs(10),
        "slowest case {slowest:?}"
    );
    assert!(ok > 10 && failed > 100, "ok {ok}, failed {failed}");
}
