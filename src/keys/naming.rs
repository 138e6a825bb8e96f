//! Key Vault names and tags for SPIRE keys.
//!
//! Standard names are `spire-key-<uuid>-<spire key id>`, exactly as SPIRE's Go plugin makes
//! them, so either plugin discovers the other's keys. Key Vault names allow only
//! `[0-9a-zA-Z-]` and 127 characters; SPIRE ids outside that (the ACME bundle endpoint's
//! `bundle-acme-example.org`, `bundle-acme-acme_account+key`) are encoded, and the original id
//! always travels in tag `spire-key-id`.

use std::collections::HashMap;

pub(crate) const TAG_TRUST_DOMAIN: &str = "spire-server-td";
pub(crate) const TAG_SERVER_ID: &str = "spire-server-id";
pub(crate) const TAG_KEY_ID: &str = "spire-key-id";
/// A tag every shared-keys-mode key carries; sweeps never delete such keys.
pub(crate) const TAG_SHARED: &str = "spire-shared-key";
/// Shared keys mode: the tag on a key's latest version claiming the next rotation,
/// `<nonce>|<unix secs>` (the claim protocol is described in `keys::shared`).
pub(crate) const TAG_ROTATION_CLAIM: &str = "spire-rotation-claim";

pub(crate) const NAME_PREFIX: &str = "spire-key-";
/// `spire-key-` + 36-char UUID + `-`: the offset where the Go plugin reads the SPIRE key id.
pub(crate) const ID_OFFSET: usize = 47;
pub(crate) const MAX_NAME_LEN: usize = 127;
const MAX_ID_PART: usize = MAX_NAME_LEN - ID_OFFSET;

pub(crate) fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN && name.bytes().all(name_byte)
}

fn name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

/// The name part for a SPIRE key id: the id itself when it is already a valid name fragment
/// (the Go plugin's layout), otherwise each byte outside `[0-9a-zA-Z-]` becomes `-xHH`
/// (`.` → `-x2e`), and an id still too long is cut and suffixed with a hash of the full id so
/// distinct ids never share a name.
pub(crate) fn encode_key_id(id: &str) -> String {
    let mut out = String::with_capacity(id.len() + 8);
    for b in id.bytes() {
        if name_byte(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("-x{b:02x}"));
        }
    }
    if out.len() > MAX_ID_PART {
        let digest = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
        let hash: String = digest.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        out.truncate(MAX_ID_PART - hash.len() - 1);
        out.push('-');
        out.push_str(&hash);
    }
    out
}

/// Whether `name` has the standard layout `spire-key-<uuid>-<id part>` (the Go plugin's, and
/// ours with encoded ids): the only keys the stale sweep may ever delete.
pub(crate) fn is_standard_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(NAME_PREFIX) else {
        return false;
    };
    is_valid_name(name)
        && rest.len() > 37
        && rest.as_bytes()[36] == b'-'
        // 36 characters parse only in the hyphenated 8-4-4-4-12 form.
        && uuid::Uuid::try_parse(&rest[..36]).is_ok()
}

/// A fresh standard name for `id`.
pub(crate) fn new_key_name(id: &str) -> Result<String, crate::random::RandomError> {
    let (uuid, id_part) = (fresh_uuid()?, encode_key_id(id));
    Ok(format!("{NAME_PREFIX}{uuid}-{id_part}"))
}

fn fresh_uuid() -> Result<uuid::Uuid, crate::random::RandomError> {
    #[cfg(test)]
    if let Some(u) = test_uuids::next() {
        return Ok(u);
    }
    crate::random::uuid_v4("a key name")
}

/// Reproducible key names for property tests: a failing seed must replay the same names, since
/// discovery breaks `created` ties by name.
#[cfg(test)]
pub(crate) mod test_uuids {
    use std::cell::RefCell;

    use azkv_testkit::Rng;

    thread_local! {
        static STATE: RefCell<Option<Rng>> = const { RefCell::new(None) };
    }

    /// Names made on this thread come from `seed` until `clear`.
    pub(crate) fn seed(seed: u64) {
        // Scrambled so that seed 0 (a zero state, which the generator lifts to 1) stays apart
        // from seed 1.
        STATE.with(|s| *s.borrow_mut() = Some(Rng::new(seed ^ 0x9E37_79B9_7F4A_7C15)));
    }

    pub(crate) fn clear() {
        STATE.with(|s| *s.borrow_mut() = None);
    }

    pub(super) fn next() -> Option<uuid::Uuid> {
        STATE.with(|s| {
            let mut state = s.borrow_mut();
            let rng = state.as_mut()?;
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&rng.next_u64().to_be_bytes());
            bytes[8..].copy_from_slice(&rng.next_u64().to_be_bytes());
            Some(uuid::Builder::from_random_bytes(bytes).into_uuid())
        })
    }
}

/// The SPIRE key id of a key owned by a server: tag `spire-key-id` when present (our keys),
/// otherwise the Go plugin's layout (everything after byte 47 of the name).
pub(crate) fn spire_key_id(name: &str, tags: &HashMap<String, String>) -> Option<String> {
    if let Some(id) = tags.get(TAG_KEY_ID).filter(|v| !v.is_empty()) {
        return Some(id.clone());
    }
    if name.len() > ID_OFFSET && name.is_char_boundary(ID_OFFSET) {
        Some(name[ID_OFFSET..].to_string())
    } else {
        None
    }
}

pub(crate) fn key_tags(
    trust_domain: &str,
    server_id: &str,
    key_id: &str,
) -> HashMap<String, String> {
    HashMap::from([
        (TAG_TRUST_DOMAIN.to_string(), trust_domain.to_string()),
        (TAG_SERVER_ID.to_string(), server_id.to_string()),
        (TAG_KEY_ID.to_string(), key_id.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_without_randomness_are_an_error() {
        let _g = crate::random::testing::fail_on_this_thread();
        let e = new_key_name("x509-CA-A").unwrap_err();
        assert!(e
            .to_string()
            .starts_with("failed to get random bytes for a key name: "));
    }

    #[test]
    fn spire_ids_keep_the_go_layout() {
        let name = new_key_name("x509-CA-A").unwrap();
        assert!(name.starts_with("spire-key-"));
        assert_eq!(&name[ID_OFFSET..], "x509-CA-A");
        assert!(is_valid_name(&name));
        assert_eq!(spire_key_id(&name, &HashMap::new()).unwrap(), "x509-CA-A");
    }

    #[test]
    fn acme_ids_become_valid_names_and_keep_the_id_in_a_tag() {
        for id in [
            "bundle-acme-example.org",
            "bundle-acme-acme_account+key",
            "bundle-acme-foo.bar+rsa",
        ] {
            let name = new_key_name(id).unwrap();
            assert!(is_valid_name(&name), "{name}");
            let tags = key_tags("td", "sid", id);
            assert_eq!(spire_key_id(&name, &tags).unwrap(), id);
        }
        assert_eq!(
            encode_key_id("bundle-acme-example.org"),
            "bundle-acme-example-x2eorg"
        );
        assert_ne!(encode_key_id("a.b"), encode_key_id("a+b"));
    }

    #[test]
    fn long_ids_are_cut_with_a_distinguishing_hash() {
        let a = format!("bundle-acme-{}.example.org", "a".repeat(120));
        let b = format!("bundle-acme-{}.example.net", "a".repeat(120));
        let (na, nb) = (new_key_name(&a).unwrap(), new_key_name(&b).unwrap());
        assert!(is_valid_name(&na) && is_valid_name(&nb));
        assert_eq!(na.len(), MAX_NAME_LEN);
        assert_ne!(na[ID_OFFSET..], nb[ID_OFFSET..]);
    }

    #[test]
    fn unparseable_names() {
        assert_eq!(spire_key_id("spire-key-short", &HashMap::new()), None);
        let mut tags = HashMap::new();
        tags.insert(TAG_KEY_ID.to_string(), String::new());
        assert_eq!(spire_key_id("x", &tags), None);
    }

    #[test]
    fn standard_layout() {
        assert!(is_standard_name(&new_key_name("x509-CA-A").unwrap()));
        assert!(is_standard_name(
            &new_key_name("bundle-acme-example.org").unwrap()
        ));
        assert!(is_standard_name(
            "spire-key-0F8E1A2B-3C4D-4E5F-8A9B-0C1D2E3F4A5B-x509-CA-A"
        ));
        for name in [
            "spire-key-0f8e1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b-", // no id
            "spire-key-0f8e1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b",  // no id, no dash
            "spire-key-0f8e1a2b3c4d4e5f8a9b0c1d2e3f4a5b-x509-CA-A", // simple form
            "spire-key-0f8e1a2g-3c4d-4e5f-8a9b-0c1d2e3f4a5b-x509-CA-A", // not hex
            "spire-key-0f8e1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5bx-x509-CA-A",
            "prod-db-key",
            "spire-example-org-JWT-Signer-A",
            "Spire-key-0f8e1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b-x509-CA-A",
            "spire-key-0f8e1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b-x509_CA",
        ] {
            assert!(!is_standard_name(name), "{name}");
        }
    }

    #[test]
    fn name_validation() {
        assert!(is_valid_name("a-B-9"));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("a_b"));
        assert!(!is_valid_name(&"a".repeat(128)));
    }
}
