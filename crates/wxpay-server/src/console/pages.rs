//! The console's pages and actions. Each handler checks the session first, reads through the
//! store, and renders escaped HTML.

use super::chart;
use super::html::{
    badge, csrf_field, esc, layout, opt, opt_time, time, truncate_chars, url_encode, yuan,
};
use super::{
    Console, Ctx, Fail, Params, form_params, html_response, query_params, safe_next, see_other,
    with_msg,
};
use crate::workers::webhooks::{endpoints, redact_url};
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, OriginalUri, Path, Query, State as S};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use std::fmt::Write;
use wxpay_store::admin::{OrderSearch, ReviewItem};
use wxpay_store::{Anomaly, DeliveryFilter, DeliveryState, OrderState, Receipt, WebhookDelivery};

const ORDERS_PER_PAGE: i64 = 50;
const DELIVERIES_PER_PAGE: i64 = 50;
const REPORTS_PER_PAGE: i64 = 30;
const QUEUE_LIMIT: i64 = 200;
/// Characters of a notification body or query shown (bodies are capped when stored too).
const BODY_SHOWN: usize = 4000;
const MAX_RESOLUTION: usize = 1000;

const ORDER_STATES: [OrderState; 6] = [
    OrderState::Created,
    OrderState::Paying,
    OrderState::Paid,
    OrderState::PartiallyRefunded,
    OrderState::Refunded,
    OrderState::Closed,
];

fn flash(p: &Params) -> String {
    let (class, text) = match p.get("msg").map(String::as_str) {
        Some("resolved") => ("ok", "Resolved."),
        Some("already_resolved") => (
            "wait",
            "It had already been resolved; the first resolution stands.",
        ),
        Some("redelivered") => ("ok", "The event is queued for delivery again."),
        _ => return String::new(),
    };
    format!("<p class=\"flash {class}\">{text}</p>")
}

fn page(title: &str, nav: &super::html::Nav, body: &str) -> Response {
    html_response(layout(title, Some(nav), body))
}

fn param<'a>(p: &'a Params, k: &str) -> Option<&'a str> {
    p.get(k).map(|v| v.trim()).filter(|v| !v.is_empty())
}

fn bad(msg: impl Into<String>) -> Fail {
    Fail::Page(StatusCode::BAD_REQUEST, msg.into())
}

/// Unix ms of 00:00 UTC of a `YYYY-MM-DD` day.
fn day_start_ms(s: &str) -> Result<i64, Fail> {
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| bad(format!("not a date (YYYY-MM-DD): {s}")))?;
    Ok(d.and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_millis())
        .unwrap_or(0))
}

fn order_link(order_no: &str) -> String {
    format!(
        "<a href=\"/admin/orders/{}\"><code>{}</code></a>",
        url_encode(order_no),
        esc(order_no)
    )
}

fn code(s: &str) -> String {
    format!("<code>{}</code>", esc(s))
}

fn opt_code(s: Option<&str>) -> String {
    match s {
        Some(v) if !v.is_empty() => code(v),
        _ => opt(None),
    }
}

fn hidden(name: &str, value: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
        esc(name),
        esc(value)
    )
}

fn resolve_form(action: &str, csrf: &str, next: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{}\" class=\"inline resolve\">{}{}\
         <input name=\"resolution\" required maxlength=\"{MAX_RESOLUTION}\" placeholder=\"resolution (e.g. refunded by hand)\">\
         <button type=\"submit\">Resolve</button></form>",
        esc(action),
        csrf_field(csrf),
        hidden("next", next)
    )
}

fn redeliver_form(csrf: &str, event_id: &str, next: &str, enabled: bool) -> String {
    if !enabled {
        return "<span class=\"muted\" title=\"no webhook endpoint is configured\">redeliver: no endpoint</span>".into();
    }
    format!(
        "<form method=\"post\" action=\"/admin/webhooks/events/{}/redeliver\" class=\"inline\" \
         data-confirm=\"Send this event to its endpoints again?\">{}{}\
         <button type=\"submit\" class=\"redeliver\">Redeliver</button></form>",
        url_encode(event_id),
        csrf_field(csrf),
        hidden("next", next)
    )
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A notification's raw parts, escaped and cut, inside a `<details>`.
fn receipt_raw(r: &Receipt) -> String {
    let mut s = String::from("<details><summary>raw notification</summary>");
    if let Some(q) = r.query.as_deref().filter(|q| !q.is_empty()) {
        let (q, cut) = truncate_chars(q, BODY_SHOWN);
        let _ = write!(
            s,
            "<div class=\"raw-label\">query</div><pre>{}{}</pre>",
            esc(&q),
            if cut { "\n… (cut)" } else { "" }
        );
    }
    if let Some(h) = r
        .headers_json
        .as_deref()
        .filter(|h| !h.is_empty() && *h != "[]")
    {
        let (h, cut) = truncate_chars(h, BODY_SHOWN);
        let _ = write!(
            s,
            "<div class=\"raw-label\">headers</div><pre>{}{}</pre>",
            esc(&h),
            if cut { "\n… (cut)" } else { "" }
        );
    }
    let body = lossy(&r.body);
    let (b, cut) = truncate_chars(&body, BODY_SHOWN);
    let _ = write!(
        s,
        "<div class=\"raw-label\">body ({} bytes{})</div><pre>{}{}</pre></details>",
        r.body.len(),
        if r.body_truncated {
            ", cut when stored"
        } else {
            ""
        },
        esc(&b),
        if cut { "\n… (cut)" } else { "" }
    );
    s
}

fn verified_badge(v: bool) -> String {
    if v {
        badge("verified")
    } else {
        badge("unverified")
    }
}

// ------------------------------------------------------------------------------- overview

pub async fn overview(
    S(c): S<Console>,
    headers: HeaderMap,
    uri: OriginalUri,
    q: Result<Query<Params>, QueryRejection>,
) -> Result<Response, Fail> {
    let ctx = c.require(&headers, &uri)?;
    let p = query_params(q)?;
    let hours: i64 = param(&p, "hours")
        .and_then(|h| h.parse().ok())
        .filter(|h| [1, 3, 6, 12, 24].contains(h))
        .unwrap_or(3);
    let store = &c.app.store;
    let now = c.app.now_ms();
    let to = (now.div_euclid(60_000) + 1) * 60_000;
    let minutes = hours * 60;
    let from = to - minutes * 60_000;
    let buckets = store.admin_minute_buckets(from, to).await?;
    let counts = store.admin_order_state_counts().await?;
    let open = store.admin_open_review_count().await?;
    let nav = c.nav("overview", &ctx).await;

    let mut b = String::new();
    b.push_str("<section><h2>Payments per minute</h2><p class=\"tabs\">");
    for h in [1, 3, 6, 12, 24] {
        let class = if h == hours { " class=\"active\"" } else { "" };
        let _ = write!(b, "<a href=\"/admin?hours={h}\"{class}>last {h} h</a>");
    }
    b.push_str("</p>");
    b.push_str(&chart::svg(&buckets, from, minutes));
    let (paid, paid_fen, attempts, succeeded) = chart::totals(&buckets);
    let rate = if attempts > 0 {
        format!("{}%", succeeded * 100 / attempts)
    } else {
        "—".into()
    };
    let _ = write!(
        b,
        "<p class=\"totals\">From {} to {} UTC: <strong>{paid}</strong> orders paid ({}) · \
         <strong>{attempts}</strong> payment attempts opened, {succeeded} succeeded (success rate {rate}).</p></section>",
        time(from),
        time(to),
        yuan(paid_fen)
    );

    b.push_str("<section class=\"cards\">");
    let total: i64 = counts.iter().map(|(_, n)| n).sum();
    let _ = write!(
        b,
        "<a class=\"card\" href=\"/admin/orders\"><span class=\"n\">{total}</span> orders</a>"
    );
    for st in ORDER_STATES {
        let n = counts
            .iter()
            .find(|(s, _)| s == st.as_str())
            .map(|(_, n)| *n)
            .unwrap_or(0);
        let _ = write!(
            b,
            "<a class=\"card\" href=\"/admin/orders?state={}\"><span class=\"n\">{n}</span> {}</a>",
            st.as_str(),
            badge(st.as_str())
        );
    }
    let _ = write!(
        b,
        "<a class=\"card{}\" href=\"/admin/anomalies\"><span class=\"n\">{open}</span> to review</a></section>",
        if open > 0 { " alert" } else { "" }
    );

    b.push_str("<section><h2>Merchants</h2><ul class=\"plain\">");
    let mut merchants: Vec<_> = c.app.settings.merchants.iter().collect();
    merchants.sort_by(|a, b| a.id.cmp(&b.id));
    for m in merchants {
        let proto = match m.protocol {
            crate::configuration::ProtocolSetting::Legacy => "legacy 2014",
            crate::configuration::ProtocolSetting::V3 => "APIv3",
        };
        let _ = write!(
            b,
            "<li><a href=\"/admin/orders?merchant={}\"><code>{}</code></a> · {proto} · {}</li>",
            url_encode(&m.id),
            esc(&m.id),
            esc(&redact_url(&m.base_url))
        );
    }
    b.push_str("</ul></section>");
    Ok(page("Overview", &nav, &b))
}

// --------------------------------------------------------------------------------- orders

pub async fn orders(
    S(c): S<Console>,
    headers: HeaderMap,
    uri: OriginalUri,
    q: Result<Query<Params>, QueryRejection>,
) -> Result<Response, Fail> {
    let ctx = c.require(&headers, &uri)?;
    let p = query_params(q)?;
    let state = match param(&p, "state") {
        None => None,
        Some(s) => Some(
            s.parse::<OrderState>()
                .map_err(|_| bad(format!("unknown order state {s}")))?,
        ),
    };
    let from_ms = param(&p, "from").map(day_start_ms).transpose()?;
    let to_ms = param(&p, "to")
        .map(|d| day_start_ms(d).map(|t| t + 86_400_000))
        .transpose()?;
    let page_no: i64 = match param(&p, "page") {
        None => 1,
        Some(n) => n
            .parse()
            .ok()
            .filter(|n: &i64| (1..=1_000_000).contains(n))
            .ok_or_else(|| bad("page must be a positive number"))?,
    };
    let search = OrderSearch {
        state,
        merchant_id: param(&p, "merchant").map(str::to_string),
        user_id: param(&p, "user_id").map(str::to_string),
        text: param(&p, "q").map(str::to_string),
        from_ms,
        to_ms,
        offset: (page_no - 1) * ORDERS_PER_PAGE,
        limit: ORDERS_PER_PAGE,
    };
    let result = c.app.store.admin_search_orders(&search).await?;
    let nav = c.nav("orders", &ctx).await;

    let v = |k: &str| esc(param(&p, k).unwrap_or(""));
    let mut b = String::new();
    b.push_str("<form method=\"get\" action=\"/admin/orders\" class=\"filters\">");
    let _ = write!(
        b,
        "<label>Search <input name=\"q\" value=\"{}\" placeholder=\"order_no, out_trade_no or transaction_id\" size=\"34\"></label>",
        v("q")
    );
    b.push_str("<label>State <select name=\"state\"><option value=\"\">any</option>");
    for st in ORDER_STATES {
        let sel = if state == Some(st) { " selected" } else { "" };
        let _ = write!(b, "<option{sel}>{}</option>", st.as_str());
    }
    b.push_str("</select></label><label>Merchant <select name=\"merchant\"><option value=\"\">any</option>");
    let mut ids: Vec<String> = c.app.gateways.keys().cloned().collect();
    if let Some(m) = param(&p, "merchant")
        && !ids.iter().any(|i| i == m)
    {
        ids.push(m.to_string());
    }
    ids.sort();
    for id in &ids {
        let sel = if param(&p, "merchant") == Some(id.as_str()) {
            " selected"
        } else {
            ""
        };
        let _ = write!(b, "<option{sel} value=\"{0}\">{0}</option>", esc(id));
    }
    let _ = write!(
        b,
        "</select></label><label>User <input name=\"user_id\" value=\"{}\" size=\"12\"></label>\
         <label>From <input type=\"date\" name=\"from\" value=\"{}\"></label>\
         <label>To <input type=\"date\" name=\"to\" value=\"{}\"></label>\
         <button type=\"submit\">Filter</button> <a href=\"/admin/orders\">clear</a></form>",
        v("user_id"),
        v("from"),
        v("to")
    );

    let shown_from = if result.total == 0 {
        0
    } else {
        search.offset + 1
    };
    let shown_to = search.offset + result.orders.len() as i64;
    let _ = write!(
        b,
        "<p class=\"count\">{shown_from}–{shown_to} of {} orders</p>",
        result.total
    );
    b.push_str(
        "<table class=\"orders\"><thead><tr><th>Order</th><th>Created</th><th>User</th><th>Subject</th>\
         <th class=\"num\">Payable</th><th class=\"num\">Refunded</th><th>State</th><th>Merchant</th><th>Paid at</th></tr></thead><tbody>",
    );
    for o in &result.orders {
        let discount = if o.discount_fen > 0 {
            format!(
                "<div class=\"muted small\">{} − {}</div>",
                yuan(o.amount_fen),
                yuan(o.discount_fen)
            )
        } else {
            String::new()
        };
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}{discount}</td>\
             <td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            order_link(&o.order_no),
            time(o.created_at),
            esc(&o.user_id),
            esc(&o.subject),
            yuan(o.payable_fen),
            if o.refunded_fen > 0 {
                yuan(o.refunded_fen)
            } else {
                opt(None)
            },
            badge(o.state.as_str()),
            opt(o.merchant_id.as_deref()),
            opt_time(o.paid_at)
        );
    }
    if result.orders.is_empty() {
        b.push_str("<tr><td colspan=\"9\" class=\"muted\">No orders match.</td></tr>");
    }
    b.push_str("</tbody></table>");

    // Paging links keep the filters.
    let keep: Vec<String> = ["q", "state", "merchant", "user_id", "from", "to"]
        .iter()
        .filter_map(|k| param(&p, k).map(|v| format!("{k}={}", url_encode(v))))
        .collect();
    let link = |n: i64| {
        let mut parts = keep.clone();
        parts.push(format!("page={n}"));
        format!("/admin/orders?{}", parts.join("&"))
    };
    b.push_str("<p class=\"pager\">");
    if page_no > 1 {
        let _ = write!(b, "<a href=\"{}\">← newer</a>", esc(&link(page_no - 1)));
    }
    if shown_to < result.total {
        let _ = write!(b, "<a href=\"{}\">older →</a>", esc(&link(page_no + 1)));
    }
    b.push_str("</p>");
    Ok(page("Orders", &nav, &b))
}

// ------------------------------------------------------------------------------- timeline

struct Entry {
    at: i64,
    rank: u8,
    kind: &'static str,
    html: String,
}

fn items_table(items_json: &str) -> String {
    let Ok(serde_json::Value::Array(items)) = serde_json::from_str::<serde_json::Value>(items_json)
    else {
        return code(items_json);
    };
    let mut s = String::from(
        "<table class=\"items\"><tr><th>SKU</th><th>Name</th><th class=\"num\">Unit</th><th class=\"num\">Qty</th></tr>",
    );
    for it in &items {
        let text = |k: &str| {
            it.get(k)
                .map(|v| match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .unwrap_or_default()
        };
        let unit = it
            .get("unit_price_fen")
            .and_then(|v| v.as_i64())
            .map(yuan)
            .unwrap_or_default();
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{unit}</td><td class=\"num\">{}</td></tr>",
            esc(&text("sku")),
            esc(&text("name")),
            esc(&text("quantity"))
        );
    }
    s.push_str("</table>");
    s
}

fn anomaly_status(a: &Anomaly, ctx: &Ctx, next: &str) -> String {
    match a.resolved_at {
        Some(at) => format!(
            "{} {} — {}",
            badge("resolved"),
            time(at),
            esc(a.resolution.as_deref().unwrap_or(""))
        ),
        None => format!(
            "{} {}",
            badge("open"),
            resolve_form(
                &format!("/admin/anomalies/{}/resolve", a.id),
                &ctx.csrf,
                next
            )
        ),
    }
}

fn delivery_line(d: &WebhookDelivery) -> String {
    let mut s = format!(
        "{} to <code>{}</code> · {} attempt{}",
        badge(d.state.as_str()),
        esc(&redact_url(&d.endpoint)),
        d.attempts,
        if d.attempts == 1 { "" } else { "s" }
    );
    if let Some(st) = d.last_status {
        let _ = write!(s, " · last HTTP {st}");
    }
    if let Some(e) = d.last_error.as_deref().filter(|e| !e.is_empty()) {
        let (e, _) = truncate_chars(e, 300);
        let _ = write!(s, " · <span class=\"err\">{}</span>", esc(&e));
    }
    if let Some(at) = d.delivered_at {
        let _ = write!(s, " · delivered {}", time(at));
    } else if d.state == DeliveryState::Pending {
        let _ = write!(s, " · next try {}", time(d.next_attempt_at));
    }
    s
}

pub async fn order(
    S(c): S<Console>,
    headers: HeaderMap,
    uri: OriginalUri,
    Path(order_no): Path<String>,
    q: Result<Query<Params>, QueryRejection>,
) -> Result<Response, Fail> {
    let ctx = c.require(&headers, &uri)?;
    let p = query_params(q)?;
    let store = &c.app.store;
    let Some(o) = store.get_order(&order_no).await? else {
        return Err(Fail::Page(
            StatusCode::NOT_FOUND,
            format!("no order {order_no}"),
        ));
    };
    let attempts = store.list_attempts(&order_no).await?;
    let receipts = store.admin_order_receipts(&order_no).await?;
    let events = store.list_events(&order_no).await?;
    let refunds = store.list_refunds(&order_no).await?;
    let anomalies = store.list_anomalies(&order_no).await?;
    let deliveries = if store.admin_table_exists("webhook_deliveries").await? {
        let mut d = store
            .list_webhook_deliveries(&DeliveryFilter {
                order_no: Some(order_no.clone()),
                limit: 500,
                ..Default::default()
            })
            .await?;
        d.reverse();
        Some(d)
    } else {
        None
    };
    let can_redeliver = !endpoints(&c.app.settings).is_empty();
    let nav = c.nav("orders", &ctx).await;
    let next = format!("/admin/orders/{}", url_encode(&order_no));

    let mut b = flash(&p);
    // Summary.
    let _ = write!(
        b,
        "<section class=\"summary\"><dl>\
         <dt>Order</dt><dd>{} {}</dd><dt>User</dt><dd>{}</dd><dt>Subject</dt><dd>{}</dd>\
         <dt>Amount</dt><dd>{}</dd><dt>Discount</dt><dd>{}{}</dd><dt>Payable</dt><dd><strong>{}</strong></dd>\
         <dt>Refunded</dt><dd>{}</dd><dt>Merchant</dt><dd>{}</dd><dt>Paid by attempt</dt><dd>{}{}</dd>\
         <dt>Created</dt><dd>{}</dd><dt>Expires</dt><dd>{}</dd><dt>Paid</dt><dd>{}</dd><dt>Closed</dt><dd>{}</dd>\
         </dl>",
        code(&o.order_no),
        badge(o.state.as_str()),
        esc(&o.user_id),
        esc(&o.subject),
        yuan(o.amount_fen),
        yuan(o.discount_fen),
        o.coupon_code
            .as_deref()
            .map(|c| format!(" (coupon {})", code(c)))
            .unwrap_or_default(),
        yuan(o.payable_fen),
        yuan(o.refunded_fen),
        opt(o.merchant_id.as_deref()),
        opt_code(o.paid_out_trade_no.as_deref()),
        o.paid_source
            .as_deref()
            .map(|s| format!(" via {}", esc(s)))
            .unwrap_or_default(),
        time(o.created_at),
        time(o.expires_at),
        opt_time(o.paid_at),
        opt_time(o.closed_at),
    );
    if let Some(items) = o.items_json.as_deref() {
        b.push_str("<h3>Items</h3>");
        b.push_str(&items_table(items));
    }
    b.push_str("</section>");

    // Attempts.
    b.push_str(
        "<section><h2>Payment attempts</h2><table><thead><tr><th>out_trade_no</th><th>Merchant</th><th>Opened</th>\
         <th class=\"num\">Amount</th><th>State</th><th>Prepay id</th><th>Transaction</th><th class=\"num\">Paid</th>\
         <th>Source</th><th>Anomaly</th><th class=\"num\">Queries</th></tr></thead><tbody>",
    );
    for a in &attempts {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{} <span class=\"muted small\">{}</span></td><td>{}</td><td class=\"num\">{}</td>\
             <td>{}</td><td>{}{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td></tr>",
            code(&a.out_trade_no),
            esc(&a.merchant_id),
            esc(&a.protocol),
            time(a.created_at),
            yuan(a.amount_fen),
            badge(a.state.as_str()),
            opt_code(a.prepay_id.as_deref()),
            a.prepay_expires_at
                .map(|t| format!("<div class=\"muted small\">valid until {}</div>", time(t)))
                .unwrap_or_default(),
            opt_code(a.transaction_id.as_deref()),
            a.paid_fen.map(yuan).unwrap_or_else(|| opt(None)),
            opt(a.paid_source.as_deref()),
            a.anomaly.as_deref().map(badge).unwrap_or_else(|| opt(None)),
            a.query_count
        );
    }
    if attempts.is_empty() {
        b.push_str("<tr><td colspan=\"11\" class=\"muted\">No payment attempt yet.</td></tr>");
    }
    b.push_str("</tbody></table></section>");

    // Timeline.
    let mut entries: Vec<Entry> = Vec::new();
    let mut add = |at: i64, rank: u8, kind: &'static str, html: String| {
        entries.push(Entry {
            at,
            rank,
            kind,
            html,
        })
    };
    add(
        o.created_at,
        0,
        "order",
        format!(
            "Order created for {} by user {}: payable {}",
            esc(&o.subject),
            esc(&o.user_id),
            yuan(o.payable_fen)
        ),
    );
    for a in &attempts {
        add(
            a.created_at,
            1,
            "attempt",
            format!(
                "Payment attempt {} opened at {} ({}) for {} — now {}{}",
                code(&a.out_trade_no),
                esc(&a.merchant_id),
                esc(&a.protocol),
                yuan(a.amount_fen),
                badge(a.state.as_str()),
                a.prepay_id
                    .as_deref()
                    .map(|pid| format!("; prepay id {}", code(pid)))
                    .unwrap_or_else(|| "; no prepay id".into())
            ),
        );
        if let Some(at) = a.paid_at {
            add(
                at,
                3,
                "attempt",
                format!(
                    "Attempt {} succeeded: transaction {}, {} paid, learnt by {}",
                    code(&a.out_trade_no),
                    opt_code(a.transaction_id.as_deref()),
                    a.paid_fen.map(yuan).unwrap_or_default(),
                    opt(a.paid_source.as_deref())
                ),
            );
        }
    }
    for r in &receipts {
        add(
            r.received_at,
            2,
            "notification",
            format!(
                "Notification #{} ({}) from {} at {} — {} · outcome {}{}{}{}",
                r.id,
                esc(&r.kind),
                esc(&r.merchant_id),
                opt(r.remote_addr.as_deref()),
                verified_badge(r.verified),
                badge(&r.outcome),
                r.detail
                    .as_deref()
                    .map(|d| format!(" · <span class=\"err\">{}</span>", esc(d)))
                    .unwrap_or_default(),
                r.transaction_id
                    .as_deref()
                    .map(|t| format!(" · transaction {}", code(t)))
                    .unwrap_or_default(),
                receipt_raw(r)
            ),
        );
    }
    if let Some(at) = o.paid_at {
        add(
            at,
            4,
            "order",
            format!(
                "Order {} by attempt {}{}",
                badge("PAID"),
                opt_code(o.paid_out_trade_no.as_deref()),
                o.paid_receipt_id
                    .map(|id| format!(" on notification #{id}"))
                    .unwrap_or_default()
            ),
        );
    }
    if let Some(at) = o.closed_at {
        add(at, 4, "order", format!("Order {}", badge("CLOSED")));
    }
    for e in &events {
        let pretty = serde_json::from_str::<serde_json::Value>(&e.payload)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| e.payload.clone());
        add(
            e.created_at,
            5,
            "event",
            format!(
                "Event <strong>{}</strong> {}<details><summary>payload</summary><pre>{}</pre></details>",
                esc(&e.event_type),
                code(&e.id),
                esc(&pretty)
            ),
        );
    }
    for r in &refunds {
        add(
            r.created_at,
            6,
            "refund",
            format!(
                "Refund {} of {} (of {}) requested{} — now {}",
                code(&r.out_refund_no),
                yuan(r.amount_fen),
                yuan(r.total_fen),
                r.reason
                    .as_deref()
                    .map(|x| format!(": {}", esc(x)))
                    .unwrap_or_default(),
                badge(&r.state)
            ),
        );
        if let Some(at) = r.finished_at {
            add(
                at,
                6,
                "refund",
                format!(
                    "Refund {} finished {}{}{}",
                    code(&r.out_refund_no),
                    badge(&r.state),
                    r.refund_id
                        .as_deref()
                        .map(|x| format!(" · WeChat refund id {}", code(x)))
                        .unwrap_or_default(),
                    r.detail
                        .as_deref()
                        .map(|x| format!(" · {}", esc(x)))
                        .unwrap_or_default()
                ),
            );
        }
    }
    for a in &anomalies {
        add(
            a.created_at,
            7,
            "anomaly",
            format!(
                "Anomaly #{} <strong>{}</strong>{}: {} · {}",
                a.id,
                esc(&a.kind),
                a.out_trade_no
                    .as_deref()
                    .map(|x| format!(" on {}", code(x)))
                    .unwrap_or_default(),
                esc(&a.detail),
                anomaly_status(a, &ctx, &next)
            ),
        );
    }
    if let Some(ds) = &deliveries {
        for d in ds {
            add(
                d.created_at,
                8,
                "webhook",
                format!(
                    "Webhook {} ({}) {} {}",
                    esc(&d.event_type),
                    code(&d.event_id),
                    delivery_line(d),
                    redeliver_form(&ctx.csrf, &d.event_id, &next, can_redeliver)
                ),
            );
        }
    }
    entries.sort_by_key(|e| (e.at, e.rank));
    b.push_str("<section><h2>Timeline</h2><ol class=\"timeline\">");
    for e in &entries {
        let _ = write!(
            b,
            "<li class=\"k-{0}\"><time>{1}</time><span class=\"kind\">{0}</span><div class=\"what\">{2}</div></li>",
            e.kind,
            time(e.at),
            e.html
        );
    }
    b.push_str("</ol>");
    if deliveries.is_none() {
        b.push_str("<p class=\"muted\">Webhook deliveries are not recorded by this database.</p>");
    } else if deliveries.as_ref().is_some_and(|d| d.is_empty()) {
        b.push_str(if can_redeliver {
            "<p class=\"muted\">No webhook delivery for this order yet.</p>"
        } else {
            "<p class=\"muted\">No webhook endpoint is configured, so no webhook is sent.</p>"
        });
    }
    b.push_str("</section>");
    let title = format!("Order {}", o.order_no);
    Ok(page(&title, &nav, &b))
}

// ------------------------------------------------------------------------------ anomalies

pub async fn anomalies(
    S(c): S<Console>,
    headers: HeaderMap,
    uri: OriginalUri,
    q: Result<Query<Params>, QueryRejection>,
) -> Result<Response, Fail> {
    let ctx = c.require(&headers, &uri)?;
    let p = query_params(q)?;
    let all = param(&p, "show") == Some("all");
    let items = c.app.store.admin_review_queue(all, QUEUE_LIMIT).await?;
    let nav = c.nav("anomalies", &ctx).await;
    let next = if all {
        "/admin/anomalies?show=all"
    } else {
        "/admin/anomalies"
    };
    let mut b = flash(&p);
    let _ = write!(
        b,
        "<p class=\"tabs\"><a href=\"/admin/anomalies\"{}>open</a><a href=\"/admin/anomalies?show=all\"{}>all</a></p>\
         <p class=\"muted\">Amount mismatches, payments after close, duplicate payments, and notifications that failed \
         verification or named no payment of ours. Resolving records who looked and what was done; it changes no money.</p>",
        if all { "" } else { " class=\"active\"" },
        if all { " class=\"active\"" } else { "" }
    );
    b.push_str(
        "<table class=\"queue\"><thead><tr><th>When</th><th>Kind</th><th>Order / attempt</th><th>What happened</th><th>Status</th></tr></thead><tbody>",
    );
    for item in &items {
        match item {
            ReviewItem::Anomaly(a) => {
                let _ = write!(
                    b,
                    "<tr class=\"anomaly\" data-id=\"{}\"><td>{}</td><td>{}</td><td>{}<div>{}</div></td><td>{}{}</td><td>{}</td></tr>",
                    a.id,
                    time(a.created_at),
                    badge(&a.kind),
                    a.order_no
                        .as_deref()
                        .map(order_link)
                        .unwrap_or_else(|| opt(None)),
                    opt_code(a.out_trade_no.as_deref()),
                    esc(&a.detail),
                    a.receipt_id
                        .map(|r| format!(" <span class=\"muted small\">(notification #{r})</span>"))
                        .unwrap_or_default(),
                    anomaly_status(a, &ctx, next)
                );
            }
            ReviewItem::Receipt { kind, receipt: r } => {
                let target = match r.out_trade_no.as_deref() {
                    Some(otn) => format!(
                        "<a href=\"/admin/orders?q={}\">{}</a> <span class=\"muted small\">(claimed)</span>",
                        url_encode(otn),
                        code(otn)
                    ),
                    None => opt(None),
                };
                let _ = write!(
                    b,
                    "<tr class=\"receipt\" data-id=\"{}\"><td>{}</td><td>{}</td><td>{target}</td>\
                     <td>Notification #{} to {} from {} — {} · outcome {}{}{}</td><td>{} {}</td></tr>",
                    r.id,
                    time(r.received_at),
                    badge(kind),
                    r.id,
                    esc(&r.merchant_id),
                    opt(r.remote_addr.as_deref()),
                    verified_badge(r.verified),
                    badge(&r.outcome),
                    r.detail
                        .as_deref()
                        .map(|d| format!(": <span class=\"err\">{}</span>", esc(d)))
                        .unwrap_or_default(),
                    receipt_raw(r),
                    badge("open"),
                    resolve_form(
                        &format!("/admin/receipts/{}/resolve", r.id),
                        &ctx.csrf,
                        next
                    )
                );
            }
        }
    }
    if items.is_empty() {
        b.push_str("<tr><td colspan=\"5\" class=\"muted\">Nothing to review.</td></tr>");
    }
    b.push_str("</tbody></table>");
    Ok(page("Anomalies", &nav, &b))
}

fn resolution(p: &Params) -> Result<String, Fail> {
    let r = param(p, "resolution").ok_or_else(|| bad("a resolution note is required"))?;
    if r.chars().count() > MAX_RESOLUTION {
        return Err(bad(format!(
            "the resolution note is longer than {MAX_RESOLUTION} characters"
        )));
    }
    Ok(r.to_string())
}

pub async fn resolve_anomaly(
    S(c): S<Console>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    form: Result<Form<Params>, FormRejection>,
) -> Result<Response, Fail> {
    let p = form_params(form)?;
    c.require_post(&headers, &p)?;
    let note = resolution(&p)?;
    let next = safe_next(p.get("next").map(String::as_str), "/admin/anomalies");
    let done = c
        .app
        .store
        .admin_resolve_anomaly(id, &note, c.app.now_ms())
        .await?;
    tracing::info!(
        anomaly = id,
        resolved = done,
        "admin console: anomaly resolved"
    );
    Ok(see_other(&with_msg(
        &next,
        if done { "resolved" } else { "already_resolved" },
    )))
}

pub async fn resolve_receipt(
    S(c): S<Console>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    form: Result<Form<Params>, FormRejection>,
) -> Result<Response, Fail> {
    let p = form_params(form)?;
    c.require_post(&headers, &p)?;
    let note = resolution(&p)?;
    let next = safe_next(p.get("next").map(String::as_str), "/admin/anomalies");
    let done = c
        .app
        .store
        .admin_resolve_receipt(id, &note, c.app.now_ms())
        .await?;
    tracing::info!(
        receipt = id,
        resolved = done.is_some(),
        "admin console: notification reviewed"
    );
    Ok(see_other(&with_msg(
        &next,
        if done.is_some() {
            "resolved"
        } else {
            "already_resolved"
        },
    )))
}

// ------------------------------------------------------------------------------- webhooks

pub async fn webhooks(
    S(c): S<Console>,
    headers: HeaderMap,
    uri: OriginalUri,
    q: Result<Query<Params>, QueryRejection>,
) -> Result<Response, Fail> {
    let ctx = c.require(&headers, &uri)?;
    let p = query_params(q)?;
    let state = match param(&p, "state") {
        None => None,
        Some(s) => Some(
            s.parse::<DeliveryState>()
                .map_err(|_| bad("state must be PENDING, DELIVERED or DEAD"))?,
        ),
    };
    let before = match param(&p, "before") {
        None => None,
        Some(s) => Some(
            s.parse::<i64>()
                .map_err(|_| bad("before must be a number"))?,
        ),
    };
    let eps = endpoints(&c.app.settings);
    let nav = c.nav("webhooks", &ctx).await;
    let mut b = flash(&p);
    if eps.is_empty() {
        b.push_str(
            "<p class=\"flash wait\">No webhook endpoint is configured (<code>[[webhooks]]</code> in wxpay.toml), \
             so no event is sent and nothing can be redelivered.</p>",
        );
    } else {
        b.push_str("<p>Endpoints: ");
        let list: Vec<String> = eps
            .iter()
            .map(|e| {
                format!(
                    "<code>{}</code> ({})",
                    esc(&redact_url(&e.url)),
                    if e.events.is_empty() {
                        "every event".to_string()
                    } else {
                        esc(&e.events.join(", "))
                    }
                )
            })
            .collect();
        b.push_str(&list.join(", "));
        b.push_str("</p>");
    }
    if !c.app.store.admin_table_exists("webhook_deliveries").await? {
        b.push_str("<p class=\"muted\">This database has no webhook deliveries table yet.</p>");
        return Ok(page("Webhook deliveries", &nav, &b));
    }
    let filter = DeliveryFilter {
        state,
        event_id: param(&p, "event_id").map(str::to_string),
        order_no: param(&p, "order_no").map(str::to_string),
        before_id: before,
        limit: DELIVERIES_PER_PAGE,
    };
    let rows = c.app.store.list_webhook_deliveries(&filter).await?;
    let v = |k: &str| esc(param(&p, k).unwrap_or(""));
    b.push_str("<form method=\"get\" action=\"/admin/webhooks\" class=\"filters\"><label>State <select name=\"state\"><option value=\"\">any</option>");
    for s in [
        DeliveryState::Pending,
        DeliveryState::Delivered,
        DeliveryState::Dead,
    ] {
        let sel = if state == Some(s) { " selected" } else { "" };
        let _ = write!(b, "<option{sel}>{}</option>", s.as_str());
    }
    let _ = write!(
        b,
        "</select></label><label>Order <input name=\"order_no\" value=\"{}\"></label>\
         <label>Event <input name=\"event_id\" value=\"{}\"></label><button type=\"submit\">Filter</button> \
         <a href=\"/admin/webhooks\">clear</a></form>",
        v("order_no"),
        v("event_id")
    );
    let next = safe_next(
        uri.0.path_and_query().map(|x| x.as_str()),
        "/admin/webhooks",
    );
    b.push_str(
        "<table class=\"deliveries\"><thead><tr><th>#</th><th>Queued</th><th>Event</th><th>Order</th><th>Delivery</th><th></th></tr></thead><tbody>",
    );
    for d in &rows {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}<div>{}</div></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            d.id,
            time(d.created_at),
            esc(&d.event_type),
            code(&d.event_id),
            d.order_no
                .as_deref()
                .map(order_link)
                .unwrap_or_else(|| opt(None)),
            delivery_line(d),
            redeliver_form(&ctx.csrf, &d.event_id, &next, !eps.is_empty())
        );
    }
    if rows.is_empty() {
        b.push_str("<tr><td colspan=\"6\" class=\"muted\">No deliveries.</td></tr>");
    }
    b.push_str("</tbody></table>");
    if rows.len() as i64 == DELIVERIES_PER_PAGE
        && let Some(last) = rows.last()
    {
        let mut parts: Vec<String> = ["state", "order_no", "event_id"]
            .iter()
            .filter_map(|k| param(&p, k).map(|v| format!("{k}={}", url_encode(v))))
            .collect();
        parts.push(format!("before={}", last.id));
        let _ = write!(
            b,
            "<p class=\"pager\"><a href=\"{}\">older →</a></p>",
            esc(&format!("/admin/webhooks?{}", parts.join("&")))
        );
    }
    Ok(page("Webhook deliveries", &nav, &b))
}

pub async fn redeliver(
    S(c): S<Console>,
    headers: HeaderMap,
    Path(event_id): Path<String>,
    form: Result<Form<Params>, FormRejection>,
) -> Result<Response, Fail> {
    let p = form_params(form)?;
    c.require_post(&headers, &p)?;
    let next = safe_next(p.get("next").map(String::as_str), "/admin/webhooks");
    let eps = endpoints(&c.app.settings);
    if eps.is_empty() {
        return Err(Fail::Page(
            StatusCode::CONFLICT,
            "no webhook endpoint is configured".into(),
        ));
    }
    let deliveries = c
        .app
        .store
        .redeliver_event(&event_id, &eps, c.app.now_ms())
        .await?;
    tracing::info!(event_id = %event_id, deliveries = deliveries.len(), "admin console: webhook redelivery requested");
    Ok(see_other(&with_msg(&next, "redelivered")))
}

// ------------------------------------------------------------------------- reconciliation

fn differences_table(json: &str) -> String {
    let Ok(serde_json::Value::Array(rows)) = serde_json::from_str::<serde_json::Value>(json) else {
        let (t, _) = truncate_chars(json, BODY_SHOWN);
        return format!("<pre>{}</pre>", esc(&t));
    };
    if rows.is_empty() {
        return "<p class=\"muted\">No differences.</p>".into();
    }
    let mut cols: Vec<String> = Vec::new();
    for r in &rows {
        if let serde_json::Value::Object(m) = r {
            for k in m.keys() {
                if !cols.contains(k) {
                    cols.push(k.clone());
                }
            }
        }
    }
    let cell = |v: Option<&serde_json::Value>| match v {
        None | Some(serde_json::Value::Null) => opt(None),
        Some(serde_json::Value::String(s)) => esc(s),
        Some(other) => esc(&other.to_string()),
    };
    let mut s = String::from("<table class=\"diffs\"><thead><tr>");
    for c in &cols {
        let _ = write!(s, "<th>{}</th>", esc(c));
    }
    s.push_str("</tr></thead><tbody>");
    for r in rows.iter().take(500) {
        s.push_str("<tr>");
        match r {
            serde_json::Value::Object(m) => {
                for c in &cols {
                    let _ = write!(s, "<td>{}</td>", cell(m.get(c)));
                }
            }
            other => {
                let _ = write!(
                    s,
                    "<td colspan=\"{}\">{}</td>",
                    cols.len().max(1),
                    cell(Some(other))
                );
            }
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>");
    if rows.len() > 500 {
        let _ = write!(s, "<p class=\"muted\">… and {} more</p>", rows.len() - 500);
    }
    s
}

pub async fn reconciliation(
    S(c): S<Console>,
    headers: HeaderMap,
    uri: OriginalUri,
    q: Result<Query<Params>, QueryRejection>,
) -> Result<Response, Fail> {
    let ctx = c.require(&headers, &uri)?;
    let p = query_params(q)?;
    let before = match param(&p, "before") {
        None => None,
        Some(s) => Some(
            s.parse::<i64>()
                .map_err(|_| bad("before must be a number"))?,
        ),
    };
    let merchant = param(&p, "merchant");
    let nav = c.nav("reconciliation", &ctx).await;
    let mut b = String::from(
        "<p class=\"muted\">Each report compares WeChat's daily trade bill of one merchant with our payments and \
         refunds of that Beijing day. The latest report of a day is the one that counts.</p>",
    );
    if !c
        .app
        .store
        .admin_table_exists("reconciliation_reports")
        .await?
    {
        b.push_str("<p class=\"flash wait\">No reconciliation reports yet: this database has no reports table.</p>");
        return Ok(page("Reconciliation", &nav, &b));
    }
    let reports = c
        .app
        .store
        .list_reconciliation_reports(merchant, before, REPORTS_PER_PAGE)
        .await?;
    if reports.is_empty() {
        b.push_str("<p class=\"flash wait\">No reconciliation reports yet. Run <code>wxpay reconcile --merchant ID --date YYYY-MM-DD</code> or let the daily worker run.</p>");
        return Ok(page("Reconciliation", &nav, &b));
    }
    b.push_str(
        "<table class=\"reports\"><thead><tr><th>#</th><th>Merchant</th><th>Bill date</th><th>Run</th><th>Status</th>\
         <th class=\"num\">Bill payments</th><th class=\"num\">Our payments</th><th class=\"num\">Bill refunds</th>\
         <th class=\"num\">Our refunds</th><th class=\"num\">Matched</th><th class=\"num\">Missing here</th><th class=\"num\">Repaired</th>\
         <th class=\"num\">Missing at WeChat</th><th class=\"num\">Amount / state mismatches</th><th class=\"num\">Unresolved</th></tr></thead><tbody>",
    );
    for r in &reports {
        let k = &r.counts;
        let _ = write!(
            b,
            "<tr><td>{}</td><td><a href=\"/admin/reconciliation?merchant={}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"num\">{} · {}</td><td class=\"num\">{} · {}</td><td class=\"num\">{} · {}</td><td class=\"num\">{} · {}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{} / {}</td><td class=\"num\"><strong>{}</strong></td></tr>\
             <tr class=\"detail\"><td></td><td colspan=\"14\"><details><summary>differences</summary>{}</details></td></tr>",
            r.id,
            url_encode(&r.merchant_id),
            esc(&r.merchant_id),
            esc(&r.bill_date),
            time(r.created_at),
            badge(&r.status),
            k.bill_payments,
            yuan(k.bill_payments_fen),
            k.our_payments,
            yuan(k.our_payments_fen),
            k.bill_refunds,
            yuan(k.bill_refunds_fen),
            k.our_refunds,
            yuan(k.our_refunds_fen),
            k.matched,
            k.missing_here,
            k.repaired,
            k.missing_at_wechat,
            k.amount_mismatches,
            k.state_mismatches,
            k.unresolved,
            differences_table(&r.differences_json)
        );
    }
    b.push_str("</tbody></table>");
    if reports.len() as i64 == REPORTS_PER_PAGE
        && let Some(last) = reports.last()
    {
        let mut link = format!("/admin/reconciliation?before={}", last.id);
        if let Some(m) = merchant {
            let _ = write!(link, "&merchant={}", url_encode(m));
        }
        let _ = write!(
            b,
            "<p class=\"pager\"><a href=\"{}\">older →</a></p>",
            esc(&link)
        );
    }
    Ok(page("Reconciliation", &nav, &b))
}
