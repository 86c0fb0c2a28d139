//! `GET /v3/bill/tradebill` and the download URL (`/v3/billdownload/file?token=`).
//!
//! Bills exist for any past Beijing day up to 93 days back that has successful payments or
//! refunds of the merchant (`NO_STATEMENT_EXIST` otherwise); today's bill is `STATEMENT_CREATING`.
//! The layout is always the `ALL` layout (`bill_type` filters the rows). Download links are valid
//! for 5 minutes of sandbox time; the file is gzip-compressed with `tar_type=GZIP`, and
//! `hash_value` is the SHA-1 of the uncompressed CSV.

use std::io::Write;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use serde_json::{Value, json};
use wxpay_proto::bill::{TradeBill, TradeBillRow, TradeBillSummary, render_trade_bill};
use wxpay_proto::money::Fen;
use wxpay_proto::v3::model::BillResponse;

use super::{ApiError, ApiResult, Caller, ok_json};
use crate::Inner;
use crate::clock::beijing_day;
use crate::http_util::{base_url, beijing_datetime, bytes_response, query_map};
use crate::state::{Generation, RefundStatus};

/// How long a download URL works.
pub const DOWNLOAD_TTL_SECS: i64 = 300;

pub(crate) struct BillFile {
    pub mchid: String,
    pub bytes: Vec<u8>,
    pub expires_at: i64,
}

/// Fee at 0.60 %, rounded half up to the fen.
fn fee_fen(amount: i64) -> i64 {
    (amount * 6 + 500).div_euclid(1000)
}

pub(crate) async fn tradebill(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let q = query_map(q.as_deref());
    let bad = |f: &str, issue: &str| ApiError::param(f, issue, "query");
    let date_s = q
        .get("bill_date")
        .ok_or_else(|| bad("bill_date", "缺少必填参数bill_date"))?;
    let date = chrono::NaiveDate::parse_from_str(date_s, "%Y-%m-%d")
        .ok()
        .filter(|_| date_s.len() == 10)
        .ok_or_else(|| bad("bill_date", "日期格式应为yyyy-MM-DD"))?;
    let bill_type = q.get("bill_type").map(String::as_str).unwrap_or("ALL");
    if !["ALL", "SUCCESS", "REFUND"].contains(&bill_type) {
        return Err(bad("bill_type", "bill_type只能是ALL、SUCCESS或REFUND"));
    }
    let gzip = match q.get("tar_type").map(String::as_str) {
        None => false,
        Some("GZIP") => true,
        Some(_) => return Err(bad("tar_type", "tar_type只能是GZIP")),
    };
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    let day = (date - epoch).num_days();
    let now = inner.now();
    let today = beijing_day(now);
    if day > today || day < today - 93 {
        return Err(ApiError::new(
            400,
            "INVALID_REQUEST",
            "账单日期不合法，仅支持下载三个月内的账单",
        ));
    }
    if day == today {
        return Err(ApiError::new(
            400,
            "STATEMENT_CREATING",
            "账单生成中，请稍后再试",
        ));
    }
    let mut st = inner.lock();
    let mut rows = Vec::new();
    let zero = Fen::ZERO;
    for o in st
        .orders
        .iter()
        .filter(|o| o.generation == Generation::V3 && o.merchant == caller.mchid)
    {
        let base = |time: i64| TradeBillRow {
            trade_time: beijing_datetime(time),
            appid: o.appid.clone(),
            mchid: o.merchant.clone(),
            sub_mchid: "0".into(),
            device_info: String::new(),
            transaction_id: o.transaction_id.clone().unwrap_or_default(),
            out_trade_no: o.out_trade_no.clone(),
            openid: o.openid.clone().unwrap_or_default(),
            trade_type: o.trade_type.clone(),
            trade_state: "SUCCESS".into(),
            bank_type: "OTHERS".into(),
            currency: "CNY".into(),
            settlement_total: Fen::new(o.total),
            coupon_amount: zero,
            refund_id: String::new(),
            out_refund_no: String::new(),
            refund_amount: zero,
            recharge_coupon_refund: zero,
            refund_type: String::new(),
            refund_status: String::new(),
            body: o.description.clone(),
            attach: o.attach.clone().unwrap_or_default(),
            fee: Fen::new(fee_fen(o.total)).to_yuan_string(),
            fee_rate: "0.60%".into(),
            order_amount: Fen::new(o.total),
            requested_refund: zero,
            fee_remark: String::new(),
        };
        if bill_type != "REFUND"
            && let Some(t) = o.success_time.filter(|&t| beijing_day(t) == day)
        {
            rows.push(base(t));
        }
        if bill_type != "SUCCESS" {
            for &ri in &o.refunds {
                let r = &st.refunds[ri];
                if r.status != RefundStatus::Success {
                    continue;
                }
                let Some(t) = r.success_time.filter(|&t| beijing_day(t) == day) else {
                    continue;
                };
                let mut row = base(t);
                row.trade_state = "REFUND".into();
                row.settlement_total = zero;
                row.refund_id = r.refund_id.clone();
                row.out_refund_no = r.out_refund_no.clone();
                row.refund_amount = Fen::new(r.amount);
                row.refund_type = "ORIGINAL".into();
                row.refund_status = "SUCCESS".into();
                row.fee = Fen::new(-fee_fen(r.amount)).to_yuan_string();
                row.order_amount = zero;
                row.requested_refund = Fen::new(r.amount);
                rows.push(row);
            }
        }
    }
    if rows.is_empty() {
        return Err(ApiError::new(400, "NO_STATEMENT_EXIST", "当日无账单"));
    }
    let sum = |f: &dyn Fn(&TradeBillRow) -> Fen| Fen::new(rows.iter().map(|r| f(r).get()).sum());
    let fee_total: i64 = rows
        .iter()
        .map(|r| Fen::parse_yuan(&r.fee).map(Fen::get).unwrap_or(0))
        .sum();
    let summary = TradeBillSummary {
        total_count: rows.len() as u64,
        settlement_total: sum(&|r| r.settlement_total),
        refund_total: sum(&|r| r.refund_amount),
        recharge_coupon_refund_total: zero,
        fee_total: Fen::new(fee_total).to_yuan_string(),
        order_total: sum(&|r| r.order_amount),
        requested_refund_total: sum(&|r| r.requested_refund),
    };
    let csv = render_trade_bill(&TradeBill { rows, summary });
    let hash = {
        use sha1::Digest;
        hex::encode(sha1::Sha1::digest(csv.as_bytes()))
    };
    let bytes = if gzip {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(csv.as_bytes())
            .map_err(|_| ApiError::system_error())?;
        enc.finish().map_err(|_| ApiError::system_error())?
    } else {
        csv.into_bytes()
    };
    let token = st.random_alnum(40);
    st.bills.insert(
        token.clone(),
        BillFile {
            mchid: caller.mchid.clone(),
            bytes,
            expires_at: now + DOWNLOAD_TTL_SECS,
        },
    );
    let resp = BillResponse {
        hash_type: "SHA1".into(),
        hash_value: hash,
        download_url: format!("{}/v3/billdownload/file?token={token}", base_url(&headers)),
    };
    ok_json(&serde_json::to_value(resp).unwrap_or(Value::Null))
}

pub(crate) async fn download(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let q = query_map(q.as_deref());
    let token = q
        .get("token")
        .ok_or_else(|| ApiError::param("token", "缺少必填参数token", "query"))?;
    let now = inner.now();
    let st = inner.lock();
    match st.bills.get(token) {
        Some(f) if f.mchid == caller.mchid && now <= f.expires_at => Ok(bytes_response(
            200,
            "application/octet-stream",
            f.bytes.clone(),
        )),
        Some(f) if f.mchid == caller.mchid => Err(ApiError::new(
            400,
            "INVALID_REQUEST",
            "下载链接已过期，请重新申请",
        )),
        _ => Err(ApiError {
            detail: Some(json!({"field": "token", "location": "query"})),
            ..ApiError::new(404, "RESOURCE_NOT_EXISTS", "账单文件不存在")
        }),
    }
}
