//! Plugin configuration: `ConfigureRequest{core_configuration, hcl_configuration}` →
//! validated [`PluginConfig`].
//!
//! [`validate`] runs every check in the order of SPIRE's built-in plugin (so the first error,
//! the one Configure reports, is the built-in's), plus our own: `subscription_id` is optional,
//! tenant/app id/secret are required together, unknown keys are reported. It collects every
//! problem. `Configure` fails with the first one (gRPC InvalidArgument,
//! [`Validation::into_result`]); `Validate` returns them all as notes ([`Validation::notes`]),
//! plus one note per ignored key, and no notes at all for a valid config without ignored keys.
//!
//! Decoding follows HCL1's `hcl.Decode` semantics: key names match case-insensitively, a
//! repeated key's last value wins, repeated `shared_keys` blocks merge, numbers and booleans
//! given for a string field are taken as their text, and strings are literal (no `${}`).
//! Unknown keys are never an error; they are collected (original spelling, `shared_keys.`
//! prefix for nested ones) for warn logs and Validate notes.
//!
//! `shared_keys.lock_tag_template` (upstream PR #6537) is accepted so a config written for that
//! PR still loads, but it is reported like an unknown key: this plugin coordinates shared-key
//! rotation with a claim tag and by settling on the earliest version (`keys::shared`), not with
//! the PR's lock tag, so the setting has no effect and saying so beats silently ignoring it.

#[cfg(test)]
mod fuzz_tests;
mod hcl1;
mod parse;
mod raw;
mod trust_domain;

use std::path::PathBuf;

use regex::Regex;

use crate::secret::Secret;
use crate::template::KeyNameTemplate;

use raw::{DecodeError, Raw};

/// Exact messages (reference wording where the reference has one).
pub(crate) mod messages {
    pub(crate) const CORE_REQUIRED: &str = "server core configuration is required";
    pub(crate) const CORE_TRUST_DOMAIN_REQUIRED: &str =
        "server core configuration must contain trust_domain";
    pub(crate) const CORE_TRUST_DOMAIN_MALFORMED: &str =
        "server core configuration trust_domain is malformed";
    pub(crate) const DECODE: &str = "unable to decode configuration";
    pub(crate) const MISSING_KEY_VAULT_URI: &str = "configuration is missing the Key Vault URI";
    pub(crate) const KEY_VAULT_URI_NOT_HTTPS: &str =
        "configuration Key Vault URI must be an https URL";
    pub(crate) const MISSING_JWT_KEY_TEMPLATE: &str =
        "configuration missing jwt_key_template in shared_keys";
    pub(crate) const JWT_KEY_TEMPLATE_PARSE: &str = "failed to parse jwt_key_template";
    pub(crate) const MISSING_KEY_ID_REGEX: &str =
        "configuration missing key_id_extraction_regex in shared_keys";
    pub(crate) const KEY_ID_REGEX_COMPILE: &str = "failed to compile key_id_extraction_regex";
    pub(crate) const KEY_ID_REGEX_GROUPS: &str =
        "key_id_extraction_regex must have exactly one capturing group";
    pub(crate) const KEY_IDENTIFIER_TOO_LONG: &str =
        "Key identifier must not be longer than 256 characters";
    pub(crate) const KEY_IDENTIFIER_REQUIRED: &str =
        "configuration requires a key identifier file or a key identifier value";
    pub(crate) const KEY_IDENTIFIER_BOTH: &str =
        "configuration can't have a key identifier file and a key identifier value at the same time";
    pub(crate) const MISSING_TENANT_ID: &str = "invalid configuration, missing tenant id";
    pub(crate) const MISSING_APP_ID: &str = "invalid configuration, missing application id";
    pub(crate) const MISSING_APP_SECRET: &str = "invalid configuration, missing app secret";
}

/// Azure tag values are limited to 256 characters; the server id lands in a tag.
pub(crate) const MAX_KEY_IDENTIFIER_LEN: usize = 256;

/// `CoreConfiguration` from the request (bare trust-domain name, e.g. `example.org`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CoreConfig {
    pub trust_domain: String,
}

/// Where this server's id comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyIdentifierSource {
    /// `key_identifier_file`: read, or created with a fresh UUID.
    File(PathBuf),
    /// `key_identifier_value`, used verbatim.
    Value(String),
    /// Neither (allowed in shared keys mode only).
    None,
}

/// Client-secret credentials; present only when tenant, app id and secret are all set.
#[derive(Debug, Clone)]
pub struct StaticCredentials {
    pub tenant_id: String,
    pub app_id: String,
    pub app_secret: Secret,
    /// Optional and unused (kept for compatibility with the reference's config).
    pub subscription_id: Option<String>,
}

/// `shared_keys`, parsed once at Configure time.
#[derive(Debug, Clone)]
pub struct SharedKeysConfig {
    pub jwt_key_template: KeyNameTemplate,
    pub jwt_key_template_src: String,
    /// Exactly one capturing group, which yields the SPIRE key id.
    pub key_id_extraction_regex: Regex,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    pub trust_domain: String,
    pub key_vault_uri: String,
    pub key_identifier: KeyIdentifierSource,
    pub static_credentials: Option<StaticCredentials>,
    pub shared_keys: Option<SharedKeysConfig>,
    /// Keys this plugin ignores, original spelling (`shared_keys.x` for nested ones).
    pub unknown_keys: Vec<String>,
}

impl PluginConfig {
    /// One warn-log line / Validate note per ignored key.
    pub fn ignored_key_notes(&self) -> Vec<String> {
        self.unknown_keys
            .iter()
            .map(|k| ignored_key_note(k))
            .collect()
    }
}

/// The note for an ignored key (see the module docs for `lock_tag_template`).
pub(crate) fn ignored_key_note(key: &str) -> String {
    let is_lock_tag = key.split_once('.').is_some_and(|(parent, child)| {
        eq_fold(parent, "shared_keys") && eq_fold(child, "lock_tag_template")
    });
    if is_lock_tag {
        format!(
            "configuration key \"{key}\" is ignored: this plugin coordinates shared key rotation without a lock tag"
        )
    } else {
        format!("unknown configuration key \"{key}\" is ignored")
    }
}

/// A configuration the plugin refuses; the message is the gRPC InvalidArgument text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct ConfigError {
    message: String,
}

impl ConfigError {
    pub(crate) fn message(&self) -> &str {
        &self.message
    }
}

/// Outcome of [`validate`]: every problem in reference order, the ignored keys, and the
/// config when there is no problem.
#[derive(Debug)]
pub(crate) struct Validation {
    errors: Vec<String>,
    unknown_keys: Vec<String>,
    config: Option<PluginConfig>,
}

impl Validation {
    /// Every problem, in the order the reference reports them.
    #[cfg(test)]
    pub(crate) fn errors(&self) -> &[String] {
        &self.errors
    }

    pub(crate) fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }

    /// Keys the plugin ignores (known even when other checks fail, as long as decoding worked).
    #[cfg(test)]
    pub(crate) fn unknown_keys(&self) -> &[String] {
        &self.unknown_keys
    }

    /// `ValidateResponse.notes`: all problems, then one note per ignored key. Empty for a
    /// valid config without ignored keys (SPIRE treats any note as "invalid").
    pub(crate) fn notes(&self) -> Vec<String> {
        let mut notes = self.errors.clone();
        notes.extend(self.unknown_keys.iter().map(|k| ignored_key_note(k)));
        notes
    }

    pub(crate) fn config(&self) -> Option<&PluginConfig> {
        self.config.as_ref()
    }

    /// The config, or the first problem (what `Configure` returns as InvalidArgument).
    pub(crate) fn into_result(self) -> Result<PluginConfig, ConfigError> {
        if let Some(first) = self.errors.into_iter().next() {
            return Err(ConfigError { message: first });
        }
        self.config.ok_or_else(|| ConfigError {
            message: "configuration could not be built".to_owned(),
        })
    }
}

/// Validates a `ConfigureRequest` / `ValidateRequest`.
pub(crate) fn validate(core: Option<&CoreConfig>, hcl_configuration: &str) -> Validation {
    use messages::*;

    let mut errors: Vec<String> = Vec::new();

    // (1) core configuration, as SPIRE's pluginconf does before the plugin's own checks.
    let trust_domain = match core {
        None => {
            errors.push(CORE_REQUIRED.to_owned());
            None
        }
        Some(core) if core.trust_domain.is_empty() => {
            errors.push(CORE_TRUST_DOMAIN_REQUIRED.to_owned());
            None
        }
        Some(core) => match trust_domain::parse(&core.trust_domain) {
            Ok(td) => Some(td),
            Err(e) => {
                errors.push(format!("{CORE_TRUST_DOMAIN_MALFORMED}: {e}"));
                None
            }
        },
    };

    // (2) decoding; nothing else can be checked without it.
    let raw = match parse::parse_document(hcl_configuration).and_then(decode) {
        Ok(raw) => raw,
        Err(e) => {
            errors.push(format!("{DECODE}: {e}"));
            return Validation {
                errors,
                unknown_keys: Vec::new(),
                config: None,
            };
        }
    };

    // (3) vault URI (the https check is ours).
    if raw.key_vault_uri.is_empty() {
        errors.push(MISSING_KEY_VAULT_URI.to_owned());
    } else if !crate::uri::is_https_url(&raw.key_vault_uri) {
        errors.push(format!(
            "{KEY_VAULT_URI_NOT_HTTPS}: {}",
            uri_for_display(&raw.key_vault_uri)
        ));
    }

    // (4) shared keys. Outer Option: block present; inner: block valid.
    let shared_keys = raw
        .shared_keys
        .as_ref()
        .map(|sk| check_shared_keys(sk, &mut errors));

    // (5)–(7) key identifier.
    if raw.key_identifier_value.len() > MAX_KEY_IDENTIFIER_LEN {
        errors.push(KEY_IDENTIFIER_TOO_LONG.to_owned());
    }
    let has_file = !raw.key_identifier_file.is_empty();
    let has_value = !raw.key_identifier_value.is_empty();
    if shared_keys.is_none() && !has_file && !has_value {
        errors.push(KEY_IDENTIFIER_REQUIRED.to_owned());
    }
    if has_file && has_value {
        errors.push(KEY_IDENTIFIER_BOTH.to_owned());
    }

    // (8) credentials (ours: checked here so Validate sees them; subscription optional).
    let static_credentials = check_credentials(&raw, &mut errors);

    // An invalid shared_keys block or trust domain has pushed an error.
    let config = match (errors.is_empty(), trust_domain) {
        (true, Some(trust_domain)) => Some(PluginConfig {
            trust_domain,
            key_vault_uri: raw.key_vault_uri.clone(),
            key_identifier: if has_file {
                KeyIdentifierSource::File(PathBuf::from(&raw.key_identifier_file))
            } else if has_value {
                KeyIdentifierSource::Value(raw.key_identifier_value.clone())
            } else {
                KeyIdentifierSource::None
            },
            static_credentials,
            shared_keys: shared_keys.flatten(),
            unknown_keys: raw.unknown_keys.clone(),
        }),
        _ => None,
    };

    Validation {
        errors,
        unknown_keys: raw.unknown_keys,
        config,
    }
}

fn check_shared_keys(sk: &RawSharedKeys, errors: &mut Vec<String>) -> Option<SharedKeysConfig> {
    use messages::*;

    let (template, regex) = (&sk.jwt_key_template, &sk.key_id_extraction_regex);
    let template = required(errors, template, MISSING_JWT_KEY_TEMPLATE, |s| {
        KeyNameTemplate::parse(s).map_err(|e| format!("{JWT_KEY_TEMPLATE_PARSE}: {e}"))
    });
    let regex = required(errors, regex, MISSING_KEY_ID_REGEX, |s| {
        match Regex::new(s) {
            // captures_len counts the implicit whole-match group 0.
            Ok(re) if re.captures_len() == 2 => Ok(re),
            Ok(_) => Err(KEY_ID_REGEX_GROUPS.to_owned()),
            Err(e) => Err(format!("{KEY_ID_REGEX_COMPILE}: {}", regex_error(s, &e))),
        }
    });
    Some(SharedKeysConfig {
        jwt_key_template: template?,
        jwt_key_template_src: sk.jwt_key_template.clone(),
        key_id_extraction_regex: regex?,
    })
}

/// A required field parsed, or None after pushing why not (absent, or `parse`'s error).
fn required<T>(
    errors: &mut Vec<String>,
    src: &str,
    missing: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Option<T> {
    let parsed = if src.is_empty() {
        Err(missing.to_owned())
    } else {
        parse(src)
    };
    parsed.map_err(|e| errors.push(e)).ok()
}

fn check_credentials(raw: &RawConfig, errors: &mut Vec<String>) -> Option<StaticCredentials> {
    use messages::*;

    if raw.tenant_id.is_empty() && raw.app_id.is_empty() && raw.app_secret.is_empty() {
        return None;
    }
    let text = |s: &str| Ok(s.to_owned());
    let tenant_id = required(errors, &raw.tenant_id, MISSING_TENANT_ID, text);
    let app_id = required(errors, &raw.app_id, MISSING_APP_ID, text);
    let app_secret = required(errors, &raw.app_secret, MISSING_APP_SECRET, text);
    Some(StaticCredentials {
        tenant_id: tenant_id?,
        app_id: app_id?,
        app_secret: Secret::new(app_secret?),
        subscription_id: (!raw.subscription_id.is_empty()).then(|| raw.subscription_id.clone()),
    })
}

/// Go-like one-line regex error (`error parsing regexp: <what>: `<pattern>``); the regex
/// crate's own text spans several lines.
fn regex_error(pattern: &str, err: &regex::Error) -> String {
    let detail = match err {
        regex::Error::Syntax(text) => text
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix("error: "))
            .unwrap_or(text.trim())
            .to_owned(),
        other => other
            .to_string()
            .lines()
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(" "),
    };
    format!("error parsing regexp: {detail}: `{pattern}`")
}

/// The URI without a query, fragment or user-info part, which could carry credentials
/// and have no business in an error message.
/// It quotes URIs that failed to parse, so it splits the text itself rather than use
/// `crate::uri`.
fn uri_for_display(uri: &str) -> String {
    let base = uri.split(['?', '#']).next().unwrap_or("");
    let (scheme, rest) = base
        .find("://")
        .map_or(("", base), |i| base.split_at(i + 3));
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("<redacted>@{host}"),
        None => authority.to_owned(),
    };
    let trimmed = if base.len() < uri.len() { "…" } else { "" };
    let shown = format!("{scheme}{authority}{path}{trimmed}");
    // One line, bounded: a newline or a huge value in the config must not reshape the error.
    let mut out: String = shown
        .chars()
        .take(MAX_URI_SHOWN)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if shown.chars().nth(MAX_URI_SHOWN).is_some() {
        out.push('…');
    }
    out
}

/// Longest Key Vault URI quoted in an error.
const MAX_URI_SHOWN: usize = 200;

// ---------------------------------------------------------------------------------------
// Decoding the generic tree into fields (HCL1 `hcl.Decode` semantics)
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct RawConfig {
    key_vault_uri: String,
    key_identifier_file: String,
    key_identifier_value: String,
    tenant_id: String,
    subscription_id: String,
    app_id: String,
    app_secret: String,
    shared_keys: Option<RawSharedKeys>,
    unknown_keys: Vec<String>,
}

#[derive(Debug, Default)]
struct RawSharedKeys {
    jwt_key_template: String,
    key_id_extraction_regex: String,
}

/// HCL1 matches field names with `strings.EqualFold`.
fn eq_fold(a: &str, b: &str) -> bool {
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

fn push_unknown(unknown: &mut Vec<String>, key: String) {
    if !unknown.contains(&key) {
        unknown.push(key);
    }
}

/// A string field: strings as they are, numbers and booleans as their text (HCL1 does the
/// same), null as unset; lists and objects are type errors naming the key.
fn string_value(path: &str, value: Raw) -> Result<String, DecodeError> {
    match value {
        Raw::Str(s) | Raw::Num(s) => Ok(s),
        Raw::Bool(b) => Ok(b.to_string()),
        Raw::Null => Ok(String::new()),
        other => Err(DecodeError(format!(
            "{path}: expected a string, found {}",
            other.kind_name()
        ))),
    }
}

fn decode(entries: Vec<(String, Raw)>) -> Result<RawConfig, DecodeError> {
    let mut cfg = RawConfig::default();
    for (key, value) in entries {
        let field = match () {
            _ if eq_fold(&key, "key_vault_uri") => &mut cfg.key_vault_uri,
            _ if eq_fold(&key, "key_identifier_file") => &mut cfg.key_identifier_file,
            _ if eq_fold(&key, "key_identifier_value") => &mut cfg.key_identifier_value,
            _ if eq_fold(&key, "tenant_id") => &mut cfg.tenant_id,
            _ if eq_fold(&key, "subscription_id") => &mut cfg.subscription_id,
            _ if eq_fold(&key, "app_id") => &mut cfg.app_id,
            _ if eq_fold(&key, "app_secret") => &mut cfg.app_secret,
            _ if eq_fold(&key, "shared_keys") => {
                decode_shared_keys(&key, value, &mut cfg)?;
                continue;
            }
            _ => {
                push_unknown(&mut cfg.unknown_keys, key);
                continue;
            }
        };
        *field = string_value(&key, value)?;
    }
    Ok(cfg)
}

fn decode_shared_keys(key: &str, value: Raw, cfg: &mut RawConfig) -> Result<(), DecodeError> {
    let entries = match value {
        // JSON `null`: as if absent.
        Raw::Null => return Ok(()),
        Raw::Object(entries) => entries,
        other => {
            return Err(DecodeError(format!(
                "{key}: expected an object, found {}",
                other.kind_name()
            )))
        }
    };
    // Repeated blocks merge, later fields winning (HCL1 decodes each into the same struct).
    let mut sk = cfg.shared_keys.take().unwrap_or_default();
    for (child, value) in entries {
        let path = format!("{key}.{child}");
        if eq_fold(&child, "jwt_key_template") {
            sk.jwt_key_template = string_value(&path, value)?;
        } else if eq_fold(&child, "key_id_extraction_regex") {
            sk.key_id_extraction_regex = string_value(&path, value)?;
        } else {
            // Includes lock_tag_template: accepted, unused, reported.
            push_unknown(&mut cfg.unknown_keys, path);
        }
    }
    cfg.shared_keys = Some(sk);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::messages::*;
    use super::*;

    const TD: &str = "test.example.org";
    const URI: &str = "https://spire-server.vault.azure.net/";

    fn core() -> CoreConfig {
        CoreConfig {
            trust_domain: TD.to_owned(),
        }
    }

    fn run(hcl: &str) -> Validation {
        validate(Some(&core()), hcl)
    }

    fn ok(hcl: &str) -> PluginConfig {
        let v = run(hcl);
        let notes = v.notes();
        match v.into_result() {
            Ok(c) => c,
            Err(e) => panic!("expected a valid config, got {e} (notes {notes:?}) for:\n{hcl}"),
        }
    }

    fn first_error(hcl: &str) -> String {
        match run(hcl).into_result() {
            Ok(c) => panic!("expected an error, got {c:?} for:\n{hcl}"),
            Err(e) => e.message().to_owned(),
        }
    }

    /// The reference test's `configureRequestWithVars` shape: HCL with every field.
    fn reference_request(
        file: &str,
        value: &str,
        uri: &str,
        tenant: &str,
        subscription: &str,
        app_id: &str,
        secret: &str,
    ) -> String {
        format!(
            "key_identifier_file = \"{file}\"\nkey_identifier_value = \"{value}\"\nkey_vault_uri = \"{uri}\"\ntenant_id = \"{tenant}\"\nsubscription_id = \"{subscription}\"\napp_id = \"{app_id}\"\napp_secret = \"{secret}\"\n"
        )
    }

    fn creds_request(tenant: &str, subscription: &str, app_id: &str, secret: &str) -> String {
        reference_request(
            "/tmp/server_id",
            "",
            URI,
            tenant,
            subscription,
            app_id,
            secret,
        )
    }

    // ---- TestConfigure rows --------------------------------------------------------

    #[test]
    fn reference_pass_with_file_and_static_credentials() {
        let cfg = ok(&creds_request(
            "fake-tenant-id",
            "fake-subscription-id",
            "fake-app-id",
            "fake-app-secret",
        ));
        assert_eq!(cfg.trust_domain, TD);
        assert_eq!(cfg.key_vault_uri, URI);
        assert_eq!(
            cfg.key_identifier,
            KeyIdentifierSource::File(PathBuf::from("/tmp/server_id"))
        );
        let creds = cfg.static_credentials.expect("static credentials");
        assert_eq!(creds.tenant_id, "fake-tenant-id");
        assert_eq!(creds.app_id, "fake-app-id");
        assert_eq!(creds.app_secret.expose(), "fake-app-secret");
        assert_eq!(
            creds.subscription_id.as_deref(),
            Some("fake-subscription-id")
        );
        assert!(cfg.shared_keys.is_none());
        assert!(cfg.unknown_keys.is_empty());
        assert!(run(&creds_request("t", "s", "a", "x")).notes().is_empty());
    }

    #[test]
    fn reference_pass_with_identity_value() {
        let cfg = ok(&reference_request("", "server-id", URI, "", "", "", ""));
        assert_eq!(
            cfg.key_identifier,
            KeyIdentifierSource::Value("server-id".into())
        );
        // "pass with identity file" really passes a path as the value.
        let cfg = ok(&reference_request(
            "",
            "/tmp/x/server_id",
            URI,
            "",
            "",
            "",
            "",
        ));
        assert_eq!(
            cfg.key_identifier,
            KeyIdentifierSource::Value("/tmp/x/server_id".into())
        );
    }

    #[test]
    fn reference_missing_key_identifier() {
        assert_eq!(
            first_error(&reference_request("", "", URI, "t", "s", "a", "x")),
            KEY_IDENTIFIER_REQUIRED
        );
    }

    #[test]
    fn reference_both_key_identifiers_json_with_unrelated_keys() {
        let json = format!(
            r#"{{
                "access_key_id": "access_key_id",
                "secret_access_key": "secret_access_key",
                "region": "region",
                "key_identifier_file": "/tmp/server_id",
                "key_identifier_value": "server-id",
                "key_vault_uri": "{URI}",
            }}"#
        );
        let v = run(&json);
        assert_eq!(v.errors(), [KEY_IDENTIFIER_BOTH]);
        assert_eq!(
            v.unknown_keys(),
            ["access_key_id", "secret_access_key", "region"]
        );
    }

    #[test]
    fn reference_key_identifier_value_too_long() {
        let long = "A".repeat(257);
        assert_eq!(
            first_error(&reference_request("", &long, URI, "", "", "", "")),
            KEY_IDENTIFIER_TOO_LONG
        );
        let max = "A".repeat(256);
        assert_eq!(
            ok(&reference_request("", &max, URI, "", "", "", "")).key_identifier,
            KeyIdentifierSource::Value(max)
        );
        // The limit is in bytes, like Go's len().
        let multibyte = "é".repeat(129);
        assert_eq!(
            first_error(&reference_request("", &multibyte, URI, "", "", "", "")),
            KEY_IDENTIFIER_TOO_LONG
        );
    }

    #[test]
    fn reference_no_client_credentials_uses_default_chain() {
        let cfg = ok(&creds_request("", "", "", ""));
        assert!(cfg.static_credentials.is_none());
    }

    #[test]
    fn reference_missing_key_vault_uri() {
        assert_eq!(
            first_error(&reference_request("/tmp/id", "", "", "t", "s", "a", "x")),
            MISSING_KEY_VAULT_URI
        );
    }

    #[test]
    fn reference_missing_credential_parts() {
        assert_eq!(
            first_error(&creds_request("", "s", "a", "x")),
            MISSING_TENANT_ID
        );
        assert_eq!(
            first_error(&creds_request("t", "s", "", "x")),
            MISSING_APP_ID
        );
        assert_eq!(
            first_error(&creds_request("t", "s", "a", "")),
            MISSING_APP_SECRET
        );
        // All three are reported, in order.
        assert_eq!(
            run(&creds_request("", "", "", "x")).errors(),
            [MISSING_TENANT_ID, MISSING_APP_ID]
        );
    }

    #[test]
    fn subscription_id_is_optional() {
        // The built-in's test row "missing subscription ID " fails; we accept it: the value
        // was never used for anything.
        let cfg = ok(&creds_request("t", "", "a", "x"));
        let creds = cfg.static_credentials.expect("static credentials");
        assert_eq!(creds.subscription_id, None);
        // A subscription id alone does not switch to static credentials.
        let cfg = ok(&creds_request("", "s", "", ""));
        assert!(cfg.static_credentials.is_none());
    }

    #[test]
    fn reference_decode_error() {
        assert_eq!(
            first_error("{ malformed json }"),
            "unable to decode configuration: 1:11: illegal char"
        );
    }

    #[test]
    fn reference_contract_config_with_use_msi() {
        let cfg = ok(&format!(
            "key_identifier_file = \"/tmp/id\"\nkey_vault_uri = \"{URI}\"\nuse_msi = true\n"
        ));
        assert_eq!(cfg.unknown_keys, ["use_msi"]);
        assert_eq!(
            cfg.ignored_key_notes(),
            ["unknown configuration key \"use_msi\" is ignored"]
        );
    }

    // ---- TestConfigure_SharedKeys rows -----------------------------------------------

    const TEMPLATE: &str = r#"spire-{{ .TrustDomain | replace "." "-" }}-{{ .KeyID }}"#;
    const TEMPLATE_HCL: &str = r#""spire-{{ .TrustDomain | replace \".\" \"-\" }}-{{ .KeyID }}""#;

    #[test]
    fn reference_valid_shared_keys_config() {
        let v = run(&format!(
            "key_vault_uri = \"{URI}\"\nkey_identifier_value = \"test-server\"\nshared_keys {{\n  jwt_key_template = {TEMPLATE_HCL}\n  lock_tag_template = \"spire-lock-{{{{ .KeyID }}}}\"\n  key_id_extraction_regex = \"^spire-[^-]+-(.+)$\"\n}}\n"
        ));
        assert_eq!(v.errors(), [] as [&str; 0]);
        // lock_tag_template is accepted but reported as ignored.
        assert_eq!(v.unknown_keys(), ["shared_keys.lock_tag_template"]);
        assert_eq!(
            v.notes(),
            ["configuration key \"shared_keys.lock_tag_template\" is ignored: this plugin coordinates shared key rotation without a lock tag"]
        );
        let cfg = v.into_result().unwrap();
        let sk = cfg.shared_keys.expect("shared keys");
        assert_eq!(sk.jwt_key_template_src, TEMPLATE);
        assert_eq!(sk.key_id_extraction_regex.as_str(), "^spire-[^-]+-(.+)$");
        assert_eq!(
            cfg.key_identifier,
            KeyIdentifierSource::Value("test-server".into())
        );
    }

    #[test]
    fn reference_shared_keys_missing_parts() {
        let missing_template = format!(
            "key_vault_uri = \"{URI}\"\nshared_keys {{\n  key_id_extraction_regex = \"^spire-[^-]+-(.+)$\"\n}}\n"
        );
        assert_eq!(first_error(&missing_template), MISSING_JWT_KEY_TEMPLATE);
        let missing_regex = format!(
            "key_vault_uri = \"{URI}\"\nshared_keys {{\n  jwt_key_template = {TEMPLATE_HCL}\n}}\n"
        );
        assert_eq!(first_error(&missing_regex), MISSING_KEY_ID_REGEX);
        let invalid_template = format!(
            "key_vault_uri = \"{URI}\"\nshared_keys {{\n  jwt_key_template = \"spire-{{{{ .KeyID\"\n  key_id_extraction_regex = \"^spire-(.+)$\"\n}}\n"
        );
        let err = first_error(&invalid_template);
        assert!(
            err.starts_with("failed to parse jwt_key_template: "),
            "{err}"
        );
        // Empty block: shared mode on, both missing, no identifier needed.
        assert_eq!(
            run(&format!("key_vault_uri = \"{URI}\"\nshared_keys {{}}\n")).errors(),
            [MISSING_JWT_KEY_TEMPLATE, MISSING_KEY_ID_REGEX]
        );
    }

    #[test]
    fn shared_keys_regex_checks() {
        let with_regex = |re: &str| {
            format!(
                "key_vault_uri = \"{URI}\"\nshared_keys = {{\n  jwt_key_template = {TEMPLATE_HCL}\n  key_id_extraction_regex = \"{re}\"\n}}\n"
            )
        };
        assert_eq!(first_error(&with_regex("^spire-.+$")), KEY_ID_REGEX_GROUPS);
        assert_eq!(first_error(&with_regex("^(a)-(b)$")), KEY_ID_REGEX_GROUPS);
        assert_eq!(
            first_error(&with_regex("^spire-(")),
            "failed to compile key_id_extraction_regex: error parsing regexp: unclosed group: `^spire-(`"
        );
        // Non-capturing groups do not count; a named group does.
        assert!(run(&with_regex("^(?:x|y)-(?P<id>.+)$")).is_valid());
        assert!(run(&with_regex("^(?:x|y)-(.+)$")).is_valid());
    }

    #[test]
    fn shared_keys_mode_without_identifier() {
        let cfg = ok(&format!(
            "key_vault_uri = \"{URI}\"\nshared_keys {{\n  jwt_key_template = {TEMPLATE_HCL}\n  key_id_extraction_regex = \"^spire-[^-]+-(.+)$\"\n}}\n"
        ));
        assert_eq!(cfg.key_identifier, KeyIdentifierSource::None);
        assert!(cfg.shared_keys.is_some());
    }

    // ---- Input forms ---------------------------------------------------------------------

    #[test]
    fn spire_printed_quoted_key_config() {
        let hcl = r#""key_vault_uri" = "https://example-vault.vault.azure.net/"

"key_identifier_file" = "./server_id"

"shared_keys" = {
  "jwt_key_template" = "spire-{{ .TrustDomain | replace \".\" \"-\" }}-{{ .KeyID }}"

  "key_id_extraction_regex" = "^spire-[^-]+-(.+)$"
}
"#;
        let cfg = ok(hcl);
        assert_eq!(cfg.key_vault_uri, "https://example-vault.vault.azure.net/");
        assert_eq!(
            cfg.key_identifier,
            KeyIdentifierSource::File(PathBuf::from("./server_id"))
        );
        assert_eq!(cfg.shared_keys.unwrap().jwt_key_template_src, TEMPLATE);
        assert!(cfg.unknown_keys.is_empty());
    }

    #[test]
    fn user_doc_samples_decode() {
        let static_creds = r#"key_vault_uri = "https://example-vault.vault.azure.net/"
        subscription_id = "subscription-id"
        app_id = "app-id"
        app_secret = "app-secret"
        tenant_id = "tenant-id"

        shared_keys {
            # Template matches spire-example-com-jwt-signer
            jwt_key_template = "spire-{{ .TrustDomain | replace \".\" \"-\" }}-{{ .KeyID }}"
            // Regex extracts 'jwt-signer' from the key name
            key_id_extraction_regex = "^spire-[^-]+-(.+)$"
        }
"#;
        let v = run(static_creds);
        assert!(v.notes().is_empty(), "{:?}", v.notes());
        let cfg = v.into_result().unwrap();
        assert_eq!(
            cfg.static_credentials.unwrap().app_secret.expose(),
            "app-secret"
        );
        assert_eq!(cfg.shared_keys.unwrap().jwt_key_template_src, TEMPLATE);
    }

    #[test]
    fn json_plugin_data_file() {
        let json = format!(
            "{{\n  \"key_vault_uri\": \"{URI}\",\n  \"key_identifier_value\": \"srv\",\n  \"shared_keys\": {{\n    \"jwt_key_template\": \"spire-{{{{ .TrustDomain | replace \\\".\\\" \\\"-\\\" }}}}-{{{{ .KeyID }}}}\",\n    \"key_id_extraction_regex\": \"^spire-[^-]+-(.+)$\",\n  }},\n}}\n"
        );
        let cfg = ok(&json);
        assert_eq!(cfg.key_identifier, KeyIdentifierSource::Value("srv".into()));
        assert_eq!(cfg.shared_keys.unwrap().jwt_key_template_src, TEMPLATE);
    }

    #[test]
    fn empty_configuration() {
        for text in ["", "   \n\t\n", "# only a comment\n"] {
            assert_eq!(
                run(text).errors(),
                [MISSING_KEY_VAULT_URI, KEY_IDENTIFIER_REQUIRED],
                "{text:?}"
            );
        }
    }

    #[test]
    fn values_are_kept_literally() {
        let cfg = ok(&format!(
            r#"key_vault_uri = "{URI}" # the vault
// the id below is odd on purpose
key_identifier_value = "a=b \"q\" {{ #x //y ${{z}} \n\t\\"
app_id = "a${{b}}c"
tenant_id = "t"
app_secret = "s=#//{{"
"#
        ));
        assert_eq!(
            cfg.key_identifier,
            KeyIdentifierSource::Value("a=b \"q\" { #x //y ${z} \n\t\\".into())
        );
        let creds = cfg.static_credentials.unwrap();
        assert_eq!(creds.app_id, "a${b}c");
        assert_eq!(creds.app_secret.expose(), "s=#//{");
    }

    #[test]
    fn hcl1_decode_semantics() {
        // Case-insensitive names, last value wins, numbers as text, merged blocks.
        let cfg = ok(&format!(
            "KEY_VAULT_URI = \"https://old.vault.azure.net/\"\nKey_Vault_Uri = \"{URI}\"\nkey_identifier_value = 12345\nshared_keys {{ jwt_key_template = {TEMPLATE_HCL} }}\nshared_keys {{ key_id_extraction_regex = \"^x-(.+)$\" }}\n"
        ));
        assert_eq!(cfg.key_vault_uri, URI);
        assert_eq!(
            cfg.key_identifier,
            KeyIdentifierSource::Value("12345".into())
        );
        let sk = cfg.shared_keys.unwrap();
        assert_eq!(sk.jwt_key_template_src, TEMPLATE);
        assert_eq!(sk.key_id_extraction_regex.as_str(), "^x-(.+)$");
        assert!(cfg.unknown_keys.is_empty());
    }

    #[test]
    fn wrong_value_types_are_decode_errors_naming_the_key() {
        assert_eq!(
            first_error("key_vault_uri = [\"https://a.vault.azure.net/\"]"),
            "unable to decode configuration: key_vault_uri: expected a string, found a list"
        );
        assert_eq!(
            first_error("shared_keys = \"x\""),
            "unable to decode configuration: shared_keys: expected an object, found a string"
        );
        assert_eq!(
            first_error(r#"{"shared_keys": {"jwt_key_template": {"a": 1}}}"#),
            "unable to decode configuration: shared_keys.jwt_key_template: expected a string, found an object"
        );
        // A number is a string field's text in HCL1, then fails the URL check.
        assert_eq!(
            first_error("key_vault_uri = 3\nkey_identifier_value = \"x\""),
            "configuration Key Vault URI must be an https URL: 3"
        );
    }

    #[test]
    fn unknown_keys_are_collected_not_errors() {
        let v = run(&format!(
            "key_vault_uri = \"{URI}\"\nkey_identifier_value = \"id\"\nfoo = \"1\"\n\"odd key\" = 2\nfoo = 3\nblock \"x\" {{ a = 1 }}\nshared_keys {{\n  jwt_key_template = {TEMPLATE_HCL}\n  key_id_extraction_regex = \"^x-(.+)$\"\n  extra = true\n}}\n"
        ));
        assert!(v.is_valid(), "{:?}", v.errors());
        assert_eq!(
            v.unknown_keys(),
            ["foo", "odd key", "block", "shared_keys.extra"]
        );
        assert_eq!(
            v.notes(),
            [
                "unknown configuration key \"foo\" is ignored",
                "unknown configuration key \"odd key\" is ignored",
                "unknown configuration key \"block\" is ignored",
                "unknown configuration key \"shared_keys.extra\" is ignored",
            ]
        );
        assert_eq!(v.into_result().unwrap().unknown_keys.len(), 4);
    }

    #[test]
    fn unknown_keys_are_noted_even_when_invalid() {
        let v = run("foo = \"x\"");
        assert_eq!(
            v.notes(),
            [
                MISSING_KEY_VAULT_URI,
                KEY_IDENTIFIER_REQUIRED,
                "unknown configuration key \"foo\" is ignored"
            ]
        );
    }

    // ---- Core configuration and ordering --------------------------------------------------

    #[test]
    fn core_configuration_checks() {
        let hcl = reference_request("", "id", URI, "", "", "", "");
        let v = validate(None, &hcl);
        assert_eq!(v.errors(), [CORE_REQUIRED]);
        let empty = CoreConfig {
            trust_domain: String::new(),
        };
        assert_eq!(
            validate(Some(&empty), &hcl).errors(),
            [CORE_TRUST_DOMAIN_REQUIRED]
        );
        let bad = CoreConfig {
            trust_domain: "Example.org".into(),
        };
        assert_eq!(
            validate(Some(&bad), &hcl).errors(),
            ["server core configuration trust_domain is malformed: trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores"]
        );
        let id = CoreConfig {
            trust_domain: "spiffe://example.org".into(),
        };
        assert_eq!(
            validate(Some(&id), &hcl)
                .into_result()
                .unwrap()
                .trust_domain,
            "example.org"
        );
    }

    #[test]
    fn core_error_does_not_stop_decoding_but_decode_error_stops_the_rest() {
        assert_eq!(
            validate(None, "{ malformed json }").notes(),
            [
                CORE_REQUIRED,
                "unable to decode configuration: 1:11: illegal char"
            ]
        );
        assert_eq!(
            validate(None, "").errors(),
            [
                CORE_REQUIRED,
                MISSING_KEY_VAULT_URI,
                KEY_IDENTIFIER_REQUIRED
            ]
        );
    }

    #[test]
    fn errors_come_in_reference_order() {
        // Missing URI with both identifiers: the URI is reported first.
        let v = run(&reference_request("/tmp/id", "id", "", "", "", "", ""));
        assert_eq!(v.errors(), [MISSING_KEY_VAULT_URI, KEY_IDENTIFIER_BOTH]);

        let long = "A".repeat(300);
        let hcl = format!(
            "key_vault_uri = \"http://vault\"\nkey_identifier_file = \"/tmp/id\"\nkey_identifier_value = \"{long}\"\napp_secret = \"s\"\nshared_keys {{\n  key_id_extraction_regex = \"^x$\"\n}}\n"
        );
        assert_eq!(
            validate(None, &hcl).errors(),
            [
                CORE_REQUIRED,
                "configuration Key Vault URI must be an https URL: http://vault",
                MISSING_JWT_KEY_TEMPLATE,
                KEY_ID_REGEX_GROUPS,
                KEY_IDENTIFIER_TOO_LONG,
                KEY_IDENTIFIER_BOTH,
                MISSING_TENANT_ID,
                MISSING_APP_ID,
            ]
        );
    }

    #[test]
    fn key_vault_uri_must_be_https_with_host() {
        for good in [
            "https://example-vault.vault.azure.net/",
            "https://example-vault.vault.azure.net",
            "HTTPS://Example.vault.azure.net/",
            "https://myhsm.managedhsm.azure.net/",
            "https://127.0.0.1:8443",
            "https://[::1]:8443/",
            "https://localhost/path?x=1",
        ] {
            assert!(crate::uri::is_https_url(good), "{good}");
        }
        for bad in [
            "http://example.vault.azure.net/",
            "example.vault.azure.net",
            "https://",
            "https:///path",
            "https://:443/",
            "https://host:notaport/",
            "https://host:99999/",
            "https://user@host/",
            "https://ho st/",
            "https://[::1/",
            "https://[::1]x/",
            "https://a:b:443/",
            " https://host/",
        ] {
            assert!(!crate::uri::is_https_url(bad), "{bad}");
        }
        assert_eq!(
            first_error(&reference_request(
                "",
                "id",
                "http://v.vault.azure.net/",
                "",
                "",
                "",
                ""
            )),
            "configuration Key Vault URI must be an https URL: http://v.vault.azure.net/"
        );
    }

    #[test]
    fn key_vault_uri_error_hides_credentials() {
        assert_eq!(
            first_error(&reference_request("", "id", "https://me:pw@v.vault.azure.net/k?sig=abc", "", "", "", "")),
            "configuration Key Vault URI must be an https URL: https://<redacted>@v.vault.azure.net/k…"
        );
        assert_eq!(uri_for_display("ftp://host/a"), "ftp://host/a");
        assert_eq!(uri_for_display("u:p@host/x#f"), "<redacted>@host/x…");
        assert_eq!(uri_for_display("3"), "3");
    }

    #[test]
    fn secret_never_shows_in_debug() {
        let hcl = creds_request("tenant", "sub", "app", "hunter2-super-secret");
        let v = run(&hcl);
        assert!(!format!("{v:?}").contains("hunter2"));
        let cfg = v.into_result().unwrap();
        assert!(!format!("{cfg:?}").contains("hunter2"));
        assert!(!format!("{cfg:#?}").contains("hunter2"));
        assert_eq!(
            cfg.static_credentials.unwrap().app_secret.expose(),
            "hunter2-super-secret"
        );
    }

    #[test]
    fn valid_config_has_no_notes() {
        let v = run(&reference_request("", "id", URI, "", "", "", ""));
        assert!(v.is_valid());
        assert!(v.notes().is_empty());
        assert!(v.config().is_some());
    }
}
