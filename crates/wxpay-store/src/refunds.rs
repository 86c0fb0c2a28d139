//! Refunds: PENDING (ours, not yet accepted by WeChat) → PROCESSING → SUCCESS | CLOSED | ABNORMAL.
//! The sum of a paid order's refunds that are not CLOSED never exceeds what was paid: creating a
//! refund checks that sum under the order's row lock.

use crate::ops::{insert_event_tx, reject};
use crate::{OrderState, Result, Store, StoreError};
use serde::Serialize;
use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

const REFUND_COLS: &str = "out_refund_no, order_no, out_trade_no, merchant_id, amount_fen, \
    total_fen, reason, state, refund_id, detail, created_at, updated_at, finished_at, next_query_at";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refund {
    pub out_refund_no: String,
    pub order_no: String,
    pub out_trade_no: String,
    pub merchant_id: String,
    pub amount_fen: i64,
    /// The order total the refund is taken from (what WeChat wants as `amount.total`).
    pub total_fen: i64,
    pub reason: Option<String>,
    /// PENDING, PROCESSING, SUCCESS, CLOSED, ABNORMAL.
    pub state: String,
    pub refund_id: Option<String>,
    pub detail: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
    pub next_query_at: Option<i64>,
}

fn decode(r: &AnyRow) -> Result<Refund> {
    Ok(Refund {
        out_refund_no: r.try_get("out_refund_no")?,
        order_no: r.try_get("order_no")?,
        out_trade_no: r.try_get("out_trade_no")?,
        merchant_id: r.try_get("merchant_id")?,
        amount_fen: r.try_get("amount_fen")?,
        total_fen: r.try_get("total_fen")?,
        reason: r.try_get("reason")?,
        state: r.try_get("state")?,
        refund_id: r.try_get("refund_id")?,
        detail: r.try_get("detail")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        finished_at: r.try_get("finished_at")?,
        next_query_at: r.try_get("next_query_at")?,
    })
}

#[derive(Debug, Clone)]
pub struct NewRefund {
    pub order_no: String,
    pub out_refund_no: String,
    pub amount_fen: i64,
    pub reason: Option<String>,
    pub next_query_at: Option<i64>,
}

/// What `create_refund` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundCreated {
    /// A new refund, amount reserved: send it to WeChat.
    New(Refund),
    /// The same out_refund_no with the same amount already exists: repeat or report it.
    Existing(Refund),
}

/// What WeChat says about a refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundOutcome {
    Processing,
    Success,
    Closed,
    Abnormal,
}

impl RefundOutcome {
    pub fn parse(status: &str) -> Option<RefundOutcome> {
        match status {
            "PROCESSING" => Some(RefundOutcome::Processing),
            "SUCCESS" => Some(RefundOutcome::Success),
            "CLOSED" => Some(RefundOutcome::Closed),
            "ABNORMAL" => Some(RefundOutcome::Abnormal),
            _ => None,
        }
    }
    fn as_str(&self) -> &'static str {
        match self {
            RefundOutcome::Processing => "PROCESSING",
            RefundOutcome::Success => "SUCCESS",
            RefundOutcome::Closed => "CLOSED",
            RefundOutcome::Abnormal => "ABNORMAL",
        }
    }
}

/// `late_success_refund`: reserves, inside the transaction that records a payment that should
/// not have happened (a success for a closed order, a second payment of a paid order), the full
/// refund of it — due at once, with the out_refund_no `late-<out_trade_no>`; the refund sweeper
/// sends it. In the same transaction as the anomaly, so a crash cannot keep one without the other.
pub(crate) async fn reserve_late_refund_tx(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    out_trade_no: &str,
    order_no: &str,
    merchant_id: &str,
    paid_fen: i64,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO refunds (out_refund_no, order_no, out_trade_no, merchant_id, amount_fen, \
         total_fen, reason, state, created_at, updated_at, next_query_at, kind) \
         VALUES ($1, $2, $3, $4, $5, $5, $6, 'PENDING', $7, $7, $7, 'late') ON CONFLICT DO NOTHING",
    )
    .bind(format!("late-{out_trade_no}"))
    .bind(order_no)
    .bind(out_trade_no)
    .bind(merchant_id)
    .bind(paid_fen)
    .bind("payment after the order was closed or already paid")
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// Reserves a refund of a paid order. Refused when the order is not paid, when the refunds
    /// not CLOSED would exceed the paid amount, or when `out_refund_no` exists with another amount.
    pub async fn create_refund(&self, r: &NewRefund, now: i64) -> Result<RefundCreated> {
        if r.amount_fen <= 0 {
            return Err(reject(
                "invalid_amount",
                "amount_fen must be a positive number of fen",
            ));
        }
        let mut tx = self.pool().begin().await?;
        let lock = match self.backend() {
            crate::Backend::Postgres => " FOR UPDATE",
            crate::Backend::Sqlite => "",
        };
        let sql = format!(
            "SELECT state, payable_fen, paid_out_trade_no, merchant_id FROM orders WHERE order_no = $1{lock}"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(&r.order_no)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| reject("order_not_found", format!("no order {}", r.order_no)))?;
        let existing = sqlx::query(AssertSqlSafe(format!(
            "SELECT {REFUND_COLS} FROM refunds WHERE out_refund_no = $1"
        )))
        .bind(&r.out_refund_no)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(e) = existing {
            let e = decode(&e)?;
            if e.order_no == r.order_no && e.amount_fen == r.amount_fen {
                tx.commit().await?;
                return Ok(RefundCreated::Existing(e));
            }
            return Err(reject(
                "out_refund_no_used",
                format!(
                    "out_refund_no {} belongs to another refund",
                    r.out_refund_no
                ),
            ));
        }
        let state: OrderState = row.try_get::<String, _>("state")?.parse()?;
        if !matches!(state, OrderState::Paid | OrderState::PartiallyRefunded) {
            return Err(reject(
                "order_not_refundable",
                format!("the order is {state}, not paid"),
            ));
        }
        let payable: i64 = row.try_get("payable_fen")?;
        let out_trade_no: Option<String> = row.try_get("paid_out_trade_no")?;
        let merchant: Option<String> = row.try_get("merchant_id")?;
        let reserved: i64 = sqlx::query(
            "SELECT CAST(COALESCE(SUM(amount_fen), 0) AS BIGINT) AS s FROM refunds WHERE order_no = $1 AND state <> 'CLOSED'",
        )
        .bind(&r.order_no)
        .fetch_one(&mut *tx)
        .await?
        .try_get("s")?;
        if reserved + r.amount_fen > payable {
            return Err(reject(
                "refund_exceeds_paid",
                format!(
                    "{} fen paid, {} fen already refunded or being refunded",
                    payable, reserved
                ),
            ));
        }
        sqlx::query(
            "INSERT INTO refunds (out_refund_no, order_no, out_trade_no, merchant_id, amount_fen, total_fen, \
             reason, state, created_at, updated_at, next_query_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'PENDING', $8, $8, $9)",
        )
        .bind(&r.out_refund_no)
        .bind(&r.order_no)
        .bind(out_trade_no.unwrap_or_default())
        .bind(merchant.unwrap_or_default())
        .bind(r.amount_fen)
        .bind(payable)
        .bind(&r.reason)
        .bind(now)
        .bind(r.next_query_at)
        .execute(&mut *tx)
        .await?;
        let created = sqlx::query(AssertSqlSafe(format!(
            "SELECT {REFUND_COLS} FROM refunds WHERE out_refund_no = $1"
        )))
        .bind(&r.out_refund_no)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(RefundCreated::New(decode(&created)?))
    }

    pub async fn get_refund(&self, out_refund_no: &str) -> Result<Option<Refund>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {REFUND_COLS} FROM refunds WHERE out_refund_no = $1"
        )))
        .bind(out_refund_no)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(decode).transpose()
    }

    pub async fn list_refunds(&self, order_no: &str) -> Result<Vec<Refund>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {REFUND_COLS} FROM refunds WHERE order_no = $1 ORDER BY created_at, out_refund_no"
        )))
        .bind(order_no)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(decode).collect()
    }

    /// Applies what WeChat says about a refund, exactly once per state change: SUCCESS adds to
    /// the order's refunded amount (PARTIALLY_REFUNDED / REFUNDED) and emits `refund.succeeded`;
    /// CLOSED releases the reservation and emits `refund.failed`. A full refund returns the
    /// order's coupon to its owner when `return_coupon` and it has not expired. Returns whether
    /// anything changed.
    pub async fn apply_refund(
        &self,
        out_refund_no: &str,
        outcome: RefundOutcome,
        refund_id: Option<&str>,
        return_coupon: bool,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.pool().begin().await?;
        let finished = matches!(outcome, RefundOutcome::Success | RefundOutcome::Closed);
        let updated = sqlx::query(
            "UPDATE refunds SET state = $1, refund_id = COALESCE($2, refund_id), updated_at = $3, \
             finished_at = CASE WHEN $4 = 1 THEN $3 ELSE finished_at END, \
             next_query_at = CASE WHEN $4 = 1 THEN NULL ELSE next_query_at END \
             WHERE out_refund_no = $5 AND state NOT IN ('SUCCESS', 'CLOSED') AND state <> $1 \
             RETURNING order_no, amount_fen, kind, out_trade_no",
        )
        .bind(outcome.as_str())
        .bind(refund_id)
        .bind(now)
        .bind(i64::from(finished))
        .bind(out_refund_no)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = updated else {
            tx.commit().await?;
            return Ok(false);
        };
        let order_no: String = row.try_get("order_no")?;
        let amount: i64 = row.try_get("amount_fen")?;
        let payload = json!({"order_no": order_no, "out_refund_no": out_refund_no, "amount_fen": amount,
            "refund_id": refund_id, "status": outcome.as_str()});
        let kind: String = row.try_get("kind")?;
        if kind == "late" {
            // A refund of a payment that should not have happened: the order is not touched.
            let event = match outcome {
                RefundOutcome::Success => Some("refund.succeeded"),
                RefundOutcome::Closed => Some("refund.failed"),
                RefundOutcome::Abnormal => Some("refund.abnormal"),
                RefundOutcome::Processing => None,
            };
            if let Some(event) = event {
                let mut payload = payload.clone();
                payload["kind"] = json!("late");
                insert_event_tx(&mut tx, event, Some(&order_no), &payload, now).await?;
            }
            if outcome == RefundOutcome::Success {
                let out_trade_no: String = row.try_get("out_trade_no")?;
                sqlx::query(
                    "UPDATE anomalies SET resolved_at = $1, resolution = $2 WHERE out_trade_no = $3                      AND kind IN ('PAID_AFTER_CLOSE', 'DUPLICATE_PAYMENT') AND resolved_at IS NULL",
                )
                .bind(now)
                .bind(format!("refunded automatically ({out_refund_no})"))
                .bind(&out_trade_no)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            return Ok(true);
        }
        match outcome {
            RefundOutcome::Success => {
                let o = sqlx::query(
                    "UPDATE orders SET refunded_fen = refunded_fen + $1, updated_at = $2, \
                     state = CASE WHEN refunded_fen + $1 >= payable_fen THEN 'REFUNDED' ELSE 'PARTIALLY_REFUNDED' END \
                     WHERE order_no = $3 AND refunded_fen + $1 <= payable_fen RETURNING state, coupon_code",
                )
                .bind(amount)
                .bind(now)
                .bind(&order_no)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| StoreError::Invalid(format!("refund {out_refund_no} would exceed its order's amount")))?;
                let state: String = o.try_get("state")?;
                let coupon: Option<String> = o.try_get("coupon_code")?;
                if state == "REFUNDED"
                    && return_coupon
                    && let Some(code) = coupon
                {
                    {
                        sqlx::query(
                            "UPDATE coupons SET state = 'AVAILABLE', order_no = NULL, used_at = NULL, updated_at = $1 \
                             WHERE code = $2 AND state = 'USED' AND (expires_at IS NULL OR expires_at > $1)",
                        )
                        .bind(now)
                        .bind(&code)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                insert_event_tx(&mut tx, "refund.succeeded", Some(&order_no), &payload, now)
                    .await?;
            }
            RefundOutcome::Closed => {
                insert_event_tx(&mut tx, "refund.failed", Some(&order_no), &payload, now).await?;
            }
            RefundOutcome::Abnormal => {
                insert_event_tx(&mut tx, "refund.abnormal", Some(&order_no), &payload, now).await?;
            }
            RefundOutcome::Processing => {}
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Notes a refund's WeChat id and detail without changing its state (e.g. after a transport
    /// failure, to say why it is still PENDING).
    pub async fn note_refund(&self, out_refund_no: &str, detail: &str, now: i64) -> Result<()> {
        sqlx::query("UPDATE refunds SET detail = $1, updated_at = $2 WHERE out_refund_no = $3")
            .bind(detail)
            .bind(now)
            .bind(out_refund_no)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
