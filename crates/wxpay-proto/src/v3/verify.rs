//! Verification of WeChat Pay responses and callbacks (PROTOCOL.md B.3): the `Verifier` interface
//! (as in wechatpay-go `core/auth`), the WeChat Pay public-key mode, the platform-certificate mode,
//! the combined verifier of the migration, and [`validate`] with the ±300 s replay window.
//!
//! A `WECHATPAY/SIGNTEST/…` probe is not special-cased anywhere: it is an invalid signature and
//! fails with [`VerifyError::BadSignature`] like any other.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::v3::auth::{parse_unix_seconds, response_message_raw};
use crate::v3::rsa::{Certificate, RsaPrivateKey, RsaPublicKey, normalize_serial};

/// Maximum allowed `|now - Wechatpay-Timestamp|` in seconds.
pub const MAX_SKEW_SECS: i64 = 300;

/// Header names (case-insensitive in HTTP; these are the canonical spellings).
pub const HEADER_TIMESTAMP: &str = "Wechatpay-Timestamp";
pub const HEADER_NONCE: &str = "Wechatpay-Nonce";
pub const HEADER_SIGNATURE: &str = "Wechatpay-Signature";
pub const HEADER_SERIAL: &str = "Wechatpay-Serial";
pub const HEADER_SIGNATURE_TYPE: &str = "Wechatpay-Signature-Type";
pub const HEADER_REQUEST_ID: &str = "Request-ID";

/// Why a response or callback was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A `Wechatpay-*` header is absent or empty (the name is given).
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// `Wechatpay-Timestamp` is not unix seconds.
    #[error("Wechatpay-Timestamp is not unix seconds")]
    BadTimestamp,
    /// `|now - timestamp|` exceeds [`MAX_SKEW_SECS`]; `skew = now - timestamp`.
    #[error("Wechatpay-Timestamp outside the ±300 s window (skew {skew} s)")]
    Expired { skew: i64 },
    /// No key is known for `Wechatpay-Serial` (certificate mode: refresh the certificate list).
    #[error("unknown Wechatpay-Serial {0}")]
    UnknownSerial(String),
    /// The platform certificate with this serial is not valid at the verification time.
    #[error(
        "platform certificate {serial} not valid at this time (valid {not_before}..={not_after})"
    )]
    CertificateNotValid {
        serial: String,
        not_before: i64,
        not_after: i64,
    },
    /// The signature does not verify (including malformed Base64 and SIGNTEST probes).
    #[error("bad signature")]
    BadSignature,
}

/// Something that can check a signature made by WeChat Pay, selected by `Wechatpay-Serial`.
pub trait Verifier: Send + Sync {
    /// Verifies `signature_b64` over `message` with the key named `serial`, without regard to
    /// time. Prefer [`Verifier::verify_at`] (which [`validate`] uses).
    fn verify(&self, serial: &str, message: &[u8], signature_b64: &str) -> Result<(), VerifyError>;

    /// Like [`Verifier::verify`], but keys with a validity period (platform certificates) must be
    /// valid at `now_unix`. The default ignores the time (right for bare public keys).
    fn verify_at(
        &self,
        serial: &str,
        message: &[u8],
        signature_b64: &str,
        now_unix: i64,
    ) -> Result<(), VerifyError> {
        let _ = now_unix;
        self.verify(serial, message, signature_b64)
    }
}

impl<V: Verifier + ?Sized> Verifier for &V {
    fn verify(&self, serial: &str, message: &[u8], signature_b64: &str) -> Result<(), VerifyError> {
        (**self).verify(serial, message, signature_b64)
    }
    fn verify_at(
        &self,
        serial: &str,
        message: &[u8],
        signature_b64: &str,
        now_unix: i64,
    ) -> Result<(), VerifyError> {
        (**self).verify_at(serial, message, signature_b64, now_unix)
    }
}

impl<V: Verifier + ?Sized> Verifier for Arc<V> {
    fn verify(&self, serial: &str, message: &[u8], signature_b64: &str) -> Result<(), VerifyError> {
        (**self).verify(serial, message, signature_b64)
    }
    fn verify_at(
        &self,
        serial: &str,
        message: &[u8],
        signature_b64: &str,
        now_unix: i64,
    ) -> Result<(), VerifyError> {
        (**self).verify_at(serial, message, signature_b64, now_unix)
    }
}

impl<V: Verifier + ?Sized> Verifier for Box<V> {
    fn verify(&self, serial: &str, message: &[u8], signature_b64: &str) -> Result<(), VerifyError> {
        (**self).verify(serial, message, signature_b64)
    }
    fn verify_at(
        &self,
        serial: &str,
        message: &[u8],
        signature_b64: &str,
        now_unix: i64,
    ) -> Result<(), VerifyError> {
        (**self).verify_at(serial, message, signature_b64, now_unix)
    }
}

fn check(key: &RsaPublicKey, message: &[u8], signature_b64: &str) -> Result<(), VerifyError> {
    if key.verify_sha256_base64(message, signature_b64) {
        Ok(())
    } else {
        Err(VerifyError::BadSignature)
    }
}

/// WeChat Pay public-key mode (微信支付公钥): one key with its id `PUB_KEY_ID_…`.
#[derive(Clone, Debug)]
pub struct PublicKeyVerifier {
    id: String,
    key: RsaPublicKey,
}

impl PublicKeyVerifier {
    pub fn new(id: impl Into<String>, key: RsaPublicKey) -> Self {
        PublicKeyVerifier {
            id: id.into().trim().to_string(),
            key,
        }
    }
    /// The public-key id, e.g. `PUB_KEY_ID_0000000000000024101100397200000006`.
    pub fn id(&self) -> &str {
        &self.id
    }
    pub fn public_key(&self) -> &RsaPublicKey {
        &self.key
    }
    /// Whether `serial` names this key.
    pub fn matches(&self, serial: &str) -> bool {
        serial.trim() == self.id
    }
}

impl Verifier for PublicKeyVerifier {
    fn verify(&self, serial: &str, message: &[u8], signature_b64: &str) -> Result<(), VerifyError> {
        if !self.matches(serial) {
            return Err(VerifyError::UnknownSerial(serial.to_string()));
        }
        check(&self.key, message, signature_b64)
    }
}

/// Platform-certificate mode (平台证书): certificates indexed by serial.
///
/// Time-aware through [`Verifier::verify_at`]: a certificate outside its validity period does not
/// verify. Plain [`Verifier::verify`] only checks the signature.
#[derive(Clone, Debug, Default)]
pub struct CertificateVerifier {
    certs: BTreeMap<String, Certificate>,
}

impl CertificateVerifier {
    pub fn new(certs: Vec<Certificate>) -> Self {
        let mut v = CertificateVerifier::default();
        for c in certs {
            v.insert(c);
        }
        v
    }
    /// Adds a certificate, replacing one with the same serial; returns the replaced one.
    pub fn insert(&mut self, cert: Certificate) -> Option<Certificate> {
        self.certs.insert(normalize_serial(&cert.serial_no), cert)
    }
    /// Removes the certificate with this serial.
    pub fn remove(&mut self, serial: &str) -> Option<Certificate> {
        self.certs.remove(&normalize_serial(serial))
    }
    /// Removes every certificate whose `not_after` is before `now_unix`; returns how many.
    pub fn remove_expired(&mut self, now_unix: i64) -> usize {
        let before = self.certs.len();
        self.certs.retain(|_, c| c.not_after >= now_unix);
        before - self.certs.len()
    }
    /// Serials as stored in the certificates (upper-case hex), sorted.
    pub fn serials(&self) -> Vec<String> {
        let mut s: Vec<String> = self.certs.values().map(|c| c.serial_no.clone()).collect();
        s.sort();
        s
    }
    /// Whether a certificate with this serial is known (case and leading zeros ignored).
    pub fn contains(&self, serial: &str) -> bool {
        self.certs.contains_key(&normalize_serial(serial))
    }
    pub fn get(&self, serial: &str) -> Option<&Certificate> {
        self.certs.get(&normalize_serial(serial))
    }
    pub fn certificates(&self) -> impl Iterator<Item = &Certificate> {
        self.certs.values()
    }
    /// The valid certificate with the latest `not_after` at `now_unix` (for OAEP encryption of
    /// sensitive fields, B.13).
    pub fn newest_valid(&self, now_unix: i64) -> Option<&Certificate> {
        self.certs
            .values()
            .filter(|c| c.is_valid_at(now_unix))
            .max_by_key(|c| (c.not_after, c.not_before))
    }
    pub fn len(&self) -> usize {
        self.certs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    fn lookup(&self, serial: &str) -> Result<&Certificate, VerifyError> {
        self.get(serial)
            .ok_or_else(|| VerifyError::UnknownSerial(serial.to_string()))
    }
}

impl Verifier for CertificateVerifier {
    fn verify(&self, serial: &str, message: &[u8], signature_b64: &str) -> Result<(), VerifyError> {
        check(&self.lookup(serial)?.public_key, message, signature_b64)
    }

    fn verify_at(
        &self,
        serial: &str,
        message: &[u8],
        signature_b64: &str,
        now_unix: i64,
    ) -> Result<(), VerifyError> {
        let cert = self.lookup(serial)?;
        if !cert.is_valid_at(now_unix) {
            return Err(VerifyError::CertificateNotValid {
                serial: cert.serial_no.clone(),
                not_before: cert.not_before,
                not_after: cert.not_after,
            });
        }
        check(&cert.public_key, message, signature_b64)
    }
}

/// Certificate → public-key migration (B.3.2): a serial equal to the public-key id is verified
/// with the public key, anything else with the platform certificates.
#[derive(Clone, Debug)]
pub struct CombinedVerifier {
    pub public_key: PublicKeyVerifier,
    pub certificates: CertificateVerifier,
}

impl CombinedVerifier {
    pub fn new(public_key: PublicKeyVerifier, certificates: CertificateVerifier) -> Self {
        CombinedVerifier {
            public_key,
            certificates,
        }
    }
}

impl Verifier for CombinedVerifier {
    fn verify(&self, serial: &str, message: &[u8], signature_b64: &str) -> Result<(), VerifyError> {
        if self.public_key.matches(serial) {
            self.public_key.verify(serial, message, signature_b64)
        } else {
            self.certificates.verify(serial, message, signature_b64)
        }
    }

    fn verify_at(
        &self,
        serial: &str,
        message: &[u8],
        signature_b64: &str,
        now_unix: i64,
    ) -> Result<(), VerifyError> {
        if self.public_key.matches(serial) {
            self.public_key
                .verify_at(serial, message, signature_b64, now_unix)
        } else {
            self.certificates
                .verify_at(serial, message, signature_b64, now_unix)
        }
    }
}

/// The signature headers of a response or callback, as received (raw strings).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SignedHeaders {
    /// `Wechatpay-Timestamp`
    pub timestamp: String,
    /// `Wechatpay-Nonce`
    pub nonce: String,
    /// `Wechatpay-Signature`
    pub signature: String,
    /// `Wechatpay-Serial`
    pub serial: String,
}

impl SignedHeaders {
    /// Collects the four headers through `get(name)` (the caller's case-insensitive lookup).
    /// Absent or empty headers give [`VerifyError::MissingHeader`].
    pub fn from_lookup<'a>(
        mut get: impl FnMut(&'static str) -> Option<&'a str>,
    ) -> Result<Self, VerifyError> {
        let mut one = |name: &'static str| match get(name) {
            Some(v) if !v.is_empty() => Ok(v.to_string()),
            _ => Err(VerifyError::MissingHeader(name)),
        };
        Ok(SignedHeaders {
            timestamp: one(HEADER_TIMESTAMP)?,
            nonce: one(HEADER_NONCE)?,
            signature: one(HEADER_SIGNATURE)?,
            serial: one(HEADER_SERIAL)?,
        })
    }

    /// Signs `body` as WeChat Pay does (sandbox side): `key` is the platform / public-key private
    /// key, `serial` the certificate serial or `PUB_KEY_ID_…`.
    pub fn sign(
        key: &RsaPrivateKey,
        serial: &str,
        timestamp: i64,
        nonce: &str,
        body: &[u8],
    ) -> Self {
        let ts = timestamp.to_string();
        let signature = key.sign_sha256_base64(&response_message_raw(&ts, nonce, body));
        SignedHeaders {
            timestamp: ts,
            nonce: nonce.to_string(),
            signature,
            serial: serial.to_string(),
        }
    }

    /// `(name, value)` pairs to put on a response, including
    /// `Wechatpay-Signature-Type: WECHATPAY2-SHA256-RSA2048`.
    pub fn to_header_pairs(&self) -> [(&'static str, String); 5] {
        [
            (HEADER_TIMESTAMP, self.timestamp.clone()),
            (HEADER_NONCE, self.nonce.clone()),
            (HEADER_SIGNATURE, self.signature.clone()),
            (HEADER_SERIAL, self.serial.clone()),
            (
                HEADER_SIGNATURE_TYPE,
                crate::v3::auth::SIGNATURE_TYPE.to_string(),
            ),
        ]
    }
}

/// Validates a signed response or callback: headers present, `|now − timestamp| ≤ 300 s`, then
/// the signature over `TIMESTAMP\nNONCE\nBODY\n` (raw body bytes, timestamp as received) with
/// the key selected by the serial, valid at `now_unix`.
pub fn validate<V: Verifier + ?Sized>(
    v: &V,
    h: &SignedHeaders,
    body: &[u8],
    now_unix: i64,
) -> Result<(), VerifyError> {
    if h.timestamp.is_empty() {
        return Err(VerifyError::MissingHeader(HEADER_TIMESTAMP));
    }
    if h.nonce.is_empty() {
        return Err(VerifyError::MissingHeader(HEADER_NONCE));
    }
    if h.signature.is_empty() {
        return Err(VerifyError::MissingHeader(HEADER_SIGNATURE));
    }
    if h.serial.is_empty() {
        return Err(VerifyError::MissingHeader(HEADER_SERIAL));
    }
    let ts = parse_unix_seconds(&h.timestamp).ok_or(VerifyError::BadTimestamp)?;
    let skew = now_unix.saturating_sub(ts);
    if skew.unsigned_abs() > MAX_SKEW_SECS as u64 {
        return Err(VerifyError::Expired { skew });
    }
    let message = response_message_raw(&h.timestamp, &h.nonce, body);
    v.verify_at(&h.serial, &message, &h.signature, now_unix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    fn key() -> &'static RsaPrivateKey {
        static K: OnceLock<RsaPrivateKey> = OnceLock::new();
        K.get_or_init(|| RsaPrivateKey::generate_2048().unwrap())
    }
    fn key2() -> &'static RsaPrivateKey {
        static K: OnceLock<RsaPrivateKey> = OnceLock::new();
        K.get_or_init(|| RsaPrivateKey::generate_2048().unwrap())
    }

    /// A self-signed certificate made with rcgen over an aws-lc-rs RSA key.
    fn make_cert(
        k: &RsaPrivateKey,
        serial: &[u8],
        not_before: (i32, u8, u8),
        not_after: (i32, u8, u8),
    ) -> String {
        use secrecy::ExposeSecret;
        let kp = rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(
            k.to_pkcs8_pem().expose_secret(),
            &rcgen::PKCS_RSA_SHA256,
        )
        .unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["wechatpay.test".to_string()]).unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(serial));
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        params.self_signed(&kp).unwrap().pem()
    }

    // 2020-01-01T00:00:00Z and 2030-01-01T00:00:00Z
    const T2020: i64 = 1_577_836_800;
    const T2030: i64 = 1_893_456_000;
    const NOW: i64 = 1_722_850_421; // 2024-08-05

    const SERIAL: [u8; 20] = [
        0x51, 0x57, 0xF0, 0x9E, 0xFD, 0xC0, 0x96, 0xDE, 0x15, 0xEB, 0xE8, 0x1A, 0x47, 0x05, 0x7A,
        0x72, 0x32, 0xF1, 0xB8, 0xE1,
    ];

    fn platform_cert() -> Certificate {
        Certificate::from_pem(&make_cert(key(), &SERIAL, (2020, 1, 1), (2030, 1, 1))).unwrap()
    }

    #[test]
    fn certificate_fields() {
        let c = platform_cert();
        assert_eq!(c.serial_no, "5157F09EFDC096DE15EBE81A47057A7232F1B8E1");
        assert_eq!(c.not_before, T2020);
        assert_eq!(c.not_after, T2030);
        assert_eq!(c.public_key, key().public_key());
        assert!(c.is_valid_at(NOW));
        assert!(!c.is_valid_at(T2030 + 1));
        // A serial with the high bit set is DER-padded with 00; the padding is not printed.
        let c2 = Certificate::from_pem(&make_cert(
            key(),
            &[0x80, 0x01, 0x02],
            (2020, 1, 1),
            (2030, 1, 1),
        ))
        .unwrap();
        assert_eq!(c2.serial_no, "800102");
    }

    #[test]
    fn certificates_response_entry_decrypts() {
        use crate::v3::aead::ApiV3Key;
        use crate::v3::model::{CertificateEntry, CertificatesResponse, EncryptedResource};
        let api_key = ApiV3Key::new("a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb").unwrap();
        let pem = make_cert(key(), &SERIAL, (2020, 1, 1), (2030, 1, 1));
        let enc = EncryptedResource::encrypt(
            &api_key,
            "61f9c719728a",
            "certificate",
            None,
            pem.as_bytes(),
        )
        .unwrap();
        let entry = CertificateEntry {
            serial_no: "5157F09EFDC096DE15EBE81A47057A7232F1B8E1".into(),
            effective_time: crate::v3::model::format_rfc3339_beijing(T2020),
            expire_time: crate::v3::model::format_rfc3339_beijing(T2030),
            encrypt_certificate: enc,
        };
        let body = serde_json::to_vec(&CertificatesResponse {
            data: vec![entry.clone()],
        })
        .unwrap();
        let parsed: CertificatesResponse = serde_json::from_slice(&body).unwrap();
        let cert = parsed.data[0].decrypt_certificate(&api_key).unwrap();
        assert_eq!(cert, platform_cert());
        let mut wrong = entry.clone();
        wrong.serial_no = "0123".into();
        assert!(wrong.decrypt_certificate(&api_key).is_err());
        let other_key = ApiV3Key::new("b7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb").unwrap();
        assert!(entry.decrypt_certificate(&other_key).is_err());
    }

    #[test]
    fn certificate_mode() {
        let v = CertificateVerifier::new(vec![platform_cert()]);
        assert_eq!(
            v.serials(),
            vec!["5157F09EFDC096DE15EBE81A47057A7232F1B8E1".to_string()]
        );
        assert!(v.contains("5157f09efdc096de15ebe81a47057a7232f1b8e1"));
        let body = br#"{"prepay_id":"wx26112221580621e9b071c00d9e093b0000"}"#;
        let h = SignedHeaders::sign(
            key(),
            "5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
            NOW,
            "nonce",
            body,
        );
        assert_eq!(validate(&v, &h, body, NOW), Ok(()));
        assert_eq!(validate(&v, &h, b"{}", NOW), Err(VerifyError::BadSignature));
        // lower-case serial header still finds the certificate
        let mut lower = h.clone();
        lower.serial = lower.serial.to_lowercase();
        assert_eq!(validate(&v, &lower, body, NOW), Ok(()));
        // unknown serial
        let mut other = h.clone();
        other.serial = "0123".into();
        assert_eq!(
            validate(&v, &other, body, NOW),
            Err(VerifyError::UnknownSerial("0123".into()))
        );
        // signed with a different key under the same serial
        let forged = SignedHeaders::sign(key2(), &h.serial, NOW, "nonce", body);
        assert_eq!(
            validate(&v, &forged, body, NOW),
            Err(VerifyError::BadSignature)
        );
        // SIGNTEST probe
        let mut probe = h.clone();
        probe.signature = format!("WECHATPAY/SIGNTEST/{}", h.signature);
        assert_eq!(
            validate(&v, &probe, body, NOW),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn certificate_outside_validity_does_not_verify() {
        let expired =
            Certificate::from_pem(&make_cert(key(), &[0x11; 20], (2015, 1, 1), (2020, 1, 1)))
                .unwrap();
        let future =
            Certificate::from_pem(&make_cert(key(), &[0x22; 20], (2030, 1, 1), (2035, 1, 1)))
                .unwrap();
        let mut v =
            CertificateVerifier::new(vec![expired.clone(), future.clone(), platform_cert()]);
        let body = b"{}";
        for c in [&expired, &future] {
            let h = SignedHeaders::sign(key(), &c.serial_no, NOW, "n", body);
            assert!(matches!(
                validate(&v, &h, body, NOW),
                Err(VerifyError::CertificateNotValid { .. })
            ));
            // the time-less check only looks at the signature
            assert_eq!(
                v.verify(
                    &h.serial,
                    &response_message_raw(&h.timestamp, "n", body),
                    &h.signature
                ),
                Ok(())
            );
        }
        assert_eq!(
            v.newest_valid(NOW).unwrap().serial_no,
            platform_cert().serial_no
        );
        assert_eq!(v.remove_expired(NOW), 1);
        assert_eq!(v.len(), 2);
        assert!(v.remove(&future.serial_no).is_some());
        assert_eq!(v.len(), 1);
    }

    #[test]
    fn combined_mode_chooses_by_serial() {
        const PK_ID: &str = "PUB_KEY_ID_0000000000000024101100397200000006";
        let pk = PublicKeyVerifier::new(PK_ID, key2().public_key());
        let certs = CertificateVerifier::new(vec![platform_cert()]);
        let v = CombinedVerifier::new(pk, certs);
        let body = b"{\"a\":1}";

        // public-key id -> public key (key2)
        let h = SignedHeaders::sign(key2(), PK_ID, NOW, "n1", body);
        assert_eq!(validate(&v, &h, body, NOW), Ok(()));
        // the same id but signed with the certificate's key -> bad signature (not a fallback)
        let h = SignedHeaders::sign(key(), PK_ID, NOW, "n1", body);
        assert_eq!(validate(&v, &h, body, NOW), Err(VerifyError::BadSignature));

        // certificate serial -> certificate (key)
        let serial = platform_cert().serial_no;
        let h = SignedHeaders::sign(key(), &serial, NOW, "n2", body);
        assert_eq!(validate(&v, &h, body, NOW), Ok(()));
        let h = SignedHeaders::sign(key2(), &serial, NOW, "n2", body);
        assert_eq!(validate(&v, &h, body, NOW), Err(VerifyError::BadSignature));

        // neither
        let h = SignedHeaders::sign(key2(), "PUB_KEY_ID_1", NOW, "n3", body);
        assert_eq!(
            validate(&v, &h, body, NOW),
            Err(VerifyError::UnknownSerial("PUB_KEY_ID_1".into()))
        );

        // through Arc<dyn Verifier>
        let dynv: Arc<dyn Verifier> = Arc::new(v);
        let h = SignedHeaders::sign(key2(), PK_ID, NOW, "n1", body);
        assert_eq!(validate(&dynv, &h, body, NOW), Ok(()));
        assert_eq!(validate(&*dynv, &h, body, NOW), Ok(()));
    }

    #[test]
    fn headers_and_window() {
        let pk = PublicKeyVerifier::new("PUB_KEY_ID_1", key().public_key());
        let body = b"";
        let h = SignedHeaders::sign(key(), "PUB_KEY_ID_1", NOW, "n", body);
        assert_eq!(validate(&pk, &h, body, NOW + 300), Ok(()));
        assert_eq!(validate(&pk, &h, body, NOW - 300), Ok(()));
        assert_eq!(
            validate(&pk, &h, body, NOW + 301),
            Err(VerifyError::Expired { skew: 301 })
        );
        assert_eq!(
            validate(&pk, &h, body, NOW - 301),
            Err(VerifyError::Expired { skew: -301 })
        );
        assert_eq!(
            validate(&pk, &h, body, i64::MIN),
            Err(VerifyError::Expired { skew: i64::MIN })
        );
        for (f, name) in [
            (0usize, HEADER_TIMESTAMP),
            (1, HEADER_NONCE),
            (2, HEADER_SIGNATURE),
            (3, HEADER_SERIAL),
        ] {
            let mut m = h.clone();
            *[
                &mut m.timestamp,
                &mut m.nonce,
                &mut m.signature,
                &mut m.serial,
            ][f] = String::new();
            assert_eq!(
                validate(&pk, &m, body, NOW),
                Err(VerifyError::MissingHeader(name))
            );
        }
        for bad in [
            "-1",
            "+1722850421",
            "01722850421",
            "1722850421.0",
            " 1722850421",
            "x",
        ] {
            let mut m = h.clone();
            m.timestamp = bad.into();
            assert_eq!(
                validate(&pk, &m, body, NOW),
                Err(VerifyError::BadTimestamp),
                "{bad}"
            );
        }

        let pairs = h.to_header_pairs();
        let got = SignedHeaders::from_lookup(|n| {
            pairs.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str())
        })
        .unwrap();
        assert_eq!(got, h);
        assert_eq!(
            SignedHeaders::from_lookup(|n| if n == HEADER_NONCE { None } else { Some("x") }),
            Err(VerifyError::MissingHeader(HEADER_NONCE))
        );
    }
}
