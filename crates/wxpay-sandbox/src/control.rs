//! The control API (`/sandbox/api/…`) and the matching methods on [`Sandbox`].
//!
//! | route | body / query | answer |
//! |---|---|---|
//! | `POST /sandbox/api/pay` | `{"prepay_id"}`, `{"out_trade_no","mchid"\|"partner"}` or `{"pay_req":{appid,partnerid,prepayid,package,noncestr,timestamp,sign}}` | `OrderView` (the payment notification starts) |
//! | `POST /sandbox/api/cancel` | same | `OrderView` (user cancelled; the order stays NOTPAY) |
//! | `GET /sandbox/api/notifications` | `?merchant=&out_trade_no=&kind=&outcome=&notification_id=` | `[DeliveryRecord]` |
//! | `GET /sandbox/api/faults` | | `{"faults","counters"}` |
//! | `PUT /sandbox/api/faults` | `Faults` | `{"faults","counters"}` |
//! | `GET /sandbox/api/merchants` | | merchants (ids, modes) |
//! | `GET /sandbox/api/merchants/{mchid}/wechatpay-public-key` | | `{"id","pem"}` |
//! | `GET /sandbox/api/merchants/{mchid}/certificates` | | `[{"serial_no","pem","not_before","not_after"}]` |
//! | `POST /sandbox/api/merchants/{mchid}/rotate-certificates` | | `{"serials","signing_serial"}` |
//! | `GET /sandbox/api/orders/{id}` | id = out_trade_no, transaction id or prepay id; `?merchant=` | `OrderView` |
//! | `POST /sandbox/api/token/invalidate` | `{"appid"}` | `{"invalidated": n}` |
//! | `GET /sandbox/api/tokens/{appid}` | | `{"appid","fetch_count"}` |
//! | `PUT /sandbox/api/refund-rule` | `{"merchant"?, "outcome", "delay_secs"}` | the rule |
//! | `POST /sandbox/api/refunds/{out_refund_no}/complete` | `{"status","mchid"?}` | `RefundView` |
//!
//! Errors are `{"error": "..."}` with 400, 404 or 409.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::json;

use crate::error::SandboxError;
use crate::faults::{FaultStatus, Faults};
use crate::http_util::{json_response, query_map};
use crate::notify::{DeliveryRecord, spawn_delivery};
use crate::state::{OrderView, RefundRule, RefundStatus, RefundView, TradeState};
use crate::{Inner, Sandbox, legacy, v3};

/// The client pay parameters the backend hands the app (legacy A.5 `PayReq` or v3 B.6), as the
/// WeChat app would receive them. OpenSDK field names (`appId`, `partnerId`, `prepayId`,
/// `packageValue`, `nonceStr`, `timeStamp`) are accepted too.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct AppPayRequest {
    #[serde(alias = "appId")]
    pub appid: String,
    #[serde(alias = "partnerId")]
    pub partnerid: String,
    #[serde(alias = "prepayId")]
    pub prepayid: String,
    #[serde(alias = "packageValue")]
    pub package: String,
    #[serde(alias = "nonceStr")]
    pub noncestr: String,
    #[serde(alias = "timeStamp")]
    pub timestamp: String,
    pub sign: String,
}

/// Which order the user pays or cancels.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct PayTarget {
    #[serde(default)]
    prepay_id: Option<String>,
    #[serde(default)]
    out_trade_no: Option<String>,
    #[serde(default)]
    mchid: Option<String>,
    #[serde(default)]
    partner: Option<String>,
    #[serde(default)]
    merchant: Option<String>,
    #[serde(default)]
    pay_req: Option<AppPayRequest>,
}

impl Sandbox {
    /// The user pays the order of `prepay_id` (starts the payment notification).
    /// Must be called inside a tokio runtime.
    pub fn pay_prepay(&self, prepay_id: &str) -> Result<OrderView, SandboxError> {
        let idx = self.lookup_prepay(prepay_id)?;
        pay_order(&self.inner, idx, Some(prepay_id), false)
    }

    /// The user pays through the WeChat app with the client parameters the merchant's backend
    /// produced: they are verified as the app would (legacy: SHA-1 `sign` with the appkey;
    /// v3 APP: RSA `sign` over `appid\ntimestamp\nnoncestr\nprepayid\n` with the merchant key;
    /// `package` must be `Sign=WXPay`, `timestamp` 10-digit seconds). A bad request is a
    /// `BadRequest` (the SDK's `errCode -1`) and nothing is paid.
    pub fn pay_with_request(&self, req: &AppPayRequest) -> Result<OrderView, SandboxError> {
        let idx = self.lookup_prepay(&req.prepayid)?;
        check_pay_request(&self.inner, idx, req)?;
        pay_order(&self.inner, idx, Some(&req.prepayid), false)
    }

    /// The user pays the order `out_trade_no` of `merchant` (mchid or partner).
    pub fn pay_out_trade_no(
        &self,
        merchant: &str,
        out_trade_no: &str,
    ) -> Result<OrderView, SandboxError> {
        let idx = self.lookup_out_trade_no(merchant, out_trade_no)?;
        pay_order(&self.inner, idx, None, false)
    }

    /// WeChat's race, on purpose: a payment the user had already started completes although
    /// the order was closed or its `time_expire` passed (the reason a merchant must handle a
    /// success for a closed order). The order becomes SUCCESS and its notification starts.
    /// Refused only for an order that is already paid.
    pub fn pay_late_out_trade_no(
        &self,
        merchant: &str,
        out_trade_no: &str,
    ) -> Result<OrderView, SandboxError> {
        let idx = self.lookup_out_trade_no(merchant, out_trade_no)?;
        pay_order(&self.inner, idx, None, true)
    }

    /// The user presses "Cancel" for `prepay_id`: nothing is paid, the order stays NOTPAY.
    pub fn cancel(&self, prepay_id: &str) -> Result<OrderView, SandboxError> {
        let idx = self.lookup_prepay(prepay_id)?;
        cancel_order(&self.inner, idx)
    }

    /// Cancel by merchant and out_trade_no.
    pub fn cancel_out_trade_no(
        &self,
        merchant: &str,
        out_trade_no: &str,
    ) -> Result<OrderView, SandboxError> {
        let idx = self.lookup_out_trade_no(merchant, out_trade_no)?;
        cancel_order(&self.inner, idx)
    }

    /// Replace the fault switches (counters are kept).
    pub fn set_faults(&self, faults: Faults) {
        self.inner.lock().faults = faults;
    }

    /// Switches and counters.
    pub fn faults(&self) -> FaultStatus {
        let st = self.inner.lock();
        FaultStatus {
            faults: st.faults.clone(),
            counters: st.counters.clone(),
        }
    }

    /// How often `name` fired.
    pub fn fault_count(&self, name: &str) -> u64 {
        self.inner.lock().counters.get(name).copied().unwrap_or(0)
    }

    /// Every delivery attempt so far, oldest first.
    pub fn notifications(&self) -> Vec<DeliveryRecord> {
        self.inner.lock().deliveries.clone()
    }

    /// Wait (real time) until `pred` holds for the delivery records, or `timeout` passes.
    pub async fn wait_for_notifications(
        &self,
        timeout: Duration,
        pred: impl Fn(&[DeliveryRecord]) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if pred(&self.inner.lock().deliveries) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// An order by out_trade_no, transaction id or prepay id.
    pub fn order(&self, id: &str) -> Option<OrderView> {
        let st = self.inner.lock();
        st.find_order(id).map(|i| st.order_view(i))
    }

    /// An order by merchant (mchid or partner) and out_trade_no.
    pub fn order_for(&self, merchant: &str, out_trade_no: &str) -> Option<OrderView> {
        let idx = self.lookup_out_trade_no(merchant, out_trade_no).ok()?;
        Some(self.inner.lock().order_view(idx))
    }

    /// How many times `/cgi-bin/token` was called for `appid` (successful or not).
    pub fn token_fetch_count(&self, appid: &str) -> u64 {
        self.inner
            .lock()
            .tokens
            .get(appid)
            .map(|b| b.fetch_count)
            .unwrap_or(0)
    }

    /// Invalidate every access_token of `appid` now (the next use gets 40001). Returns how many.
    pub fn invalidate_token(&self, appid: &str) -> usize {
        legacy::invalidate_tokens(&self.inner, appid)
    }

    /// The WeChat Pay public key of a v3 merchant as `(pem, id)`, as downloaded from the merchant
    /// platform. Panics for an unknown mchid (see [`Sandbox::try_wechatpay_public_key`]).
    pub fn wechatpay_public_key(&self, mchid: &str) -> (String, String) {
        self.try_wechatpay_public_key(mchid)
            .unwrap_or_else(|| panic!("no v3 merchant {mchid} in the sandbox"))
    }

    /// `(pem, id)` of the WeChat Pay public key, or None for an unknown mchid.
    pub fn try_wechatpay_public_key(&self, mchid: &str) -> Option<(String, String)> {
        self.inner.v3.public_key(mchid)
    }

    /// Platform certificates of a merchant: `(serial_no, pem)`, oldest first.
    pub fn platform_certificates(&self, mchid: &str) -> Vec<(String, String)> {
        self.inner.v3.certificates(mchid)
    }

    /// Issue a new platform certificate; the new one signs from now on, the previous one stays
    /// listed (overlap); older ones are retired. Returns the listed serials, oldest first.
    pub fn rotate_certificates(&self, mchid: &str) -> Result<Vec<String>, SandboxError> {
        self.inner.v3.rotate(mchid, self.inner.now())
    }

    /// How refunds of `merchant` (None: every merchant without its own rule) end.
    pub fn set_refund_rule(&self, merchant: Option<&str>, rule: RefundRule) {
        let mut st = self.inner.lock();
        match merchant {
            Some(m) => {
                st.refund_rules.insert(m.to_string(), rule);
            }
            None => st.refund_rule = rule,
        }
    }

    /// Decide a PROCESSING refund now (`SUCCESS`, `ABNORMAL` or `CLOSED`).
    pub fn complete_refund(
        &self,
        mchid: Option<&str>,
        out_refund_no: &str,
        status: &str,
    ) -> Result<RefundView, SandboxError> {
        let status = match status {
            "SUCCESS" => RefundStatus::Success,
            "ABNORMAL" => RefundStatus::Abnormal,
            "CLOSED" => RefundStatus::Closed,
            other => {
                return Err(SandboxError::BadRequest(format!(
                    "unknown refund status {other}"
                )));
            }
        };
        let idx = {
            let st = self.inner.lock();
            st.refunds
                .iter()
                .position(|r| {
                    r.out_refund_no == out_refund_no && mchid.is_none_or(|m| r.mchid == m)
                })
                .ok_or_else(|| SandboxError::NotFound(format!("refund {out_refund_no}")))?
        };
        v3::refund::finish_refund(&self.inner, idx, status)
    }

    fn lookup_prepay(&self, prepay_id: &str) -> Result<usize, SandboxError> {
        self.inner
            .lock()
            .by_prepay
            .get(prepay_id)
            .copied()
            .ok_or_else(|| SandboxError::NotFound(format!("prepay_id {prepay_id}")))
    }

    fn lookup_out_trade_no(
        &self,
        merchant: &str,
        out_trade_no: &str,
    ) -> Result<usize, SandboxError> {
        let st = self.inner.lock();
        let mut keys = vec![merchant.to_string()];
        // An appid names the legacy merchant too.
        if let Some(m) = self.inner.config.legacy_by_appid(merchant) {
            keys.push(m.partner.clone());
        }
        keys.iter()
            .find_map(|m| {
                st.by_out_trade_no
                    .get(&(m.clone(), out_trade_no.to_string()))
                    .copied()
            })
            .ok_or_else(|| SandboxError::NotFound(format!("order {out_trade_no} of {merchant}")))
    }

    fn resolve(&self, t: &PayTarget) -> Result<(usize, Option<String>), SandboxError> {
        if let Some(r) = &t.pay_req {
            let idx = self.lookup_prepay(&r.prepayid)?;
            check_pay_request(&self.inner, idx, r)?;
            return Ok((idx, Some(r.prepayid.clone())));
        }
        if let Some(p) = &t.prepay_id {
            return Ok((self.lookup_prepay(p)?, Some(p.clone())));
        }
        let no = t.out_trade_no.as_deref().ok_or_else(|| {
            SandboxError::BadRequest("give prepay_id, or out_trade_no with mchid/partner".into())
        })?;
        let merchant = t
            .mchid
            .as_deref()
            .or(t.partner.as_deref())
            .or(t.merchant.as_deref())
            .ok_or_else(|| {
                SandboxError::BadRequest("out_trade_no needs mchid or partner".into())
            })?;
        Ok((self.lookup_out_trade_no(merchant, no)?, None))
    }
}

fn check_pay_request(inner: &Inner, idx: usize, r: &AppPayRequest) -> Result<(), SandboxError> {
    let bad = |m: &str| {
        Err(SandboxError::BadRequest(format!(
            "pay request rejected (errCode -1): {m}"
        )))
    };
    let (generation, merchant, appid) = {
        let st = inner.lock();
        let o = &st.orders[idx];
        (o.generation, o.merchant.clone(), o.appid.clone())
    };
    if r.appid != appid {
        return bad("appid is not the order's appid");
    }
    if r.partnerid != merchant {
        return bad("partnerid is not the order's merchant");
    }
    if r.package != "Sign=WXPay" {
        return bad("package must be Sign=WXPay");
    }
    let ts_ok = r.timestamp.len() == 10
        && r.timestamp.bytes().all(|b| b.is_ascii_digit())
        && !r.timestamp.starts_with('0');
    if !ts_ok {
        return bad("timestamp must be 10-digit Unix seconds");
    }
    if r.noncestr.is_empty() || r.noncestr.len() > 32 {
        return bad("noncestr must be 1..=32 characters");
    }
    match generation {
        crate::state::Generation::Legacy => {
            let Some(m) = inner.config.legacy_by_appid(&r.appid) else {
                return bad("unknown appid");
            };
            let req = wxpay_proto::legacy::PayReq {
                appid: r.appid.clone(),
                partnerid: r.partnerid.clone(),
                prepayid: r.prepayid.clone(),
                package: r.package.clone(),
                noncestr: r.noncestr.clone(),
                timestamp: r.timestamp.clone(),
                sign: r.sign.clone(),
            };
            if !req.verify(&wxpay_proto::SecretString::from(m.app_key.clone())) {
                return bad("sign does not verify (SHA-1 with the appkey)");
            }
        }
        crate::state::Generation::V3 => {
            let ts: i64 = r.timestamp.parse().unwrap_or_default();
            let msg =
                wxpay_proto::v3::auth::app_pay_message(&r.appid, ts, &r.noncestr, &r.prepayid);
            if !inner.v3.verify_merchant_message(&merchant, &msg, &r.sign) {
                return bad("sign does not verify (SHA256-RSA with the merchant key)");
            }
        }
    }
    Ok(())
}

pub(crate) fn openid_for(appid: &str) -> String {
    use sha1::Digest;
    let h = hex::encode(sha1::Sha1::digest(
        format!("sandbox-openid:{appid}").as_bytes(),
    ));
    format!("oSBX{}", &h[..24])
}

/// Mark an order paid and start its notification.
pub(crate) fn pay_order(
    inner: &Arc<Inner>,
    idx: usize,
    via_prepay: Option<&str>,
    late: bool,
) -> Result<OrderView, SandboxError> {
    let now = inner.now();
    let (view, notification) = {
        let mut st = inner.lock();
        let o = &st.orders[idx];
        match o.state {
            TradeState::Success | TradeState::Refund => {
                return Err(SandboxError::Conflict("order already paid".into()));
            }
            TradeState::Closed if !late => {
                return Err(SandboxError::Conflict("order closed".into()));
            }
            TradeState::Closed | TradeState::Notpay => {}
        }
        if let Some(p) = via_prepay
            && (p != o.prepay_id || now > o.prepay_expires_at)
        {
            return Err(SandboxError::Conflict("prepay_id expired".into()));
        }
        if now > o.pay_deadline && !late {
            return Err(SandboxError::Conflict(
                "order expired (time_expire passed)".into(),
            ));
        }
        let date = crate::http_util::beijing_fmt(now, "%Y%m%d");
        let generation = o.generation;
        let tid = match generation {
            crate::state::Generation::Legacy => {
                let partner = format!("{:0>10}", o.merchant);
                let digits = st.random_digits(10);
                format!("{}{}{}", &partner[partner.len() - 10..], date, digits)
            }
            crate::state::Generation::V3 => format!("42000{}{}", date, st.random_digits(15)),
        };
        let payer_key = match &st.orders[idx].legacy {
            Some(l) => format!("{}:{}", st.orders[idx].appid, l.traceid),
            None => st.orders[idx].appid.clone(),
        };
        let o = &mut st.orders[idx];
        o.state = TradeState::Success;
        o.user_cancelled = false;
        o.transaction_id = Some(tid.clone());
        o.success_time = Some(now);
        if o.openid.is_none() {
            o.openid = Some(openid_for(&payer_key));
        }
        st.by_transaction.insert(tid, idx);
        let n = match generation {
            crate::state::Generation::Legacy => legacy::payment_notification(inner, &mut st, idx)?,
            crate::state::Generation::V3 => {
                v3::notify::transaction_notification(inner, &mut st, idx)?
            }
        };
        (st.order_view(idx), n)
    };
    tracing::info!(
        merchant = %view.merchant,
        out_trade_no = %view.out_trade_no,
        amount_fen = view.amount,
        "sandbox: order paid"
    );
    spawn_delivery(inner, notification);
    Ok(view)
}

fn cancel_order(inner: &Arc<Inner>, idx: usize) -> Result<OrderView, SandboxError> {
    let mut st = inner.lock();
    match st.orders[idx].state {
        TradeState::Notpay => {
            st.orders[idx].user_cancelled = true;
            Ok(st.order_view(idx))
        }
        TradeState::Closed => Err(SandboxError::Conflict("order closed".into())),
        _ => Err(SandboxError::Conflict("order already paid".into())),
    }
}

fn err(e: SandboxError) -> Response {
    json_response(e.http_status(), &json!({"error": e.to_string()}))
}

fn result<T: serde::Serialize>(r: Result<T, SandboxError>) -> Response {
    match r {
        Ok(v) => json_response(200, &v),
        Err(e) => err(e),
    }
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, SandboxError> {
    serde_json::from_slice(body).map_err(|e| SandboxError::BadRequest(format!("JSON body: {e}")))
}

pub(crate) fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/sandbox/api/pay", post(api_pay))
        .route("/sandbox/api/cancel", post(api_cancel))
        .route("/sandbox/api/notifications", get(api_notifications))
        .route(
            "/sandbox/api/faults",
            get(api_get_faults).put(api_put_faults),
        )
        .route("/sandbox/api/merchants", get(api_merchants))
        .route(
            "/sandbox/api/merchants/{mchid}/wechatpay-public-key",
            get(api_public_key),
        )
        .route(
            "/sandbox/api/merchants/{mchid}/certificates",
            get(api_certificates),
        )
        .route(
            "/sandbox/api/merchants/{mchid}/rotate-certificates",
            post(api_rotate),
        )
        .route("/sandbox/api/orders/{id}", get(api_order))
        .route("/sandbox/api/token/invalidate", post(api_invalidate_token))
        .route("/sandbox/api/tokens/{appid}", get(api_token_info))
        .route("/sandbox/api/refund-rule", put(api_refund_rule))
        .route(
            "/sandbox/api/refunds/{out_refund_no}/complete",
            post(api_complete_refund),
        )
        .with_state(inner)
}

fn sb(inner: &Arc<Inner>) -> Sandbox {
    Sandbox {
        inner: inner.clone(),
    }
}

async fn api_pay(State(inner): State<Arc<Inner>>, body: axum::body::Bytes) -> Response {
    let s = sb(&inner);
    result(parse_body::<PayTarget>(&body).and_then(|t| {
        let (idx, via) = s.resolve(&t)?;
        pay_order(&inner, idx, via.as_deref(), false)
    }))
}

async fn api_cancel(State(inner): State<Arc<Inner>>, body: axum::body::Bytes) -> Response {
    let s = sb(&inner);
    result(parse_body::<PayTarget>(&body).and_then(|t| {
        let (idx, _) = s.resolve(&t)?;
        cancel_order(&inner, idx)
    }))
}

async fn api_notifications(State(inner): State<Arc<Inner>>, RawQuery(q): RawQuery) -> Response {
    let q = query_map(q.as_deref());
    let list: Vec<DeliveryRecord> = inner
        .lock()
        .deliveries
        .iter()
        .filter(|d| q.get("merchant").is_none_or(|m| &d.merchant == m))
        .filter(|d| q.get("out_trade_no").is_none_or(|m| &d.out_trade_no == m))
        .filter(|d| {
            q.get("notification_id")
                .is_none_or(|m| &d.notification_id == m)
        })
        .filter(|d| {
            q.get("kind").is_none_or(|k| {
                serde_json::to_value(d.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(|s| s == k))
                    == Some(true)
            })
        })
        .filter(|d| {
            q.get("outcome").is_none_or(|k| {
                serde_json::to_value(d.outcome)
                    .ok()
                    .and_then(|v| v.as_str().map(|s| s == k))
                    == Some(true)
            })
        })
        .cloned()
        .collect();
    json_response(200, &list)
}

async fn api_get_faults(State(inner): State<Arc<Inner>>) -> Response {
    json_response(200, &sb(&inner).faults())
}

async fn api_put_faults(State(inner): State<Arc<Inner>>, body: axum::body::Bytes) -> Response {
    match parse_body::<Faults>(&body) {
        Ok(f) => {
            let s = sb(&inner);
            s.set_faults(f);
            json_response(200, &s.faults())
        }
        Err(e) => err(e),
    }
}

async fn api_merchants(State(inner): State<Arc<Inner>>) -> Response {
    let cfg = &inner.config;
    let legacy: Vec<_> = cfg
        .legacy_merchants
        .iter()
        .map(|m| json!({"appid": m.appid, "partner": m.partner, "token_daily_quota": m.token_daily_quota, "name": m.name}))
        .collect();
    let v3: Vec<_> = cfg
        .v3_merchants
        .iter()
        .map(|m| json!({"mchid": m.mchid, "appids": m.appids, "merchant_serial_no": m.merchant_serial_no,
            "verify_mode": m.verify_mode, "wechatpay_public_key_id": m.public_key_id(), "name": m.name}))
        .collect();
    json_response(200, &json!({"legacy": legacy, "v3": v3}))
}

async fn api_public_key(State(inner): State<Arc<Inner>>, Path(mchid): Path<String>) -> Response {
    match sb(&inner).try_wechatpay_public_key(&mchid) {
        Some((pem, id)) => json_response(200, &json!({"id": id, "pem": pem})),
        None => err(SandboxError::NotFound(format!("v3 merchant {mchid}"))),
    }
}

async fn api_certificates(State(inner): State<Arc<Inner>>, Path(mchid): Path<String>) -> Response {
    if inner.config.v3_by_mchid(&mchid).is_none() {
        return err(SandboxError::NotFound(format!("v3 merchant {mchid}")));
    }
    let list: Vec<_> = inner
        .v3
        .certificate_infos(&mchid)
        .into_iter()
        .map(|(serial, pem, nb, na)| json!({"serial_no": serial, "pem": pem, "not_before": nb, "not_after": na}))
        .collect();
    json_response(200, &list)
}

async fn api_rotate(State(inner): State<Arc<Inner>>, Path(mchid): Path<String>) -> Response {
    match sb(&inner).rotate_certificates(&mchid) {
        Ok(serials) => json_response(
            200,
            &json!({"serials": serials, "signing_serial": inner.v3.signing_serial(&mchid)}),
        ),
        Err(e) => err(e),
    }
}

async fn api_order(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let q = query_map(q.as_deref());
    let s = sb(&inner);
    let found = match q.get("merchant").or(q.get("mchid")).or(q.get("partner")) {
        Some(m) => s
            .order_for(m, &id)
            .or_else(|| s.order(&id).filter(|o| &o.merchant == m)),
        None => s.order(&id),
    };
    match found {
        Some(o) => json_response(200, &o),
        None => err(SandboxError::NotFound(format!("order {id}"))),
    }
}

#[derive(Deserialize)]
struct AppidBody {
    appid: String,
}

async fn api_invalidate_token(
    State(inner): State<Arc<Inner>>,
    body: axum::body::Bytes,
) -> Response {
    match parse_body::<AppidBody>(&body) {
        Ok(b) => {
            if inner.config.legacy_by_appid(&b.appid).is_none() {
                return err(SandboxError::NotFound(format!("legacy appid {}", b.appid)));
            }
            let n = sb(&inner).invalidate_token(&b.appid);
            json_response(200, &json!({"appid": b.appid, "invalidated": n}))
        }
        Err(e) => err(e),
    }
}

async fn api_token_info(State(inner): State<Arc<Inner>>, Path(appid): Path<String>) -> Response {
    let n = sb(&inner).token_fetch_count(&appid);
    json_response(200, &json!({"appid": appid, "fetch_count": n}))
}

#[derive(Deserialize)]
struct RefundRuleBody {
    #[serde(default)]
    merchant: Option<String>,
    #[serde(flatten)]
    rule: RefundRule,
}

async fn api_refund_rule(State(inner): State<Arc<Inner>>, body: axum::body::Bytes) -> Response {
    match serde_json::from_slice::<RefundRuleBody>(&body) {
        Ok(b) => {
            if !["SUCCESS", "ABNORMAL", "CLOSED", "MANUAL"].contains(&b.rule.outcome.as_str()) {
                return err(SandboxError::BadRequest(format!(
                    "unknown outcome {}",
                    b.rule.outcome
                )));
            }
            sb(&inner).set_refund_rule(b.merchant.as_deref(), b.rule.clone());
            json_response(
                200,
                &json!({"merchant": b.merchant, "outcome": b.rule.outcome, "delay_secs": b.rule.delay_secs}),
            )
        }
        Err(e) => err(SandboxError::BadRequest(e.to_string())),
    }
}

#[derive(Deserialize)]
struct CompleteBody {
    status: String,
    #[serde(default)]
    mchid: Option<String>,
}

async fn api_complete_refund(
    State(inner): State<Arc<Inner>>,
    Path(no): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let s = sb(&inner);
    result(
        parse_body::<CompleteBody>(&body)
            .and_then(|b| s.complete_refund(b.mchid.as_deref(), &no, &b.status)),
    )
}
