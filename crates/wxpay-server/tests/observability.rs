//! Metrics, request ids in logs, the OpenAPI spec and docs page, and invariant 8: no secret ever
//! reaches a log line, an error body or a metric — on SQLite, and on PostgreSQL + Redis when
//! `WXPAY_TEST_DATABASE_URL` / `WXPAY_TEST_REDIS_URL` are set.
//!
//! Every test of this binary logs into one captured buffer (a global `tracing` subscriber at
//! TRACE for every crate, ours and the libraries', JSON and text), so the secrets test also reads
//! the others' logs.

mod common;

use common::*;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};
use wxpay_gateway::GatewayError;
use wxpay_gateway::token::{FetchedToken, TokenFetcher};
use wxpay_proto::Charset;
use wxpay_proto::legacy::{self, NotifyUser};
use wxpay_sandbox::config as sb;
use wxpay_sandbox::{FaultSet, Faults};
use wxpay_store::testing::TestDb;

// ---------------------------------------------------------------------------------------------
// Log capture

type Buf = Arc<Mutex<Vec<u8>>>;

struct BufWriter(Buf);

impl std::io::Write for BufWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const EVERYTHING_AT_TRACE: &str = "trace";

/// The buffer every log line of this test binary goes to (installed once).
fn logs() -> Buf {
    static BUF: OnceLock<Buf> = OnceLock::new();
    BUF.get_or_init(|| {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::{EnvFilter, Layer, fmt};
        let buf: Buf = Arc::new(Mutex::new(Vec::new()));
        let (a, b) = (buf.clone(), buf.clone());
        let json = fmt::layer()
            .json()
            .with_writer(move || BufWriter(a.clone()))
            .with_filter(EnvFilter::new(EVERYTHING_AT_TRACE));
        let text = fmt::layer()
            .with_ansi(false)
            .with_writer(move || BufWriter(b.clone()))
            .with_filter(EnvFilter::new(EVERYTHING_AT_TRACE));
        let subscriber = tracing_subscriber::registry().with(json).with(text);
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global subscriber in this test binary");
        buf
    })
    .clone()
}

fn log_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

/// The JSON log lines (the text layer's lines are skipped).
fn json_lines() -> Vec<Value> {
    log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

async fn raw(
    app: &TestApp,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<String>,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    let url = format!("{}{path}", app.base);
    let mut rb = match method {
        "GET" => app.http.get(url),
        "POST" => app.http.post(url),
        "PUT" => app.http.put(url),
        "PATCH" => app.http.patch(url),
        "DELETE" => app.http.delete(url),
        other => panic!("method {other}"),
    };
    if let Some(a) = auth {
        rb = rb.bearer_auth(a);
    }
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    if let Some(b) = body {
        rb = rb.header("content-type", "application/json").body(b);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}

async fn metrics_text(app: &TestApp) -> String {
    let (s, h, body) = raw(app, "GET", "/metrics", None, None, &[]).await;
    assert_eq!(s, 200);
    assert!(
        h["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"),
        "{h:?}"
    );
    body
}

/// A legacy notification as Tenpay sends it, signed with `key`.
fn legacy_notification(out_trade_no: &str, total_fee: i64, key: &SecretString) -> (String, String) {
    let mut f = BTreeMap::new();
    for (k, v) in [
        ("trade_mode", "1"),
        ("trade_state", "0"),
        ("partner", sb::DEMO_LEGACY_PARTNER),
        ("bank_type", "WX"),
        ("fee_type", "1"),
        ("notify_id", "nid-observability"),
        ("transaction_id", "1900000109201411270000000777"),
        ("time_end", "20261127120000"),
    ] {
        f.insert(k.to_string(), v.to_string());
    }
    f.insert("out_trade_no".into(), out_trade_no.into());
    f.insert("total_fee".into(), total_fee.to_string());
    let query = legacy::build_notify_query(&f, key, Charset::Utf8).unwrap();
    let user = NotifyUser {
        open_id: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
        app_id: sb::DEMO_LEGACY_APPID.into(),
        is_subscribe: true,
        timestamp: 1_795_000_000,
        nonce_str: "nonce".into(),
    };
    (
        query,
        legacy::build_notify_xml(&user, &SecretString::from(sb::DEMO_LEGACY_APP_KEY)),
    )
}

async fn pay_and_wait(
    app: &TestApp,
    sandbox: &wxpay_sandbox::SandboxHandle,
    merchant: &str,
    amount: i64,
) -> (String, String) {
    let order = app.create_order("u1", amount, None).await;
    let order_no = order["order_no"].as_str().unwrap().to_string();
    let (s, pay) = app
        .post(
            &format!("/v1/orders/{order_no}/pay"),
            API_KEY,
            json!({"merchant": merchant, "client_ip": "14.23.150.211"}),
        )
        .await;
    assert_eq!(s, 200, "{pay}");
    sandbox
        .pay_prepay(pay["app_params"]["prepayid"].as_str().unwrap())
        .unwrap();
    app.wait_state(&order_no, "PAID").await;
    (order_no, pay["out_trade_no"].as_str().unwrap().to_string())
}

// ---------------------------------------------------------------------------------------------
// Metrics

#[tokio::test]
async fn metrics_count_requests_notifications_wechat_calls_tokens_and_payments() {
    logs();
    let db = TestDb::sqlite().await.unwrap();
    let sandbox = sandbox().await;
    let app = spawn_app(&db, &sandbox, "memory", "").await;
    let (order_no, out_trade_no) = pay_and_wait(&app, &sandbox, "legacy-demo", 300).await;
    let (v3_order, v3_out) = pay_and_wait(&app, &sandbox, "v3-demo", 400).await;
    // A path nobody routes: counted as `unmatched`, never by its path.
    let (s, _, _) = raw(&app, "GET", "/no/such/path-xyz", None, None, &[]).await;
    assert_eq!(s, 404);
    let m = metrics_text(&app).await;
    for needle in [
        r#"http_requests_total{route="/v1/orders",method="POST",status="201"}"#,
        r#"http_requests_total{route="/v1/orders/{order_no}/pay",method="POST",status="200"}"#,
        r#"http_requests_total{route="unmatched",method="GET",status="404"}"#,
        r#"http_request_duration_seconds_bucket{route="/v1/orders/{order_no}",method="GET",le="0.1"}"#,
        r#"notifications_total{merchant="legacy-demo",result="paid"}"#,
        r#"notifications_total{merchant="v3-demo",result="paid"}"#,
        r#"payments_paid_total{merchant="legacy-demo",source="notify"}"#,
        r#"wechat_call_seconds_bucket{merchant="legacy-demo",endpoint="prepay",outcome="ok",le="+Inf"}"#,
        r#"wechat_call_seconds_bucket{merchant="legacy-demo",endpoint="token",outcome="ok",le="+Inf"}"#,
        r#"wechat_call_seconds_bucket{merchant="v3-demo",endpoint="prepay",outcome="ok",le="+Inf"}"#,
        r#"wechat_call_seconds_count{merchant="v3-demo",endpoint="prepay",outcome="ok"}"#,
        "# TYPE wechat_call_seconds histogram",
        "# TYPE http_request_duration_seconds histogram",
        "token_fetches_total{appid=\"wxd930ea5d5a258f4f\"}",
        "token_fetches_today{appid=\"wxd930ea5d5a258f4f\"}",
        "token_daily_quota{appid=\"wxd930ea5d5a258f4f\"} 200",
        "\noutbox_backlog ",
        "\nwebhook_deliveries_dead ",
        "\npayment_attempts_pending ",
        "\nsweeper_lag_seconds ",
    ] {
        assert!(m.contains(needle), "{needle} missing from /metrics:\n{m}");
    }
    for id in [&order_no, &out_trade_no, &v3_order, &v3_out] {
        assert!(!m.contains(id.as_str()), "{id} is a metric label:\n{m}");
    }
    assert!(!m.contains("path-xyz"), "a raw path is a metric label");
    // A refused notification is counted as rejected.
    let (q, x) = legacy_notification(
        &out_trade_no,
        300,
        &SecretString::from("0123456789abcdef0123456789abcdef"),
    );
    let (s, _, body) = raw(
        &app,
        "POST",
        &format!("/notify/legacy-demo?{q}"),
        None,
        Some(x),
        &[],
    )
    .await;
    assert_eq!((s, body.as_str()), (200, "fail"));
    let m = metrics_text(&app).await;
    assert!(
        m.contains(r#"notifications_total{merchant="legacy-demo",result="rejected"}"#),
        "{m}"
    );
}

// ---------------------------------------------------------------------------------------------
// Request ids

#[tokio::test]
async fn request_ids_are_generated_echoed_and_in_every_log_line_of_the_request() {
    logs();
    let db = TestDb::sqlite().await.unwrap();
    let sandbox = sandbox().await;
    let app = spawn_app(&db, &sandbox, "memory", "").await;
    // Generated when absent.
    let (_, h, _) = raw(&app, "GET", "/healthz", None, None, &[]).await;
    let generated = h["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
    // Kept when sane, replaced when not.
    let (_, h, _) = raw(
        &app,
        "GET",
        "/healthz",
        None,
        None,
        &[("x-request-id", "rid-kept-0001")],
    )
    .await;
    assert_eq!(h["x-request-id"], "rid-kept-0001");
    let long = "x".repeat(200);
    let (_, h, _) = raw(
        &app,
        "GET",
        "/healthz",
        None,
        None,
        &[("x-request-id", &long)],
    )
    .await;
    assert_ne!(h["x-request-id"].to_str().unwrap(), long);
    let (_, h, _) = raw(
        &app,
        "GET",
        "/healthz",
        None,
        None,
        &[("x-request-id", "a b\"c")],
    )
    .await;
    assert_eq!(h["x-request-id"].to_str().unwrap().len(), 36);

    // A request that logs inside its handler: a forged notification.
    let order = app.create_order("u1", 100, None).await;
    let pay = app.pay(order["order_no"].as_str().unwrap()).await;
    let (q, x) = legacy_notification(
        pay["out_trade_no"].as_str().unwrap(),
        100,
        &SecretString::from("0123456789abcdef0123456789abcdef"),
    );
    let rid = "rid-forged-notification-42";
    let (s, h, _) = raw(
        &app,
        "POST",
        &format!("/notify/legacy-demo?{q}"),
        None,
        Some(x),
        &[("x-request-id", rid)],
    )
    .await;
    assert_eq!((s, h["x-request-id"].to_str().unwrap()), (200, rid));
    let lines: Vec<Value> = json_lines()
        .into_iter()
        .filter(|l| l["span"]["request_id"] == rid)
        .collect();
    let messages: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["fields"]["message"].as_str())
        .collect();
    assert!(
        messages.contains(&"notification refused"),
        "the handler's warning carries the request id: {messages:?}"
    );
    let finished = lines
        .iter()
        .find(|l| l["fields"]["message"] == "request finished")
        .expect("a request finished line");
    assert_eq!(finished["span"]["route"], "/notify/{merchant}");
    assert_eq!(finished["span"]["method"], "POST");
    assert_eq!(finished["span"]["status"], 200);
    assert!(finished["span"]["latency_ms"].is_u64(), "{finished}");
    // Every JSON line logged inside a request span names its request.
    for l in json_lines() {
        let in_request = l["spans"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["name"] == "request"));
        if in_request {
            assert!(
                l["span"]["request_id"]
                    .as_str()
                    .is_some_and(|r| !r.is_empty())
                    || l["spans"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|s| s["request_id"].as_str().is_some_and(|r| !r.is_empty())),
                "a request's log line without its id: {l}"
            );
        }
    }
    // The text format shows it too.
    assert!(
        log_text()
            .lines()
            .any(|l| !l.starts_with('{') && l.contains(&format!("request_id={rid}"))),
        "text logs carry the request id"
    );
}

// ---------------------------------------------------------------------------------------------
// OpenAPI

/// `(METHOD, path)` of every `/v1` route in the router's source.
fn router_v1_routes() -> BTreeSet<(String, String)> {
    let src = include_str!("../src/routes/mod.rs");
    let mut out = BTreeSet::new();
    let mut rest = src;
    while let Some(i) = rest.find(".route(") {
        rest = &rest[i + ".route(".len()..];
        let mut depth = 1;
        let mut end = rest.len();
        for (j, c) in rest.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = j;
                        break;
                    }
                }
                _ => {}
            }
        }
        let args = &rest[..end];
        let mut parts = args.splitn(3, '"');
        let (Some(_), Some(path), Some(handlers)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if !path.starts_with("/v1") {
            continue;
        }
        for m in ["get", "post", "put", "patch", "delete"] {
            let found = handlers.match_indices(m).any(|(k, _)| {
                let before = handlers[..k].chars().next_back();
                let after = handlers[k + m.len()..].chars().next();
                after == Some('(') && !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
            });
            if found {
                out.insert((m.to_uppercase(), path.to_string()));
            }
        }
    }
    out
}

fn spec_operations(spec: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for m in ["get", "post", "put", "patch", "delete"] {
            if item.get(m).is_some() {
                out.insert((m.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

fn schema_keys(spec: &Value, name: &str) -> BTreeSet<String> {
    spec["components"]["schemas"][name]["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("no schema {name}"))
        .keys()
        .cloned()
        .collect()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[tokio::test]
async fn the_openapi_spec_lists_every_v1_route_and_matches_real_answers() {
    logs();
    let db = TestDb::sqlite().await.unwrap();
    let sandbox = sandbox().await;
    let app = spawn_app(&db, &sandbox, "memory", "").await;
    let (s, h, body) = raw(&app, "GET", "/openapi.json", None, None, &[]).await;
    assert_eq!(s, 200);
    assert!(
        h["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let spec: Value = serde_json::from_str(&body).expect("the spec is JSON");
    assert!(
        spec["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        spec["openapi"]
    );
    let _typed: utoipa::openapi::OpenApi =
        serde_json::from_str(&body).expect("the spec parses as OpenAPI 3");
    // The spec and the router agree on every /v1 operation.
    let routed = router_v1_routes();
    assert!(routed.len() >= 9, "{routed:?}");
    let documented = spec_operations(&spec);
    let documented_v1: BTreeSet<_> = documented
        .iter()
        .filter(|(_, p)| p.starts_with("/v1"))
        .cloned()
        .collect();
    assert_eq!(routed, documented_v1, "router vs spec");
    // Every documented operation is served (401 without credentials, not 404/405), has a unique
    // operationId and documents 200/201 and 401.
    let mut ids = BTreeSet::new();
    for (method, path) in &documented {
        let concrete = path.replace("{order_no}", "ord_unknown");
        let body = (method != "GET").then(|| "{}".to_string());
        let (s, _, text) = raw(&app, method, &concrete, None, body, &[]).await;
        assert_eq!(s, 401, "{method} {path}: {text}");
        let op = &spec["paths"][path][method.to_lowercase()];
        assert!(
            ids.insert(op["operationId"].as_str().unwrap().to_string()),
            "{op}"
        );
        let responses = op["responses"].as_object().unwrap();
        assert!(responses.contains_key("401"), "{method} {path}");
        assert!(
            responses.contains_key("200") || responses.contains_key("201"),
            "{method} {path}"
        );
    }
    // The answer schemas describe the real answers, field for field.
    let (_, coupon) = app
        .post(
            "/v1/coupons",
            API_KEY,
            json!({"user_id": "u1", "discount_fen": 10}),
        )
        .await;
    assert_eq!(keys(&coupon), schema_keys(&spec, "Coupon"));
    let order = app.create_order("u1", 100, coupon["code"].as_str()).await;
    assert_eq!(keys(&order), schema_keys(&spec, "Order"));
    let pay = app.pay(order["order_no"].as_str().unwrap()).await;
    assert_eq!(keys(&pay), schema_keys(&spec, "PayResponse"));
    assert_eq!(keys(&pay["app_params"]), schema_keys(&spec, "AppParams"));
    let (_, list) = app.get("/v1/orders?user_id=u1", API_KEY).await;
    assert_eq!(keys(&list), schema_keys(&spec, "OrderList"));
    let (_, err) = app.get("/v1/orders/ord_nope", API_KEY).await;
    assert_eq!(keys(&err), schema_keys(&spec, "ErrorBody"));
    assert_eq!(keys(&err["error"]), schema_keys(&spec, "ErrorDetail"));
    // Request bodies are the handlers' own structs: unknown fields refused, required ones listed.
    let create = &spec["components"]["schemas"]["CreateOrder"];
    assert_eq!(create["additionalProperties"], false, "{create}");
    let required: BTreeSet<&str> = create["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(required, BTreeSet::from(["user_id", "subject"]));

    // The docs page: self-contained HTML listing every operation.
    let (s, h, html) = raw(&app, "GET", "/docs", None, None, &[]).await;
    assert_eq!(s, 200);
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(!html.contains("<script"), "no script");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external asset"
    );
    for (method, path) in &documented {
        assert!(
            html.contains(&format!("<code>{path}</code>")),
            "{method} {path} missing from /docs"
        );
    }
    assert!(html.contains("id=\"schema-Order\""));
}

// ---------------------------------------------------------------------------------------------
// Secrets

/// A fetcher that must not be called: reading the cached token only.
struct NoFetch;

#[async_trait::async_trait]
impl TokenFetcher for NoFetch {
    async fn fetch(&self) -> Result<FetchedToken, GatewayError> {
        Err(GatewayError::Protocol("no token cached".into()))
    }
}

/// The 64-character base64 lines of a PEM body.
fn pem_body_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(String::from)
        .collect()
}

#[tokio::test]
async fn no_secret_reaches_a_log_line_an_error_body_or_a_metric() {
    logs();
    for db in TestDb::all().await.unwrap() {
        let sandbox = sandbox().await;
        let app = spawn_app(&db, &sandbox, &cache_for(&db), &random_prefix()).await;
        let mut bodies: Vec<String> = Vec::new();
        let user_jwt = wxpay_server::auth::issue_jwt(
            "u1",
            chrono::Utc::now().timestamp() + 600,
            &SecretString::from(JWT_SECRET),
        );

        // The legacy flow and the v3 flow, with forged notifications and SIGNTEST probes.
        sandbox.set_faults(Faults::global(FaultSet {
            forge_notification: 1.0,
            signtest_probe: 1.0,
            ..Default::default()
        }));
        let (legacy_order, legacy_out) = pay_and_wait(&app, &sandbox, "legacy-demo", 500).await;
        let (v3_order, _) = pay_and_wait(&app, &sandbox, "v3-demo", 800).await;
        let (s, r) = app
            .post(
                &format!("/v1/orders/{v3_order}/refunds"),
                API_KEY,
                json!({"amount_fen": 100, "out_refund_no": "SEC-1"}),
            )
            .await;
        assert_eq!(s, 201, "{r}");
        // The token the sandbox handed out, as cached by the server.
        let token = app
            .state
            .tokens
            .get(sb::DEMO_LEGACY_APPID, 200, &NoFetch)
            .await
            .expect("a cached access token");
        let token = token.expose_secret().to_string();
        assert!(token.len() >= 16, "{token}");

        // Error answers of every kind.
        // A user token reading its own order and someone else's list.
        let (_, _, b) = raw(
            &app,
            "GET",
            &format!("/v1/orders/{legacy_order}"),
            Some(&user_jwt),
            None,
            &[],
        )
        .await;
        bodies.push(b);
        let (s, _, b) = raw(
            &app,
            "GET",
            "/v1/orders?user_id=u2",
            Some(&user_jwt),
            None,
            &[],
        )
        .await;
        assert_eq!(s, 403);
        bodies.push(b);
        // Wrong and missing credentials, bad JSON, unknown merchant.
        let (s, _, b) = raw(
            &app,
            "GET",
            "/v1/orders?user_id=u1",
            Some("sk_wrong"),
            None,
            &[],
        )
        .await;
        assert_eq!(s, 401);
        bodies.push(b);
        let (s, _, b) = raw(
            &app,
            "POST",
            "/v1/orders",
            Some(API_KEY),
            Some("{not json".into()),
            &[],
        )
        .await;
        assert_eq!(s, 400);
        bodies.push(b);
        let fresh = app.create_order("u1", 700, None).await;
        let fresh_no = fresh["order_no"].as_str().unwrap().to_string();
        let (s, _, b) = raw(
            &app,
            "POST",
            &format!("/v1/orders/{fresh_no}/pay"),
            Some(API_KEY),
            Some(json!({"merchant": "nobody", "client_ip": "1.2.3.4"}).to_string()),
            &[],
        )
        .await;
        assert_eq!(s, 422);
        bodies.push(b);
        // A notification with a bad signature (legacy), and a tampered one.
        let (q, x) = legacy_notification(
            &legacy_out,
            500,
            &SecretString::from("0123456789abcdef0123456789abcdef"),
        );
        let (_, _, b) = raw(
            &app,
            "POST",
            &format!("/notify/legacy-demo?{q}"),
            None,
            Some(x.clone()),
            &[],
        )
        .await;
        assert_eq!(b, "fail");
        bodies.push(b);
        let (_, _, b) = raw(
            &app,
            "POST",
            "/notify/v3-demo",
            None,
            Some("{\"id\":\"x\"}".into()),
            &[],
        )
        .await;
        bodies.push(b);
        // WeChat refuses: the token is gone and the daily quota is used up (45009).
        sandbox.invalidate_token(sb::DEMO_LEGACY_APPID);
        sandbox.set_faults(Faults::global(FaultSet {
            token_quota_exhausted: true,
            refund_not_enough: true,
            ..Default::default()
        }));
        let (s, _, b) = raw(
            &app,
            "POST",
            &format!("/v1/orders/{fresh_no}/pay"),
            Some(API_KEY),
            Some(json!({"merchant": "legacy-demo", "client_ip": "1.2.3.4"}).to_string()),
            &[],
        )
        .await;
        assert_eq!(s, 502, "{b}");
        assert!(b.contains("wechat_rejected"), "{b}");
        bodies.push(b);
        // WeChat refuses a refund (NOT_ENOUGH), and answers a query with a SIGNTEST signature.
        let (s, _, b) = raw(
            &app,
            "POST",
            &format!("/v1/orders/{v3_order}/refunds"),
            Some(API_KEY),
            Some(json!({"amount_fen": 100, "out_refund_no": "SEC-2"}).to_string()),
            &[],
        )
        .await;
        assert_eq!(s, 422, "{b}");
        assert!(b.contains("refund_rejected"), "{b}");
        bodies.push(b);
        sandbox.set_faults(Faults::global(FaultSet {
            signtest_response: 1.0,
            ..Default::default()
        }));
        let v3_fresh = app.create_order("u1", 900, None).await;
        let v3_fresh_no = v3_fresh["order_no"].as_str().unwrap().to_string();
        let (s, _, b) = raw(
            &app,
            "POST",
            &format!("/v1/orders/{v3_fresh_no}/pay"),
            Some(API_KEY),
            Some(json!({"merchant": "v3-demo", "client_ip": "1.2.3.4"}).to_string()),
            &[],
        )
        .await;
        assert_eq!(s, 502, "{b}");
        assert!(b.contains("wechat_unverified"), "{b}");
        bodies.push(b);
        let (_, _, b) = raw(
            &app,
            "POST",
            &format!("/v1/orders/{v3_fresh_no}/client-result"),
            Some(API_KEY),
            None,
            &[],
        )
        .await;
        bodies.push(b);
        sandbox.set_faults(Faults::none());

        let metrics = metrics_text(&app).await;
        let (_, _, docs) = raw(&app, "GET", "/docs", None, None, &[]).await;
        let (_, _, spec) = raw(&app, "GET", "/openapi.json", None, None, &[]).await;
        let logs = log_text();
        if let Ok(path) = std::env::var("WXPAY_TEST_DUMP_LOGS") {
            let _ = std::fs::write(path, &logs);
        }
        assert!(
            logs.contains("notification refused"),
            "the forgeries were logged"
        );
        assert!(logs.contains("request finished"));
        // Debug lines of our crates were captured (the access token's fetch is one).
        assert!(
            logs.contains("fetching a new access token"),
            "debug capture"
        );

        let mut secrets: Vec<(String, String)> = vec![
            (
                "legacy app_secret".into(),
                sb::DEMO_LEGACY_APP_SECRET.into(),
            ),
            ("legacy app_key".into(), sb::DEMO_LEGACY_APP_KEY.into()),
            (
                "legacy partner_key".into(),
                sb::DEMO_LEGACY_PARTNER_KEY.into(),
            ),
            ("access token".into(), token.clone()),
            ("APIv3 key".into(), sb::DEMO_V3_APIV3_KEY.into()),
            ("API key".into(), API_KEY.into()),
            ("JWT secret".into(), JWT_SECRET.into()),
            ("admin key".into(), "adm_test".into()),
        ];
        for (i, l) in pem_body_lines(sb::DEMO_MERCHANT_PRIVATE_KEY_PEM)
            .into_iter()
            .enumerate()
        {
            secrets.push((format!("private key line {i}"), l));
        }
        assert!(secrets.len() > 12);
        let places: Vec<(&str, String)> = vec![
            ("logs", logs),
            ("error bodies", bodies.join("\n")),
            ("metrics", metrics),
            ("docs", docs),
            ("openapi", spec),
        ];
        for (what, secret) in &secrets {
            for (place, text) in &places {
                if let Some(at) = text.find(secret.as_str()) {
                    let from = text[..at]
                        .char_indices()
                        .rev()
                        .nth(200)
                        .map_or(0, |(i, _)| i);
                    panic!(
                        "the {what} appears in the {place} on {}, after: …{}",
                        db.backend_name(),
                        &text[from..at]
                    );
                }
            }
        }
    }
}
