//! `Idempotency-Key` support: the same key with the same request replays the first answer; the
//! same key with a different request is refused; a key whose first request is still running is
//! reported as such.

use crate::{Result, Store};
use sqlx::Row;

/// A key claimed this long ago (ms) without an answer is taken to be abandoned by a dead process.
pub const IN_PROGRESS_TAKEOVER_MS: i64 = 30_000;

/// What to do with a request that carries an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// First time this key is seen: run the request, then call `complete`.
    New,
    /// Answer with the stored response.
    Replay { status: u16, body: String },
    /// The key was used for a different request.
    Mismatch,
    /// The first request with this key has not finished yet.
    InProgress,
}

impl Store {
    /// Claims `(scope, key)` for a request whose canonical hash is `request_hash`.
    pub async fn idempotency_begin(
        &self,
        scope: &str,
        key: &str,
        request_hash: &str,
        now: i64,
    ) -> Result<Begin> {
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (scope, idem_key, request_hash, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(scope)
        .bind(key)
        .bind(request_hash)
        .bind(now)
        .execute(self.pool())
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(Begin::New);
        }
        let row = sqlx::query(
            "SELECT request_hash, status, response_body, created_at FROM idempotency_keys \
             WHERE scope = $1 AND idem_key = $2",
        )
        .bind(scope)
        .bind(key)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            // Abandoned between our insert attempt and the read: treat as new.
            return Box::pin(self.idempotency_begin(scope, key, request_hash, now)).await;
        };
        let stored_hash: String = row.try_get("request_hash")?;
        if stored_hash != request_hash {
            return Ok(Begin::Mismatch);
        }
        let status: Option<i64> = row.try_get("status")?;
        let body: Option<String> = row.try_get("response_body")?;
        let created_at: i64 = row.try_get("created_at")?;
        Ok(match (status, body) {
            (Some(status), Some(body)) => Begin::Replay {
                status: status as u16,
                body,
            },
            // The process that claimed the key died before answering: after a while the key may
            // be taken over (compare-and-set on its claim time, so only one caller does).
            _ if created_at < now - IN_PROGRESS_TAKEOVER_MS => {
                let taken = sqlx::query(
                    "UPDATE idempotency_keys SET created_at = $1 WHERE scope = $2 AND idem_key = $3 \
                     AND created_at = $4 AND status IS NULL",
                )
                .bind(now)
                .bind(scope)
                .bind(key)
                .bind(created_at)
                .execute(self.pool())
                .await?
                .rows_affected();
                if taken == 1 {
                    Begin::New
                } else {
                    Begin::InProgress
                }
            }
            _ => Begin::InProgress,
        })
    }

    /// Stores the answer given to the first request with this key.
    pub async fn idempotency_complete(
        &self,
        scope: &str,
        key: &str,
        status: u16,
        body: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE idempotency_keys SET status = $1, response_body = $2 WHERE scope = $3 AND idem_key = $4",
        )
        .bind(i64::from(status))
        .bind(body)
        .bind(scope)
        .bind(key)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Forgets a key whose request failed in a way worth retrying (a 5xx), so a retry runs again.
    pub async fn idempotency_abandon(&self, scope: &str, key: &str) -> Result<()> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE scope = $1 AND idem_key = $2 AND status IS NULL",
        )
        .bind(scope)
        .bind(key)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
