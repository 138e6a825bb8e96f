//! Key Vault's 401 challenge: `WWW-Authenticate: Bearer authorization="https://login…/<tenant>",
//! resource="https://vault.azure.net"` (real Azure), `authorization_uri=` and the vault's own base
//! URI as resource (lowkey-vault), or `scope=` (Managed HSM). Values may be quoted or not and
//! parameters separated by commas and/or spaces.
//!
//! Only the tenant and the scope are taken from a challenge. The authority *host* is never
//! followed: the client secret and assertions only ever go to the configured authority. The
//! tenant is followed only when it is the configured one or listed in
//! `AZURE_ADDITIONALLY_ALLOWED_TENANTS` (see [`AllowedTenants`]), as the Azure SDKs do.

use crate::azure::cloud::{host_without_port, normalize_resource};
use crate::azure::http::Url;

/// The parameters of a `Bearer` challenge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Challenge {
    /// `authorization` or, failing that, `authorization_uri`.
    pub authorization: Option<String>,
    pub resource: Option<String>,
    pub scope: Option<String>,
    pub error: Option<String>,
}

impl Challenge {
    /// Parses the first `Bearer` challenge among `values` (one per `WWW-Authenticate` header).
    pub(crate) fn parse_headers<'a>(
        values: impl IntoIterator<Item = &'a str>,
    ) -> Option<Challenge> {
        values.into_iter().find_map(Challenge::parse)
    }

    /// Parses one header value; `None` when it holds no `Bearer` challenge.
    pub(crate) fn parse(header: &str) -> Option<Challenge> {
        let mut found = false;
        let mut in_bearer = false;
        let mut ch = Challenge::default();
        let mut authorization_uri = None;
        let mut p = Parser {
            s: header.as_bytes(),
            i: 0,
        };
        loop {
            p.skip(|b| b == b',' || b.is_ascii_whitespace());
            if p.peek().is_none() {
                break;
            }
            let token = p.token();
            if token.is_empty() {
                // A stray character (e.g. a lone quote): skip it.
                p.i += 1;
                continue;
            }
            p.skip(|b| b.is_ascii_whitespace());
            if p.peek() == Some(b'=') {
                p.i += 1;
                p.skip(|b| b.is_ascii_whitespace());
                let value = p.value();
                if in_bearer {
                    let slot = match token.to_ascii_lowercase().as_str() {
                        "authorization" => &mut ch.authorization,
                        "authorization_uri" => &mut authorization_uri,
                        "resource" => &mut ch.resource,
                        "scope" => &mut ch.scope,
                        "error" => &mut ch.error,
                        _ => continue,
                    };
                    if slot.is_none() && !value.is_empty() {
                        *slot = Some(value);
                    }
                }
            } else {
                // A bare token starts a new auth scheme.
                if found && in_bearer {
                    break;
                }
                in_bearer = token.eq_ignore_ascii_case("bearer");
                found |= in_bearer;
            }
        }
        if ch.authorization.is_none() {
            ch.authorization = authorization_uri;
        }
        found.then_some(ch)
    }

    /// `scope`, else `resource` + `/.default`.
    pub(crate) fn scope(&self) -> Option<String> {
        if self.scope.is_some() {
            return self.scope.clone();
        }
        let r = self.resource.as_deref()?.trim_end_matches('/');
        let r = r.strip_suffix("/.default").unwrap_or(r);
        Some(format!("{r}/.default"))
    }

    /// The tenant: first path segment of the authorization URL, when it looks like a tenant
    /// (a GUID or a domain name). lowkey-vault's `authorization_uri` is the request URL, whose
    /// first segment (`keys`) is no tenant and is ignored.
    pub(crate) fn tenant(&self) -> Option<String> {
        let url = Url::parse(self.authorization.as_deref()?).ok()?;
        let first = url.path().split('/').find(|s| !s.is_empty())?;
        // Also the credential's own tenant rules: a tenant it would refuse (`a..b`) is ignored
        // here, so the request falls back to the configured tenant instead of failing.
        (is_tenant_like(first) && crate::azure::auth::validate_tenant(first).is_ok())
            .then(|| first.to_string())
    }
}

fn is_tenant_like(s: &str) -> bool {
    let valid_chars = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    valid_chars && (is_guid(s) || (s.contains('.') && !s.starts_with('.') && !s.ends_with('.')))
}

fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8usize, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn skip(&mut self, f: impl Fn(u8) -> bool) {
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
    }
    fn token(&mut self) -> String {
        self.take(|b| !(b.is_ascii_whitespace() || b == b',' || b == b'=' || b == b'"'))
    }
    fn take(&mut self, f: impl Fn(u8) -> bool) -> String {
        let start = self.i;
        self.skip(f);
        String::from_utf8_lossy(self.s.get(start..self.i).unwrap_or_default()).into_owned()
    }
    fn value(&mut self) -> String {
        if self.peek() != Some(b'"') {
            return self.token_allowing_equals();
        }
        self.i += 1;
        let mut out = Vec::new();
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    if let Some(n) = self.peek() {
                        out.push(n);
                        self.i += 1;
                    }
                }
                _ => out.push(b),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    /// Unquoted values may contain `=` (base64 padding in `claims`).
    fn token_allowing_equals(&mut self) -> String {
        self.take(|b| !(b.is_ascii_whitespace() || b == b','))
    }
}

/// The environment variable listing tenants a challenge may send a credential to besides its
/// own, `;`-separated as the Azure SDKs read it; `*` allows any tenant.
pub(crate) const ADDITIONALLY_ALLOWED_TENANTS: &str = "AZURE_ADDITIONALLY_ALLOWED_TENANTS";

/// Which tenants a challenge may name. A vault (or anything answering on its address) must not
/// be able to make the credential authenticate to a tenant the operator never chose.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedTenants {
    /// The credential's tenant (static config `tenant_id` or `AZURE_TENANT_ID`). `None` for
    /// managed identity, which has no tenant of its own: any tenant is passed on and the token
    /// endpoint decides.
    configured: Option<String>,
    additional: Vec<String>,
    any: bool,
}

impl AllowedTenants {
    /// `additional` is the value of [`ADDITIONALLY_ALLOWED_TENANTS`].
    pub fn new(configured: Option<&str>, additional: Option<&str>) -> Self {
        let additional: Vec<String> = additional
            .unwrap_or("")
            .split(';')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect();
        AllowedTenants {
            configured: configured
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string),
            any: additional.iter().any(|t| t == "*"),
            additional,
        }
    }

    /// `Err` naming both tenants when `tenant` is not allowed.
    pub fn check(&self, tenant: &str) -> Result<(), TenantRefused> {
        let Some(configured) = &self.configured else {
            return Ok(());
        };
        let listed = |t: &String| t.eq_ignore_ascii_case(tenant);
        if self.any || configured.eq_ignore_ascii_case(tenant) || self.additional.iter().any(listed)
        {
            return Ok(());
        }
        Err(TenantRefused {
            tenant: tenant.to_string(),
            configured: configured.clone(),
        })
    }
}

/// A challenge asks for a token from a tenant the credential may not use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the vault's 401 challenge asks for a token from tenant {tenant:?}, but the credential is \
     configured for tenant {configured:?}; refusing to authenticate to another tenant. If the \
     vault belongs to {tenant:?}, add it to {ADDITIONALLY_ALLOWED_TENANTS} (';'-separated, '*' \
     allows any tenant)"
)]
pub struct TenantRefused {
    pub tenant: String,
    pub configured: String,
}

/// What to do about a challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Same resource as the token we sent (or none named): fetch a fresh token and retry once.
    RetrySameScope { tenant: Option<String> },
    /// A different resource whose domain contains the vault host: switch scope and retry once.
    SwitchScope {
        scope: String,
        tenant: Option<String>,
    },
    /// A resource we must not get a token for (a rogue or look-alike endpoint).
    Refuse(String),
}

/// Whether `vault_host` lies inside the resource's domain: it must end with `"." + resource
/// host` (case-insensitive, ports ignored). `myvault.vault.azure.net` passes against
/// `https://vault.azure.net`; `127.0.0.1` passes against nothing.
pub(crate) fn vault_in_resource_domain(vault_host: &str, resource: &str) -> bool {
    let Ok(Url { host: rhost, .. }) = Url::parse(resource) else {
        return false;
    };
    let vhost = host_without_port(vault_host).to_ascii_lowercase();
    !rhost.is_empty() && vhost.ends_with(&format!(".{rhost}"))
}

/// Decides how to answer `challenge`, given the scope of the rejected token, the vault host and
/// the tenants a token may be requested from.
pub(crate) fn decide(
    challenge: &Challenge,
    current_scope: &str,
    vault_host: &str,
    tenants: &AllowedTenants,
) -> Decision {
    let tenant = challenge.tenant();
    if let Some(Err(e)) = tenant.as_deref().map(|t| tenants.check(t)) {
        return Decision::Refuse(e.to_string());
    }
    let Some(scope) = challenge.scope() else {
        return Decision::RetrySameScope { tenant };
    };
    if normalize_resource(&scope) == normalize_resource(current_scope) {
        return Decision::RetrySameScope { tenant };
    }
    let resource = challenge.resource.clone().unwrap_or_else(|| scope.clone());
    if vault_in_resource_domain(vault_host, &resource)
        && vault_in_resource_domain(vault_host, &scope)
    {
        Decision::SwitchScope { scope, tenant }
    } else {
        Decision::Refuse(format!(
            "the vault's 401 challenge names resource {resource:?}, and vault host {vault_host:?} \
             is not inside that resource's domain; refusing to request a token for it"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

    #[test]
    fn scope_from_resource_gets_one_default_suffix() {
        let scope = |resource: &str| {
            let c = Challenge {
                resource: Some(resource.into()),
                ..Challenge::default()
            };
            c.scope()
        };
        assert_eq!(
            scope("https://r.example/").as_deref(),
            Some("https://r.example/.default")
        );
        assert_eq!(
            scope("https://r.example/.default/").as_deref(),
            Some("https://r.example/.default")
        );
    }

    #[test]
    fn parses_real_key_vault_form() {
        let h = format!(
            r#"Bearer authorization="https://login.windows.net/{TENANT}", resource="https://vault.azure.net""#
        );
        let c = Challenge::parse(&h).unwrap();
        assert_eq!(c.resource.as_deref(), Some("https://vault.azure.net"));
        assert_eq!(
            c.scope().as_deref(),
            Some("https://vault.azure.net/.default")
        );
        assert_eq!(c.tenant().as_deref(), Some(TENANT));
    }

    #[test]
    fn parses_unquoted_space_separated_and_scope() {
        let h = format!(
            "bearer authorization=https://login.microsoftonline.com/{TENANT}/ scope=https://managedhsm.azure.net/.default"
        );
        let c = Challenge::parse(&h).unwrap();
        assert_eq!(
            c.scope().as_deref(),
            Some("https://managedhsm.azure.net/.default")
        );
        assert_eq!(c.tenant().as_deref(), Some(TENANT));
    }

    #[test]
    fn parses_lowkey_form_and_ignores_non_tenant_path() {
        let h = r#"Bearer resource="https://localhost:8443", authorization_uri="https://localhost:8443/keys/k/create""#;
        let c = Challenge::parse(h).unwrap();
        assert_eq!(
            c.authorization.as_deref(),
            Some("https://localhost:8443/keys/k/create")
        );
        assert_eq!(
            c.scope().as_deref(),
            Some("https://localhost:8443/.default")
        );
        assert_eq!(c.tenant(), None);
    }

    #[test]
    fn domain_tenants_and_escapes() {
        let c = Challenge::parse(
            r#"Bearer authorization="https://login.microsoftonline.com/contoso.onmicrosoft.com", resource="https://vault.azure.net/", error="in\"valid""#,
        )
        .unwrap();
        assert_eq!(c.tenant().as_deref(), Some("contoso.onmicrosoft.com"));
        assert_eq!(c.error.as_deref(), Some("in\"valid"));
        assert_eq!(
            c.scope().as_deref(),
            Some("https://vault.azure.net/.default")
        );
    }

    #[test]
    fn other_schemes_and_garbage() {
        assert_eq!(Challenge::parse(r#"Basic realm="x""#), None);
        assert_eq!(Challenge::parse(""), None);
        assert_eq!(Challenge::parse(r#"Bearer ""#), Some(Challenge::default()));
        let c = Challenge::parse(
            r#"Basic realm="x", Bearer resource="https://vault.azure.net", PoP nonce="n""#,
        )
        .unwrap();
        assert_eq!(c.resource.as_deref(), Some("https://vault.azure.net"));
        // The PoP parameters do not leak into the Bearer challenge.
        let c = Challenge::parse(r#"Bearer resource=r PoP scope="s""#).unwrap();
        assert_eq!(c.scope, None);
        assert_eq!(
            Challenge::parse_headers([r#"Basic realm="x""#, "Bearer scope=s"])
                .unwrap()
                .scope
                .as_deref(),
            Some("s")
        );
    }

    #[test]
    fn resource_domain_check_ignores_ports_and_case() {
        assert!(vault_in_resource_domain(
            "myvault.vault.azure.net",
            "https://vault.azure.net"
        ));
        assert!(vault_in_resource_domain(
            "MyVault.Vault.Azure.Net:443",
            "https://VAULT.azure.net:443/"
        ));
        assert!(vault_in_resource_domain(
            "primary.localhost:8443",
            "https://localhost:8443"
        ));
        assert!(!vault_in_resource_domain(
            "localhost:8443",
            "https://localhost:8443"
        ));
        assert!(!vault_in_resource_domain(
            "127.0.0.1:8443",
            "https://vault.azure.net"
        ));
        assert!(!vault_in_resource_domain(
            "vault.azure.net.evil.com",
            "https://vault.azure.net"
        ));
        assert!(!vault_in_resource_domain(
            "evilvault.azure.net",
            "https://vault.azure.net"
        ));
        assert!(!vault_in_resource_domain(
            "myvault.vault.azure.net",
            "not a url"
        ));
    }

    #[test]
    fn decisions() {
        let any = AllowedTenants::default();
        let same = Challenge::parse(&format!(
            r#"Bearer authorization="https://login.windows.net/{TENANT}", resource="https://vault.azure.net""#
        ))
        .unwrap();
        assert_eq!(
            decide(
                &same,
                "https://vault.azure.net/.default",
                "127.0.0.1:8443",
                &any
            ),
            Decision::RetrySameScope {
                tenant: Some(TENANT.into())
            }
        );
        // A different resource containing the vault host is followed.
        let hsm =
            Challenge::parse(r#"Bearer scope="https://managedhsm.azure.net/.default""#).unwrap();
        assert_eq!(
            decide(
                &hsm,
                "https://vault.azure.net/.default",
                "h.managedhsm.azure.net",
                &any
            ),
            Decision::SwitchScope {
                scope: "https://managedhsm.azure.net/.default".into(),
                tenant: None
            }
        );
        // ...but not one the vault host is outside of.
        let rogue = Challenge::parse(r#"Bearer resource="https://attacker.example""#).unwrap();
        assert!(matches!(
            decide(
                &rogue,
                "https://vault.azure.net/.default",
                "v.vault.azure.net",
                &any
            ),
            Decision::Refuse(m) if m.contains("attacker.example")
        ));
        let lowkey = Challenge::parse(r#"Bearer resource="https://localhost:8443""#).unwrap();
        assert!(matches!(
            decide(
                &lowkey,
                "https://vault.azure.net/.default",
                "localhost:8443",
                &any
            ),
            Decision::Refuse(_)
        ));
        // Nothing named: retry as we were.
        assert_eq!(
            decide(&Challenge::default(), "s", "h", &any),
            Decision::RetrySameScope { tenant: None }
        );
    }

    const OTHER: &str = "11111111-2222-3333-4444-555555555555";

    fn challenge_from(tenant: &str) -> Challenge {
        Challenge::parse(&format!(
            r#"Bearer authorization="https://login.microsoftonline.com/{tenant}", resource="https://vault.azure.net""#
        ))
        .unwrap()
    }

    fn decide_for(tenant: &str, allowed: &AllowedTenants) -> Decision {
        decide(
            &challenge_from(tenant),
            "https://vault.azure.net/.default",
            "v.vault.azure.net",
            allowed,
        )
    }

    #[test]
    fn challenge_tenants_are_followed_only_when_allowed() {
        let follow = |t: &str| Decision::RetrySameScope {
            tenant: Some(t.to_string()),
        };
        // The configured tenant (any case).
        let own = AllowedTenants::new(Some(TENANT), None);
        assert_eq!(decide_for(TENANT, &own), follow(TENANT));
        let upper = TENANT.to_ascii_uppercase();
        assert_eq!(decide_for(&upper, &own), follow(&upper));
        // A listed one, among spaces and empty entries.
        let listed = AllowedTenants::new(
            Some(TENANT),
            Some(&format!(" contoso.onmicrosoft.com ;; {OTHER} ;")),
        );
        assert_eq!(decide_for(OTHER, &listed), follow(OTHER));
        assert_eq!(
            decide_for("contoso.onmicrosoft.com", &listed),
            follow("contoso.onmicrosoft.com")
        );
        // `*` allows any.
        let star = AllowedTenants::new(Some(TENANT), Some("a.example;*"));
        assert_eq!(decide_for(OTHER, &star), follow(OTHER));
        // No tenant configured (managed identity): the token endpoint decides.
        assert_eq!(
            decide_for(OTHER, &AllowedTenants::new(None, None)),
            follow(OTHER)
        );
        // Anything else is refused with a message naming both tenants and the variable.
        for allowed in [
            AllowedTenants::new(Some(TENANT), None),
            AllowedTenants::new(Some(TENANT), Some("contoso.onmicrosoft.com;")),
            AllowedTenants::new(Some(TENANT), Some("**")),
        ] {
            let Decision::Refuse(m) = decide_for(OTHER, &allowed) else {
                panic!("{allowed:?} followed {OTHER}");
            };
            assert!(m.contains(OTHER), "{m}");
            assert!(m.contains(TENANT), "{m}");
            assert!(m.contains("AZURE_ADDITIONALLY_ALLOWED_TENANTS"), "{m}");
        }
        // A challenge without a tenant is not subject to the rule.
        let no_tenant = Challenge::parse(r#"Bearer resource="https://vault.azure.net""#).unwrap();
        assert_eq!(
            decide(
                &no_tenant,
                "https://vault.azure.net/.default",
                "v.vault.azure.net",
                &AllowedTenants::new(Some(TENANT), None)
            ),
            Decision::RetrySameScope { tenant: None }
        );
    }
}
