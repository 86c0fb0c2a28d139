//! Sensitive-field encryption (PROTOCOL.md B.13): RSAES-OAEP with SHA-1 and MGF1-SHA-1
//! (Java `RSA/ECB/OAEPWithSHA-1AndMGF1Padding`), Base64. Not the SHA-256 variant.

use aws_lc_rs::rsa::{
    OAEP_SHA1_MGF1SHA1, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PublicEncryptingKey,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::error::ProtoError;
use crate::v3::rsa::{RsaPrivateKey, RsaPublicKey};

/// Largest plaintext for a key of `modulus_bytes` (214 for RSA-2048).
pub fn max_plaintext_len(modulus_bytes: usize) -> usize {
    modulus_bytes.saturating_sub(2 * 20 + 2)
}

/// Encrypts `plaintext` with the WeChat Pay public key / platform certificate key (or, in the
/// sandbox, the merchant key); returns Base64. Uses the OS RNG for the OAEP seed.
pub fn encrypt(key: &RsaPublicKey, plaintext: &[u8]) -> Result<String, ProtoError> {
    let pek = PublicEncryptingKey::from_der(&key.to_spki_der())
        .map_err(|e| ProtoError::InvalidKey(format!("RSA public key rejected for OAEP: {e}")))?;
    let oaep = OaepPublicEncryptingKey::new(pek)
        .map_err(|_| ProtoError::Crypto("RSA-OAEP key setup failed"))?;
    let max = oaep.max_plaintext_size(&OAEP_SHA1_MGF1SHA1);
    if plaintext.len() > max {
        return Err(ProtoError::field(
            "plaintext",
            format!(
                "RSA-OAEP(SHA-1) plaintext is {} bytes, at most {max} allowed",
                plaintext.len()
            ),
        ));
    }
    let mut out = vec![0u8; oaep.ciphertext_size()];
    let ct = oaep
        .encrypt(&OAEP_SHA1_MGF1SHA1, plaintext, &mut out, None)
        .map_err(|_| ProtoError::Crypto("RSA-OAEP encryption failed"))?;
    Ok(B64.encode(ct))
}

/// Decrypts a Base64 RSA-OAEP(SHA-1) ciphertext with the merchant private key (or, in the
/// sandbox, the WeChat-side key).
pub fn decrypt(key: &RsaPrivateKey, ciphertext_b64: &str) -> Result<Vec<u8>, ProtoError> {
    let ct = B64
        .decode(ciphertext_b64.trim().as_bytes())
        .map_err(|e| ProtoError::malformed("RSA-OAEP ciphertext Base64", e.to_string()))?;
    let oaep = OaepPrivateDecryptingKey::new(key.decrypting_key().clone())
        .map_err(|_| ProtoError::Crypto("RSA-OAEP key setup failed"))?;
    if ct.len() != oaep.key_size_bytes() {
        return Err(ProtoError::Crypto(
            "RSA-OAEP ciphertext length differs from the modulus size",
        ));
    }
    let mut out = vec![0u8; oaep.min_output_size()];
    let pt = oaep
        .decrypt(&OAEP_SHA1_MGF1SHA1, &ct, &mut out, None)
        .map_err(|_| ProtoError::Crypto("RSA-OAEP decryption failed"))?;
    Ok(pt.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_limits_and_wrong_key() {
        let k = RsaPrivateKey::generate_2048().unwrap();
        let other = RsaPrivateKey::generate_2048().unwrap();
        let pt = "张三 6225 8888 0000 1234".as_bytes();
        let ct = encrypt(&k.public_key(), pt).unwrap();
        assert_eq!(B64.decode(&ct).unwrap().len(), 256);
        // randomized padding
        assert_ne!(ct, encrypt(&k.public_key(), pt).unwrap());
        assert_eq!(decrypt(&k, &ct).unwrap(), pt);
        assert!(decrypt(&other, &ct).is_err());
        assert!(decrypt(&k, "AAAA").is_err());
        assert!(decrypt(&k, "!!").is_err());

        assert_eq!(max_plaintext_len(256), 214);
        let max = vec![b'x'; 214];
        assert_eq!(
            decrypt(&k, &encrypt(&k.public_key(), &max).unwrap()).unwrap(),
            max
        );
        assert!(encrypt(&k.public_key(), &[b'x'; 215]).is_err());
        assert_eq!(
            decrypt(&k, &encrypt(&k.public_key(), b"").unwrap()).unwrap(),
            b""
        );
    }

    /// Cross-check with the `rsa` crate (RustCrypto) as an independent OAEP-SHA1 implementation.
    #[test]
    fn interoperates_with_rustcrypto_oaep_sha1() {
        use rsa::pkcs8::DecodePrivateKey as _;
        use secrecy::ExposeSecret;
        let k = RsaPrivateKey::generate_2048().unwrap();
        let rc = rsa::PrivateKey::from_pkcs8_pem(k.to_pkcs8_pem().expose_secret()).unwrap();
        let ct = encrypt(&k.public_key(), b"secret").unwrap();
        let pt = rc
            .decrypt(rsa::Oaep::<sha1::Sha1>::new(), &B64.decode(&ct).unwrap())
            .unwrap();
        assert_eq!(pt, b"secret");
    }
}
