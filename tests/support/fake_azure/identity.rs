//! Entra ID token endpoint (client secret, certificate assertion, federated token) and the
//! managed-identity endpoints (App Service and IMDS).

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::http::{parse_form, Request, Response};
use super::keys::{b64_decode_lenient, b64url};
use super::{FakeAzure, Shared};

const VAULT_RESOURCE: &str = "https://vault.azure.net";
const VAULT_SCOPE: &str = "https://vault.azure.net/.default";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Client id reported by the managed-identity endpoints when none is requested.
const MI_CLIENT_ID: &str = "22222222-2222-2222-2222-2222222222cc";

/// An opaque access token shaped like a JWT (clients must not rely on its content).
pub(super) fn make_token(now: f64, lifetime: u64) -> String {
    let header = b64url(br#"{"typ":"JWT","alg":"none","kid":"fake"}"#);
    let claims = json!({
        "aud": VAULT_RESOURCE,
        "iss": format!("https://sts.windows.net/{}/", FakeAzure::TENANT),
        "tid": FakeAzure::TENANT,
        "iat": now as i64,
        "exp": now as i64 + lifetime as i64,
        "jti": uuid::Uuid::new_v4().to_string(),
    });
    let sig = b64url(uuid::Uuid::new_v4().as_bytes());
    format!("{header}.{}.{sig}", b64url(claims.to_string().as_bytes()))
}

/// Entra-style error body.
pub(super) fn entra_error(status: u16, error: &str, description: &str) -> Response {
    Response::json(
        status,
        &json!({
            "error": error,
            "error_description": description,
            "error_codes": [],
            "timestamp": "2024-01-01 00:00:00Z",
            "trace_id": uuid::Uuid::new_v4().to_string(),
            "correlation_id": uuid::Uuid::new_v4().to_string(),
        }),
    )
}

fn scope_ok(scope: &str) -> bool {
    // MSAL appends "openid offline_access profile"; only the vault scope matters.
    scope.split(' ').any(|s| s == VAULT_SCOPE)
}

pub(super) fn token_endpoint(shared: &Shared, tenant: &str, req: &Request) -> Response {
    let form = parse_form(&String::from_utf8_lossy(&req.body));
    let field = |n: &str| form.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    if !tenant.eq_ignore_ascii_case(FakeAzure::TENANT) {
        return entra_error(
            400,
            "invalid_request",
            &format!("AADSTS90002: Tenant '{tenant}' not found."),
        );
    }
    if field("grant_type") != Some("client_credentials") {
        return entra_error(
            400,
            "unsupported_grant_type",
            "AADSTS70003: The app requested an unsupported grant type.",
        );
    }
    let Some(client_id) = field("client_id").filter(|c| !c.is_empty()) else {
        return entra_error(
            400,
            "invalid_request",
            "AADSTS900144: The request body must contain the following parameter: 'client_id'.",
        );
    };
    if !field("scope").is_some_and(scope_ok) {
        return entra_error(
            400,
            "invalid_scope",
            "AADSTS70011: The provided value for the input parameter 'scope' is not valid.",
        );
    }
    let authenticated = if let Some(secret) = field("client_secret") {
        if client_id == FakeAzure::CLIENT_ID && secret == FakeAzure::CLIENT_SECRET {
            Ok(())
        } else {
            Err("AADSTS7000215: Invalid client secret provided.".to_string())
        }
    } else if let Some(assertion) = field("client_assertion") {
        if field("client_assertion_type") != Some(JWT_BEARER) {
            return entra_error(
                400,
                "invalid_request",
                "AADSTS50027: client_assertion_type must be jwt-bearer.",
            );
        }
        check_assertion(shared, tenant, client_id, assertion)
    } else {
        return entra_error(
            400,
            "invalid_request",
            "AADSTS7000218: The request body must contain 'client_assertion' or 'client_secret'.",
        );
    };
    if let Err(msg) = authenticated {
        return entra_error(401, "invalid_client", &msg);
    }
    let (token, lifetime, _) = shared.issue_token();
    Response::json(
        200,
        &json!({
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": token,
        }),
    )
}

fn check_assertion(
    shared: &Shared,
    tenant: &str,
    client_id: &str,
    assertion: &str,
) -> Result<(), String> {
    let (federated, certs, now) = {
        let st = shared.state();
        (
            st.federated.get(client_id).cloned().unwrap_or_default(),
            st.client_certs.get(client_id).cloned().unwrap_or_default(),
            st.now,
        )
    };
    if federated.iter().any(|t| t == assertion) {
        return Ok(());
    }
    if certs.is_empty() {
        return Err(format!(
            "AADSTS700213: No matching federated identity record or certificate for client '{client_id}'."
        ));
    }
    let token_url = format!("{}{tenant}/oauth2/v2.0/token", shared.base);
    verify_cert_assertion(assertion, &certs, client_id, &token_url, now)
}

/// Checks a certificate-signed client assertion: x5t#S256 names a registered certificate,
/// the RS256/PS256 signature verifies with its key, and aud/iss/sub/exp/nbf are right.
fn verify_cert_assertion(
    assertion: &str,
    certs: &[Vec<u8>],
    client_id: &str,
    token_url: &str,
    now: f64,
) -> Result<(), String> {
    use rsa::pkcs8::DecodePublicKey as _;
    let mut parts = assertion.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("AADSTS50027: assertion is not a JWS compact token".into());
    };
    let header: Value = b64_decode_lenient(h64)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("AADSTS50027: bad assertion header")?;
    let claims: Value = b64_decode_lenient(p64)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("AADSTS50027: bad assertion payload")?;
    let sig = b64_decode_lenient(s64).ok_or("AADSTS50027: bad assertion signature encoding")?;

    let thumb = header
        .get("x5t#S256")
        .and_then(Value::as_str)
        .and_then(b64_decode_lenient)
        .ok_or("AADSTS700027: assertion header lacks x5t#S256")?;
    let cert = certs
        .iter()
        .find(|c| Sha256::digest(c)[..] == thumb[..])
        .ok_or("AADSTS700027: certificate thumbprint not registered for this client")?;
    let spki = cert_spki(cert).ok_or("AADSTS700027: registered certificate unparsable")?;
    let key = rsa::RsaPublicKey::from_public_key_der(spki)
        .map_err(|_| "AADSTS700027: registered certificate has no RSA key".to_string())?;
    let signed = format!("{h64}.{p64}");
    let hashed = Sha256::digest(signed.as_bytes());
    let verified = match header.get("alg").and_then(Value::as_str) {
        Some("RS256") => key.verify(rsa::Pkcs1v15Sign::new::<Sha256>(), &hashed, &sig),
        Some("PS256") => key.verify(rsa::Pss::new::<Sha256>(), &hashed, &sig),
        _ => return Err("AADSTS5002730: unsupported assertion alg (RS256/PS256)".into()),
    };
    verified.map_err(|_| "AADSTS700027: assertion signature invalid".to_string())?;

    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == token_url,
        Some(Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(token_url)),
        _ => false,
    };
    if !aud_ok {
        return Err(format!("AADSTS700016: assertion aud must be {token_url}"));
    }
    let str_claim = |n: &str| claims.get(n).and_then(Value::as_str);
    if str_claim("iss") != Some(client_id) || str_claim("sub") != Some(client_id) {
        return Err("AADSTS700023: assertion iss and sub must equal client_id".into());
    }
    let exp = claims.get("exp").and_then(Value::as_f64).unwrap_or(0.0);
    if exp <= now {
        return Err("AADSTS700024: client assertion has expired (or lacks exp)".into());
    }
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_f64) {
        // Allow 5 min of clock skew, like Entra.
        if nbf > now + 300.0 {
            return Err("AADSTS700024: client assertion is not yet valid".into());
        }
    }
    Ok(())
}

/// One DER element split off the front of some input.
struct Tlv<'a> {
    contents: &'a [u8],
    /// The whole element, header included.
    whole: &'a [u8],
    rest: &'a [u8],
}

fn der_tlv(input: &[u8]) -> Option<Tlv<'_>> {
    input.first()?; // tag byte (any tag is fine for walking)
    let first = *input.get(1)?;
    let (len, hdr) = if first < 0x80 {
        (first as usize, 2usize)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *input.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = hdr.checked_add(len)?;
    Some(Tlv {
        contents: input.get(hdr..end)?,
        whole: input.get(..end)?,
        rest: input.get(end..)?,
    })
}

/// Extracts the SubjectPublicKeyInfo element from an X.509 certificate.
fn cert_spki(cert: &[u8]) -> Option<&[u8]> {
    let cert_body = der_tlv(cert)?.contents;
    let tbs_certificate = der_tlv(cert_body)?.contents;
    let mut rest = tbs_certificate;
    // Optional [0] EXPLICIT version.
    if rest.first() == Some(&0xa0) {
        rest = der_tlv(rest)?.rest;
    }
    // serialNumber, signature, issuer, validity, subject.
    for _ in 0..5 {
        rest = der_tlv(rest)?.rest;
    }
    Some(der_tlv(rest)?.whole)
}

fn mi_resource(req: &Request) -> Result<String, Response> {
    match req.query_param("resource") {
        Some(r) if r.trim_end_matches('/') == VAULT_RESOURCE => Ok(r),
        Some(r) => Err(entra_error(
            400,
            "invalid_resource",
            &format!("the fake only issues tokens for {VAULT_RESOURCE}, not '{r}'"),
        )),
        None => Err(entra_error(
            400,
            "invalid_request",
            "Required query variable 'resource' is missing",
        )),
    }
}

fn mi_client_id(req: &Request) -> String {
    req.query_param("client_id")
        .unwrap_or_else(|| MI_CLIENT_ID.to_string())
}

/// App Service / Functions (api-version 2019-08-01, `X-IDENTITY-HEADER`).
pub(super) fn app_service(shared: &Shared, req: &Request) -> Response {
    if req.header("x-identity-header") != Some(shared.identity_header.as_str()) {
        return entra_error(401, "invalid_request", "missing or wrong X-IDENTITY-HEADER");
    }
    if req.query_param("api-version").as_deref() != Some("2019-08-01") {
        return entra_error(400, "invalid_request", "api-version must be 2019-08-01");
    }
    let resource = match mi_resource(req) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let (token, lifetime, now) = shared.issue_token();
    let expires_on = now as i64 + lifetime as i64;
    Response::json(
        200,
        &json!({
            "access_token": token,
            // A string on purpose: App Service sends it that way.
            "expires_on": expires_on.to_string(),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": mi_client_id(req),
        }),
    )
}

/// IMDS (api-version 2018-02-01, `Metadata: true`); every field is a string.
pub(super) fn imds(shared: &Shared, req: &Request) -> Response {
    if !req
        .header("metadata")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        return entra_error(
            400,
            "invalid_request",
            "Required metadata header not specified",
        );
    }
    if req.query_param("api-version").as_deref() != Some("2018-02-01") {
        return entra_error(400, "invalid_request", "api-version must be 2018-02-01");
    }
    let resource = match mi_resource(req) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let (token, lifetime, now) = shared.issue_token();
    let now_i = now as i64;
    Response::json(
        200,
        &json!({
            "access_token": token,
            "client_id": mi_client_id(req),
            "expires_in": lifetime.to_string(),
            "expires_on": (now_i + lifetime as i64).to_string(),
            "ext_expires_in": lifetime.to_string(),
            "not_before": now_i.to_string(),
            "resource": resource,
            "token_type": "Bearer",
        }),
    )
}
