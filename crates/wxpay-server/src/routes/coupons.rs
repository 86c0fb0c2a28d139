use super::{State, idempotent, int};
use crate::auth::authenticate;
use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{Query, State as S};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use wxpay_store::{Coupon, NewCoupon, new_id};

/// A coupon for one user: a fixed amount off above a minimum spend.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateCoupon {
    /// 1-64 characters.
    #[schema(min_length = 1, max_length = 64)]
    user_id: String,
    /// Integer fen off, > 0.
    #[serde(deserialize_with = "int::whole")]
    #[schema(minimum = 1)]
    discount_fen: i64,
    /// The order amount (fen) needed to use it; default 0.
    #[serde(default, deserialize_with = "int::whole")]
    #[schema(minimum = 0)]
    min_spend_fen: i64,
    /// Unix seconds, in the future.
    #[serde(default, deserialize_with = "int::maybe_whole")]
    expires_at: Option<i64>,
    /// 1-32 of `[A-Za-z0-9_-]`; generated when absent.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,32}$")]
    code: Option<String>,
}

pub fn coupon_json(c: &Coupon) -> serde_json::Value {
    json!({
        "code": c.code, "user_id": c.user_id, "discount_fen": c.discount_fen,
        "min_spend_fen": c.min_spend_fen, "expires_at": c.expires_at.map(|e| e / 1000),
        "state": c.state, "order_no": c.order_no,
    })
}

/// `POST /v1/coupons` (API key): issues a coupon to a user.
#[utoipa::path(
    post,
    path = "/v1/coupons",
    operation_id = "create_coupon",
    tag = "coupons",
    summary = "Issue a coupon to a user (API key)",
    request_body = CreateCoupon,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "1-255 visible ASCII characters. Replays the first answer for the same key and body; another body with the same key is refused (422).")),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "The coupon, AVAILABLE", body = crate::openapi::Coupon),
        (status = 400, description = "Not JSON, or a bad Idempotency-Key", body = crate::openapi::ErrorBody),
        (status = 401, description = "No or a wrong API key", body = crate::openapi::ErrorBody),
        (status = 403, description = "A user token", body = crate::openapi::ErrorBody),
        (status = 409, description = "The code exists already, or the Idempotency-Key is still running", body = crate::openapi::ErrorBody),
        (status = 422, description = "Invalid fields", body = crate::openapi::ErrorBody),
    )
)]
pub async fn create(S(state): S<State>, headers: HeaderMap, body: Bytes) -> Response {
    let now = state.now_ms();
    let principal = match authenticate(
        &headers,
        &state.settings.auth.api_keys,
        state.settings.auth.jwt_secret.as_ref(),
        now / 1000,
    ) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if !principal.is_service() {
        return ApiError::forbidden("issuing coupons needs an API key").into_response();
    }
    let st = state.clone();
    let raw = body.clone();
    idempotent::run(
        &state,
        &principal,
        &headers,
        "POST /v1/coupons",
        &body,
        || async move {
            let req: CreateCoupon = serde_json::from_slice(&raw)
                .map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?;
            if !super::orders::valid_user_id(&req.user_id) {
                return Err(ApiError::unprocessable(
                    "invalid_user_id",
                    "user_id must be 1-64 characters",
                ));
            }
            let code = match req.code {
                Some(c)
                    if !c.is_empty()
                        && c.len() <= 32
                        && c.chars()
                            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_') =>
                {
                    c
                }
                Some(_) => {
                    return Err(ApiError::unprocessable(
                        "invalid_code",
                        "code must be 1-32 of [A-Za-z0-9_-]",
                    ));
                }
                None => new_id("CPN").to_uppercase(),
            };
            if req
                .expires_at
                .is_some_and(|e| e.saturating_mul(1000) <= now)
            {
                return Err(ApiError::unprocessable(
                    "invalid_expiry",
                    "expires_at is in the past",
                ));
            }
            let c = st
                .store
                .issue_coupon(
                    &NewCoupon {
                        code,
                        user_id: req.user_id,
                        discount_fen: req.discount_fen,
                        min_spend_fen: req.min_spend_fen,
                        expires_at: req.expires_at.map(|e| e.saturating_mul(1000)),
                    },
                    now,
                )
                .await?;
            Ok((StatusCode::CREATED, coupon_json(&c)))
        },
    )
    .await
}

#[derive(Deserialize)]
pub struct ListQuery {
    user_id: Option<String>,
}

/// `GET /v1/coupons?user_id=`.
#[utoipa::path(
    get,
    path = "/v1/coupons",
    operation_id = "list_coupons",
    tag = "coupons",
    summary = "A user's coupons",
    params(("user_id" = String, Query, min_length = 1, max_length = 64, description = "Whose coupons. (A user token may leave it out: it defaults to its own.)")),
    responses(
        (status = 200, description = "The coupons", body = crate::openapi::CouponList),
        (status = 400, description = "`user_id` missing or not 1-64 characters", body = crate::openapi::ErrorBody),
        (status = 401, description = "No or a wrong API key / token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A user token asking for another user", body = crate::openapi::ErrorBody),
    )
)]
pub async fn list(S(state): S<State>, headers: HeaderMap, Query(q): Query<ListQuery>) -> Response {
    let now = state.now_ms();
    let principal = match authenticate(
        &headers,
        &state.settings.auth.api_keys,
        state.settings.auth.jwt_secret.as_ref(),
        now / 1000,
    ) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let user = match super::orders::listed_user(&principal, q.user_id, "coupons") {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    match state.store.list_coupons(&user, now).await {
        Ok(cs) => axum::Json(json!({"coupons": cs.iter().map(coupon_json).collect::<Vec<_>>()}))
            .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}
