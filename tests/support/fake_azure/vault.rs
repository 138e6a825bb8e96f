//! Key Vault keys data plane: create, get, list, list versions, update, delete, sign
//! (plus get-deleted and purge on /deletedkeys).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::http::{percent_encode, Request, Response};
use super::keys::{b64_decode_lenient, b64url, new_version_id};
use super::{FakeAzure, FakeKeyType, Route, Shared, StoredKey, StoredVersion};
use super::{Material, SignError};

/// Real Key Vault caps `maxresults` at 25.
const MAX_PAGE: usize = 25;
const RECOVERABLE_DAYS: f64 = 90.0;

pub(super) enum VaultOp {
    List,
    Create { name: String },
    Get { name: String, version: String },
    ListVersions { name: String },
    Update { name: String, version: String },
    Delete { name: String },
    Sign { name: String, version: String },
    GetDeleted { name: String },
    Purge { name: String },
    MethodNotAllowed,
}

/// Maps a vault request to its route and operation; `None` for paths outside the vault API.
pub(super) fn classify(method: &str, segs: &[&str]) -> Option<(Route, VaultOp)> {
    let s = |x: &str| x.to_string();
    let r = match (method, segs) {
        ("GET", ["keys"] | ["keys", ""]) => (Route::ListKeys, VaultOp::List),
        (_, ["keys"] | ["keys", ""]) => (Route::Any, VaultOp::MethodNotAllowed),
        ("POST", ["keys", n, "create"]) => (Route::CreateKey, VaultOp::Create { name: s(n) }),
        ("GET", ["keys", n, "versions"]) => {
            (Route::ListVersions, VaultOp::ListVersions { name: s(n) })
        }
        ("GET", ["keys", n]) => (
            Route::GetKey,
            VaultOp::Get {
                name: s(n),
                version: String::new(),
            },
        ),
        ("GET", ["keys", n, v]) => (
            Route::GetKey,
            VaultOp::Get {
                name: s(n),
                version: s(v),
            },
        ),
        ("PATCH", ["keys", n]) => (
            Route::UpdateKey,
            VaultOp::Update {
                name: s(n),
                version: String::new(),
            },
        ),
        ("PATCH", ["keys", n, v]) => (
            Route::UpdateKey,
            VaultOp::Update {
                name: s(n),
                version: s(v),
            },
        ),
        ("DELETE", ["keys", n] | ["keys", n, ""]) => {
            (Route::DeleteKey, VaultOp::Delete { name: s(n) })
        }
        ("POST", ["keys", n, v, "sign"]) => (
            Route::Sign,
            VaultOp::Sign {
                name: s(n),
                version: s(v),
            },
        ),
        ("GET", ["deletedkeys", n]) => (Route::Any, VaultOp::GetDeleted { name: s(n) }),
        ("DELETE", ["deletedkeys", n]) => (Route::Any, VaultOp::Purge { name: s(n) }),
        (_, ["keys", ..] | ["deletedkeys", ..]) => (Route::Any, VaultOp::MethodNotAllowed),
        _ => return None,
    };
    Some(r)
}

pub(super) fn kv_error(status: u16, code: &str, message: &str, inner: Option<&str>) -> Response {
    let mut err = json!({"code": code, "message": message});
    if let (Some(inner), Some(obj)) = (inner, err.as_object_mut()) {
        obj.insert("innererror".into(), json!({"code": inner}));
    }
    Response::json(status, &json!({ "error": err }))
}

fn bad(message: &str) -> Response {
    kv_error(400, "BadParameter", message, None)
}

fn not_found(name: &str, version: &str) -> Response {
    let id = if version.is_empty() {
        name.to_string()
    } else {
        format!("{name}/{version}")
    };
    kv_error(
        404,
        "KeyNotFound",
        &format!("A key with (name/id) {id} was not found in this key vault."),
        None,
    )
}

fn valid_name(name: &str) -> bool {
    (1..=127).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Times are whole unix seconds on the wire, as Key Vault sends them (an int64 in its REST
/// spec): Microsoft's Go SDK fails to decode a fractional `created` ("cannot unmarshal number
/// … into Go value of type int64"). The fake keeps sub-second times internally (ordering).
fn num(t: f64) -> Value {
    if t.is_finite() && t.abs() < 9.0e15 {
        Value::from(t.floor() as i64)
    } else {
        Value::from(0)
    }
}

pub(super) fn handle(shared: &Shared, op: VaultOp, req: &Request) -> Response {
    if matches!(op, VaultOp::MethodNotAllowed) {
        return kv_error(405, "MethodNotAllowed", "method not allowed", None);
    }
    let Some(api_version) = req.query_param("api-version").filter(|v| !v.is_empty()) else {
        return bad("The request URI must contain an api-version query parameter.");
    };
    if !authorized(shared, req) {
        let challenge = format!(
            "Bearer authorization=\"{}{}\", resource=\"https://vault.azure.net\"",
            shared.base,
            FakeAzure::TENANT
        );
        return kv_error(
            401,
            "Unauthorized",
            "AKV10000: Request is missing a Bearer or PoP token.",
            None,
        )
        .with_header("WWW-Authenticate", &challenge);
    }
    let name = match &op {
        VaultOp::List | VaultOp::MethodNotAllowed => None,
        VaultOp::Create { name }
        | VaultOp::Get { name, .. }
        | VaultOp::ListVersions { name }
        | VaultOp::Update { name, .. }
        | VaultOp::Delete { name }
        | VaultOp::Sign { name, .. }
        | VaultOp::GetDeleted { name }
        | VaultOp::Purge { name } => Some(name),
    };
    if let Some(name) = name {
        if !valid_name(name) {
            return bad(&format!(
                "The key name '{name}' is invalid: it must match ^[0-9a-zA-Z-]{{1,127}}$"
            ));
        }
    }
    let base = request_base(shared, req);
    let base = base.as_str();
    match op {
        VaultOp::List => list_keys(shared, base, req, &api_version),
        VaultOp::Create { name } => create(shared, base, &name, req),
        VaultOp::Get { name, version } => get(shared, base, &name, &version),
        VaultOp::ListVersions { name } => list_versions(shared, base, &name, req, &api_version),
        VaultOp::Update { name, version } => update(shared, base, &name, &version, req),
        VaultOp::Delete { name } => delete(shared, base, &name),
        VaultOp::Sign { name, version } => sign(shared, base, &name, &version, req),
        VaultOp::GetDeleted { name } => get_deleted(shared, base, &name),
        VaultOp::Purge { name } => purge(shared, &name),
        VaultOp::MethodNotAllowed => kv_error(405, "MethodNotAllowed", "method not allowed", None),
    }
}

/// The vault base URL as the client addressed it (`https://<Host>/`), so `kid`s and
/// `nextLink`s name the host the client asked for, as Key Vault's do: a client reaching the
/// fake as `<name>.vault.azure.net` through a proxy must be sent back there, not to the
/// loopback address. The default port is left out like Key Vault does; a missing or odd Host
/// falls back to the listener's own address.
fn request_base(shared: &Shared, req: &Request) -> String {
    let host = req.header("host").unwrap_or_default().trim();
    let host = host.strip_suffix(":443").unwrap_or(host);
    let sane = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if sane {
        format!("https://{}/", host.to_ascii_lowercase())
    } else {
        shared.base.clone()
    }
}

fn authorized(shared: &Shared, req: &Request) -> bool {
    let Some(value) = req.header("authorization") else {
        return false;
    };
    let Some((scheme, token)) = value.split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer") && shared.state().valid_tokens.contains(token.trim())
}

fn attributes(v: &StoredVersion) -> Value {
    json!({
        "enabled": v.enabled,
        "created": num(v.created),
        "updated": num(v.updated),
        "recoveryLevel": "Recoverable+Purgeable",
        "recoverableDays": RECOVERABLE_DAYS as i64,
        "exportable": false,
    })
}

fn tags_json(tags: &HashMap<String, String>) -> Value {
    Value::Object(
        tags.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

fn bundle(base: &str, key: &StoredKey, v: &StoredVersion) -> Value {
    let mut jwk = Map::new();
    jwk.insert(
        "kid".into(),
        format!("{base}keys/{}/{}", key.name, v.version).into(),
    );
    jwk.insert("kty".into(), v.kty.clone().into());
    jwk.insert("key_ops".into(), json!(v.key_ops));
    for (member, value) in v.material.jwk_members() {
        jwk.insert(member.into(), value.into());
    }
    let mut out = Map::new();
    out.insert("key".into(), Value::Object(jwk));
    out.insert("attributes".into(), attributes(v));
    if !v.tags.is_empty() {
        out.insert("tags".into(), tags_json(&v.tags));
    }
    Value::Object(out)
}

fn deleted_bundle(base: &str, key: &StoredKey, v: &StoredVersion, deleted: f64) -> Value {
    let mut b = bundle(base, key, v);
    if let Some(obj) = b.as_object_mut() {
        obj.insert(
            "recoveryId".into(),
            format!("{base}deletedkeys/{}", key.name).into(),
        );
        obj.insert("deletedDate".into(), num(deleted));
        obj.insert(
            "scheduledPurgeDate".into(),
            num(deleted + RECOVERABLE_DAYS * 86400.0),
        );
    }
    b
}

fn parse_object(req: &Request) -> Result<Map<String, Value>, Response> {
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(bad("The request body must be a JSON object.")),
    }
}

fn parse_key_ops(v: Option<&Value>) -> Result<Option<Vec<String>>, Response> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad("key_ops must be an array of strings"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(bad("key_ops must be an array of strings")),
    }
}

fn parse_tags(v: Option<&Value>) -> Result<Option<HashMap<String, String>>, Response> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|s| (k.clone(), s.to_string()))
                    .ok_or_else(|| bad("tag values must be strings"))
            })
            .collect::<Result<HashMap<_, _>, _>>()
            .map(Some),
        Some(_) => Err(bad("tags must be an object")),
    }
}

fn parse_enabled(v: Option<&Value>) -> Result<Option<bool>, Response> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(attrs)) => match attrs.get("enabled") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(bad("attributes.enabled must be a boolean")),
        },
        Some(_) => Err(bad("attributes must be an object")),
    }
}

fn deleted_conflict(name: &str) -> Response {
    kv_error(
        409,
        "Conflict",
        &format!(
            "Key {name} is currently in a deleted but recoverable state, and its name cannot be \
             reused; in this state, the key can only be recovered or purged."
        ),
        Some("ObjectIsDeletedButRecoverable"),
    )
}

fn create(shared: &Shared, base: &str, name: &str, req: &Request) -> Response {
    let body = match parse_object(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(kty) = body.get("kty").and_then(Value::as_str).map(str::to_string) else {
        return bad("kty is required");
    };
    let kind = match kty.as_str() {
        "EC" | "EC-HSM" => match body.get("crv").and_then(Value::as_str).unwrap_or("P-256") {
            "P-256" => FakeKeyType::EcP256,
            "P-384" => FakeKeyType::EcP384,
            other => return bad(&format!("Unsupported curve: {other}")),
        },
        "RSA" | "RSA-HSM" => match body.get("key_size").map(Value::as_u64) {
            None | Some(Some(2048)) => FakeKeyType::Rsa2048,
            Some(Some(4096)) => FakeKeyType::Rsa4096,
            _ => return bad("Unsupported key_size (the fake supports 2048 and 4096)"),
        },
        other => return bad(&format!("Unsupported kty: {other}")),
    };
    let key_ops = match parse_key_ops(body.get("key_ops")) {
        Ok(Some(ops)) => ops,
        // Real Key Vault defaults to every operation the key type allows.
        Ok(None) => match kind {
            FakeKeyType::EcP256 | FakeKeyType::EcP384 => vec!["sign".into(), "verify".into()],
            FakeKeyType::Rsa2048 | FakeKeyType::Rsa4096 => [
                "encrypt",
                "decrypt",
                "sign",
                "verify",
                "wrapKey",
                "unwrapKey",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        },
        Err(r) => return r,
    };
    let enabled = match parse_enabled(body.get("attributes")) {
        Ok(e) => e.unwrap_or(true),
        Err(r) => return r,
    };
    let tags = match parse_tags(body.get("tags")) {
        Ok(t) => t.unwrap_or_default(),
        Err(r) => return r,
    };
    if shared.state().keys.is_deleted(name) {
        return deleted_conflict(name);
    }
    // Key generation (RSA especially) runs without the state lock.
    let material = Arc::new(Material::generate(kind));
    let mut st = shared.state();
    // Deleted meanwhile: checked again under the lock.
    if st.keys.is_deleted(name) {
        return deleted_conflict(name);
    }
    let now = st.now;
    let key = st.keys.push(
        name,
        StoredVersion {
            version: new_version_id(),
            created: now,
            updated: now,
            enabled,
            tags,
            key_ops,
            kty,
            material,
        },
    );
    match key.versions.last() {
        Some(v) => Response::json(200, &bundle(base, key, v)),
        None => kv_error(500, "InternalError", "version vanished", None),
    }
}

fn get(shared: &Shared, base: &str, name: &str, version: &str) -> Response {
    let st = shared.state();
    let Some(key) = st.keys.live(name) else {
        return not_found(name, "");
    };
    match key.find_version(version) {
        Some(v) => Response::json(200, &bundle(base, key, v)),
        None => not_found(name, version),
    }
}

struct Paging {
    offset: usize,
    max: usize,
    /// This request is the empty page inserted before `offset`.
    empty_marker: bool,
}

fn paging(req: &Request) -> Result<Paging, Response> {
    let max = match req.query_param("maxresults") {
        None => MAX_PAGE,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => return Err(bad("maxresults must be an integer between 1 and 25")),
        },
    };
    let (offset, empty_marker) = match req.query_param("$skiptoken") {
        None => (0, false),
        Some(t) => {
            let (digits, marker) = match t.strip_prefix('E') {
                Some(rest) => (rest.to_string(), true),
                None => (t, false),
            };
            match digits.parse::<usize>() {
                Ok(n) => (n, marker),
                Err(_) => return Err(bad("invalid $skiptoken")),
            }
        }
    };
    Ok(Paging {
        offset,
        max,
        empty_marker,
    })
}

/// Builds one page of a list response from all items.
fn page(
    items: Vec<Value>,
    p: &Paging,
    empty_pages: bool,
    link_base: &str,
    api_version: &str,
) -> Response {
    let link = |token: String| {
        format!(
            "{link_base}?api-version={}&$skiptoken={token}&maxresults={}",
            percent_encode(api_version),
            p.max
        )
    };
    if p.empty_marker {
        let next = (p.offset < items.len()).then(|| link(p.offset.to_string()));
        return Response::json(200, &json!({"value": [], "nextLink": next}));
    }
    let end = p.offset.saturating_add(p.max).min(items.len());
    let value: Vec<Value> = items
        .get(p.offset.min(end)..end)
        .map(<[Value]>::to_vec)
        .unwrap_or_default();
    let next = (end < items.len()).then(|| {
        if empty_pages {
            link(format!("E{end}"))
        } else {
            link(end.to_string())
        }
    });
    Response::json(200, &json!({"value": value, "nextLink": next}))
}

fn list_keys(shared: &Shared, base: &str, req: &Request, api_version: &str) -> Response {
    let p = match paging(req) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let st = shared.state();
    // Only the requested page is rendered (the rest are placeholders `page` never sends): a
    // vault of thousands of keys would otherwise cost the fake milliseconds per page.
    let window = p.offset..p.offset.saturating_add(p.max);
    let items: Vec<Value> = st
        .keys
        .values()
        .filter(|k| k.deleted.is_none() && !k.versions.is_empty())
        .enumerate()
        .filter_map(|(i, k)| {
            let v = k.versions.last()?;
            if p.empty_marker || !window.contains(&i) {
                return Some(Value::Null);
            }
            let mut item = Map::new();
            item.insert("kid".into(), format!("{base}keys/{}", k.name).into());
            item.insert("attributes".into(), attributes(v));
            if !v.tags.is_empty() {
                item.insert("tags".into(), tags_json(&v.tags));
            }
            Some(Value::Object(item))
        })
        .collect();
    let base = format!("{base}keys");
    page(items, &p, st.empty_pages, &base, api_version)
}

fn list_versions(
    shared: &Shared,
    base: &str,
    name: &str,
    req: &Request,
    api_version: &str,
) -> Response {
    let p = match paging(req) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let st = shared.state();
    let Some(key) = st.keys.live(name) else {
        return not_found(name, "");
    };
    let items: Vec<Value> = key
        .versions
        .iter()
        .map(|v| {
            let mut item = Map::new();
            item.insert(
                "kid".into(),
                format!("{base}keys/{}/{}", key.name, v.version).into(),
            );
            item.insert("attributes".into(), attributes(v));
            if !v.tags.is_empty() {
                item.insert("tags".into(), tags_json(&v.tags));
            }
            Value::Object(item)
        })
        .collect();
    let base = format!("{base}keys/{}/versions", key.name);
    page(items, &p, st.empty_pages, &base, api_version)
}

fn update(shared: &Shared, base: &str, name: &str, version: &str, req: &Request) -> Response {
    let body = match parse_object(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let key_ops = match parse_key_ops(body.get("key_ops")) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let enabled = match parse_enabled(body.get("attributes")) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let tags = match parse_tags(body.get("tags")) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let mut st = shared.state();
    let now = st.now;
    let Some(key) = st.keys.live_mut(name) else {
        return not_found(name, "");
    };
    let Some(v) = key.find_version_mut(version) else {
        return not_found(name, version);
    };
    if let Some(ops) = key_ops {
        v.key_ops = ops;
    }
    if let Some(e) = enabled {
        v.enabled = e;
    }
    // A tags object replaces the whole tag set.
    if let Some(t) = tags {
        v.tags = t;
    }
    v.updated = now;
    let v_version = v.version.clone();
    match key.find_version(&v_version) {
        Some(v) => Response::json(200, &bundle(base, key, v)),
        None => not_found(name, version),
    }
}

fn delete(shared: &Shared, base: &str, name: &str) -> Response {
    let mut st = shared.state();
    let now = st.now;
    let Some(key) = st.keys.delete(name, now) else {
        return not_found(name, "");
    };
    match key.versions.last() {
        Some(v) => Response::json(200, &deleted_bundle(base, key, v, now)),
        None => not_found(name, ""),
    }
}

fn get_deleted(shared: &Shared, base: &str, name: &str) -> Response {
    let st = shared.state();
    let Some((key, deleted)) = st
        .keys
        .get(&name.to_ascii_lowercase())
        .and_then(|k| k.deleted.map(|d| (k, d)))
    else {
        return kv_error(
            404,
            "KeyNotFound",
            &format!("Deleted key {name} was not found in this key vault."),
            None,
        );
    };
    match key.versions.last() {
        Some(v) => Response::json(200, &deleted_bundle(base, key, v, deleted)),
        None => not_found(name, ""),
    }
}

fn purge(shared: &Shared, name: &str) -> Response {
    let mut st = shared.state();
    if st.keys.is_deleted(name) {
        st.keys.purge(name);
        Response::empty(204)
    } else {
        kv_error(
            404,
            "KeyNotFound",
            &format!("Deleted key {name} was not found in this key vault."),
            None,
        )
    }
}

fn sign(shared: &Shared, base: &str, name: &str, version: &str, req: &Request) -> Response {
    let body = match parse_object(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(alg) = body.get("alg").and_then(Value::as_str) else {
        return bad("alg is required");
    };
    let Some(digest) = body
        .get("value")
        .and_then(Value::as_str)
        .and_then(b64_decode_lenient)
    else {
        return bad("value must be a base64url digest");
    };
    let (material, kid) = {
        let st = shared.state();
        let Some(key) = st.keys.live(name) else {
            return not_found(name, "");
        };
        let Some(v) = key.find_version(version) else {
            return not_found(name, version);
        };
        if !v.enabled {
            return kv_error(
                403,
                "Forbidden",
                "Operation \"sign\" is not allowed on a disabled key.",
                None,
            );
        }
        if !v.key_ops.iter().any(|o| o == "sign") {
            return kv_error(
                403,
                "Forbidden",
                "Operation \"sign\" is not permitted on this key (key_ops).",
                None,
            );
        }
        (
            Arc::clone(&v.material),
            format!("{base}keys/{}/{}", key.name, v.version),
        )
    };
    match material.sign(alg, &digest) {
        Ok(sig) => Response::json(200, &json!({"kid": kid, "value": b64url(&sig)})),
        Err(SignError::UnsupportedAlgorithm) => bad(&format!("Unsupported algorithm: {alg}")),
        Err(SignError::AlgorithmKeyMismatch) => bad(&format!(
            "Key and signing algorithm are incompatible ({alg})."
        )),
        Err(SignError::DigestLength { expected, got }) => bad(&format!(
            "Invalid digest length for {alg}: expected {expected} bytes, got {got}."
        )),
        Err(SignError::Internal) => kv_error(500, "InternalError", "signing failed", None),
    }
}

/// Fault: re-encodes the signature one byte short.
pub(super) fn shorten_signature(resp: Response) -> Response {
    rewrite_json(resp, |v| {
        if let Some(sig) = v
            .get("value")
            .and_then(Value::as_str)
            .and_then(b64_decode_lenient)
        {
            let short = sig.get(..sig.len().saturating_sub(1)).unwrap_or(&[]);
            if let Some(obj) = v.as_object_mut() {
                obj.insert("value".into(), Value::String(b64url(short)));
            }
        }
    })
}

/// Fault: re-signs the requested digest with a fresh key of the type the answer's algorithm
/// and signature length imply (RSA size from the signature length).
pub(super) fn foreign_signature(req: &Request, resp: Response) -> Response {
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let alg = body.get("alg").and_then(Value::as_str).unwrap_or("");
    let Some(digest) = body
        .get("value")
        .and_then(Value::as_str)
        .and_then(b64_decode_lenient)
    else {
        return resp;
    };
    rewrite_json(resp, |v| {
        let sig_len = v
            .get("value")
            .and_then(Value::as_str)
            .and_then(b64_decode_lenient)
            .map_or(0, |s| s.len());
        let kind = match alg {
            "ES256" => FakeKeyType::EcP256,
            "ES384" => FakeKeyType::EcP384,
            _ if sig_len == 512 => FakeKeyType::Rsa4096,
            _ => FakeKeyType::Rsa2048,
        };
        if let (Ok(sig), Some(obj)) = (
            Material::generate(kind).sign(alg, &digest),
            v.as_object_mut(),
        ) {
            obj.insert("value".into(), Value::String(b64url(&sig)));
        }
    })
}

/// Fault: the JWK claims another key type / curve than stored.
pub(super) fn swap_key_type(resp: Response) -> Response {
    rewrite_json(resp, |v| {
        let Some(jwk) = v.get_mut("key").and_then(Value::as_object_mut) else {
            return;
        };
        let kty = jwk.get("kty").and_then(Value::as_str).unwrap_or("");
        if kty.starts_with("EC") {
            let other = if jwk.get("crv").and_then(Value::as_str) == Some("P-256") {
                "P-384"
            } else {
                "P-256"
            };
            jwk.insert("crv".into(), other.into());
        } else {
            jwk.insert("kty".into(), "EC".into());
            jwk.insert("crv".into(), "P-256".into());
        }
    })
}

fn rewrite_json(mut resp: Response, f: impl FnOnce(&mut Value)) -> Response {
    if let Ok(mut v) = serde_json::from_slice::<Value>(&resp.body) {
        f(&mut v);
        resp.body = v.to_string().into_bytes();
    }
    resp
}
