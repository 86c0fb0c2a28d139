//! `/v3/pay/transactions/*`: create (app, jsapi, native), query, close.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::{
    ApiError, ApiResult, Caller, canonical, ok_json, opt_int, opt_object, opt_str, parse_object,
    req_int, req_str, rfc3339,
};
use crate::Inner;
use crate::state::{Generation, Order, State as SbState, TradeState};
use wxpay_proto::v3::model::{Payer, Transaction, TransactionAmount};

/// Lifetime of a prepay id.
pub const PREPAY_TTL_SECS: i64 = 7200;
/// Without `time_expire`, an unpaid order can be paid for this long.
pub const ORDER_TTL_SECS: i64 = 7 * 86_400;

#[derive(Clone, Copy, PartialEq, Eq)]
enum TradeType {
    App,
    Jsapi,
    Native,
}

impl TradeType {
    fn as_str(self) -> &'static str {
        match self {
            TradeType::App => "APP",
            TradeType::Jsapi => "JSAPI",
            TradeType::Native => "NATIVE",
        }
    }
}

pub(crate) async fn create_app(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> ApiResult {
    create(&inner, &caller, &body, TradeType::App)
}

pub(crate) async fn create_jsapi(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> ApiResult {
    create(&inner, &caller, &body, TradeType::Jsapi)
}

pub(crate) async fn create_native(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> ApiResult {
    create(&inner, &caller, &body, TradeType::Native)
}

fn valid_out_trade_no(s: &str) -> bool {
    (6..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-|*".contains(&b))
}

pub(crate) fn check_notify_url(
    inner: &Inner,
    v: &Value,
    ptr: &str,
    url: &str,
) -> Result<(), ApiError> {
    let lower = url.to_ascii_lowercase();
    let https = lower.starts_with("https://");
    let http = lower.starts_with("http://");
    let bad = |issue: &str| ApiError::param_value(ptr, &Value::String(url.to_string()), issue);
    if !(https || (http && inner.config.allow_http_notify_url)) {
        return Err(bad("notify_url必须是https地址"));
    }
    let rest = &url[if https { 8 } else { 7 }..];
    if rest.is_empty() || rest.starts_with('/') {
        return Err(bad("notify_url缺少主机名"));
    }
    if url.contains('?') || url.contains('#') {
        return Err(bad("notify_url不能携带参数"));
    }
    let _ = v;
    Ok(())
}

fn parse_rfc3339(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp())
}

fn new_prepay_id(st: &mut SbState, now: i64) -> String {
    format!(
        "wx{}{}0000",
        crate::http_util::beijing_fmt(now, "%d%H%M%S%y"),
        st.random_hex(22)
    )
}

fn create(inner: &Arc<Inner>, caller: &Caller, body: &[u8], tt: TradeType) -> ApiResult {
    let v = parse_object(body)?;
    let now = inner.now();
    let appid = req_str(&v, "/appid", 32)?;
    let mchid = req_str(&v, "/mchid", 32)?;
    let description = req_str(&v, "/description", 127)?;
    let out_trade_no = req_str(&v, "/out_trade_no", 32)?;
    let time_expire = opt_str(&v, "/time_expire", 64)?;
    let attach = opt_str(&v, "/attach", 128)?;
    let notify_url = req_str(&v, "/notify_url", 255)?;
    opt_str(&v, "/goods_tag", 32)?;
    if let Some(x) = v.pointer("/support_fapiao")
        && !x.is_boolean()
    {
        return Err(ApiError::param_value("/support_fapiao", x, "应为布尔值"));
    }
    if opt_object(&v, "/amount")?.is_none() {
        return Err(ApiError::param("/amount", "缺少必填字段", "body"));
    }
    let total = req_int(&v, "/amount/total")?;
    if total <= 0 {
        return Err(ApiError::param_value(
            "/amount/total",
            &json!(total),
            "金额必须大于0",
        ));
    }
    if let Some(c) = opt_str(&v, "/amount/currency", 16)?
        && c != "CNY"
    {
        return Err(ApiError::param_value(
            "/amount/currency",
            &json!(c),
            "Currency code is invalid",
        ));
    }
    opt_object(&v, "/detail")?;
    opt_int(&v, "/detail/cost_price")?;
    let scene = opt_object(&v, "/scene_info")?.cloned();
    if scene.is_some() {
        req_str(&v, "/scene_info/payer_client_ip", 45)?;
        opt_str(&v, "/scene_info/device_id", 32)?;
    }
    opt_object(&v, "/settle_info")?;
    let payer_openid = match tt {
        TradeType::Jsapi => {
            if opt_object(&v, "/payer")?.is_none() {
                return Err(ApiError::param("/payer", "缺少必填字段", "body"));
            }
            Some(req_str(&v, "/payer/openid", 128)?)
        }
        _ => None,
    };
    if mchid != caller.mchid {
        return Err(ApiError::param_value(
            "/mchid",
            &json!(mchid),
            "mchid与请求头中的商户号不一致",
        ));
    }
    let merchant = inner
        .config
        .v3_by_mchid(&mchid)
        .ok_or_else(|| ApiError::new(400, "MCH_NOT_EXISTS", "商户号不存在"))?;
    if !merchant.appids.contains(&appid) {
        return Err(ApiError::new(
            400,
            "APPID_MCHID_NOT_MATCH",
            "appid和mch_id不匹配",
        ));
    }
    if !valid_out_trade_no(&out_trade_no) {
        return Err(ApiError::param_value(
            "/out_trade_no",
            &json!(out_trade_no),
            "只能是6-32位数字、大小写字母或_-|*",
        ));
    }
    check_notify_url(inner, &v, "/notify_url", &notify_url)?;
    let deadline = match &time_expire {
        Some(t) => {
            let at = parse_rfc3339(t).ok_or_else(|| {
                ApiError::param_value(
                    "/time_expire",
                    &json!(t),
                    "时间格式应为RFC3339(yyyy-MM-DDTHH:mm:ss+TIMEZONE)",
                )
            })?;
            if at < now + 60 || at > now + 90 * 86_400 {
                return Err(ApiError::param_value(
                    "/time_expire",
                    &json!(t),
                    "time_expire须在下单时间1分钟后且不超过90天",
                ));
            }
            at
        }
        None => now + ORDER_TTL_SECS,
    };
    let fingerprint = format!("{}:{}", tt.as_str(), canonical(&v));
    let mut st = inner.lock();
    let key = (mchid.clone(), out_trade_no.clone());
    if let Some(&idx) = st.by_out_trade_no.get(&key) {
        let o = &st.orders[idx];
        match o.state {
            TradeState::Success | TradeState::Refund => {
                return Err(ApiError::new(
                    403,
                    "OUT_TRADE_NO_USED",
                    "商户订单号重复，该订单已支付",
                ));
            }
            TradeState::Closed => return Err(ApiError::new(400, "ORDER_CLOSED", "订单已关闭")),
            TradeState::Notpay => {}
        }
        if o.fingerprint != fingerprint {
            return Err(ApiError::new(
                403,
                "OUT_TRADE_NO_USED",
                "商户订单号重复，请核实商户订单号是否重复提交且参数与原订单一致",
            ));
        }
        if now > o.prepay_expires_at {
            let id = new_prepay_id(&mut st, now);
            st.by_prepay.insert(id.clone(), idx);
            let o = &mut st.orders[idx];
            o.prepay_id = id;
            o.prepay_expires_at = now + PREPAY_TTL_SECS;
        }
        let o = &st.orders[idx];
        return ok_json(&prepay_body(tt, o));
    }
    let prepay_id = new_prepay_id(&mut st, now);
    let code_url = (tt == TradeType::Native)
        .then(|| format!("weixin://wxpay/bizpayurl?pr={}", st.random_alnum(7)));
    let idx = st.insert_order(Order {
        generation: Generation::V3,
        merchant: mchid,
        appid,
        out_trade_no,
        trade_type: tt.as_str().into(),
        description,
        attach,
        total,
        notify_url,
        prepay_id,
        prepay_expires_at: now + PREPAY_TTL_SECS,
        created_at: now,
        pay_deadline: deadline,
        state: TradeState::Notpay,
        user_cancelled: false,
        transaction_id: None,
        success_time: None,
        openid: payer_openid,
        fingerprint,
        legacy: None,
        scene_info: scene,
        code_url,
        refunds: Vec::new(),
    });
    ok_json(&prepay_body(tt, &st.orders[idx]))
}

fn prepay_body(tt: TradeType, o: &Order) -> Value {
    match tt {
        TradeType::Native => json!({"code_url": o.code_url.clone().unwrap_or_default()}),
        _ => json!({"prepay_id": o.prepay_id}),
    }
}

fn trade_state_desc(s: TradeState) -> &'static str {
    match s {
        TradeState::Success => "支付成功",
        TradeState::Notpay => "订单未支付",
        TradeState::Closed => "订单已关闭",
        TradeState::Refund => "转入退款",
    }
}

/// The `Transaction` object (query answer and decrypted payment notification).
pub(crate) fn transaction(o: &Order) -> Transaction {
    let paid = o.state.is_paid();
    let payer = o
        .openid
        .as_ref()
        .filter(|_| paid || o.trade_type == "JSAPI")
        .map(|openid| Payer {
            openid: openid.clone(),
        });
    Transaction {
        appid: o.appid.clone(),
        mchid: o.merchant.clone(),
        out_trade_no: o.out_trade_no.clone(),
        transaction_id: if paid { o.transaction_id.clone() } else { None },
        trade_type: Some(o.trade_type.clone()),
        trade_state: o.state.as_str().to_string(),
        trade_state_desc: Some(trade_state_desc(o.state).to_string()),
        bank_type: paid.then(|| "OTHERS".to_string()),
        attach: o.attach.clone(),
        success_time: if paid {
            o.success_time.map(rfc3339)
        } else {
            None
        },
        payer,
        amount: Some(TransactionAmount {
            total: o.total,
            payer_total: paid.then_some(o.total),
            currency: Some("CNY".into()),
            payer_currency: paid.then(|| "CNY".to_string()),
        }),
        scene_info: o
            .scene_info
            .as_ref()
            .and_then(|s| s.get("device_id"))
            .map(|d| json!({"device_id": d})),
        promotion_detail: None,
    }
}

pub(crate) fn transaction_json(o: &Order) -> Value {
    serde_json::to_value(transaction(o)).unwrap_or(Value::Null)
}

fn find_v3(st: &SbState, mchid: &str, f: impl Fn(&Order) -> bool) -> Option<usize> {
    st.orders
        .iter()
        .position(|o| o.generation == Generation::V3 && o.merchant == mchid && f(o))
}

pub(crate) async fn query_by_out_trade_no(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    Path(no): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    super::check_query_mchid(q.as_deref(), &caller)?;
    let st = inner.lock();
    let idx = st
        .by_out_trade_no
        .get(&(caller.mchid.clone(), no))
        .copied()
        .filter(|&i| st.orders[i].generation == Generation::V3)
        .ok_or_else(|| ApiError::new(404, "ORDER_NOT_EXIST", "订单不存在"))?;
    ok_json(&transaction_json(&st.orders[idx]))
}

pub(crate) async fn query_by_id(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    super::check_query_mchid(q.as_deref(), &caller)?;
    let st = inner.lock();
    let idx = find_v3(&st, &caller.mchid, |o| {
        o.transaction_id.as_deref() == Some(id.as_str())
    })
    .ok_or_else(|| ApiError::new(404, "ORDER_NOT_EXIST", "订单不存在"))?;
    ok_json(&transaction_json(&st.orders[idx]))
}

pub(crate) async fn close(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    Path(no): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    let v = parse_object(&body)?;
    let mchid = req_str(&v, "/mchid", 32)?;
    if mchid != caller.mchid {
        return Err(ApiError::param_value(
            "/mchid",
            &json!(mchid),
            "mchid与请求头中的商户号不一致",
        ));
    }
    let mut st = inner.lock();
    let idx = st
        .by_out_trade_no
        .get(&(caller.mchid.clone(), no))
        .copied()
        .filter(|&i| st.orders[i].generation == Generation::V3)
        .ok_or_else(|| ApiError::new(404, "ORDER_NOT_EXIST", "订单不存在"))?;
    match st.orders[idx].state {
        TradeState::Success | TradeState::Refund => {
            Err(ApiError::new(403, "TRADE_ERROR", "订单已支付，不能关闭"))
        }
        _ => {
            st.orders[idx].state = TradeState::Closed;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
    }
}
