//! Rows and states as the rest of the system sees them.

use serde::Serialize;
use std::fmt;
use std::str::FromStr;

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum $name { $(#[serde(rename = $text)] $variant),+ }
        impl $name {
            pub fn as_str(self) -> &'static str { match self { $($name::$variant => $text),+ } }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
        impl FromStr for $name {
            type Err = crate::StoreError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s { $($text => Ok($name::$variant),)+ other => Err(crate::StoreError::Invalid(
                    format!(concat!("unknown ", stringify!($name), " {:?}"), other))) }
            }
        }
    };
}

string_enum!(
    /// CREATED → PAYING → PAID → PARTIALLY_REFUNDED → REFUNDED; CREATED | PAYING → CLOSED.
    OrderState {
        Created => "CREATED",
        Paying => "PAYING",
        Paid => "PAID",
        PartiallyRefunded => "PARTIALLY_REFUNDED",
        Refunded => "REFUNDED",
        Closed => "CLOSED",
    }
);

string_enum!(
    /// PENDING → SUCCEEDED | CLOSED | FAILED.
    AttemptState {
        Pending => "PENDING",
        Succeeded => "SUCCEEDED",
        Closed => "CLOSED",
        Failed => "FAILED",
    }
);

string_enum!(
    /// AVAILABLE → RESERVED(order) → USED; RESERVED → AVAILABLE when the order closes.
    CouponState {
        Available => "AVAILABLE",
        Reserved => "RESERVED",
        Used => "USED",
        Expired => "EXPIRED",
    }
);

string_enum!(
    /// Which road a payment result took to us.
    PaidSource {
        Notify => "notify",
        Query => "query",
        Sweep => "sweep",
    }
);

/// An order: what the user buys and what they owe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Order {
    pub order_no: String,
    pub user_id: String,
    pub subject: String,
    pub items_json: Option<String>,
    pub amount_fen: i64,
    pub discount_fen: i64,
    pub payable_fen: i64,
    pub refunded_fen: i64,
    pub coupon_code: Option<String>,
    pub state: OrderState,
    pub merchant_id: Option<String>,
    pub paid_out_trade_no: Option<String>,
    pub paid_receipt_id: Option<i64>,
    pub paid_source: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub expires_at: i64,
    pub paid_at: Option<i64>,
    pub closed_at: Option<i64>,
    /// Failed tries to close the order at WeChat after its expiry.
    pub close_attempts: i64,
}

/// One attempt to collect an order's money at WeChat, with its own `out_trade_no`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    pub out_trade_no: String,
    pub order_no: String,
    pub merchant_id: String,
    pub protocol: String,
    pub amount_fen: i64,
    pub state: AttemptState,
    pub prepay_id: Option<String>,
    pub prepay_expires_at: Option<i64>,
    pub transaction_id: Option<String>,
    pub paid_fen: Option<i64>,
    pub paid_source: Option<String>,
    pub anomaly: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub paid_at: Option<i64>,
    pub next_query_at: Option<i64>,
    pub query_count: i64,
    /// The prepay request as first sent, so a retry repeats it byte for byte.
    pub request_json: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Coupon {
    pub code: String,
    pub user_id: String,
    pub discount_fen: i64,
    pub min_spend_fen: i64,
    pub expires_at: Option<i64>,
    pub state: CouponState,
    pub order_no: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub used_at: Option<i64>,
}

/// A notification as it was received, verified or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Receipt {
    pub id: i64,
    pub merchant_id: String,
    pub kind: String,
    pub received_at: i64,
    pub remote_addr: Option<String>,
    pub query: Option<String>,
    pub headers_json: Option<String>,
    #[serde(skip)]
    pub body: Vec<u8>,
    pub body_truncated: bool,
    pub verified: bool,
    pub outcome: String,
    pub detail: Option<String>,
    pub out_trade_no: Option<String>,
    pub transaction_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub seq: i64,
    pub id: String,
    pub event_type: String,
    pub order_no: Option<String>,
    pub payload: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Anomaly {
    pub id: i64,
    pub kind: String,
    pub order_no: Option<String>,
    pub out_trade_no: Option<String>,
    pub receipt_id: Option<i64>,
    pub detail: String,
    pub created_at: i64,
    pub resolved_at: Option<i64>,
    pub resolution: Option<String>,
}
