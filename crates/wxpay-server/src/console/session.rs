//! Console sessions without server-side storage: the cookie holds `<expiry>.<nonce>.<mac>`, an
//! HMAC-SHA256 under a key derived from the admin key. It carries no secret (the MAC cannot be
//! turned back into the key), every instance behind a load balancer accepts it, and changing
//! the admin key ends every session. The CSRF token of a session is another MAC, over the
//! session token, so it is bound to that session and needs no storage either.
//!
//! Logging out clears the cookie and also revokes the token in this process (a bounded in-memory
//! list until the token's expiry).

use base64::Engine;
use hmac::{KeyInit, Mac};
use std::collections::HashMap;
use std::sync::Mutex;
use subtle::ConstantTimeEq;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The session cookie's name.
pub const COOKIE: &str = "wxpay_console";
/// How long a login lasts.
pub const SESSION_TTL_SECS: i64 = 8 * 3600;
/// At most this many revoked tokens are remembered (the oldest expiring first are dropped).
const MAX_REVOKED: usize = 10_000;

fn mac(key: &[u8], domain: &str, msg: &str) -> Vec<u8> {
    // HMAC takes any key length.
    let mut m = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return Vec::new(),
    };
    m.update(domain.as_bytes());
    m.update(&[0]);
    m.update(msg.as_bytes());
    m.finalize().into_bytes().to_vec()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// A valid session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub token: String,
    pub expires_at: i64,
}

/// Issues and checks session and CSRF tokens.
#[derive(Default)]
pub struct Sessions {
    revoked: Mutex<HashMap<String, i64>>,
}

impl Sessions {
    /// A new session token for a login at `now_secs`.
    pub fn issue(&self, admin_key: &[u8], now_secs: i64) -> Session {
        let nonce: [u8; 16] = rand::random();
        let expires_at = now_secs + SESSION_TTL_SECS;
        let body = format!("{expires_at}.{}", hex::encode(nonce));
        let sig = b64(&mac(admin_key, "wxpay-console/session/v1", &body));
        Session {
            token: format!("{body}.{sig}"),
            expires_at,
        }
    }

    /// The session a token stands for, if it is authentic, unexpired and not revoked.
    pub fn verify(&self, admin_key: &[u8], token: &str, now_secs: i64) -> Option<Session> {
        if token.len() > 256 {
            return None;
        }
        let (body, sig) = token.rsplit_once('.')?;
        let (exp, nonce) = body.split_once('.')?;
        let expires_at: i64 = exp.parse().ok()?;
        if nonce.len() != 32 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let want = b64(&mac(admin_key, "wxpay-console/session/v1", body));
        if !ct_eq(want.as_bytes(), sig.as_bytes()) {
            return None;
        }
        if expires_at <= now_secs || expires_at > now_secs + SESSION_TTL_SECS {
            return None;
        }
        if self
            .revoked
            .lock()
            .map(|r| r.contains_key(nonce))
            .unwrap_or(true)
        {
            return None;
        }
        Some(Session {
            token: token.to_string(),
            expires_at,
        })
    }

    /// Ends a session in this process.
    pub fn revoke(&self, session: &Session, now_secs: i64) {
        let Some(nonce) = session.token.split('.').nth(1) else {
            return;
        };
        if let Ok(mut r) = self.revoked.lock() {
            r.retain(|_, exp| *exp > now_secs);
            if r.len() >= MAX_REVOKED
                && let Some(oldest) = r.iter().min_by_key(|(_, e)| **e).map(|(k, _)| k.clone())
            {
                r.remove(&oldest);
            }
            r.insert(nonce.to_string(), session.expires_at);
        }
    }
}

/// The CSRF token of a session.
pub fn csrf_token(admin_key: &[u8], session: &Session) -> String {
    b64(&mac(admin_key, "wxpay-console/csrf/v1", &session.token))
}

/// Whether `given` is the CSRF token of `session`.
pub fn csrf_ok(admin_key: &[u8], session: &Session, given: Option<&str>) -> bool {
    match given {
        Some(g) if !g.is_empty() => ct_eq(csrf_token(admin_key, session).as_bytes(), g.as_bytes()),
        _ => false,
    }
}

/// Constant-time comparison of a typed admin key with the configured one.
pub fn key_matches(configured: &[u8], typed: &[u8]) -> bool {
    ct_eq(configured, typed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_expire_and_revoke() {
        let s = Sessions::default();
        let key = b"adm_key";
        let sess = s.issue(key, 1_000);
        assert!(!sess.token.contains("adm_key"));
        assert_eq!(s.verify(key, &sess.token, 1_001), Some(sess.clone()));
        assert_eq!(s.verify(b"other", &sess.token, 1_001), None, "another key");
        assert_eq!(
            s.verify(key, &sess.token, 1_000 + SESSION_TTL_SECS),
            None,
            "expired"
        );
        let mut forged = sess.token.clone();
        forged.replace_range(0..1, "9");
        assert_eq!(s.verify(key, &forged, 1_001), None, "tampered expiry");
        let csrf = csrf_token(key, &sess);
        assert!(csrf_ok(key, &sess, Some(&csrf)));
        assert!(!csrf_ok(key, &sess, Some("x")));
        assert!(!csrf_ok(key, &sess, None));
        let other = s.issue(key, 1_000);
        assert!(!csrf_ok(key, &other, Some(&csrf)), "bound to its session");
        s.revoke(&sess, 1_002);
        assert_eq!(s.verify(key, &sess.token, 1_003), None, "revoked");
        assert!(s.verify(key, &other.token, 1_003).is_some());
    }
}
