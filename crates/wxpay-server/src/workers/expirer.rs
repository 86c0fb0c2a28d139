//! Order expiry: at `expires_at` an open order is closed at WeChat first (v3 `close`; legacy: the
//! order stopped being payable at the package's `time_expire`, so a final query after it decides),
//! and only then CLOSED locally — coupon released, `order.closed` emitted. A close that fails is
//! retried with backoff; nothing is closed locally before WeChat agrees. A payment found on the
//! way goes through the normal transition instead.

use super::{BATCH, LEASE_MS, POLL, WorkerContext};
use crate::payments;
use wxpay_gateway::{GatewayError, Protocol, TradeStatus};
use wxpay_store::{AttemptState, Order, PaidSource};

/// Legacy orders get this long after `time_expire` before the final query (ms): a payment
/// started just before the deadline can still complete at WeChat.
pub const LEGACY_GRACE_MS: i64 = 2 * 60 * 1000;

/// Backoff of failed closes (ms), capped at 10 minutes.
fn retry_after_ms(close_attempts: i64) -> i64 {
    let exp = close_attempts.clamp(0, 10) as u32;
    (5_000i64.saturating_mul(1 << exp)).min(600_000)
}

pub async fn run(mut ctx: WorkerContext) {
    loop {
        if ctx.stopping() {
            return;
        }
        let worked = match expire_once(&ctx).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "expirer round failed");
                0
            }
        };
        if worked == 0 && !ctx.idle(POLL).await {
            return;
        }
    }
}

/// One round: claim expired open orders and try to close each. Returns how many were handled.
pub async fn expire_once(ctx: &WorkerContext) -> Result<usize, wxpay_store::StoreError> {
    let now = ctx.state.now_ms();
    let orders = ctx
        .state
        .store
        .claim_expired_orders(&ctx.owner, now, LEASE_MS, BATCH)
        .await?;
    let n = orders.len();
    for o in orders {
        if ctx.stopping() {
            break;
        }
        if let Err(e) = expire_order(ctx, &o).await {
            tracing::warn!(order_no = %o.order_no, error = %e, "expiry failed");
        }
    }
    Ok(n)
}

enum Step {
    /// Every attempt is closed (or never reached WeChat).
    Closed,
    /// A payment turned up: recorded, the order is not closed.
    Paid,
    /// Ask again later.
    RetryAt(i64),
}

async fn expire_order(ctx: &WorkerContext, o: &Order) -> Result<(), wxpay_store::StoreError> {
    let state = &ctx.state;
    let attempts = state.store.list_attempts(&o.order_no).await?;
    let mut retry_at: Option<i64> = None;
    let mut paid = false;
    for a in attempts.iter().filter(|a| a.state == AttemptState::Pending) {
        let Some(gw) = state.gateways.get(&a.merchant_id).cloned() else {
            retry_at = Some(state.now_ms() + retry_after_ms(10));
            continue;
        };
        let step = match gw.protocol() {
            Protocol::V3 => match gw.close(&a.out_trade_no).await {
                Ok(()) => Step::Closed,
                Err(GatewayError::Rejected { code, .. })
                    if code == "ORDER_PAID" || code == "TRADE_ERROR" =>
                {
                    confirm_paid(ctx, &a.merchant_id, &a.out_trade_no).await?
                }
                Err(GatewayError::Rejected { code, .. }) if code == "ORDER_NOT_EXIST" => {
                    Step::Closed
                }
                Err(e) => {
                    tracing::info!(out_trade_no = %a.out_trade_no, error = %e, "close at WeChat failed; will retry");
                    Step::RetryAt(state.now_ms() + retry_after_ms(0))
                }
            },
            Protocol::Legacy => {
                let deadline = o.expires_at + LEGACY_GRACE_MS;
                if state.now_ms() < deadline {
                    Step::RetryAt(deadline)
                } else {
                    match gw.query(&a.out_trade_no).await {
                        Ok(TradeStatus::Paid {
                            transaction_id,
                            amount,
                        }) => {
                            payments::record_success(
                                state,
                                &a.merchant_id,
                                &a.out_trade_no,
                                &transaction_id,
                                amount.get(),
                                PaidSource::Sweep,
                                None,
                            )
                            .await
                            .map_err(|e| wxpay_store::StoreError::Invalid(e.message))?;
                            Step::Paid
                        }
                        Ok(TradeStatus::NotPaid)
                        | Ok(TradeStatus::Closed)
                        | Ok(TradeStatus::NotFound) => Step::Closed,
                        Ok(other) => {
                            tracing::warn!(out_trade_no = %a.out_trade_no, status = ?other, "unexpected state at expiry");
                            Step::RetryAt(state.now_ms() + retry_after_ms(0))
                        }
                        Err(e) => {
                            tracing::info!(out_trade_no = %a.out_trade_no, error = %e, "final query failed; will retry");
                            Step::RetryAt(state.now_ms() + retry_after_ms(0))
                        }
                    }
                }
            }
        };
        match step {
            Step::Closed => {
                state
                    .store
                    .close_attempt(&a.out_trade_no, AttemptState::Closed, state.now_ms())
                    .await?;
            }
            Step::Paid => paid = true,
            Step::RetryAt(t) => retry_at = Some(retry_at.map_or(t, |r| r.min(t))),
        }
    }
    if paid {
        return Ok(());
    }
    match retry_at {
        Some(t) => {
            // The first retry comes when asked (e.g. the legacy deadline); repeated failures back off.
            let backoff = state.now_ms() + retry_after_ms(o.close_attempts);
            state
                .store
                .defer_close(&o.order_no, &ctx.owner, t.max(backoff), state.now_ms())
                .await
        }
        None => {
            if state.store.close_order(&o.order_no, state.now_ms()).await? {
                tracing::info!(order_no = %o.order_no, "order expired and closed");
            }
            Ok(())
        }
    }
}

/// WeChat refused the close because the order is paid: confirm with a verified query.
async fn confirm_paid(
    ctx: &WorkerContext,
    merchant: &str,
    out_trade_no: &str,
) -> Result<Step, wxpay_store::StoreError> {
    let state = &ctx.state;
    let Some(gw) = state.gateways.get(merchant).cloned() else {
        return Ok(Step::RetryAt(state.now_ms() + 60_000));
    };
    match gw.query(out_trade_no).await {
        Ok(TradeStatus::Paid {
            transaction_id,
            amount,
        })
        | Ok(TradeStatus::Refunded {
            transaction_id,
            amount,
        }) => {
            payments::record_success(
                state,
                merchant,
                out_trade_no,
                &transaction_id,
                amount.get(),
                PaidSource::Sweep,
                None,
            )
            .await
            .map_err(|e| wxpay_store::StoreError::Invalid(e.message))?;
            Ok(Step::Paid)
        }
        Ok(TradeStatus::Closed) => Ok(Step::Closed),
        _ => Ok(Step::RetryAt(state.now_ms() + retry_after_ms(0))),
    }
}
