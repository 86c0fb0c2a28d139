use super::State;
use axum::Json;
use axum::extract::State as S;
use axum::http::StatusCode;
use serde_json::json;

/// Alive: the process answers.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready: the database and the cache answer.
pub async fn readyz(S(state): S<State>) -> (StatusCode, Json<serde_json::Value>) {
    let db = state.store.ping().await;
    let cache = state.tokens.fetches_today("readiness-probe").await.is_ok();
    let status = if db && cache {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({"database": db, "cache": cache})))
}
