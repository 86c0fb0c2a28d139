use super::{State, idempotent, int};
use crate::auth::{Principal, authenticate};
use crate::error::ApiError;
use crate::payments;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State as S};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use wxpay_store::{NewOrder, Order, new_id};

/// WeChat's limit on the legacy `body` / v3 `description`.
const MAX_SUBJECT_BYTES: usize = 127;
const MAX_ITEMS: usize = 100;

/// A new order: `amount_fen` or `items` (not both), and optionally a coupon of the user.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateOrder {
    /// 1-64 characters; a user token may only order for itself.
    #[schema(min_length = 1, max_length = 64)]
    user_id: String,
    /// Shown in WeChat: 1-127 bytes of UTF-8, no emoji or control characters.
    #[schema(min_length = 1, max_length = 127)]
    subject: String,
    /// The total in integer fen (> 0), for an order without `items`.
    #[serde(default, deserialize_with = "int::maybe_whole")]
    #[schema(minimum = 1)]
    amount_fen: Option<i64>,
    /// 1-100 lines; the total is their sum.
    #[schema(min_items = 1, max_items = 100)]
    items: Option<Vec<Item>>,
    /// One of the user's AVAILABLE coupons.
    coupon_code: Option<String>,
}

/// One order line.
#[derive(Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Item {
    /// 1-32 bytes.
    #[schema(min_length = 1, max_length = 32)]
    sku: String,
    /// 1-256 bytes.
    #[schema(min_length = 1, max_length = 256)]
    name: String,
    /// Integer fen, > 0.
    #[serde(deserialize_with = "int::whole")]
    #[schema(minimum = 1)]
    unit_price_fen: i64,
    /// > 0.
    #[serde(deserialize_with = "int::whole")]
    #[schema(minimum = 1)]
    quantity: i64,
}

pub fn order_json(o: &Order) -> serde_json::Value {
    json!({
        "order_no": o.order_no,
        "user_id": o.user_id,
        "subject": o.subject,
        "items": o.items_json.as_deref().and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok()),
        "amount_fen": o.amount_fen,
        "discount_fen": o.discount_fen,
        "payable_fen": o.payable_fen,
        "refunded_fen": o.refunded_fen,
        "coupon_code": o.coupon_code,
        "state": o.state,
        "merchant": o.merchant_id,
        "paid_out_trade_no": o.paid_out_trade_no,
        "created_at": o.created_at / 1000,
        "expires_at": o.expires_at / 1000,
        "paid_at": o.paid_at.map(|t| t / 1000),
    })
}

fn principal(state: &State, headers: &HeaderMap) -> Result<Principal, ApiError> {
    authenticate(
        headers,
        &state.settings.auth.api_keys,
        state.settings.auth.jwt_secret.as_ref(),
        state.now_ms() / 1000,
    )
}

/// 1-64 characters (not bytes: any script is welcome).
pub(crate) fn valid_user_id(user_id: &str) -> bool {
    (1..=64).contains(&user_id.chars().count())
}

/// Whose list a `GET …?user_id=` asks for: the query's `user_id` (1-64 characters) or, when a
/// user token leaves it out, its own; a user token may ask only for itself.
pub(crate) fn listed_user(
    p: &Principal,
    user_id: Option<String>,
    what: &str,
) -> Result<String, ApiError> {
    let user = match (p, user_id) {
        (_, Some(u)) => u,
        (Principal::User { user_id }, None) => user_id.clone(),
        (_, None) => {
            return Err(ApiError::bad_request(
                "missing_user_id",
                "user_id is required",
            ));
        }
    };
    if !valid_user_id(&user) {
        return Err(ApiError::bad_request(
            "invalid_user_id",
            "user_id must be 1-64 characters",
        ));
    }
    if !p.may_act_for(&user) {
        return Err(ApiError::forbidden(format!(
            "a user token sees only its own {what}"
        )));
    }
    Ok(user)
}

fn invalid(code: &str, msg: impl Into<String>) -> ApiError {
    ApiError::unprocessable(code, msg)
}

fn price(req: &CreateOrder) -> Result<(i64, Option<String>), ApiError> {
    match (&req.amount_fen, &req.items) {
        (Some(_), Some(_)) => Err(invalid(
            "invalid_amount",
            "give amount_fen or items, not both",
        )),
        (None, None) => Err(invalid("invalid_amount", "amount_fen or items is required")),
        (Some(a), None) => {
            if *a <= 0 {
                Err(invalid(
                    "invalid_amount",
                    "amount_fen must be a positive number of fen",
                ))
            } else {
                Ok((*a, None))
            }
        }
        (None, Some(items)) => {
            if items.is_empty() || items.len() > MAX_ITEMS {
                return Err(invalid(
                    "invalid_items",
                    format!("items must hold 1 to {MAX_ITEMS} entries"),
                ));
            }
            let mut total: i64 = 0;
            for (i, it) in items.iter().enumerate() {
                if it.sku.is_empty()
                    || it.sku.len() > 32
                    || it.name.is_empty()
                    || it.name.len() > 256
                {
                    return Err(invalid(
                        "invalid_items",
                        format!("items[{i}]: sku 1-32 bytes, name 1-256 bytes"),
                    ));
                }
                if it.unit_price_fen <= 0 || it.quantity <= 0 {
                    return Err(invalid(
                        "invalid_items",
                        format!("items[{i}]: unit_price_fen and quantity must be positive"),
                    ));
                }
                let line = it.unit_price_fen.checked_mul(it.quantity).ok_or_else(|| {
                    invalid("invalid_items", format!("items[{i}]: amount overflows"))
                })?;
                total = total
                    .checked_add(line)
                    .ok_or_else(|| invalid("invalid_items", "total overflows"))?;
            }
            let json = serde_json::to_string(items).map_err(|_| ApiError::internal())?;
            Ok((total, Some(json)))
        }
    }
}

/// `POST /v1/orders`.
#[utoipa::path(
    post,
    path = "/v1/orders",
    operation_id = "create_order",
    tag = "orders",
    summary = "Place an order",
    description = "Prices the order in integer fen and reserves the coupon, if any (payable = amount - discount).",
    request_body = CreateOrder,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "1-255 visible ASCII characters. Replays the first answer for the same key and body; another body with the same key is refused (422).")),
    responses(
        (status = 201, description = "The order, CREATED", body = crate::openapi::Order),
        (status = 400, description = "Not JSON, or a bad Idempotency-Key", body = crate::openapi::ErrorBody),
        (status = 401, description = "No or a wrong API key / token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A user token ordering for another user", body = crate::openapi::ErrorBody),
        (status = 409, description = "A conflicting state (e.g. the Idempotency-Key is still running)", body = crate::openapi::ErrorBody),
        (status = 422, description = "Invalid fields or coupon (`invalid_amount`, `coupon_expired`, `idempotency_key_reused`, ...)", body = crate::openapi::ErrorBody),
    )
)]
pub async fn create(S(state): S<State>, headers: HeaderMap, body: Bytes) -> Response {
    let p = match principal(&state, &headers) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let st = state.clone();
    let who = p.clone();
    let raw = body.clone();
    idempotent::run(
        &state,
        &p,
        &headers,
        "POST /v1/orders",
        &body,
        || async move {
            let req: CreateOrder = serde_json::from_slice(&raw)
                .map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?;
            if !valid_user_id(&req.user_id) {
                return Err(invalid(
                    "invalid_user_id",
                    "user_id must be 1-64 characters",
                ));
            }
            if !who.may_act_for(&req.user_id) {
                return Err(ApiError::forbidden(
                    "a user token may only order for itself",
                ));
            }
            if req.subject.trim().is_empty() || req.subject.len() > MAX_SUBJECT_BYTES {
                return Err(invalid(
                    "invalid_subject",
                    format!("subject must be 1-{MAX_SUBJECT_BYTES} bytes of UTF-8"),
                ));
            }
            if req
                .subject
                .chars()
                .any(|c| c.len_utf8() == 4 || c.is_control())
            {
                return Err(invalid(
                    "invalid_subject",
                    "subject must not contain emoji (4-byte UTF-8) or control characters",
                ));
            }
            let (amount, items_json) = price(&req)?;
            let now = st.now_ms();
            let order = st
                .store
                .create_order(
                    &NewOrder {
                        order_no: new_id("ord"),
                        user_id: req.user_id,
                        subject: req.subject,
                        items_json,
                        amount_fen: amount,
                        coupon_code: req.coupon_code,
                        expires_at: now + st.settings.order_ttl_secs * 1000,
                    },
                    now,
                )
                .await?;
            Ok((StatusCode::CREATED, order_json(&order)))
        },
    )
    .await
}

async fn load(state: &State, p: &Principal, order_no: &str) -> Result<Order, ApiError> {
    let order =
        state.store.get_order(order_no).await?.ok_or_else(|| {
            ApiError::not_found("order_not_found", format!("no order {order_no}"))
        })?;
    if !p.may_act_for(&order.user_id) {
        // Someone else's order does not exist for this caller.
        return Err(ApiError::not_found(
            "order_not_found",
            format!("no order {order_no}"),
        ));
    }
    Ok(order)
}

/// `GET /v1/orders/{order_no}`.
#[utoipa::path(
    get,
    path = "/v1/orders/{order_no}",
    operation_id = "get_order",
    tag = "orders",
    summary = "One order",
    params(("order_no" = String, Path, description = "The order number (`ord_…`).")),
    responses(
        (status = 200, description = "The order", body = crate::openapi::Order),
        (status = 401, description = "No or a wrong API key / token", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such order (or another user's)", body = crate::openapi::ErrorBody),
    )
)]
pub async fn get_one(
    S(state): S<State>,
    headers: HeaderMap,
    Path(order_no): Path<String>,
) -> Response {
    let r = async {
        let p = principal(&state, &headers)?;
        let o = load(&state, &p, &order_no).await?;
        Ok::<_, ApiError>(Json(order_json(&o)))
    };
    r.await.into_response()
}

#[derive(Deserialize)]
pub struct ListQuery {
    user_id: Option<String>,
}

/// `GET /v1/orders?user_id=`.
#[utoipa::path(
    get,
    path = "/v1/orders",
    operation_id = "list_orders",
    tag = "orders",
    summary = "A user's orders, newest first (at most 100)",
    params(("user_id" = String, Query, min_length = 1, max_length = 64, description = "Whose orders. (A user token may leave it out: it defaults to its own.)")),
    responses(
        (status = 200, description = "The orders", body = crate::openapi::OrderList),
        (status = 400, description = "`user_id` missing or not 1-64 characters", body = crate::openapi::ErrorBody),
        (status = 401, description = "No or a wrong API key / token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A user token asking for another user", body = crate::openapi::ErrorBody),
    )
)]
pub async fn list(S(state): S<State>, headers: HeaderMap, Query(q): Query<ListQuery>) -> Response {
    let r = async {
        let p = principal(&state, &headers)?;
        let user = listed_user(&p, q.user_id, "orders")?;
        let orders = state.store.list_orders_for_user(&user, 100).await?;
        Ok::<_, ApiError>(Json(
            json!({"orders": orders.iter().map(order_json).collect::<Vec<_>>()}),
        ))
    };
    r.await.into_response()
}

/// Which merchant to pay through, and the paying user's IP address.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PayBody {
    /// A configured merchant id, e.g. `legacy-demo` or `v3-demo`.
    merchant: String,
    /// The user's IP address (IPv4 or IPv6).
    #[schema(schema_with = crate::openapi::ip_address)]
    client_ip: String,
}

/// `POST /v1/orders/{order_no}/pay`.
#[utoipa::path(
    post,
    path = "/v1/orders/{order_no}/pay",
    operation_id = "pay_order",
    tag = "orders",
    summary = "Prepay at WeChat and get the app's signed parameters",
    description = "Asks WeChat for a prepay id (reusing a still-valid one) and signs the parameters the app hands the WeChat SDK.",
    request_body = PayBody,
    params(("order_no" = String, Path, description = "The order number (`ord_…`)."), ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "1-255 visible ASCII characters. Replays the first answer for the same key and body; another body with the same key is refused (422).")),
    responses(
        (status = 200, description = "The attempt and the app's parameters", body = crate::openapi::PayResponse),
        (status = 400, description = "Not JSON, or a bad Idempotency-Key", body = crate::openapi::ErrorBody),
        (status = 401, description = "No or a wrong API key / token", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such order", body = crate::openapi::ErrorBody),
        (status = 409, description = "The order is paid, closed or otherwise not payable", body = crate::openapi::ErrorBody),
        (status = 422, description = "Unknown merchant, bad client_ip, or refused before WeChat saw it", body = crate::openapi::ErrorBody),
        (status = 502, description = "WeChat refused, failed verification or did not answer (`wechat_*`)", body = crate::openapi::ErrorBody),
        (status = 503, description = "The access-token quota would be exceeded (`token_quota`)", body = crate::openapi::ErrorBody),
    )
)]
pub async fn pay(
    S(state): S<State>,
    headers: HeaderMap,
    Path(order_no): Path<String>,
    body: Bytes,
) -> Response {
    let p = match principal(&state, &headers) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let st = state.clone();
    let who = p.clone();
    let route = format!("POST /v1/orders/{order_no}/pay");
    let raw = body.clone();
    idempotent::run(&state, &p, &headers, &route, &body, || async move {
        let req: PayBody =
            serde_json::from_slice(&raw).map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?;
        if req.client_ip.parse::<std::net::IpAddr>().is_err() {
            return Err(invalid("invalid_client_ip", "client_ip must be the user's IP address"));
        }
        let order = load(&st, &who, &order_no).await?;
        let r = payments::pay(&st, &order, &req.merchant, &req.client_ip).await?;
        Ok((
            StatusCode::OK,
            json!({"out_trade_no": r.out_trade_no, "merchant": r.merchant, "app_params": r.app_params}),
        ))
    })
    .await
}

/// `POST /v1/orders/{order_no}/client-result`: the app says it paid; we ask WeChat.
#[utoipa::path(
    post,
    path = "/v1/orders/{order_no}/client-result",
    operation_id = "client_result",
    tag = "orders",
    summary = "The app says it paid: a hint, never proof",
    description = "wxpay asks WeChat about the order's pending payments and applies only what a verified answer says, then returns the order. No body.",
    params(("order_no" = String, Path, description = "The order number (`ord_…`).")),
    responses(
        (status = 200, description = "The order as it stands now", body = crate::openapi::Order),
        (status = 401, description = "No or a wrong API key / token", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such order", body = crate::openapi::ErrorBody),
        (status = 502, description = "WeChat could not be asked now; the notification will still come", body = crate::openapi::ErrorBody),
    )
)]
pub async fn client_result(
    S(state): S<State>,
    headers: HeaderMap,
    Path(order_no): Path<String>,
) -> Response {
    let r = async {
        let p = principal(&state, &headers)?;
        let order = load(&state, &p, &order_no).await?;
        payments::confirm_by_query(&state, &order).await?;
        let order = load(&state, &p, &order_no).await?;
        Ok::<_, ApiError>(Json(order_json(&order)))
    };
    r.await.into_response()
}

/// A refund of part or all of a paid order.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RefundBody {
    /// Integer fen (> 0); all refunds together never exceed what was paid.
    #[serde(deserialize_with = "int::whole")]
    #[schema(minimum = 1)]
    amount_fen: i64,
    /// At most 80 bytes, no emoji; shown to the user.
    #[schema(max_length = 80)]
    reason: Option<String>,
    /// Your refund number (1-64 of `[0-9A-Za-z_-|*@]`); the same number is the same refund.
    #[schema(pattern = r"^[0-9A-Za-z_\-|*@]{1,64}$")]
    out_refund_no: Option<String>,
}

/// `POST /v1/orders/{order_no}/refunds` (API key).
#[utoipa::path(
    post,
    path = "/v1/orders/{order_no}/refunds",
    operation_id = "create_refund",
    tag = "refunds",
    summary = "Refund part or all of a paid order (API key, APIv3 merchants)",
    request_body = RefundBody,
    params(("order_no" = String, Path, description = "The order number (`ord_…`)."), ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "1-255 visible ASCII characters. Replays the first answer for the same key and body; another body with the same key is refused (422).")),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "The refund (PROCESSING until WeChat decides, or already decided)", body = crate::openapi::Refund),
        (status = 400, description = "Not JSON, or a bad Idempotency-Key", body = crate::openapi::ErrorBody),
        (status = 401, description = "No or a wrong API key", body = crate::openapi::ErrorBody),
        (status = 403, description = "A user token", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such order", body = crate::openapi::ErrorBody),
        (status = 409, description = "A conflicting state", body = crate::openapi::ErrorBody),
        (status = 422, description = "Not refundable, more than was paid, invalid fields, or refused by WeChat (`refund_rejected`)", body = crate::openapi::ErrorBody),
        (status = 502, description = "WeChat did not answer", body = crate::openapi::ErrorBody),
    )
)]
pub async fn create_refund(
    S(state): S<State>,
    headers: HeaderMap,
    Path(order_no): Path<String>,
    body: Bytes,
) -> Response {
    let p = match principal(&state, &headers) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if !p.is_service() {
        return ApiError::forbidden("refunds need an API key").into_response();
    }
    let st = state.clone();
    let who = p.clone();
    let raw = body.clone();
    let route = format!("POST /v1/orders/{order_no}/refunds");
    idempotent::run(&state, &p, &headers, &route, &body, || async move {
        let req: RefundBody = serde_json::from_slice(&raw)
            .map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?;
        let order = load(&st, &who, &order_no).await?;
        let r = crate::refunds::create(&st, &order, req.amount_fen, req.reason, req.out_refund_no)
            .await?;
        Ok((StatusCode::CREATED, crate::refunds::refund_json(&r)))
    })
    .await
}

/// `GET /v1/orders/{order_no}/refunds`.
#[utoipa::path(
    get,
    path = "/v1/orders/{order_no}/refunds",
    operation_id = "list_refunds",
    tag = "refunds",
    summary = "An order's refunds",
    params(("order_no" = String, Path, description = "The order number (`ord_…`).")),
    responses(
        (status = 200, description = "The refunds", body = crate::openapi::RefundList),
        (status = 401, description = "No or a wrong API key / token", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such order", body = crate::openapi::ErrorBody),
    )
)]
pub async fn list_refunds(
    S(state): S<State>,
    headers: HeaderMap,
    Path(order_no): Path<String>,
) -> Response {
    let r = async {
        let p = principal(&state, &headers)?;
        let order = load(&state, &p, &order_no).await?;
        let refunds = state.store.list_refunds(&order.order_no).await?;
        Ok::<_, ApiError>(Json(
            json!({"refunds": refunds.iter().map(crate::refunds::refund_json).collect::<Vec<_>>()}),
        ))
    };
    r.await.into_response()
}
