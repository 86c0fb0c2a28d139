//! Business webhooks end to end: the webhook worker runs against a tiny receiver that records
//! every delivery — on SQLite and (when configured) PostgreSQL + Redis.

mod common;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use common::*;
use hmac::{KeyInit, Mac};
use secrecy::SecretString;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use wxpay_server::configuration::{Settings, WebhookSettings};
use wxpay_server::workers::{WorkerContext, webhooks};
use wxpay_store::testing::TestDb;
use wxpay_store::{DeliveryFilter, DeliveryState, WebhookDelivery};

const ADMIN_KEY: &str = "adm_test";
const SECRET: &str = "whsec_test_secret";

// ------------------------------------------------------------------ the receiver

/// What the receiver answers to one request.
#[derive(Clone, Copy, Debug)]
enum Reply {
    Status(u16),
    /// Answers 200, but only after this long (longer than the worker's timeout).
    Hang(Duration),
}

#[derive(Clone, Debug)]
struct Hit {
    path: String,
    event_id: String,
    content_type: String,
    signature: String,
    body: Vec<u8>,
    json: Value,
    at: Instant,
    reply: String,
}

impl Hit {
    fn event_type(&self) -> &str {
        self.json["type"].as_str().unwrap_or("")
    }
    fn ok(&self) -> bool {
        self.reply == "200"
    }
}

#[derive(Clone)]
struct Receiver {
    base: String,
    hits: Arc<Mutex<Vec<Hit>>>,
    /// Consumed first, one per request.
    script: Arc<Mutex<VecDeque<Reply>>>,
    /// Then this, for every request.
    default: Arc<Mutex<Reply>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let r = Receiver {
            base: String::new(),
            hits: Arc::default(),
            script: Arc::default(),
            default: Arc::new(Mutex::new(Reply::Status(200))),
        };
        let app = axum::Router::new().fallback(hook).with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            base: format!("http://{addr}"),
            ..r
        }
    }
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
    fn script(&self, replies: &[Reply]) {
        self.script.lock().unwrap().extend(replies.iter().copied());
    }
    fn set_default(&self, reply: Reply) {
        *self.default.lock().unwrap() = reply;
    }
    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
    fn hits_on(&self, path: &str) -> Vec<Hit> {
        self.hits().into_iter().filter(|h| h.path == path).collect()
    }
}

async fn hook(State(r): State<Receiver>, uri: Uri, headers: HeaderMap, body: Bytes) -> StatusCode {
    let reply = {
        let next = r.script.lock().unwrap().pop_front();
        next.unwrap_or(*r.default.lock().unwrap())
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let hit = Hit {
        path: uri.path().to_string(),
        event_id: header("wxpay-event-id"),
        content_type: header("content-type"),
        signature: header("wxpay-signature"),
        json: serde_json::from_slice(&body).unwrap_or(Value::Null),
        body: body.to_vec(),
        at: Instant::now(),
        reply: match reply {
            Reply::Status(s) => s.to_string(),
            Reply::Hang(_) => "hang".into(),
        },
    };
    r.hits.lock().unwrap().push(hit);
    match reply {
        Reply::Status(s) => StatusCode::from_u16(s).unwrap(),
        Reply::Hang(d) => {
            tokio::time::sleep(d).await;
            StatusCode::OK
        }
    }
}

// ------------------------------------------------- the documented verification recipe

/// docs/webhooks.md, step by step: parse `t` and `v1`, reject a `t` more than 5 minutes away,
/// compute HMAC-SHA256(secret, "<t>.<body>") and compare in constant time.
fn verify_signature(secret: &str, header: &str, body: &[u8], now_secs: i64) -> Result<(), String> {
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1.push(v.to_string()),
            _ => {}
        }
    }
    let t = t.ok_or("no timestamp")?;
    if (now_secs - t).abs() > 300 {
        return Err("timestamp outside the 5-minute window".into());
    }
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let expected = hex::encode(mac.finalize().into_bytes());
    if v1
        .iter()
        .any(|s| bool::from(s.as_bytes().ct_eq(expected.as_bytes())))
    {
        Ok(())
    } else {
        Err("signature mismatch".into())
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

// ----------------------------------------------------------------------- helpers

fn endpoint(url: String, events: &[&str]) -> WebhookSettings {
    WebhookSettings {
        url,
        secret: SecretString::from(SECRET),
        events: events.iter().map(|s| s.to_string()).collect(),
    }
}

/// An app whose settings carry these webhooks and this retry schedule; the fan-out cursors are
/// registered before anything happens, so every event of the test is sent.
async fn app_with(
    db: &TestDb,
    sandbox: &wxpay_sandbox::SandboxHandle,
    hooks: Vec<WebhookSettings>,
    retry_secs: Vec<i64>,
    timeout_ms: u64,
) -> TestApp {
    let app = spawn_app_custom(
        db,
        sandbox,
        &cache_for(db),
        &random_prefix(),
        Arc::new(wxpay_gateway::SystemClock),
        move |s| {
            s.webhooks = hooks;
            s.webhook_retry_secs = retry_secs;
            s.webhook_timeout_ms = timeout_ms;
        },
    )
    .await;
    webhooks::register(&app.state).await.unwrap();
    app
}

/// A running webhook worker with its own lease owner.
struct Worker {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

fn start_worker(app: &TestApp, owner: &str) -> Worker {
    let (stop, rx) = watch::channel(false);
    let ctx = WorkerContext {
        state: app.state.clone(),
        stop: rx,
        owner: owner.to_string(),
    };
    Worker {
        stop,
        handle: tokio::spawn(webhooks::run(ctx)),
    }
}

impl Worker {
    /// Stops claiming, finishes the delivery in hand, returns.
    async fn shutdown(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("the worker stops")
            .unwrap();
    }
}

async fn paid_legacy_order(app: &TestApp, sandbox: &wxpay_sandbox::SandboxHandle) -> String {
    let order = app.create_order("u1", 999, None).await;
    let order_no = order["order_no"].as_str().unwrap().to_string();
    let pay = app.pay(&order_no).await;
    sandbox
        .pay_prepay(pay["app_params"]["prepayid"].as_str().unwrap())
        .unwrap();
    app.wait_state(&order_no, "PAID").await;
    order_no
}

async fn paid_v3_order(app: &TestApp, sandbox: &wxpay_sandbox::SandboxHandle) -> String {
    let order = app.create_order("u1", 1000, None).await;
    let order_no = order["order_no"].as_str().unwrap().to_string();
    let (s, pay) = app
        .post(
            &format!("/v1/orders/{order_no}/pay"),
            API_KEY,
            json!({"merchant": "v3-demo", "client_ip": "14.23.150.211"}),
        )
        .await;
    assert_eq!(s, 200, "{pay}");
    sandbox
        .pay_prepay(pay["app_params"]["prepayid"].as_str().unwrap())
        .unwrap();
    app.wait_state(&order_no, "PAID").await;
    order_no
}

async fn refund(app: &TestApp, order_no: &str, amount: i64, no: &str) {
    let (s, v) = app
        .post(
            &format!("/v1/orders/{order_no}/refunds"),
            API_KEY,
            json!({"amount_fen": amount, "out_refund_no": no}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
}

async fn deliveries_of(app: &TestApp, order_no: &str) -> Vec<WebhookDelivery> {
    let mut v = app
        .state
        .store
        .list_webhook_deliveries(&DeliveryFilter {
            order_no: Some(order_no.to_string()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    v.reverse();
    v
}

/// Polls (bounded: 60 s) until `done` holds for the order's deliveries, and returns them.
async fn wait_deliveries(
    app: &TestApp,
    order_no: &str,
    what: &str,
    done: impl Fn(&[WebhookDelivery]) -> bool,
) -> Vec<WebhookDelivery> {
    for _ in 0..600 {
        let d = deliveries_of(app, order_no).await;
        if done(&d) {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{what}: never happened; deliveries of {order_no}: {:#?}",
        deliveries_of(app, order_no).await
    );
}

fn all_in(state: DeliveryState, n: usize) -> impl Fn(&[WebhookDelivery]) -> bool {
    move |d| d.len() == n && d.iter().all(|x| x.state == state)
}

async fn admin_get(app: &TestApp, path: &str, key: Option<&str>) -> (u16, Value) {
    let mut req = app.http.get(format!("{}{path}", app.base));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn admin_post(app: &TestApp, path: &str, key: Option<&str>) -> (u16, Value) {
    let mut req = app.http.post(format!("{}{path}", app.base));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

// ------------------------------------------------------------------------- tests

#[tokio::test]
async fn a_paid_order_is_delivered_once_signed() {
    for db in TestDb::all().await.unwrap() {
        let sandbox = sandbox().await;
        let rx = Receiver::start().await;
        let app = app_with(
            &db,
            &sandbox,
            vec![endpoint(rx.url("/hook"), &[])],
            vec![1],
            5000,
        )
        .await;
        let worker = start_worker(&app, "w1");
        let order_no = paid_legacy_order(&app, &sandbox).await;
        let d = wait_deliveries(
            &app,
            &order_no,
            "order.paid delivered",
            all_in(DeliveryState::Delivered, 1),
        )
        .await;
        let hits = rx.hits();
        assert_eq!(hits.len(), 1, "exactly one request: {hits:#?}");
        let h = &hits[0];
        let event = &app.state.store.list_events(&order_no).await.unwrap()[0];
        assert_eq!(event.event_type, "order.paid");
        assert_eq!(h.content_type, "application/json");
        assert_eq!(h.event_id, event.id);
        assert_eq!(d[0].event_id, event.id);
        assert_eq!((d[0].attempts, d[0].last_status), (1, Some(200)));
        // The body: id, type, created_at (seconds), data (the payload written with the payment).
        assert_eq!(h.json["id"], event.id.as_str());
        assert_eq!(h.json["type"], "order.paid");
        assert_eq!(h.json["created_at"].as_i64(), Some(event.created_at / 1000));
        assert_eq!(h.json["data"]["order_no"], order_no.as_str());
        assert_eq!(h.json["data"]["amount_fen"], 999);
        assert_eq!(h.json["data"]["merchant"], "legacy-demo");
        // The signature, checked as docs/webhooks.md tells receivers to.
        verify_signature(SECRET, &h.signature, &h.body, now_secs()).unwrap();
        assert!(verify_signature("whsec_other", &h.signature, &h.body, now_secs()).is_err());
        let mut tampered = h.body.clone();
        tampered.extend_from_slice(b" ");
        assert!(verify_signature(SECRET, &h.signature, &tampered, now_secs()).is_err());
        assert!(
            verify_signature(SECRET, &h.signature, &h.body, now_secs() + 600).is_err(),
            "a replay 10 minutes later is refused"
        );
        // The secret appears nowhere in what was sent.
        assert!(!String::from_utf8_lossy(&h.body).contains(SECRET));
        worker.shutdown().await;
        // Delivered means done: a further round sends nothing.
        let ctx = WorkerContext {
            state: app.state.clone(),
            stop: watch::channel(false).1,
            owner: "w2".into(),
        };
        webhooks::deliver_once(&ctx, &webhooks::http_client(5000))
            .await
            .unwrap();
        assert_eq!(rx.hits().len(), 1);
    }
}

#[tokio::test]
async fn failures_and_timeouts_are_retried_on_the_schedule_until_2xx() {
    for db in TestDb::all().await.unwrap() {
        let sandbox = sandbox().await;
        let rx = Receiver::start().await;
        // 500, then a hang past the timeout, then 503, then 200.
        rx.script(&[
            Reply::Status(500),
            Reply::Hang(Duration::from_millis(2500)),
            Reply::Status(503),
        ]);
        let app = app_with(
            &db,
            &sandbox,
            vec![endpoint(rx.url("/hook"), &[])],
            vec![1, 2, 1, 60],
            700,
        )
        .await;
        let worker = start_worker(&app, "w1");
        let order_no = paid_legacy_order(&app, &sandbox).await;
        let d = wait_deliveries(
            &app,
            &order_no,
            "delivered after retries",
            all_in(DeliveryState::Delivered, 1),
        )
        .await;
        assert_eq!(
            (d[0].attempts, d[0].last_status, d[0].last_error.as_deref()),
            (4, Some(200), None)
        );
        let hits = rx.hits();
        let replies: Vec<&str> = hits.iter().map(|h| h.reply.as_str()).collect();
        assert_eq!(replies, vec!["500", "hang", "503", "200"]);
        assert!(
            hits.iter().all(|h| h.event_id == d[0].event_id),
            "the same event each time"
        );
        // Never earlier than the schedule says (1 s, 2 s, 1 s after each failure).
        for (i, gap) in [1u64, 2, 1].iter().enumerate() {
            let waited = hits[i + 1].at.duration_since(hits[i].at);
            assert!(
                waited >= Duration::from_secs(*gap),
                "attempt {} came {waited:?} after the previous one, before the {gap} s gap",
                i + 2
            );
        }
        // Each attempt is signed afresh and verifies.
        for h in &hits {
            verify_signature(SECRET, &h.signature, &h.body, now_secs()).unwrap();
        }
        worker.shutdown().await;
    }
}

#[tokio::test]
async fn a_dead_delivery_is_listed_and_delivered_again_on_redelivery() {
    for db in TestDb::all().await.unwrap() {
        let sandbox = sandbox().await;
        let rx = Receiver::start().await;
        rx.set_default(Reply::Status(500));
        let app = app_with(
            &db,
            &sandbox,
            vec![endpoint(rx.url("/hook?token=abc"), &[])],
            vec![1, 1],
            2000,
        )
        .await;
        let worker = start_worker(&app, "w1");
        let order_no = paid_legacy_order(&app, &sandbox).await;
        // The first attempt and two retries fail: DEAD.
        let d = wait_deliveries(&app, &order_no, "dead", all_in(DeliveryState::Dead, 1)).await;
        assert_eq!((d[0].attempts, d[0].last_status), (3, Some(500)));
        assert_eq!(rx.hits().len(), 3);
        let event_id = d[0].event_id.clone();
        // The admin sees it among the dead, newest first, without the URL's query.
        let (s, v) = admin_get(
            &app,
            "/admin/api/webhook-deliveries?state=DEAD",
            Some(ADMIN_KEY),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let dead = v["deliveries"].as_array().unwrap();
        assert_eq!(dead.len(), 1, "{v}");
        assert_eq!(dead[0]["event_id"], event_id.as_str());
        assert_eq!(dead[0]["state"], "DEAD");
        assert_eq!(dead[0]["attempts"], 3);
        assert_eq!(dead[0]["last_status"], 500);
        assert_eq!(dead[0]["endpoint"], rx.url("/hook"));
        assert!(
            dead[0]["last_error"]
                .as_str()
                .unwrap()
                .starts_with("HTTP 500"),
            "{v}"
        );
        let (_, pending) = admin_get(
            &app,
            "/admin/api/webhook-deliveries?state=PENDING",
            Some(ADMIN_KEY),
        )
        .await;
        assert_eq!(pending["deliveries"].as_array().unwrap().len(), 0);
        let (s, ev) = admin_get(
            &app,
            &format!("/admin/api/events/{event_id}"),
            Some(ADMIN_KEY),
        )
        .await;
        assert_eq!(s, 200, "{ev}");
        assert_eq!(ev["event"]["type"], "order.paid");
        assert_eq!(ev["deliveries"][0]["state"], "DEAD");
        // Dead stays dead: nothing more is sent.
        let ctx = WorkerContext {
            state: app.state.clone(),
            stop: watch::channel(false).1,
            owner: "probe".into(),
        };
        assert_eq!(
            webhooks::deliver_once(&ctx, &webhooks::http_client(2000))
                .await
                .unwrap(),
            0
        );
        assert_eq!(rx.hits().len(), 3);
        // The receiver is fixed; the operator redelivers.
        rx.set_default(Reply::Status(200));
        let (s, r) = admin_post(
            &app,
            &format!("/admin/api/events/{event_id}/redeliver"),
            Some(ADMIN_KEY),
        )
        .await;
        assert_eq!(s, 200, "{r}");
        assert_eq!(r["deliveries"][0]["state"], "PENDING");
        assert_eq!(r["deliveries"][0]["attempts"], 0);
        let d = wait_deliveries(
            &app,
            &order_no,
            "redelivered",
            all_in(DeliveryState::Delivered, 1),
        )
        .await;
        assert_eq!((d[0].attempts, d[0].last_status), (1, Some(200)));
        let hits = rx.hits();
        assert_eq!(hits.len(), 4);
        assert!(hits[3].ok() && hits[3].event_id == event_id);
        let (s, v) = admin_get(
            &app,
            "/admin/api/webhook-deliveries?state=DELIVERED",
            Some(ADMIN_KEY),
        )
        .await;
        assert_eq!((s, v["deliveries"].as_array().unwrap().len()), (200, 1));
        // An unknown event is a 404.
        let (s, v) = admin_post(
            &app,
            "/admin/api/events/evt_nope/redeliver",
            Some(ADMIN_KEY),
        )
        .await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (404, Some("event_not_found"))
        );
        worker.shutdown().await;
    }
}

#[tokio::test]
async fn events_of_one_order_arrive_in_order() {
    for db in TestDb::all().await.unwrap() {
        let sandbox = sandbox().await;
        let rx = Receiver::start().await;
        rx.set_default(Reply::Status(500));
        // Enough 1-second retries that order.paid is still failing when the refund lands.
        let app = app_with(
            &db,
            &sandbox,
            vec![endpoint(rx.url("/hook"), &[])],
            vec![1; 120],
            2000,
        )
        .await;
        let worker = start_worker(&app, "w1");
        let order_no = paid_v3_order(&app, &sandbox).await;
        refund(&app, &order_no, 300, "RF-ORDER-1").await;
        // Both events exist; order.paid has failed twice; the refund waits behind it, untried.
        let d = wait_deliveries(&app, &order_no, "paid failing, refund queued", |d| {
            d.len() == 2 && d[0].attempts >= 2
        })
        .await;
        assert_eq!(
            (d[0].event_type.as_str(), d[1].event_type.as_str()),
            ("order.paid", "refund.succeeded")
        );
        assert!(d[0].event_seq < d[1].event_seq);
        assert_eq!(
            (d[1].state, d[1].attempts),
            (DeliveryState::Pending, 0),
            "the refund is not sent while the payment before it is pending"
        );
        assert!(rx.hits().iter().all(|h| h.event_type() == "order.paid"));
        // The receiver recovers: the payment, then the refund.
        rx.set_default(Reply::Status(200));
        wait_deliveries(
            &app,
            &order_no,
            "both delivered",
            all_in(DeliveryState::Delivered, 2),
        )
        .await;
        let hits = rx.hits();
        let first_refund = hits
            .iter()
            .position(|h| h.event_type() == "refund.succeeded")
            .unwrap();
        let paid_ok = hits
            .iter()
            .position(|h| h.event_type() == "order.paid" && h.ok())
            .unwrap();
        assert!(
            paid_ok < first_refund,
            "order.paid was accepted before refund.succeeded was sent"
        );
        assert_eq!(
            hits.iter()
                .filter(|h| h.event_type() == "refund.succeeded")
                .count(),
            1
        );
        assert_eq!(hits.iter().filter(|h| h.ok()).count(), 2);
        assert_eq!(
            hits[first_refund].json["data"]["out_refund_no"],
            "RF-ORDER-1"
        );
        worker.shutdown().await;
    }
}

#[tokio::test]
async fn each_endpoint_gets_only_the_events_it_subscribes_to() {
    for db in TestDb::all().await.unwrap() {
        let sandbox = sandbox().await;
        let rx = Receiver::start().await;
        let hooks = vec![
            endpoint(rx.url("/paid"), &["order.paid"]),
            endpoint(rx.url("/refunds"), &["refund.succeeded", "refund.failed"]),
            endpoint(rx.url("/all"), &[]),
        ];
        let app = app_with(&db, &sandbox, hooks, vec![1], 2000).await;
        let worker = start_worker(&app, "w1");
        let order_no = paid_v3_order(&app, &sandbox).await;
        refund(&app, &order_no, 200, "RF-FILTER-1").await;
        // All three endpoints have had everything they will ever get for this order.
        let d = wait_deliveries(&app, &order_no, "filtered deliveries", |d| {
            d.len() == 4 && d.iter().all(|x| x.state == DeliveryState::Delivered)
        })
        .await;
        // Flush the fan-out: nothing more appears.
        let eps = webhooks::endpoints(&app.state.settings);
        app.state
            .store
            .fan_out_webhooks(&eps, app.state.now_ms(), 500)
            .await
            .unwrap();
        assert_eq!(deliveries_of(&app, &order_no).await.len(), 4, "{d:#?}");
        let types = |path: &str| -> Vec<String> {
            rx.hits_on(path)
                .iter()
                .map(|h| h.event_type().to_string())
                .collect()
        };
        assert_eq!(types("/paid"), vec!["order.paid"]);
        assert_eq!(types("/refunds"), vec!["refund.succeeded"]);
        assert_eq!(types("/all"), vec!["order.paid", "refund.succeeded"]);
        worker.shutdown().await;
    }
}

#[tokio::test]
async fn shutdown_stops_claiming_and_finishes_the_delivery_in_hand() {
    for db in TestDb::all().await.unwrap() {
        let sandbox = sandbox().await;
        let rx = Receiver::start().await;
        // The receiver takes a second to answer 200 (within the 5 s timeout).
        rx.script(&[Reply::Hang(Duration::from_secs(1))]);
        let app = app_with(
            &db,
            &sandbox,
            vec![endpoint(rx.url("/hook"), &[])],
            vec![1],
            5000,
        )
        .await;
        let worker = start_worker(&app, "w1");
        let order_no = paid_legacy_order(&app, &sandbox).await;
        for _ in 0..600 {
            if !rx.hits().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(rx.hits().len(), 1, "the delivery is in flight");
        // SIGTERM now: the worker waits for the answer and records it before it returns.
        worker.shutdown().await;
        let d = deliveries_of(&app, &order_no).await;
        assert_eq!(
            (d.len(), d[0].state, d[0].attempts, d[0].last_status),
            (1, DeliveryState::Delivered, 1, Some(200))
        );
        assert!(d[0].lease_owner.is_none());
    }
}

#[test]
fn unknown_event_names_and_bad_schedules_are_refused() {
    let mut s = Settings::defaults();
    s.webhooks = vec![endpoint(
        "https://shop.example.com/hooks".into(),
        &["order.payed"],
    )];
    let e = s.check().unwrap_err().to_string();
    assert!(e.contains("order.payed"), "{e}");
    s.webhooks = vec![endpoint(
        "https://shop.example.com/hooks".into(),
        &["order.paid"],
    )];
    s.check().unwrap();
    s.webhook_retry_secs = vec![];
    assert!(s.check().is_err());
    s.webhook_retry_secs = vec![15, 0];
    assert!(s.check().is_err());
    s.webhook_retry_secs = vec![15];
    s.webhooks
        .push(endpoint("https://shop.example.com/hooks".into(), &[]));
    assert!(s.check().is_err(), "the same url twice");
    s.webhooks = vec![endpoint("ftp://shop.example.com/hooks".into(), &[])];
    assert!(s.check().is_err());
    // Defaults: every event, WeChat's 24 h 4 m schedule, 5 s timeout.
    let d = Settings::defaults();
    assert!(d.webhooks.is_empty());
    assert_eq!(d.webhook_retry_secs.iter().sum::<i64>(), 24 * 3600 + 4 * 60);
    assert_eq!(d.webhook_timeout_ms, 5000);
}

#[tokio::test]
async fn the_admin_api_needs_the_admin_key() {
    for db in TestDb::all().await.unwrap() {
        let sandbox = sandbox().await;
        let rx = Receiver::start().await;
        let app = app_with(
            &db,
            &sandbox,
            vec![endpoint(rx.url("/hook"), &[])],
            vec![1],
            2000,
        )
        .await;
        let list = "/admin/api/webhook-deliveries?state=DEAD";
        for key in [None, Some(API_KEY), Some("adm_wrong")] {
            assert_eq!(admin_get(&app, list, key).await.0, 401, "{key:?}");
            assert_eq!(admin_get(&app, "/admin/api/events/evt_x", key).await.0, 401);
            assert_eq!(
                admin_post(&app, "/admin/api/events/evt_x/redeliver", key)
                    .await
                    .0,
                401,
                "{key:?}"
            );
        }
        let (s, v) = admin_get(&app, list, Some(ADMIN_KEY)).await;
        assert_eq!(
            (s, v["deliveries"].as_array().map(|a| a.len())),
            (200, Some(0))
        );
        let (s, v) = admin_get(
            &app,
            "/admin/api/webhook-deliveries?state=LOST",
            Some(ADMIN_KEY),
        )
        .await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some("invalid_state"))
        );
        let (s, _) = admin_get(
            &app,
            "/admin/api/webhook-deliveries?limit=0",
            Some(ADMIN_KEY),
        )
        .await;
        assert_eq!(s, 400);
        let (s, _) = admin_get(&app, "/admin/api/events/evt_x", Some(ADMIN_KEY)).await;
        assert_eq!(s, 404);
    }
}

#[tokio::test]
async fn two_workers_deliver_each_event_exactly_once() {
    for db in TestDb::all().await.unwrap() {
        let sandbox = sandbox().await;
        let rx = Receiver::start().await;
        let app = app_with(
            &db,
            &sandbox,
            vec![endpoint(rx.url("/hook"), &[])],
            vec![1],
            5000,
        )
        .await;
        let workers = [
            start_worker(&app, "worker-a"),
            start_worker(&app, "worker-b"),
        ];
        // Twelve payments whose notifications arrive concurrently.
        let mut orders = Vec::new();
        for _ in 0..12 {
            let order = app.create_order("u1", 100, None).await;
            let order_no = order["order_no"].as_str().unwrap().to_string();
            let pay = app.pay(&order_no).await;
            sandbox
                .pay_prepay(pay["app_params"]["prepayid"].as_str().unwrap())
                .unwrap();
            orders.push(order_no);
        }
        for o in &orders {
            app.wait_state(o, "PAID").await;
        }
        let mut event_ids = Vec::new();
        for o in &orders {
            let d =
                wait_deliveries(&app, o, "delivered", all_in(DeliveryState::Delivered, 1)).await;
            assert_eq!(d[0].attempts, 1);
            event_ids.push(d[0].event_id.clone());
        }
        for w in workers {
            w.shutdown().await;
        }
        let mut counts: HashMap<String, usize> = HashMap::new();
        for h in rx.hits() {
            *counts.entry(h.event_id).or_default() += 1;
        }
        assert_eq!(counts.len(), orders.len(), "{counts:?}");
        for id in &event_ids {
            assert_eq!(counts.get(id), Some(&1), "event {id} delivered {counts:?}");
        }
    }
}
