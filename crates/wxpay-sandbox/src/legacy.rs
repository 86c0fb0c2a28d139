//! The legacy 2014 open-platform APP payment (PROTOCOL.md A): `/cgi-bin/token`,
//! `/pay/genprepay`, `/pay/orderquery` and the Tenpay-style payment notification.
//! The error codes are tabled in the crate documentation.

#![allow(clippy::result_large_err)] // handlers answer early with a ready Response

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::middleware::from_fn_with_state;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};
use wxpay_proto::SecretString;
use wxpay_proto::form::Charset;
use wxpay_proto::legacy::{
    NotifyUser, OrderInfo, OrderQueryResponse, build_notify_query, build_notify_xml, format_time,
    parse_package, parse_time, verify_app_signature,
};

use crate::config::LegacyMerchant;
use crate::error::SandboxError;
use crate::faults::counter;
use crate::http_util::{json_response, query_map};
use crate::notify::{Notification, NotificationKind, Prepare, PreparedRequest, Variant};
use crate::state::{Generation, LegacyOrder, Order, State as SbState, TokenEntry, TradeState};
use crate::{Inner, control};

/// Lifetime of an access_token.
pub const TOKEN_TTL_SECS: i64 = 7200;
/// Lifetime of a prepay id.
pub const PREPAY_TTL_SECS: i64 = 7200;
/// An unpaid order stops being payable after this long (unless `time_expire` says otherwise).
pub const ORDER_TTL_SECS: i64 = 7 * 86_400;

pub(crate) fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/cgi-bin/token", get(token))
        .route("/pay/genprepay", post(genprepay))
        .route("/pay/orderquery", post(orderquery))
        .route("/pay/delivernotify", post(delivernotify))
        .layer(from_fn_with_state(
            inner.clone(),
            crate::fault_layer::endpoint_faults,
        ))
        .with_state(inner)
}

fn errcode(code: i64, msg: impl Into<String>) -> Response {
    json_response(200, &json!({"errcode": code, "errmsg": msg.into()}))
}

fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_string())
}

async fn token(State(inner): State<Arc<Inner>>, RawQuery(q): RawQuery) -> Response {
    let q = query_map(q.as_deref());
    if q.get("grant_type").map(String::as_str) != Some("client_credential") {
        return errcode(40002, "invalid grant_type");
    }
    let Some(appid) = q.get("appid").filter(|s| !s.is_empty()) else {
        return errcode(41002, "appid missing");
    };
    let Some(given_secret) = q.get("secret").filter(|s| !s.is_empty()) else {
        return errcode(41004, "appsecret missing");
    };
    let Some(m) = inner.config.legacy_by_appid(appid) else {
        return errcode(40013, "invalid appid");
    };
    let now = inner.now();
    let mut st = inner.lock();
    let book = st.tokens.entry(appid.clone()).or_default();
    book.fetch_count += 1;
    if !wxpay_proto::form::ct_eq(given_secret, &m.app_secret) {
        return errcode(40001, "invalid credential, appsecret is invalid");
    }
    let ids = [m.partner.as_str(), m.appid.as_str()];
    if st.faults.for_merchant(&ids).token_quota_exhausted {
        st.count(counter::TOKEN_QUOTA);
        return errcode(45009, "reach max api daily quota limit");
    }
    let day = crate::clock::beijing_day(now);
    let book = st.tokens.entry(appid.clone()).or_default();
    if book.day != day {
        book.day = day;
        book.issued_today = 0;
    }
    if book.issued_today >= m.token_daily_quota {
        return errcode(45009, "reach max api daily quota limit");
    }
    book.issued_today += 1;
    let previous = book.current.take();
    let token = st.random_alnum(128);
    let overlap = inner.config.token_overlap_secs.max(0);
    if let Some(prev) = previous
        && let Some(e) = st.token_index.get_mut(&prev)
    {
        let end = (now + overlap).min(e.expires_at);
        e.revoked_at = Some(e.revoked_at.map_or(end, |r| r.min(end)));
    }
    st.token_index.insert(
        token.clone(),
        TokenEntry {
            appid: appid.clone(),
            expires_at: now + TOKEN_TTL_SECS,
            revoked_at: None,
        },
    );
    st.tokens.entry(appid.clone()).or_default().current = Some(token.clone());
    json_response(
        200,
        &json!({"access_token": token, "expires_in": TOKEN_TTL_SECS}),
    )
}

/// Invalidate every live token of `appid`; returns how many.
pub(crate) fn invalidate_tokens(inner: &Inner, appid: &str) -> usize {
    let now = inner.now();
    let mut st = inner.lock();
    let mut n = 0;
    for e in st.token_index.values_mut() {
        if e.appid == appid && e.revoked_at.is_none_or(|r| r > now) && e.expires_at > now {
            e.revoked_at = Some(now);
            n += 1;
        }
    }
    if let Some(b) = st.tokens.get_mut(appid) {
        b.current = None;
    }
    n
}

/// Check `?access_token=`; returns the legacy merchant it belongs to.
fn check_token(inner: &Inner, q: Option<&str>) -> Result<LegacyMerchant, Response> {
    let q = query_map(q);
    let Some(token) = q.get("access_token").filter(|t| !t.is_empty()) else {
        return Err(errcode(41001, "access_token missing"));
    };
    let now = inner.now();
    let mut st = inner.lock();
    let Some(entry) = st.token_index.get(token).cloned() else {
        return Err(errcode(
            40001,
            "invalid credential, access_token is invalid or not latest",
        ));
    };
    if entry.revoked_at.is_some_and(|r| now >= r) {
        return Err(errcode(
            40001,
            "invalid credential, access_token is invalid or not latest",
        ));
    }
    if now >= entry.expires_at {
        return Err(errcode(42001, "access_token expired"));
    }
    let Some(m) = inner.config.legacy_by_appid(&entry.appid).cloned() else {
        return Err(errcode(40013, "invalid appid"));
    };
    let p = st
        .faults
        .for_merchant(&[m.partner.as_str(), m.appid.as_str()])
        .token_early_invalidation;
    if st.draw(p) {
        st.count(counter::TOKEN_EARLY);
        if let Some(e) = st.token_index.get_mut(token) {
            e.revoked_at = Some(now);
            e.expires_at = e.expires_at.min(now);
        }
        if let Some(b) = st.tokens.get_mut(&m.appid)
            && b.current.as_deref() == Some(token.as_str())
        {
            b.current = None;
        }
        return Err(errcode(42001, "access_token expired"));
    }
    Ok(m)
}

/// The JSON body as an object of strings; the named fields must be present and non-empty.
fn parse_fields(body: &[u8], required: &[&str]) -> Result<BTreeMap<String, String>, Response> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(errcode(44002, "empty post data"));
    }
    let v: Value = serde_json::from_slice(body).map_err(|_| errcode(47001, "data format error"))?;
    let Value::Object(o) = v else {
        return Err(errcode(47001, "data format error"));
    };
    let mut out = BTreeMap::new();
    for (k, v) in o {
        match v {
            Value::String(s) => {
                out.insert(k, s);
            }
            Value::Number(n) => {
                out.insert(k, n.to_string());
            }
            Value::Null => {}
            _ => return Err(errcode(47001, format!("data format error: {k}"))),
        }
    }
    for f in required {
        if out.get(*f).is_none_or(|s| s.is_empty()) {
            return Err(errcode(49000, format!("{f} missing")));
        }
    }
    Ok(out)
}

fn pick(fields: &BTreeMap<String, String>, keys: &[&str]) -> BTreeMap<String, String> {
    keys.iter()
        .filter_map(|k| fields.get(*k).map(|v| (k.to_string(), v.clone())))
        .collect()
}

/// Common checks of genprepay and orderquery: appid, sign_method, app_signature, package.
fn check_signed(
    m: &LegacyMerchant,
    fields: &BTreeMap<String, String>,
    signed_keys: &[&str],
) -> Result<wxpay_proto::legacy::ParsedPackage, Response> {
    if fields["appid"] != m.appid {
        return Err(errcode(
            40013,
            "invalid appid: appid does not match access_token",
        ));
    }
    if !fields["sign_method"].eq_ignore_ascii_case("sha1") {
        return Err(errcode(49001, "invalid sign_method"));
    }
    let ts = &fields["timestamp"];
    if ts.len() != 10 || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return Err(errcode(49009, "invalid timestamp"));
    }
    if !verify_app_signature(
        &pick(fields, signed_keys),
        &secret(&m.app_key),
        &fields["app_signature"],
    ) {
        return Err(errcode(49002, "invalid app_signature"));
    }
    let parsed = parse_package(&fields["package"])
        .map_err(|e| errcode(49003, format!("invalid package: {e}")))?;
    if !parsed.verify(&secret(&m.partner_key)) {
        return Err(errcode(49004, "invalid package sign"));
    }
    Ok(parsed)
}

fn new_prepay_id(st: &mut SbState, now: i64) -> String {
    format!(
        "1101000000{}{}",
        crate::http_util::beijing_fmt(now, "%y%m%d"),
        st.random_hex(16)
    )
}

async fn genprepay(
    State(inner): State<Arc<Inner>>,
    RawQuery(q): RawQuery,
    body: axum::body::Bytes,
) -> Response {
    let m = match check_token(&inner, q.as_deref()) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let required = [
        "appid",
        "traceid",
        "noncestr",
        "package",
        "timestamp",
        "app_signature",
        "sign_method",
    ];
    let fields = match parse_fields(&body, &required) {
        Ok(f) => f,
        Err(r) => return r,
    };
    if fields["traceid"].chars().count() > 32 || fields["noncestr"].chars().count() > 32 {
        return errcode(49010, "invalid traceid/noncestr: longer than 32 characters");
    }
    let parsed = match check_signed(
        &m,
        &fields,
        &["appid", "noncestr", "package", "timestamp", "traceid"],
    ) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let pkg = match parsed.to_package() {
        Ok(p) => p,
        Err(e) => return errcode(49005, format!("invalid package field: {e}")),
    };
    if let Err(e) = pkg.validate() {
        return errcode(49005, format!("invalid package field: {e}"));
    }
    if pkg.partner != m.partner {
        return errcode(49006, "partner does not match appid");
    }
    let now = inner.now();
    let fingerprint =
        crate::v3::canonical(&serde_json::to_value(&parsed.params).unwrap_or_default());
    let mut st = inner.lock();
    let key = (m.partner.clone(), pkg.out_trade_no.clone());
    if let Some(&idx) = st.by_out_trade_no.get(&key) {
        let o = &st.orders[idx];
        match o.state {
            TradeState::Success | TradeState::Refund => return errcode(49007, "order paid"),
            TradeState::Closed => return errcode(49007, "order closed"),
            TradeState::Notpay => {}
        }
        if o.fingerprint != fingerprint {
            return errcode(49008, "out_trade_no used with a different package");
        }
        if now <= o.prepay_expires_at {
            let id = o.prepay_id.clone();
            return json_response(
                200,
                &json!({"prepayid": id, "errcode": 0, "errmsg": "Success"}),
            );
        }
        let id = new_prepay_id(&mut st, now);
        st.by_prepay.insert(id.clone(), idx);
        let o = &mut st.orders[idx];
        o.prepay_id = id.clone();
        o.prepay_expires_at = now + PREPAY_TTL_SECS;
        return json_response(
            200,
            &json!({"prepayid": id, "errcode": 0, "errmsg": "Success"}),
        );
    }
    let prepay_id = new_prepay_id(&mut st, now);
    let deadline = pkg
        .time_expire
        .as_deref()
        .and_then(|t| parse_time(t).ok())
        .unwrap_or(now + ORDER_TTL_SECS);
    st.insert_order(Order {
        generation: Generation::Legacy,
        merchant: m.partner.clone(),
        appid: m.appid.clone(),
        out_trade_no: pkg.out_trade_no.clone(),
        trade_type: "APP".into(),
        description: pkg.body.clone(),
        attach: pkg.attach.clone(),
        total: pkg.total_fee.get(),
        notify_url: pkg.notify_url.clone(),
        prepay_id: prepay_id.clone(),
        prepay_expires_at: now + PREPAY_TTL_SECS,
        created_at: now,
        pay_deadline: deadline,
        state: TradeState::Notpay,
        user_cancelled: false,
        transaction_id: None,
        success_time: None,
        openid: None,
        fingerprint,
        legacy: Some(LegacyOrder {
            params: parsed.params.clone(),
            charset: parsed.charset.as_str().to_string(),
            traceid: fields["traceid"].clone(),
        }),
        scene_info: None,
        code_url: None,
        refunds: Vec::new(),
    });
    json_response(
        200,
        &json!({"prepayid": prepay_id, "errcode": 0, "errmsg": "Success"}),
    )
}

async fn orderquery(
    State(inner): State<Arc<Inner>>,
    RawQuery(q): RawQuery,
    body: axum::body::Bytes,
) -> Response {
    let m = match check_token(&inner, q.as_deref()) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let fields = match parse_fields(
        &body,
        &[
            "appid",
            "package",
            "timestamp",
            "app_signature",
            "sign_method",
        ],
    ) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let parsed = match check_signed(&m, &fields, &["appid", "package", "timestamp"]) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Some(no) = parsed.params.get("out_trade_no").filter(|s| !s.is_empty()) else {
        return errcode(49000, "out_trade_no missing");
    };
    if parsed.params.get("partner") != Some(&m.partner) {
        return errcode(49006, "partner does not match appid");
    }
    let st = inner.lock();
    let Some(&idx) = st.by_out_trade_no.get(&(m.partner.clone(), no.clone())) else {
        return errcode(49011, "order not exist");
    };
    let o = &st.orders[idx];
    let lp = o.legacy.as_ref();
    let param = |k: &str| {
        lp.and_then(|l| l.params.get(k).cloned())
            .unwrap_or_default()
    };
    let paid = o.state.is_paid();
    let info = OrderInfo {
        ret_code: "0".into(),
        ret_msg: String::new(),
        input_charset: lp
            .map(|l| l.charset.clone())
            .unwrap_or_else(|| "UTF-8".into()),
        trade_state: if paid { "0".into() } else { "1".into() },
        trade_mode: "1".into(),
        partner: m.partner.clone(),
        bank_type: if paid { "WX".into() } else { String::new() },
        bank_billno: String::new(),
        total_fee: o.total.to_string(),
        fee_type: "1".into(),
        transaction_id: o.transaction_id.clone().unwrap_or_default(),
        out_trade_no: o.out_trade_no.clone(),
        is_split: "false".into(),
        is_refund: "false".into(),
        attach: o.attach.clone().unwrap_or_default(),
        time_end: o.success_time.map(format_time).unwrap_or_default(),
        transport_fee: param("transport_fee"),
        product_fee: param("product_fee"),
        discount: "0".into(),
        rmb_total_fee: String::new(),
    };
    json_response(
        200,
        &OrderQueryResponse {
            errcode: 0,
            errmsg: "ok".into(),
            order_info: Some(info),
        },
    )
}

/// A.8 `pay/delivernotify`: the merchant reports delivery of a paid order.
async fn delivernotify(
    State(inner): State<Arc<Inner>>,
    RawQuery(q): RawQuery,
    body: axum::body::Bytes,
) -> Response {
    let m = match check_token(&inner, q.as_deref()) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let required = [
        "appid",
        "openid",
        "transid",
        "out_trade_no",
        "deliver_timestamp",
        "deliver_status",
        "app_signature",
        "sign_method",
    ];
    let fields = match parse_fields(&body, &required) {
        Ok(f) => f,
        Err(r) => return r,
    };
    if fields["appid"] != m.appid {
        return errcode(40013, "invalid appid: appid does not match access_token");
    }
    if !fields["sign_method"].eq_ignore_ascii_case("sha1") {
        return errcode(49001, "invalid sign_method");
    }
    let signed: BTreeMap<String, String> = fields
        .iter()
        .filter(|(k, _)| k.as_str() != "app_signature" && k.as_str() != "sign_method")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !verify_app_signature(&signed, &secret(&m.app_key), &fields["app_signature"]) {
        return errcode(49002, "invalid app_signature");
    }
    let st = inner.lock();
    let Some(&idx) = st
        .by_out_trade_no
        .get(&(m.partner.clone(), fields["out_trade_no"].clone()))
    else {
        return errcode(49011, "order not exist");
    };
    let o = &st.orders[idx];
    if !o.state.is_paid() || o.transaction_id.as_deref() != Some(fields["transid"].as_str()) {
        return errcode(49012, "order not paid or transid mismatch");
    }
    json_response(200, &json!({"errcode": 0, "errmsg": "ok"}))
}

/// The A.6 notification of a freshly paid legacy order.
struct LegacySource {
    url: String,
    query: String,
    forged_query: String,
    xml: String,
    forged_xml: String,
}

impl Prepare for LegacySource {
    fn prepare(&self, _inner: &Inner, variant: Variant) -> Result<PreparedRequest, String> {
        let (q, body) = match variant {
            Variant::Genuine => (&self.query, &self.xml),
            _ => (&self.forged_query, &self.forged_xml),
        };
        let sep = if self.url.contains('?') { '&' } else { '?' };
        Ok(PreparedRequest {
            url: format!("{}{sep}{q}", self.url),
            headers: vec![("Content-Type".into(), "text/xml; charset=UTF-8".into())],
            body: body.clone().into_bytes(),
        })
    }
}

pub(crate) fn payment_notification(
    inner: &Inner,
    st: &mut SbState,
    idx: usize,
) -> Result<Notification, SandboxError> {
    let now = inner.now();
    let o = st.orders[idx].clone();
    let m = inner
        .config
        .legacy_by_partner(&o.merchant)
        .ok_or_else(|| SandboxError::NotFound(format!("legacy partner {}", o.merchant)))?;
    let lo = o.legacy.clone().unwrap_or(LegacyOrder {
        params: BTreeMap::new(),
        charset: "UTF-8".into(),
        traceid: String::new(),
    });
    let cs = Charset::parse(&lo.charset).unwrap_or(Charset::Utf8);
    let notify_id = st.random_alnum(64);
    let mut f = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        f.insert(k.to_string(), v);
    };
    put("service_version", "1.0".into());
    put("sign_key_index", "1".into());
    put("trade_mode", "1".into());
    put("trade_state", "0".into());
    put("pay_info", String::new());
    put("partner", m.partner.clone());
    put("bank_type", "WX".into());
    put("bank_billno", st.random_digits(16));
    put("total_fee", o.total.to_string());
    put("fee_type", "1".into());
    put("notify_id", notify_id.clone());
    put(
        "transaction_id",
        o.transaction_id.clone().unwrap_or_default(),
    );
    put("out_trade_no", o.out_trade_no.clone());
    put("time_end", format_time(o.success_time.unwrap_or(now)));
    put("discount", "0".into());
    for k in ["attach", "transport_fee", "product_fee"] {
        if let Some(v) = lo.params.get(k).filter(|v| !v.is_empty()) {
            put(k, v.clone());
        }
    }
    let query = build_notify_query(&f, &secret(&m.partner_key), cs)?;
    let wrong_partner_key = secret(&st.random_hex(32));
    let forged_query = build_notify_query(&f, &wrong_partner_key, cs)?;
    let user = NotifyUser {
        open_id: o
            .openid
            .clone()
            .unwrap_or_else(|| control::openid_for(&o.appid)),
        app_id: o.appid.clone(),
        is_subscribe: true,
        timestamp: now,
        nonce_str: st.random_alnum(16),
    };
    let xml = build_notify_xml(&user, &secret(&m.app_key));
    let forged_xml = build_notify_xml(&user, &secret(&st.random_alnum(128)));
    Ok(Notification {
        id: notify_id,
        kind: NotificationKind::LegacyPayment,
        event_type: "PAYMENT".into(),
        merchant: m.partner.clone(),
        fault_ids: vec![m.partner.clone(), m.appid.clone()],
        out_trade_no: o.out_trade_no.clone(),
        out_refund_no: None,
        source: Box::new(LegacySource {
            url: o.notify_url.clone(),
            query,
            forged_query,
            xml,
            forged_xml,
        }),
    })
}
