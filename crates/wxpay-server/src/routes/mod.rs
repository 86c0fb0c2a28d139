//! HTTP routes. Handlers parse and authorise, call one domain operation, and shape the answer.

mod admin;
pub(crate) mod coupons;
mod health;
mod idempotent;
pub(crate) mod int;
mod notify;
pub(crate) mod orders;

use crate::startup::AppState;
use axum::Router;
use axum::routing::{get, post};
use std::sync::Arc;

pub type State = Arc<AppState>;

pub fn router(state: State) -> Router {
    let router = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(crate::metrics::endpoint))
        .route("/openapi.json", get(crate::openapi::openapi_json))
        .route("/docs", get(crate::openapi::docs))
        .route("/v1/orders", post(orders::create).get(orders::list))
        .route("/v1/orders/{order_no}", get(orders::get_one))
        .route("/v1/orders/{order_no}/pay", post(orders::pay))
        .route(
            "/v1/orders/{order_no}/client-result",
            post(orders::client_result),
        )
        .route(
            "/v1/orders/{order_no}/refunds",
            post(orders::create_refund).get(orders::list_refunds),
        )
        .route("/v1/coupons", post(coupons::create).get(coupons::list))
        .route("/notify/{merchant}", post(notify::notify))
        .route("/admin/api/webhook-deliveries", get(admin::list_deliveries))
        .route("/admin/api/events/{id}", get(admin::get_event))
        .route("/admin/api/events/{id}/redeliver", post(admin::redeliver))
        .merge(crate::console::router(state.clone()))
        .with_state(state);
    // Request ids, the per-request span and the request metrics wrap every route above.
    crate::telemetry::instrument(router)
}
