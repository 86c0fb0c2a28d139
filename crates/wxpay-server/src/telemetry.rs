//! Logging: human-readable by default, JSON with `WXPAY_LOG_FORMAT=json`; level from `RUST_LOG`.

pub fn init() {
    init_with_default("info");
}

/// Like [`init`], with `default` as the level when `RUST_LOG` is not set (`wxpay demo` uses
/// `warn`, so that its story is not drowned in request logs).
pub fn init_with_default(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let json = std::env::var("WXPAY_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// The request id header: taken from the client when it is sane, generated (UUID v4) otherwise,
/// and echoed on the response.
pub const REQUEST_ID: &str = "x-request-id";

/// Wraps every route of `router` with, from the outside in: request-id clean-up, `SetRequestId`,
/// a `TraceLayer` span per request (`request_id`, `method`, `route` template, then `status` and
/// `latency_ms`) so that every log line of a request carries its id, `PropagateRequestId`, and
/// the request metrics (`crate::metrics::track`).
pub fn instrument(router: axum::Router) -> axum::Router {
    use axum::http::HeaderName;
    use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
    use tower_http::trace::TraceLayer;
    let header = HeaderName::from_static(REQUEST_ID);
    router
        .layer(axum::middleware::from_fn(crate::metrics::track))
        .layer(PropagateRequestIdLayer::new(header.clone()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(|_req: &axum::extract::Request, _span: &tracing::Span| {
                    tracing::debug!("request started")
                })
                .on_response(
                    |res: &axum::response::Response,
                     latency: std::time::Duration,
                     span: &tracing::Span| {
                        span.record("status", res.status().as_u16());
                        span.record("latency_ms", latency.as_millis() as u64);
                        tracing::info!("request finished");
                    },
                )
                // A 5xx is in the "request finished" line already, and some are deliberate (the
                // APIv3 refusal of a notification is a 500).
                .on_failure(())
                .on_eos(()),
        )
        .layer(SetRequestIdLayer::new(header, MakeRequestUuid))
        .layer(axum::middleware::from_fn(drop_bad_request_id))
}

fn request_span(req: &axum::extract::Request) -> tracing::Span {
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str())
        .unwrap_or("unmatched");
    tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %req.method(),
        route = %route,
        status = tracing::field::Empty,
        latency_ms = tracing::field::Empty,
    )
}

/// A client's request id is kept only when it is 1–128 of `[A-Za-z0-9._:-]` (it goes into every
/// log line); otherwise it is dropped and a fresh one generated.
pub fn valid_request_id(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
}

async fn drop_bad_request_id(
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let bad = req
        .headers()
        .get_all(REQUEST_ID)
        .iter()
        .enumerate()
        .any(|(i, v)| i > 0 || !valid_request_id(v.as_bytes()));
    if bad {
        req.headers_mut().remove(REQUEST_ID);
    }
    next.run(req).await
}
