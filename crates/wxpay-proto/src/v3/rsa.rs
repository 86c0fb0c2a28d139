//! RSA keys for APIv3 (PROTOCOL.md B.2, B.3, B.13): PKCS#1 v1.5 / SHA-256 signatures, PKCS#8 and
//! SPKI encodings, 2048-bit key generation and X.509 platform certificates.
//!
//! Backed by `aws-lc-rs`. PKCS#1 v1.5 signing is deterministic, so signatures reproduce the
//! official vectors byte for byte.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize, PrivateDecryptingKey};
use aws_lc_rs::signature::{self, ParsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::error::ProtoError;

/// PEM label of an unencrypted PKCS#8 private key (`apiclient_key.pem`).
const PKCS8_LABEL: &str = "PRIVATE KEY";
/// PEM label of a PKCS#1 `RSAPrivateKey` (accepted on input only).
const PKCS1_LABEL: &str = "RSA PRIVATE KEY";
/// PEM label of a SubjectPublicKeyInfo (`pub_key.pem`).
const SPKI_LABEL: &str = "PUBLIC KEY";
/// PEM label of a PKCS#1 `RSAPublicKey` (accepted on input only).
const PKCS1_PUBLIC_LABEL: &str = "RSA PUBLIC KEY";
/// PEM label of an X.509 certificate.
const CERT_LABEL: &str = "CERTIFICATE";

fn pem_lf(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

fn parse_pem(input: &str, what: &'static str) -> Result<pem::Pem, ProtoError> {
    pem::parse(input.trim()).map_err(|e| ProtoError::malformed(what, e.to_string()))
}

struct PrivateInner {
    /// For PKCS#1 v1.5 signing.
    sign: KeyPair,
    /// For RSAES-OAEP decryption (B.13); built from the same PKCS#8 document.
    decrypt: PrivateDecryptingKey,
    public: RsaPublicKey,
}

/// An RSA private key (the merchant's `apiclient_key.pem`, or a WeChat-side key in the sandbox).
///
/// Cheap to clone (shared). `Debug` never prints key material.
#[derive(Clone)]
pub struct RsaPrivateKey(Arc<PrivateInner>);

impl fmt::Debug for RsaPrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RsaPrivateKey([REDACTED])")
    }
}

impl RsaPrivateKey {
    /// Parses a PEM private key: PKCS#8 `BEGIN PRIVATE KEY` (what WeChat issues) or, for
    /// convenience, PKCS#1 `BEGIN RSA PRIVATE KEY`. RSA 2048–8192 bits.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, ProtoError> {
        let doc = parse_pem(pem, "private key PEM")?;
        let label = doc.tag().to_string();
        let der = Zeroizing::new(doc.into_contents());
        match label.as_str() {
            PKCS8_LABEL => Self::from_pkcs8_der(&der),
            PKCS1_LABEL => {
                let kp = KeyPair::from_der(&der).map_err(|e| {
                    ProtoError::InvalidKey(format!("PKCS#1 RSA private key rejected: {e}"))
                })?;
                let pkcs8 = kp.as_der().map_err(|_| {
                    ProtoError::InvalidKey("cannot re-encode PKCS#1 key as PKCS#8".into())
                })?;
                Self::from_pkcs8_der(pkcs8.as_ref())
            }
            other => Err(ProtoError::InvalidKey(format!(
                "expected a `{PKCS8_LABEL}` PEM block, got `{other}`"
            ))),
        }
    }

    /// Parses an unencrypted PKCS#8 DER private key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, ProtoError> {
        let sign = KeyPair::from_pkcs8(der)
            .map_err(|e| ProtoError::InvalidKey(format!("PKCS#8 RSA private key rejected: {e}")))?;
        let decrypt = PrivateDecryptingKey::from_pkcs8(der)
            .map_err(|e| ProtoError::InvalidKey(format!("PKCS#8 RSA private key rejected: {e}")))?;
        let public = public_of(&sign)?;
        Ok(RsaPrivateKey(Arc::new(PrivateInner {
            sign,
            decrypt,
            public,
        })))
    }

    /// Generates a fresh RSA-2048 key (uses the OS RNG through aws-lc-rs; the only randomness in
    /// this crate). Used by the sandbox for WeChat-side keys and by tests.
    pub fn generate_2048() -> Result<Self, ProtoError> {
        let kp = KeyPair::generate(KeySize::Rsa2048)
            .map_err(|_| ProtoError::Crypto("RSA-2048 key generation failed"))?;
        let der = kp
            .as_der()
            .map_err(|_| ProtoError::Crypto("PKCS#8 export of generated key failed"))?;
        Self::from_pkcs8_der(der.as_ref())
    }

    /// The key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, LF line endings).
    pub fn to_pkcs8_pem(&self) -> SecretString {
        SecretString::from(pem_lf(PKCS8_LABEL, &self.to_pkcs8_der()))
    }

    /// The key as PKCS#8 DER (zeroized on drop).
    pub fn to_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        // Marshalling a key that aws-lc already accepted only fails on allocation failure.
        let der = self
            .0
            .sign
            .as_der()
            .expect("PKCS#8 marshalling of a parsed RSA key cannot fail");
        Zeroizing::new(der.as_ref().to_vec())
    }

    /// The matching public key.
    pub fn public_key(&self) -> RsaPublicKey {
        self.0.public.clone()
    }

    /// Modulus size in bits (2048 for WeChat keys).
    pub fn bits(&self) -> usize {
        self.0.sign.public_modulus_len() * 8
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256 over `msg`, Base64 (standard alphabet, padded).
    pub fn sign_sha256_base64(&self, msg: &[u8]) -> String {
        B64.encode(self.sign_sha256(msg))
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256 over `msg`, raw signature bytes.
    pub fn sign_sha256(&self, msg: &[u8]) -> Vec<u8> {
        let mut sig = vec![0u8; self.0.sign.public_modulus_len()];
        // aws-lc-rs ignores the RNG for PKCS#1 v1.5 (deterministic padding); the argument only
        // exists for ring compatibility.
        let rng = aws_lc_rs::rand::SystemRandom::new();
        self.0
            .sign
            .sign(&signature::RSA_PKCS1_SHA256, &rng, msg, &mut sig)
            .expect("PKCS#1 v1.5 signing with a validated RSA key and a modulus-sized buffer cannot fail");
        sig
    }

    pub(crate) fn decrypting_key(&self) -> &PrivateDecryptingKey {
        &self.0.decrypt
    }
}

fn public_of(kp: &KeyPair) -> Result<RsaPublicKey, ProtoError> {
    use aws_lc_rs::signature::KeyPair as _;
    let spki = kp
        .public_key()
        .as_der()
        .map_err(|_| ProtoError::InvalidKey("cannot encode RSA public key".into()))?;
    RsaPublicKey::from_spki_der(spki.as_ref())
}

/// An RSA public key (WeChat Pay public key `pub_key.pem`, a platform-certificate key, or the
/// merchant's key in the sandbox). Cheap to clone.
#[derive(Clone)]
pub struct RsaPublicKey(Arc<PublicInner>);

struct PublicInner {
    /// SubjectPublicKeyInfo DER.
    spki: Vec<u8>,
    /// Pre-parsed for PKCS#1 v1.5 SHA-256 verification (2048–8192 bits).
    verify: ParsedPublicKey,
}

impl fmt::Debug for RsaPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.0.spki);
        write!(
            f,
            "RsaPublicKey(spki-sha256:{})",
            hex::encode(&digest.as_ref()[..8])
        )
    }
}

impl PartialEq for RsaPublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.spki == other.0.spki
    }
}
impl Eq for RsaPublicKey {}

impl RsaPublicKey {
    /// Parses `-----BEGIN PUBLIC KEY-----` (SPKI) or `-----BEGIN RSA PUBLIC KEY-----` (PKCS#1).
    pub fn from_spki_pem(pem: &str) -> Result<Self, ProtoError> {
        let doc = parse_pem(pem, "public key PEM")?;
        match doc.tag() {
            SPKI_LABEL | PKCS1_PUBLIC_LABEL => Self::from_spki_der(doc.contents()),
            other => Err(ProtoError::InvalidKey(format!(
                "expected a `{SPKI_LABEL}` PEM block, got `{other}`"
            ))),
        }
    }

    /// Parses a DER SubjectPublicKeyInfo (a PKCS#1 `RSAPublicKey` is accepted too). The key must
    /// be RSA with a 2048–8192-bit modulus.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, ProtoError> {
        let rejected = |e: aws_lc_rs::error::KeyRejected| {
            ProtoError::InvalidKey(format!("RSA public key rejected: {e}"))
        };
        let pk = aws_lc_rs::rsa::PublicKey::from_der(der).map_err(rejected)?;
        let spki = pk
            .as_der()
            .map_err(|_| ProtoError::InvalidKey("cannot encode RSA public key".into()))?
            .as_ref()
            .to_vec();
        let verify = ParsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &spki)
            .map_err(rejected)?;
        Ok(RsaPublicKey(Arc::new(PublicInner { spki, verify })))
    }

    /// `-----BEGIN PUBLIC KEY-----` PEM (SPKI, LF line endings).
    pub fn to_spki_pem(&self) -> String {
        pem_lf(SPKI_LABEL, &self.0.spki)
    }

    /// SubjectPublicKeyInfo DER.
    pub fn to_spki_der(&self) -> Vec<u8> {
        self.0.spki.clone()
    }

    /// Verifies a Base64 RSASSA-PKCS1-v1_5 / SHA-256 signature. Any malformed Base64 (including
    /// `WECHATPAY/SIGNTEST/…` probes) simply fails.
    pub fn verify_sha256_base64(&self, msg: &[u8], sig_b64: &str) -> bool {
        match B64.decode(sig_b64.as_bytes()) {
            Ok(sig) => self.verify_sha256(msg, &sig),
            Err(_) => false,
        }
    }

    /// Verifies a raw RSASSA-PKCS1-v1_5 / SHA-256 signature.
    pub fn verify_sha256(&self, msg: &[u8], sig: &[u8]) -> bool {
        self.0.verify.verify_sig(msg, sig).is_ok()
    }
}

/// An X.509 certificate reduced to what verification needs (a WeChat Pay platform certificate,
/// or the merchant's `apiclient_cert.pem`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    /// Serial number as upper-case hex of its big-endian magnitude (leading zero bytes dropped,
    /// two digits per byte), e.g. `5157F09EFDC096DE15EBE81A47057A7232F1B8E1` — as WeChat and
    /// wechatpay-go print it.
    pub serial_no: String,
    /// `notBefore` in unix seconds.
    pub not_before: i64,
    /// `notAfter` in unix seconds.
    pub not_after: i64,
    /// The subject public key (must be RSA).
    pub public_key: RsaPublicKey,
}

impl Certificate {
    /// Parses the first `-----BEGIN CERTIFICATE-----` block of `pem`.
    pub fn from_pem(pem: &str) -> Result<Self, ProtoError> {
        let doc = parse_pem(pem, "certificate PEM")?;
        if doc.tag() != CERT_LABEL {
            return Err(ProtoError::malformed(
                "certificate PEM",
                format!("expected a `{CERT_LABEL}` PEM block, got `{}`", doc.tag()),
            ));
        }
        Self::from_der(doc.contents())
    }

    /// Parses a DER X.509 certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, ProtoError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| ProtoError::malformed("X.509 certificate", e.to_string()))?;
        let serial_no = serial_hex(cert.tbs_certificate.raw_serial());
        let validity = cert.validity();
        let public_key = RsaPublicKey::from_spki_der(cert.public_key().raw)?;
        Ok(Certificate {
            serial_no,
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
            public_key,
        })
    }

    /// Whether `now_unix` lies within `[not_before, not_after]`.
    pub fn is_valid_at(&self, now_unix: i64) -> bool {
        self.not_before <= now_unix && now_unix <= self.not_after
    }
}

/// Upper-case hex of a DER INTEGER's content bytes without the sign-padding zero bytes.
fn serial_hex(raw: &[u8]) -> String {
    let first = raw
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(raw.len().saturating_sub(1));
    hex::encode_upper(&raw[first.min(raw.len())..])
}

/// Canonical form of a serial for lookups: trimmed, upper-case, leading `0`s removed (so a
/// Java-style `toString(16)` serial and a byte-wise one match). `PUB_KEY_ID_…` ids are only
/// trimmed.
pub fn normalize_serial(serial: &str) -> String {
    let s = serial.trim();
    if s.bytes().all(|b| b.is_ascii_hexdigit()) && !s.is_empty() {
        let up = s.to_ascii_uppercase();
        let t = up.trim_start_matches('0');
        if t.is_empty() {
            "0".to_string()
        } else {
            t.to_string()
        }
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn serial_hex_strips_sign_padding() {
        assert_eq!(serial_hex(&[0x00, 0x80, 0x01]), "8001");
        assert_eq!(serial_hex(&[0x0F, 0xAB]), "0FAB");
        assert_eq!(serial_hex(&[0x00]), "00");
        assert_eq!(serial_hex(&[]), "");
    }

    #[test]
    fn normalize() {
        assert_eq!(normalize_serial(" 0fab "), "FAB");
        assert_eq!(normalize_serial("PUB_KEY_ID_0001"), "PUB_KEY_ID_0001");
        assert_eq!(normalize_serial("000"), "0");
    }

    #[test]
    fn generate_export_reimport_sign_verify() {
        let k = RsaPrivateKey::generate_2048().unwrap();
        assert_eq!(k.bits(), 2048);
        let pem = k.to_pkcs8_pem();
        assert!(
            pem.expose_secret()
                .starts_with("-----BEGIN PRIVATE KEY-----\n")
        );
        let k2 = RsaPrivateKey::from_pkcs8_pem(pem.expose_secret()).unwrap();
        assert_eq!(k.public_key(), k2.public_key());
        let sig = k.sign_sha256_base64(b"hello\n");
        assert_eq!(
            sig,
            k2.sign_sha256_base64(b"hello\n"),
            "PKCS#1 v1.5 is deterministic"
        );
        let pubpem = k.public_key().to_spki_pem();
        let pk = RsaPublicKey::from_spki_pem(&pubpem).unwrap();
        assert!(pk.verify_sha256_base64(b"hello\n", &sig));
        assert!(!pk.verify_sha256_base64(b"hello", &sig));
        assert!(!pk.verify_sha256_base64(b"hello\n", &format!("WECHATPAY/SIGNTEST/{sig}")));
        assert!(!pk.verify_sha256_base64(b"hello\n", "not base64!"));
        assert!(!format!("{k:?}").contains("BEGIN"));
        assert_eq!(format!("{k:?}"), "RsaPrivateKey([REDACTED])");
    }

    #[test]
    fn rejects_garbage() {
        assert!(RsaPrivateKey::from_pkcs8_pem("").is_err());
        assert!(
            RsaPrivateKey::from_pkcs8_pem(
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
            )
            .is_err()
        );
        assert!(
            RsaPublicKey::from_spki_pem(
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
            )
            .is_err()
        );
        assert!(RsaPublicKey::from_spki_der(&[1, 2, 3]).is_err());
        assert!(Certificate::from_pem("junk").is_err());
        assert!(Certificate::from_der(&[0x30, 0x03, 0x02, 0x01, 0x01]).is_err());
    }
}
