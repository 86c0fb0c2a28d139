//! Prometheus metrics at `GET /metrics` (text exposition format).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `http_requests_total` | counter | `route` (the matched route template, `unmatched` otherwise), `method`, `status` |
//! | `http_request_duration_seconds` | histogram | `route`, `method` |
//! | `notifications_total` | counter | `merchant`, `result` (see `routes::notify`) |
//! | `payments_paid_total` | counter | `merchant`, `source` (`notify`, `query`, `sweeper`, …) |
//! | `payment_anomalies_total` | counter | `merchant`, `kind` (`amount_mismatch`, `paid_after_close`, …) |
//! | `wechat_call_seconds` | histogram | `merchant`, `endpoint`, `outcome` (`ok` or the error code) |
//! | `token_fetches_total` | counter | `appid` |
//! | `token_fetches_today` / `token_daily_quota` | gauge | `appid` (legacy merchants; read at scrape time) |
//! | `outbox_backlog` | gauge | webhook deliveries not yet made (`PENDING`), read at scrape time |
//! | `webhook_deliveries_dead` | gauge | webhook deliveries that gave up (`DEAD`) |
//! | `payment_attempts_pending` | gauge | attempts still waiting for WeChat's answer |
//! | `sweeper_lag_seconds` | gauge | now minus the oldest due `next_query_at` of a pending attempt |
//!
//! Labels never carry a secret, a token, an order or trade number, or a raw request path: every
//! label value is a fixed name, a configured merchant id or appid, or a status code.
//!
//! The recorder is global to the process; [`install`] sets it up once (later calls, e.g. several
//! `build()`s in one test process, share it).

use crate::startup::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// Histogram buckets (seconds) for request and WeChat-call latencies.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)
        .unwrap_or_else(|_| PrometheusBuilder::new())
}

/// How often the recorder's histograms are drained when nobody scrapes `/metrics`.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Installs the Prometheus recorder as the process's `metrics` recorder (once) and returns the
/// handle that renders it. When another recorder was installed first, a detached recorder is
/// used instead and `/metrics` shows only what is read at scrape time.
///
/// The recorder keeps every histogram sample until its upkeep folds them into the buckets; a
/// scrape does it, but a server nobody scrapes would grow without bound. So a small thread (not
/// tied to any runtime) runs the upkeep every few seconds, for the life of the process.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let handle = match builder().install_recorder() {
                Ok(handle) => {
                    describe();
                    handle
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a metrics recorder was already installed; /metrics will not see it");
                    builder().build_recorder().handle()
                }
            };
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_EVERY);
                        upkeep.run_upkeep();
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "metrics: no upkeep thread; histograms are drained only when /metrics is scraped");
            }
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "http_requests_total",
        "HTTP requests by route template, method and status"
    );
    describe_histogram!(
        "http_request_duration_seconds",
        metrics::Unit::Seconds,
        "HTTP request latency by route template and method"
    );
    describe_counter!(
        "notifications_total",
        "WeChat notifications received, by merchant and result"
    );
    describe_counter!(
        "payments_paid_total",
        "Orders moved to PAID, by merchant and what decided it"
    );
    describe_counter!(
        "payment_anomalies_total",
        "Verified payments kept as anomalies instead of paid, by merchant and kind"
    );
    describe_histogram!(
        "wechat_call_seconds",
        metrics::Unit::Seconds,
        "Calls to WeChat Pay by merchant, endpoint and outcome (ok or the error code)"
    );
    describe_counter!(
        "token_fetches_total",
        "Legacy access_token fetches sent to WeChat, by appid"
    );
    describe_gauge!(
        "token_fetches_today",
        "Legacy access_token fetches counted today (Beijing day) against the quota"
    );
    describe_gauge!(
        "token_daily_quota",
        "Configured daily access_token fetch quota"
    );
    describe_gauge!(
        "outbox_backlog",
        "Webhook deliveries of outbox events not yet made (PENDING)"
    );
    describe_gauge!(
        "webhook_deliveries_dead",
        "Webhook deliveries that exhausted their retries (DEAD)"
    );
    describe_gauge!(
        "payment_attempts_pending",
        "Payment attempts still waiting for WeChat's answer"
    );
    describe_gauge!(
        "sweeper_lag_seconds",
        "Now minus the oldest due next query of a pending payment attempt"
    );
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// The route label of a request: the matched template (`/v1/orders/{order_no}`), never the path.
pub fn route_label(req: &Request) -> String {
    req.extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string())
}

/// Middleware: counts and times every request by route template, method and status.
pub async fn track(req: Request, next: Next) -> Response {
    let route = route_label(&req);
    let method = method_label(req.method());
    let started = Instant::now();
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    metrics::counter!(
        "http_requests_total",
        "route" => route.clone(),
        "method" => method,
        "status" => status,
    )
    .increment(1);
    metrics::histogram!(
        "http_request_duration_seconds",
        "route" => route,
        "method" => method,
    )
    .record(started.elapsed().as_secs_f64());
    res
}

/// Counts one notification.
pub fn notification(merchant: &str, result: &str) {
    metrics::counter!(
        "notifications_total",
        "merchant" => merchant.to_string(),
        "result" => result.to_string(),
    )
    .increment(1);
}

/// Counts the outcome of one verified payment success that went through `mark_paid`.
pub fn payment_outcome(merchant: &str, source: &str, out: &wxpay_store::MarkPaid) {
    use wxpay_store::MarkPaid;
    match out {
        MarkPaid::Paid { .. } => metrics::counter!(
            "payments_paid_total",
            "merchant" => merchant.to_string(),
            "source" => source.to_string(),
        )
        .increment(1),
        MarkPaid::AlreadyRecorded { .. } => {}
        other => metrics::counter!(
            "payment_anomalies_total",
            "merchant" => merchant.to_string(),
            "kind" => other.as_str(),
        )
        .increment(1),
    }
}

/// Reads the scrape-time gauges (token quota use, outbox backlog, pending payments).
async fn refresh_gauges(state: &AppState) {
    use crate::configuration::ProtocolSetting;
    for m in &state.settings.merchants {
        if !matches!(m.protocol, ProtocolSetting::Legacy) {
            continue;
        }
        if let Ok(n) = state.tokens.fetches_today(&m.appid).await {
            metrics::gauge!("token_fetches_today", "appid" => m.appid.clone()).set(f64::from(n));
        }
        metrics::gauge!("token_daily_quota", "appid" => m.appid.clone())
            .set(f64::from(m.token_daily_quota));
    }
    match state.store.gauges(state.now_ms()).await {
        Ok(g) => {
            metrics::gauge!("outbox_backlog").set(g.outbox_backlog as f64);
            metrics::gauge!("webhook_deliveries_dead").set(g.webhook_dead as f64);
            metrics::gauge!("payment_attempts_pending").set(g.pending_attempts as f64);
            metrics::gauge!("sweeper_lag_seconds").set(g.sweeper_lag_ms as f64 / 1000.0);
        }
        Err(e) => tracing::warn!(error = %e, "metrics: could not read the store's gauges"),
    }
}

/// `GET /metrics`.
pub async fn endpoint(State(state): State<Arc<AppState>>) -> Response {
    refresh_gauges(&state).await;
    let handle = install();
    handle.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}
