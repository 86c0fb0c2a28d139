//! The admin API (admin key): business-webhook deliveries and redelivery.
//!
//! - `GET /admin/api/webhook-deliveries?state=PENDING|DELIVERED|DEAD&event_id=&order_no=&before=&limit=`
//!   newest first; `next_before` pages on.
//! - `GET /admin/api/events/{id}`: the event as it is sent, and its deliveries.
//! - `POST /admin/api/events/{id}/redeliver`: every delivery of the event back to PENDING, due
//!   now, with a fresh retry budget (and one for each configured endpoint that subscribes to its
//!   type but never had it).
//!
//! Endpoint URLs are shown without user info or query (they may carry credentials); secrets never.

use super::State;
use crate::auth::require_admin;
use crate::error::ApiError;
use crate::workers::webhooks::{endpoints, redact_url};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State as S};
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};
use wxpay_store::{DeliveryFilter, DeliveryState, Event, WebhookDelivery};

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 500;

fn secs(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

pub fn delivery_json(d: &WebhookDelivery) -> Value {
    json!({
        "id": d.id,
        "event_id": d.event_id,
        "event_type": d.event_type,
        "order_no": d.order_no,
        "endpoint": redact_url(&d.endpoint),
        "state": d.state,
        "attempts": d.attempts,
        "next_attempt_at": (d.state == DeliveryState::Pending).then(|| secs(d.next_attempt_at)),
        "last_status": d.last_status,
        "last_error": d.last_error,
        "created_at": secs(d.created_at),
        "updated_at": secs(d.updated_at),
        "delivered_at": d.delivered_at.map(secs),
    })
}

fn event_json(e: &Event) -> Value {
    let data =
        serde_json::from_str::<Value>(&e.payload).unwrap_or(Value::String(e.payload.clone()));
    json!({
        "id": e.id,
        "type": e.event_type,
        "order_no": e.order_no,
        "created_at": secs(e.created_at),
        "data": data,
    })
}

fn admin(state: &State, headers: &HeaderMap) -> Result<(), ApiError> {
    require_admin(headers, state.settings.auth.admin_key.as_ref())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    state: Option<String>,
    event_id: Option<String>,
    order_no: Option<String>,
    before: Option<i64>,
    limit: Option<i64>,
}

/// `GET /admin/api/webhook-deliveries`
pub async fn list_deliveries(
    S(state): S<State>,
    headers: HeaderMap,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    admin(&state, &headers)?;
    let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let delivery_state = match p.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(s.parse::<DeliveryState>().map_err(|_| {
            ApiError::bad_request("invalid_state", "state must be PENDING, DELIVERED or DEAD")
        })?),
    };
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be 1-{MAX_LIMIT}"),
        ));
    }
    let filter = DeliveryFilter {
        state: delivery_state,
        event_id: p.event_id.filter(|s| !s.is_empty()),
        order_no: p.order_no.filter(|s| !s.is_empty()),
        before_id: p.before,
        limit,
    };
    let rows = state.store.list_webhook_deliveries(&filter).await?;
    let next_before = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|d| d.id))
        .flatten();
    Ok(Json(json!({
        "deliveries": rows.iter().map(delivery_json).collect::<Vec<_>>(),
        "next_before": next_before,
    })))
}

/// `GET /admin/api/events/{id}`
pub async fn get_event(
    S(state): S<State>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    admin(&state, &headers)?;
    let event = state
        .store
        .get_event(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("event_not_found", format!("no event {id}")))?;
    let deliveries = state.store.event_deliveries(&id).await?;
    Ok(Json(json!({
        "event": event_json(&event),
        "deliveries": deliveries.iter().map(delivery_json).collect::<Vec<_>>(),
    })))
}

/// `POST /admin/api/events/{id}/redeliver`
pub async fn redeliver(
    S(state): S<State>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    admin(&state, &headers)?;
    let eps = endpoints(&state.settings);
    if eps.is_empty() {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "no_webhooks",
            "no webhook endpoint is configured",
        ));
    }
    let deliveries = match state.store.redeliver_event(&id, &eps, state.now_ms()).await {
        Err(wxpay_store::StoreError::NotFound(_)) => {
            return Err(ApiError::not_found(
                "event_not_found",
                format!("no event {id}"),
            ));
        }
        other => other?,
    };
    tracing::info!(event_id = %id, deliveries = deliveries.len(), "webhook redelivery requested");
    Ok(Json(json!({
        "event_id": id,
        "deliveries": deliveries.iter().map(delivery_json).collect::<Vec<_>>(),
    })))
}
