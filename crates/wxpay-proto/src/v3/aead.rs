//! AEAD_AES_256_GCM with the APIv3 key (PROTOCOL.md B.4): callback resources and platform
//! certificates.
//!
//! key = the APIv3 key's 32 ASCII bytes (never AES-128); nonce and associated data are the raw
//! strings' bytes (not Base64); `ciphertext` = Base64(ciphertext ‖ 16-byte tag).

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use secrecy::{ExposeSecret, SecretBox};

use crate::error::ProtoError;

/// Length of the GCM tag appended to the ciphertext.
pub const TAG_LEN: usize = 16;

/// The APIv3 key (exactly 32 bytes). `Debug` is redacted.
pub struct ApiV3Key(SecretBox<[u8; 32]>);

impl fmt::Debug for ApiV3Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiV3Key([REDACTED])")
    }
}

impl Clone for ApiV3Key {
    fn clone(&self) -> Self {
        let src = self.0.expose_secret();
        ApiV3Key(SecretBox::init_with_mut(|k: &mut [u8; 32]| {
            k.copy_from_slice(src)
        }))
    }
}

impl ApiV3Key {
    /// The key as set in 商户平台: a 32-byte string. Any other length is an error (AES-128 or
    /// AES-192 are never used).
    pub fn new(key: &str) -> Result<Self, ProtoError> {
        Self::from_bytes(key.as_bytes())
    }

    /// From raw bytes; exactly 32.
    pub fn from_bytes(key: &[u8]) -> Result<Self, ProtoError> {
        if key.len() != 32 {
            return Err(ProtoError::InvalidKey(format!(
                "APIv3 key must be exactly 32 bytes (AES-256), got {}",
                key.len()
            )));
        }
        Ok(ApiV3Key(SecretBox::init_with_mut(|k: &mut [u8; 32]| {
            k.copy_from_slice(key)
        })))
    }

    fn aead(&self) -> LessSafeKey {
        let unbound = UnboundKey::new(&AES_256_GCM, self.0.expose_secret())
            .expect("a 32-byte key is always a valid AES-256-GCM key");
        LessSafeKey::new(unbound)
    }
}

fn nonce_of(nonce: &str) -> Result<Nonce, ProtoError> {
    Nonce::try_assume_unique_for_key(nonce.as_bytes()).map_err(|_| {
        ProtoError::field(
            "nonce",
            format!("AEAD nonce must be {NONCE_LEN} bytes, got {}", nonce.len()),
        )
    })
}

/// Decrypts a resource: Base64-decodes `ciphertext_b64`, checks the tag with `associated_data`
/// and returns the plaintext.
pub fn decrypt(
    key: &ApiV3Key,
    nonce: &str,
    associated_data: &str,
    ciphertext_b64: &str,
) -> Result<Vec<u8>, ProtoError> {
    let nonce = nonce_of(nonce)?;
    let mut buf = B64
        .decode(ciphertext_b64.trim().as_bytes())
        .map_err(|e| ProtoError::malformed("AEAD ciphertext Base64", e.to_string()))?;
    if buf.len() < TAG_LEN {
        return Err(ProtoError::Crypto(
            "AEAD ciphertext shorter than its 16-byte tag",
        ));
    }
    let plain = key
        .aead()
        .open_in_place(nonce, Aad::from(associated_data.as_bytes()), &mut buf)
        .map_err(|_| ProtoError::Crypto("AEAD_AES_256_GCM authentication failed (wrong key, nonce, associated data or tampered ciphertext)"))?;
    let n = plain.len();
    buf.truncate(n);
    Ok(buf)
}

/// Encrypts `plaintext` (sandbox side): returns Base64(ciphertext ‖ tag). `nonce` must be 12 bytes.
pub fn encrypt(
    key: &ApiV3Key,
    nonce: &str,
    associated_data: &str,
    plaintext: &[u8],
) -> Result<String, ProtoError> {
    let nonce = nonce_of(nonce)?;
    let mut buf = Vec::with_capacity(plaintext.len() + TAG_LEN);
    buf.extend_from_slice(plaintext);
    key.aead()
        .seal_in_place_append_tag(nonce, Aad::from(associated_data.as_bytes()), &mut buf)
        .map_err(|_| ProtoError::Crypto("AEAD_AES_256_GCM encryption failed"))?;
    Ok(B64.encode(&buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb";

    #[test]
    fn round_trip_and_tamper() {
        let k = ApiV3Key::new(KEY).unwrap();
        let ct = encrypt(&k, "uluk4a9R25RW", "transaction", b"{\"a\":1}").unwrap();
        assert_eq!(
            decrypt(&k, "uluk4a9R25RW", "transaction", &ct).unwrap(),
            b"{\"a\":1}"
        );

        let mut raw = B64.decode(&ct).unwrap();
        for i in 0..raw.len() {
            raw[i] ^= 1;
            let t = B64.encode(&raw);
            assert!(
                matches!(
                    decrypt(&k, "uluk4a9R25RW", "transaction", &t),
                    Err(ProtoError::Crypto(_))
                ),
                "byte {i}"
            );
            raw[i] ^= 1;
        }
        assert!(decrypt(&k, "uluk4a9R25RX", "transaction", &ct).is_err());
        assert!(decrypt(&k, "uluk4a9R25RW", "Transaction", &ct).is_err());
        assert!(decrypt(&k, "uluk4a9R25RW", "", &ct).is_err());
        let other = ApiV3Key::new("b7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb").unwrap();
        assert!(decrypt(&other, "uluk4a9R25RW", "transaction", &ct).is_err());
        assert!(decrypt(&k, "uluk4a9R25RW", "transaction", "AAAA").is_err());
        assert!(decrypt(&k, "uluk4a9R25RW", "transaction", "***").is_err());
        assert!(decrypt(&k, "short", "transaction", &ct).is_err());
        assert!(encrypt(&k, "thirteen-byte", "", b"x").is_err());
        // empty plaintext / empty AAD work
        let e = encrypt(&k, "uluk4a9R25RW", "", b"").unwrap();
        assert_eq!(decrypt(&k, "uluk4a9R25RW", "", &e).unwrap(), b"");
    }

    #[test]
    fn key_length_and_debug() {
        assert!(ApiV3Key::new(&KEY[..31]).is_err());
        assert!(ApiV3Key::new(&format!("{KEY}x")).is_err());
        assert!(ApiV3Key::new(&KEY[..16]).is_err());
        assert!(ApiV3Key::new("").is_err());
        let k = ApiV3Key::new(KEY).unwrap();
        assert_eq!(format!("{k:?}"), "ApiV3Key([REDACTED])");
        let e = ApiV3Key::new(&KEY[..31]).unwrap_err().to_string();
        assert!(!e.contains(&KEY[..31]));
        let c = k.clone();
        let ct = encrypt(&k, "uluk4a9R25RW", "a", b"m").unwrap();
        assert_eq!(decrypt(&c, "uluk4a9R25RW", "a", &ct).unwrap(), b"m");
    }
}
