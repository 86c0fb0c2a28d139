//! HTTP routes. Handlers parse and authorise, call one domain operation, and shape the answer.

mod coupons;
mod health;
mod idempotent;
mod notify;
mod orders;

use crate::startup::AppState;
use axum::Router;
use axum::routing::{get, post};
use std::sync::Arc;

pub type State = Arc<AppState>;

pub fn router(state: State) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
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
        .with_state(state)
}
