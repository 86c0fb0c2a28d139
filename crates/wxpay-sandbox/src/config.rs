//! `sandbox.toml`: the merchants the sandbox knows.
//!
//! ```toml
//! # optional top-level settings
//! token_overlap_secs = 300        # a superseded access_token keeps working this long
//! allow_http_notify_url = true    # v3: WeChat demands https; the sandbox allows http by default
//! refund_min_interval_secs = 60   # v3: two refunds of one order must be this far apart
//!
//! [[legacy_merchant]]
//! appid = "wxd930ea5d5a258f4f"
//! app_secret = "..."
//! app_key = "L8Lr..."
//! partner = "1900000109"
//! partner_key = "8934e7d15453e97507ef794cf7b0519d"
//! token_daily_quota = 200
//!
//! [[v3_merchant]]
//! mchid = "1900007291"
//! appids = ["wxd678efh567hg6787"]
//! merchant_serial_no = "408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB"
//! merchant_public_key_file = "merchant_pub.pem"  # SPKI public key or the merchant certificate
//! # merchant_private_key_file = "apiclient_key.pem" # alternative: derive the public key from it
//! apiv3_key = "a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb"
//! verify_mode = "public_key"                     # or "platform_certificate"
//! wechatpay_private_key_file = "wechatpay_key.pem" # optional; generated when absent
//! wechatpay_public_key_id = "PUB_KEY_ID_0114232134912410000000000000"
//! refund_notify_url = "https://example.com/refund-notify" # used when a refund names none
//! ```
//! Relative file names are resolved against the directory of the TOML file.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::SandboxError;

/// The app secret of the demo legacy merchant (the official example has none).
pub const DEMO_LEGACY_APP_SECRET: &str = "sandbox-demo-app-secret-000000000";
/// The official documentation's demo merchant private key (published for signature examples).
pub const DEMO_MERCHANT_PRIVATE_KEY_PEM: &str =
    include_str!("../../../demo/keys/official_test_key.pem");
/// The demo v3 merchant id.
pub const DEMO_V3_MCHID: &str = "1900007291";
/// The demo v3 app id.
pub const DEMO_V3_APPID: &str = "wxd678efh567hg6787";
/// The demo v3 merchant certificate serial.
pub const DEMO_V3_SERIAL_NO: &str = "408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB";
/// The demo v3 APIv3 key.
pub const DEMO_V3_APIV3_KEY: &str = "a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb";
/// The demo v3 WeChat Pay public key id.
pub const DEMO_V3_PUBLIC_KEY_ID: &str = "PUB_KEY_ID_0114232134912410000000000000";
/// The demo legacy app id (official 2014 example).
pub const DEMO_LEGACY_APPID: &str = "wxd930ea5d5a258f4f";
/// The demo legacy partner id (official 2014 example).
pub const DEMO_LEGACY_PARTNER: &str = "1900000109";
/// The demo legacy partner key (official 2014 example).
pub const DEMO_LEGACY_PARTNER_KEY: &str = "8934e7d15453e97507ef794cf7b0519d";
/// The demo legacy app key / paySignKey (official 2014 example).
pub const DEMO_LEGACY_APP_KEY: &str = "L8LrMqqeGRxST5reouB0K66CaYAWpqhAVsq7ggKkxHCOastWksvuX1uvmvQclxaHoYd3ElNBrNO2DHnnzgfVG9Qs473M3DTOZug5er46FhuGofumV8H2FVR9qkjSlC5K";

/// Everything the sandbox is configured with.
#[derive(Clone, Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    /// `[[legacy_merchant]]` tables.
    #[serde(default, rename = "legacy_merchant")]
    pub legacy_merchants: Vec<LegacyMerchant>,
    /// `[[v3_merchant]]` tables.
    #[serde(default, rename = "v3_merchant")]
    pub v3_merchants: Vec<V3Merchant>,
    /// How long a superseded access_token stays valid after a new one was fetched.
    #[serde(default = "default_token_overlap")]
    pub token_overlap_secs: i64,
    /// Accept `http://` notify URLs for v3 (WeChat requires https). Default true, so that local
    /// receivers work; the legacy protocol always allowed http.
    #[serde(default = "default_true")]
    pub allow_http_notify_url: bool,
    /// Minimum spacing of two refunds of the same v3 order (WeChat: 60 s). 0 disables the check.
    #[serde(default = "default_refund_interval")]
    pub refund_min_interval_secs: i64,
}

fn default_token_overlap() -> i64 {
    300
}
fn default_true() -> bool {
    true
}
fn default_refund_interval() -> i64 {
    60
}
fn default_quota() -> u32 {
    200
}

/// A merchant of the 2014 open-platform APP payment (PROTOCOL.md A).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyMerchant {
    pub appid: String,
    /// For `/cgi-bin/token`.
    pub app_secret: String,
    /// The 128-char paySignKey for the SHA-1 app signatures.
    pub app_key: String,
    pub partner: String,
    /// The 32-char key of the package MD5.
    pub partner_key: String,
    /// `/cgi-bin/token` calls allowed per (Beijing) day.
    #[serde(default = "default_quota")]
    pub token_daily_quota: u32,
    /// Shown on the cashier page.
    #[serde(default)]
    pub name: Option<String>,
}

impl fmt::Debug for LegacyMerchant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LegacyMerchant")
            .field("appid", &self.appid)
            .field("partner", &self.partner)
            .field("token_daily_quota", &self.token_daily_quota)
            .field("app_secret", &"[REDACTED]")
            .field("app_key", &"[REDACTED]")
            .field("partner_key", &"[REDACTED]")
            .finish()
    }
}

/// How the merchant verifies WeChat Pay's signatures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum VerifyMode {
    /// 微信支付公钥: responses and notifications are signed with one key, serial `PUB_KEY_ID_…`.
    #[default]
    PublicKey,
    /// 平台证书: `/v3/certificates` serves self-issued certificates; their serial signs.
    PlatformCertificate,
}

/// An APIv3 direct merchant (PROTOCOL.md B).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct V3Merchant {
    pub mchid: String,
    pub appids: Vec<String>,
    /// The merchant API certificate serial that its Authorization headers must name.
    pub merchant_serial_no: String,
    /// Path of the merchant's public key (SPKI PEM) or certificate PEM.
    #[serde(default)]
    pub merchant_public_key_file: Option<PathBuf>,
    /// The PEM itself (filled from the file, or given inline).
    #[serde(default)]
    pub merchant_public_key_pem: Option<String>,
    /// Alternatively, the merchant's private key file: its public half is used.
    #[serde(default)]
    pub merchant_private_key_file: Option<PathBuf>,
    #[serde(default)]
    pub merchant_private_key_pem: Option<String>,
    /// 32-byte APIv3 key.
    pub apiv3_key: String,
    #[serde(default)]
    pub verify_mode: VerifyMode,
    /// WeChat Pay's own signing key (public-key mode); generated at start when absent.
    #[serde(default)]
    pub wechatpay_private_key_file: Option<PathBuf>,
    #[serde(default)]
    pub wechatpay_private_key_pem: Option<String>,
    /// The `PUB_KEY_ID_…` of the WeChat Pay public key.
    #[serde(default)]
    pub wechatpay_public_key_id: Option<String>,
    /// Refund notifications go here when the refund request names no `notify_url`.
    #[serde(default)]
    pub refund_notify_url: Option<String>,
    /// Shown on the cashier page.
    #[serde(default)]
    pub name: Option<String>,
}

impl fmt::Debug for V3Merchant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("V3Merchant")
            .field("mchid", &self.mchid)
            .field("appids", &self.appids)
            .field("merchant_serial_no", &self.merchant_serial_no)
            .field("verify_mode", &self.verify_mode)
            .field("wechatpay_public_key_id", &self.wechatpay_public_key_id)
            .field("apiv3_key", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

impl V3Merchant {
    /// The configured public key id, or one derived from the mchid.
    pub fn public_key_id(&self) -> String {
        self.wechatpay_public_key_id.clone().unwrap_or_else(|| {
            let digits: String = self.mchid.chars().filter(|c| c.is_ascii_digit()).collect();
            format!("PUB_KEY_ID_{:0>32}", digits)
        })
    }
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self::demo()
    }
}

impl SandboxConfig {
    /// An empty configuration (no merchants).
    pub fn empty() -> Self {
        SandboxConfig {
            legacy_merchants: Vec::new(),
            v3_merchants: Vec::new(),
            token_overlap_secs: default_token_overlap(),
            allow_http_notify_url: true,
            refund_min_interval_secs: default_refund_interval(),
        }
    }

    /// One legacy and one v3 merchant with the official example credentials.
    pub fn demo() -> Self {
        SandboxConfig {
            legacy_merchants: vec![LegacyMerchant {
                appid: DEMO_LEGACY_APPID.into(),
                app_secret: DEMO_LEGACY_APP_SECRET.into(),
                app_key: DEMO_LEGACY_APP_KEY.into(),
                partner: DEMO_LEGACY_PARTNER.into(),
                partner_key: DEMO_LEGACY_PARTNER_KEY.into(),
                token_daily_quota: 200,
                name: Some("Sandbox Demo Shop (legacy)".into()),
            }],
            v3_merchants: vec![V3Merchant {
                mchid: DEMO_V3_MCHID.into(),
                appids: vec![DEMO_V3_APPID.into()],
                merchant_serial_no: DEMO_V3_SERIAL_NO.into(),
                merchant_public_key_file: None,
                merchant_public_key_pem: None,
                merchant_private_key_file: None,
                merchant_private_key_pem: Some(DEMO_MERCHANT_PRIVATE_KEY_PEM.into()),
                apiv3_key: DEMO_V3_APIV3_KEY.into(),
                verify_mode: VerifyMode::PublicKey,
                wechatpay_private_key_file: None,
                wechatpay_private_key_pem: None,
                wechatpay_public_key_id: Some(DEMO_V3_PUBLIC_KEY_ID.into()),
                refund_notify_url: None,
                name: Some("Sandbox Demo Shop (APIv3)".into()),
            }],
            ..Self::empty()
        }
    }

    /// Parse TOML text; relative key files are resolved against `base_dir` and read.
    pub fn from_toml_str(text: &str, base_dir: &Path) -> Result<Self, SandboxError> {
        let mut cfg: SandboxConfig =
            toml::from_str(text).map_err(|e| SandboxError::Config(e.to_string()))?;
        for m in &mut cfg.v3_merchants {
            if let Some(p) = &m.merchant_public_key_file {
                m.merchant_public_key_pem = Some(read_rel(base_dir, p)?);
            }
            if let Some(p) = &m.merchant_private_key_file {
                m.merchant_private_key_pem = Some(read_rel(base_dir, p)?);
            }
            if let Some(p) = &m.wechatpay_private_key_file {
                m.wechatpay_private_key_pem = Some(read_rel(base_dir, p)?);
            }
        }
        cfg.check()?;
        Ok(cfg)
    }

    /// Read `sandbox.toml`.
    pub fn from_toml_file(path: &Path) -> Result<Self, SandboxError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SandboxError::Config(format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::from_toml_str(&text, base)
    }

    /// Consistency checks that need no crypto.
    pub fn check(&self) -> Result<(), SandboxError> {
        let mut seen = std::collections::HashSet::new();
        for m in &self.legacy_merchants {
            if m.appid.is_empty() || m.partner.is_empty() {
                return Err(SandboxError::Config(
                    "legacy_merchant needs appid and partner".into(),
                ));
            }
            if !seen.insert(m.appid.clone()) {
                return Err(SandboxError::Config(format!("duplicate appid {}", m.appid)));
            }
        }
        let mut mchids = std::collections::HashSet::new();
        for m in &self.v3_merchants {
            if !mchids.insert(m.mchid.clone()) {
                return Err(SandboxError::Config(format!("duplicate mchid {}", m.mchid)));
            }
            if m.apiv3_key.len() != 32 {
                return Err(SandboxError::Config(format!(
                    "v3_merchant {}: apiv3_key must be exactly 32 bytes",
                    m.mchid
                )));
            }
            if m.merchant_public_key_pem.is_none() && m.merchant_private_key_pem.is_none() {
                return Err(SandboxError::Config(format!(
                    "v3_merchant {}: merchant_public_key_file is required",
                    m.mchid
                )));
            }
            if m.appids.is_empty() {
                return Err(SandboxError::Config(format!(
                    "v3_merchant {}: appids is empty",
                    m.mchid
                )));
            }
        }
        Ok(())
    }

    pub(crate) fn legacy_by_appid(&self, appid: &str) -> Option<&LegacyMerchant> {
        self.legacy_merchants.iter().find(|m| m.appid == appid)
    }
    pub(crate) fn legacy_by_partner(&self, partner: &str) -> Option<&LegacyMerchant> {
        self.legacy_merchants.iter().find(|m| m.partner == partner)
    }
    pub(crate) fn v3_by_mchid(&self, mchid: &str) -> Option<&V3Merchant> {
        self.v3_merchants.iter().find(|m| m.mchid == mchid)
    }
}

fn read_rel(base: &Path, p: &Path) -> Result<String, SandboxError> {
    let full = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    std::fs::read_to_string(&full)
        .map_err(|e| SandboxError::Config(format!("{}: {e}", full.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_key_equals_shared_vector_when_present() {
        let shared = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/vectors/keys/official_test_key.pem");
        if let Ok(text) = std::fs::read_to_string(&shared) {
            assert_eq!(text, DEMO_MERCHANT_PRIVATE_KEY_PEM);
        }
        assert!(DEMO_MERCHANT_PRIVATE_KEY_PEM.starts_with("-----BEGIN PRIVATE KEY-----"));
    }

    #[test]
    fn parses_the_issue_example() {
        let dir = std::env::temp_dir().join(format!("wxpay-sandbox-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("merchant_pub.pem"), "PEM").unwrap();
        let text = r#"
[[legacy_merchant]]
appid = "wxd930ea5d5a258f4f"
app_secret = "secret"
app_key = "L8Lr"
partner = "1900000109"
partner_key = "8934e7d15453e97507ef794cf7b0519d"
token_daily_quota = 200

[[v3_merchant]]
mchid = "1900007291"
appids = ["wxd678efh567hg6787"]
merchant_serial_no = "408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB"
merchant_public_key_file = "merchant_pub.pem"
apiv3_key = "a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb"
verify_mode = "platform_certificate"
wechatpay_public_key_id = "PUB_KEY_ID_0114232134912410000000000000"
"#;
        let cfg = SandboxConfig::from_toml_str(text, &dir).unwrap();
        assert_eq!(cfg.legacy_merchants[0].token_daily_quota, 200);
        assert_eq!(
            cfg.v3_merchants[0].verify_mode,
            VerifyMode::PlatformCertificate
        );
        assert_eq!(
            cfg.v3_merchants[0].merchant_public_key_pem.as_deref(),
            Some("PEM")
        );
        assert_eq!(cfg.token_overlap_secs, 300);
        assert!(!format!("{:?}", cfg).contains("8934e7d1"));
        let bad = text.replace("a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb", "short");
        assert!(SandboxConfig::from_toml_str(&bad, &dir).is_err());
        let missing = text.replace("merchant_pub.pem", "nope.pem");
        assert!(SandboxConfig::from_toml_str(&missing, &dir).is_err());
    }

    #[test]
    fn quota_defaults_to_200() {
        let cfg = SandboxConfig::from_toml_str(
            "[[legacy_merchant]]\nappid='a'\napp_secret='s'\napp_key='k'\npartner='p'\npartner_key='x'\n",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(cfg.legacy_merchants[0].token_daily_quota, 200);
    }
}
