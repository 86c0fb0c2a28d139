//! Business webhooks: fanning outbox events out to endpoints, and the life of each delivery.
//!
//! - **Fan-out.** Each endpoint has a cursor row (`webhook_cursors`): the highest outbox `seq`
//!   already fanned out to it. One transaction reads the next events after the cursor, inserts a
//!   delivery for each one the endpoint subscribes to (`ON CONFLICT DO NOTHING`) and advances the
//!   cursor with a compare-and-set; a concurrent fan-out that lost the race rolls back. On
//!   PostgreSQL the cursor row is also taken `FOR UPDATE SKIP LOCKED`, so processes do not even
//!   duplicate the work. A new endpoint starts at the newest event when it is first seen: it
//!   receives what happens from then on (older events can be sent with [`Store::redeliver_event`]).
//! - **Gaps.** PostgreSQL hands out `seq` values at insert time but transactions commit in any
//!   order, so event 11 may be visible while event 10 is still being committed. The fan-out stops
//!   at such a hole. When it has not filled after [`GAP_SETTLE_MS`], a `SHARE` lock on the outbox
//!   (bounded wait) proves that no transaction inserting events is still running, and the hole —
//!   a rolled-back transaction — is stepped over; failing that, it is stepped over once the event
//!   after it is older than [`GAP_GRACE_MS`]. SQLite commits in `seq` order: no such holes.
//! - **Claiming.** Due deliveries are leased row by row (`FOR UPDATE SKIP LOCKED` on PostgreSQL).
//!   A delivery is due only when no earlier event (lower `seq`) of the same order is still
//!   PENDING for the same endpoint: events of one order arrive in order.
//! - **Outcome.** Guarded by the lease: DELIVERED, rescheduled, or DEAD.

use crate::{Backend, Event, Result, Store, StoreError};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};
use std::fmt;
use std::str::FromStr;

/// Every event type the outbox carries (what an endpoint may subscribe to).
pub const WEBHOOK_EVENT_TYPES: &[&str] = &[
    "order.paid",
    "order.closed",
    "order.paid_after_close",
    "payment.duplicate",
    "refund.succeeded",
    "refund.failed",
    "refund.abnormal",
];

/// How long a hole in the outbox sequence may be waited for before it is taken to be a
/// rolled-back transaction (PostgreSQL only): measured on the `created_at` of the event after it.
pub const GAP_GRACE_MS: i64 = 120_000;

/// A hole younger than this is simply waited for; an older one is checked with the database
/// (PostgreSQL): if nothing that could fill it is still running, the fan-out steps over it.
pub const GAP_SETTLE_MS: i64 = 1_000;

/// `last_error` is cut to this many bytes (on a character boundary).
pub const LAST_ERROR_CAP: usize = 512;

/// PENDING → DELIVERED | DEAD (and back to PENDING when an operator redelivers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum DeliveryState {
    #[serde(rename = "PENDING")]
    Pending,
    #[serde(rename = "DELIVERED")]
    Delivered,
    #[serde(rename = "DEAD")]
    Dead,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "PENDING",
            DeliveryState::Delivered => "DELIVERED",
            DeliveryState::Dead => "DEAD",
        }
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeliveryState {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "PENDING" => Ok(DeliveryState::Pending),
            "DELIVERED" => Ok(DeliveryState::Delivered),
            "DEAD" => Ok(DeliveryState::Dead),
            other => Err(StoreError::Invalid(format!(
                "unknown delivery state {other:?}"
            ))),
        }
    }
}

/// One event for one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookDelivery {
    pub id: i64,
    pub event_seq: i64,
    pub event_id: String,
    pub event_type: String,
    pub order_no: Option<String>,
    /// The endpoint's URL, as configured.
    pub endpoint: String,
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: i64,
    pub next_attempt_at: i64,
    /// HTTP status of the last attempt (none: no answer, e.g. a timeout).
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub delivered_at: Option<i64>,
}

/// A configured endpoint, as the store needs it: its URL (the endpoint's identity) and the event
/// types it subscribes to (empty: every event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEndpoint {
    pub url: String,
    pub events: Vec<String>,
}

impl WebhookEndpoint {
    pub fn wants(&self, event_type: &str) -> bool {
        self.events.is_empty() || self.events.iter().any(|e| e == event_type)
    }
}

/// What became of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A 2xx answer.
    Delivered,
    /// Failed; try again at this time (unix ms).
    RetryAt(i64),
    /// Failed, and the retry schedule is used up.
    Dead,
}

/// Which deliveries the admin wants to see (newest first).
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub state: Option<DeliveryState>,
    pub event_id: Option<String>,
    pub order_no: Option<String>,
    /// Only deliveries with an id below this one (paging).
    pub before_id: Option<i64>,
    pub limit: i64,
}

/// What one fan-out round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FanOut {
    /// Events the cursors stepped over.
    pub events: u64,
    /// Deliveries created.
    pub deliveries: u64,
}

/// One endpoint's fan-out round.
#[derive(Debug, Default)]
struct OneFanOut {
    done: FanOut,
    /// Stopped at a hole in the sequence; the `created_at` of the event after it.
    blocked_since: Option<i64>,
}

const DELIVERY_COLS: &str = "id, event_seq, event_id, event_type, order_no, endpoint, state, \
    attempts, next_attempt_at, last_status, last_error, lease_owner, lease_until, created_at, \
    updated_at, delivered_at";

fn decode_delivery(r: &AnyRow) -> Result<WebhookDelivery> {
    Ok(WebhookDelivery {
        id: r.try_get("id")?,
        event_seq: r.try_get("event_seq")?,
        event_id: r.try_get("event_id")?,
        event_type: r.try_get("event_type")?,
        order_no: r.try_get("order_no")?,
        endpoint: r.try_get("endpoint")?,
        state: r.try_get::<String, _>("state")?.parse()?,
        attempts: r.try_get("attempts")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        last_status: r.try_get("last_status")?,
        last_error: r.try_get("last_error")?,
        lease_owner: r.try_get("lease_owner")?,
        lease_until: r.try_get("lease_until")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        delivered_at: r.try_get("delivered_at")?,
    })
}

/// `s` cut to at most `cap` bytes, on a character boundary.
pub fn truncate_utf8(s: &str, cap: usize) -> &str {
    if s.len() <= cap {
        return s;
    }
    let mut end = cap;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `$first, $first+1, ...` for `n` values.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

const INSERT_DELIVERY: &str = "INSERT INTO webhook_deliveries (event_seq, event_id, event_type, \
    order_no, endpoint, state, attempts, next_attempt_at, created_at, updated_at) \
    VALUES ($1, $2, $3, $4, $5, 'PENDING', 0, $6, $6, $6) ON CONFLICT (event_id, endpoint) DO NOTHING";

impl Store {
    fn lock_skip_locked(&self) -> &'static str {
        match self.backend() {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        }
    }

    /// Creates the cursor of every endpoint not seen before, at the newest event: a new endpoint
    /// receives the events that happen from now on. Idempotent; safe with several processes.
    pub async fn register_webhook_endpoints(
        &self,
        endpoints: &[WebhookEndpoint],
        now: i64,
    ) -> Result<()> {
        for e in endpoints {
            // (`WHERE true`: SQLite needs it to tell the SELECT from the upsert clause.)
            sqlx::query(
                "INSERT INTO webhook_cursors (endpoint, last_seq, created_at, updated_at) \
                 SELECT $1, COALESCE(MAX(seq), 0), $2, $2 FROM outbox_events WHERE true \
                 ON CONFLICT (endpoint) DO NOTHING",
            )
            .bind(&e.url)
            .bind(now)
            .execute(self.pool())
            .await?;
        }
        Ok(())
    }

    /// Fans the next (up to `batch`) outbox events out to each endpoint: one transaction per
    /// endpoint inserts the deliveries and advances its cursor (compare-and-set).
    pub async fn fan_out_webhooks(
        &self,
        endpoints: &[WebhookEndpoint],
        now: i64,
        batch: i64,
    ) -> Result<FanOut> {
        self.register_webhook_endpoints(endpoints, now).await?;
        let mut total = FanOut::default();
        // Every seq up to this one is known to be committed or gone (PostgreSQL, see below).
        let mut settled: Option<i64> = None;
        for e in endpoints {
            let mut one = self
                .fan_out_one(e, now, batch, settled.unwrap_or(0))
                .await?;
            if let Some(since) = one.blocked_since
                && settled.is_none()
                && now - since >= GAP_SETTLE_MS
            {
                // A hole that has not filled for a while: ask the database whether anything
                // that could fill it is still running; if not, it never will be filled.
                match self.settled_outbox_seq().await {
                    Ok(h) => {
                        settled = Some(h);
                        let more = self.fan_out_one(e, now, batch, h).await?;
                        one.done.events += more.done.events;
                        one.done.deliveries += more.done.deliveries;
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, "outbox hole not settled yet");
                    }
                }
            }
            total.events += one.done.events;
            total.deliveries += one.done.deliveries;
        }
        Ok(total)
    }

    /// PostgreSQL: the highest outbox `seq` below which no event can appear any more. Taking
    /// `SHARE` on `outbox_events` waits (briefly, bounded) for every transaction that is inserting
    /// events to end; while it is held none can start, so every seq handed out so far belongs to a
    /// finished transaction: a hole below the newest event is a rollback, for good.
    async fn settled_outbox_seq(&self) -> Result<i64> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("SELECT set_config('lock_timeout', '200ms', true)")
            .execute(&mut *tx)
            .await?;
        sqlx::query("LOCK TABLE outbox_events IN SHARE MODE")
            .execute(&mut *tx)
            .await?;
        let h: i64 = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS h FROM outbox_events")
            .fetch_one(&mut *tx)
            .await?
            .try_get("h")?;
        tx.commit().await?;
        Ok(h)
    }

    async fn fan_out_one(
        &self,
        endpoint: &WebhookEndpoint,
        now: i64,
        batch: i64,
        settled_through: i64,
    ) -> Result<OneFanOut> {
        let mut tx = self.pool().begin().await?;
        let sql = format!(
            "SELECT last_seq FROM webhook_cursors WHERE endpoint = $1{}",
            self.lock_skip_locked()
        );
        let Some(row) = sqlx::query(AssertSqlSafe(sql))
            .bind(&endpoint.url)
            .fetch_optional(&mut *tx)
            .await?
        else {
            // Another process holds the cursor right now (or it was never registered).
            return Ok(OneFanOut::default());
        };
        let last: i64 = row.try_get("last_seq")?;
        let rows = sqlx::query(
            "SELECT seq, id, event_type, order_no, created_at FROM outbox_events \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(last)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
        let mut cursor = last;
        let mut done = FanOut::default();
        let mut blocked_since = None;
        for r in &rows {
            let seq: i64 = r.try_get("seq")?;
            let created_at: i64 = r.try_get("created_at")?;
            if seq != cursor + 1
                && self.backend() == Backend::Postgres
                && seq > settled_through
                && created_at > now - GAP_GRACE_MS
            {
                // A hole: an earlier event may still be committing. Come back later.
                blocked_since = Some(created_at);
                break;
            }
            let event_type: String = r.try_get("event_type")?;
            if endpoint.wants(&event_type) {
                let id: String = r.try_get("id")?;
                let order_no: Option<String> = r.try_get("order_no")?;
                done.deliveries += sqlx::query(INSERT_DELIVERY)
                    .bind(seq)
                    .bind(&id)
                    .bind(&event_type)
                    .bind(&order_no)
                    .bind(&endpoint.url)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            cursor = seq;
            done.events += 1;
        }
        if cursor == last {
            tx.commit().await?;
            return Ok(OneFanOut {
                done,
                blocked_since,
            });
        }
        let moved = sqlx::query(
            "UPDATE webhook_cursors SET last_seq = $1, updated_at = $2 \
             WHERE endpoint = $3 AND last_seq = $4",
        )
        .bind(cursor)
        .bind(now)
        .bind(&endpoint.url)
        .bind(last)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved != 1 {
            // Someone else fanned these events out first; theirs stands.
            tx.rollback().await?;
            return Ok(OneFanOut::default());
        }
        tx.commit().await?;
        Ok(OneFanOut {
            done,
            blocked_since,
        })
    }

    /// Leases up to `limit` due deliveries to the given endpoints for `owner`. Due: PENDING, its
    /// time has come, not leased (or the lease expired), and no earlier event of the same order
    /// is still PENDING for the same endpoint.
    pub async fn claim_due_webhooks(
        &self,
        owner: &str,
        endpoints: &[String],
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<WebhookDelivery>> {
        if endpoints.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "UPDATE webhook_deliveries SET lease_owner = $1, lease_until = $2 WHERE id IN (\
             SELECT d.id FROM webhook_deliveries d WHERE d.state = 'PENDING' AND d.next_attempt_at <= $3 \
             AND (d.lease_until IS NULL OR d.lease_until < $3) AND d.endpoint IN ({}) \
             AND (d.order_no IS NULL OR NOT EXISTS (SELECT 1 FROM webhook_deliveries p \
             WHERE p.endpoint = d.endpoint AND p.order_no = d.order_no AND p.state = 'PENDING' \
             AND p.event_seq < d.event_seq)) \
             ORDER BY d.next_attempt_at, d.event_seq LIMIT $4{}) RETURNING {DELIVERY_COLS}",
            placeholders(5, endpoints.len()),
            self.lock_skip_locked(),
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(owner)
            .bind(now + lease_ms)
            .bind(now)
            .bind(limit);
        for e in endpoints {
            q = q.bind(e);
        }
        let rows = q.fetch_all(self.pool()).await?;
        let mut out = rows
            .iter()
            .map(decode_delivery)
            .collect::<Result<Vec<_>>>()?;
        out.sort_by_key(|d| (d.next_attempt_at, d.event_seq));
        Ok(out)
    }

    /// Records one attempt of a delivery leased by `owner` and releases the lease. Returns false
    /// when the lease was no longer ours (it expired and was taken, or an operator redelivered):
    /// nothing is changed then.
    pub async fn record_webhook_attempt(
        &self,
        id: i64,
        owner: &str,
        outcome: AttemptOutcome,
        last_status: Option<i64>,
        last_error: Option<&str>,
        now: i64,
    ) -> Result<bool> {
        let (state, next_at, delivered_at) = match outcome {
            AttemptOutcome::Delivered => (DeliveryState::Delivered, None, Some(now)),
            AttemptOutcome::RetryAt(at) => (DeliveryState::Pending, Some(at), None),
            AttemptOutcome::Dead => (DeliveryState::Dead, None, None),
        };
        let n = sqlx::query(
            "UPDATE webhook_deliveries SET state = $1, attempts = attempts + 1, \
             next_attempt_at = COALESCE($2, next_attempt_at), last_status = $3, last_error = $4, \
             delivered_at = COALESCE($5, delivered_at), updated_at = $6, lease_owner = NULL, \
             lease_until = NULL WHERE id = $7 AND lease_owner = $8 AND state = 'PENDING'",
        )
        .bind(state.as_str())
        .bind(next_at)
        .bind(last_status)
        .bind(last_error.map(|e| truncate_utf8(e, LAST_ERROR_CAP).to_string()))
        .bind(delivered_at)
        .bind(now)
        .bind(id)
        .bind(owner)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Deliveries, newest first.
    pub async fn list_webhook_deliveries(
        &self,
        filter: &DeliveryFilter,
    ) -> Result<Vec<WebhookDelivery>> {
        let mut clauses = Vec::new();
        let mut n = 1;
        let mut next = || {
            let p = format!("${n}");
            n += 1;
            p
        };
        if filter.state.is_some() {
            clauses.push(format!("state = {}", next()));
        }
        if filter.event_id.is_some() {
            clauses.push(format!("event_id = {}", next()));
        }
        if filter.order_no.is_some() {
            clauses.push(format!("order_no = {}", next()));
        }
        if filter.before_id.is_some() {
            clauses.push(format!("id < {}", next()));
        }
        let limit = next();
        let sql = format!(
            "SELECT {DELIVERY_COLS} FROM webhook_deliveries{} ORDER BY id DESC LIMIT {limit}",
            if clauses.is_empty() {
                String::new()
            } else {
                format!(" WHERE {}", clauses.join(" AND "))
            }
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        if let Some(s) = filter.state {
            q = q.bind(s.as_str());
        }
        if let Some(e) = &filter.event_id {
            q = q.bind(e.clone());
        }
        if let Some(o) = &filter.order_no {
            q = q.bind(o.clone());
        }
        if let Some(b) = filter.before_id {
            q = q.bind(b);
        }
        let rows = q.bind(filter.limit.max(0)).fetch_all(self.pool()).await?;
        rows.iter().map(decode_delivery).collect()
    }

    /// Every delivery of one event, in id order.
    pub async fn event_deliveries(&self, event_id: &str) -> Result<Vec<WebhookDelivery>> {
        let sql = format!(
            "SELECT {DELIVERY_COLS} FROM webhook_deliveries WHERE event_id = $1 ORDER BY id"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(event_id)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(decode_delivery).collect()
    }

    /// One outbox event by id.
    pub async fn get_event(&self, event_id: &str) -> Result<Option<Event>> {
        let row = sqlx::query(
            "SELECT seq, id, event_type, order_no, payload, created_at FROM outbox_events WHERE id = $1",
        )
        .bind(event_id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(crate::ops::decode_event).transpose()
    }

    /// Sends an event again, in one transaction: every delivery of it to a configured endpoint
    /// goes back to PENDING, due now, with a fresh retry budget; a configured endpoint that
    /// subscribes to its type but never had it (e.g. it was added later) gets a new delivery.
    /// Returns the event's deliveries; `NotFound` when there is no such event.
    pub async fn redeliver_event(
        &self,
        event_id: &str,
        endpoints: &[WebhookEndpoint],
        now: i64,
    ) -> Result<Vec<WebhookDelivery>> {
        let mut tx = self.pool().begin().await?;
        let row = sqlx::query(
            "SELECT seq, id, event_type, order_no, payload, created_at FROM outbox_events WHERE id = $1",
        )
        .bind(event_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(event) = row.as_ref().map(crate::ops::decode_event).transpose()? else {
            return Err(StoreError::NotFound(format!("event {event_id}")));
        };
        for e in endpoints.iter().filter(|e| e.wants(&event.event_type)) {
            sqlx::query(INSERT_DELIVERY)
                .bind(event.seq)
                .bind(&event.id)
                .bind(&event.event_type)
                .bind(&event.order_no)
                .bind(&e.url)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        if !endpoints.is_empty() {
            let sql = format!(
                "UPDATE webhook_deliveries SET state = 'PENDING', attempts = 0, next_attempt_at = $1, \
                 updated_at = $1, lease_owner = NULL, lease_until = NULL \
                 WHERE event_id = $2 AND endpoint IN ({})",
                placeholders(3, endpoints.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(now).bind(&event.id);
            for e in endpoints {
                q = q.bind(&e.url);
            }
            q.execute(&mut *tx).await?;
        }
        let sql = format!(
            "SELECT {DELIVERY_COLS} FROM webhook_deliveries WHERE event_id = $1 ORDER BY id"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(&event.id)
            .fetch_all(&mut *tx)
            .await?;
        let out = rows
            .iter()
            .map(decode_delivery)
            .collect::<Result<Vec<_>>>()?;
        tx.commit().await?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_character_boundaries() {
        assert_eq!(truncate_utf8("abc", 5), "abc");
        assert_eq!(truncate_utf8("支付失败", 4), "支");
        assert_eq!(truncate_utf8("支付失败", 6), "支付");
    }

    #[test]
    fn an_empty_filter_means_every_event() {
        let all = WebhookEndpoint {
            url: "http://x".into(),
            events: vec![],
        };
        let some = WebhookEndpoint {
            url: "http://y".into(),
            events: vec!["order.paid".into()],
        };
        assert!(all.wants("refund.failed"));
        assert!(some.wants("order.paid"));
        assert!(!some.wants("order.closed"));
        assert_eq!(placeholders(3, 2), "$3, $4");
    }

    use crate::ops::insert_event_tx;
    use crate::testing::TestDb;

    const NOW: i64 = 1_800_000_000_000;

    fn ep(url: &str, events: &[&str]) -> WebhookEndpoint {
        WebhookEndpoint {
            url: url.into(),
            events: events.iter().map(|e| e.to_string()).collect(),
        }
    }

    async fn event(store: &Store, event_type: &str, order_no: &str, created_at: i64) -> String {
        let mut tx = store.pool().begin().await.unwrap();
        let id = insert_event_tx(
            &mut tx,
            event_type,
            Some(order_no),
            &serde_json::json!({"order_no": order_no}),
            created_at,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        id
    }

    fn urls(eps: &[WebhookEndpoint]) -> Vec<String> {
        eps.iter().map(|e| e.url.clone()).collect()
    }

    fn keys(ds: &[WebhookDelivery]) -> Vec<(String, String)> {
        let mut v: Vec<_> = ds
            .iter()
            .map(|d| (d.endpoint.clone(), d.event_id.clone()))
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn fan_out_claims_in_order_per_order_and_records_outcomes() {
        for db in TestDb::all().await.unwrap() {
            let s = &db.store;
            let old = event(s, "order.paid", "O0", NOW).await;
            let eps = vec![ep("http://a/", &[]), ep("http://b/", &["refund.succeeded"])];
            s.register_webhook_endpoints(&eps, NOW).await.unwrap();
            let e1 = event(s, "order.paid", "O1", NOW).await;
            let e2 = event(s, "order.paid", "O2", NOW).await;
            let e3 = event(s, "refund.succeeded", "O1", NOW).await;
            let f = s.fan_out_webhooks(&eps, NOW, 100).await.unwrap();
            assert_eq!(
                f,
                FanOut {
                    events: 6,
                    deliveries: 4
                },
                "{}",
                db.backend_name()
            );
            assert_eq!(
                s.fan_out_webhooks(&eps, NOW, 100).await.unwrap(),
                FanOut::default()
            );
            assert!(
                s.event_deliveries(&old).await.unwrap().is_empty(),
                "before registration"
            );
            let u = urls(&eps);
            // O1's refund waits for O1's payment at endpoint a; endpoint b never had the payment.
            let c = s
                .claim_due_webhooks("wa", &u, NOW, 60_000, 10)
                .await
                .unwrap();
            let want = |pairs: &[(&str, &str)]| {
                let mut v: Vec<_> = pairs
                    .iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect();
                v.sort();
                v
            };
            assert_eq!(
                keys(&c),
                want(&[("http://a/", &e1), ("http://a/", &e2), ("http://b/", &e3)])
            );
            assert!(
                s.claim_due_webhooks("wb", &u, NOW, 60_000, 10)
                    .await
                    .unwrap()
                    .is_empty(),
                "leased"
            );
            let a1 = c
                .iter()
                .find(|d| d.event_id == e1 && d.endpoint == "http://a/")
                .unwrap();
            // Only the lease holder records.
            assert!(
                !s.record_webhook_attempt(
                    a1.id,
                    "wb",
                    AttemptOutcome::Delivered,
                    Some(200),
                    None,
                    NOW
                )
                .await
                .unwrap()
            );
            assert!(
                s.record_webhook_attempt(
                    a1.id,
                    "wa",
                    AttemptOutcome::RetryAt(NOW + 1000),
                    Some(500),
                    Some("HTTP 500"),
                    NOW
                )
                .await
                .unwrap()
            );
            assert!(
                s.claim_due_webhooks("wb", &u, NOW + 999, 60_000, 10)
                    .await
                    .unwrap()
                    .is_empty()
            );
            let again = s
                .claim_due_webhooks("wb", &u, NOW + 1000, 60_000, 10)
                .await
                .unwrap();
            assert_eq!(
                keys(&again),
                want(&[("http://a/", &e1)]),
                "the payment first, not the refund"
            );
            assert!(
                s.record_webhook_attempt(
                    a1.id,
                    "wb",
                    AttemptOutcome::Delivered,
                    Some(204),
                    None,
                    NOW + 1000
                )
                .await
                .unwrap()
            );
            let next = s
                .claim_due_webhooks("wb", &u, NOW + 1000, 60_000, 10)
                .await
                .unwrap();
            assert_eq!(keys(&next), want(&[("http://a/", &e3)]));
            let long = "x".repeat(LAST_ERROR_CAP * 2);
            assert!(
                s.record_webhook_attempt(
                    next[0].id,
                    "wb",
                    AttemptOutcome::Dead,
                    None,
                    Some(&long),
                    NOW + 1000
                )
                .await
                .unwrap()
            );
            let dead = s
                .list_webhook_deliveries(&DeliveryFilter {
                    state: Some(DeliveryState::Dead),
                    limit: 10,
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(dead.len(), 1);
            assert_eq!((dead[0].attempts, dead[0].last_status), (1, None));
            assert_eq!(dead[0].last_error.as_ref().unwrap().len(), LAST_ERROR_CAP);
            let d1 = &s.event_deliveries(&e1).await.unwrap()[0];
            assert_eq!(
                (
                    d1.state,
                    d1.attempts,
                    d1.last_status,
                    d1.delivered_at,
                    d1.lease_owner.as_deref()
                ),
                (
                    DeliveryState::Delivered,
                    2,
                    Some(204),
                    Some(NOW + 1000),
                    None
                )
            );
            let all = s
                .list_webhook_deliveries(&DeliveryFilter {
                    limit: 2,
                    ..Default::default()
                })
                .await
                .unwrap();
            assert!(all.len() == 2 && all[0].id > all[1].id, "newest first");
            let page = s
                .list_webhook_deliveries(&DeliveryFilter {
                    before_id: Some(all[1].id),
                    limit: 10,
                    ..Default::default()
                })
                .await
                .unwrap();
            assert!(page.iter().all(|d| d.id < all[1].id) && page.len() == 2);
            // Redelivery: both deliveries of the refund back to PENDING, due now, fresh budget;
            // and the old event reaches a (subscribing) endpoint that never had it.
            let r = s.redeliver_event(&e3, &eps, NOW + 2000).await.unwrap();
            assert_eq!(r.len(), 2);
            assert!(r.iter().all(|d| d.state == DeliveryState::Pending
                && d.attempts == 0
                && d.next_attempt_at == NOW + 2000
                && d.lease_owner.is_none()));
            assert_eq!(s.redeliver_event(&old, &eps, NOW).await.unwrap().len(), 1);
            assert!(matches!(
                s.redeliver_event("evt_missing", &eps, NOW).await,
                Err(StoreError::NotFound(_))
            ));
            // An expired lease is taken over.
            let lost = s
                .claim_due_webhooks("wa", &u, NOW + 2000, 10, 10)
                .await
                .unwrap();
            assert!(!lost.is_empty());
            let taken = s
                .claim_due_webhooks("wb", &u, NOW + 2011, 60_000, 10)
                .await
                .unwrap();
            assert_eq!(keys(&lost), keys(&taken));
        }
    }

    #[tokio::test]
    async fn a_hole_in_the_outbox_sequence_is_waited_for_until_it_settles() {
        let Some(db) = TestDb::postgres_from_env().await.unwrap() else {
            return;
        };
        let s = &db.store;
        let eps = vec![ep("http://a/", &[])];
        s.register_webhook_endpoints(&eps, NOW).await.unwrap();
        let delivered = |ids: Vec<String>| async move {
            let mut out = Vec::new();
            for id in ids {
                out.push(!s.event_deliveries(&id).await.unwrap().is_empty());
            }
            out
        };
        // Event 1 is still being committed when event 2 (older than GAP_SETTLE_MS) is visible.
        let mut slow = s.pool().begin().await.unwrap();
        let e1 = insert_event_tx(
            &mut slow,
            "order.paid",
            Some("O1"),
            &serde_json::json!({}),
            NOW,
        )
        .await
        .unwrap();
        let e2 = event(s, "order.paid", "O2", NOW - 5_000).await;
        assert_eq!(
            s.fan_out_webhooks(&eps, NOW, 100).await.unwrap().events,
            0,
            "waits for event 1"
        );
        slow.commit().await.unwrap();
        assert_eq!(s.fan_out_webhooks(&eps, NOW, 100).await.unwrap().events, 2);
        assert_eq!(
            delivered(vec![e1.clone(), e2.clone()]).await,
            vec![true, true]
        );
        let d1 = &s.event_deliveries(&e1).await.unwrap()[0];
        let d2 = &s.event_deliveries(&e2).await.unwrap()[0];
        assert!(d1.event_seq < d2.event_seq);
        // A rolled-back event leaves a hole for good: once it settles, it is stepped over.
        let mut gone = s.pool().begin().await.unwrap();
        insert_event_tx(
            &mut gone,
            "order.paid",
            Some("O3"),
            &serde_json::json!({}),
            NOW,
        )
        .await
        .unwrap();
        gone.rollback().await.unwrap();
        let e4 = event(s, "order.paid", "O4", NOW).await;
        assert_eq!(
            s.fan_out_webhooks(&eps, NOW + 10, 100)
                .await
                .unwrap()
                .events,
            0,
            "a young hole is waited for"
        );
        assert_eq!(
            s.fan_out_webhooks(&eps, NOW + GAP_SETTLE_MS, 100)
                .await
                .unwrap()
                .events,
            1,
            "a settled hole is stepped over"
        );
        assert_eq!(delivered(vec![e4]).await, vec![true]);
    }
}
