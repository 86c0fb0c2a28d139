//! Talking to WeChat Pay. One trait, `Gateway`, with one implementation per protocol generation
//! (`legacy::LegacyGateway` for the 2014 open-platform APP payment, `v3::V3Gateway` for APIv3),
//! the legacy access-token cache (`token`), a clock, and one HTTP client.
//!
//! Rules every implementation keeps (after wxpay-rs and wechatpay-go):
//! - verify the raw bytes received; an unsigned or badly signed 2xx is an error, never success;
//! - error bodies are hints, never proof of a payment state;
//! - retry only what is idempotent by construction, with the same identifiers and body.

pub mod clock;
pub mod http;
pub mod legacy;
pub mod telemetry;
pub mod token;
pub mod v3;

pub use clock::{Clock, ManualClock, SystemClock};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use wxpay_proto::Fen;

/// Which protocol generation a merchant speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Legacy,
    V3,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Legacy => "legacy",
            Protocol::V3 => "v3",
        }
    }
}

/// Everything needed to ask WeChat for a prepay id. Stored with the attempt, so a retry after a
/// timeout sends exactly the same request under the same `out_trade_no`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepayRequest {
    pub out_trade_no: String,
    /// Shown to the user (legacy `body`, v3 `description`).
    pub description: String,
    pub amount: Fen,
    /// The paying user's IP address.
    pub client_ip: String,
    pub notify_url: String,
    pub attach: Option<String>,
    /// Unix seconds.
    pub time_start: i64,
    /// Unix seconds; after it WeChat no longer accepts payment.
    pub time_expire: Option<i64>,
    /// Merchant-side trace id (legacy `traceid`: the user id).
    pub trace_id: String,
}

/// A prepay id and when it stops being usable (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepay {
    pub prepay_id: String,
    pub expires_at: i64,
}

/// What the app hands the WeChat OpenSDK (`PayReq`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppParams {
    pub appid: String,
    pub partnerid: String,
    pub prepayid: String,
    pub package: String,
    pub noncestr: String,
    pub timestamp: String,
    pub sign: String,
}

/// The state of a payment at WeChat, from a verified query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TradeStatus {
    Paid {
        transaction_id: String,
        amount: Fen,
    },
    NotPaid,
    Closed,
    /// Paid, and a refund has been started since.
    Refunded {
        transaction_id: String,
        amount: Fen,
    },
    /// Anything else WeChat said (kept verbatim for the operator).
    Other(String),
    /// WeChat does not know this out_trade_no.
    NotFound,
}

/// A notification as it arrived at `/notify/{merchant}`: raw bytes, nothing parsed yet.
#[derive(Debug, Clone, Copy)]
pub struct InboundNotify<'a> {
    pub query: Option<&'a str>,
    /// Header names in lower case.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

impl InboundNotify<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A verified payment result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentNotification {
    pub out_trade_no: String,
    pub transaction_id: String,
    /// The order total WeChat collected (legacy `total_fee` + `discount`; v3 `amount.total`).
    pub amount: Fen,
    /// True only for a successful payment.
    pub success: bool,
}

/// A verified refund result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundNotification {
    pub out_trade_no: String,
    pub out_refund_no: String,
    pub refund_id: String,
    /// SUCCESS, CLOSED, ABNORMAL, PROCESSING.
    pub status: String,
    pub refund: Fen,
}

/// What a verified notification says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    Payment(PaymentNotification),
    Refund(RefundNotification),
}

/// The HTTP answer to WeChat's notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyReply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

/// A refund to ask for (v3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequest {
    pub out_trade_no: String,
    pub out_refund_no: String,
    pub refund: Fen,
    pub total: Fen,
    pub reason: Option<String>,
    pub notify_url: Option<String>,
}

/// A refund as WeChat reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundStatus {
    pub out_refund_no: String,
    pub refund_id: Option<String>,
    /// SUCCESS, PROCESSING, CLOSED, ABNORMAL.
    pub status: String,
    pub refund: Fen,
}

/// Why a call to WeChat did not give a usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// No answer, a timeout or a 5xx: the outcome is unknown. Retry with the same identifiers
    /// and body, or query.
    #[error("WeChat unreachable or failing: {0}")]
    Transport(String),
    /// WeChat answered and refused (`code` as WeChat says it, e.g. `40001`, `ORDER_CLOSED`).
    #[error("WeChat refused ({code}): {message}")]
    Rejected { code: String, message: String },
    /// We refuse to fetch another access token today: the daily quota would be exceeded.
    #[error("access token quota: {0}")]
    TokenQuota(String),
    /// A signature did not verify (response or notification).
    #[error("verification failed: {0}")]
    Verification(String),
    /// An answer we cannot understand.
    #[error("unexpected answer from WeChat: {0}")]
    Protocol(String),
    /// The request is wrong before WeChat sees it (e.g. 4-byte UTF-8 in a description).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// This protocol generation has no such operation.
    #[error("not supported by this protocol: {0}")]
    Unsupported(&'static str),
}

impl GatewayError {
    /// True when the same request may simply be sent again.
    pub fn is_transient(&self) -> bool {
        matches!(self, GatewayError::Transport(_))
    }
}

/// One merchant at WeChat Pay.
#[async_trait]
pub trait Gateway: Send + Sync {
    fn merchant_id(&self) -> &str;
    fn protocol(&self) -> Protocol;
    /// Asks WeChat for a prepay id. Repeating it with the same request is safe.
    async fn prepay(&self, req: &PrepayRequest) -> Result<Prepay, GatewayError>;
    /// Signs the parameters the app hands the WeChat SDK (fresh nonce and timestamp).
    fn app_params(&self, prepay_id: &str) -> AppParams;
    /// Asks WeChat for the state of a payment; the answer is verified.
    async fn query(&self, out_trade_no: &str) -> Result<TradeStatus, GatewayError>;
    /// Closes an unpaid payment at WeChat.
    async fn close(&self, out_trade_no: &str) -> Result<(), GatewayError>;
    /// Verifies a notification's raw bytes and says what it means.
    fn verify_notify(&self, n: &InboundNotify<'_>) -> Result<Notification, GatewayError>;
    /// Like `verify_notify`, but allowed to refresh keys first (platform certificates: one
    /// rate-limited download when the serial is unknown). Servers call this one.
    async fn verify_notify_async(
        &self,
        n: &InboundNotify<'_>,
    ) -> Result<Notification, GatewayError> {
        self.verify_notify(n)
    }
    /// The reply WeChat expects after a notification was (or was not) taken.
    fn notify_reply(&self, accepted: bool) -> NotifyReply;
    /// Asks for a refund; repeating it with the same `out_refund_no` is safe.
    async fn refund(&self, _req: &RefundRequest) -> Result<RefundStatus, GatewayError> {
        Err(GatewayError::Unsupported("refund"))
    }
    /// Asks WeChat for the state of a refund.
    async fn query_refund(&self, _out_refund_no: &str) -> Result<RefundStatus, GatewayError> {
        Err(GatewayError::Unsupported("refund query"))
    }
    /// Downloads the `ALL` trade bill of a Beijing day (`YYYY-MM-DD`) as CSV text, checked
    /// against WeChat's hash. `Ok(None)`: WeChat has no bill for that day (NO_STATEMENT_EXIST).
    async fn download_trade_bill(&self, _bill_date: &str) -> Result<Option<String>, GatewayError> {
        Err(GatewayError::Unsupported("trade bill download"))
    }
}

/// A random string of `[A-Z0-9]`, as the SDKs make nonces.
pub fn nonce(len: usize) -> String {
    use rand::RngExt;
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}
