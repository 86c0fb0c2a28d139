//! Refunds as a domain operation: reserve in the store, ask WeChat with a stable out_refund_no,
//! apply what WeChat says (response, notification or query) exactly once.

use crate::error::ApiError;
use crate::startup::AppState;
use wxpay_gateway::{GatewayError, Protocol, RefundRequest, RefundStatus};
use wxpay_proto::Fen;
use wxpay_store::{NewRefund, Order, Refund, RefundCreated, RefundOutcome, new_id};

/// When the sweeper should first ask about a refund WeChat has not finished (ms).
const FIRST_REFUND_QUERY_MS: i64 = 60_000;

pub fn refund_json(r: &Refund) -> serde_json::Value {
    serde_json::json!({
        "out_refund_no": r.out_refund_no,
        "order_no": r.order_no,
        "amount_fen": r.amount_fen,
        "reason": r.reason,
        "state": r.state,
        "refund_id": r.refund_id,
        "detail": r.detail,
        "created_at": r.created_at / 1000,
        "finished_at": r.finished_at.map(|t| t / 1000),
    })
}

fn valid_out_refund_no(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-|*@".contains(c))
}

/// Applies a refund status WeChat reported (verified response, query or notification).
pub async fn apply_status(
    state: &AppState,
    merchant: &str,
    st: &RefundStatus,
) -> Result<bool, ApiError> {
    let Some(outcome) = RefundOutcome::parse(&st.status) else {
        tracing::warn!(out_refund_no = %st.out_refund_no, status = %st.status, "unknown refund status");
        return Ok(false);
    };
    let return_coupon = state
        .settings
        .merchants
        .iter()
        .find(|m| m.id == merchant)
        .is_none_or(|m| m.return_coupon_on_full_refund);
    Ok(state
        .store
        .apply_refund(
            &st.out_refund_no,
            outcome,
            st.refund_id.as_deref(),
            return_coupon,
            state.now_ms(),
        )
        .await?)
}

/// Creates (or repeats) a refund of `order`.
pub async fn create(
    state: &AppState,
    order: &Order,
    amount_fen: i64,
    reason: Option<String>,
    out_refund_no: Option<String>,
) -> Result<Refund, ApiError> {
    let merchant = order.merchant_id.clone().ok_or_else(|| {
        ApiError::unprocessable("order_not_refundable", "the order has not been paid")
    })?;
    let gw = state.gateways.get(&merchant).cloned().ok_or_else(|| {
        ApiError::unprocessable(
            "unknown_merchant",
            format!("merchant {merchant} is not configured"),
        )
    })?;
    if gw.protocol() == Protocol::Legacy {
        return Err(ApiError::unprocessable(
            "refunds_unsupported",
            "the 2014 protocol refunds through Tenpay's partner gateway, which wxpay does not speak; refund in the merchant platform",
        ));
    }
    if let Some(r) = &reason
        && (r.len() > 80 || r.chars().any(|c| c.len_utf8() == 4))
    {
        return Err(ApiError::unprocessable(
            "invalid_reason",
            "reason must be at most 80 bytes, without emoji",
        ));
    }
    let out_refund_no = match out_refund_no {
        Some(n) if valid_out_refund_no(&n) => n,
        Some(_) => {
            return Err(ApiError::unprocessable(
                "invalid_out_refund_no",
                "out_refund_no must be 1-64 of [0-9A-Za-z_-|*@]",
            ));
        }
        None => new_id("rf"),
    };
    let now = state.now_ms();
    let created = state
        .store
        .create_refund(
            &NewRefund {
                order_no: order.order_no.clone(),
                out_refund_no,
                amount_fen,
                reason: reason.clone(),
                next_query_at: Some(now + FIRST_REFUND_QUERY_MS),
            },
            now,
        )
        .await?;
    let refund = match created {
        RefundCreated::New(r) => r,
        RefundCreated::Existing(r) if r.state != "PENDING" => return Ok(r),
        RefundCreated::Existing(r) => r,
    };
    send(state, &merchant, &refund).await?;
    state
        .store
        .get_refund(&refund.out_refund_no)
        .await?
        .ok_or_else(ApiError::internal)
}

/// Sends a PENDING refund to WeChat (first time, or again with the same out_refund_no).
pub async fn send(state: &AppState, merchant: &str, refund: &Refund) -> Result<(), ApiError> {
    let Some(gw) = state.gateways.get(merchant).cloned() else {
        return Ok(());
    };
    let req = RefundRequest {
        out_trade_no: refund.out_trade_no.clone(),
        out_refund_no: refund.out_refund_no.clone(),
        refund: Fen::new(refund.amount_fen),
        total: Fen::new(refund.total_fen),
        reason: refund.reason.clone(),
        notify_url: Some(state.notify_url(merchant)),
    };
    match gw.refund(&req).await {
        Ok(st) => {
            apply_status(state, merchant, &st).await?;
            Ok(())
        }
        Err(GatewayError::Rejected { code, message }) => {
            // WeChat refused this refund for good: nothing is refunded, the reservation goes.
            state
                .store
                .note_refund(
                    &refund.out_refund_no,
                    &format!("{code}: {message}"),
                    state.now_ms(),
                )
                .await?;
            state
                .store
                .apply_refund(
                    &refund.out_refund_no,
                    RefundOutcome::Closed,
                    None,
                    false,
                    state.now_ms(),
                )
                .await?;
            Err(ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "refund_rejected",
                format!("WeChat Pay refused the refund ({code}): {message}"),
            ))
        }
        Err(e) => {
            // Outcome unknown: the refund stays PENDING and is sent again with the same number.
            state
                .store
                .note_refund(&refund.out_refund_no, &e.to_string(), state.now_ms())
                .await?;
            tracing::warn!(out_refund_no = %refund.out_refund_no, error = %e, "refund not confirmed yet");
            Ok(())
        }
    }
}
