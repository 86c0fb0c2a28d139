//! The payment flow as domain operations: handler → here → store + gateway.

use crate::error::ApiError;
use crate::startup::AppState;
use axum::http::StatusCode;
use std::sync::Arc;
use wxpay_gateway::{AppParams, Gateway, GatewayError, PrepayRequest, TradeStatus};
use wxpay_store::{
    Attempt, AttemptState, MarkPaid, NewAttempt, Order, PaidSource, PaymentSuccess, new_id,
};

/// A prepay is reused only while it stays valid this long (ms) after the call.
const PREPAY_REUSE_MARGIN_MS: i64 = 5 * 60 * 1000;
/// An order must have this much time left to start a payment (ms).
const MIN_PAY_WINDOW_MS: i64 = 90_000;
/// The sweeper's first look at a new attempt (ms).
const FIRST_SWEEP_MS: i64 = 10_000;

pub struct PayResult {
    pub out_trade_no: String,
    pub merchant: String,
    pub app_params: AppParams,
}

fn gateway_for(state: &AppState, merchant: &str) -> Result<Arc<dyn Gateway>, ApiError> {
    state.gateways.get(merchant).cloned().ok_or_else(|| {
        ApiError::unprocessable(
            "unknown_merchant",
            format!("no merchant {merchant:?} is configured"),
        )
    })
}

/// Step 2–3 of the flow: a prepay for the order at `merchant`, then the app's signed parameters.
/// A still-valid prepay of the same order, merchant and amount is reused; an attempt whose prepay
/// never got an answer is retried with the very same request and out_trade_no.
pub async fn pay(
    state: &AppState,
    order: &Order,
    merchant: &str,
    client_ip: &str,
) -> Result<PayResult, ApiError> {
    let gw = gateway_for(state, merchant)?;
    let now = state.now_ms();
    let open = matches!(
        order.state,
        wxpay_store::OrderState::Created | wxpay_store::OrderState::Paying
    );
    if open && order.expires_at - now < MIN_PAY_WINDOW_MS {
        // WeChat needs time_expire at least a minute after the prepay; an order this close to
        // its end cannot be paid safely any more (its expiry will close it).
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "order_expiring",
            "the order expires in less than 90 seconds; create a new order",
        ));
    }
    let reusable = state
        .store
        .reusable_attempt(&order.order_no, merchant, now + PREPAY_REUSE_MARGIN_MS)
        .await?;
    let (attempt, request) = match reusable {
        Some(a) => {
            if let Some(prepay_id) = &a.prepay_id {
                return Ok(PayResult {
                    out_trade_no: a.out_trade_no.clone(),
                    merchant: merchant.to_string(),
                    app_params: gw.app_params(prepay_id),
                });
            }
            let req: PrepayRequest = a
                .request_json
                .as_deref()
                .and_then(|j| serde_json::from_str(j).ok())
                .ok_or_else(ApiError::internal)?;
            (a, req)
        }
        None => {
            let out_trade_no = new_id("pay");
            let request = PrepayRequest {
                out_trade_no: out_trade_no.clone(),
                description: order.subject.clone(),
                amount: wxpay_proto::Fen::new(order.payable_fen),
                client_ip: client_ip.to_string(),
                notify_url: state.notify_url(merchant),
                attach: None,
                time_start: now / 1000,
                time_expire: Some(order.expires_at / 1000),
                trace_id: order.user_id.clone(),
            };
            let request_json = serde_json::to_string(&request).map_err(|_| ApiError::internal())?;
            let attempt = state
                .store
                .start_attempt(
                    &NewAttempt {
                        out_trade_no,
                        order_no: order.order_no.clone(),
                        merchant_id: merchant.to_string(),
                        protocol: gw.protocol().as_str().to_string(),
                        request_json: Some(request_json),
                        next_query_at: Some(now + FIRST_SWEEP_MS),
                    },
                    now,
                )
                .await?;
            (attempt, request)
        }
    };
    match gw.prepay(&request).await {
        Ok(p) => {
            state
                .store
                .set_prepay(
                    &attempt.out_trade_no,
                    &p.prepay_id,
                    p.expires_at * 1000,
                    state.now_ms(),
                )
                .await?;
            Ok(PayResult {
                out_trade_no: attempt.out_trade_no.clone(),
                merchant: merchant.to_string(),
                app_params: gw.app_params(&p.prepay_id),
            })
        }
        Err(e) => {
            match &e {
                // Outcome unknown: keep the attempt, a retry repeats the same request.
                GatewayError::Transport(_) | GatewayError::TokenQuota(_) => {}
                other => {
                    tracing::warn!(out_trade_no = %attempt.out_trade_no, error = %other, "prepay refused; attempt failed");
                    state
                        .store
                        .fail_attempt(&attempt.out_trade_no, &other.to_string(), state.now_ms())
                        .await?;
                }
            }
            Err(e.into())
        }
    }
}

/// Applies a verified success (from a notification, a query or the sweeper) through the one
/// exactly-once transition.
pub async fn record_success(
    state: &AppState,
    merchant: &str,
    out_trade_no: &str,
    transaction_id: &str,
    amount_fen: i64,
    source: PaidSource,
    receipt_id: Option<i64>,
) -> Result<MarkPaid, ApiError> {
    // Only APIv3 has a refund API; a late legacy payment stays an anomaly for a person.
    let refund_if_late = state.settings.late_success_refund
        && state
            .gateways
            .get(merchant)
            .is_some_and(|g| g.protocol() == wxpay_gateway::Protocol::V3);
    let out = state
        .store
        .mark_paid(
            &PaymentSuccess {
                merchant_id: merchant.to_string(),
                out_trade_no: out_trade_no.to_string(),
                transaction_id: transaction_id.to_string(),
                paid_fen: amount_fen,
                source,
                receipt_id,
                refund_if_late,
            },
            state.now_ms(),
        )
        .await?;
    if matches!(
        out,
        MarkPaid::PaidAfterClose { .. } | MarkPaid::DuplicatePayment { .. }
    ) {
        if refund_if_late {
            tracing::warn!(%out_trade_no, out_refund_no = %format!("late-{out_trade_no}"), "late payment: full refund reserved (the refund sweeper sends it)");
        } else if state.settings.late_success_refund {
            tracing::warn!(%out_trade_no, "late payment needs a manual refund (the 2014 protocol has no refund API)");
        }
    }
    crate::metrics::payment_outcome(merchant, source.as_str(), &out);
    match &out {
        MarkPaid::Paid { order_no } => {
            tracing::info!(%order_no, %out_trade_no, source = source.as_str(), "order paid")
        }
        MarkPaid::AlreadyRecorded { .. } => {}
        other => {
            tracing::warn!(%out_trade_no, outcome = other.as_str(), "payment recorded as an anomaly")
        }
    }
    Ok(out)
}

/// Step 7, the app's "I paid": a hint. Ask WeChat about every pending attempt of the order and
/// apply only what a verified query says.
pub async fn confirm_by_query(state: &AppState, order: &Order) -> Result<(), ApiError> {
    let attempts: Vec<Attempt> = state.store.list_attempts(&order.order_no).await?;
    let mut last_err = None;
    for a in attempts.iter().filter(|a| a.state == AttemptState::Pending) {
        let Some(gw) = state.gateways.get(&a.merchant_id) else {
            continue;
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
                record_success(
                    state,
                    &a.merchant_id,
                    &a.out_trade_no,
                    &transaction_id,
                    amount.get(),
                    PaidSource::Query,
                    None,
                )
                .await?;
            }
            Ok(_) => {}
            Err(e) => last_err = Some(e),
        }
    }
    match last_err {
        Some(e) if e.is_transient() => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "wechat_unavailable",
            "WeChat Pay could not be asked now; the payment will still be picked up by its notification",
        )),
        _ => Ok(()),
    }
}
