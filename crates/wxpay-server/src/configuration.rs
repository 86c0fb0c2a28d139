//! `wxpay.toml` and `WXPAY_…` environment variables (nested keys with `__`, e.g.
//! `WXPAY_AUTH__ADMIN_KEY`; merchants as a TOML array in `WXPAY_MERCHANTS`). Secrets are
//! `SecretString`: they never reach a log, an error or a metric.

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::SecretString;
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Where WeChat reaches us: notify_url = {public_url}/notify/{merchant id}.
    #[serde(default)]
    pub public_url: Option<String>,
    #[serde(default = "default_database_url")]
    pub database_url: String,
    /// `memory` or `redis://…`.
    #[serde(default = "default_cache_url")]
    pub cache_url: String,
    #[serde(default = "default_order_ttl")]
    pub order_ttl_secs: i64,
    #[serde(default)]
    pub auth: AuthSettings,
    #[serde(default)]
    pub merchants: Vec<MerchantSettings>,
    /// Refuse sandbox gateways and non-HTTPS public URLs.
    #[serde(default)]
    pub production: bool,
    /// Gaps between the sweeper's queries of a pending payment; the last one repeats.
    #[serde(default = "default_sweep_schedule")]
    pub sweep_schedule_secs: Vec<i64>,
    /// Refund a payment that arrives for a closed order automatically (else: anomaly for review).
    #[serde(default)]
    pub late_success_refund: bool,
    /// Run the background workers (sweeper, expirer, webhooks, reconciler) in this process.
    #[serde(default = "default_true")]
    pub workers: bool,
    /// Business webhooks: every outbox event is POSTed, signed, to each endpoint subscribing to it.
    #[serde(default)]
    pub webhooks: Vec<WebhookSettings>,
    /// Gaps between a failed webhook delivery and its next attempt; after the last, DEAD.
    #[serde(default = "default_webhook_retry")]
    pub webhook_retry_secs: Vec<i64>,
    /// Timeout of one webhook request (connect + answer), in milliseconds.
    #[serde(default = "default_webhook_timeout_ms")]
    pub webhook_timeout_ms: u64,
}

/// One business-webhook endpoint.
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookSettings {
    pub url: String,
    /// The HMAC-SHA256 key of `Wxpay-Signature`.
    pub secret: SecretString,
    /// Event types to send (default: every event).
    #[serde(default)]
    pub events: Vec<String>,
}

/// WeChat Pay's own notification schedule: 15 retries over 24 h 4 m, then DEAD.
fn default_webhook_retry() -> Vec<i64> {
    vec![
        15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600, 21600,
    ]
}
fn default_webhook_timeout_ms() -> u64 {
    5000
}

fn default_sweep_schedule() -> Vec<i64> {
    vec![10, 30, 60, 120, 300, 600, 1800, 3600]
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct AuthSettings {
    /// Server-to-server keys: full access (`Authorization: Bearer <key>`).
    #[serde(default)]
    pub api_keys: Vec<SecretString>,
    /// HS256 secret of app-user JWTs (`sub` = user id).
    #[serde(default)]
    pub jwt_secret: Option<SecretString>,
    #[serde(default)]
    pub admin_key: Option<SecretString>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolSetting {
    Legacy,
    V3,
}

/// One merchant; which keys apply depends on `protocol`.
#[derive(Debug, Clone, Deserialize)]
pub struct MerchantSettings {
    pub id: String,
    pub protocol: ProtocolSetting,
    pub base_url: String,
    pub appid: String,
    // legacy
    #[serde(default)]
    pub app_secret: Option<SecretString>,
    #[serde(default)]
    pub app_key: Option<SecretString>,
    #[serde(default)]
    pub partner: Option<String>,
    #[serde(default)]
    pub partner_key: Option<SecretString>,
    #[serde(default = "default_quota")]
    pub token_daily_quota: u32,
    // v3
    #[serde(default)]
    pub mchid: Option<String>,
    #[serde(default)]
    pub serial_no: Option<String>,
    #[serde(default)]
    pub private_key_file: Option<String>,
    /// The merchant private key itself (PEM), e.g. from `WXPAY_MERCHANTS`; instead of the file.
    #[serde(default)]
    pub private_key_pem: Option<SecretString>,
    #[serde(default)]
    pub apiv3_key: Option<SecretString>,
    #[serde(default)]
    pub wechatpay_public_key_file: Option<String>,
    #[serde(default)]
    pub wechatpay_public_key_id: Option<String>,
    /// The WeChat Pay public key itself (PEM), instead of the file.
    #[serde(default)]
    pub wechatpay_public_key_pem: Option<String>,
    /// With a public key configured: also accept platform certificates (the migration window).
    #[serde(default)]
    pub combined_verification: bool,
    /// Return the coupon of a fully refunded order to its owner (unless it has expired).
    #[serde(default = "default_true")]
    pub return_coupon_on_full_refund: bool,
}

fn default_true() -> bool {
    true
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_database_url() -> String {
    "sqlite://wxpay.db".into()
}
fn default_cache_url() -> String {
    "memory".into()
}
fn default_order_ttl() -> i64 {
    1800
}
fn default_quota() -> u32 {
    200
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(String),
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Settings {
    /// Reads the optional file, then the environment on top of it.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut fig = Figment::new();
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Load(format!(
                    "{} does not exist",
                    path.display()
                )));
            }
            fig = fig.merge(Toml::file(path));
        }
        fig = fig.merge(
            Env::prefixed("WXPAY_")
                .split("__")
                .ignore(&["test_database_url", "test_redis_url"]),
        );
        let s: Settings = fig
            .extract()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        s.check()?;
        Ok(s)
    }

    /// Defaults only (no file, no environment).
    pub fn defaults() -> Settings {
        Figment::new()
            .extract()
            .unwrap_or_else(|_| unreachable_defaults())
    }

    /// Cross-field rules.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.sweep_schedule_secs.is_empty() || self.sweep_schedule_secs.iter().any(|s| *s <= 0) {
            return Err(ConfigError::Invalid(
                "sweep_schedule_secs must be positive seconds".into(),
            ));
        }
        self.check_webhooks()?;
        if self.order_ttl_secs < 60 {
            return Err(ConfigError::Invalid(
                "order_ttl_secs must be at least 60".into(),
            ));
        }
        let mut ids = std::collections::HashSet::new();
        for m in &self.merchants {
            if !ids.insert(&m.id) {
                return Err(ConfigError::Invalid(format!(
                    "merchant id {} appears twice",
                    m.id
                )));
            }
            if m.id.is_empty()
                || !m
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(ConfigError::Invalid(format!(
                    "merchant id {:?} must be [A-Za-z0-9_-]+",
                    m.id
                )));
            }
            let need = |v: bool, key: &str| {
                if v {
                    Ok(())
                } else {
                    Err(ConfigError::Invalid(format!(
                        "merchant {}: `{key}` is required",
                        m.id
                    )))
                }
            };
            match m.protocol {
                ProtocolSetting::Legacy => {
                    need(m.app_secret.is_some(), "app_secret")?;
                    need(m.app_key.is_some(), "app_key")?;
                    need(m.partner.is_some(), "partner")?;
                    need(m.partner_key.is_some(), "partner_key")?;
                }
                ProtocolSetting::V3 => {
                    need(m.mchid.is_some(), "mchid")?;
                    need(m.serial_no.is_some(), "serial_no")?;
                    need(
                        m.private_key_file.is_some() || m.private_key_pem.is_some(),
                        "private_key_file",
                    )?;
                    need(m.apiv3_key.is_some(), "apiv3_key")?;
                    let has_pk = m.wechatpay_public_key_file.is_some()
                        || m.wechatpay_public_key_pem.is_some();
                    need(
                        has_pk == m.wechatpay_public_key_id.is_some(),
                        "wechatpay_public_key_file together with wechatpay_public_key_id",
                    )?;
                    if let Some(k) = &m.apiv3_key {
                        use secrecy::ExposeSecret;
                        if k.expose_secret().len() != 32 {
                            return Err(ConfigError::Invalid(format!(
                                "merchant {}: apiv3_key must be exactly 32 bytes",
                                m.id
                            )));
                        }
                    }
                }
            }
            if self.production && !m.base_url.starts_with("https://") {
                return Err(ConfigError::Invalid(format!(
                    "merchant {}: --production needs an https:// base_url (sandbox gateways are refused)",
                    m.id
                )));
            }
        }
        if self.production {
            match &self.public_url {
                Some(u) if u.starts_with("https://") => {}
                _ => {
                    return Err(ConfigError::Invalid(
                        "--production needs an https:// public_url".into(),
                    ));
                }
            }
            if self.merchants.is_empty() {
                return Err(ConfigError::Invalid(
                    "--production needs at least one merchant".into(),
                ));
            }
        }
        Ok(())
    }
}

impl Settings {
    fn check_webhooks(&self) -> Result<(), ConfigError> {
        use secrecy::ExposeSecret;
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.webhook_retry_secs.is_empty() || self.webhook_retry_secs.iter().any(|s| *s <= 0) {
            return bad("webhook_retry_secs must be positive seconds".into());
        }
        if self.webhook_timeout_ms == 0 {
            return bad("webhook_timeout_ms must be positive".into());
        }
        let mut urls = std::collections::HashSet::new();
        for (i, w) in self.webhooks.iter().enumerate() {
            if !(w.url.starts_with("https://") || w.url.starts_with("http://")) {
                return bad(format!("webhooks[{i}]: url must be http:// or https://"));
            }
            if !urls.insert(&w.url) {
                return bad(format!("webhooks[{i}]: the same url appears twice"));
            }
            if w.secret.expose_secret().is_empty() {
                return bad(format!("webhooks[{i}]: secret must not be empty"));
            }
            if let Some(e) = w
                .events
                .iter()
                .find(|e| !wxpay_store::WEBHOOK_EVENT_TYPES.contains(&e.as_str()))
            {
                return bad(format!(
                    "webhooks[{i}]: unknown event {e:?} (known: {})",
                    wxpay_store::WEBHOOK_EVENT_TYPES.join(", ")
                ));
            }
        }
        Ok(())
    }
}

fn unreachable_defaults() -> Settings {
    Settings {
        listen: default_listen(),
        public_url: None,
        database_url: default_database_url(),
        cache_url: default_cache_url(),
        order_ttl_secs: default_order_ttl(),
        auth: AuthSettings::default(),
        merchants: Vec::new(),
        production: false,
        sweep_schedule_secs: default_sweep_schedule(),
        late_success_refund: false,
        workers: true,
        webhooks: Vec::new(),
        webhook_retry_secs: default_webhook_retry(),
        webhook_timeout_ms: default_webhook_timeout_ms(),
    }
}
