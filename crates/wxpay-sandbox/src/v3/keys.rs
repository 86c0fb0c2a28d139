//! WeChat Pay's side of the keys: per v3 merchant the merchant's public key (to verify its
//! `Authorization`), the WeChat Pay public-key pair (`PUB_KEY_ID_…`) and, in platform-certificate
//! mode, self-issued platform certificates (rotation keeps the previous one listed).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use wxpay_proto::ExposeSecret;
use wxpay_proto::v3::rsa::{Certificate, RsaPrivateKey, RsaPublicKey, normalize_serial};

use crate::config::{SandboxConfig, V3Merchant, VerifyMode};
use crate::error::SandboxError;

/// A platform certificate with its private key.
#[derive(Clone)]
pub(crate) struct PlatformCert {
    pub serial: String,
    pub pem: String,
    pub key: RsaPrivateKey,
    pub not_before: i64,
    pub not_after: i64,
}

pub(crate) struct MerchantKeys {
    pub mode: VerifyMode,
    pub merchant_public: RsaPublicKey,
    pub merchant_serial: String,
    pub public_key_id: String,
    pub wechatpay_key: RsaPrivateKey,
    pub wechatpay_public_pem: String,
    /// Oldest first; the last one signs.
    pub certs: Vec<PlatformCert>,
    pub cert_counter: u64,
}

pub(crate) struct KeyStore {
    merchants: HashMap<String, Mutex<MerchantKeys>>,
}

/// A key that is never any merchant's WeChat Pay key: forged notifications are signed with it.
pub(crate) fn forged_key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| RsaPrivateKey::generate_2048().expect("RSA key generation"))
}

fn merchant_public_key(m: &V3Merchant) -> Result<RsaPublicKey, SandboxError> {
    if let Some(pem) = &m.merchant_public_key_pem {
        if pem.contains("BEGIN CERTIFICATE") {
            return Ok(Certificate::from_pem(pem)?.public_key);
        }
        return Ok(RsaPublicKey::from_spki_pem(pem)?);
    }
    if let Some(pem) = &m.merchant_private_key_pem {
        return Ok(RsaPrivateKey::from_pkcs8_pem(pem)?.public_key());
    }
    Err(SandboxError::Config(format!(
        "v3_merchant {}: no merchant public key",
        m.mchid
    )))
}

fn issue_certificate(mchid: &str, n: u64, now: i64) -> Result<PlatformCert, SandboxError> {
    use chrono::{Datelike, TimeZone, Utc};
    let key = RsaPrivateKey::generate_2048()?;
    let cfg = |e: rcgen::Error| SandboxError::Config(format!("certificate: {e}"));
    let kp = rcgen::KeyPair::from_pem(key.to_pkcs8_pem().expose_secret()).map_err(cfg)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(cfg)?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CountryName, "CN");
    dn.push(rcgen::DnType::OrganizationName, "Tenpay.com");
    dn.push(
        rcgen::DnType::OrganizationalUnitName,
        "Tenpay.com CA Center (sandbox)",
    );
    dn.push(
        rcgen::DnType::CommonName,
        format!("WeChat Pay sandbox platform certificate {mchid}"),
    );
    params.distinguished_name = dn;
    // 20-byte serial, first byte 0x10..=0x7f: positive, no leading zero, 40 upper-hex digits.
    let mut serial = [0u8; 20];
    {
        use rand::RngExt;
        let mut rng = rand::rng();
        rng.fill(&mut serial[..]);
    }
    serial[0] = 0x10 + (serial[0] % 0x70);
    serial[19] = (n & 0xff) as u8;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let day = |t: i64| {
        let d = Utc.timestamp_opt(t, 0).single().unwrap_or_default();
        rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8)
    };
    params.not_before = day(now - 86_400);
    params.not_after = day(now + 5 * 365 * 86_400);
    let cert = params.self_signed(&kp).map_err(cfg)?;
    let pem = cert.pem();
    let parsed = Certificate::from_pem(&pem)?;
    Ok(PlatformCert {
        serial: parsed.serial_no,
        pem,
        key,
        not_before: parsed.not_before,
        not_after: parsed.not_after,
    })
}

impl KeyStore {
    pub fn new(config: &SandboxConfig, now: i64) -> Result<Self, SandboxError> {
        let mut merchants = HashMap::new();
        for m in &config.v3_merchants {
            let merchant_public = merchant_public_key(m)?;
            let wechatpay_key = match &m.wechatpay_private_key_pem {
                Some(pem) => RsaPrivateKey::from_pkcs8_pem(pem)?,
                None => RsaPrivateKey::generate_2048()?,
            };
            let certs = match m.verify_mode {
                VerifyMode::PlatformCertificate => vec![issue_certificate(&m.mchid, 1, now)?],
                VerifyMode::PublicKey => Vec::new(),
            };
            merchants.insert(
                m.mchid.clone(),
                Mutex::new(MerchantKeys {
                    mode: m.verify_mode,
                    merchant_public,
                    merchant_serial: normalize_serial(&m.merchant_serial_no),
                    public_key_id: m.public_key_id(),
                    wechatpay_public_pem: wechatpay_key.public_key().to_spki_pem(),
                    wechatpay_key,
                    certs,
                    cert_counter: 1,
                }),
            );
        }
        Ok(KeyStore { merchants })
    }

    fn with<T>(&self, mchid: &str, f: impl FnOnce(&mut MerchantKeys) -> T) -> Option<T> {
        self.merchants
            .get(mchid)
            .map(|m| f(&mut m.lock().unwrap_or_else(|p| p.into_inner())))
    }

    pub fn public_key(&self, mchid: &str) -> Option<(String, String)> {
        self.with(mchid, |k| {
            (k.wechatpay_public_pem.clone(), k.public_key_id.clone())
        })
    }

    pub fn mode(&self, mchid: &str) -> Option<VerifyMode> {
        self.with(mchid, |k| k.mode)
    }

    pub fn certificates(&self, mchid: &str) -> Vec<(String, String)> {
        self.with(mchid, |k| {
            k.certs
                .iter()
                .map(|c| (c.serial.clone(), c.pem.clone()))
                .collect()
        })
        .unwrap_or_default()
    }

    pub fn certificate_infos(&self, mchid: &str) -> Vec<(String, String, i64, i64)> {
        self.with(mchid, |k| {
            k.certs
                .iter()
                .map(|c| (c.serial.clone(), c.pem.clone(), c.not_before, c.not_after))
                .collect()
        })
        .unwrap_or_default()
    }

    pub fn platform_certs(&self, mchid: &str) -> Vec<PlatformCert> {
        self.with(mchid, |k| k.certs.clone()).unwrap_or_default()
    }

    pub fn signing_serial(&self, mchid: &str) -> Option<String> {
        self.with(mchid, |k| match k.mode {
            VerifyMode::PublicKey => Some(k.public_key_id.clone()),
            VerifyMode::PlatformCertificate => k.certs.last().map(|c| c.serial.clone()),
        })
        .flatten()
    }

    /// Issue a new certificate; the newest signs, the previous one stays listed, older ones go.
    pub fn rotate(&self, mchid: &str, now: i64) -> Result<Vec<String>, SandboxError> {
        let mode = self
            .mode(mchid)
            .ok_or_else(|| SandboxError::NotFound(format!("v3 merchant {mchid}")))?;
        if mode != VerifyMode::PlatformCertificate {
            return Err(SandboxError::Conflict(format!(
                "merchant {mchid} uses the WeChat Pay public key, not platform certificates"
            )));
        }
        let n = self.with(mchid, |k| {
            k.cert_counter += 1;
            k.cert_counter
        });
        let cert = issue_certificate(mchid, n.unwrap_or(2), now)?;
        Ok(self
            .with(mchid, |k| {
                k.certs.push(cert);
                while k.certs.len() > 2 {
                    k.certs.remove(0);
                }
                k.certs.iter().map(|c| c.serial.clone()).collect()
            })
            .unwrap_or_default())
    }

    /// Sign `message` as WeChat Pay for this merchant: `(serial, signature_b64)`.
    /// `requested_serial` is the request's `Wechatpay-Serial` header (a `PUB_KEY_ID_…` there asks
    /// for public-key signatures even in certificate mode).
    pub fn sign(
        &self,
        mchid: &str,
        message: &[u8],
        requested_serial: Option<&str>,
    ) -> Option<(String, String)> {
        self.with(mchid, |k| {
            let use_pk = k.mode == VerifyMode::PublicKey
                || requested_serial.is_some_and(|s| s.trim() == k.public_key_id)
                || k.certs.is_empty();
            if use_pk {
                (
                    k.public_key_id.clone(),
                    k.wechatpay_key.sign_sha256_base64(message),
                )
            } else {
                let c = k.certs.last().expect("non-empty");
                (c.serial.clone(), c.key.sign_sha256_base64(message))
            }
        })
    }

    /// The serial a genuine signature would carry, with a signature from the wrong key.
    pub fn sign_forged(&self, mchid: &str, message: &[u8]) -> Option<(String, String)> {
        let serial = self.signing_serial(mchid)?;
        Some((serial, forged_key().sign_sha256_base64(message)))
    }

    /// Verify any message signed with the merchant's private key (e.g. the APP pay sign).
    pub fn verify_merchant_message(&self, mchid: &str, message: &[u8], signature: &str) -> bool {
        self.with(mchid, |k| {
            k.merchant_public.verify_sha256_base64(message, signature)
        })
        .unwrap_or(false)
    }

    /// Check a merchant's request signature. Err says why (for the SIGN_ERROR message).
    pub fn verify_merchant(
        &self,
        mchid: &str,
        serial: &str,
        message: &[u8],
        signature: &str,
    ) -> Result<(), &'static str> {
        self.with(mchid, |k| {
            if normalize_serial(serial) != k.merchant_serial {
                return Err("商户证书序列号有误");
            }
            if k.merchant_public.verify_sha256_base64(message, signature) {
                Ok(())
            } else {
                Err("签名错误")
            }
        })
        .unwrap_or(Err("商户号不存在"))
    }
}
