//! APIv3 (PROTOCOL.md B): authentication gate, response signing and the endpoints.

pub(crate) mod bill;
pub(crate) mod certs;
pub(crate) mod keys;
pub(crate) mod notify;
pub(crate) mod pay;
pub(crate) mod refund;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use wxpay_proto::v3::auth::{Authorization, SIGNATURE_TYPE, request_message, response_message};

use crate::Inner;

/// Largest request body accepted.
const BODY_LIMIT: usize = 1 << 20;
/// WeChat's clock-skew limit for merchant request timestamps.
pub(crate) const MAX_SKEW_SECS: i64 = 300;

/// The authenticated merchant of a request (a request extension).
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub mchid: String,
}

/// A v3 error response: `{"code","message","detail"}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub detail: Option<Value>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            detail: None,
        }
    }
    /// `400 PARAM_ERROR` naming a field by JSON pointer (body) or name (query/path).
    pub fn param(field: &str, issue: impl Into<String>, location: &str) -> Self {
        let issue = issue.into();
        ApiError {
            status: 400,
            code: "PARAM_ERROR",
            message: format!("参数错误: {field} {issue}"),
            detail: Some(json!({"field": field, "issue": issue, "location": location})),
        }
    }
    pub fn param_value(field: &str, value: &Value, issue: impl Into<String>) -> Self {
        let mut e = Self::param(field, issue, "body");
        if let Some(Value::Object(d)) = &mut e.detail {
            d.insert("value".into(), value.clone());
        }
        e
    }
    pub fn sign_error(message: &str) -> Self {
        Self::new(401, "SIGN_ERROR", message)
    }
    pub fn system_error() -> Self {
        Self::new(500, "SYSTEM_ERROR", "系统错误")
    }
    pub fn body(&self) -> Value {
        let mut v = json!({"code": self.code, "message": self.message});
        if let Some(d) = &self.detail {
            v["detail"] = d.clone();
        }
        v
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        crate::http_util::json_response(self.status, &self.body())
    }
}

pub(crate) type ApiResult = Result<Response, ApiError>;

/// 200 with a JSON body.
pub(crate) fn ok_json(v: &Value) -> ApiResult {
    Ok(crate::http_util::json_response(200, v))
}

pub(crate) fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/v3/pay/transactions/app", post(pay::create_app))
        .route("/v3/pay/transactions/jsapi", post(pay::create_jsapi))
        .route("/v3/pay/transactions/native", post(pay::create_native))
        .route(
            "/v3/pay/transactions/out-trade-no/{no}",
            get(pay::query_by_out_trade_no),
        )
        .route("/v3/pay/transactions/id/{id}", get(pay::query_by_id))
        .route(
            "/v3/pay/transactions/out-trade-no/{no}/close",
            post(pay::close),
        )
        .route("/v3/refund/domestic/refunds", post(refund::create))
        .route("/v3/refund/domestic/refunds/{no}", get(refund::query))
        .route(
            "/v3/refund/domestic/refunds/{refund_id}/apply-abnormal-refund",
            post(refund::apply_abnormal),
        )
        .route("/v3/certificates", get(certs::list))
        .route("/v3/bill/tradebill", get(bill::tradebill))
        .route("/v3/billdownload/file", get(bill::download))
        .layer(from_fn_with_state(
            inner.clone(),
            crate::fault_layer::endpoint_faults,
        ))
        .layer(from_fn_with_state(inner.clone(), gate))
        .with_state(inner)
}

fn header_str<'a>(req: &'a axum::http::request::Parts, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

/// Authenticate the merchant over the exact bytes, then sign whatever the handler answers.
async fn gate(State(inner): State<Arc<Inner>>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let request_id = {
        let mut st = inner.lock();
        format!(
            "{}-{}",
            st.random_hex(16).to_uppercase(),
            st.random_digits(10)
        )
    };
    let requested_serial = header_str(&parts, "wechatpay-serial").map(str::to_string);
    let auth_header = header_str(&parts, "authorization").map(str::to_string);
    let parsed = auth_header.as_deref().map(Authorization::parse);
    let known_mchid = match &parsed {
        Some(Ok(a)) if inner.config.v3_by_mchid(&a.mchid).is_some() => Some(a.mchid.clone()),
        _ => None,
    };
    let finish = |resp: Response, mchid: Option<String>| {
        let inner = inner.clone();
        let rs = requested_serial.clone();
        let rid = request_id.clone();
        async move { sign_response(&inner, resp, mchid.as_deref(), rs.as_deref(), &rid, true).await }
    };

    let bytes = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => {
            let e = ApiError::new(400, "INVALID_REQUEST", "请求体过大或读取失败");
            return finish(e.into_response(), known_mchid.clone()).await;
        }
    };
    let missing_accept = header_str(&parts, "accept").is_none_or(|s| s.trim().is_empty());
    let missing_ua = header_str(&parts, "user-agent").is_none_or(|s| s.trim().is_empty());
    if missing_accept || missing_ua {
        let e = ApiError::new(400, "INVALID_REQUEST", "Http头缺少Accept或User-Agent");
        return finish(e.into_response(), known_mchid.clone()).await;
    }
    let auth = match parsed {
        None => {
            return finish(
                ApiError::sign_error("Http头Authorization值为空").into_response(),
                None,
            )
            .await;
        }
        Some(Err(_)) => {
            return finish(
                ApiError::sign_error("Http头Authorization格式错误").into_response(),
                None,
            )
            .await;
        }
        Some(Ok(a)) => a,
    };
    let Some(mchid) = known_mchid else {
        return finish(
            ApiError::sign_error("商户号不存在或未开通APIv3").into_response(),
            None,
        )
        .await;
    };
    let now = inner.now();
    if (now - auth.timestamp).abs() > MAX_SKEW_SECS {
        let e = ApiError::sign_error("timestamp与发起请求的时间不得超过5分钟");
        return finish(e.into_response(), Some(mchid.clone())).await;
    }
    let url = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let message = request_message(
        parts.method.as_str(),
        url,
        auth.timestamp,
        &auth.nonce_str,
        &bytes,
    );
    if let Err(why) = inner
        .v3
        .verify_merchant(&mchid, &auth.serial_no, &message, &auth.signature)
    {
        let e = ApiError::sign_error(&format!(
            "{why}，请检查签名参数和方法是否都符合签名算法要求"
        ));
        return finish(e.into_response(), Some(mchid.clone())).await;
    }
    let mut req = Request::from_parts(parts, Body::from(bytes));
    req.extensions_mut().insert(Caller {
        mchid: mchid.clone(),
    });
    let is_download = req.uri().path().starts_with("/v3/billdownload/");
    let resp = next.run(req).await;
    if is_download && resp.status().is_success() {
        // The bill file itself is not signed (B.11): only a Request-ID.
        return sign_response(&inner, resp, None, None, &request_id, false).await;
    }
    finish(resp, Some(mchid)).await
}

/// Add `Request-ID` and (when the merchant is known and `sign` is set) the Wechatpay-* headers.
pub(crate) async fn sign_response(
    inner: &Arc<Inner>,
    resp: Response,
    mchid: Option<&str>,
    requested_serial: Option<&str>,
    request_id: &str,
    sign: bool,
) -> Response {
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    if let Ok(v) = HeaderValue::from_str(request_id) {
        parts.headers.insert("request-id", v);
    }
    if sign && let Some(mchid) = mchid {
        let (ts, nonce, probe) = {
            let mut st = inner.lock();
            let p = st.faults.for_merchant(&[mchid]).signtest_response;
            let probe = st.draw(p);
            if probe {
                st.count(crate::faults::counter::SIGNTEST_RESPONSE);
            }
            (
                inner.now(),
                st.random_upper(32),
                probe.then(|| st.random_alnum(172)),
            )
        };
        let msg = response_message(ts, &nonce, &bytes);
        if let Some((serial, mut sig)) = inner.v3.sign(mchid, &msg, requested_serial) {
            if let Some(p) = probe {
                sig = format!("WECHATPAY/SIGNTEST/{p}");
            }
            let h = &mut parts.headers;
            let mut put = |k: &'static str, v: String| {
                if let Ok(v) = HeaderValue::from_str(&v) {
                    h.insert(k, v);
                }
            };
            put("wechatpay-timestamp", ts.to_string());
            put("wechatpay-nonce", nonce);
            put("wechatpay-signature", sig);
            put("wechatpay-serial", serial);
            put("wechatpay-signature-type", SIGNATURE_TYPE.to_string());
        }
    }
    if !bytes.is_empty() && !parts.headers.contains_key(header::CONTENT_TYPE) {
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// RFC 3339 in Beijing time, as WeChat writes it.
pub(crate) fn rfc3339(unix: i64) -> String {
    crate::http_util::beijing_fmt(unix, "%Y-%m-%dT%H:%M:%S+08:00")
}

/// Reject 4-byte UTF-8 anywhere in the body (WeChat: BMP only), naming the field.
pub(crate) fn check_bmp(v: &Value, ptr: &mut String) -> Result<(), ApiError> {
    match v {
        Value::String(s) if s.chars().any(|c| c as u32 > 0xFFFF) => Err(ApiError::param_value(
            if ptr.is_empty() { "/" } else { ptr },
            v,
            "不支持4字节UTF-8字符(如emoji)",
        )),
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                let len = ptr.len();
                ptr.push_str(&format!("/{i}"));
                check_bmp(x, ptr)?;
                ptr.truncate(len);
            }
            Ok(())
        }
        Value::Object(o) => {
            for (k, x) in o {
                let len = ptr.len();
                ptr.push('/');
                ptr.push_str(&k.replace('~', "~0").replace('/', "~1"));
                check_bmp(x, ptr)?;
                ptr.truncate(len);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Read a JSON body that must be an object.
pub(crate) fn parse_object(body: &[u8]) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::param("/", format!("解析JSON失败: {e}"), "body"))?;
    if !v.is_object() {
        return Err(ApiError::param("/", "请求体必须是JSON对象", "body"));
    }
    check_bmp(&v, &mut String::new())?;
    Ok(v)
}

/// Field access with WeChat's rules: absent is fine for optional fields, null never is.
pub(crate) fn opt_str(v: &Value, ptr: &str, max_chars: usize) -> Result<Option<String>, ApiError> {
    match v.pointer(ptr) {
        None => Ok(None),
        Some(Value::Null) => Err(ApiError::param(ptr, "不能为null，可选字段请省略", "body")),
        Some(Value::String(s)) => {
            if s.chars().count() > max_chars {
                return Err(ApiError::param_value(
                    ptr,
                    &Value::String(s.clone()),
                    format!("长度不能超过{max_chars}"),
                ));
            }
            Ok(Some(s.clone()))
        }
        Some(other) => Err(ApiError::param_value(ptr, other, "应为字符串")),
    }
}

pub(crate) fn req_str(v: &Value, ptr: &str, max_chars: usize) -> Result<String, ApiError> {
    match opt_str(v, ptr, max_chars)? {
        Some(s) if !s.is_empty() => Ok(s),
        Some(_) => Err(ApiError::param(ptr, "不能为空", "body")),
        None => Err(ApiError::param(ptr, "缺少必填字段", "body")),
    }
}

pub(crate) fn opt_int(v: &Value, ptr: &str) -> Result<Option<i64>, ApiError> {
    match v.pointer(ptr) {
        None => Ok(None),
        Some(Value::Null) => Err(ApiError::param(ptr, "不能为null，可选字段请省略", "body")),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| {
            ApiError::param_value(ptr, &Value::Number(n.clone()), "应为整数(单位分)")
        }),
        Some(other) => Err(ApiError::param_value(ptr, other, "应为整数")),
    }
}

pub(crate) fn req_int(v: &Value, ptr: &str) -> Result<i64, ApiError> {
    opt_int(v, ptr)?.ok_or_else(|| ApiError::param(ptr, "缺少必填字段", "body"))
}

pub(crate) fn opt_object<'a>(v: &'a Value, ptr: &str) -> Result<Option<&'a Value>, ApiError> {
    match v.pointer(ptr) {
        None => Ok(None),
        Some(Value::Null) => Err(ApiError::param(ptr, "不能为null，可选字段请省略", "body")),
        Some(o @ Value::Object(_)) => Ok(Some(o)),
        Some(other) => Err(ApiError::param_value(ptr, other, "应为对象")),
    }
}

/// The `mchid` query parameter of GET endpoints must be present and be the caller's.
pub(crate) fn check_query_mchid(q: Option<&str>, caller: &Caller) -> Result<(), ApiError> {
    let m = crate::http_util::query_map(q);
    match m.get("mchid") {
        None => Err(ApiError::param("mchid", "缺少必填参数mchid", "query")),
        Some(x) if x != &caller.mchid => Err(ApiError::param(
            "mchid",
            "mchid与请求头中的商户号不一致",
            "query",
        )),
        Some(_) => Ok(()),
    }
}

/// Keys sorted recursively, for "identical parameters" comparison.
pub(crate) fn canonical(v: &Value) -> String {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(o) => {
                let sorted: std::collections::BTreeMap<&String, Value> =
                    o.iter().map(|(k, x)| (k, sort(x))).collect();
                serde_json::to_value(sorted).unwrap_or(Value::Null)
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            x => x.clone(),
        }
    }
    sort(v).to_string()
}
