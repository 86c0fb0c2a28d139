//! OpenAPI 3 description of the app API (`GET /openapi.json`), generated with `utoipa` from the
//! handlers' annotations in `routes::orders` and `routes::coupons`, and a self-contained docs page
//! (`GET /docs`) rendered from it on the server: plain HTML and CSS, no script, no CDN.
//!
//! Request bodies are the handlers' own `serde` structs; the answers, which the handlers build as
//! JSON, are described by the schema structs below (a test compares them with real answers).

#![allow(dead_code)] // the schema structs exist for their `ToSchema` implementations

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use std::fmt::Write as _;
use std::sync::OnceLock;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// `{"error": {"code", "message"}}`, with the HTTP status.
#[derive(ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `invalid_amount`, `order_not_found`, `wechat_rejected`, …
    pub code: String,
    /// For people; may change.
    pub message: String,
}

/// Order state: CREATED → PAYING → PAID → PARTIALLY_REFUNDED → REFUNDED; CREATED | PAYING → CLOSED.
#[derive(ToSchema, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderState {
    Created,
    Paying,
    Paid,
    PartiallyRefunded,
    Refunded,
    Closed,
}

/// An order. Money is integer fen (1 CNY = 100 fen); times are Unix seconds.
#[derive(ToSchema)]
pub struct Order {
    pub order_no: String,
    pub user_id: String,
    pub subject: String,
    /// The lines of an order placed with `items`; null for an `amount_fen` order.
    items: Option<Vec<crate::routes::orders::Item>>,
    pub amount_fen: i64,
    pub discount_fen: i64,
    /// `amount_fen - discount_fen`: what WeChat collects.
    pub payable_fen: i64,
    pub refunded_fen: i64,
    pub coupon_code: Option<String>,
    pub state: OrderState,
    /// The merchant that was paid (null until paid).
    pub merchant: Option<String>,
    /// The payment attempt that paid the order.
    pub paid_out_trade_no: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub paid_at: Option<i64>,
}

#[derive(ToSchema)]
pub struct OrderList {
    pub orders: Vec<Order>,
}

/// What the app hands the WeChat OpenSDK (`PayReq`): legacy SHA-1 or APIv3 RSA `sign`.
#[derive(ToSchema)]
pub struct AppParams {
    pub appid: String,
    pub partnerid: String,
    pub prepayid: String,
    /// Always `Sign=WXPay`.
    pub package: String,
    pub noncestr: String,
    /// Unix seconds, 10 digits.
    pub timestamp: String,
    pub sign: String,
}

#[derive(ToSchema)]
pub struct PayResponse {
    /// This payment attempt's own number at WeChat.
    pub out_trade_no: String,
    pub merchant: String,
    pub app_params: AppParams,
}

#[derive(ToSchema, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CouponState {
    Available,
    Reserved,
    Used,
    Expired,
}

/// A fixed amount off for one user, above a minimum spend, until an expiry.
#[derive(ToSchema)]
pub struct Coupon {
    pub code: String,
    pub user_id: String,
    pub discount_fen: i64,
    pub min_spend_fen: i64,
    pub expires_at: Option<i64>,
    pub state: CouponState,
    /// The order holding (RESERVED) or having used (USED) the coupon.
    pub order_no: Option<String>,
}

#[derive(ToSchema)]
pub struct CouponList {
    pub coupons: Vec<Coupon>,
}

#[derive(ToSchema, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RefundState {
    Pending,
    Processing,
    Success,
    Closed,
    Abnormal,
}

/// A refund (APIv3 merchants).
#[derive(ToSchema)]
pub struct Refund {
    pub out_refund_no: String,
    pub order_no: String,
    pub amount_fen: i64,
    pub reason: Option<String>,
    pub state: RefundState,
    /// WeChat's refund id, once known.
    pub refund_id: Option<String>,
    /// The last thing WeChat said when it was not a plain success.
    pub detail: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

#[derive(ToSchema)]
pub struct RefundList {
    pub refunds: Vec<Refund>,
}

/// `client_ip`: an IPv4 or an IPv6 address.
pub(crate) fn ip_address() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Schema, SchemaFormat, Type};
    let ip = |format: &str| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::Custom(format.into())))
    };
    let any = AnyOfBuilder::new()
        .item(ip("ipv4"))
        .item(ip("ipv6"))
        .description(Some("The user's IP address (IPv4 or IPv6)."))
        .build();
    utoipa::openapi::RefOr::T(Schema::AnyOf(any))
}

/// OpenAPI links from a created order to what can be done with it, so that a client generator
/// (or schemathesis' stateful phase) can follow the flow: create → get / pay / hint / refund.
struct OrderLinks;

impl Modify for OrderLinks {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::link::LinkBuilder;
        let Some(create) = openapi
            .paths
            .paths
            .get_mut("/v1/orders")
            .and_then(|item| item.post.as_mut())
        else {
            return;
        };
        let Some(RefOr::T(created)) = create.responses.responses.get_mut("201") else {
            return;
        };
        for (name, operation_id) in [
            ("GetOrder", "get_order"),
            ("PayOrder", "pay_order"),
            ("ClientResult", "client_result"),
            ("CreateRefund", "create_refund"),
            ("ListRefunds", "list_refunds"),
        ] {
            let link = LinkBuilder::new()
                .operation_id(operation_id)
                .parameter("order_no", "$response.body#/order_no")
                .description(format!("`{operation_id}` for the order just placed"))
                .build();
            created.links.insert(name.to_string(), RefOr::T(link));
        }
    }
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut api_key = Http::new(HttpAuthScheme::Bearer);
        api_key.description =
            Some("A server-to-server API key (`auth.api_keys`): full access.".into());
        components.add_security_scheme("api_key", SecurityScheme::Http(api_key));
        let mut jwt = Http::new(HttpAuthScheme::Bearer);
        jwt.bearer_format = Some("JWT".into());
        jwt.description = Some(
            "An app user's HS256 JWT (`sub` = user id, signed with `auth.jwt_secret`): sees and acts only for that user."
                .into(),
        );
        components.add_security_scheme("user_jwt", SecurityScheme::Http(jwt));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wxpay app API",
        description = "The API a mobile app and its business backend use to sell through WeChat Pay: coupons, orders priced in integer fen, prepay with the signed parameters for the WeChat SDK, the app's \"I paid\" hint, refunds. Every POST takes an optional `Idempotency-Key`: the same key and body replays the first answer; another body with the same key is refused (422). Errors are `{\"error\": {\"code\", \"message\"}}`."
    ),
    paths(
        crate::routes::orders::create,
        crate::routes::orders::list,
        crate::routes::orders::get_one,
        crate::routes::orders::pay,
        crate::routes::orders::client_result,
        crate::routes::orders::create_refund,
        crate::routes::orders::list_refunds,
        crate::routes::coupons::create,
        crate::routes::coupons::list,
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth, &OrderLinks),
    security(("api_key" = []), ("user_jwt" = [])),
    tags(
        (name = "orders", description = "Orders, payment and the app's hint"),
        (name = "refunds", description = "Refunds (APIv3 merchants, API key)"),
        (name = "coupons", description = "Coupons"),
    )
)]
pub struct ApiDoc;

/// The spec.
pub fn spec() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

fn spec_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| spec().to_pretty_json().unwrap_or_else(|_| "{}".into()))
}

/// `GET /openapi.json`.
pub async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        spec_json().to_string(),
    )
        .into_response()
}

/// `GET /docs`.
pub async fn docs() -> Response {
    static HTML: OnceLock<String> = OnceLock::new();
    let html = HTML.get_or_init(|| {
        let v: Value = serde_json::from_str(spec_json()).unwrap_or(Value::Null);
        render_docs(&v)
    });
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'",
            ),
        ],
        html.clone(),
    )
        .into_response()
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Inline code spans (`x`) of a description, escaped.
fn text(s: &str) -> String {
    let mut out = String::new();
    for (i, part) in s.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{}</code>", esc(part));
        } else {
            out.push_str(&esc(part));
        }
    }
    out
}

fn ref_name(r: &str) -> &str {
    r.rsplit('/').next().unwrap_or(r)
}

/// A short type for a schema: `string`, `integer (int64)`, `Order`, `[Item]`, `string | null`.
fn type_of(s: &Value) -> String {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let n = ref_name(r);
        return format!("<a href=\"#schema-{0}\">{0}</a>", esc(n));
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(list) = s.get(key).and_then(Value::as_array) {
            return list.iter().map(type_of).collect::<Vec<_>>().join(" | ");
        }
    }
    if let Some(values) = s.get("enum").and_then(Value::as_array) {
        let vs: Vec<String> = values
            .iter()
            .map(|v| format!("<code>{}</code>", esc(&v.to_string().replace('"', ""))))
            .collect();
        return format!("one of {}", vs.join(", "));
    }
    let types: Vec<String> = match s.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(|t| t.as_str().map(String::from))
            .collect(),
        _ => vec![],
    };
    let mut shown = Vec::new();
    for t in types {
        let one = match t.as_str() {
            "array" => format!("[{}]", s.get("items").map(type_of).unwrap_or_default()),
            other => match s.get("format").and_then(Value::as_str) {
                Some(f) if other != "null" => format!("{other} ({f})"),
                _ => other.to_string(),
            },
        };
        shown.push(one);
    }
    if shown.is_empty() {
        "any".into()
    } else {
        shown.join(" | ")
    }
}

fn properties_table(schema: &Value) -> String {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return format!("<p>{}</p>", type_of(schema));
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = String::from(
        "<table><tr><th>field</th><th>type</th><th>required</th><th>description</th></tr>",
    );
    for (name, p) in props {
        let _ = write!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(name),
            type_of(p),
            if required.contains(&name.as_str()) {
                "yes"
            } else {
                ""
            },
            text(p.get("description").and_then(Value::as_str).unwrap_or(""))
        );
    }
    out.push_str("</table>");
    if schema.get("additionalProperties") == Some(&Value::Bool(false)) {
        out.push_str("<p class=note>Unknown fields are refused.</p>");
    }
    out
}

fn body_schema(content: &Value) -> Option<&Value> {
    content
        .get("content")?
        .as_object()?
        .values()
        .next()?
        .get("schema")
}

/// The docs page: every operation with its parameters, body and answers, then every schema.
pub fn render_docs(spec: &Value) -> String {
    let info = &spec["info"];
    let title = info["title"].as_str().unwrap_or("API");
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>{t}</title>\
         <meta name=viewport content=\"width=device-width, initial-scale=1\">\
         <style>\
         body{{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}}\
         code{{font:13px ui-monospace,monospace;background:#f3f3f3;padding:0 .2rem}}\
         .op{{border:1px solid #ddd;border-radius:6px;margin:1rem 0;padding:.5rem 1rem}}\
         .m{{display:inline-block;min-width:4rem;font-weight:bold;color:#fff;border-radius:4px;text-align:center;margin-right:.5rem}}\
         .GET{{background:#2b7bb9}}.POST{{background:#2e9e5b}}.PUT,.PATCH{{background:#c98a1b}}.DELETE{{background:#c0392b}}\
         table{{border-collapse:collapse;width:100%;margin:.3rem 0}}td,th{{border:1px solid #e3e3e3;padding:.2rem .4rem;text-align:left;vertical-align:top}}\
         .note{{color:#666;font-size:13px}}nav a{{margin-right:1rem}}\
         </style></head><body><h1>{t} <small>{v}</small></h1><p>{d}</p>\
         <p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a> (OpenAPI {o}).</p>",
        t = esc(title),
        v = esc(info["version"].as_str().unwrap_or("")),
        d = text(info["description"].as_str().unwrap_or("")),
        o = esc(spec["openapi"].as_str().unwrap_or("3"))
    );
    out.push_str("<h2>Operations</h2><nav>");
    let paths = spec["paths"].as_object().cloned().unwrap_or_default();
    for (path, item) in &paths {
        for method in ["get", "post", "put", "patch", "delete"] {
            if let Some(op) = item.get(method) {
                let id = op["operationId"].as_str().unwrap_or("");
                let _ = write!(
                    out,
                    "<div><a href=\"#op-{}\"><span class=\"m {}\">{}</span><code>{}</code></a> {}</div>",
                    esc(id),
                    method.to_uppercase(),
                    method.to_uppercase(),
                    esc(path),
                    esc(op["summary"].as_str().unwrap_or(""))
                );
            }
        }
    }
    out.push_str("</nav>");
    for (path, item) in &paths {
        for method in ["get", "post", "put", "patch", "delete"] {
            let Some(op) = item.get(method) else {
                continue;
            };
            let upper = method.to_uppercase();
            let _ = write!(
                out,
                "<section class=op id=\"op-{}\"><h3><span class=\"m {upper}\">{upper}</span><code>{}</code></h3><p><b>{}</b></p><p>{}</p>",
                esc(op["operationId"].as_str().unwrap_or("")),
                esc(path),
                text(op["summary"].as_str().unwrap_or("")),
                text(op["description"].as_str().unwrap_or(""))
            );
            let security = op.get("security").or(spec.get("security"));
            let schemes: Vec<String> = security
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_object)
                .flat_map(|o| o.keys().map(|k| format!("<code>{}</code>", esc(k))))
                .collect();
            if !schemes.is_empty() {
                let _ = write!(
                    out,
                    "<p class=note>Authorization: Bearer — {}</p>",
                    schemes.join(" or ")
                );
            }
            if let Some(params) = op.get("parameters").and_then(Value::as_array) {
                out.push_str("<h4>Parameters</h4><table><tr><th>name</th><th>in</th><th>type</th><th>required</th><th>description</th></tr>");
                for p in params {
                    let _ = write!(
                        out,
                        "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        esc(p["name"].as_str().unwrap_or("")),
                        esc(p["in"].as_str().unwrap_or("")),
                        type_of(&p["schema"]),
                        if p["required"].as_bool() == Some(true) {
                            "yes"
                        } else {
                            ""
                        },
                        text(p["description"].as_str().unwrap_or(""))
                    );
                }
                out.push_str("</table>");
            }
            if let Some(body) = op.get("requestBody") {
                out.push_str("<h4>Request body</h4>");
                if let Some(s) = body_schema(body) {
                    let _ = write!(out, "<p>{}</p>", type_of(s));
                }
            }
            if let Some(responses) = op.get("responses").and_then(Value::as_object) {
                out.push_str("<h4>Answers</h4><table>");
                for (status, r) in responses {
                    let shape = body_schema(r).map(type_of).unwrap_or_default();
                    let _ = write!(
                        out,
                        "<tr><td><b>{}</b></td><td>{}</td><td>{}</td></tr>",
                        esc(status),
                        shape,
                        text(r["description"].as_str().unwrap_or(""))
                    );
                }
                out.push_str("</table>");
            }
            out.push_str("</section>");
        }
    }
    out.push_str("<h2>Schemas</h2>");
    if let Some(schemas) = spec["components"]["schemas"].as_object() {
        for (name, s) in schemas {
            let _ = write!(
                out,
                "<section class=op id=\"schema-{n}\"><h3>{n}</h3><p>{}</p>{}</section>",
                text(s["description"].as_str().unwrap_or("")),
                properties_table(s),
                n = esc(name)
            );
        }
    }
    out.push_str("</body></html>");
    out
}
