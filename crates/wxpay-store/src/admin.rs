//! Read models and review actions of the admin console: order search with filters and paging,
//! the pieces of one order's timeline, the anomalies queue (anomalies plus notifications that
//! failed verification or named no payment of ours) with resolve actions, and per-minute
//! payment buckets for the chart.
//!
//! Written once for both databases: `$n` placeholders, integer division of the millisecond
//! timestamps for buckets (`BIGINT / BIGINT` truncates on both), `CAST(SUM(..) AS BIGINT)` so
//! PostgreSQL does not answer with `NUMERIC`.

use crate::ops::{ORDER_COLS, decode_order_row};
use crate::{Anomaly, Backend, Order, OrderState, Receipt, Result, Store, StoreError};
use sqlx::{AssertSqlSafe, Row};

/// The largest page the console asks for.
pub const ADMIN_MAX_PAGE: i64 = 500;

/// Which orders the operator wants to see, newest first.
#[derive(Debug, Clone, Default)]
pub struct OrderSearch {
    pub state: Option<OrderState>,
    pub merchant_id: Option<String>,
    pub user_id: Option<String>,
    /// An order_no, an attempt's out_trade_no or WeChat's transaction_id (exact).
    pub text: Option<String>,
    /// `created_at >= from_ms`.
    pub from_ms: Option<i64>,
    /// `created_at < to_ms`.
    pub to_ms: Option<i64>,
    pub offset: i64,
    pub limit: i64,
}

/// One page of orders and how many match in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderPage {
    pub orders: Vec<Order>,
    pub total: i64,
}

/// Kinds of review items that come from receipts rather than the anomalies table. Resolving one
/// stores an anomaly row of this kind (linked by `receipt_id`) that is resolved at once.
pub const REJECTED_NOTIFICATION: &str = "REJECTED_NOTIFICATION";
pub const UNKNOWN_PAYMENT: &str = "UNKNOWN_PAYMENT";

/// An entry of the anomalies queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReviewItem {
    /// A row of `anomalies` (AMOUNT_MISMATCH, PAID_AFTER_CLOSE, DUPLICATE_PAYMENT, or a
    /// reviewed notification).
    Anomaly(Anomaly),
    /// A notification not yet reviewed that failed verification (forged or corrupted) or, verified,
    /// named an out_trade_no we do not know. `kind` is [`REJECTED_NOTIFICATION`] or
    /// [`UNKNOWN_PAYMENT`].
    Receipt {
        kind: &'static str,
        receipt: Receipt,
    },
}

impl ReviewItem {
    pub fn at(&self) -> i64 {
        match self {
            ReviewItem::Anomaly(a) => a.created_at,
            ReviewItem::Receipt { receipt, .. } => receipt.received_at,
        }
    }
}

/// One minute of the payments chart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MinuteBucket {
    /// Start of the minute, unix ms.
    pub minute_ms: i64,
    /// Orders that became PAID in this minute.
    pub paid: i64,
    /// Their payable amounts, fen.
    pub paid_fen: i64,
    /// Payment attempts opened in this minute.
    pub attempts: i64,
    /// Of those, how many have SUCCEEDED by now.
    pub succeeded: i64,
}

const RECEIPT_COLS: &str = "id, merchant_id, kind, received_at, remote_addr, query, headers_json, \
    body, body_truncated, verified, outcome, detail, out_trade_no, transaction_id";
const ANOMALY_COLS: &str =
    "id, kind, order_no, out_trade_no, receipt_id, detail, created_at, resolved_at, resolution";

/// Receipts that belong in the review queue: unverified ones and verified payments for an
/// unknown out_trade_no.
const REVIEWABLE_RECEIPT: &str = "(verified = 0 OR outcome = 'unknown_out_trade_no')";

fn review_kind(r: &Receipt) -> &'static str {
    if r.verified {
        UNKNOWN_PAYMENT
    } else {
        REJECTED_NOTIFICATION
    }
}

/// A bound value of a dynamically built query.
enum Arg {
    Text(String),
    Int(i64),
}

impl Store {
    /// Orders matching `s`, newest first, with the number of all matches.
    pub async fn admin_search_orders(&self, s: &OrderSearch) -> Result<OrderPage> {
        let mut clauses: Vec<String> = Vec::new();
        let mut args: Vec<Arg> = Vec::new();
        let mut push = |clause: &dyn Fn(usize) -> String, arg: Arg| {
            args.push(arg);
            clauses.push(clause(args.len()));
        };
        if let Some(st) = s.state {
            push(&|n| format!("state = ${n}"), Arg::Text(st.as_str().into()));
        }
        if let Some(m) = s.merchant_id.as_deref().filter(|m| !m.is_empty()) {
            push(&|n| format!("merchant_id = ${n}"), Arg::Text(m.into()));
        }
        if let Some(u) = s.user_id.as_deref().filter(|u| !u.is_empty()) {
            push(&|n| format!("user_id = ${n}"), Arg::Text(u.into()));
        }
        if let Some(t) = s.text.as_deref().filter(|t| !t.is_empty()) {
            push(
                &|n| {
                    format!(
                        "(order_no = ${n} OR order_no IN (SELECT order_no FROM payment_attempts \
                         WHERE out_trade_no = ${n} OR transaction_id = ${n}))"
                    )
                },
                Arg::Text(t.into()),
            );
        }
        if let Some(f) = s.from_ms {
            push(&|n| format!("created_at >= ${n}"), Arg::Int(f));
        }
        if let Some(t) = s.to_ms {
            push(&|n| format!("created_at < ${n}"), Arg::Int(t));
        }
        let filter = if clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", clauses.join(" AND "))
        };
        // `$n` may appear more than once in a clause; SQLite and PostgreSQL both bind it once.
        let bind_all = |sql: String, extra: &[i64]| {
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for a in &args {
                q = match a {
                    Arg::Text(t) => q.bind(t.clone()),
                    Arg::Int(i) => q.bind(*i),
                };
            }
            for i in extra {
                q = q.bind(*i);
            }
            q
        };
        let total: i64 = bind_all(format!("SELECT COUNT(*) AS n FROM orders{filter}"), &[])
            .fetch_one(self.pool())
            .await?
            .try_get("n")?;
        let n = args.len();
        let limit = s.limit.clamp(1, ADMIN_MAX_PAGE);
        let sql = format!(
            "SELECT {ORDER_COLS} FROM orders{filter} ORDER BY created_at DESC, order_no DESC \
             LIMIT ${} OFFSET ${}",
            n + 1,
            n + 2
        );
        let rows = bind_all(sql, &[limit, s.offset.max(0)])
            .fetch_all(self.pool())
            .await?;
        let orders = rows.iter().map(decode_order_row).collect::<Result<_>>()?;
        Ok(OrderPage { orders, total })
    }

    /// How many orders are in each state.
    pub async fn admin_order_state_counts(&self) -> Result<Vec<(String, i64)>> {
        let rows =
            sqlx::query("SELECT state, COUNT(*) AS n FROM orders GROUP BY state ORDER BY state")
                .fetch_all(self.pool())
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("state")?, r.try_get("n")?)))
            .collect()
    }

    /// Every notification about one of the order's attempts (payments and refunds), in order.
    pub async fn admin_order_receipts(&self, order_no: &str) -> Result<Vec<Receipt>> {
        let sql = format!(
            "SELECT {RECEIPT_COLS} FROM receipts WHERE out_trade_no IN \
             (SELECT out_trade_no FROM payment_attempts WHERE order_no = $1) ORDER BY id"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(order_no)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(crate::ops::decode_receipt).collect()
    }

    pub async fn admin_get_receipt(&self, id: i64) -> Result<Option<Receipt>> {
        let sql = format!("SELECT {RECEIPT_COLS} FROM receipts WHERE id = $1");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(crate::ops::decode_receipt).transpose()
    }

    /// Whether a table exists, by a cheap query (for sections that depend on a later migration).
    pub async fn admin_table_exists(&self, table: &str) -> Result<bool> {
        if !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(StoreError::Invalid(format!("bad table name {table:?}")));
        }
        let sql = match self.backend() {
            Backend::Sqlite => {
                "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = $1"
            }
            Backend::Postgres => {
                "SELECT COUNT(*) AS n FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = $1"
            }
        };
        let n: i64 = sqlx::query(sql)
            .bind(table)
            .fetch_one(self.pool())
            .await?
            .try_get("n")?;
        Ok(n > 0)
    }

    /// The anomalies queue, newest first: open anomalies and not yet reviewed notifications;
    /// with `include_resolved`, resolved anomalies too. At most `limit` of each source.
    pub async fn admin_review_queue(
        &self,
        include_resolved: bool,
        limit: i64,
    ) -> Result<Vec<ReviewItem>> {
        let limit = limit.clamp(1, ADMIN_MAX_PAGE);
        let sql = format!(
            "SELECT {ANOMALY_COLS} FROM anomalies{} ORDER BY created_at DESC, id DESC LIMIT $1",
            if include_resolved {
                ""
            } else {
                " WHERE resolved_at IS NULL"
            }
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        let mut items = rows
            .iter()
            .map(|r| crate::ops::decode_anomaly(r).map(ReviewItem::Anomaly))
            .collect::<Result<Vec<_>>>()?;
        let sql = format!(
            "SELECT {RECEIPT_COLS} FROM receipts r WHERE {REVIEWABLE_RECEIPT} AND NOT EXISTS \
             (SELECT 1 FROM anomalies a WHERE a.receipt_id = r.id) ORDER BY id DESC LIMIT $1"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        for r in &rows {
            let receipt = crate::ops::decode_receipt(r)?;
            items.push(ReviewItem::Receipt {
                kind: review_kind(&receipt),
                receipt,
            });
        }
        items.sort_by_key(|i| std::cmp::Reverse(i.at()));
        Ok(items)
    }

    /// How many items wait for review.
    pub async fn admin_open_review_count(&self) -> Result<i64> {
        let sql = format!(
            "SELECT (SELECT COUNT(*) FROM anomalies WHERE resolved_at IS NULL) + \
             (SELECT COUNT(*) FROM receipts r WHERE {REVIEWABLE_RECEIPT} AND NOT EXISTS \
             (SELECT 1 FROM anomalies a WHERE a.receipt_id = r.id)) AS n"
        );
        let n: i64 = sqlx::query(AssertSqlSafe(sql))
            .fetch_one(self.pool())
            .await?
            .try_get("n")?;
        Ok(n)
    }

    pub async fn admin_get_anomaly(&self, id: i64) -> Result<Option<Anomaly>> {
        let sql = format!("SELECT {ANOMALY_COLS} FROM anomalies WHERE id = $1");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(crate::ops::decode_anomaly).transpose()
    }

    /// Marks an open anomaly resolved with the operator's note. `Ok(false)` when it was already
    /// resolved (the first resolution stands); `NotFound` when there is no such anomaly.
    pub async fn admin_resolve_anomaly(&self, id: i64, resolution: &str, now: i64) -> Result<bool> {
        let resolution = resolution.trim();
        if resolution.is_empty() {
            return Err(StoreError::Invalid("a resolution note is required".into()));
        }
        let n = sqlx::query(
            "UPDATE anomalies SET resolved_at = $1, resolution = $2 \
             WHERE id = $3 AND resolved_at IS NULL",
        )
        .bind(now)
        .bind(resolution)
        .bind(id)
        .execute(self.pool())
        .await?
        .rows_affected();
        if n == 1 {
            return Ok(true);
        }
        match self.admin_get_anomaly(id).await? {
            Some(_) => Ok(false),
            None => Err(StoreError::NotFound(format!("anomaly {id}"))),
        }
    }

    /// Records the review of a notification in the queue: an anomaly row linked to the receipt,
    /// resolved at once. One per receipt: `Ok(None)` when it had been reviewed already;
    /// `NotFound` when the receipt does not exist or is not one that needs review.
    pub async fn admin_resolve_receipt(
        &self,
        receipt_id: i64,
        resolution: &str,
        now: i64,
    ) -> Result<Option<i64>> {
        let resolution = resolution.trim();
        if resolution.is_empty() {
            return Err(StoreError::Invalid("a resolution note is required".into()));
        }
        let mut tx = self.pool().begin().await?;
        let lock = match self.backend() {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "SELECT {RECEIPT_COLS} FROM receipts WHERE id = $1 AND {REVIEWABLE_RECEIPT}{lock}"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(receipt_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(receipt) = row.as_ref().map(crate::ops::decode_receipt).transpose()? else {
            return Err(StoreError::NotFound(format!("receipt {receipt_id}")));
        };
        let seen: i64 = sqlx::query("SELECT COUNT(*) AS n FROM anomalies WHERE receipt_id = $1")
            .bind(receipt_id)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if seen > 0 {
            return Ok(None);
        }
        let order_no: Option<String> = match &receipt.out_trade_no {
            Some(o) => sqlx::query("SELECT order_no FROM payment_attempts WHERE out_trade_no = $1")
                .bind(o)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get("order_no"))
                .transpose()?,
            None => None,
        };
        let detail = format!(
            "{} notification from {} ({}): {}",
            receipt.merchant_id,
            receipt.remote_addr.as_deref().unwrap_or("unknown address"),
            receipt.outcome,
            receipt.detail.as_deref().unwrap_or("no detail")
        );
        let id: i64 = sqlx::query(
            "INSERT INTO anomalies (kind, order_no, out_trade_no, receipt_id, detail, created_at, \
             resolved_at, resolution) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(review_kind(&receipt))
        .bind(order_no)
        .bind(&receipt.out_trade_no)
        .bind(receipt_id)
        .bind(detail)
        .bind(receipt.received_at)
        .bind(now)
        .bind(resolution)
        .fetch_one(&mut *tx)
        .await?
        .try_get("id")?;
        tx.commit().await?;
        Ok(Some(id))
    }

    /// Minute buckets of `[from_ms, to_ms)`: orders paid per minute (by `paid_at`) and payment
    /// attempts opened per minute with how many of them succeeded. Only minutes with data are
    /// returned, in order; `from_ms` and `to_ms` should be whole minutes.
    pub async fn admin_minute_buckets(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<MinuteBucket>> {
        let paid = sqlx::query(
            "SELECT paid_at / 60000 AS m, COUNT(*) AS n, CAST(SUM(payable_fen) AS BIGINT) AS fen \
             FROM orders WHERE paid_at IS NOT NULL AND paid_at >= $1 AND paid_at < $2 \
             GROUP BY paid_at / 60000 ORDER BY m",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(self.pool())
        .await?;
        let attempts = sqlx::query(
            "SELECT created_at / 60000 AS m, COUNT(*) AS n, \
             CAST(SUM(CASE WHEN state = 'SUCCEEDED' THEN 1 ELSE 0 END) AS BIGINT) AS ok \
             FROM payment_attempts WHERE created_at >= $1 AND created_at < $2 \
             GROUP BY created_at / 60000 ORDER BY m",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(self.pool())
        .await?;
        let mut out: std::collections::BTreeMap<i64, MinuteBucket> = Default::default();
        for r in &paid {
            let m: i64 = r.try_get("m")?;
            let b = out.entry(m).or_default();
            b.minute_ms = m * 60_000;
            b.paid = r.try_get("n")?;
            b.paid_fen = r.try_get("fen")?;
        }
        for r in &attempts {
            let m: i64 = r.try_get("m")?;
            let b = out.entry(m).or_default();
            b.minute_ms = m * 60_000;
            b.attempts = r.try_get("n")?;
            b.succeeded = r.try_get("ok")?;
        }
        Ok(out.into_values().collect())
    }
}
