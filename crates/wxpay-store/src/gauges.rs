//! Levels for the metrics endpoint, read at scrape time with a few cheap counts.

use crate::{Result, Store};
use sqlx::Row;

/// What `/metrics` reports as gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Webhook deliveries not yet made (`PENDING`): the outbox backlog.
    pub outbox_backlog: i64,
    /// Webhook deliveries that gave up (`DEAD`).
    pub webhook_dead: i64,
    /// Payment attempts still waiting for WeChat's answer (`PENDING`).
    pub pending_attempts: i64,
    /// How far (ms) the sweeper is behind: now minus the oldest `next_query_at` that is due, or 0.
    pub sweeper_lag_ms: i64,
}

impl Store {
    /// The current [`Gauges`].
    pub async fn gauges(&self, now_ms: i64) -> Result<Gauges> {
        let deliveries = sqlx::query(
            "SELECT \
               COALESCE(SUM(CASE WHEN state = 'PENDING' THEN 1 ELSE 0 END), 0) AS pending, \
               COALESCE(SUM(CASE WHEN state = 'DEAD' THEN 1 ELSE 0 END), 0) AS dead \
             FROM webhook_deliveries",
        )
        .fetch_one(self.pool())
        .await?;
        let attempts = sqlx::query(
            "SELECT COUNT(*) AS pending, MIN(next_query_at) AS oldest_due \
             FROM payment_attempts WHERE state = 'PENDING'",
        )
        .fetch_one(self.pool())
        .await?;
        let oldest_due: Option<i64> = attempts.try_get("oldest_due")?;
        Ok(Gauges {
            outbox_backlog: deliveries.try_get("pending")?,
            webhook_dead: deliveries.try_get("dead")?,
            pending_attempts: attempts.try_get("pending")?,
            sweeper_lag_ms: oldest_due.map_or(0, |t| (now_ms - t).max(0)),
        })
    }
}
