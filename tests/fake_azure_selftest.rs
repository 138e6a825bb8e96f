//! Self-test of the fake Azure server (tests/support/fake_azure) over real TLS with a
//! ureq 3 / rustls client.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256, Sha384, Sha512};
use support::fake_azure::*;

const API: &str = "7.6";
const SCOPE: &str = "https://vault.azure.net/.default";

// ---------------------------------------------------------------------------------------
// Client helpers

fn agent_with(
    fake: &FakeAzure,
    provider: Option<Arc<rustls::crypto::CryptoProvider>>,
) -> ureq::Agent {
    let cert = ureq::tls::Certificate::from_pem(fake.ca_pem().as_bytes()).unwrap();
    let mut tls =
        ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::new_with_certs(&[cert]));
    if let Some(p) = provider {
        tls = tls.unversioned_rustls_crypto_provider(p);
    }
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .tls_config(tls.build())
        .build()
        .into()
}

fn agent(fake: &FakeAzure) -> ureq::Agent {
    agent_with(fake, None)
}

struct Resp {
    status: u16,
    headers: ureq::http::HeaderMap,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }
}

fn try_call(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Result<Resp, ureq::Error> {
    let mut b = ureq::http::Request::builder().method(method).uri(url);
    if let Some(t) = token {
        b = b.header("Authorization", format!("Bearer {t}"));
    }
    let payload = match body {
        Some(v) => {
            b = b.header("Content-Type", "application/json");
            v.to_string().into_bytes()
        }
        None => Vec::new(),
    };
    let mut resp = agent.run(b.body(payload).unwrap())?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.body_mut().read_to_string()?;
    Ok(Resp {
        status,
        headers,
        body,
    })
}

fn call(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Resp {
    try_call(agent, method, url, token, body).unwrap()
}

fn token_url(fake: &FakeAzure) -> String {
    format!(
        "{}{}/oauth2/v2.0/token",
        fake.authority_host(),
        FakeAzure::TENANT
    )
}

fn post_form(agent: &ureq::Agent, url: &str, form: &[(&str, &str)]) -> Resp {
    let mut resp = agent.post(url).send_form(form.iter().copied()).unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.body_mut().read_to_string().unwrap();
    Resp {
        status,
        headers,
        body,
    }
}

fn secret_token(agent: &ureq::Agent, fake: &FakeAzure) -> String {
    let r = post_form(
        agent,
        &token_url(fake),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", FakeAzure::CLIENT_ID),
            ("client_secret", FakeAzure::CLIENT_SECRET),
            ("scope", SCOPE),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["access_token"].as_str().unwrap().to_string()
}

/// A started fake plus an agent and a valid token.
struct Env {
    fake: FakeAzure,
    agent: ureq::Agent,
    token: String,
}

impl Env {
    fn new() -> Env {
        let fake = FakeAzure::start();
        let agent = agent(&fake);
        let token = secret_token(&agent, &fake);
        Env { fake, agent, token }
    }
    fn url(&self, path_and_query: &str) -> String {
        let sep = if path_and_query.contains('?') {
            '&'
        } else {
            '?'
        };
        format!(
            "{}{}{sep}api-version={API}",
            self.fake.vault_uri(),
            path_and_query
        )
    }
    fn req(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        call(
            &self.agent,
            method,
            &self.url(path),
            Some(&self.token),
            body,
        )
    }
    /// Follows nextLink verbatim; returns the pages.
    fn list_pages(&self, first: &str) -> Vec<Value> {
        let mut pages = Vec::new();
        let mut next = Some(self.url(first));
        while let Some(url) = next {
            let r = call(&self.agent, "GET", &url, Some(&self.token), None);
            assert_eq!(r.status, 200, "{}", r.body);
            let v = r.json();
            next = v["nextLink"].as_str().map(str::to_string);
            pages.push(v);
            assert!(pages.len() < 100, "runaway paging");
        }
        pages
    }
}

fn b64d(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).unwrap()
}

fn b64e(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

// ---------------------------------------------------------------------------------------
// Signature verification with the JWK from the vault

fn verify_ec_p256(jwk: &Value, digest: &[u8], sig: &[u8]) -> bool {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    let mut sec1 = vec![4u8];
    sec1.extend(b64d(jwk["x"].as_str().unwrap()));
    sec1.extend(b64d(jwk["y"].as_str().unwrap()));
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).unwrap();
    let Ok(sig) = p256::ecdsa::Signature::from_slice(sig) else {
        return false;
    };
    vk.verify_prehash(digest, &sig).is_ok()
}

fn verify_ec_p384(jwk: &Value, digest: &[u8], sig: &[u8]) -> bool {
    use p384::ecdsa::signature::hazmat::PrehashVerifier;
    let mut sec1 = vec![4u8];
    sec1.extend(b64d(jwk["x"].as_str().unwrap()));
    sec1.extend(b64d(jwk["y"].as_str().unwrap()));
    let vk = p384::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).unwrap();
    let Ok(sig) = p384::ecdsa::Signature::from_slice(sig) else {
        return false;
    };
    vk.verify_prehash(digest, &sig).is_ok()
}

fn rsa_key(jwk: &Value) -> rsa::RsaPublicKey {
    let n = rsa::BigUint::from_bytes_be(&b64d(jwk["n"].as_str().unwrap()));
    let e = rsa::BigUint::from_bytes_be(&b64d(jwk["e"].as_str().unwrap()));
    rsa::RsaPublicKey::new(n, e).unwrap()
}

fn verify_rsa(jwk: &Value, alg: &str, digest: &[u8], sig: &[u8]) -> bool {
    use rsa::{Pkcs1v15Sign, Pss};
    let k = rsa_key(jwk);
    match alg {
        "RS256" => k.verify(Pkcs1v15Sign::new::<Sha256>(), digest, sig),
        "RS384" => k.verify(Pkcs1v15Sign::new::<Sha384>(), digest, sig),
        "RS512" => k.verify(Pkcs1v15Sign::new::<Sha512>(), digest, sig),
        "PS256" => k.verify(Pss::new::<Sha256>(), digest, sig),
        "PS384" => k.verify(Pss::new::<Sha384>(), digest, sig),
        "PS512" => k.verify(Pss::new::<Sha512>(), digest, sig),
        _ => panic!("alg {alg}"),
    }
    .is_ok()
}

fn digest_for(alg: &str, msg: &[u8]) -> Vec<u8> {
    if alg.ends_with("256") {
        Sha256::digest(msg).to_vec()
    } else if alg.ends_with("384") {
        Sha384::digest(msg).to_vec()
    } else {
        Sha512::digest(msg).to_vec()
    }
}

/// The JWK's public key equals the SPKI the fake reports.
fn assert_jwk_matches_spki(jwk: &Value, spki: &[u8]) {
    use p256::pkcs8::DecodePublicKey;
    match (jwk["kty"].as_str().unwrap(), jwk["crv"].as_str()) {
        ("EC", Some("P-256")) => {
            let k = p256::PublicKey::from_public_key_der(spki).unwrap();
            let mut sec1 = vec![4u8];
            sec1.extend(b64d(jwk["x"].as_str().unwrap()));
            sec1.extend(b64d(jwk["y"].as_str().unwrap()));
            assert_eq!(k, p256::PublicKey::from_sec1_bytes(&sec1).unwrap());
        }
        ("EC", Some("P-384")) => {
            let k = p384::PublicKey::from_public_key_der(spki).unwrap();
            let mut sec1 = vec![4u8];
            sec1.extend(b64d(jwk["x"].as_str().unwrap()));
            sec1.extend(b64d(jwk["y"].as_str().unwrap()));
            assert_eq!(k, p384::PublicKey::from_sec1_bytes(&sec1).unwrap());
        }
        ("RSA", None) => {
            let k = rsa::RsaPublicKey::from_public_key_der(spki).unwrap();
            assert_eq!(k, rsa_key(jwk));
        }
        other => panic!("unexpected {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Key lifecycle per key type

fn lifecycle(create_body: Value, algs: &[&str], expect_sig_len: Option<usize>) {
    let env = Env::new();
    let name = "spire-key-1234-x509-CA-A";
    let mut body = create_body.clone();
    body["key_ops"] = json!(["sign", "verify"]);
    body["tags"] = json!({"spire-server-td": "example.org", "spire-server-id": "a"});
    env.fake.set_now(1_700_000_000.0);

    // create
    let r = env.req("POST", &format!("keys/{name}/create"), Some(body.clone()));
    assert_eq!(r.status, 200, "{}", r.body);
    let created = r.json();
    let kid = created["key"]["kid"].as_str().unwrap().to_string();
    let prefix = format!("{}keys/{name}/", env.fake.vault_uri());
    let v1 = kid.strip_prefix(&prefix).unwrap().to_string();
    assert_eq!(v1.len(), 32);
    assert!(v1
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    assert_eq!(created["key"]["kty"], create_body["kty"]);
    assert_eq!(created["key"]["key_ops"], json!(["sign", "verify"]));
    assert_eq!(created["attributes"]["enabled"], json!(true));
    assert_eq!(created["attributes"]["created"], json!(1_700_000_000i64));
    assert_eq!(created["attributes"]["updated"], json!(1_700_000_000i64));
    assert_eq!(created["tags"]["spire-server-td"], "example.org");
    let spki = env.fake.public_key_der(name, &v1).unwrap();
    assert_jwk_matches_spki(&created["key"], &spki);
    // JWK byte fields are base64url without padding.
    for f in ["x", "y", "n", "e"] {
        if let Some(s) = created["key"][f].as_str() {
            assert!(
                !s.contains('=') && !s.contains('+') && !s.contains('/'),
                "{f}: {s}"
            );
        }
    }

    // get: latest, trailing slash, versioned
    for path in [
        format!("keys/{name}"),
        format!("keys/{name}/"),
        format!("keys/{name}/{v1}"),
    ] {
        let r = env.req("GET", &path, None);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert_eq!(r.json()["key"], created["key"], "{path}");
    }
    let r = env.req("GET", &format!("keys/{name}/{}", "0".repeat(32)), None);
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "KeyNotFound");
    let r = env.req("GET", "keys/no-such-key", None);
    assert_eq!(r.status, 404);

    // sign + verify with the JWK
    for alg in algs {
        let digest = digest_for(alg, format!("message for {alg}").as_bytes());
        let r = env.req(
            "POST",
            &format!("keys/{name}/{v1}/sign"),
            Some(json!({"alg": alg, "value": b64e(&digest)})),
        );
        assert_eq!(r.status, 200, "{alg}: {}", r.body);
        let v = r.json();
        assert_eq!(v["kid"], kid);
        let sig = b64d(v["value"].as_str().unwrap());
        if let Some(n) = expect_sig_len {
            assert_eq!(sig.len(), n, "{alg}");
        }
        let jwk = &created["key"];
        let ok = match *alg {
            "ES256" => verify_ec_p256(jwk, &digest, &sig),
            "ES384" => verify_ec_p384(jwk, &digest, &sig),
            _ => verify_rsa(jwk, alg, &digest, &sig),
        };
        assert!(ok, "{alg} signature does not verify");
        // A different digest must not verify with that signature.
        let mut other = digest.clone();
        other[0] ^= 1;
        let bad = match *alg {
            "ES256" => verify_ec_p256(jwk, &other, &sig),
            "ES384" => verify_ec_p384(jwk, &other, &sig),
            _ => verify_rsa(jwk, alg, &other, &sig),
        };
        assert!(!bad, "{alg} verified a wrong digest");
        // Wrong digest length → 400.
        let r = env.req(
            "POST",
            &format!("keys/{name}/{v1}/sign"),
            Some(json!({"alg": alg, "value": b64e(&digest[1..])})),
        );
        assert_eq!(r.status, 400, "{alg} short digest");
        assert_eq!(r.json()["error"]["code"], "BadParameter");
    }
    // An algorithm of the wrong family → 400.
    let wrong = if algs[0].starts_with("ES") {
        "RS256"
    } else {
        "ES256"
    };
    let r = env.req(
        "POST",
        &format!("keys/{name}/{v1}/sign"),
        Some(json!({"alg": wrong, "value": b64e(&[0u8; 32])})),
    );
    assert_eq!(r.status, 400);

    // second version via create; versions listing
    env.fake.advance(10.0);
    let r = env.req("POST", &format!("keys/{name}/create"), Some(body.clone()));
    assert_eq!(r.status, 200);
    let v2 = r.json()["key"]["kid"]
        .as_str()
        .unwrap()
        .strip_prefix(&prefix)
        .unwrap()
        .to_string();
    assert_ne!(v1, v2);
    let r = env.req("GET", &format!("keys/{name}"), None);
    assert!(r.json()["key"]["kid"].as_str().unwrap().ends_with(&v2));
    let pages = env.list_pages(&format!("keys/{name}/versions"));
    let kids: Vec<String> = pages
        .iter()
        .flat_map(|p| p["value"].as_array().unwrap().clone())
        .map(|i| i["kid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kids, vec![format!("{prefix}{v1}"), format!("{prefix}{v2}")]);
    let keys = env.fake.keys();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].versions.len(), 2);
    assert_eq!(keys[0].versions[0].version, v1);

    // update: key_ops, enabled, tags replaced wholesale, updated bumped
    env.fake.advance(100.0);
    let r = env.req(
        "PATCH",
        &format!("keys/{name}/{v1}"),
        Some(json!({"attributes": {"enabled": false}, "tags": {"only": "this"}})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let u = r.json();
    assert_eq!(u["attributes"]["enabled"], json!(false));
    assert_eq!(u["tags"], json!({"only": "this"}));
    assert_eq!(u["attributes"]["created"], json!(1_700_000_000i64));
    assert_eq!(u["attributes"]["updated"], json!(1_700_000_110i64));
    let r = env.req(
        "POST",
        &format!("keys/{name}/{v1}/sign"),
        Some(json!({"alg": algs[0], "value": b64e(&digest_for(algs[0], b"m"))})),
    );
    assert_eq!(r.status, 403, "disabled key must not sign");
    // PATCH on the latest version via trailing slash; key_ops without sign → 403 on sign.
    let r = env.req(
        "PATCH",
        &format!("keys/{name}/"),
        Some(json!({"key_ops": ["verify"]})),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["key"]["key_ops"], json!(["verify"]));
    assert_eq!(
        env.fake.keys()[0].versions[1].key_ops,
        vec!["verify".to_string()]
    );
    let r = env.req(
        "POST",
        &format!("keys/{name}/{v2}/sign"),
        Some(json!({"alg": algs[0], "value": b64e(&digest_for(algs[0], b"m"))})),
    );
    assert_eq!(r.status, 403, "sign not in key_ops");
    // Bad PATCH body → 400.
    let r = env.req(
        "PATCH",
        &format!("keys/{name}/"),
        Some(json!({"tags": {"a": 1}})),
    );
    assert_eq!(r.status, 400);

    // delete → DeletedKeyBundle, then 404, 409 on re-create
    env.fake.advance(1.0);
    let r = env.req("DELETE", &format!("keys/{name}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let d = r.json();
    assert_eq!(
        d["recoveryId"],
        json!(format!("{}deletedkeys/{name}", env.fake.vault_uri()))
    );
    assert_eq!(d["deletedDate"], json!(1_700_000_111i64));
    assert!(d["scheduledPurgeDate"].as_i64().unwrap() > 1_700_000_111);
    assert!(d["key"]["kid"].as_str().unwrap().ends_with(&v2));
    assert_eq!(env.req("GET", &format!("keys/{name}"), None).status, 404);
    assert_eq!(env.req("DELETE", &format!("keys/{name}"), None).status, 404);
    assert!(env.fake.key_names().is_empty());
    assert_eq!(env.fake.deleted_key_names(), vec![name.to_string()]);
    assert!(env.fake.keys()[0].deleted);
    let r = env.req("POST", &format!("keys/{name}/create"), Some(body.clone()));
    assert_eq!(r.status, 409);
    let e = r.json();
    assert_eq!(e["error"]["code"], "Conflict");
    assert_eq!(
        e["error"]["innererror"]["code"],
        "ObjectIsDeletedButRecoverable"
    );
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with(&format!(
            "Key {name} is currently in a deleted but recoverable state"
        )));
    // Still addressable via /deletedkeys; purge through the API then re-create.
    let r = env.req("GET", &format!("deletedkeys/{name}"), None);
    assert_eq!(r.status, 200);
    let r = env.req("DELETE", &format!("deletedkeys/{name}"), None);
    assert_eq!(r.status, 204);
    assert!(env.fake.keys().is_empty());
    let r = env.req("POST", &format!("keys/{name}/create"), Some(body));
    assert_eq!(r.status, 200);
}

#[test]
fn ec_p256_lifecycle() {
    lifecycle(json!({"kty": "EC", "crv": "P-256"}), &["ES256"], Some(64));
}

#[test]
fn ec_p384_lifecycle() {
    lifecycle(json!({"kty": "EC", "crv": "P-384"}), &["ES384"], Some(96));
}

#[test]
fn rsa_2048_lifecycle() {
    lifecycle(
        json!({"kty": "RSA", "key_size": 2048}),
        &["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"],
        Some(256),
    );
}

#[test]
fn create_validates_input() {
    let env = Env::new();
    let cases = [
        ("bad_name", json!({"kty": "EC", "crv": "P-256"})),
        ("ok", json!({"kty": "oct"})),
        ("ok", json!({"kty": "EC", "crv": "P-521"})),
        ("ok", json!({"kty": "RSA", "key_size": 1024})),
        ("ok", json!({"crv": "P-256"})),
        ("ok", json!({"kty": "EC", "key_ops": "sign"})),
        ("ok", json!({"kty": "EC", "attributes": {"enabled": "yes"}})),
        ("ok", json!([1, 2])),
    ];
    for (name, body) in cases {
        let r = env.req("POST", &format!("keys/{name}/create"), Some(body.clone()));
        assert_eq!(r.status, 400, "{name} {body}: {}", r.body);
        assert_eq!(r.json()["error"]["code"], "BadParameter");
    }
    let long = "a".repeat(128);
    let r = env.req("GET", &format!("keys/{long}"), None);
    assert_eq!(r.status, 400);
    let ok127 = "a".repeat(127);
    let r = env.req(
        "POST",
        &format!("keys/{ok127}/create"),
        Some(json!({"kty": "EC-HSM", "attributes": {"enabled": false}})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["key"]["kty"], "EC-HSM");
    assert_eq!(v["key"]["crv"], "P-256");
    assert_eq!(v["attributes"]["enabled"], json!(false));
    // Names are case-insensitive: a create on another case adds a version.
    let r = env.req(
        "POST",
        &format!("keys/{}/create", ok127.to_uppercase()),
        Some(json!({"kty": "EC"})),
    );
    assert_eq!(r.status, 200);
    assert_eq!(env.fake.keys()[0].versions.len(), 2);
    assert_eq!(env.fake.key_names(), vec![ok127]);
    // Unsupported method on a known path.
    let r = env.req("PUT", "keys/x", Some(json!({})));
    assert_eq!(r.status, 405);
    // Unknown path on the vault listener.
    let r = env.req("GET", "secrets/x", None);
    assert_eq!(r.status, 404);
}

#[test]
fn rsa_4096_create_and_sign() {
    let env = Env::new();
    let r = env.req(
        "POST",
        "keys/big/create",
        Some(json!({"kty": "RSA", "key_size": 4096, "key_ops": ["sign"]})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let jwk = r.json()["key"].clone();
    assert_eq!(b64d(jwk["n"].as_str().unwrap()).len(), 512);
    let digest = Sha256::digest(b"x").to_vec();
    let r = env.req(
        "POST",
        "keys/big//sign",
        Some(json!({"alg": "PS256", "value": b64e(&digest)})),
    );
    assert_eq!(r.status, 200, "empty version = latest: {}", r.body);
    let sig = b64d(r.json()["value"].as_str().unwrap());
    assert_eq!(sig.len(), 512);
    assert!(verify_rsa(&jwk, "PS256", &digest, &sig));
}

// ---------------------------------------------------------------------------------------
// Listing

fn names_of(pages: &[Value], vault: &str) -> Vec<String> {
    pages
        .iter()
        .flat_map(|p| p["value"].as_array().unwrap().clone())
        .map(|i| {
            i["kid"]
                .as_str()
                .unwrap()
                .strip_prefix(&format!("{vault}keys/"))
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn list_keys_pages_60_keys() {
    let env = Env::new();
    for i in 0..60 {
        env.fake.insert_key(
            &format!("key-{i:02}"),
            FakeKeyType::EcP256,
            &[("idx", &i.to_string())],
            1000.0 + i as f64,
            2000.0 + i as f64,
            i % 2 == 0,
        );
    }
    // A soft-deleted key is not listed.
    env.fake
        .insert_key("zz-deleted", FakeKeyType::EcP256, &[], 1.0, 1.0, true);
    assert_eq!(env.req("DELETE", "keys/zz-deleted", None).status, 200);

    let vault = env.fake.vault_uri();
    let pages = env.list_pages("keys");
    let sizes: Vec<usize> = pages
        .iter()
        .map(|p| p["value"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, vec![25, 25, 10]);
    let names = names_of(&pages, &vault);
    assert_eq!(names, env.fake.key_names());
    assert_eq!(names.len(), 60);
    // nextLink: absolute, with api-version, $skiptoken and maxresults.
    let link = pages[0]["nextLink"].as_str().unwrap();
    assert_eq!(
        link,
        format!("{vault}keys?api-version={API}&$skiptoken=25&maxresults=25")
    );
    assert!(pages[2]["nextLink"].is_null());
    // Items: versionless kid, attributes and tags of the latest version.
    let item = &pages[0]["value"][3];
    assert_eq!(item["kid"], json!(format!("{vault}keys/key-03")));
    assert_eq!(item["attributes"]["created"], json!(1003));
    assert_eq!(item["attributes"]["updated"], json!(2003));
    assert_eq!(item["attributes"]["enabled"], json!(false));
    assert_eq!(item["tags"]["idx"], "3");
    assert!(item.get("key").is_none());

    // maxresults smaller than 25.
    let pages = env.list_pages("keys?maxresults=7");
    assert_eq!(pages.len(), 9);
    assert_eq!(names_of(&pages, &vault).len(), 60);
    // Empty pages in between.
    env.fake.set_empty_pages(true);
    let pages = env.list_pages("keys");
    let sizes: Vec<usize> = pages
        .iter()
        .map(|p| p["value"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, vec![25, 0, 25, 0, 10]);
    assert_eq!(names_of(&pages, &vault), env.fake.key_names());
    env.fake.set_empty_pages(false);
    // Out-of-range maxresults and bad skiptoken.
    for q in [
        "keys?maxresults=26",
        "keys?maxresults=0",
        "keys?maxresults=x",
        "keys?$skiptoken=abc",
    ] {
        assert_eq!(env.req("GET", q, None).status, 400, "{q}");
    }
    // A skiptoken past the end yields an empty last page.
    let r = env.req("GET", "keys?$skiptoken=500", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"value": [], "nextLink": null}));
}

#[test]
fn list_versions_pages() {
    let env = Env::new();
    let mut versions = Vec::new();
    for i in 0..5 {
        versions.push(env.fake.insert_key(
            "multi",
            FakeKeyType::EcP384,
            &[("n", &i.to_string())],
            i as f64,
            i as f64,
            true,
        ));
    }
    let pages = env.list_pages("keys/multi/versions?maxresults=2");
    assert_eq!(pages.len(), 3);
    let vault = env.fake.vault_uri();
    let kids = names_of(&pages, &vault);
    let expected: Vec<String> = versions.iter().map(|v| format!("multi/{v}")).collect();
    assert_eq!(kids, expected);
    assert_eq!(pages[1]["value"][0]["tags"]["n"], "2");
    assert!(pages[0]["nextLink"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{vault}keys/multi/versions?api-version=")));
    assert_eq!(env.req("GET", "keys/nope/versions", None).status, 404);
    // Test-side helpers.
    assert_eq!(env.fake.keys()[0].versions.len(), 5);
    assert_eq!(env.fake.keys()[0].versions[4].crv.as_deref(), Some("P-384"));
    env.fake.set_enabled("multi", false);
    assert!(!env.fake.keys()[0].versions[4].enabled);
    assert!(env.fake.keys()[0].versions[3].enabled);
    assert!(env.fake.public_key_der("multi", "").is_some());
    assert!(env.fake.public_key_der("multi", &"f".repeat(32)).is_none());
    env.fake.purge("multi");
    assert!(env.fake.keys().is_empty());
}

// ---------------------------------------------------------------------------------------
// Authentication

#[test]
fn vault_requires_api_version_and_bearer_token() {
    let env = Env::new();
    let vault = env.fake.vault_uri();
    // No api-version → 400.
    let r = call(
        &env.agent,
        "GET",
        &format!("{vault}keys"),
        Some(&env.token),
        None,
    );
    assert_eq!(r.status, 400);
    // No token → 401 challenge.
    let r = call(&env.agent, "GET", &env.url("keys"), None, None);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate").unwrap(),
        format!(
            "Bearer authorization=\"{}{}\", resource=\"https://vault.azure.net\"",
            env.fake.authority_host(),
            FakeAzure::TENANT
        )
    );
    assert_eq!(r.json()["error"]["code"], "Unauthorized");
    // Unknown token → 401.
    let r = call(&env.agent, "GET", &env.url("keys"), Some("nope"), None);
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some());
    // Valid token → 200; revoked → 401; a new token works again.
    assert_eq!(env.req("GET", "keys", None).status, 200);
    env.fake.revoke_tokens();
    assert_eq!(env.req("GET", "keys", None).status, 401);
    let fresh = secret_token(&env.agent, &env.fake);
    let r = call(&env.agent, "GET", &env.url("keys"), Some(&fresh), None);
    assert_eq!(r.status, 200);
    assert_eq!(env.fake.issued_tokens(), vec![env.token.clone(), fresh]);
}

#[test]
fn token_endpoint_client_secret() {
    let fake = FakeAzure::start();
    let agent = agent(&fake);
    let url = token_url(&fake);
    fake.set_token_lifetime(1234);
    let r = post_form(
        &agent,
        &url,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", FakeAzure::CLIENT_ID),
            ("client_secret", FakeAzure::CLIENT_SECRET),
            (
                "scope",
                "https://vault.azure.net/.default openid offline_access profile",
            ),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], json!(1234));
    let token = v["access_token"].as_str().unwrap();
    assert_eq!(fake.issued_tokens(), vec![token.to_string()]);

    let base = [
        ("grant_type", "client_credentials"),
        ("client_id", FakeAzure::CLIENT_ID),
        ("client_secret", FakeAzure::CLIENT_SECRET),
        ("scope", SCOPE),
    ];
    let with = |k: &str, val: &str| -> Vec<(&str, String)> {
        base.iter()
            .map(|(bk, bv)| {
                if *bk == k {
                    (*bk, val.to_string())
                } else {
                    (*bk, bv.to_string())
                }
            })
            .collect()
    };
    let send = |form: Vec<(&str, String)>, url: &str| -> Resp {
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        post_form(&agent, url, &pairs)
    };
    let r = send(with("client_secret", "wrong"), &url);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "invalid_client");
    let r = send(with("client_id", "someone-else"), &url);
    assert_eq!(r.status, 401);
    let r = send(with("scope", "https://management.azure.com/.default"), &url);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_scope");
    let r = send(with("grant_type", "password"), &url);
    assert_eq!(r.status, 400);
    let other_tenant = format!("{}not-my-tenant/oauth2/v2.0/token", fake.authority_host());
    let r = send(with("scope", SCOPE), &other_tenant);
    assert_eq!(r.status, 400);
    // GET on the token endpoint is not allowed.
    let r = call(&agent, "GET", &url, None, None);
    assert_eq!(r.status, 405);
    assert_eq!(fake.issued_tokens().len(), 1, "failures issue no token");
}

/// Self-signed RSA certificate for client-assertion tests: (cert DER, private key).
fn rsa_client_cert() -> (Vec<u8>, rsa::RsaPrivateKey) {
    use rsa::pkcs8::EncodePrivateKey;
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let der = key.to_pkcs8_der().unwrap();
    let pkcs8 = rustls::pki_types::PrivatePkcs8KeyDer::from(der.as_bytes().to_vec());
    let kp = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256).unwrap();
    let params = rcgen::CertificateParams::new(vec!["client.example".to_string()]).unwrap();
    let cert = params.self_signed(&kp).unwrap();
    (cert.der().to_vec(), key)
}

fn make_assertion(
    key: &rsa::RsaPrivateKey,
    cert_der: &[u8],
    alg: &str,
    claims: &Value,
    std_b64_thumb: bool,
) -> String {
    let digest = Sha256::digest(cert_der);
    let thumb = if std_b64_thumb {
        STANDARD.encode(digest)
    } else {
        b64e(&digest)
    };
    let header = json!({"alg": alg, "typ": "JWT", "x5t#S256": thumb});
    let signing_input = format!(
        "{}.{}",
        b64e(header.to_string().as_bytes()),
        b64e(claims.to_string().as_bytes())
    );
    let hashed = Sha256::digest(signing_input.as_bytes());
    let sig = match alg {
        "RS256" => key
            .sign(rsa::Pkcs1v15Sign::new::<Sha256>(), &hashed)
            .unwrap(),
        _ => key
            .sign_with_rng(
                &mut rsa::rand_core::OsRng,
                rsa::Pss::new::<Sha256>(),
                &hashed,
            )
            .unwrap(),
    };
    format!("{signing_input}.{}", b64e(&sig))
}

#[test]
fn token_endpoint_client_certificate_assertion() {
    let fake = FakeAzure::start();
    let agent = agent(&fake);
    let url = token_url(&fake);
    let client = "33333333-3333-3333-3333-3333333333dd";
    let (cert, key) = rsa_client_cert();
    let (other_cert, other_key) = rsa_client_cert();
    fake.register_client_certificate(client, cert.clone());
    let now = fake.now() as i64;
    let good =
        json!({"aud": url, "iss": client, "sub": client, "jti": "1", "nbf": now, "exp": now + 600});
    let send = |assertion: &str| -> Resp {
        post_form(
            &agent,
            &url,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", client),
                ("scope", SCOPE),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion),
            ],
        )
    };
    for (alg, std_thumb) in [("PS256", false), ("RS256", false), ("PS256", true)] {
        let r = send(&make_assertion(&key, &cert, alg, &good, std_thumb));
        assert_eq!(r.status, 200, "{alg} std={std_thumb}: {}", r.body);
    }
    let mut bad_aud = good.clone();
    bad_aud["aud"] = json!("https://login.microsoftonline.com/x/oauth2/v2.0/token");
    let mut bad_iss = good.clone();
    bad_iss["iss"] = json!("other");
    let mut expired = good.clone();
    expired["exp"] = json!(now - 1);
    let failures = [
        make_assertion(&key, &cert, "PS256", &bad_aud, false),
        make_assertion(&key, &cert, "PS256", &bad_iss, false),
        make_assertion(&key, &cert, "PS256", &expired, false),
        // Unregistered certificate.
        make_assertion(&other_key, &other_cert, "PS256", &good, false),
        // Registered thumbprint, wrong signing key.
        make_assertion(&other_key, &cert, "RS256", &good, false),
        "not-a-jwt".to_string(),
        "a.b.c".to_string(),
    ];
    for (i, a) in failures.iter().enumerate() {
        let r = send(a);
        assert_eq!(r.status, 401, "case {i}: {}", r.body);
        assert_eq!(r.json()["error"], "invalid_client");
    }
    assert_eq!(fake.issued_tokens().len(), 3);
    // The fake clock decides expiry.
    fake.advance(601.0);
    let r = send(&make_assertion(&key, &cert, "PS256", &good, false));
    assert_eq!(r.status, 401);
}

#[test]
fn token_endpoint_federated_token() {
    let fake = FakeAzure::start();
    let agent = agent(&fake);
    let client = "44444444-4444-4444-4444-4444444444ee";
    fake.register_federated_token(client, "projected.sa.token");
    let send = |client_id: &str, assertion: &str| {
        post_form(
            &agent,
            &token_url(&fake),
            &[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("scope", SCOPE),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion),
            ],
        )
    };
    assert_eq!(send(client, "projected.sa.token").status, 200);
    assert_eq!(send(client, "other.token").status, 401);
    assert_eq!(send(FakeAzure::CLIENT_ID, "projected.sa.token").status, 401);
    let token = fake.issued_tokens()[0].clone();
    let r = call(
        &agent,
        "GET",
        &format!("{}keys?api-version={API}", fake.vault_uri()),
        Some(&token),
        None,
    );
    assert_eq!(r.status, 200);
}

#[test]
fn managed_identity_app_service() {
    let fake = FakeAzure::start();
    let agent = agent(&fake);
    fake.set_now(1_800_000_000.0);
    fake.set_token_lifetime(7200);
    let ep = fake.identity_endpoint();
    assert!(ep.starts_with("http://127.0.0.1:") && ep.ends_with("/msi/token"));
    let get = |query: &str, header: Option<&str>| {
        let mut b = ureq::http::Request::builder()
            .method("GET")
            .uri(format!("{ep}?{query}"));
        if let Some(h) = header {
            b = b.header("X-IDENTITY-HEADER", h);
        }
        let mut resp = agent.run(b.body(()).unwrap()).unwrap();
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().unwrap())
    };
    let good_q = "api-version=2019-08-01&resource=https%3A%2F%2Fvault.azure.net";
    let ih = fake.identity_header();
    let (s, _) = get(good_q, None);
    assert_eq!(s, 401);
    let (s, _) = get(good_q, Some("wrong"));
    assert_eq!(s, 401);
    let (s, _) = get(
        "api-version=2018-02-01&resource=https://vault.azure.net",
        Some(&ih),
    );
    assert_eq!(s, 400);
    let (s, _) = get(
        "api-version=2019-08-01&resource=https://vault.azure.net/.default",
        Some(&ih),
    );
    assert_eq!(s, 400);
    let (s, body) = get(good_q, Some(&ih));
    assert_eq!(s, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["expires_on"],
        json!("1800007200"),
        "expires_on is a string"
    );
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["resource"], "https://vault.azure.net");
    let token = v["access_token"].as_str().unwrap();
    assert_eq!(fake.issued_tokens(), vec![token.to_string()]);
    let r = call(
        &agent,
        "GET",
        &format!("{}keys?api-version={API}", fake.vault_uri()),
        Some(token),
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(fake.count(Route::ManagedIdentity), 5);
}

#[test]
fn managed_identity_imds() {
    let fake = FakeAzure::start();
    let agent = agent(&fake);
    fake.set_now(1_800_000_000.0);
    let ep = fake.imds_endpoint();
    assert!(ep.ends_with("/metadata/identity/oauth2/token"));
    let get = |query: &str, metadata: bool| {
        let mut b = ureq::http::Request::builder()
            .method("GET")
            .uri(format!("{ep}?{query}"));
        if metadata {
            b = b.header("Metadata", "true");
        }
        let mut resp = agent.run(b.body(()).unwrap()).unwrap();
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().unwrap())
    };
    let q = "api-version=2018-02-01&resource=https://vault.azure.net&client_id=abc";
    assert_eq!(get(q, false).0, 400);
    assert_eq!(
        get(
            "api-version=2019-08-01&resource=https://vault.azure.net",
            true
        )
        .0,
        400
    );
    assert_eq!(get("api-version=2018-02-01", true).0, 400);
    let (s, body) = get(q, true);
    assert_eq!(s, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    for (k, val) in v.as_object().unwrap() {
        assert!(val.is_string(), "{k} must be a string");
    }
    assert_eq!(v["expires_in"], "3600");
    assert_eq!(v["expires_on"], "1800003600");
    assert_eq!(v["client_id"], "abc");
    let token = v["access_token"].as_str().unwrap();
    let r = call(
        &agent,
        "GET",
        &format!("{}keys?api-version={API}", fake.vault_uri()),
        Some(token),
        None,
    );
    assert_eq!(r.status, 200);
    // Unknown path on the MI listener.
    let mut resp = agent
        .get(format!(
            "http://127.0.0.1:{}/nothing-here",
            fake.http_addr().port()
        ))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let _ = resp.body_mut().read_to_string();
}

// ---------------------------------------------------------------------------------------
// Faults

#[test]
fn fault_status_with_retry_after_and_default_body() {
    let env = Env::new();
    env.fake.inject(
        Route::ListKeys,
        FaultKind::Status {
            status: 429,
            retry_after: Some("7".into()),
            body: None,
        },
        2,
    );
    // Other routes are unaffected.
    assert_eq!(env.req("GET", "keys/x", None).status, 404);
    for _ in 0..2 {
        let r = env.req("GET", "keys", None);
        assert_eq!(r.status, 429);
        assert_eq!(r.header("retry-after").as_deref(), Some("7"));
        assert!(r.json()["error"]["code"].is_string());
    }
    assert_eq!(env.req("GET", "keys", None).status, 200, "resumes after 2");
    // Custom body, 503, Route::Any, FIFO order.
    env.fake.inject(
        Route::Any,
        FaultKind::Status {
            status: 503,
            retry_after: None,
            body: Some("{\"custom\":true}".into()),
        },
        1,
    );
    env.fake.inject(
        Route::Any,
        FaultKind::Status {
            status: 500,
            retry_after: None,
            body: None,
        },
        1,
    );
    let r = env.req("GET", "keys/whatever", None);
    assert_eq!(r.status, 503);
    assert_eq!(r.body, "{\"custom\":true}");
    assert!(r.header("retry-after").is_none());
    let r = env.req("GET", "keys", None);
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["error"]["code"], "InternalServerError");
    assert_eq!(env.req("GET", "keys", None).status, 200);
    // Token route gets an Entra-shaped error by default.
    env.fake.inject(
        Route::Token,
        FaultKind::Status {
            status: 500,
            retry_after: None,
            body: None,
        },
        1,
    );
    let r = post_form(
        &env.agent,
        &token_url(&env.fake),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", FakeAzure::CLIENT_ID),
            ("client_secret", FakeAzure::CLIENT_SECRET),
            ("scope", SCOPE),
        ],
    );
    assert_eq!(r.status, 500);
    assert!(r.json()["error"].is_string());
    secret_token(&env.agent, &env.fake);
}

#[test]
fn fault_latency() {
    let env = Env::new();
    env.fake.inject(
        Route::GetKey,
        FaultKind::Latency(Duration::from_millis(1000)),
        1,
    );
    env.fake
        .insert_key("k", FakeKeyType::EcP256, &[], 0.0, 0.0, true);
    let t = Instant::now();
    let r = env.req("GET", "keys/k", None);
    assert!(t.elapsed() >= Duration::from_millis(1000));
    assert_eq!(r.status, 200, "served normally after the delay");
    let t = Instant::now();
    assert_eq!(env.req("GET", "keys/k", None).status, 200);
    assert!(t.elapsed() < Duration::from_millis(1000), "one-shot");
}

#[test]
fn fault_malformed_body() {
    let env = Env::new();
    env.fake
        .inject(Route::ListKeys, FaultKind::MalformedBody, 1);
    let r = env.req("GET", "keys", None);
    assert_eq!(r.status, 200);
    assert!(serde_json::from_str::<Value>(&r.body).is_err());
    assert_eq!(env.req("GET", "keys", None).json()["value"], json!([]));
}

#[test]
fn fault_truncated_body() {
    let env = Env::new();
    env.fake
        .inject(Route::ListKeys, FaultKind::TruncatedBody, 1);
    let res = try_call(&env.agent, "GET", &env.url("keys"), Some(&env.token), None);
    assert!(res.is_err(), "truncated body must fail the read");
    assert_eq!(env.req("GET", "keys", None).status, 200);
    assert_eq!(env.fake.requests()[1].status, 200);
}

#[test]
fn fault_drop_connection() {
    let env = Env::new();
    env.fake
        .inject(Route::CreateKey, FaultKind::DropConnection, 1);
    let res = try_call(
        &env.agent,
        "POST",
        &env.url("keys/k/create"),
        Some(&env.token),
        Some(json!({"kty": "EC"})),
    );
    assert!(res.is_err(), "dropped connection must fail");
    assert!(
        env.fake.key_names().is_empty(),
        "fault answered without creating"
    );
    let logged = env.fake.requests();
    assert_eq!(logged.last().unwrap().status, 0);
    assert_eq!(logged.last().unwrap().route, Route::CreateKey);
    let r = env.req("POST", "keys/k/create", Some(json!({"kty": "EC"})));
    assert_eq!(r.status, 200);
}

#[test]
fn fault_wrong_signature_length() {
    let env = Env::new();
    let v = env
        .fake
        .insert_key("k", FakeKeyType::EcP256, &[], 0.0, 0.0, true);
    env.fake
        .inject(Route::Sign, FaultKind::WrongSignatureLength, 1);
    // A non-sign request does not consume the fault.
    assert_eq!(env.req("GET", "keys/k", None).status, 200);
    let body = json!({"alg": "ES256", "value": b64e(&[7u8; 32])});
    let r = env.req("POST", &format!("keys/k/{v}/sign"), Some(body.clone()));
    assert_eq!(r.status, 200);
    assert_eq!(b64d(r.json()["value"].as_str().unwrap()).len(), 63);
    let r = env.req("POST", &format!("keys/k/{v}/sign"), Some(body));
    assert_eq!(b64d(r.json()["value"].as_str().unwrap()).len(), 64);
}

#[test]
fn sign_limit_answers_429_over_the_bucket() {
    let env = Env::new();
    let v = env
        .fake
        .insert_key("k", FakeKeyType::EcP256, &[], 0.0, 0.0, true);
    // 3 deep, refilled at 1 a second: back to back, the 4th and 5th signs are over the limit.
    env.fake.limit_signs(1.0, 3.0);
    let body = json!({"alg": "ES256", "value": b64e(&[7u8; 32])});
    let resps: Vec<Resp> = (0..5)
        .map(|_| env.req("POST", &format!("keys/k/{v}/sign"), Some(body.clone())))
        .collect();
    let statuses: Vec<u16> = resps.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![200, 200, 200, 429, 429]);
    assert_eq!(resps[3].header("retry-after").as_deref(), Some("1"));
    assert_eq!(
        env.fake
            .requests()
            .iter()
            .filter(|r| r.route == Route::Sign)
            .map(|r| r.status)
            .collect::<Vec<_>>(),
        statuses
    );
    // Other requests are not limited.
    assert_eq!(env.req("GET", "keys/k", None).status, 200);
    // A token comes back after a second.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let r = env.req("POST", &format!("keys/k/{v}/sign"), Some(body));
    assert_eq!(r.status, 200);
}

#[test]
fn fault_wrong_key_type() {
    let env = Env::new();
    env.fake
        .insert_key("ec", FakeKeyType::EcP256, &[], 0.0, 0.0, true);
    env.fake.inject(Route::GetKey, FaultKind::WrongKeyType, 1);
    env.fake
        .inject(Route::CreateKey, FaultKind::WrongKeyType, 1);
    let r = env.req("GET", "keys/ec", None);
    assert_eq!(r.json()["key"]["crv"], "P-384");
    let r = env.req("GET", "keys/ec", None);
    assert_eq!(r.json()["key"]["crv"], "P-256");
    let r = env.req(
        "POST",
        "keys/rsa/create",
        Some(json!({"kty": "RSA", "key_size": 2048})),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["key"]["kty"], "EC", "RSA reported as EC");
    assert_eq!(
        env.fake.keys()[1].versions[0].kty,
        "RSA",
        "stored type unchanged"
    );
}

#[test]
fn set_latency_applies_to_vault_requests_only() {
    let env = Env::new();
    env.fake.set_latency(Duration::from_millis(1000));
    let t = Instant::now();
    assert_eq!(env.req("GET", "keys", None).status, 200);
    assert!(t.elapsed() >= Duration::from_millis(1000));
    let t = Instant::now();
    secret_token(&env.agent, &env.fake);
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "token endpoint not delayed"
    );
    env.fake.set_latency(Duration::ZERO);
    let t = Instant::now();
    assert_eq!(env.req("GET", "keys", None).status, 200);
    assert!(t.elapsed() < Duration::from_millis(1000));
}

// ---------------------------------------------------------------------------------------
// Request log

#[test]
fn request_log_counts_and_contents() {
    let env = Env::new();
    env.req("POST", "keys/a/create", Some(json!({"kty": "EC"})));
    env.req("GET", "keys/a", None);
    env.req("GET", "keys/a/", None);
    env.req("GET", "keys", None);
    env.req("GET", "keys/a/versions", None);
    env.req("PATCH", "keys/a", Some(json!({"tags": {}})));
    env.req(
        "POST",
        "keys/a//sign",
        Some(json!({"alg": "ES256", "value": b64e(&[0; 32])})),
    );
    env.req("DELETE", "keys/a", None);
    env.req("GET", "nothing", None);
    assert_eq!(env.fake.count(Route::Token), 1);
    assert_eq!(env.fake.count(Route::CreateKey), 1);
    assert_eq!(env.fake.count(Route::GetKey), 2);
    assert_eq!(env.fake.count(Route::ListKeys), 1);
    assert_eq!(env.fake.count(Route::ListVersions), 1);
    assert_eq!(env.fake.count(Route::UpdateKey), 1);
    assert_eq!(env.fake.count(Route::Sign), 1);
    assert_eq!(env.fake.count(Route::DeleteKey), 1);
    assert_eq!(env.fake.count(Route::ManagedIdentity), 0);
    assert_eq!(env.fake.count(Route::Any), 10);
    let log = env.fake.requests();
    let create = &log[1];
    assert_eq!(create.method, "POST");
    assert_eq!(create.path, "/keys/a/create");
    assert_eq!(create.query, format!("api-version={API}"));
    assert_eq!(create.status, 200);
    assert_eq!(
        create.authorization.as_deref(),
        Some(format!("Bearer {}", env.token).as_str())
    );
    assert_eq!(
        serde_json::from_str::<Value>(&create.body).unwrap(),
        json!({"kty": "EC"})
    );
    assert_eq!(log[9].route, Route::Any);
    assert_eq!(log[9].status, 404);
    // Debug output hides credentials.
    let dbg = format!("{:?}", log);
    assert!(dbg.contains("/keys/a/create"), "Debug is still useful");
    assert!(!dbg.contains(&env.token));
    assert!(!dbg.contains(FakeAzure::CLIENT_SECRET));
    env.fake.reset_log();
    assert_eq!(env.fake.count(Route::Any), 0);
    assert!(env.fake.requests().is_empty());
    assert_eq!(env.fake.issued_tokens(), vec![env.token.clone()]);
}

// ---------------------------------------------------------------------------------------
// Transport: TLS versions, keep-alive, chunked bodies, odd input, shutdown

fn provider_for(version: rustls::ProtocolVersion) -> Arc<rustls::crypto::CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites.retain(|s| s.version().version == version);
    assert!(!p.cipher_suites.is_empty());
    Arc::new(p)
}

#[test]
fn ureq_over_tls12_and_tls13() {
    let fake = FakeAzure::start();
    for v in [
        rustls::ProtocolVersion::TLSv1_2,
        rustls::ProtocolVersion::TLSv1_3,
    ] {
        let agent = agent_with(&fake, Some(provider_for(v)));
        let token = secret_token(&agent, &fake);
        let r = call(
            &agent,
            "GET",
            &format!("{}keys?api-version={API}", fake.vault_uri()),
            Some(&token),
            None,
        );
        assert_eq!(r.status, 200, "{v:?}");
    }
}

/// Raw rustls client: checks the negotiated version and both SANs.
#[test]
fn raw_tls_versions_and_sans() {
    let fake = FakeAzure::start();
    let mut roots = rustls::RootCertStore::empty();
    let ca = rustls::pki_types::CertificateDer::from(
        ureq::tls::Certificate::from_pem(fake.ca_pem().as_bytes())
            .unwrap()
            .der()
            .to_vec(),
    );
    roots.add(ca).unwrap();
    // The PEM file holds the same CA.
    assert_eq!(
        std::fs::read_to_string(fake.ca_pem_path()).unwrap(),
        fake.ca_pem()
    );
    let roots = Arc::new(roots);
    for (version, name) in [
        (&rustls::version::TLS12, "127.0.0.1"),
        (&rustls::version::TLS13, "localhost"),
        (&rustls::version::TLS12, "localhost"),
        (&rustls::version::TLS13, "127.0.0.1"),
    ] {
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(Arc::clone(&roots))
        .with_no_client_auth();
        let server_name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(cfg), server_name).unwrap();
        let sock = TcpStream::connect(fake.https_addr()).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, sock);
        tls.write_all(b"GET /keys HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = Vec::new();
        let _ = tls.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 400"), "{name}: {text}");
        assert_eq!(tls.conn.protocol_version(), Some(version.version));
    }
    // A name outside the SANs is rejected.
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let server_name = rustls::pki_types::ServerName::try_from("example.com").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(cfg), server_name).unwrap();
    let sock = TcpStream::connect(fake.https_addr()).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    assert!(tls.write_all(b"GET / HTTP/1.1\r\n\r\n").is_err());
}

fn raw_plain(fake: &FakeAzure) -> TcpStream {
    let s = TcpStream::connect(fake.http_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads one response with a Content-Length body; returns (status line, body).
fn read_response(s: &mut TcpStream) -> (String, String) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "EOF in head");
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    (
        head.lines().next().unwrap().to_string(),
        String::from_utf8(body).unwrap(),
    )
}

#[test]
fn keep_alive_and_chunked_request_bodies() {
    let fake = FakeAzure::start();
    let mut s = raw_plain(&fake);
    // Chunked body (with extension and trailer), then two more requests on the same socket.
    s.write_all(
        b"POST /msi/token HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n",
    )
    .unwrap();
    let (line, _) = read_response(&mut s);
    assert_eq!(line, "HTTP/1.1 405 Method Not Allowed");
    assert_eq!(fake.requests()[0].body, "hello, world");
    s.write_all(b"GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net HTTP/1.1\r\nMetadata: true\r\n\r\n")
        .unwrap();
    let (line, body) = read_response(&mut s);
    assert_eq!(line, "HTTP/1.1 200 OK", "{body}");
    // Content-Length body, pipelined with the next request in one write.
    s.write_all(
        b"POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /y HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let (line, _) = read_response(&mut s);
    assert_eq!(line, "HTTP/1.1 404 Not Found");
    let (line, _) = read_response(&mut s);
    assert_eq!(line, "HTTP/1.1 404 Not Found");
    let mut rest = Vec::new();
    assert_eq!(
        s.read_to_end(&mut rest).unwrap(),
        0,
        "closed after Connection: close"
    );
    let log = fake.requests();
    assert_eq!(log.len(), 4);
    assert_eq!(log[2].body, "abc");
    assert_eq!(log[3].path, "/y");

    // ureq streaming a body from a reader (chunked) over TLS.
    let agent = agent(&fake);
    let token = secret_token(&agent, &fake);
    let body = json!({"kty": "EC", "crv": "P-384"})
        .to_string()
        .into_bytes();
    let mut resp = agent
        .post(format!(
            "{}keys/streamed/create?api-version={API}",
            fake.vault_uri()
        ))
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .send(ureq::SendBody::from_owned_reader(std::io::Cursor::new(
            body,
        )))
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let v: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(v["key"]["crv"], "P-384");
    let header = |r: &RecordedRequest, n: &str| {
        r.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    let streamed = fake.requests().pop().unwrap();
    assert_eq!(
        header(&streamed, "transfer-encoding").as_deref(),
        Some("chunked"),
        "ureq streams reader bodies chunked"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&streamed.body).unwrap()["crv"],
        "P-384"
    );
    // A byte-slice body goes with Content-Length.
    let r = call(
        &agent,
        "POST",
        &format!("{}keys/sized/create?api-version={API}", fake.vault_uri()),
        Some(&token),
        Some(json!({"kty": "EC"})),
    );
    assert_eq!(r.status, 200);
    let sized = fake.requests().pop().unwrap();
    assert!(header(&sized, "transfer-encoding").is_none());
    assert_eq!(
        header(&sized, "content-length"),
        Some(sized.body.len().to_string())
    );
}

#[test]
fn odd_input_never_kills_the_server() {
    let fake = FakeAzure::start();
    let cases: Vec<Vec<u8>> = vec![
        b"GARBAGE\r\n\r\n".to_vec(),
        b"GET\r\n\r\n".to_vec(),
        b"GET / HTTP/2.0\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nno-colon-header\r\n\r\n".to_vec(),
        b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n".to_vec(),
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".to_vec(),
        b"POST / HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n".to_vec(),
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX".to_vec(),
        b"GET /\xff\xfe HTTP/1.1\r\n\r\n".to_vec(),
        {
            let mut v = b"GET / HTTP/1.1\r\nX: ".to_vec();
            v.extend(std::iter::repeat_n(b'a', 70 * 1024));
            v
        },
    ];
    for (i, c) in cases.iter().enumerate() {
        let mut s = raw_plain(&fake);
        let _ = s.write_all(c);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.starts_with("HTTP/1.1 4"),
            "case {i}: expected a 4xx, got {text:?}"
        );
    }
    // Abrupt closes, half-sent requests, and non-TLS bytes on the TLS port.
    for c in [
        &b""[..],
        b"GET / HT",
        b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nab",
    ] {
        let mut s = raw_plain(&fake);
        let _ = s.write_all(c);
        drop(s);
    }
    for c in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3],
        &[0u8; 100],
    ] {
        let mut s = TcpStream::connect(fake.https_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(c);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out); // closed by the server (maybe after a TLS alert)
        assert!(!out.starts_with(b"HTTP/"));
    }
    // Still serving on both listeners.
    let agent = agent(&fake);
    let token = secret_token(&agent, &fake);
    let r = call(
        &agent,
        "GET",
        &format!("{}keys?api-version={API}", fake.vault_uri()),
        Some(&token),
        None,
    );
    assert_eq!(r.status, 200);
    let mut s = raw_plain(&fake);
    s.write_all(b"GET /x HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s).0, "HTTP/1.1 404 Not Found");
}

#[test]
fn drop_closes_idle_connections_and_listeners() {
    for _ in 0..10 {
        let fake = FakeAzure::start();
        let agent = agent(&fake);
        // A pooled keep-alive TLS connection and an idle plain one.
        secret_token(&agent, &fake);
        let mut idle = raw_plain(&fake);
        idle.write_all(b"GET /x HTTP/1.1\r\n\r\n").unwrap();
        read_response(&mut idle);
        let ca_path = fake.ca_pem_path();
        assert!(ca_path.exists());
        // A request stuck in injected latency must not hold up Drop.
        fake.set_latency(Duration::from_secs(30));
        let vault = fake.vault_uri();
        let a2 = agent.clone();
        let pending = std::thread::spawn(move || {
            try_call(
                &a2,
                "GET",
                &format!("{vault}keys?api-version={API}"),
                None,
                None,
            )
        });
        let t = Instant::now();
        drop(fake);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "drop took {:?}",
            t.elapsed()
        );
        let mut rest = Vec::new();
        assert_eq!(
            idle.read_to_end(&mut rest).unwrap_or(0),
            0,
            "idle socket closed"
        );
        assert!(!ca_path.exists(), "temp CA file removed");
        let res = pending.join().unwrap();
        assert!(res.is_err() || res.unwrap().status != 200);
    }
}

#[test]
fn fake_clock_drives_key_times() {
    let env = Env::new();
    let start = env.fake.now();
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((wall - start).abs() < 600.0, "defaults to real time");
    env.fake.set_now(5000.0);
    env.fake.advance(0.5);
    assert_eq!(env.fake.now(), 5000.5);
    let r = env.req("POST", "keys/t/create", Some(json!({"kty": "EC"})));
    // Whole seconds on the wire, as Key Vault sends them (Microsoft's Go SDK decodes an
    // int64); the fake keeps the fraction (snapshot below).
    assert_eq!(r.json()["attributes"]["created"], json!(5000));
    env.fake.advance(86400.0 * 15.0);
    let r = env.req(
        "PATCH",
        "keys/t/",
        Some(json!({"key_ops": ["sign", "verify"]})),
    );
    assert_eq!(r.json()["attributes"]["updated"], json!(5000 + 86400 * 15));
    let k = &env.fake.keys()[0].versions[0];
    assert_eq!(k.created, 5000.5);
    assert_eq!(k.updated, 5000.5 + 86400.0 * 15.0);
}

#[test]
fn limit_signs_answers_429_with_retry_after_once_the_burst_is_spent() {
    let env = Env::new();
    let v = env
        .fake
        .insert_key("k", FakeKeyType::EcP256, &[], 0.0, 0.0, true);
    // One token per 1000 s: no refill during the test, whatever the machine's speed.
    env.fake.limit_signs(0.001, 3.0);
    let body = json!({"alg": "ES256", "value": b64e(&[7u8; 32])});
    let sign = || env.req("POST", &format!("keys/k/{v}/sign"), Some(body.clone()));
    for _ in 0..3 {
        assert_eq!(sign().status, 200);
    }
    let r = sign();
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    assert_eq!(r.json()["error"]["code"], "Throttled");
    assert_eq!(env.fake.throttled_signs(), 1);
    // Only signing is limited.
    assert_eq!(env.req("GET", "keys/k", None).status, 200);
    // A new limit starts with a full bucket; 0 turns the limit off.
    env.fake.limit_signs(0.001, 1.0);
    assert_eq!(sign().status, 200);
    assert_eq!(sign().status, 429);
    env.fake.limit_signs(0.0, 0.0);
    for _ in 0..5 {
        assert_eq!(sign().status, 200);
    }
    assert_eq!(env.fake.throttled_signs(), 2);
}
