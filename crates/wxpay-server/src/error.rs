//! API errors: `{"error": {"code": "...", "message": "..."}}` with the right status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use wxpay_gateway::GatewayError;
use wxpay_store::StoreError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
        }
    }
    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn unprocessable(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }
    pub fn not_found(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; it has been logged",
        )
    }
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"code": self.code, "message": self.message}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Rejected(r) => {
                let status = match r.code {
                    "order_not_found" => StatusCode::NOT_FOUND,
                    "coupon_not_found"
                    | "coupon_expired"
                    | "coupon_used"
                    | "coupon_in_use"
                    | "coupon_not_applicable"
                    | "payable_not_positive"
                    | "invalid_amount"
                    | "invalid_coupon"
                    | "refund_exceeds_paid"
                    | "order_not_refundable" => StatusCode::UNPROCESSABLE_ENTITY,
                    _ => StatusCode::CONFLICT,
                };
                ApiError::new(status, r.code, r.message)
            }
            StoreError::NotFound(what) => {
                ApiError::not_found("not_found", format!("{what} not found"))
            }
            other => {
                tracing::error!(error = %other, "store failure");
                ApiError::internal()
            }
        }
    }
}

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> Self {
        match e {
            GatewayError::Transport(m) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "wechat_unavailable",
                format!("WeChat Pay did not answer ({m}); retry the same request"),
            ),
            GatewayError::Rejected { code, message } => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "wechat_rejected",
                format!("WeChat Pay refused ({code}): {message}"),
            ),
            GatewayError::TokenQuota(m) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "token_quota", m)
            }
            GatewayError::Verification(m) => {
                tracing::warn!(reason = %m, "an answer from WeChat failed verification");
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "wechat_unverified",
                    "WeChat's answer failed verification",
                )
            }
            GatewayError::Protocol(m) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "wechat_protocol", m)
            }
            GatewayError::Invalid(m) => ApiError::unprocessable("invalid_for_wechat", m),
            GatewayError::Unsupported(m) => ApiError::bad_request("unsupported", m),
        }
    }
}
