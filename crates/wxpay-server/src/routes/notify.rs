//! `POST /notify/{merchant}`: WeChat's signed notification. Raw bytes are verified, every
//! notification is kept as a receipt, and "success" is answered only after the commit.

use super::State;
use crate::payments;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State as S};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use wxpay_gateway::{InboundNotify, Notification};
use wxpay_store::{NewReceipt, PaidSource};

fn reply(r: wxpay_gateway::NotifyReply) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [("content-type", r.content_type)], r.body).into_response()
}

pub async fn notify(
    S(state): S<State>,
    Path(merchant): Path<String>,
    RawQuery(query): RawQuery,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(gw) = state.gateways.get(&merchant).cloned() else {
        // Not a configured merchant: the label must not echo the path.
        crate::metrics::notification("unknown", "unknown_merchant");
        return (StatusCode::NOT_FOUND, "unknown merchant").into_response();
    };
    let count = |result: &str| crate::metrics::notification(&merchant, result);
    let header_pairs: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_ascii_lowercase(), v.to_string()))
        })
        .collect();
    let inbound = InboundNotify {
        query: query.as_deref(),
        headers: &header_pairs,
        body: &body,
    };
    let verified = gw.verify_notify_async(&inbound).await;
    let kept_headers: Vec<&(String, String)> = header_pairs
        .iter()
        .filter(|(k, _)| k.starts_with("wechatpay-") || k == "content-type" || k == "request-id")
        .collect();
    let mut receipt = NewReceipt {
        merchant_id: merchant.clone(),
        kind: "payment".into(),
        remote_addr: Some(remote.ip().to_string()),
        query: query.clone(),
        headers_json: serde_json::to_string(&kept_headers).ok(),
        body: body.to_vec(),
        verified: verified.is_ok(),
        outcome: "received".into(),
        detail: None,
        out_trade_no: None,
        transaction_id: None,
    };
    match &verified {
        Err(e) => {
            receipt.outcome = "rejected".into();
            receipt.detail = Some(e.to_string());
            // For audit only: what the unverified notification claims to be about.
            receipt.out_trade_no = claimed_out_trade_no(query.as_deref());
        }
        Ok(Notification::Payment(p)) => {
            receipt.out_trade_no = Some(p.out_trade_no.clone());
            receipt.transaction_id = Some(p.transaction_id.clone());
            if !p.success {
                receipt.outcome = "not_success".into();
            }
        }
        Ok(Notification::Refund(r)) => {
            receipt.kind = "refund".into();
            receipt.out_trade_no = Some(r.out_trade_no.clone());
        }
    }
    let now = state.now_ms();
    let receipt_id = match state.store.insert_receipt(&receipt, now).await {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(error = %e, %merchant, "could not store a notification receipt");
            count("error");
            return reply(gw.notify_reply(false));
        }
    };
    match verified {
        Err(e) => {
            tracing::warn!(%merchant, receipt_id, reason = %e, "notification refused");
            count("rejected");
            reply(gw.notify_reply(false))
        }
        Ok(Notification::Payment(p)) if !p.success => {
            count("not_success");
            reply(gw.notify_reply(true))
        }
        Ok(Notification::Payment(p)) => {
            match payments::record_success(
                &state,
                &merchant,
                &p.out_trade_no,
                &p.transaction_id,
                p.amount.get(),
                PaidSource::Notify,
                Some(receipt_id),
            )
            .await
            {
                // Committed (or already recorded, or kept as an anomaly): WeChat may stop.
                Ok(out) => {
                    count(out.as_str());
                    reply(gw.notify_reply(true))
                }
                Err(e) => {
                    tracing::error!(%merchant, receipt_id, error = %e.message, "notification not applied");
                    count("error");
                    reply(gw.notify_reply(false))
                }
            }
        }
        Ok(Notification::Refund(r)) => {
            let ours = match state.store.get_refund(&r.out_refund_no).await {
                Ok(found) => found,
                Err(e) => {
                    tracing::error!(%merchant, error = %e, "refund lookup failed");
                    count("error");
                    return reply(gw.notify_reply(false));
                }
            };
            match ours {
                Some(known)
                    if known.merchant_id == merchant && known.amount_fen == r.refund.get() =>
                {
                    let st = wxpay_gateway::RefundStatus {
                        out_refund_no: r.out_refund_no.clone(),
                        refund_id: Some(r.refund_id.clone()),
                        status: r.status.clone(),
                        refund: r.refund,
                    };
                    match crate::refunds::apply_status(&state, &merchant, &st).await {
                        Ok(changed) => {
                            count(if changed {
                                "refund_applied"
                            } else {
                                "refund_duplicate"
                            });
                            reply(gw.notify_reply(true))
                        }
                        Err(e) => {
                            tracing::error!(%merchant, error = %e.message, "refund notification not applied");
                            count("error");
                            reply(gw.notify_reply(false))
                        }
                    }
                }
                _ => {
                    // Verified, but not a refund we asked for (or another amount): keep the
                    // receipt for review and stop the retries.
                    tracing::warn!(%merchant, out_refund_no = %r.out_refund_no, "refund notification matches no refund of ours");
                    count("refund_unmatched");
                    reply(gw.notify_reply(true))
                }
            }
        }
    }
}

/// The `out_trade_no` an unverified legacy notification names in its query string, if any.
fn claimed_out_trade_no(query: Option<&str>) -> Option<String> {
    let q = query?;
    let cs = wxpay_proto::form::parse_query(q, wxpay_proto::Charset::Utf8)
        .or_else(|_| wxpay_proto::form::parse_query(q, wxpay_proto::Charset::Gbk))
        .ok()?;
    cs.get("out_trade_no").filter(|v| v.len() <= 64).cloned()
}
