//! APIv3 JSON bodies (PROTOCOL.md B.5–B.12). Every `Option` is omitted when `None` (WeChat Pay
//! rejects `null`); unknown incoming fields are ignored (WeChat adds fields over time). Amounts
//! are integer fen. Times are RFC 3339 strings; see [`format_rfc3339_beijing`] and
//! [`parse_rfc3339`].

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ProtoError;
use crate::v3::aead::{self, ApiV3Key};
use crate::v3::rsa::{Certificate, normalize_serial};

/// The only AEAD algorithm WeChat Pay uses for resources.
pub const AEAD_AES_256_GCM: &str = "AEAD_AES_256_GCM";

/// `event_type` values of notifications.
pub mod event_type {
    pub const TRANSACTION_SUCCESS: &str = "TRANSACTION.SUCCESS";
    pub const REFUND_SUCCESS: &str = "REFUND.SUCCESS";
    pub const REFUND_ABNORMAL: &str = "REFUND.ABNORMAL";
    pub const REFUND_CLOSED: &str = "REFUND.CLOSED";
}

/// `trade_state` values (B.7).
pub mod trade_state {
    pub const SUCCESS: &str = "SUCCESS";
    pub const REFUND: &str = "REFUND";
    pub const NOTPAY: &str = "NOTPAY";
    pub const CLOSED: &str = "CLOSED";
    pub const REVOKED: &str = "REVOKED";
    pub const USERPAYING: &str = "USERPAYING";
    pub const PAYERROR: &str = "PAYERROR";
}

/// Refund `status` values (B.10).
pub mod refund_status {
    pub const SUCCESS: &str = "SUCCESS";
    pub const PROCESSING: &str = "PROCESSING";
    pub const CLOSED: &str = "CLOSED";
    pub const ABNORMAL: &str = "ABNORMAL";
}

// ---------------------------------------------------------------------------------------------
// B.5 APP order

/// `POST /v3/pay/transactions/app` body.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AppPrepayRequest {
    pub appid: String,
    pub mchid: String,
    pub description: String,
    pub out_trade_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_expire: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<String>,
    pub notify_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goods_tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub support_fapiao: Option<bool>,
    pub amount: OrderAmount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scene_info: Option<SceneInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_info: Option<Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderAmount {
    /// fen, > 0
    pub total: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SceneInfo {
    pub payer_client_ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
}

/// `{"prepay_id":"wx…"}`
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepayResponse {
    pub prepay_id: String,
}

/// The APP client pay parameters (B.6) the backend hands to the app (field names as in
/// wechatpay-go's APP `PrepayWithRequestPayment`). Build with
/// [`crate::v3::auth::MerchantSigner::app_pay_params`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppPayParams {
    pub appid: String,
    /// the mchid
    pub partnerid: String,
    /// the bare prepay id
    pub prepayid: String,
    /// always `Sign=WXPay`
    pub package: String,
    pub noncestr: String,
    /// unix seconds (10 digits)
    pub timestamp: String,
    pub sign: String,
}

fn check_len(field: &str, v: &str, min: usize, max: usize) -> Result<(), ProtoError> {
    let n = v.len();
    if n < min || n > max {
        let want = if min == max {
            format!("{min}")
        } else if min == 0 {
            format!("at most {max}")
        } else {
            format!("{min}..={max}")
        };
        return Err(ProtoError::field(
            field,
            format!("length {n} bytes, must be {want}"),
        ));
    }
    check_bmp(field, v)
}

/// WeChat Pay accepts only 1–3-byte UTF-8 characters (the BMP).
fn check_bmp(field: &str, v: &str) -> Result<(), ProtoError> {
    if let Some(c) = v.chars().find(|c| c.len_utf8() == 4) {
        return Err(ProtoError::field(
            field,
            format!(
                "contains the 4-byte UTF-8 character U+{:04X} (e.g. an emoji); only BMP characters are accepted",
                c as u32
            ),
        ));
    }
    Ok(())
}

fn check_bmp_value(field: &str, v: &Value) -> Result<(), ProtoError> {
    match v {
        Value::String(s) => check_bmp(field, s),
        Value::Array(a) => a.iter().try_for_each(|x| check_bmp_value(field, x)),
        Value::Object(o) => o.iter().try_for_each(|(k, x)| {
            check_bmp(field, k)?;
            check_bmp_value(field, x)
        }),
        _ => Ok(()),
    }
}

fn check_opt(field: &str, v: Option<&str>, max: usize) -> Result<(), ProtoError> {
    match v {
        Some(s) => check_len(field, s, 1, max),
        None => Ok(()),
    }
}

/// `out_trade_no`: 6–32 characters of `[0-9A-Za-z_\-|*]`.
pub fn validate_out_trade_no(v: &str) -> Result<(), ProtoError> {
    if !(6..=32).contains(&v.len()) {
        return Err(ProtoError::field(
            "out_trade_no",
            format!("length {}, must be 6..=32", v.len()),
        ));
    }
    if let Some(c) = v
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '|' | '*')))
    {
        return Err(ProtoError::field(
            "out_trade_no",
            format!("character {c:?} not in [0-9A-Za-z_-|*]"),
        ));
    }
    Ok(())
}

/// `out_refund_no`: 1–64 characters of `[0-9A-Za-z_\-|*@]`.
pub fn validate_out_refund_no(v: &str) -> Result<(), ProtoError> {
    if !(1..=64).contains(&v.len()) {
        return Err(ProtoError::field(
            "out_refund_no",
            format!("length {}, must be 1..=64", v.len()),
        ));
    }
    if let Some(c) = v
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '|' | '*' | '@')))
    {
        return Err(ProtoError::field(
            "out_refund_no",
            format!("character {c:?} not in [0-9A-Za-z_-|*@]"),
        ));
    }
    Ok(())
}

/// A notify URL: absolute `https://host/…` (or `http://` when `allow_http`), at most `max` bytes,
/// no query string or fragment, no whitespace.
pub fn validate_notify_url(
    field: &str,
    url: &str,
    max: usize,
    allow_http: bool,
) -> Result<(), ProtoError> {
    check_len(field, url, 1, max)?;
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        &url[8..]
    } else if allow_http && lower.starts_with("http://") {
        &url[7..]
    } else if allow_http {
        return Err(ProtoError::field(
            field,
            "must be an absolute http(s):// URL",
        ));
    } else {
        return Err(ProtoError::field(field, "must be an absolute https:// URL"));
    };
    if url.contains('?') {
        return Err(ProtoError::field(field, "must not carry a query string"));
    }
    if url.contains('#') {
        return Err(ProtoError::field(field, "must not carry a fragment"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ProtoError::field(field, "must not contain whitespace"));
    }
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.contains('@') {
        return Err(ProtoError::field(
            field,
            "must name a host (without user info)",
        ));
    }
    Ok(())
}

impl AppPrepayRequest {
    /// Validates against B.5 with an `https://` notify URL required.
    pub fn validate(&self) -> Result<(), ProtoError> {
        self.validate_with(false)
    }

    /// Validates against B.5; `allow_http` also accepts an `http://` notify URL (the sandbox runs
    /// on plain http). Lengths are in UTF-8 bytes; 4-byte UTF-8 characters are rejected in every
    /// text field; the error names the field.
    pub fn validate_with(&self, allow_http: bool) -> Result<(), ProtoError> {
        check_len("appid", &self.appid, 1, 32)?;
        check_len("mchid", &self.mchid, 1, 32)?;
        check_len("description", &self.description, 1, 127)?;
        validate_out_trade_no(&self.out_trade_no)?;
        if let Some(t) = &self.time_expire {
            check_len("time_expire", t, 1, 64)?;
            parse_rfc3339(t).map_err(|_| {
                ProtoError::field(
                    "time_expire",
                    "must be RFC 3339, e.g. 2018-06-08T10:34:56+08:00",
                )
            })?;
        }
        check_opt("attach", self.attach.as_deref(), 128)?;
        validate_notify_url("notify_url", &self.notify_url, 255, allow_http)?;
        check_opt("goods_tag", self.goods_tag.as_deref(), 32)?;
        if self.amount.total <= 0 {
            return Err(ProtoError::field(
                "amount.total",
                format!("must be > 0 fen, got {}", self.amount.total),
            ));
        }
        check_opt("amount.currency", self.amount.currency.as_deref(), 16)?;
        if let Some(d) = &self.detail {
            check_bmp_value("detail", d)?;
            let compact =
                serde_json::to_string(d).map_err(|e| ProtoError::field("detail", e.to_string()))?;
            if compact.len() > 6144 {
                return Err(ProtoError::field(
                    "detail",
                    format!("{} bytes compacted, at most 6144", compact.len()),
                ));
            }
        }
        if let Some(s) = &self.scene_info {
            check_len("scene_info.payer_client_ip", &s.payer_client_ip, 1, 45)?;
            if s.payer_client_ip.parse::<std::net::IpAddr>().is_err() {
                return Err(ProtoError::field(
                    "scene_info.payer_client_ip",
                    "must be an IPv4 or IPv6 address",
                ));
            }
            check_opt("scene_info.device_id", s.device_id.as_deref(), 32)?;
        }
        if let Some(s) = &self.settle_info {
            check_bmp_value("settle_info", s)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// B.7 Transaction (query result and decrypted TRANSACTION.SUCCESS resource)

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Transaction {
    pub appid: String,
    pub mchid: String,
    pub out_trade_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_type: Option<String>,
    pub trade_state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_state_desc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<Payer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<TransactionAmount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scene_info: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion_detail: Option<Vec<Value>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payer {
    pub openid: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionAmount {
    /// order total in fen — compare this (not `payer_total`) with your order
    pub total: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_total: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_currency: Option<String>,
}

impl Transaction {
    pub fn is_success(&self) -> bool {
        self.trade_state == trade_state::SUCCESS
    }
}

/// `POST /v3/pay/transactions/out-trade-no/{no}/close` body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseRequest {
    pub mchid: String,
}

// ---------------------------------------------------------------------------------------------
// B.10 Refunds

/// `POST /v3/refund/domestic/refunds` body.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RefundRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_trade_no: Option<String>,
    pub out_refund_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funds_account: Option<String>,
    pub amount: RefundAmountRequest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goods_detail: Option<Vec<Value>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RefundAmountRequest {
    pub refund: i64,
    pub total: i64,
    pub currency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<Value>>,
}

impl RefundRequest {
    /// Validates against B.10 (`https://` notify URL when given).
    pub fn validate(&self) -> Result<(), ProtoError> {
        self.validate_with(false)
    }

    /// Validates against B.10: exactly one of `transaction_id` / `out_trade_no`, `out_refund_no`
    /// charset, `0 < refund <= total`, reason ≤ 80 bytes, notify URL ≤ 256, BMP-only text.
    pub fn validate_with(&self, allow_http: bool) -> Result<(), ProtoError> {
        match (&self.transaction_id, &self.out_trade_no) {
            (Some(t), None) => check_len("transaction_id", t, 1, 32)?,
            (None, Some(o)) => validate_out_trade_no(o)?,
            _ => {
                return Err(ProtoError::field(
                    "transaction_id",
                    "exactly one of transaction_id and out_trade_no must be given",
                ));
            }
        }
        validate_out_refund_no(&self.out_refund_no)?;
        check_opt("reason", self.reason.as_deref(), 80)?;
        if let Some(u) = &self.notify_url {
            validate_notify_url("notify_url", u, 256, allow_http)?;
        }
        check_opt("funds_account", self.funds_account.as_deref(), 32)?;
        if self.amount.total <= 0 {
            return Err(ProtoError::field("amount.total", "must be > 0 fen"));
        }
        if self.amount.refund <= 0 || self.amount.refund > self.amount.total {
            return Err(ProtoError::field(
                "amount.refund",
                "must be > 0 and at most amount.total",
            ));
        }
        check_len("amount.currency", &self.amount.currency, 1, 16)?;
        if let Some(g) = &self.goods_detail {
            g.iter()
                .try_for_each(|v| check_bmp_value("goods_detail", v))?;
        }
        Ok(())
    }
}

/// The refund object returned by create and query.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Refund {
    pub refund_id: String,
    pub out_refund_no: String,
    pub transaction_id: String,
    pub out_trade_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_received_account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funds_account: Option<String>,
    pub amount: RefundAmount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion_detail: Option<Vec<Value>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RefundAmount {
    pub total: i64,
    pub refund: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_total: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_refund: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_refund: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_total: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discount_refund: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<Value>>,
}

/// Decrypted resource of a `REFUND.*` notification.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundNotification {
    pub mchid: String,
    pub out_trade_no: String,
    pub transaction_id: String,
    pub out_refund_no: String,
    pub refund_id: String,
    pub refund_status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_received_account: Option<String>,
    pub amount: RefundNotificationAmount,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundNotificationAmount {
    pub total: i64,
    pub refund: i64,
    pub payer_total: i64,
    pub payer_refund: i64,
}

// ---------------------------------------------------------------------------------------------
// B.9 Notifications and encrypted resources

/// The notification envelope POSTed to `notify_url`. Verify the signature headers over the raw
/// body first ([`crate::v3::verify::validate`]), then parse and decrypt.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub id: String,
    pub create_time: String,
    pub resource_type: String,
    pub event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    pub resource: EncryptedResource,
}

impl Notification {
    /// Parses the (already verified) raw body.
    pub fn from_slice(body: &[u8]) -> Result<Self, ProtoError> {
        serde_json::from_slice(body)
            .map_err(|e| ProtoError::malformed("notification JSON", e.to_string()))
    }

    /// Decrypts a `TRANSACTION.*` resource into a [`Transaction`].
    pub fn decrypt_transaction(&self, key: &ApiV3Key) -> Result<Transaction, ProtoError> {
        self.resource.decrypt_json(key)
    }

    /// Decrypts a `REFUND.*` resource into a [`RefundNotification`].
    pub fn decrypt_refund(&self, key: &ApiV3Key) -> Result<RefundNotification, ProtoError> {
        self.resource.decrypt_json(key)
    }
}

/// An AEAD_AES_256_GCM-encrypted payload (`resource` of notifications, `encrypt_certificate`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedResource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_type: Option<String>,
    pub algorithm: String,
    pub ciphertext: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub associated_data: Option<String>,
    pub nonce: String,
}

impl EncryptedResource {
    /// Decrypts with the APIv3 key (absent `associated_data` = empty AAD). Fails for any
    /// algorithm other than `AEAD_AES_256_GCM`.
    pub fn decrypt(&self, key: &ApiV3Key) -> Result<Vec<u8>, ProtoError> {
        if self.algorithm != AEAD_AES_256_GCM {
            return Err(ProtoError::field(
                "resource.algorithm",
                format!(
                    "unsupported algorithm {:?}, expected {AEAD_AES_256_GCM}",
                    self.algorithm
                ),
            ));
        }
        aead::decrypt(
            key,
            &self.nonce,
            self.associated_data.as_deref().unwrap_or(""),
            &self.ciphertext,
        )
    }

    /// Decrypts and parses the plaintext as JSON.
    pub fn decrypt_json<T: DeserializeOwned>(&self, key: &ApiV3Key) -> Result<T, ProtoError> {
        let plain = self.decrypt(key)?;
        serde_json::from_slice(&plain)
            .map_err(|e| ProtoError::malformed("decrypted resource JSON", e.to_string()))
    }

    /// Encrypts `plaintext` as WeChat Pay does (sandbox side). `nonce` must be 12 bytes; an empty
    /// `associated_data` is still sent as `""`.
    pub fn encrypt(
        key: &ApiV3Key,
        nonce: &str,
        associated_data: &str,
        original_type: Option<&str>,
        plaintext: &[u8],
    ) -> Result<Self, ProtoError> {
        Ok(EncryptedResource {
            original_type: original_type.map(str::to_string),
            algorithm: AEAD_AES_256_GCM.to_string(),
            ciphertext: aead::encrypt(key, nonce, associated_data, plaintext)?,
            associated_data: Some(associated_data.to_string()),
            nonce: nonce.to_string(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// B.3.1 Platform certificates

/// `GET /v3/certificates` response.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificatesResponse {
    pub data: Vec<CertificateEntry>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateEntry {
    pub serial_no: String,
    pub effective_time: String,
    pub expire_time: String,
    pub encrypt_certificate: EncryptedResource,
}

impl CertificateEntry {
    /// Decrypts the PEM certificate and parses it; its serial must equal `serial_no`.
    pub fn decrypt_certificate(&self, key: &ApiV3Key) -> Result<Certificate, ProtoError> {
        let pem = self.encrypt_certificate.decrypt(key)?;
        let pem = std::str::from_utf8(&pem)
            .map_err(|_| ProtoError::malformed("certificate PEM", "not UTF-8"))?;
        let cert = Certificate::from_pem(pem)?;
        if normalize_serial(&cert.serial_no) != normalize_serial(&self.serial_no) {
            return Err(ProtoError::field(
                "serial_no",
                format!(
                    "entry says {} but the certificate's serial is {}",
                    self.serial_no, cert.serial_no
                ),
            ));
        }
        Ok(cert)
    }
}

// ---------------------------------------------------------------------------------------------
// B.11 / B.12

/// `GET /v3/bill/tradebill` / `fundflowbill` response.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillResponse {
    pub hash_type: String,
    pub hash_value: String,
    pub download_url: String,
}

/// Error body of non-2xx responses (unsigned on the wire: a hint, never proof of state).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<ErrorDetail>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issue: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

impl ErrorResponse {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorResponse {
            code: code.into(),
            message: message.into(),
            detail: None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Times

const BEIJING_OFFSET_SECS: i32 = 8 * 3600;
/// 0000-01-01T00:00:00+08:00 and 9999-12-31T23:59:59+08:00: RFC 3339 has 4-digit years.
const MIN_UNIX: i64 = -62_167_219_200 - BEIJING_OFFSET_SECS as i64;
const MAX_UNIX: i64 = 253_402_300_799 - BEIJING_OFFSET_SECS as i64;

/// `unix` seconds as RFC 3339 in Beijing time, e.g. `2018-06-08T10:34:56+08:00`. Values outside
/// years 0000–9999 are clamped.
pub fn format_rfc3339_beijing(unix: i64) -> String {
    let unix = unix.clamp(MIN_UNIX, MAX_UNIX);
    let offset =
        chrono::FixedOffset::east_opt(BEIJING_OFFSET_SECS).expect("+08:00 is a valid offset");
    let utc = chrono::DateTime::from_timestamp(unix, 0).expect("clamped timestamp is in range");
    utc.with_timezone(&offset)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// Parses an RFC 3339 time with any offset (`Z` too) into unix seconds (fractions dropped).
pub fn parse_rfc3339(s: &str) -> Result<i64, ProtoError> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|d| d.timestamp())
        .map_err(|e| ProtoError::malformed("RFC 3339 time", format!("{s:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order() -> AppPrepayRequest {
        AppPrepayRequest {
            appid: "wxd678efh567hg6787".into(),
            mchid: "1230000109".into(),
            description: "Image形象店-深圳腾大-QQ公仔".into(),
            out_trade_no: "1217752501201407033233368018".into(),
            time_expire: Some("2018-06-08T10:34:56+08:00".into()),
            attach: Some("自定义数据".into()),
            notify_url: "https://www.weixin.qq.com/wxpay/pay.php".into(),
            goods_tag: Some("WXG".into()),
            support_fapiao: None,
            amount: OrderAmount {
                total: 100,
                currency: Some("CNY".into()),
            },
            detail: None,
            scene_info: Some(SceneInfo {
                payer_client_ip: "14.23.150.211".into(),
                device_id: Some("013467007045764".into()),
            }),
            settle_info: None,
        }
    }

    #[test]
    fn prepay_request_matches_doc_example_and_omits_none() {
        let o = order();
        o.validate().unwrap();
        let s = serde_json::to_string(&o).unwrap();
        assert_eq!(
            s,
            r#"{"appid":"wxd678efh567hg6787","mchid":"1230000109","description":"Image形象店-深圳腾大-QQ公仔","out_trade_no":"1217752501201407033233368018","time_expire":"2018-06-08T10:34:56+08:00","attach":"自定义数据","notify_url":"https://www.weixin.qq.com/wxpay/pay.php","goods_tag":"WXG","amount":{"total":100,"currency":"CNY"},"scene_info":{"payer_client_ip":"14.23.150.211","device_id":"013467007045764"}}"#
        );
        assert!(!s.contains("null"));
        let back: AppPrepayRequest = serde_json::from_str(&s).unwrap();
        assert_eq!(back, o);

        let minimal = AppPrepayRequest {
            time_expire: None,
            attach: None,
            goods_tag: None,
            scene_info: None,
            amount: OrderAmount {
                total: 1,
                currency: None,
            },
            ..o
        };
        let v: Value = serde_json::to_value(&minimal).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 6, "{keys:?}");
        for absent in [
            "time_expire",
            "attach",
            "goods_tag",
            "support_fapiao",
            "detail",
            "scene_info",
            "settle_info",
        ] {
            assert!(v.get(absent).is_none(), "{absent}");
        }
        assert_eq!(v["amount"], json!({"total": 1}));
    }

    #[test]
    fn validate_rejections() {
        let field_of = |r: Result<(), ProtoError>| match r {
            Err(ProtoError::InvalidField { field, .. }) => field,
            other => panic!("expected InvalidField, got {other:?}"),
        };
        let mut o = order();
        o.description = "好物😀".into();
        assert_eq!(field_of(o.validate()), "description");
        let mut o = order();
        o.description = "x".repeat(128);
        assert_eq!(field_of(o.validate()), "description");
        o.description = "商".repeat(42); // 126 bytes
        assert!(o.validate().is_ok());
        o.description = "商".repeat(43); // 129 bytes
        assert_eq!(field_of(o.validate()), "description");
        let mut o = order();
        o.description = String::new();
        assert_eq!(field_of(o.validate()), "description");
        let mut o = order();
        o.attach = Some("🎉".into());
        assert_eq!(field_of(o.validate()), "attach");

        for bad in [
            "12345",
            "abc def123",
            "订单号123456",
            "abc/12345",
            "a".repeat(33).as_str(),
            "abc.12345",
        ] {
            let mut o = order();
            o.out_trade_no = bad.into();
            assert_eq!(field_of(o.validate()), "out_trade_no", "{bad}");
        }
        for good in ["123456", "A_b-c|d*e", &"9".repeat(32)] {
            let mut o = order();
            o.out_trade_no = good.into();
            assert!(o.validate().is_ok(), "{good}");
        }

        let mut o = order();
        o.amount.total = 0;
        assert_eq!(field_of(o.validate()), "amount.total");
        o.amount.total = -5;
        assert_eq!(field_of(o.validate()), "amount.total");

        let mut o = order();
        o.notify_url = "http://127.0.0.1:8080/notify".into();
        assert_eq!(field_of(o.validate()), "notify_url");
        assert!(o.validate_with(true).is_ok());
        for bad in [
            "https://example.com/notify?x=1",
            "https://example.com/n#frag",
            "/notify",
            "example.com/notify",
            "ftp://example.com/n",
            "https:///notify",
            "https://user@example.com/n",
            "https://example.com/a b",
        ] {
            let mut o = order();
            o.notify_url = bad.into();
            assert_eq!(field_of(o.validate_with(true)), "notify_url", "{bad}");
        }
        let mut o = order();
        o.notify_url = format!("https://example.com/{}", "a".repeat(240));
        assert_eq!(field_of(o.validate()), "notify_url");

        let mut o = order();
        o.time_expire = Some("2018-06-08 10:34:56".into());
        assert_eq!(field_of(o.validate()), "time_expire");
        let mut o = order();
        o.scene_info.as_mut().unwrap().payer_client_ip = "not-an-ip".into();
        assert_eq!(field_of(o.validate()), "scene_info.payer_client_ip");
        let mut o = order();
        o.scene_info.as_mut().unwrap().payer_client_ip = "2001:db8::1".into();
        assert!(o.validate().is_ok());
        let mut o = order();
        o.appid = "x".repeat(33);
        assert_eq!(field_of(o.validate()), "appid");
        let mut o = order();
        o.detail = Some(
            json!({"goods_detail":[{"goods_name":"🍎","merchant_goods_id":"1","quantity":1,"unit_price":1}]}),
        );
        assert_eq!(field_of(o.validate()), "detail");
        o.detail = Some(json!({"invoice_id": "x".repeat(7000)}));
        assert_eq!(field_of(o.validate()), "detail");
    }

    #[test]
    fn transaction_round_trip_and_absent_fields() {
        let body = r#"{"appid":"wxd678efh567hg6787","mchid":"1230000109","out_trade_no":"1217752501201407033233368018","transaction_id":"1217752501201407033233368018","trade_type":"APP","trade_state":"SUCCESS","trade_state_desc":"支付成功","bank_type":"CMC","attach":"自定义数据","success_time":"2018-06-08T10:34:56+08:00","payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},"amount":{"total":100,"payer_total":100,"currency":"CNY","payer_currency":"CNY"},"scene_info":{"device_id":"013467007045764"},"promotion_detail":[{"coupon_id":"109519","amount":100}],"new_field_from_wechat":1}"#;
        let t: Transaction = serde_json::from_str(body).unwrap();
        assert!(t.is_success());
        assert_eq!(t.amount.as_ref().unwrap().total, 100);
        let again: Transaction = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(again, t);

        let unpaid: Transaction = serde_json::from_str(
            r#"{"appid":"a","mchid":"m","out_trade_no":"o","trade_state":"NOTPAY"}"#,
        )
        .unwrap();
        assert_eq!(unpaid.transaction_id, None);
        assert_eq!(
            serde_json::to_string(&unpaid).unwrap(),
            r#"{"appid":"a","mchid":"m","out_trade_no":"o","trade_state":"NOTPAY"}"#
        );
    }

    #[test]
    fn refund_types_round_trip() {
        let req = RefundRequest {
            transaction_id: None,
            out_trade_no: Some("1217752501201407033233368018".into()),
            out_refund_no: "R1217752501201407033233368018".into(),
            reason: Some("商品已售完".into()),
            notify_url: None,
            funds_account: None,
            amount: RefundAmountRequest {
                refund: 50,
                total: 100,
                currency: "CNY".into(),
                from: None,
            },
            goods_detail: None,
        };
        req.validate().unwrap();
        let s = serde_json::to_string(&req).unwrap();
        assert!(!s.contains("null") && !s.contains("transaction_id") && !s.contains("from"));
        assert_eq!(serde_json::from_str::<RefundRequest>(&s).unwrap(), req);

        let mut bad = req.clone();
        bad.transaction_id = Some("4200000000000000".into());
        assert!(bad.validate().is_err());
        let mut bad = req.clone();
        bad.amount.refund = 101;
        assert!(bad.validate().is_err());
        let mut bad = req.clone();
        bad.out_refund_no = "r#1".into();
        assert!(bad.validate().is_err());

        let refund = r#"{"refund_id":"50000000382019052709732678859","out_refund_no":"1217752501201407033233368018","transaction_id":"1217752501201407033233368018","out_trade_no":"1217752501201407033233368018","channel":"ORIGINAL","user_received_account":"招商银行信用卡0403","success_time":"2020-12-01T16:18:12+08:00","create_time":"2020-12-01T16:18:12+08:00","status":"SUCCESS","funds_account":"UNSETTLED","amount":{"total":100,"refund":100,"from":[{"account":"AVAILABLE","amount":444}],"payer_total":90,"payer_refund":90,"settlement_refund":100,"settlement_total":100,"discount_refund":10,"currency":"CNY"}}"#;
        let r: Refund = serde_json::from_str(refund).unwrap();
        assert_eq!(r.amount.payer_refund, Some(90));
        assert_eq!(
            serde_json::from_str::<Refund>(&serde_json::to_string(&r).unwrap()).unwrap(),
            r
        );

        let rn = r#"{"mchid":"1900000100","transaction_id":"1008450740201411110005820873","out_trade_no":"20150806125346","refund_id":"50200207182018070300011301001","out_refund_no":"7752501201407033233368018","refund_status":"SUCCESS","success_time":"2018-06-08T10:34:56+08:00","user_received_account":"招商银行信用卡0403","amount":{"total":999,"refund":999,"payer_total":999,"payer_refund":999}}"#;
        let n: RefundNotification = serde_json::from_str(rn).unwrap();
        assert_eq!(
            serde_json::from_str::<RefundNotification>(&serde_json::to_string(&n).unwrap())
                .unwrap(),
            n
        );
    }

    #[test]
    fn notification_decrypts_and_rejects_tampering() {
        let key = ApiV3Key::new("a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb").unwrap();
        let t = Transaction {
            appid: "wx1".into(),
            mchid: "1900000109".into(),
            out_trade_no: "order123".into(),
            transaction_id: Some("4200000001".into()),
            trade_state: "SUCCESS".into(),
            amount: Some(TransactionAmount {
                total: 1,
                payer_total: Some(1),
                currency: Some("CNY".into()),
                payer_currency: None,
            }),
            ..Default::default()
        };
        let res = EncryptedResource::encrypt(
            &key,
            "fdasflkja484",
            "transaction",
            Some("transaction"),
            &serde_json::to_vec(&t).unwrap(),
        )
        .unwrap();
        let n = Notification {
            id: "EV-2018022511223320873".into(),
            create_time: "2015-05-20T13:29:35+08:00".into(),
            resource_type: "encrypt-resource".into(),
            event_type: event_type::TRANSACTION_SUCCESS.into(),
            summary: Some("支付成功".into()),
            resource: res,
        };
        let body = serde_json::to_vec(&n).unwrap();
        let parsed = Notification::from_slice(&body).unwrap();
        assert_eq!(parsed, n);
        assert_eq!(parsed.decrypt_transaction(&key).unwrap(), t);

        let mut bad = parsed.clone();
        bad.resource.associated_data = Some("refund".into());
        assert!(bad.decrypt_transaction(&key).is_err());
        let mut bad = parsed.clone();
        bad.resource.algorithm = "AEAD_AES_128_GCM".into();
        assert!(matches!(
            bad.resource.decrypt(&key),
            Err(ProtoError::InvalidField { .. })
        ));
        let mut bad = parsed.clone();
        bad.resource.associated_data = None;
        assert!(bad.resource.decrypt(&key).is_err());
        assert!(Notification::from_slice(b"{}").is_err());
        assert!(Notification::from_slice(b"\xff").is_err());
    }

    #[test]
    fn other_bodies() {
        let e: ErrorResponse = serde_json::from_str(r#"{"code":"PARAM_ERROR","message":"参数错误","detail":{"field":"/amount/currency","value":"XYZ","issue":"Currency code is invalid","location":"body"}}"#).unwrap();
        assert_eq!(
            e.detail.as_ref().unwrap().field.as_deref(),
            Some("/amount/currency")
        );
        assert_eq!(
            serde_json::to_string(&ErrorResponse::new("SIGN_ERROR", "签名错误")).unwrap(),
            r#"{"code":"SIGN_ERROR","message":"签名错误"}"#
        );
        let b: BillResponse = serde_json::from_str(r#"{"hash_type":"SHA1","hash_value":"79bb0f45fc4c42234a918000b2668d689e2bde04","download_url":"https://api.mch.weixin.qq.com/v3/billdownload/file?token=x"}"#).unwrap();
        assert_eq!(b.hash_type, "SHA1");
        assert_eq!(
            serde_json::to_string(&CloseRequest {
                mchid: "1230000109".into()
            })
            .unwrap(),
            r#"{"mchid":"1230000109"}"#
        );
        let p: PrepayResponse =
            serde_json::from_str(r#"{"prepay_id":"wx26112221580621e9b071c00d9e093b0000"}"#)
                .unwrap();
        assert_eq!(p.prepay_id, "wx26112221580621e9b071c00d9e093b0000");
        let c: CertificatesResponse = serde_json::from_str(r#"{"data":[{"serial_no":"5157F09EFDC096DE15EBE81A47057A7232F1B8E1","effective_time":"2018-06-08T10:34:56+08:00","expire_time":"2023-06-08T10:34:56+08:00","encrypt_certificate":{"algorithm":"AEAD_AES_256_GCM","nonce":"61f9c719728a","associated_data":"certificate","ciphertext":"AAAA"}}]}"#).unwrap();
        assert_eq!(c.data[0].encrypt_certificate.original_type, None);
        assert!(!serde_json::to_string(&c).unwrap().contains("original_type"));
    }

    #[test]
    fn rfc3339_beijing() {
        assert_eq!(
            format_rfc3339_beijing(1528425296),
            "2018-06-08T10:34:56+08:00"
        );
        assert_eq!(
            parse_rfc3339("2018-06-08T10:34:56+08:00").unwrap(),
            1528425296
        );
        assert_eq!(parse_rfc3339("2018-06-08T02:34:56Z").unwrap(), 1528425296);
        assert_eq!(
            parse_rfc3339("2018-06-08T02:34:56.999Z").unwrap(),
            1528425296
        );
        assert_eq!(format_rfc3339_beijing(0), "1970-01-01T08:00:00+08:00");
        assert!(parse_rfc3339("2018-06-08 10:34:56").is_err());
        assert!(parse_rfc3339("").is_err());
        for t in [i64::MIN, i64::MAX, -1, 4_102_444_800] {
            let s = format_rfc3339_beijing(t);
            assert!(parse_rfc3339(&s).is_ok(), "{s}");
        }
    }
}
