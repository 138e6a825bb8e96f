//! Microsoft Entra ID's token endpoint: `POST {authority}{tenant}/oauth2/v2.0/token` with the
//! client-credentials grant, form-encoded. Each credential (`entra`, `certificate`) brings only
//! its proof: a secret, a certificate assertion or a federated token.

use super::{
    describe_token_error, parse_token_response, validate_tenant, AccessToken, CredentialError,
};
use crate::azure::http::{form_encode, HttpClient, HttpRequest};
use crate::azure::types::AzureError;
use crate::secret::Secret;

pub(crate) fn failed(m: String) -> CredentialError {
    CredentialError::Failed(AzureError::Auth(m))
}

/// Requests a token. `proof` receives the token endpoint URL (the assertion audience) and
/// returns the client-specific form fields.
pub(crate) fn request_token(
    http: &HttpClient,
    authority: &str,
    tenant: &str,
    scope: &str,
    proof: impl FnOnce(&str) -> Result<Vec<(String, Secret)>, AzureError>,
) -> Result<AccessToken, CredentialError> {
    let tenant = validate_tenant(tenant).map_err(CredentialError::Failed)?;
    let endpoint = format!("{authority}{tenant}/oauth2/v2.0/token");
    let fields = proof(&endpoint).map_err(CredentialError::Failed)?;
    let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials"), ("scope", scope)];
    form.extend(fields.iter().map(|(k, v)| (k.as_str(), v.expose())));
    let req = HttpRequest::new("POST", endpoint.clone())
        .header("Accept", "application/json")
        .form_body(form_encode(&form));
    let resp = http.send(&req).map_err(CredentialError::Failed)?;
    if !resp.is_success() {
        return Err(failed(format!(
            "token request to {endpoint} was refused: {}{}",
            describe_token_error(resp.status, &resp.body),
            resp.refused_wait_note("the token endpoint")
        )));
    }
    parse_token_response(&resp.body, http.clock().now())
        .map_err(|m| CredentialError::Failed(AzureError::Decode(format!("{endpoint}: {m}"))))
}
