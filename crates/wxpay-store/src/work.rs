//! Claiming background work with leases, and the expiry transition.
//!
//! A claim sets `lease_owner`/`lease_until` on rows that are due and not leased (or whose lease
//! expired). On PostgreSQL the candidate rows are locked `FOR UPDATE SKIP LOCKED`, so concurrent
//! claimers never take the same row; SQLite serialises writers, so one statement is enough.

use crate::ops::{decode_attempt_row, decode_order_row, insert_event_tx};
use crate::{Attempt, Backend, Order, Result, Store};
use serde_json::json;
use sqlx::{AssertSqlSafe, Row};

impl Store {
    fn skip_locked(&self) -> &'static str {
        match self.backend() {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        }
    }

    /// Claims up to `limit` PENDING attempts whose next query is due.
    pub async fn claim_due_attempts(
        &self,
        owner: &str,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<Attempt>> {
        let sql = format!(
            "UPDATE payment_attempts SET lease_owner = $1, lease_until = $2 WHERE out_trade_no IN (\
             SELECT out_trade_no FROM payment_attempts WHERE state = 'PENDING' AND next_query_at IS NOT NULL \
             AND next_query_at <= $3 AND (lease_until IS NULL OR lease_until < $3) \
             ORDER BY next_query_at LIMIT $4{}) RETURNING {}",
            self.skip_locked(),
            crate::ops::ATTEMPT_COLS
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(owner)
            .bind(now + lease_ms)
            .bind(now)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(decode_attempt_row).collect()
    }

    /// Records a query of a claimed attempt and when to ask next (`None`: stop asking), and
    /// releases the lease.
    pub async fn reschedule_attempt(
        &self,
        out_trade_no: &str,
        owner: &str,
        next_query_at: Option<i64>,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE payment_attempts SET query_count = query_count + 1, next_query_at = $1, updated_at = $2, \
             lease_owner = NULL, lease_until = NULL WHERE out_trade_no = $3 AND lease_owner = $4",
        )
        .bind(next_query_at)
        .bind(now)
        .bind(out_trade_no)
        .bind(owner)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// WeChat says this attempt is closed (or never existed): it can no longer be paid.
    pub async fn close_attempt(
        &self,
        out_trade_no: &str,
        state: crate::AttemptState,
        now: i64,
    ) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE payment_attempts SET state = $1, next_query_at = NULL, lease_owner = NULL, lease_until = NULL, \
             updated_at = $2 WHERE out_trade_no = $3 AND state = 'PENDING'",
        )
        .bind(state.as_str())
        .bind(now)
        .bind(out_trade_no)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Claims up to `limit` open orders (CREATED / PAYING) past their expiry whose close is due.
    pub async fn claim_expired_orders(
        &self,
        owner: &str,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<Order>> {
        let sql = format!(
            "UPDATE orders SET lease_owner = $1, lease_until = $2 WHERE order_no IN (\
             SELECT order_no FROM orders WHERE state IN ('CREATED', 'PAYING') AND expires_at <= $3 \
             AND (next_close_at IS NULL OR next_close_at <= $3) AND (lease_until IS NULL OR lease_until < $3) \
             ORDER BY expires_at LIMIT $4{}) RETURNING {}",
            self.skip_locked(),
            crate::ops::ORDER_COLS
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(owner)
            .bind(now + lease_ms)
            .bind(now)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(decode_order_row).collect()
    }

    /// The close did not go through yet: try again at `next_close_at`, release the lease.
    pub async fn defer_close(
        &self,
        order_no: &str,
        owner: &str,
        next_close_at: i64,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE orders SET close_attempts = close_attempts + 1, next_close_at = $1, updated_at = $2, \
             lease_owner = NULL, lease_until = NULL WHERE order_no = $3 AND lease_owner = $4",
        )
        .bind(next_close_at)
        .bind(now)
        .bind(order_no)
        .bind(owner)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Closes an order locally — call only after WeChat confirmed every attempt closed. In one
    /// transaction: the order CLOSED (guarded), its pending attempts CLOSED, its coupon released,
    /// `order.closed` emitted. Returns false when the order was no longer open (e.g. just paid).
    pub async fn close_order(&self, order_no: &str, now: i64) -> Result<bool> {
        let mut tx = self.pool().begin().await?;
        let row = sqlx::query(
            "UPDATE orders SET state = 'CLOSED', closed_at = $1, updated_at = $1, lease_owner = NULL, \
             lease_until = NULL, next_close_at = NULL WHERE order_no = $2 AND state IN ('CREATED', 'PAYING') \
             RETURNING coupon_code",
        )
        .bind(now)
        .bind(order_no)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.commit().await?;
            return Ok(false);
        };
        let coupon: Option<String> = row.try_get("coupon_code")?;
        sqlx::query(
            "UPDATE payment_attempts SET state = 'CLOSED', next_query_at = NULL, updated_at = $1 \
             WHERE order_no = $2 AND state = 'PENDING'",
        )
        .bind(now)
        .bind(order_no)
        .execute(&mut *tx)
        .await?;
        if let Some(code) = &coupon {
            sqlx::query(
                "UPDATE coupons SET state = 'AVAILABLE', order_no = NULL, updated_at = $1 \
                 WHERE code = $2 AND state = 'RESERVED' AND order_no = $3",
            )
            .bind(now)
            .bind(code)
            .bind(order_no)
            .execute(&mut *tx)
            .await?;
        }
        let payload = json!({"order_no": order_no, "coupon_released": coupon, "closed_at": now});
        insert_event_tx(&mut tx, "order.closed", Some(order_no), &payload, now).await?;
        tx.commit().await?;
        Ok(true)
    }
}

impl Store {
    /// Claims up to `limit` unfinished refunds (PENDING: not yet accepted by WeChat; PROCESSING)
    /// whose next look is due.
    pub async fn claim_due_refunds(
        &self,
        owner: &str,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<crate::Refund>> {
        let sql = format!(
            "UPDATE refunds SET lease_owner = $1, lease_until = $2 WHERE out_refund_no IN (\
             SELECT out_refund_no FROM refunds WHERE state IN ('PENDING', 'PROCESSING') \
             AND next_query_at IS NOT NULL AND next_query_at <= $3 AND (lease_until IS NULL OR lease_until < $3) \
             ORDER BY next_query_at LIMIT $4{}) RETURNING out_refund_no",
            self.skip_locked()
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(owner)
            .bind(now + lease_ms)
            .bind(now)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let no: String = r.try_get("out_refund_no")?;
            if let Some(refund) = self.get_refund(&no).await? {
                out.push(refund);
            }
        }
        Ok(out)
    }

    /// When to look at a claimed refund again (`None`: stop), releasing the lease.
    pub async fn reschedule_refund(
        &self,
        out_refund_no: &str,
        owner: &str,
        next_query_at: Option<i64>,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE refunds SET next_query_at = $1, updated_at = $2, lease_owner = NULL, lease_until = NULL \
             WHERE out_refund_no = $3 AND lease_owner = $4",
        )
        .bind(next_query_at)
        .bind(now)
        .bind(out_refund_no)
        .bind(owner)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
