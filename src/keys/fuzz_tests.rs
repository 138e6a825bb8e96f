//! Bounded fuzz/property tests of the key material conversions (JWK → PKIX, Key Vault
//! signatures → SPIRE's format), key naming, and startup discovery fed with random list
//! results. Invariant: never a panic; a result is either well-formed or a clear error.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use p256::elliptic_curve::sec1::ToEncodedPoint;

use super::convert::{decode_b64, parse_jwk, signature_to_spire, MALFORMED_SIGNATURE};
use super::discovery::{self, SharedKeyMatcher};
use super::naming::{is_valid_name, key_tags, new_key_name, spire_key_id};
use crate::azure::types::{
    AzureError, CreateKeyParams, JsonWebKey, KeyBundle, KeyItem, KeyVaultApi, UpdateKeyParams,
};
use crate::fuzz::{json_value, mutate, scaled, Rng, EDGE_NUMBER_STRINGS};
use crate::plugin::proto::keymanager::KeyType;

// ---------------------------------------------------------------------------------------------
// A minimal DER reader, independent of the code under test.

/// (tag, content, rest) of the first TLV in `b`.
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, b| (a << 8) | *b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The unsigned value of a minimally encoded DER INTEGER, or None if it is not one.
fn der_unsigned(content: &[u8]) -> Option<&[u8]> {
    match content {
        [] => None,
        [0] => Some(&content[1..]),
        [0, b, ..] if *b & 0x80 != 0 => Some(&content[1..]),
        [0, ..] => None,                   // non-minimal
        [b, ..] if *b & 0x80 != 0 => None, // negative
        _ => Some(content),
    }
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|x| **x == 0).count();
    &b[n..]
}

// ---------------------------------------------------------------------------------------------
// JWK → PKIX

fn valid_jwks() -> Vec<JsonWebKey> {
    let p256 = p256::SecretKey::from_slice(&[3u8; 32])
        .unwrap()
        .public_key()
        .to_encoded_point(false);
    let p384 = p384::SecretKey::from_slice(&[5u8; 48])
        .unwrap()
        .public_key()
        .to_encoded_point(false);
    let mut n = vec![0xC5u8; 256];
    n[255] |= 1;
    vec![
        JsonWebKey {
            kty: Some("EC".into()),
            crv: Some("P-256".into()),
            x: Some(URL_SAFE_NO_PAD.encode(p256.x().unwrap())),
            y: Some(URL_SAFE_NO_PAD.encode(p256.y().unwrap())),
            ..Default::default()
        },
        JsonWebKey {
            kty: Some("EC-HSM".into()),
            crv: Some("P-384".into()),
            x: Some(URL_SAFE_NO_PAD.encode(p384.x().unwrap())),
            y: Some(STANDARD.encode(p384.y().unwrap())),
            ..Default::default()
        },
        JsonWebKey {
            kty: Some("RSA".into()),
            n: Some(URL_SAFE_NO_PAD.encode(&n)),
            e: Some("AQAB".into()),
            ..Default::default()
        },
        JsonWebKey {
            kty: Some("RSA-HSM".into()),
            n: Some(URL_SAFE_NO_PAD.encode([vec![0u8], vec![0xABu8; 512]].concat())),
            e: Some("AQAB".into()),
            ..Default::default()
        },
    ]
}

/// Random base64 text around the sizes that matter, in the encodings Key Vault and lenient
/// peers use, or plain garbage.
fn b64_field(rng: &mut Rng) -> String {
    let len = *rng.pick(&[
        0usize, 1, 2, 3, 16, 31, 32, 33, 47, 48, 49, 64, 128, 255, 256, 257, 511, 512, 513,
    ]);
    let mut bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
    if rng.one_in(4) && !bytes.is_empty() {
        let zeros = rng.below(bytes.len()) + 1;
        bytes[..zeros].fill(0);
    }
    match rng.below(6) {
        0 => STANDARD.encode(&bytes),
        1 => format!(" {}= ", URL_SAFE_NO_PAD.encode(&bytes)),
        2 => rng.lossy_string(40),
        3 => EDGE_NUMBER_STRINGS[rng.below(EDGE_NUMBER_STRINGS.len())].to_string(),
        _ => URL_SAFE_NO_PAD.encode(&bytes),
    }
}

fn random_jwk(rng: &mut Rng) -> JsonWebKey {
    let opt = |rng: &mut Rng, v: String| if rng.one_in(6) { None } else { Some(v) };
    let kty = rng
        .pick(&[
            "EC", "EC-HSM", "RSA", "RSA-HSM", "oct", "OKP", "", "ec", "EC ",
        ])
        .to_string();
    let crv = rng
        .pick(&["P-256", "P-384", "P-521", "P-256K", "", "p-256"])
        .to_string();
    JsonWebKey {
        kty: opt(rng, kty),
        crv: opt(rng, crv),
        n: {
            let v = b64_field(rng);
            opt(rng, v)
        },
        e: {
            let v = b64_field(rng);
            opt(rng, v)
        },
        x: {
            let v = b64_field(rng);
            opt(rng, v)
        },
        y: {
            let v = b64_field(rng);
            opt(rng, v)
        },
        ..Default::default()
    }
}

/// Invariants of `parse_jwk`: a success is a well-formed SubjectPublicKeyInfo of the type
/// the JWK names (EC points on their curve); a failure is a short, non-empty message.
fn check_jwk(jwk: &JsonWebKey) {
    match parse_jwk(jwk) {
        Ok(parsed) => {
            let (tag, spki, rest) = tlv(&parsed.pkix).expect("SPKI is DER");
            assert!(tag == 0x30 && rest.is_empty(), "{jwk:?}");
            let (_, alg, bits) = tlv(spki).expect("AlgorithmIdentifier");
            let (bit_tag, bits, end) = tlv(bits).expect("BIT STRING");
            assert!(bit_tag == 0x03 && end.is_empty() && bits.first() == Some(&0));
            let kty = jwk.kty.as_deref().unwrap_or_default();
            match parsed.key_type {
                KeyType::EcP256 | KeyType::EcP384 => {
                    assert!(kty.starts_with("EC"), "{jwk:?}");
                    assert!(jwk.n.is_none() && jwk.e.is_none(), "{jwk:?}");
                    use p256::pkcs8::DecodePublicKey;
                    let ok = if parsed.key_type == KeyType::EcP256 {
                        assert_eq!(jwk.crv.as_deref(), Some("P-256"));
                        p256::PublicKey::from_public_key_der(&parsed.pkix).is_ok()
                    } else {
                        assert_eq!(jwk.crv.as_deref(), Some("P-384"));
                        p384::PublicKey::from_public_key_der(&parsed.pkix).is_ok()
                    };
                    assert!(ok, "EC PKIX does not parse: {jwk:?}");
                }
                KeyType::Rsa2048 | KeyType::Rsa4096 => {
                    assert!(kty.starts_with("RSA"), "{jwk:?}");
                    assert!(
                        jwk.crv.is_none() && jwk.x.is_none() && jwk.y.is_none(),
                        "{jwk:?}"
                    );
                    let (seq, key, _) = tlv(&bits[1..]).expect("RSAPublicKey");
                    assert_eq!(seq, 0x30);
                    let (t, n, rest) = tlv(key).expect("modulus");
                    assert_eq!(t, 0x02);
                    let n = der_unsigned(n).expect("modulus is a positive minimal INTEGER");
                    let bits_len = if parsed.key_type == KeyType::Rsa2048 {
                        256
                    } else {
                        512
                    };
                    assert_eq!(n.len(), bits_len);
                    // Exactly 2048 / 4096 bits, and odd.
                    assert!(n[0] & 0x80 != 0 && n[n.len() - 1] & 1 == 1, "{jwk:?}");
                    let (t, e, rest) = tlv(rest).expect("exponent");
                    assert!(t == 0x02 && rest.is_empty());
                    let e = der_unsigned(e).expect("exponent is a positive minimal INTEGER");
                    assert!(!e.is_empty() && e.len() <= 4, "{jwk:?}");
                    let e = e.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b));
                    assert!(e >= 3 && e % 2 == 1 && e < 1 << 31, "{jwk:?}");
                }
                KeyType::UnspecifiedKeyType => panic!("unspecified key type from {jwk:?}"),
            }
            assert!(!alg.is_empty());
        }
        Err(e) => {
            let e = e.to_string();
            assert!(!e.is_empty() && e.len() < 200 && !e.contains('\n'), "{e:?}");
        }
    }
}

#[test]
fn random_jwks_never_panic() {
    let mut rng = Rng::new(0x5EED_0001);
    for _ in 0..scaled(20_000) {
        check_jwk(&random_jwk(&mut rng));
    }
}

#[test]
fn mutated_valid_jwks_never_panic() {
    let valid = valid_jwks();
    for jwk in &valid {
        assert!(parse_jwk(jwk).is_ok(), "{jwk:?}");
    }
    let mut rng = Rng::new(0x5EED_0002);
    let mut still_ok = 0;
    for _ in 0..scaled(20_000) {
        let mut jwk = rng.pick(&valid).clone();
        let donor = rng.pick(&valid).clone();
        let field = match rng.below(6) {
            0 => &mut jwk.kty,
            1 => &mut jwk.crv,
            2 => &mut jwk.n,
            3 => &mut jwk.e,
            4 => &mut jwk.x,
            _ => &mut jwk.y,
        };
        let donor_text = donor.x.or(donor.n).unwrap_or_default();
        *field = match field.take() {
            Some(v) if !rng.one_in(8) => Some(mutate(&mut rng, &v, &donor_text)),
            _ => rng.one_in(2).then(|| donor_text.clone()),
        };
        if parse_jwk(&jwk).is_ok() {
            still_ok += 1;
        }
        check_jwk(&jwk);
    }
    assert!(still_ok > 100, "only {still_ok} mutants parsed");
}

#[test]
fn base64_decoding_never_panics() {
    let mut rng = Rng::new(0x5EED_0003);
    for _ in 0..scaled(20_000) {
        let s = if rng.one_in(2) {
            rng.lossy_string(64)
        } else {
            let field = b64_field(&mut rng);
            mutate(&mut rng, &field, "-_+/=")
        };
        if let Ok(b) = decode_b64(&s) {
            // Whatever decoded re-encodes to the same text (modulo padding and alphabet).
            let canon: String = s
                .trim()
                .trim_end_matches('=')
                .replace('+', "-")
                .replace('/', "_");
            assert_eq!(URL_SAFE_NO_PAD.encode(&b), canon, "{s:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Signatures

#[test]
fn signature_conversion_is_total_and_exact() {
    let mut rng = Rng::new(0x5EED_0004);
    let types = [
        KeyType::EcP256,
        KeyType::EcP384,
        KeyType::Rsa2048,
        KeyType::Rsa4096,
        KeyType::UnspecifiedKeyType,
    ];
    for _ in 0..scaled(20_000) {
        let kt = *rng.pick(&types);
        let len = if rng.one_in(2) {
            *rng.pick(&[
                0usize, 1, 63, 64, 65, 95, 96, 97, 255, 256, 257, 511, 512, 513,
            ])
        } else {
            rng.below(600)
        };
        let mut raw: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        // Leading zeros and all-zero halves exercise the DER INTEGER edge cases.
        if rng.one_in(3) && !raw.is_empty() {
            let at = rng.below(raw.len());
            let end = (at + 1 + rng.below(48)).min(raw.len());
            raw[at..end].fill(0);
        }
        if rng.one_in(4) && !raw.is_empty() {
            let at = rng.below(raw.len());
            raw[at] |= 0x80;
        }
        let out = signature_to_spire(kt, &raw);
        match kt {
            KeyType::EcP256 | KeyType::EcP384 => {
                let half = if kt == KeyType::EcP256 { 32 } else { 48 };
                let usable = raw.len() == 2 * half
                    && !strip_zeros(&raw[..half]).is_empty()
                    && !strip_zeros(&raw[half..]).is_empty();
                match out {
                    Ok(der) => {
                        assert!(usable, "accepted {raw:?}");
                        let (tag, seq, rest) = tlv(&der).expect("DER");
                        assert!(tag == 0x30 && rest.is_empty());
                        let (t, r, rest) = tlv(seq).expect("r");
                        let (t2, s, rest) = tlv(rest).expect("s");
                        assert!(t == 0x02 && t2 == 0x02 && rest.is_empty());
                        assert_eq!(der_unsigned(r), Some(strip_zeros(&raw[..half])));
                        assert_eq!(der_unsigned(s), Some(strip_zeros(&raw[half..])));
                    }
                    Err(e) => {
                        assert!(!usable, "refused a usable signature");
                        assert_eq!(e.to_string(), MALFORMED_SIGNATURE);
                    }
                }
            }
            KeyType::Rsa2048 | KeyType::Rsa4096 => {
                let want = if kt == KeyType::Rsa2048 { 256 } else { 512 };
                match out {
                    Ok(sig) => assert!(raw.len() == want && sig == raw),
                    Err(e) => {
                        assert_ne!(raw.len(), want);
                        assert!(
                            e.to_string().starts_with("malformed signature response"),
                            "{e}"
                        );
                    }
                }
            }
            KeyType::UnspecifiedKeyType => assert!(out.is_err()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Naming

#[test]
fn any_spire_key_id_gets_a_valid_name_and_round_trips() {
    let mut rng = Rng::new(0x5EED_0005);
    let pieces = [
        "x509-CA-",
        "JWT-Signer-",
        "bundle-acme-",
        "example.org",
        "acme_account+key",
        "A",
        "-",
        ".",
        "_",
        "+",
        "/",
        " ",
        "é",
        "\u{0}",
        "%",
        "\u{1F600}",
    ];
    for i in 0..scaled(20_000) {
        let id = match i % 3 {
            0 => rng.lossy_string(200),
            1 => rng.soup(&pieces, 40),
            _ => "a".repeat(rng.below(300)),
        };
        let name = new_key_name(&id).unwrap();
        assert!(is_valid_name(&name), "{id:?} → {name:?}");
        let tags = key_tags("example.org", "sid", &id);
        let back = spire_key_id(&name, &tags);
        if id.is_empty() {
            // An empty tag is "no tag"; the name layout then has nothing after the uuid.
            assert!(back.unwrap_or_default().is_empty());
        } else {
            assert_eq!(back.as_deref(), Some(id.as_str()));
        }
        // Random names and tags never panic the reverse mapping.
        let mut odd = HashMap::new();
        if rng.one_in(2) {
            odd.insert("spire-key-id".to_string(), rng.lossy_string(8));
        }
        let _ = spire_key_id(&rng.lossy_string(80), &odd);
    }
}

// ---------------------------------------------------------------------------------------------
// Discovery over random list results

const TD: &str = "example.org";
const SID: &str = "00000000-0000-4000-8000-000000000001";

/// A vault that answers `list_keys` and `get_key` from random JSON.
struct JsonVault {
    items: Vec<KeyItem>,
    bundles: HashMap<String, KeyBundle>,
    list_versions: Mutex<Vec<KeyItem>>,
}

fn unavailable(what: &str) -> AzureError {
    AzureError::Service {
        status: 404,
        code: Some("KeyNotFound".into()),
        inner_code: None,
        message: format!("{what}: not in this fake"),
    }
}

impl KeyVaultApi for JsonVault {
    fn create_key(&self, _: &str, _: &CreateKeyParams) -> Result<KeyBundle, AzureError> {
        Err(unavailable("create"))
    }
    fn get_key(&self, name: &str, _: Option<&str>) -> Result<KeyBundle, AzureError> {
        self.bundles
            .get(name)
            .cloned()
            .ok_or_else(|| unavailable(name))
    }
    fn list_keys(&self) -> Result<Vec<KeyItem>, AzureError> {
        Ok(self.items.clone())
    }
    fn list_key_versions(&self, _: &str) -> Result<Vec<KeyItem>, AzureError> {
        Ok(self
            .list_versions
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default())
    }
    fn update_key(&self, _: &str, _: &str, _: &UpdateKeyParams) -> Result<KeyBundle, AzureError> {
        Err(unavailable("update"))
    }
    fn delete_key(&self, _: &str) -> Result<(), AzureError> {
        Err(unavailable("delete"))
    }
    fn sign(&self, _: &str, _: &str, _: &str, _: &[u8]) -> Result<Vec<u8>, AzureError> {
        Err(unavailable("sign"))
    }
}

struct Shared;

impl SharedKeyMatcher for Shared {
    fn shared_key_id(&self, name: &str) -> Option<String> {
        name.strip_prefix("shared-").map(str::to_string)
    }
}

/// A list item as JSON: mostly plausible (our tags, parseable kids, odd times), sometimes
/// random.
fn item_json(rng: &mut Rng, i: usize) -> serde_json::Value {
    use serde_json::json;
    if rng.one_in(6) {
        return json_value(rng, 3, &["kid", "attributes", "tags", "created", "enabled"]);
    }
    let name = match rng.below(4) {
        0 => format!("shared-JWT-Signer-{}", rng.below(3)),
        1 => format!(
            "spire-key-00000000-0000-4000-8000-{:012}-x509-CA-{}",
            i,
            rng.below(3)
        ),
        2 => rng.lossy_string(12),
        _ => format!("k{i}"),
    };
    let created = match rng.below(5) {
        0 => json!(rng.below(5) as f64),
        1 => json!(EDGE_NUMBER_STRINGS[rng.below(EDGE_NUMBER_STRINGS.len())]),
        2 => serde_json::Value::Null,
        3 => json!(1.0e9 + rng.below(3) as f64),
        _ => json!(1.7e9),
    };
    let mut tags = serde_json::Map::new();
    if !rng.one_in(8) {
        tags.insert(
            "spire-server-td".into(),
            json!(if rng.one_in(6) { "other.org" } else { TD }),
        );
    }
    if !rng.one_in(8) {
        tags.insert(
            "spire-server-id".into(),
            json!(if rng.one_in(6) { "other" } else { SID }),
        );
    }
    if rng.one_in(2) {
        tags.insert(
            "spire-key-id".into(),
            json!(format!("x509-CA-{}", rng.below(3))),
        );
    }
    json!({
        "kid": format!("https://v.vault.azure.net/keys/{name}"),
        "attributes": {"enabled": !rng.one_in(5), "created": created, "updated": created},
        "tags": tags,
    })
}

#[test]
fn discovery_over_random_listings_never_panics() {
    let valid = valid_jwks();
    let mut rng = Rng::new(0x5EED_0006);
    let mut found_any = 0;
    for _ in 0..scaled(2_000) {
        let n = rng.below(12);
        let items: Vec<KeyItem> = (0..n)
            .filter_map(|i| serde_json::from_value(item_json(&mut rng, i)).ok())
            .collect();
        let mut bundles = HashMap::new();
        for item in &items {
            let Some(name) = item.name() else { continue };
            let mut key = if rng.one_in(5) {
                random_jwk(&mut rng)
            } else {
                rng.pick(&valid).clone()
            };
            key.kid = Some(if rng.one_in(8) {
                rng.lossy_string(20)
            } else {
                format!(
                    "https://v.vault.azure.net/keys/{name}/{:032x}",
                    rng.next_u64()
                )
            });
            let bundle = KeyBundle {
                key,
                attributes: item.attributes.clone(),
                tags: item.tags.clone(),
            };
            bundles.insert(name.to_string(), bundle);
        }
        let versions: Vec<KeyItem> = (0..rng.below(4))
            .filter_map(|i| serde_json::from_value(item_json(&mut rng, i)).ok())
            .collect();
        let vault = JsonVault {
            items,
            bundles,
            list_versions: Mutex::new(versions),
        };
        let shared = Shared;
        let matcher: Option<&dyn SharedKeyMatcher> = rng.one_in(2).then_some(&shared as _);
        match discovery::discover(&vault, TD, SID, matcher, &|_| false) {
            Ok(found) => {
                found_any += found.entries.len();
                let mut ids: Vec<&str> =
                    found.entries.iter().map(|e| e.spire_id.as_str()).collect();
                ids.sort();
                ids.dedup();
                assert_eq!(ids.len(), found.entries.len(), "one entry per SPIRE id");
                for e in &found.entries {
                    assert!(
                        !found
                            .duplicates
                            .iter()
                            .any(|d| d.eq_ignore_ascii_case(&e.name)),
                        "a key in use queued for deletion"
                    );
                    assert!(parse_jwk_roundtrip_ok(e));
                }
                for d in &found.duplicates {
                    // Only this server's own, non-shared keys are ever deleted.
                    let ours = vault.items.iter().any(|i| {
                        i.name() == Some(d.as_str())
                            && i.tags.get("spire-server-id").map(String::as_str) == Some(SID)
                            && i.tags.get("spire-server-td").map(String::as_str) == Some(TD)
                    });
                    assert!(ours, "deleting {d:?}, which is not this server's");
                    assert!(matcher.is_none_or(|m| m.shared_key_id(d).is_none()));
                }
            }
            Err(e) => assert!(!e.message.is_empty() && !e.message.contains('\n'), "{e}"),
        }
    }
    assert!(found_any > 200, "discovery rarely succeeded ({found_any})");
}

fn parse_jwk_roundtrip_ok(e: &super::cache::KeyEntry) -> bool {
    e.public_key.fingerprint == super::convert::fingerprint(&e.public_key.pkix_data)
        && e.public_key.id == e.spire_id
        && !e.version.is_empty()
}

#[test]
fn regression_a_key_listed_twice_is_never_its_own_duplicate() {
    // Found by `discovery_over_random_listings_never_panics`: a listing that names one key
    // twice (pages shifting while a key is created) made discovery keep the key and also
    // queue it for deletion as an "older duplicate" of itself.
    let jwk = valid_jwks().remove(0);
    let name = "spire-key-00000000-0000-4000-8000-000000000009-x509-CA-A";
    let item: KeyItem = serde_json::from_value(serde_json::json!({
        "kid": format!("https://v.vault.azure.net/keys/{name}"),
        "attributes": {"enabled": true, "created": 1.7e9},
        "tags": {"spire-server-td": TD, "spire-server-id": SID, "spire-key-id": "x509-CA-A"},
    }))
    .unwrap();
    let mut upper = item.clone();
    upper.kid = upper.kid.to_ascii_uppercase().replace(
        "HTTPS://V.VAULT.AZURE.NET/KEYS",
        "https://v.vault.azure.net/keys",
    );
    let mut bundle = KeyBundle {
        key: jwk,
        ..Default::default()
    };
    bundle.key.kid = Some(format!("https://v.vault.azure.net/keys/{name}/{:032x}", 1));
    for listing in [vec![item.clone(), item.clone()], vec![item.clone(), upper]] {
        let vault = JsonVault {
            items: listing,
            bundles: HashMap::from([
                (name.to_string(), bundle.clone()),
                (name.to_ascii_uppercase(), bundle.clone()),
            ]),
            list_versions: Mutex::new(Vec::new()),
        };
        let found = discovery::discover(&vault, TD, SID, None, &|_| false).unwrap();
        assert_eq!(found.entries.len(), 1);
        assert!(found.duplicates.is_empty(), "{:?}", found.duplicates);
    }
}

#[test]
fn regression_errors_do_not_echo_long_values() {
    // Found by `mutated_valid_jwks_never_panic`: a 700-character `crv` came back verbatim in
    // the error (and so in SPIRE's error and the logs), newlines included.
    let long = format!("P-{}\nnext line", "9".repeat(700));
    for jwk in [
        JsonWebKey {
            kty: Some("EC".into()),
            crv: Some(long.clone()),
            ..Default::default()
        },
        JsonWebKey {
            kty: Some(long.clone()),
            ..Default::default()
        },
    ] {
        let e = parse_jwk(&jwk).unwrap_err().to_string();
        assert!(e.len() < 100 && !e.contains('\n'), "{e:?}");
        assert!(e.ends_with('…'), "{e:?}");
    }
    let short = JsonWebKey {
        kty: Some("oct".into()),
        ..Default::default()
    };
    assert_eq!(
        parse_jwk(&short).unwrap_err().to_string(),
        "unsupported key type: oct"
    );
}
