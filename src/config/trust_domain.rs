//! SPIFFE trust-domain check with go-spiffe's `spiffeid.TrustDomainFromString` rules and
//! error texts (SPIRE's pluginconf wraps them as
//! `server core configuration trust_domain is malformed: <err>`).

const ERR_BAD_TRUST_DOMAIN_CHAR: &str =
    "trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores";
const ERR_BAD_PATH_SEGMENT_CHAR: &str =
    "path segment characters are limited to letters, numbers, dots, dashes, and underscores";
const ERR_DOT_SEGMENT: &str = "path cannot contain dot segments";
const ERR_NO_LEADING_SLASH: &str = "path must have a leading slash";
const ERR_EMPTY_SEGMENT: &str = "path cannot contain empty segments";
const ERR_MISSING_TRUST_DOMAIN: &str = "trust domain is missing";
const ERR_TRAILING_SLASH: &str = "path cannot have a trailing slash";
const ERR_WRONG_SCHEME: &str = "scheme is missing or invalid";

const SCHEME_PREFIX: &str = "spiffe://";

fn is_trust_domain_char(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'.' | b'_')
}

fn is_path_segment_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_')
}

/// The trust-domain name of `id_or_name`: a bare name (`example.org`) or, as go-spiffe also
/// accepts, a SPIFFE ID (`spiffe://example.org/path`).
pub(crate) fn parse(id_or_name: &str) -> Result<String, &'static str> {
    if id_or_name.is_empty() {
        return Err(ERR_MISSING_TRUST_DOMAIN);
    }
    if id_or_name.contains(":/") {
        return trust_domain_of_id(id_or_name);
    }
    if id_or_name.bytes().all(is_trust_domain_char) {
        Ok(id_or_name.to_owned())
    } else {
        Err(ERR_BAD_TRUST_DOMAIN_CHAR)
    }
}

fn trust_domain_of_id(id: &str) -> Result<String, &'static str> {
    let Some(rest) = id.strip_prefix(SCHEME_PREFIX) else {
        return Err(ERR_WRONG_SCHEME);
    };
    let td_end = rest.find('/').unwrap_or(rest.len());
    let (td, path) = rest.split_at(td_end);
    if !td.bytes().all(is_trust_domain_char) {
        return Err(ERR_BAD_TRUST_DOMAIN_CHAR);
    }
    if td.is_empty() {
        return Err(ERR_MISSING_TRUST_DOMAIN);
    }
    validate_path(path)?;
    Ok(td.to_owned())
}

fn validate_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Ok(());
    }
    if !path.starts_with('/') {
        return Err(ERR_NO_LEADING_SLASH);
    }
    // Segments after the leading slash; go-spiffe checks characters as it goes, so the first
    // problem in reading order wins.
    let segments: Vec<&str> = path.get(1..).unwrap_or("").split('/').collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate() {
        if seg.bytes().any(|c| !is_path_segment_char(c)) {
            return Err(ERR_BAD_PATH_SEGMENT_CHAR);
        }
        match *seg {
            "" if i == last => return Err(ERR_TRAILING_SLASH),
            "" => return Err(ERR_EMPTY_SEGMENT),
            "." | ".." => return Err(ERR_DOT_SEGMENT),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_names() {
        assert_eq!(parse("example.org").unwrap(), "example.org");
        assert_eq!(parse("a-b_c.9").unwrap(), "a-b_c.9");
        assert_eq!(parse("Example.org"), Err(ERR_BAD_TRUST_DOMAIN_CHAR));
        assert_eq!(parse("example.org "), Err(ERR_BAD_TRUST_DOMAIN_CHAR));
        assert_eq!(parse("exa mple"), Err(ERR_BAD_TRUST_DOMAIN_CHAR));
        assert_eq!(parse(""), Err(ERR_MISSING_TRUST_DOMAIN));
    }

    #[test]
    fn spiffe_ids() {
        assert_eq!(parse("spiffe://example.org").unwrap(), "example.org");
        assert_eq!(parse("spiffe://example.org/a/b").unwrap(), "example.org");
        assert_eq!(parse("http://example.org"), Err(ERR_WRONG_SCHEME));
        assert_eq!(parse("spiffe://"), Err(ERR_MISSING_TRUST_DOMAIN));
        assert_eq!(parse("spiffe://Ex.org"), Err(ERR_BAD_TRUST_DOMAIN_CHAR));
        assert_eq!(parse("spiffe://ex.org/"), Err(ERR_TRAILING_SLASH));
        assert_eq!(parse("spiffe://ex.org//a"), Err(ERR_EMPTY_SEGMENT));
        assert_eq!(parse("spiffe://ex.org/./a"), Err(ERR_DOT_SEGMENT));
        assert_eq!(parse("spiffe://ex.org/a/.."), Err(ERR_DOT_SEGMENT));
        assert_eq!(parse("spiffe://ex.org/a b"), Err(ERR_BAD_PATH_SEGMENT_CHAR));
    }
}
