//! Domain operations. Each public method is one transaction; state changes are guarded updates
//! (`UPDATE ... WHERE state = <expected>`), so concurrent callers make exactly one transition.

use crate::{
    Anomaly, Attempt, AttemptState, Backend, Coupon, CouponState, Event, Order, OrderState,
    PaidSource, Receipt, Result, Store, StoreError,
};
use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Row, Transaction};

/// The columns every order read selects (the bench replays the same SQL).
pub const ORDER_COLS: &str = "order_no, user_id, subject, items_json, amount_fen, discount_fen, \
    payable_fen, refunded_fen, coupon_code, state, merchant_id, paid_out_trade_no, paid_receipt_id, \
    paid_source, created_at, updated_at, expires_at, paid_at, closed_at, close_attempts";
/// The columns every attempt read selects.
pub const ATTEMPT_COLS: &str = "out_trade_no, order_no, merchant_id, protocol, amount_fen, state, \
    prepay_id, prepay_expires_at, transaction_id, paid_fen, paid_source, anomaly, created_at, \
    updated_at, paid_at, next_query_at, query_count, request_json";
const COUPON_COLS: &str = "code, user_id, discount_fen, min_spend_fen, expires_at, state, \
    order_no, created_at, updated_at, used_at";
const RECEIPT_COLS: &str = "id, merchant_id, kind, received_at, remote_addr, query, headers_json, \
    body, body_truncated, verified, outcome, detail, out_trade_no, transaction_id";

/// A business rule said no. `code` is stable and machine-readable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Rejection {
    pub code: &'static str,
    pub message: String,
}

pub(crate) fn reject(code: &'static str, message: impl Into<String>) -> StoreError {
    StoreError::Rejected(Rejection {
        code,
        message: message.into(),
    })
}

/// What the caller wants to create.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub order_no: String,
    pub user_id: String,
    pub subject: String,
    pub items_json: Option<String>,
    pub amount_fen: i64,
    pub coupon_code: Option<String>,
    pub expires_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewCoupon {
    pub code: String,
    pub user_id: String,
    pub discount_fen: i64,
    pub min_spend_fen: i64,
    pub expires_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct NewAttempt {
    pub out_trade_no: String,
    pub order_no: String,
    pub merchant_id: String,
    pub protocol: String,
    pub request_json: Option<String>,
    /// When the pending-payment sweeper should first ask WeChat.
    pub next_query_at: Option<i64>,
}

/// A notification as received, before we know what it means.
#[derive(Debug, Clone, Default)]
pub struct NewReceipt {
    pub merchant_id: String,
    pub kind: String,
    pub remote_addr: Option<String>,
    pub query: Option<String>,
    pub headers_json: Option<String>,
    pub body: Vec<u8>,
    pub verified: bool,
    pub outcome: String,
    pub detail: Option<String>,
    pub out_trade_no: Option<String>,
    pub transaction_id: Option<String>,
}

/// Bodies larger than this are cut before they are stored (the receipt says so).
pub const RECEIPT_BODY_CAP: usize = 64 * 1024;

/// A verified payment success, from a notification or a query.
#[derive(Debug, Clone)]
pub struct PaymentSuccess {
    pub merchant_id: String,
    pub out_trade_no: String,
    pub transaction_id: String,
    pub paid_fen: i64,
    pub source: PaidSource,
    pub receipt_id: Option<i64>,
    /// `late_success_refund` for this merchant (APIv3): when the success turns out to be a
    /// PAID_AFTER_CLOSE or DUPLICATE_PAYMENT, reserve its full refund in the same transaction.
    pub refund_if_late: bool,
}

/// What `mark_paid` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkPaid {
    /// This call moved the order to PAID (coupon consumed, `order.paid` emitted).
    Paid { order_no: String },
    /// Already recorded before; nothing changed.
    AlreadyRecorded { order_no: String },
    /// The amount differs from the attempt's: stored as an anomaly, not paid.
    AmountMismatch {
        order_no: String,
        expected_fen: i64,
        got_fen: i64,
    },
    /// The order had been closed: recorded as PAID_AFTER_CLOSE for refund or review.
    PaidAfterClose { order_no: String },
    /// The order had already been paid through another attempt: a second payment to refund.
    DuplicatePayment { order_no: String },
    /// No attempt with this out_trade_no for this merchant.
    UnknownAttempt,
}

impl MarkPaid {
    pub fn as_str(&self) -> &'static str {
        match self {
            MarkPaid::Paid { .. } => "paid",
            MarkPaid::AlreadyRecorded { .. } => "duplicate",
            MarkPaid::AmountMismatch { .. } => "amount_mismatch",
            MarkPaid::PaidAfterClose { .. } => "paid_after_close",
            MarkPaid::DuplicatePayment { .. } => "duplicate_payment",
            MarkPaid::UnknownAttempt => "unknown_out_trade_no",
        }
    }
}

pub(crate) fn decode_order_row(r: &AnyRow) -> Result<Order> {
    Ok(Order {
        order_no: r.try_get("order_no")?,
        user_id: r.try_get("user_id")?,
        subject: r.try_get("subject")?,
        items_json: r.try_get("items_json")?,
        amount_fen: r.try_get("amount_fen")?,
        discount_fen: r.try_get("discount_fen")?,
        payable_fen: r.try_get("payable_fen")?,
        refunded_fen: r.try_get("refunded_fen")?,
        coupon_code: r.try_get("coupon_code")?,
        state: r.try_get::<String, _>("state")?.parse()?,
        merchant_id: r.try_get("merchant_id")?,
        paid_out_trade_no: r.try_get("paid_out_trade_no")?,
        paid_receipt_id: r.try_get("paid_receipt_id")?,
        paid_source: r.try_get("paid_source")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        expires_at: r.try_get("expires_at")?,
        paid_at: r.try_get("paid_at")?,
        closed_at: r.try_get("closed_at")?,
        close_attempts: r.try_get("close_attempts")?,
    })
}

pub(crate) fn decode_attempt_row(r: &AnyRow) -> Result<Attempt> {
    Ok(Attempt {
        out_trade_no: r.try_get("out_trade_no")?,
        order_no: r.try_get("order_no")?,
        merchant_id: r.try_get("merchant_id")?,
        protocol: r.try_get("protocol")?,
        amount_fen: r.try_get("amount_fen")?,
        state: r.try_get::<String, _>("state")?.parse()?,
        prepay_id: r.try_get("prepay_id")?,
        prepay_expires_at: r.try_get("prepay_expires_at")?,
        transaction_id: r.try_get("transaction_id")?,
        paid_fen: r.try_get("paid_fen")?,
        paid_source: r.try_get("paid_source")?,
        anomaly: r.try_get("anomaly")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        paid_at: r.try_get("paid_at")?,
        next_query_at: r.try_get("next_query_at")?,
        query_count: r.try_get("query_count")?,
        request_json: r.try_get("request_json")?,
    })
}

fn decode_coupon(r: &AnyRow) -> Result<Coupon> {
    Ok(Coupon {
        code: r.try_get("code")?,
        user_id: r.try_get("user_id")?,
        discount_fen: r.try_get("discount_fen")?,
        min_spend_fen: r.try_get("min_spend_fen")?,
        expires_at: r.try_get("expires_at")?,
        state: r.try_get::<String, _>("state")?.parse()?,
        order_no: r.try_get("order_no")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        used_at: r.try_get("used_at")?,
    })
}

pub(crate) fn decode_receipt(r: &AnyRow) -> Result<Receipt> {
    Ok(Receipt {
        id: r.try_get("id")?,
        merchant_id: r.try_get("merchant_id")?,
        kind: r.try_get("kind")?,
        received_at: r.try_get("received_at")?,
        remote_addr: r.try_get("remote_addr")?,
        query: r.try_get("query")?,
        headers_json: r.try_get("headers_json")?,
        body: r.try_get("body")?,
        body_truncated: r.try_get::<i64, _>("body_truncated")? != 0,
        verified: r.try_get::<i64, _>("verified")? != 0,
        outcome: r.try_get("outcome")?,
        detail: r.try_get("detail")?,
        out_trade_no: r.try_get("out_trade_no")?,
        transaction_id: r.try_get("transaction_id")?,
    })
}

pub(crate) fn decode_event(r: &AnyRow) -> Result<Event> {
    Ok(Event {
        seq: r.try_get("seq")?,
        id: r.try_get("id")?,
        event_type: r.try_get("event_type")?,
        order_no: r.try_get("order_no")?,
        payload: r.try_get("payload")?,
        created_at: r.try_get("created_at")?,
    })
}

pub(crate) fn decode_anomaly(r: &AnyRow) -> Result<Anomaly> {
    Ok(Anomaly {
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
        order_no: r.try_get("order_no")?,
        out_trade_no: r.try_get("out_trade_no")?,
        receipt_id: r.try_get("receipt_id")?,
        detail: r.try_get("detail")?,
        created_at: r.try_get("created_at")?,
        resolved_at: r.try_get("resolved_at")?,
        resolution: r.try_get("resolution")?,
    })
}

/// A random, URL-safe identifier with a prefix (`evt_…`).
/// Why an order cannot get a new payment attempt at `now`, if it cannot.
fn not_payable(order: &Order, now: i64) -> Result<()> {
    match order.state {
        OrderState::Created | OrderState::Paying => {}
        OrderState::Paid | OrderState::PartiallyRefunded | OrderState::Refunded => {
            return Err(reject("order_paid", "the order has already been paid"));
        }
        OrderState::Closed => return Err(reject("order_closed", "the order is closed")),
    }
    if order.expires_at <= now {
        return Err(reject("order_expired", "the order has expired"));
    }
    Ok(())
}

pub fn new_id(prefix: &str) -> String {
    use rand::RngExt;
    let mut rng = rand::rng();
    let chars: String = (0..20)
        .map(|_| {
            let i = rng.random_range(0..36u32);
            char::from_digit(i, 36).unwrap_or('0')
        })
        .collect();
    format!("{prefix}{chars}")
}

impl Store {
    fn for_update(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        }
    }

    // ---------------------------------------------------------------- coupons

    /// Issues a coupon to a user. A duplicate code is a conflict.
    pub async fn issue_coupon(&self, c: &NewCoupon, now: i64) -> Result<Coupon> {
        if c.discount_fen <= 0 {
            return Err(reject(
                "invalid_coupon",
                "discount_fen must be a positive number of fen",
            ));
        }
        if c.min_spend_fen < 0 {
            return Err(reject(
                "invalid_coupon",
                "min_spend_fen must not be negative",
            ));
        }
        let res = sqlx::query(
            "INSERT INTO coupons (code, user_id, discount_fen, min_spend_fen, expires_at, state, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'AVAILABLE', $6, $6)",
        )
        .bind(&c.code)
        .bind(&c.user_id)
        .bind(c.discount_fen)
        .bind(c.min_spend_fen)
        .bind(c.expires_at)
        .bind(now)
        .execute(&self.pool)
        .await;
        match res {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(reject(
                    "coupon_exists",
                    format!("coupon {} already exists", c.code),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        self.get_coupon(&c.code)
            .await?
            .ok_or_else(|| StoreError::NotFound(c.code.clone()))
    }

    pub async fn get_coupon(&self, code: &str) -> Result<Option<Coupon>> {
        let sql = format!("SELECT {COUPON_COLS} FROM coupons WHERE code = $1");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(code)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(decode_coupon).transpose()
    }

    /// A user's coupons; ones past their expiry read as EXPIRED.
    pub async fn list_coupons(&self, user_id: &str, now: i64) -> Result<Vec<Coupon>> {
        let sql = format!(
            "SELECT {COUPON_COLS} FROM coupons WHERE user_id = $1 ORDER BY created_at, code"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let mut c = decode_coupon(r)?;
                if c.state == CouponState::Available && c.expires_at.is_some_and(|e| e <= now) {
                    c.state = CouponState::Expired;
                }
                Ok(c)
            })
            .collect()
    }

    // ----------------------------------------------------------------- orders

    /// Prices and creates an order, reserving its coupon, in one transaction.
    pub async fn create_order(&self, o: &NewOrder, now: i64) -> Result<Order> {
        if o.amount_fen <= 0 {
            return Err(reject(
                "invalid_amount",
                "the order amount must be a positive number of fen",
            ));
        }
        let insert = format!(
            "INSERT INTO orders (order_no, user_id, subject, items_json, amount_fen, discount_fen, \
             payable_fen, refunded_fen, coupon_code, state, created_at, updated_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, 'CREATED', $9, $9, $10) \
             RETURNING {ORDER_COLS}"
        );
        let Some(code) = &o.coupon_code else {
            // Nothing to reserve: one statement, one round trip.
            let row = sqlx::query(AssertSqlSafe(insert))
                .bind(&o.order_no)
                .bind(&o.user_id)
                .bind(&o.subject)
                .bind(&o.items_json)
                .bind(o.amount_fen)
                .bind(0i64)
                .bind(o.amount_fen)
                .bind(&o.coupon_code)
                .bind(now)
                .bind(o.expires_at)
                .fetch_one(&self.pool)
                .await?;
            return decode_order_row(&row);
        };
        let mut tx = self.pool.begin().await?;
        let discount = {
            let sql = format!(
                "SELECT {COUPON_COLS} FROM coupons WHERE code = $1{}",
                self.for_update()
            );
            let row = sqlx::query(AssertSqlSafe(sql))
                .bind(code)
                .fetch_optional(&mut *tx)
                .await?;
            let coupon = match row.as_ref().map(decode_coupon).transpose()? {
                None => return Err(reject("coupon_not_found", format!("no coupon {code}"))),
                Some(c) => c,
            };
            if coupon.user_id != o.user_id {
                return Err(reject(
                    "coupon_not_found",
                    format!("no coupon {code} for this user"),
                ));
            }
            if coupon.expires_at.is_some_and(|e| e <= now) {
                return Err(reject(
                    "coupon_expired",
                    format!("coupon {code} has expired"),
                ));
            }
            match coupon.state {
                CouponState::Available => {}
                CouponState::Reserved => {
                    return Err(reject(
                        "coupon_in_use",
                        format!("coupon {code} is reserved by another order"),
                    ));
                }
                CouponState::Used | CouponState::Expired => {
                    return Err(reject(
                        "coupon_used",
                        format!("coupon {code} has already been used"),
                    ));
                }
            }
            if o.amount_fen < coupon.min_spend_fen {
                return Err(reject(
                    "coupon_not_applicable",
                    format!(
                        "coupon {code} needs a minimum spend of {} fen",
                        coupon.min_spend_fen
                    ),
                ));
            }
            if coupon.discount_fen >= o.amount_fen {
                return Err(reject(
                    "payable_not_positive",
                    "the coupon would make the payable amount zero or negative",
                ));
            }
            let n = sqlx::query(
                "UPDATE coupons SET state = 'RESERVED', order_no = $1, updated_at = $2 \
                 WHERE code = $3 AND state = 'AVAILABLE'",
            )
            .bind(&o.order_no)
            .bind(now)
            .bind(code)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n != 1 {
                return Err(reject(
                    "coupon_in_use",
                    format!("coupon {code} was taken concurrently"),
                ));
            }
            coupon.discount_fen
        };
        let payable = o.amount_fen - discount;
        let row = sqlx::query(AssertSqlSafe(insert))
            .bind(&o.order_no)
            .bind(&o.user_id)
            .bind(&o.subject)
            .bind(&o.items_json)
            .bind(o.amount_fen)
            .bind(discount)
            .bind(payable)
            .bind(&o.coupon_code)
            .bind(now)
            .bind(o.expires_at)
            .fetch_one(&mut *tx)
            .await?;
        let order = decode_order_row(&row)?;
        tx.commit().await?;
        Ok(order)
    }

    pub async fn get_order(&self, order_no: &str) -> Result<Option<Order>> {
        let sql = format!("SELECT {ORDER_COLS} FROM orders WHERE order_no = $1");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(order_no)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(decode_order_row).transpose()
    }

    /// A user's orders, newest first.
    pub async fn list_orders_for_user(&self, user_id: &str, limit: i64) -> Result<Vec<Order>> {
        let sql = format!(
            "SELECT {ORDER_COLS} FROM orders WHERE user_id = $1 ORDER BY created_at DESC, order_no DESC LIMIT $2"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(user_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode_order_row).collect()
    }

    // --------------------------------------------------------------- attempts

    /// A pending attempt of this order at this merchant for the order's current amount that can
    /// be reused instead of asking WeChat again: its prepay is still valid at `valid_until`, or it
    /// never got one (then the prepay is repeated with the same out_trade_no and request).
    pub async fn reusable_attempt(
        &self,
        order_no: &str,
        merchant_id: &str,
        valid_until: i64,
    ) -> Result<Option<Attempt>> {
        let sql = format!(
            "SELECT {ATTEMPT_COLS} FROM payment_attempts a WHERE order_no = $1 AND merchant_id = $2 \
             AND state = 'PENDING' AND (prepay_id IS NULL OR prepay_expires_at > $3) \
             AND amount_fen = (SELECT payable_fen FROM orders o WHERE o.order_no = a.order_no) \
             ORDER BY created_at DESC LIMIT 1"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(order_no)
            .bind(merchant_id)
            .bind(valid_until)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(decode_attempt_row).transpose()
    }

    /// Opens a new payment attempt: the order must be payable (CREATED or PAYING, not expired);
    /// it becomes PAYING.
    pub async fn start_attempt(&self, a: &NewAttempt, now: i64) -> Result<Attempt> {
        if self.backend == Backend::Postgres {
            return self.start_attempt_one_statement(a, now).await;
        }
        let mut tx = self.pool.begin().await?;
        let order = fetch_order(&mut tx, &a.order_no, self.for_update())
            .await?
            .ok_or_else(|| reject("order_not_found", format!("no order {}", a.order_no)))?;
        not_payable(&order, now)?;
        sqlx::query(
            "UPDATE orders SET state = 'PAYING', merchant_id = $1, updated_at = $2 \
             WHERE order_no = $3 AND state IN ('CREATED', 'PAYING')",
        )
        .bind(&a.merchant_id)
        .bind(now)
        .bind(&a.order_no)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO payment_attempts (out_trade_no, order_no, merchant_id, protocol, amount_fen, \
             state, created_at, updated_at, next_query_at, query_count, request_json) \
             VALUES ($1, $2, $3, $4, $5, 'PENDING', $6, $6, $7, 0, $8) RETURNING {ATTEMPT_COLS}"
        )))
        .bind(&a.out_trade_no)
        .bind(&a.order_no)
        .bind(&a.merchant_id)
        .bind(&a.protocol)
        .bind(order.payable_fen)
        .bind(now)
        .bind(a.next_query_at)
        .bind(&a.request_json)
        .fetch_one(&mut *tx)
        .await?;
        let attempt = decode_attempt_row(&row)?;
        tx.commit().await?;
        Ok(attempt)
    }

    /// PostgreSQL: the same transition as one statement (one round trip instead of five): the
    /// guarded UPDATE locks the order row and feeds the INSERT; no row means not payable, and
    /// only then is the order read to say why.
    async fn start_attempt_one_statement(&self, a: &NewAttempt, now: i64) -> Result<Attempt> {
        let sql = format!(
            "WITH o AS (UPDATE orders SET state = 'PAYING', merchant_id = $1, updated_at = $2 \
             WHERE order_no = $3 AND state IN ('CREATED', 'PAYING') AND expires_at > $2 \
             RETURNING order_no, payable_fen) \
             INSERT INTO payment_attempts (out_trade_no, order_no, merchant_id, protocol, amount_fen, \
             state, created_at, updated_at, next_query_at, query_count, request_json) \
             SELECT $4, o.order_no, $1, $5, o.payable_fen, 'PENDING', $2, $2, $6, 0, $7 FROM o \
             RETURNING {ATTEMPT_COLS}"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(&a.merchant_id)
            .bind(now)
            .bind(&a.order_no)
            .bind(&a.out_trade_no)
            .bind(&a.protocol)
            .bind(a.next_query_at)
            .bind(&a.request_json)
            .fetch_optional(&self.pool)
            .await?;
        if let Some(row) = row {
            return decode_attempt_row(&row);
        }
        let order = self
            .get_order(&a.order_no)
            .await?
            .ok_or_else(|| reject("order_not_found", format!("no order {}", a.order_no)))?;
        not_payable(&order, now)?;
        // Payable now, not a moment ago: the order changed under us; the caller may retry.
        Err(reject(
            "order_busy",
            "the order changed while the payment was starting; try again",
        ))
    }

    /// Records the prepay id WeChat gave for a pending attempt.
    pub async fn set_prepay(
        &self,
        out_trade_no: &str,
        prepay_id: &str,
        prepay_expires_at: i64,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE payment_attempts SET prepay_id = $1, prepay_expires_at = $2, updated_at = $3 \
             WHERE out_trade_no = $4 AND state = 'PENDING'",
        )
        .bind(prepay_id)
        .bind(prepay_expires_at)
        .bind(now)
        .bind(out_trade_no)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks a pending attempt FAILED (WeChat refused the prepay for good).
    pub async fn fail_attempt(&self, out_trade_no: &str, reason: &str, now: i64) -> Result<()> {
        sqlx::query(
            "UPDATE payment_attempts SET state = 'FAILED', anomaly = $1, updated_at = $2 \
             WHERE out_trade_no = $3 AND state = 'PENDING'",
        )
        .bind(reason)
        .bind(now)
        .bind(out_trade_no)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn get_attempt(&self, out_trade_no: &str) -> Result<Option<Attempt>> {
        let sql = format!("SELECT {ATTEMPT_COLS} FROM payment_attempts WHERE out_trade_no = $1");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(out_trade_no)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(decode_attempt_row).transpose()
    }

    pub async fn list_attempts(&self, order_no: &str) -> Result<Vec<Attempt>> {
        let sql = format!(
            "SELECT {ATTEMPT_COLS} FROM payment_attempts WHERE order_no = $1 ORDER BY created_at, out_trade_no"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(order_no)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode_attempt_row).collect()
    }

    // --------------------------------------------------------------- receipts

    /// Keeps a notification as received (body capped at `RECEIPT_BODY_CAP`). Its own transaction,
    /// committed before anything is decided, so even a rejected notification is on record.
    pub async fn insert_receipt(&self, r: &NewReceipt, now: i64) -> Result<i64> {
        let truncated = r.body.len() > RECEIPT_BODY_CAP;
        let body = &r.body[..r.body.len().min(RECEIPT_BODY_CAP)];
        let row = sqlx::query(
            "INSERT INTO receipts (merchant_id, kind, received_at, remote_addr, query, headers_json, \
             body, body_truncated, verified, outcome, detail, out_trade_no, transaction_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id",
        )
        .bind(&r.merchant_id)
        .bind(&r.kind)
        .bind(now)
        .bind(&r.remote_addr)
        .bind(&r.query)
        .bind(&r.headers_json)
        .bind(body.to_vec())
        .bind(i64::from(truncated))
        .bind(i64::from(r.verified))
        .bind(&r.outcome)
        .bind(&r.detail)
        .bind(&r.out_trade_no)
        .bind(&r.transaction_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("id")?)
    }

    pub async fn list_receipts(&self, out_trade_no: &str) -> Result<Vec<Receipt>> {
        let sql =
            format!("SELECT {RECEIPT_COLS} FROM receipts WHERE out_trade_no = $1 ORDER BY id");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(out_trade_no)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode_receipt).collect()
    }

    /// Every receipt of a merchant, newest first (audit).
    pub async fn recent_receipts(&self, merchant_id: &str, limit: i64) -> Result<Vec<Receipt>> {
        let sql = format!(
            "SELECT {RECEIPT_COLS} FROM receipts WHERE merchant_id = $1 ORDER BY id DESC LIMIT $2"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(merchant_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode_receipt).collect()
    }

    // ---------------------------------------------------------------- payment

    /// The one transition to PAID. In one transaction: the attempt becomes SUCCEEDED, the order
    /// PAID (guarded), the coupon USED, the deciding receipt linked and `order.paid` emitted.
    /// Duplicates change nothing; a wrong amount or a closed order is recorded as an anomaly.
    pub async fn mark_paid(&self, p: &PaymentSuccess, now: i64) -> Result<MarkPaid> {
        let mut tx = self.pool.begin().await?;
        let pg = self.backend == Backend::Postgres;
        // PostgreSQL main path in 4 round trips instead of 7 (BEGIN, this UPDATE, the CTE below,
        // COMMIT): the checks of the general path (right merchant, not yet SUCCEEDED, the
        // expected amount) are the guard of the UPDATE, which also locks the attempt first, as
        // the SELECT … FOR UPDATE does. No row: nothing changed, the general path decides.
        let fast_order_no: Option<String> = if pg {
            sqlx::query(
                "UPDATE payment_attempts SET state = 'SUCCEEDED', transaction_id = $1, \
                 paid_fen = $2, paid_source = $3, paid_at = $4, updated_at = $4, \
                 next_query_at = NULL WHERE out_trade_no = $5 AND merchant_id = $6 \
                 AND amount_fen = $2 AND state <> 'SUCCEEDED' RETURNING order_no",
            )
            .bind(&p.transaction_id)
            .bind(p.paid_fen)
            .bind(p.source.as_str())
            .bind(now)
            .bind(&p.out_trade_no)
            .bind(&p.merchant_id)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get::<String, _>("order_no"))
            .transpose()?
        } else {
            None
        };
        let order_no = match fast_order_no {
            Some(order_no) => order_no,
            None => match self.mark_paid_checks(&mut tx, p, now).await? {
                Ok(order_no) => order_no,
                Err(done) => {
                    tx.commit().await?;
                    return Ok(done);
                }
            },
        };
        let payload = json!({
            "order_no": order_no,
            "out_trade_no": p.out_trade_no,
            "transaction_id": p.transaction_id,
            "amount_fen": p.paid_fen,
            "merchant": p.merchant_id,
            "source": p.source.as_str(),
            "paid_at": now,
        });
        if pg {
            // The order, its coupon, the event and the receipt in one statement; no row: the
            // order was not payable, and the general path below records the anomaly.
            let paid = sqlx::query(
                "WITH o AS (UPDATE orders SET state = 'PAID', paid_out_trade_no = $1, \
                 paid_receipt_id = $2, paid_source = $3, paid_at = $4, updated_at = $4 \
                 WHERE order_no = $5 AND state IN ('CREATED', 'PAYING') \
                 RETURNING order_no, coupon_code), \
                 c AS (UPDATE coupons SET state = 'USED', used_at = $4, updated_at = $4 \
                 WHERE code = (SELECT coupon_code FROM o) AND state = 'RESERVED' \
                 AND order_no = (SELECT order_no FROM o)), \
                 e AS (INSERT INTO outbox_events (id, event_type, order_no, payload, created_at) \
                 SELECT $6, 'order.paid', order_no, $7, $4 FROM o), \
                 r AS (UPDATE receipts SET outcome = 'paid' WHERE id = $2 \
                 AND EXISTS (SELECT 1 FROM o)) \
                 SELECT order_no FROM o",
            )
            .bind(&p.out_trade_no)
            .bind(p.receipt_id)
            .bind(p.source.as_str())
            .bind(now)
            .bind(&order_no)
            .bind(new_id("evt_"))
            .bind(payload.to_string())
            .fetch_optional(&mut *tx)
            .await?;
            if paid.is_some() {
                tx.commit().await?;
                return Ok(MarkPaid::Paid { order_no });
            }
            let outcome = self
                .record_unpayable(&mut tx, p, &order_no, &payload, now)
                .await?;
            tx.commit().await?;
            return Ok(outcome);
        }
        let updated = sqlx::query(
            "UPDATE orders SET state = 'PAID', paid_out_trade_no = $1, paid_receipt_id = $2, \
             paid_source = $3, paid_at = $4, updated_at = $4 \
             WHERE order_no = $5 AND state IN ('CREATED', 'PAYING') RETURNING coupon_code",
        )
        .bind(&p.out_trade_no)
        .bind(p.receipt_id)
        .bind(p.source.as_str())
        .bind(now)
        .bind(&order_no)
        .fetch_optional(&mut *tx)
        .await?;
        let outcome = if let Some(row) = updated {
            let coupon: Option<String> = row.try_get("coupon_code")?;
            if let Some(code) = coupon {
                sqlx::query(
                    "UPDATE coupons SET state = 'USED', used_at = $1, updated_at = $1 \
                     WHERE code = $2 AND state = 'RESERVED' AND order_no = $3",
                )
                .bind(now)
                .bind(&code)
                .bind(&order_no)
                .execute(&mut *tx)
                .await?;
            }
            insert_event_tx(&mut tx, "order.paid", Some(&order_no), &payload, now).await?;
            set_receipt_outcome(&mut tx, p.receipt_id, "paid").await?;
            MarkPaid::Paid { order_no }
        } else {
            self.record_unpayable(&mut tx, p, &order_no, &payload, now)
                .await?
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// The general path of `mark_paid` up to the attempt's transition: the attempt locked and
    /// checked, SUCCEEDED when the success applies. `Err(outcome)`: decided without a
    /// transition (unknown attempt, already recorded, amount mismatch); the caller commits.
    async fn mark_paid_checks(
        &self,
        tx: &mut Transaction<'static, Any>,
        p: &PaymentSuccess,
        now: i64,
    ) -> Result<std::result::Result<String, MarkPaid>> {
        let Some(attempt) = fetch_attempt(tx, &p.out_trade_no, self.for_update()).await? else {
            set_receipt_outcome(tx, p.receipt_id, "unknown_out_trade_no").await?;
            return Ok(Err(MarkPaid::UnknownAttempt));
        };
        if attempt.merchant_id != p.merchant_id {
            set_receipt_outcome(tx, p.receipt_id, "unknown_out_trade_no").await?;
            return Ok(Err(MarkPaid::UnknownAttempt));
        }
        let order_no = attempt.order_no.clone();
        if attempt.state == AttemptState::Succeeded {
            set_receipt_outcome(tx, p.receipt_id, "duplicate").await?;
            return Ok(Err(MarkPaid::AlreadyRecorded { order_no }));
        }
        if p.paid_fen != attempt.amount_fen {
            let first = attempt.anomaly.as_deref() != Some("AMOUNT_MISMATCH");
            if first {
                sqlx::query(
                    "UPDATE payment_attempts SET anomaly = 'AMOUNT_MISMATCH', updated_at = $1 \
                     WHERE out_trade_no = $2",
                )
                .bind(now)
                .bind(&p.out_trade_no)
                .execute(&mut **tx)
                .await?;
                insert_anomaly(
                    tx,
                    "AMOUNT_MISMATCH",
                    Some(&order_no),
                    Some(&p.out_trade_no),
                    p.receipt_id,
                    &format!(
                        "WeChat reports {} fen paid (transaction {}), the attempt expects {} fen",
                        p.paid_fen, p.transaction_id, attempt.amount_fen
                    ),
                    now,
                )
                .await?;
            }
            set_receipt_outcome(tx, p.receipt_id, "amount_mismatch").await?;
            return Ok(Err(MarkPaid::AmountMismatch {
                order_no,
                expected_fen: attempt.amount_fen,
                got_fen: p.paid_fen,
            }));
        }
        // The attempt succeeded at WeChat, whatever our order thinks.
        sqlx::query(
            "UPDATE payment_attempts SET state = 'SUCCEEDED', transaction_id = $1, paid_fen = $2, \
             paid_source = $3, paid_at = $4, updated_at = $4, next_query_at = NULL \
             WHERE out_trade_no = $5 AND state <> 'SUCCEEDED'",
        )
        .bind(&p.transaction_id)
        .bind(p.paid_fen)
        .bind(p.source.as_str())
        .bind(now)
        .bind(&p.out_trade_no)
        .execute(&mut **tx)
        .await?;
        Ok(Ok(order_no))
    }

    /// A success for an attempt whose order is not payable (closed, or paid through another
    /// attempt): the anomaly, its event and the receipt's outcome.
    async fn record_unpayable(
        &self,
        tx: &mut Transaction<'static, Any>,
        p: &PaymentSuccess,
        order_no: &str,
        payload: &serde_json::Value,
        now: i64,
    ) -> Result<MarkPaid> {
        let order = fetch_order(tx, order_no, "").await?;
        let closed = order
            .as_ref()
            .is_some_and(|o| o.state == OrderState::Closed);
        let (kind, event, outcome) = if closed {
            (
                "PAID_AFTER_CLOSE",
                "order.paid_after_close",
                MarkPaid::PaidAfterClose {
                    order_no: order_no.to_string(),
                },
            )
        } else {
            (
                "DUPLICATE_PAYMENT",
                "payment.duplicate",
                MarkPaid::DuplicatePayment {
                    order_no: order_no.to_string(),
                },
            )
        };
        sqlx::query("UPDATE payment_attempts SET anomaly = $1 WHERE out_trade_no = $2")
            .bind(kind)
            .bind(&p.out_trade_no)
            .execute(&mut **tx)
            .await?;
        insert_anomaly(
            tx,
            kind,
            Some(order_no),
            Some(&p.out_trade_no),
            p.receipt_id,
            &format!(
                "WeChat transaction {} paid {} fen for an order that is {}",
                p.transaction_id,
                p.paid_fen,
                order.map(|o| o.state.as_str()).unwrap_or("missing")
            ),
            now,
        )
        .await?;
        insert_event_tx(tx, event, Some(order_no), payload, now).await?;
        if p.refund_if_late {
            crate::refunds::reserve_late_refund_tx(
                tx,
                &p.out_trade_no,
                order_no,
                &p.merchant_id,
                p.paid_fen,
                now,
            )
            .await?;
        }
        set_receipt_outcome(tx, p.receipt_id, outcome.as_str()).await?;
        Ok(outcome)
    }

    // ----------------------------------------------------------------- events

    pub async fn list_events(&self, order_no: &str) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT seq, id, event_type, order_no, payload, created_at FROM outbox_events \
             WHERE order_no = $1 ORDER BY seq",
        )
        .bind(order_no)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_event).collect()
    }

    pub async fn list_anomalies(&self, order_no: &str) -> Result<Vec<Anomaly>> {
        let rows = sqlx::query(
            "SELECT id, kind, order_no, out_trade_no, receipt_id, detail, created_at, resolved_at, \
             resolution FROM anomalies WHERE order_no = $1 ORDER BY id",
        )
        .bind(order_no)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_anomaly).collect()
    }
}

async fn fetch_order(
    tx: &mut Transaction<'static, Any>,
    order_no: &str,
    lock: &str,
) -> Result<Option<Order>> {
    let sql = format!("SELECT {ORDER_COLS} FROM orders WHERE order_no = $1{lock}");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(order_no)
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(decode_order_row).transpose()
}

async fn fetch_attempt(
    tx: &mut Transaction<'static, Any>,
    out_trade_no: &str,
    lock: &str,
) -> Result<Option<Attempt>> {
    let sql = format!("SELECT {ATTEMPT_COLS} FROM payment_attempts WHERE out_trade_no = $1{lock}");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(out_trade_no)
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(decode_attempt_row).transpose()
}

async fn set_receipt_outcome(
    tx: &mut Transaction<'static, Any>,
    receipt_id: Option<i64>,
    outcome: &str,
) -> Result<()> {
    if let Some(id) = receipt_id {
        sqlx::query("UPDATE receipts SET outcome = $1 WHERE id = $2")
            .bind(outcome)
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

pub(crate) async fn insert_event_tx(
    tx: &mut Transaction<'static, Any>,
    event_type: &str,
    order_no: Option<&str>,
    payload: &serde_json::Value,
    now: i64,
) -> Result<String> {
    let id = new_id("evt_");
    sqlx::query(
        "INSERT INTO outbox_events (id, event_type, order_no, payload, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&id)
    .bind(event_type)
    .bind(order_no)
    .bind(payload.to_string())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

async fn insert_anomaly(
    tx: &mut Transaction<'static, Any>,
    kind: &str,
    order_no: Option<&str>,
    out_trade_no: Option<&str>,
    receipt_id: Option<i64>,
    detail: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO anomalies (kind, order_no, out_trade_no, receipt_id, detail, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(kind)
    .bind(order_no)
    .bind(out_trade_no)
    .bind(receipt_id)
    .bind(detail)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
