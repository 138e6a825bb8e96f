//! Absolute `http(s)` URLs, parsed with `http::Uri` (the parser ureq builds its requests with),
//! plus the few rules ureq does not enforce: no user info, a plain host name or IP literal,
//! and a port in 1..=65535.

use http::uri::Scheme;
use http::Uri;

/// Why a string is not a usable `http(s)` URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UrlError {
    /// `http::Uri` refuses it, or it has no scheme or host.
    #[error("not an absolute http(s) URL")]
    Invalid,
    #[error("unsupported scheme (only http and https)")]
    Scheme,
    /// `user[:password]@` before the host: a credential has no place in a setting.
    #[error("user info in URLs is not supported")]
    UserInfo,
    /// Not a DNS name, an IPv4 address or a bracketed IPv6 literal.
    #[error("bad host")]
    Host,
    /// Not a number in 1..=65535.
    #[error("bad port")]
    Port,
}

/// Parses `s` as an absolute `http` or `https` URL; `uri.scheme()`, `host()` and `port_u16()`
/// are then what the checks here accepted.
pub(crate) fn parse_http_url(s: &str) -> Result<Uri, UrlError> {
    // `http::Uri` does not look into the fragment; a URL with a blank or a control character
    // anywhere is a mistake (and would break the one-line error that quotes it).
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(UrlError::Invalid);
    }
    let uri: Uri = s.parse().map_err(|_| UrlError::Invalid)?;
    match uri.scheme() {
        Some(scheme) if *scheme == Scheme::HTTPS || *scheme == Scheme::HTTP => {}
        Some(_) => return Err(UrlError::Scheme),
        None => return Err(UrlError::Invalid),
    }
    let authority = uri.authority().ok_or(UrlError::Invalid)?;
    if authority.as_str().contains('@') {
        return Err(UrlError::UserInfo);
    }
    let host = authority.host();
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => {
            !v6.is_empty()
                && v6
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.'))
        }
        None => {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        }
    };
    if !host_ok {
        return Err(UrlError::Host);
    }
    // `port_u16` reads nothing from a port that is not a number: anything after the host is
    // a port part, and it has to be one.
    if authority.as_str().len() > host.len() && authority.port_u16().is_none_or(|p| p == 0) {
        return Err(UrlError::Port);
    }
    Ok(uri)
}

/// Whether `s` is an `https` URL [`parse_http_url`] accepts.
pub(crate) fn is_https_url(s: &str) -> bool {
    parse_http_url(s).is_ok_and(|u| u.scheme() == Some(&Scheme::HTTPS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        use UrlError::*;
        for (input, want) in [
            (
                "https://v.vault.azure.net/",
                Ok(("v.vault.azure.net", None, "/")),
            ),
            (
                "https://v.vault.azure.net",
                Ok(("v.vault.azure.net", None, "/")),
            ),
            (
                "HTTPS://Example.vault.azure.net/",
                Ok(("Example.vault.azure.net", None, "/")),
            ),
            ("http://h:80/a/b/", Ok(("h", Some(80), "/a/b/"))),
            ("https://h:443//", Ok(("h", Some(443), "//"))),
            ("https://127.0.0.1:8443", Ok(("127.0.0.1", Some(8443), "/"))),
            ("https://[::1]:8443/", Ok(("[::1]", Some(8443), "/"))),
            ("https://[::1]", Ok(("[::1]", None, "/"))),
            (
                "https://[::ffff:1.2.3.4]/x",
                Ok(("[::ffff:1.2.3.4]", None, "/x")),
            ),
            ("https://h/p?q=1&r=2#frag", Ok(("h", None, "/p?q=1&r=2"))),
            ("https://h?q", Ok(("h", None, "?q"))),
            (
                "https://h_x.local:65535/",
                Ok(("h_x.local", Some(65535), "/")),
            ),
            ("example.vault.azure.net", Err(Invalid)),
            ("/path", Err(Invalid)),
            ("https://", Err(Invalid)),
            ("https:///path", Err(Invalid)),
            (" https://h/", Err(Invalid)),
            ("https://h/a b", Err(Invalid)),
            ("https://h/\n", Err(Invalid)),
            ("https://h/#a b", Err(Invalid)),
            // Refused by `http::Uri`, so ureq could never send them (the hand-written check
            // before it let these through).
            ("https://bücher.example/", Err(Invalid)),
            ("https://h/a<b", Err(Invalid)),
            ("https://h/?q=\"", Err(Invalid)),
            ("https://[::1/", Err(Invalid)),
            ("https://[::1]x/", Err(Port)),
            ("https://a:b:443/", Err(Invalid)),
            ("ftp://h/", Err(Scheme)),
            ("https://user@h/", Err(UserInfo)),
            ("https://user:pw@h:443/", Err(UserInfo)),
            ("https://:443/", Err(Host)),
            ("https://h$x/", Err(Host)),
            ("https://h%41/", Err(Invalid)),
            ("https://[zz]/", Err(Host)),
            ("https://[]/", Err(Host)),
            ("https://h:/", Err(Port)),
            ("https://h:0/", Err(Port)),
            ("https://h:notaport/", Err(Port)),
            ("https://h:99999/", Err(Port)),
            ("https://[::1]:0/", Err(Port)),
        ] {
            let got = parse_http_url(input).map(|u| {
                let pq = u.path_and_query().map_or("/", |p| p.as_str()).to_owned();
                (u.host().unwrap_or("").to_owned(), u.port_u16(), pq)
            });
            let want = want.map(|(h, p, pq)| (h.to_owned(), p, pq.to_owned()));
            assert_eq!(got, want, "{input:?}");
        }
        assert!(is_https_url("https://h/"));
        assert!(!is_https_url("http://h/"));
    }
}
