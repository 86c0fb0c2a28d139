//! `/v3/refund/domestic/refunds`: create and query; outcomes decided by the refund rule.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use serde_json::{Value, json};
use wxpay_proto::v3::model::{
    Refund as RefundModel, RefundAmount, RefundNotification, RefundNotificationAmount,
};

use super::{
    ApiError, ApiResult, Caller, ok_json, opt_str, parse_object, req_int, req_str, rfc3339,
};
use crate::Inner;
use crate::error::SandboxError;
use crate::faults::counter;
use crate::notify::{NotificationKind, spawn_delivery};
use crate::state::{Generation, Refund, RefundStatus, RefundView, State as SbState, TradeState};

/// At most this many refunds per order.
pub const MAX_REFUNDS_PER_ORDER: usize = 50;
/// Refunds are accepted up to a year after payment.
pub const REFUND_WINDOW_SECS: i64 = 365 * 86_400;

fn valid_out_refund_no(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-|*@".contains(&b))
}

pub(crate) fn refund_model(st: &SbState, idx: usize) -> RefundModel {
    let r = &st.refunds[idx];
    let o = &st.orders[r.order];
    RefundModel {
        refund_id: r.refund_id.clone(),
        out_refund_no: r.out_refund_no.clone(),
        transaction_id: o.transaction_id.clone().unwrap_or_default(),
        out_trade_no: o.out_trade_no.clone(),
        channel: Some("ORIGINAL".into()),
        user_received_account: Some("支付用户零钱".into()),
        success_time: r.success_time.map(rfc3339),
        create_time: Some(rfc3339(r.create_time)),
        status: r.status.as_str().into(),
        funds_account: Some(
            r.funds_account
                .clone()
                .unwrap_or_else(|| "AVAILABLE".into()),
        ),
        amount: RefundAmount {
            total: o.total,
            refund: r.amount,
            payer_total: Some(o.total),
            payer_refund: Some(r.amount),
            settlement_refund: Some(r.amount),
            settlement_total: Some(o.total),
            discount_refund: Some(0),
            currency: Some("CNY".into()),
            from: Some(Vec::new()),
        },
        promotion_detail: Some(Vec::new()),
    }
}

fn refund_json(st: &SbState, idx: usize) -> Value {
    serde_json::to_value(refund_model(st, idx)).unwrap_or(Value::Null)
}

pub(crate) async fn create(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> ApiResult {
    let v = parse_object(&body)?;
    let transaction_id = opt_str(&v, "/transaction_id", 32)?;
    let out_trade_no = opt_str(&v, "/out_trade_no", 32)?;
    if transaction_id.is_none() && out_trade_no.is_none() {
        return Err(ApiError::param(
            "/out_trade_no",
            "transaction_id和out_trade_no必须二选一",
            "body",
        ));
    }
    let out_refund_no = req_str(&v, "/out_refund_no", 64)?;
    if !valid_out_refund_no(&out_refund_no) {
        return Err(ApiError::param_value(
            "/out_refund_no",
            &json!(out_refund_no),
            "只能是数字、大小写字母或_-|*@",
        ));
    }
    opt_str(&v, "/reason", 80)?;
    let notify_url = opt_str(&v, "/notify_url", 256)?;
    if let Some(u) = &notify_url {
        super::pay::check_notify_url(&inner, &v, "/notify_url", u)?;
    }
    let funds_account = opt_str(&v, "/funds_account", 32)?;
    if super::opt_object(&v, "/amount")?.is_none() {
        return Err(ApiError::param("/amount", "缺少必填字段", "body"));
    }
    let amount = req_int(&v, "/amount/refund")?;
    let total = req_int(&v, "/amount/total")?;
    let currency = req_str(&v, "/amount/currency", 16)?;
    if amount <= 0 {
        return Err(ApiError::param_value(
            "/amount/refund",
            &json!(amount),
            "退款金额必须大于0",
        ));
    }
    if total <= 0 {
        return Err(ApiError::param_value(
            "/amount/total",
            &json!(total),
            "订单金额必须大于0",
        ));
    }
    if currency != "CNY" {
        return Err(ApiError::param_value(
            "/amount/currency",
            &json!(currency),
            "Currency code is invalid",
        ));
    }
    if let Some(x) = v.pointer("/goods_detail")
        && !x.is_array()
    {
        return Err(ApiError::param_value("/goods_detail", x, "应为数组"));
    }
    let now = inner.now();
    let (ridx, rule, view) = {
        let mut st = inner.lock();
        if st
            .faults
            .for_merchant(&[caller.mchid.as_str()])
            .refund_not_enough
        {
            st.count(counter::REFUND_NOT_ENOUGH);
            return Err(ApiError::new(
                403,
                "NOT_ENOUGH",
                "基本账户余额不足，请充值后重新发起",
            ));
        }
        let oidx = st
            .orders
            .iter()
            .position(|o| {
                o.generation == Generation::V3
                    && o.merchant == caller.mchid
                    && match (&transaction_id, &out_trade_no) {
                        (Some(t), _) => o.transaction_id.as_deref() == Some(t.as_str()),
                        (None, Some(n)) => &o.out_trade_no == n,
                        (None, None) => false,
                    }
            })
            .ok_or_else(|| ApiError::new(404, "RESOURCE_NOT_EXISTS", "订单不存在"))?;
        let fingerprint = format!("{oidx}:{amount}:{total}");
        if let Some(&r) = st
            .by_out_refund_no
            .get(&(caller.mchid.clone(), out_refund_no.clone()))
        {
            if st.refunds[r].fingerprint == fingerprint {
                return ok_json(&refund_json(&st, r));
            }
            return Err(ApiError::new(
                400,
                "INVALID_REQUEST",
                "退款单号已存在，且请求参数与原退款单不一致",
            ));
        }
        let o = &st.orders[oidx];
        if !o.state.is_paid() {
            return Err(ApiError::new(
                404,
                "RESOURCE_NOT_EXISTS",
                "订单未支付，无法退款",
            ));
        }
        if total != o.total {
            return Err(ApiError::param_value(
                "/amount/total",
                &json!(total),
                "订单金额与原订单金额不一致",
            ));
        }
        if o.success_time.is_some_and(|t| now > t + REFUND_WINDOW_SECS) {
            return Err(ApiError::new(400, "INVALID_REQUEST", "订单已超过退款期限"));
        }
        if o.refunds.len() >= MAX_REFUNDS_PER_ORDER {
            return Err(ApiError::new(400, "INVALID_REQUEST", "退款次数超过限制"));
        }
        let interval = inner.config.refund_min_interval_secs;
        let last = o.refunds.iter().map(|&r| st.refunds[r].create_time).max();
        if interval > 0 && last.is_some_and(|t| now - t < interval) {
            return Err(ApiError::new(
                429,
                "FREQUENCY_LIMITED",
                "同一订单的两次退款需间隔1分钟以上",
            ));
        }
        if amount > o.total - st.refunded_total(oidx) {
            return Err(ApiError::new(
                400,
                "INVALID_REQUEST",
                "申请退款金额超过订单可退金额",
            ));
        }
        let refund_id = format!("503{}", st.random_digits(26));
        let ridx = st.refunds.len();
        st.refunds.push(Refund {
            mchid: caller.mchid.clone(),
            out_refund_no: out_refund_no.clone(),
            refund_id,
            order: oidx,
            amount,
            notify_url,
            status: RefundStatus::Processing,
            create_time: now,
            success_time: None,
            funds_account,
            fingerprint,
        });
        st.by_out_refund_no
            .insert((caller.mchid.clone(), out_refund_no), ridx);
        st.orders[oidx].refunds.push(ridx);
        st.orders[oidx].state = TradeState::Refund;
        let rule = st
            .refund_rules
            .get(&caller.mchid)
            .cloned()
            .unwrap_or_else(|| st.refund_rule.clone());
        (ridx, rule, refund_json(&st, ridx))
    };
    let status = match rule.outcome.as_str() {
        "SUCCESS" => Some(RefundStatus::Success),
        "ABNORMAL" => Some(RefundStatus::Abnormal),
        "CLOSED" => Some(RefundStatus::Closed),
        _ => None,
    };
    schedule(&inner, ridx, status, rule.delay_secs);
    ok_json(&view)
}

/// Decide refund `ridx` as `status` after `delay_secs` (scaled); None leaves it to the control API.
fn schedule(inner: &Arc<Inner>, ridx: usize, status: Option<RefundStatus>, delay_secs: f64) {
    if let Some(status) = status {
        let inner2 = inner.clone();
        let delay = inner.scaled(delay_secs);
        tokio::spawn(async move {
            let mut shutdown = inner2.shutdown.subscribe();
            tokio::select! {
                _ = tokio::time::sleep(delay) => { let _ = finish_refund(&inner2, ridx, status); }
                _ = shutdown.changed() => {}
            }
        });
    }
}

/// `POST /v3/refund/domestic/refunds/{refund_id}/apply-abnormal-refund`: an ABNORMAL refund is
/// sent again (to the user's or the merchant's bank card) and then ends as the refund rule says
/// (an `ABNORMAL` rule counts as `SUCCESS` here).
pub(crate) async fn apply_abnormal(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    Path(refund_id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    let v = parse_object(&body)?;
    let out_refund_no = req_str(&v, "/out_refund_no", 64)?;
    let kind = req_str(&v, "/type", 32)?;
    if kind != "USER_BANK_CARD" && kind != "MERCHANT_BANK_CARD" {
        return Err(ApiError::param_value(
            "/type",
            &json!(kind),
            "type只能是USER_BANK_CARD或MERCHANT_BANK_CARD",
        ));
    }
    if kind == "MERCHANT_BANK_CARD" {
        req_str(&v, "/bank_type", 32)?;
        req_str(&v, "/bank_account", 1024)?;
        req_str(&v, "/real_name", 1024)?;
    }
    let (ridx, rule, view) = {
        let mut st = inner.lock();
        let ridx = st
            .refunds
            .iter()
            .position(|r| r.mchid == caller.mchid && r.refund_id == refund_id)
            .ok_or_else(|| ApiError::new(404, "RESOURCE_NOT_EXISTS", "退款单不存在"))?;
        if st.refunds[ridx].out_refund_no != out_refund_no {
            return Err(ApiError::param_value(
                "/out_refund_no",
                &json!(out_refund_no),
                "out_refund_no与refund_id不匹配",
            ));
        }
        if st.refunds[ridx].status != RefundStatus::Abnormal {
            return Err(ApiError::new(
                400,
                "INVALID_REQUEST",
                "退款单状态不是ABNORMAL，无法发起异常退款",
            ));
        }
        st.refunds[ridx].status = RefundStatus::Processing;
        let rule = st
            .refund_rules
            .get(&caller.mchid)
            .cloned()
            .unwrap_or_else(|| st.refund_rule.clone());
        (ridx, rule, refund_json(&st, ridx))
    };
    let status = match rule.outcome.as_str() {
        "SUCCESS" | "ABNORMAL" => Some(RefundStatus::Success),
        "CLOSED" => Some(RefundStatus::Closed),
        _ => None,
    };
    schedule(&inner, ridx, status, rule.delay_secs);
    ok_json(&view)
}

pub(crate) async fn query(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    Path(no): Path<String>,
) -> ApiResult {
    let st = inner.lock();
    let r = st
        .by_out_refund_no
        .get(&(caller.mchid.clone(), no))
        .copied()
        .ok_or_else(|| ApiError::new(404, "RESOURCE_NOT_EXISTS", "退款单不存在"))?;
    ok_json(&refund_json(&st, r))
}

/// Decide a refund (from the rule's timer or the control API) and notify the merchant.
pub(crate) fn finish_refund(
    inner: &Arc<Inner>,
    idx: usize,
    status: RefundStatus,
) -> Result<RefundView, SandboxError> {
    let now = inner.now();
    let (view, notification) = {
        let mut st = inner.lock();
        let r = st
            .refunds
            .get(idx)
            .cloned()
            .ok_or_else(|| SandboxError::NotFound("refund".into()))?;
        if matches!(r.status, RefundStatus::Success | RefundStatus::Closed) {
            return Err(SandboxError::Conflict(format!(
                "refund {} is already {}",
                r.out_refund_no,
                r.status.as_str()
            )));
        }
        if r.status == status {
            return Ok(st.refund_view(idx));
        }
        st.refunds[idx].status = status;
        if status == RefundStatus::Success {
            st.refunds[idx].success_time = Some(now);
        }
        if status == RefundStatus::Closed {
            let oidx = r.order;
            let any_live = st.orders[oidx]
                .refunds
                .iter()
                .any(|&x| st.refunds[x].status != RefundStatus::Closed);
            if !any_live {
                st.orders[oidx].state = TradeState::Success;
            }
        }
        let url = r.notify_url.clone().or_else(|| {
            inner
                .config
                .v3_by_mchid(&r.mchid)
                .and_then(|m| m.refund_notify_url.clone())
        });
        let notification = match url {
            Some(url) => {
                let o = st.orders[r.order].clone();
                let resource = RefundNotification {
                    mchid: r.mchid.clone(),
                    out_trade_no: o.out_trade_no.clone(),
                    transaction_id: o.transaction_id.clone().unwrap_or_default(),
                    out_refund_no: r.out_refund_no.clone(),
                    refund_id: r.refund_id.clone(),
                    refund_status: status.as_str().into(),
                    success_time: st.refunds[idx].success_time.map(rfc3339),
                    user_received_account: Some("支付用户零钱".into()),
                    amount: RefundNotificationAmount {
                        total: o.total,
                        refund: r.amount,
                        payer_total: o.total,
                        payer_refund: r.amount,
                    },
                };
                let (event, summary) = match status {
                    RefundStatus::Success => ("REFUND.SUCCESS", "退款成功"),
                    RefundStatus::Abnormal => ("REFUND.ABNORMAL", "退款异常"),
                    _ => ("REFUND.CLOSED", "退款关闭"),
                };
                Some(super::notify::build(
                    inner,
                    &mut st,
                    &r.mchid,
                    &url,
                    NotificationKind::Refund,
                    event,
                    summary,
                    "refund",
                    &resource,
                    &o.out_trade_no,
                    Some(&r.out_refund_no),
                )?)
            }
            None => None,
        };
        (st.refund_view(idx), notification)
    };
    tracing::info!(out_refund_no = %view.out_refund_no, status = %view.status, "sandbox: refund decided");
    if let Some(n) = notification {
        spawn_delivery(inner, n);
    }
    Ok(view)
}
