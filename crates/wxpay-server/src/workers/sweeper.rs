//! The pending-payment sweeper: every PENDING attempt is queried at WeChat on a backoff schedule
//! (`sweep_schedule_secs`, the last gap repeating) until it leaves PENDING or its order's expiry
//! plus a margin has passed. A verified SUCCESS goes through the very same transition as a
//! notification (source `sweep`).

use super::{BATCH, LEASE_MS, POLL, WorkerContext};
use crate::payments;
use wxpay_gateway::TradeStatus;
use wxpay_store::{Attempt, AttemptState, PaidSource};

/// After the order's expiry the expirer takes over; the sweeper keeps asking this long (ms).
const AFTER_EXPIRY_MARGIN_MS: i64 = 10 * 60 * 1000;

/// When to ask next after `query_count` queries (ms), or `None` to stop.
pub fn next_query_at(
    schedule: &[i64],
    query_count: i64,
    now: i64,
    order_expires_at: i64,
) -> Option<i64> {
    let idx = usize::try_from(query_count.max(0))
        .unwrap_or(usize::MAX)
        .min(schedule.len().saturating_sub(1));
    let gap = schedule.get(idx).copied().unwrap_or(3600);
    let next = now.saturating_add(gap.saturating_mul(1000));
    (next <= order_expires_at.saturating_add(AFTER_EXPIRY_MARGIN_MS)).then_some(next)
}

pub async fn run(mut ctx: WorkerContext) {
    loop {
        if ctx.stopping() {
            return;
        }
        let worked = match sweep_once(&ctx).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "sweeper round failed");
                0
            }
        } + match sweep_refunds_once(&ctx).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "refund sweep failed");
                0
            }
        };
        if worked == 0 && !ctx.idle(POLL).await {
            return;
        }
    }
}

/// One round: claim due attempts and query each. Returns how many were handled.
pub async fn sweep_once(ctx: &WorkerContext) -> Result<usize, wxpay_store::StoreError> {
    let state = &ctx.state;
    let now = state.now_ms();
    let due = state
        .store
        .claim_due_attempts(&ctx.owner, now, LEASE_MS, BATCH)
        .await?;
    let n = due.len();
    for a in due {
        if ctx.stopping() {
            // Leases expire on their own; another process (or our restart) picks these up.
            break;
        }
        if let Err(e) = sweep_attempt(ctx, &a).await {
            tracing::warn!(out_trade_no = %a.out_trade_no, error = %e, "sweep of a pending payment failed");
        }
    }
    Ok(n)
}

async fn sweep_attempt(ctx: &WorkerContext, a: &Attempt) -> Result<(), wxpay_store::StoreError> {
    let state = &ctx.state;
    let expires_at = state
        .store
        .get_order(&a.order_no)
        .await?
        .map(|o| o.expires_at)
        .unwrap_or(0);
    let schedule = &state.settings.sweep_schedule_secs;
    let Some(gw) = state.gateways.get(&a.merchant_id).cloned() else {
        // A merchant no longer configured: stop asking, keep the attempt for the operator.
        return state
            .store
            .reschedule_attempt(&a.out_trade_no, &ctx.owner, None, state.now_ms())
            .await;
    };
    match gw.query(&a.out_trade_no).await {
        Ok(TradeStatus::Paid {
            transaction_id,
            amount,
        })
        | Ok(TradeStatus::Refunded {
            transaction_id,
            amount,
        }) => {
            if let Err(e) = payments::record_success(
                state,
                &a.merchant_id,
                &a.out_trade_no,
                &transaction_id,
                amount.get(),
                PaidSource::Sweep,
                None,
            )
            .await
            {
                tracing::warn!(out_trade_no = %a.out_trade_no, error = %e.message, "sweeper could not record a payment");
                let next = next_query_at(schedule, a.query_count, state.now_ms(), expires_at);
                state
                    .store
                    .reschedule_attempt(&a.out_trade_no, &ctx.owner, next, state.now_ms())
                    .await?;
            } else if state
                .store
                .get_attempt(&a.out_trade_no)
                .await?
                .is_some_and(|x| x.state == AttemptState::Pending)
            {
                // An amount mismatch leaves the attempt pending: stop asking, the anomaly is on record.
                state
                    .store
                    .reschedule_attempt(&a.out_trade_no, &ctx.owner, None, state.now_ms())
                    .await?;
            }
        }
        Ok(TradeStatus::Closed) => {
            state
                .store
                .close_attempt(&a.out_trade_no, AttemptState::Closed, state.now_ms())
                .await?;
        }
        Ok(TradeStatus::NotFound)
            if a.prepay_id.is_none() && state.now_ms() > a.created_at + 5 * 60 * 1000 =>
        {
            // WeChat never created it (the prepay never went through) and nobody retried it.
            state
                .store
                .close_attempt(&a.out_trade_no, AttemptState::Failed, state.now_ms())
                .await?;
        }
        Ok(_) => {
            let next = next_query_at(schedule, a.query_count, state.now_ms(), expires_at);
            state
                .store
                .reschedule_attempt(&a.out_trade_no, &ctx.owner, next, state.now_ms())
                .await?;
        }
        Err(e) => {
            tracing::info!(out_trade_no = %a.out_trade_no, error = %e, "sweeper query failed; will ask again");
            let next = next_query_at(schedule, a.query_count, state.now_ms(), expires_at);
            state
                .store
                .reschedule_attempt(&a.out_trade_no, &ctx.owner, next, state.now_ms())
                .await?;
        }
    }
    Ok(())
}

/// The gap before looking at an unfinished refund again: half its age, between 1 min and 1 h.
pub fn refund_gap_ms(age_ms: i64) -> i64 {
    (age_ms / 2).clamp(60_000, 3_600_000)
}

/// One round over unfinished refunds: a PENDING one (WeChat never confirmed it) is sent again
/// with the same out_refund_no; a PROCESSING one is queried. Returns how many were handled.
pub async fn sweep_refunds_once(ctx: &WorkerContext) -> Result<usize, wxpay_store::StoreError> {
    let state = &ctx.state;
    let due = state
        .store
        .claim_due_refunds(&ctx.owner, state.now_ms(), LEASE_MS, BATCH)
        .await?;
    let n = due.len();
    for r in due {
        if ctx.stopping() {
            break;
        }
        match r.state.as_str() {
            "PENDING" => {
                if let Err(e) = crate::refunds::send(state, &r.merchant_id, &r).await {
                    tracing::info!(out_refund_no = %r.out_refund_no, error = %e.message, "refund resend refused");
                }
            }
            _ => {
                if let Some(gw) = state.gateways.get(&r.merchant_id).cloned() {
                    match gw.query_refund(&r.out_refund_no).await {
                        Ok(st) => {
                            if let Err(e) =
                                crate::refunds::apply_status(state, &r.merchant_id, &st).await
                            {
                                tracing::warn!(out_refund_no = %r.out_refund_no, error = %e.message, "refund status not applied");
                            }
                        }
                        Err(e) => {
                            tracing::info!(out_refund_no = %r.out_refund_no, error = %e, "refund query failed; will ask again")
                        }
                    }
                }
            }
        }
        let now = state.now_ms();
        let still_open = state
            .store
            .get_refund(&r.out_refund_no)
            .await?
            .is_some_and(|x| x.state == "PENDING" || x.state == "PROCESSING");
        let next = still_open.then(|| now + refund_gap_ms(now - r.created_at));
        state
            .store
            .reschedule_refund(&r.out_refund_no, &ctx.owner, next, now)
            .await?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::next_query_at;

    #[test]
    fn the_schedule_backs_off_repeats_its_last_gap_and_stops_after_expiry() {
        let s = [10, 30, 60];
        assert_eq!(next_query_at(&s, 0, 0, 1_000_000), Some(10_000));
        assert_eq!(next_query_at(&s, 1, 0, 1_000_000), Some(30_000));
        assert_eq!(next_query_at(&s, 2, 0, 1_000_000), Some(60_000));
        assert_eq!(next_query_at(&s, 9, 0, 1_000_000), Some(60_000));
        // Past expiry + 10 minutes: stop.
        assert_eq!(next_query_at(&s, 0, 1_000_000 + 600_000, 1_000_000), None);
    }
}
