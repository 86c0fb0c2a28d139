//! The daily reconciliation: once per Beijing day, from 10:00 Beijing time (WeChat publishes
//! D−1's bill between about 09:00 and 10:00), reconcile yesterday for every APIv3 merchant.
//!
//! Each (merchant, day) is claimed in the store (`reconciliation_runs`: a unique insert), so with
//! several processes exactly one does it. A run that fails (bill still being made, WeChat or the
//! database unreachable) is tried again [`RETRY_AFTER_MS`] later; a run whose process died is
//! taken over when its lease ends. Time comes from the injected clock.

use super::WorkerContext;
use crate::reconcile::reconcile;
use chrono::NaiveDate;
use std::collections::HashSet;
use std::time::Duration;
use wxpay_gateway::Protocol;
use wxpay_store::reconcile::{BEIJING_OFFSET_MS, beijing_date_of_ms};

/// Beijing hour from which yesterday's bill is fetched.
pub const START_HOUR: i64 = 10;
/// How often the worker looks whether a day is due.
pub const CHECK_EVERY: Duration = Duration::from_secs(60);
/// How long a claimed run stays ours (ms): downloading and querying may take a while.
pub const RUN_LEASE_MS: i64 = 30 * 60 * 1000;
/// Delay before a failed run is tried again (ms).
pub const RETRY_AFTER_MS: i64 = 15 * 60 * 1000;

/// The worker loop.
pub async fn run(mut ctx: WorkerContext) {
    let mut done = HashSet::new();
    loop {
        round(&ctx, &mut done).await;
        if !ctx.idle(CHECK_EVERY).await {
            break;
        }
    }
}

/// The day due at `now_ms` (yesterday, Beijing), or None before [`START_HOUR`].
pub fn due_day(now_ms: i64) -> Option<NaiveDate> {
    let hour = (now_ms + BEIJING_OFFSET_MS).rem_euclid(86_400_000) / 3_600_000;
    if hour < START_HOUR {
        return None;
    }
    beijing_date_of_ms(now_ms).pred_opt()
}

/// One look: reconcile the due day of every v3 merchant this process can claim. `done` remembers
/// the (merchant, day)s known finished so they are not claimed again. Returns the reports made.
pub async fn round(ctx: &WorkerContext, done: &mut HashSet<(String, NaiveDate)>) -> usize {
    let state = &ctx.state;
    let Some(day) = due_day(state.now_ms()) else {
        return 0;
    };
    let bill_date = day.format("%Y-%m-%d").to_string();
    let mut merchants: Vec<&String> = state
        .gateways
        .iter()
        .filter(|(_, g)| g.protocol() == Protocol::V3)
        .map(|(id, _)| id)
        .collect();
    merchants.sort();
    let mut made = 0;
    for merchant in merchants {
        if ctx.stopping() {
            break;
        }
        let key = (merchant.clone(), day);
        if done.contains(&key) {
            continue;
        }
        let now = state.now_ms();
        match state
            .store
            .claim_reconciliation(merchant, &bill_date, &ctx.owner, now, RUN_LEASE_MS)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                if let Ok(Some(run)) = state
                    .store
                    .get_reconciliation_run(merchant, &bill_date)
                    .await
                    && run.state == "DONE"
                {
                    done.insert(key);
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(%merchant, %bill_date, error = %e, "reconciler: cannot claim the day");
                continue;
            }
        }
        match reconcile(state, merchant, day).await {
            Ok(report) => {
                made += 1;
                done.insert(key);
                if let Err(e) = state
                    .store
                    .finish_reconciliation(
                        merchant,
                        &bill_date,
                        &ctx.owner,
                        report.id,
                        state.now_ms(),
                    )
                    .await
                {
                    tracing::warn!(%merchant, %bill_date, error = %e, "reconciler: report stored, run not marked done");
                }
            }
            Err(e) => {
                let retry = e.is_retryable();
                tracing::warn!(%merchant, %bill_date, error = %e, retry, "reconciler: the day could not be reconciled");
                let next = state.now_ms() + RETRY_AFTER_MS;
                if let Err(e) = state
                    .store
                    .defer_reconciliation(
                        merchant,
                        &bill_date,
                        &ctx.owner,
                        next,
                        &e.to_string(),
                        state.now_ms(),
                    )
                    .await
                {
                    tracing::warn!(%merchant, %bill_date, error = %e, "reconciler: cannot defer the run");
                }
            }
        }
    }
    made
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yesterday_from_ten_beijing_time() {
        // 2024-01-02T09:59:59+08:00 and 10:00:00.
        let nine = 1_704_160_799_000;
        assert_eq!(due_day(nine), None);
        assert_eq!(
            due_day(nine + 1000).map(|d| d.to_string()).as_deref(),
            Some("2024-01-01")
        );
        // 23:59:59 the same day: still 2024-01-01.
        assert_eq!(
            due_day(nine + 1000 + 14 * 3_600_000 - 1000)
                .map(|d| d.to_string())
                .as_deref(),
            Some("2024-01-01")
        );
    }
}
