//! `Idempotency-Key` on POSTs: the same key and body replays the first answer; the same key with
//! another body is refused (422); a key whose first request is still running answers 409.

use super::State;
use crate::auth::Principal;
use crate::error::ApiError;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::future::Future;
use wxpay_store::idempotency::Begin;

pub type Outcome = Result<(StatusCode, serde_json::Value), ApiError>;

fn respond(status: StatusCode, body: String) -> Response {
    (status, [("content-type", "application/json")], body).into_response()
}

pub async fn run<F, Fut>(
    state: &State,
    principal: &Principal,
    headers: &HeaderMap,
    route: &str,
    body: &[u8],
    op: F,
) -> Response
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Outcome>,
{
    // 1-255 visible ASCII characters, no spaces (the pattern `^[!-~]+$` of the OpenAPI spec).
    let key = match headers.get("idempotency-key").map(|v| v.as_bytes()) {
        None => None,
        Some(k) if (1..=255).contains(&k.len()) && k.iter().all(|b| (b'!'..=b'~').contains(b)) => {
            Some(String::from_utf8_lossy(k).into_owned())
        }
        Some(_) => {
            return ApiError::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key must be 1-255 visible ASCII characters without spaces",
            )
            .into_response();
        }
    };
    let Some(key) = key else {
        return match op().await {
            Ok((status, v)) => respond(status, v.to_string()),
            Err(e) => e.into_response(),
        };
    };
    let scope = principal.scope();
    let hash = {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(route.as_bytes());
        h.update([0]);
        h.update(body);
        hex::encode(h.finalize())
    };
    match state
        .store
        .idempotency_begin(&scope, &key, &hash, state.now_ms())
        .await
    {
        Err(e) => ApiError::from(e).into_response(),
        Ok(Begin::Replay { status, body }) => {
            respond(StatusCode::from_u16(status).unwrap_or(StatusCode::OK), body)
        }
        Ok(Begin::Mismatch) => ApiError::unprocessable(
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request",
        )
        .into_response(),
        Ok(Begin::InProgress) => ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_key_in_progress",
            "a request with this Idempotency-Key is still being processed",
        )
        .into_response(),
        Ok(Begin::New) => {
            let (status, body) = match op().await {
                Ok((s, v)) => (s, v.to_string()),
                Err(e) => (e.status, e.body().to_string()),
            };
            let stored = if status.is_server_error() {
                // Worth retrying: forget the key so a retry runs again.
                state.store.idempotency_abandon(&scope, &key).await
            } else {
                state
                    .store
                    .idempotency_complete(&scope, &key, status.as_u16(), &body)
                    .await
            };
            if let Err(e) = stored {
                tracing::error!(error = %e, "could not store the idempotent answer");
            }
            respond(status, body)
        }
    }
}
