//! Who is calling: a server-to-server API key (full access), an app user with an HS256 JWT
//! (`sub` = user id; sees only its own orders), or the admin key.

use crate::error::ApiError;
use axum::http::HeaderMap;
use base64::Engine;
use hmac::{KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A back-end holding an API key: may act for any user.
    Service { key_id: String },
    /// An app user.
    User { user_id: String },
}

impl Principal {
    /// The idempotency scope of this caller.
    pub fn scope(&self) -> String {
        match self {
            Principal::Service { key_id } => format!("key:{key_id}"),
            Principal::User { user_id } => format!("user:{user_id}"),
        }
    }
    /// Whether this caller may see or act on `user_id`'s things.
    pub fn may_act_for(&self, user_id: &str) -> bool {
        match self {
            Principal::Service { .. } => true,
            Principal::User { user_id: me } => me == user_id,
        }
    }
    pub fn is_service(&self) -> bool {
        matches!(self, Principal::Service { .. })
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A short, non-secret id of an API key (for the idempotency scope and logs).
fn key_id(key: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(key.as_bytes())[..6])
}

pub fn authenticate(
    headers: &HeaderMap,
    api_keys: &[SecretString],
    jwt_secret: Option<&SecretString>,
    now_secs: i64,
) -> Result<Principal, ApiError> {
    let token = bearer(headers).ok_or_else(|| {
        ApiError::unauthorized("missing Authorization: Bearer <api key or user token>")
    })?;
    if api_keys.iter().any(|k| ct_eq(k.expose_secret(), token)) {
        return Ok(Principal::Service {
            key_id: key_id(token),
        });
    }
    if let Some(secret) = jwt_secret
        && token.matches('.').count() == 2
    {
        let user_id = verify_jwt(token, secret, now_secs)?;
        return Ok(Principal::User { user_id });
    }
    Err(ApiError::unauthorized("unknown API key or token"))
}

pub fn require_admin(
    headers: &HeaderMap,
    admin_key: Option<&SecretString>,
) -> Result<(), ApiError> {
    let key = admin_key.ok_or_else(|| ApiError::forbidden("no admin_key is configured"))?;
    match bearer(headers) {
        Some(t) if ct_eq(key.expose_secret(), t) => Ok(()),
        _ => Err(ApiError::unauthorized("admin key required")),
    }
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Verifies an HS256 JWT and returns its `sub`. `exp`, when present, must be in the future.
pub fn verify_jwt(token: &str, secret: &SecretString, now_secs: i64) -> Result<String, ApiError> {
    let bad = || ApiError::unauthorized("invalid user token");
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = token.split('.');
    let (h, p, s) = match (parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s)) => (h, p, s),
        _ => return Err(bad()),
    };
    let header: serde_json::Value =
        serde_json::from_slice(&b64.decode(h).map_err(|_| bad())?).map_err(|_| bad())?;
    if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
        return Err(bad());
    }
    let sig = b64.decode(s).map_err(|_| bad())?;
    let mut mac =
        HmacSha256::new_from_slice(secret.expose_secret().as_bytes()).map_err(|_| bad())?;
    mac.update(format!("{h}.{p}").as_bytes());
    mac.verify_slice(&sig).map_err(|_| bad())?;
    let claims: serde_json::Value =
        serde_json::from_slice(&b64.decode(p).map_err(|_| bad())?).map_err(|_| bad())?;
    if let Some(exp) = claims.get("exp") {
        match exp.as_i64() {
            Some(exp) if exp > now_secs => {}
            _ => return Err(ApiError::unauthorized("user token expired")),
        }
    }
    match claims.get("sub").and_then(|s| s.as_str()) {
        Some(sub) if !sub.is_empty() => Ok(sub.to_string()),
        _ => Err(bad()),
    }
}

/// Makes an HS256 JWT (for tests, the demo and operators' tooling).
pub fn issue_jwt(sub: &str, exp: i64, secret: &SecretString) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let h = b64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let p = b64.encode(serde_json::json!({"sub": sub, "exp": exp}).to_string());
    let mut mac = HmacSha256::new_from_slice(secret.expose_secret().as_bytes())
        .expect("hmac takes any key length");
    mac.update(format!("{h}.{p}").as_bytes());
    format!("{h}.{p}.{}", b64.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_round_trip_expiry_and_tampering() {
        let s = SecretString::from("change me");
        let t = issue_jwt("u1", 2_000, &s);
        assert_eq!(verify_jwt(&t, &s, 1_000).unwrap(), "u1");
        assert!(verify_jwt(&t, &s, 2_000).is_err(), "expired");
        assert!(
            verify_jwt(&t, &SecretString::from("other"), 1_000).is_err(),
            "wrong secret"
        );
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"sub":"admin","exp":9999}"#);
        parts[1] = &forged;
        assert!(
            verify_jwt(&parts.join("."), &s, 1_000).is_err(),
            "tampered claims"
        );
        let none = format!(
            "{}.{}.",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            parts[1]
        );
        assert!(verify_jwt(&none, &s, 1_000).is_err(), "alg none");
    }
}
