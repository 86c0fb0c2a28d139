//! The cashier page: where an app developer "pays" in a browser.
//!
//! `GET /sandbox/cashier/{prepay_id}` shows merchant, item and amount with "Pay" and "Cancel";
//! the buttons are plain form POSTs to `/sandbox/cashier/{prepay_id}/pay` and `/cancel`, which
//! redirect (303) back to the page with `?result=…` shown on it. No scripts, no external resources.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

use crate::http_util::html_escape;
use crate::state::{Generation, OrderView};
use crate::{Inner, Sandbox};

pub(crate) fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/sandbox", get(index))
        .route("/sandbox/cashier/{prepay_id}", get(show))
        .route("/sandbox/cashier/{prepay_id}/pay", post(pay))
        .route("/sandbox/cashier/{prepay_id}/cancel", post(cancel))
        .with_state(inner)
}

const STYLE: &str = "body{font-family:-apple-system,'Helvetica Neue',Arial,sans-serif;background:#ededed;margin:0;padding:24px}\
.card{max-width:420px;margin:0 auto;background:#fff;border-radius:8px;padding:24px;box-shadow:0 1px 3px rgba(0,0,0,.1)}\
h1{font-size:16px;color:#555;margin:0 0 8px}.amount{font-size:40px;font-weight:600;margin:12px 0}\
dl{display:grid;grid-template-columns:auto 1fr;gap:6px 12px;font-size:14px;color:#333}dt{color:#888;white-space:nowrap}dd{margin:0;word-break:break-all}\
form{display:inline}button{font-size:16px;border:0;border-radius:4px;padding:12px 28px;margin:16px 8px 0 0;cursor:pointer}\
.pay{background:#07c160;color:#fff}.cancel{background:#f2f2f2;color:#333}\
.result{padding:12px;border-radius:4px;margin-top:16px}.ok{background:#e7f8ee;color:#06ae56}.bad{background:#fdecea;color:#c0392b}\
code{font-size:12px}";

fn merchant_name(inner: &Inner, o: &OrderView) -> String {
    let name = match o.generation {
        Generation::Legacy => inner
            .config
            .legacy_by_partner(&o.merchant)
            .and_then(|m| m.name.clone()),
        Generation::V3 => inner
            .config
            .v3_by_mchid(&o.merchant)
            .and_then(|m| m.name.clone()),
    };
    name.unwrap_or_else(|| format!("Merchant {}", o.merchant))
}

fn page(
    inner: &Inner,
    prepay_id: &str,
    o: Option<&OrderView>,
    result: Option<(bool, &str)>,
) -> Response {
    let pid = html_escape(prepay_id);
    let mut body = String::new();
    match o {
        None => body.push_str(&format!(
            "<h1>WeChat Pay sandbox</h1><p class=\"result bad\">Unknown prepay id <code>{pid}</code>.</p>"
        )),
        Some(o) => {
            let yuan = wxpay_proto::money::Fen::new(o.amount).to_yuan_string();
            body.push_str(&format!(
                "<h1>{}</h1><div class=\"amount\">¥{}</div><dl><dt>Item</dt><dd>{}</dd><dt>Order</dt><dd><code>{}</code></dd>\
                 <dt>Prepay id</dt><dd><code>{}</code></dd><dt>Status</dt><dd id=\"state\">{}{}</dd>",
                html_escape(&merchant_name(inner, o)),
                html_escape(&yuan),
                html_escape(&o.description),
                html_escape(&o.out_trade_no),
                pid,
                html_escape(&o.state),
                if o.user_cancelled && o.state == "NOTPAY" { " (cancelled by user)" } else { "" },
            ));
            if let Some(t) = &o.transaction_id {
                body.push_str(&format!("<dt>Transaction</dt><dd><code>{}</code></dd>", html_escape(t)));
            }
            body.push_str("</dl>");
            if o.state == "NOTPAY" {
                body.push_str(&format!(
                    "<form method=\"post\" action=\"/sandbox/cashier/{pid}/pay\"><button class=\"pay\" type=\"submit\">Pay</button></form>\
                     <form method=\"post\" action=\"/sandbox/cashier/{pid}/cancel\"><button class=\"cancel\" type=\"submit\">Cancel</button></form>"
                ));
            }
        }
    }
    if let Some((ok, msg)) = result {
        body.push_str(&format!(
            "<p class=\"result {}\" id=\"result\">{}</p>",
            if ok { "ok" } else { "bad" },
            html_escape(msg)
        ));
    }
    let html = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>WeChat Pay sandbox cashier</title><style>{STYLE}</style></head><body><div class=\"card\">{body}</div></body></html>"
    );
    let status = if o.is_some() { 200 } else { 404 };
    (
        axum::http::StatusCode::from_u16(status).unwrap_or_default(),
        Html(html),
    )
        .into_response()
}

async fn show(
    State(inner): State<Arc<Inner>>,
    Path(prepay_id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let o = view(&inner, &prepay_id);
    let q = crate::http_util::query_map(q.as_deref());
    let result = q.get("result").map(|r| match r.as_str() {
        "paid" => (true, "Payment successful. The merchant is being notified."),
        "cancelled" => (false, "Payment cancelled by the user (errCode -2)."),
        "already_paid" => (false, "The order is already paid."),
        "closed" => (false, "The order is closed."),
        "expired" => (false, "The prepay id or the order has expired."),
        _ => (false, "The payment failed."),
    });
    page(&inner, &prepay_id, o.as_ref(), result)
}

fn view(inner: &Arc<Inner>, prepay_id: &str) -> Option<OrderView> {
    let st = inner.lock();
    st.by_prepay.get(prepay_id).map(|&i| st.order_view(i))
}

/// Post/redirect/get: the result shows on the page itself, so a reload does not pay twice.
fn redirect(prepay_id: &str, result: &str) -> Response {
    let mut id = String::new();
    for b in prepay_id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            id.push(b as char);
        } else {
            id.push_str(&format!("%{b:02X}"));
        }
    }
    let mut r = axum::http::StatusCode::SEE_OTHER.into_response();
    if let Ok(v) =
        axum::http::HeaderValue::from_str(&format!("/sandbox/cashier/{id}?result={result}"))
    {
        r.headers_mut().insert(axum::http::header::LOCATION, v);
    }
    r
}

fn outcome(r: Result<OrderView, crate::SandboxError>, ok: &'static str) -> &'static str {
    match r {
        Ok(_) => ok,
        Err(crate::SandboxError::Conflict(m)) if m.contains("already paid") => "already_paid",
        Err(crate::SandboxError::Conflict(m)) if m.contains("closed") => "closed",
        Err(crate::SandboxError::Conflict(m)) if m.contains("expired") => "expired",
        Err(_) => "error",
    }
}

async fn pay(State(inner): State<Arc<Inner>>, Path(prepay_id): Path<String>) -> Response {
    let s = Sandbox {
        inner: inner.clone(),
    };
    redirect(&prepay_id, outcome(s.pay_prepay(&prepay_id), "paid"))
}

async fn cancel(State(inner): State<Arc<Inner>>, Path(prepay_id): Path<String>) -> Response {
    let s = Sandbox {
        inner: inner.clone(),
    };
    redirect(&prepay_id, outcome(s.cancel(&prepay_id), "cancelled"))
}

async fn index(State(inner): State<Arc<Inner>>) -> Response {
    let (orders, n) = {
        let st = inner.lock();
        let list: Vec<OrderView> = (0..st.orders.len())
            .rev()
            .take(50)
            .map(|i| st.order_view(i))
            .collect();
        (list, st.deliveries.len())
    };
    let mut rows = String::new();
    for o in &orders {
        rows.push_str(&format!(
            "<tr><td><a href=\"/sandbox/cashier/{p}\">{no}</a></td><td>{m}</td><td>¥{y}</td><td>{s}</td></tr>",
            p = html_escape(&o.prepay_id),
            no = html_escape(&o.out_trade_no),
            m = html_escape(&o.merchant),
            y = wxpay_proto::money::Fen::new(o.amount).to_yuan_string(),
            s = html_escape(&o.state)
        ));
    }
    let html = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>WeChat Pay sandbox</title><style>{STYLE}\
         table{{width:100%;font-size:14px}}td{{padding:4px}}</style></head><body><div class=\"card\"><h1>WeChat Pay sandbox</h1>\
         <p>{} orders, {} notification attempts. Control API under <code>/sandbox/api/</code>.</p>\
         <table><tr><th>Order</th><th>Merchant</th><th>Amount</th><th>State</th></tr>{rows}</table></div></body></html>",
        orders.len(),
        n
    );
    Html(html).into_response()
}
