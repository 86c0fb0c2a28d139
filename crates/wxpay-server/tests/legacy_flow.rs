//! The blog's legacy 2014 flow, end to end, against the in-process sandbox — on SQLite, and on
//! PostgreSQL + Redis when `WXPAY_TEST_DATABASE_URL` / `WXPAY_TEST_REDIS_URL` are set.

mod common;

use common::*;
use secrecy::SecretString;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use wxpay_gateway::legacy::{LegacyConfig, LegacyGateway};
use wxpay_gateway::token::{MemoryTokenCache, TokenCache};
use wxpay_gateway::{Gateway, PrepayRequest, SystemClock};
use wxpay_proto::legacy::{self, NotifyUser, PayReq};
use wxpay_proto::{Charset, Fen};
use wxpay_sandbox::config as sb;
use wxpay_sandbox::{FaultSet, Faults};
use wxpay_store::testing::TestDb;

fn app_key() -> SecretString {
    SecretString::from(sb::DEMO_LEGACY_APP_KEY)
}
fn partner_key() -> SecretString {
    SecretString::from(sb::DEMO_LEGACY_PARTNER_KEY)
}

/// A notification exactly as WeChat (Tenpay) would send it, signed with `key`.
fn notification(out_trade_no: &str, total_fee: i64, key: &SecretString) -> (String, String) {
    let mut f = BTreeMap::new();
    for (k, v) in [
        ("trade_mode", "1"),
        ("trade_state", "0"),
        ("partner", sb::DEMO_LEGACY_PARTNER),
        ("bank_type", "WX"),
        ("bank_billno", "206011231500"),
        ("fee_type", "1"),
        ("notify_id", "nid-test"),
        ("transaction_id", "1900000109201411270000000001"),
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
    (query, legacy::build_notify_xml(&user, &app_key()))
}

async fn post_notify(app: &TestApp, query: &str, xml: &str) -> (u16, String) {
    let r = app
        .http
        .post(format!("{}/notify/legacy-demo?{query}", app.base))
        .header("content-type", "text/xml")
        .body(xml.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn events(app: &TestApp, order_no: &str) -> Vec<String> {
    app.state
        .store
        .list_events(order_no)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

#[tokio::test]
async fn the_blogs_eight_steps_end_to_end() {
    for db in TestDb::all().await.unwrap() {
        let sandbox = sandbox().await;
        let app = spawn_app(&db, &sandbox, &cache_for(&db), &random_prefix()).await;
        // A coupon for the user, then step 1: the user orders.
        let (s, c) = app
            .post(
                "/v1/coupons",
                API_KEY,
                json!({"user_id": "u1", "discount_fen": 100, "min_spend_fen": 200}),
            )
            .await;
        assert_eq!(s, 201, "{c}");
        let code = c["code"].as_str().unwrap().to_string();
        let order = app.create_order("u1", 1099, Some(&code)).await;
        assert_eq!(
            (
                order["amount_fen"].as_i64(),
                order["discount_fen"].as_i64(),
                order["payable_fen"].as_i64()
            ),
            (Some(1099), Some(100), Some(999))
        );
        let order_no = order["order_no"].as_str().unwrap().to_string();
        // Steps 2-5: token, prepay, app parameters signed for the WeChat SDK.
        let pay = app.pay(&order_no).await;
        let p = &pay["app_params"];
        let req: PayReq = serde_json::from_value(p.clone()).unwrap();
        assert!(
            req.verify(&app_key()),
            "the app's sign verifies with the appkey: {p}"
        );
        assert_eq!(p["package"], "Sign=WXPay");
        assert_eq!(
            p["timestamp"].as_str().unwrap().len(),
            10,
            "seconds, not milliseconds"
        );
        assert_eq!(app.order(&order_no).await["state"], "PAYING");
        // Paying again while the prepay is valid reuses it.
        let again = app.pay(&order_no).await;
        assert_eq!(again["out_trade_no"], pay["out_trade_no"]);
        assert_eq!(again["app_params"]["prepayid"], p["prepayid"]);
        // Step 6: the user pays in WeChat (the sandbox's cashier).
        sandbox.pay_prepay(p["prepayid"].as_str().unwrap()).unwrap();
        // Step 8: WeChat's signed notification marks the order paid.
        let paid = app.wait_state(&order_no, "PAID").await;
        assert_eq!(paid["paid_out_trade_no"], pay["out_trade_no"]);
        // Step 7: the app's hint returns the paid order and changes nothing.
        let (s, hinted) = app
            .post(
                &format!("/v1/orders/{order_no}/client-result"),
                API_KEY,
                json!({}),
            )
            .await;
        assert_eq!((s, hinted["state"].as_str()), (200, Some("PAID")));
        assert_eq!(events(&app, &order_no).await, vec!["order.paid"]);
        let (_, coupons) = app.get("/v1/coupons?user_id=u1", API_KEY).await;
        assert_eq!(coupons["coupons"][0]["state"], "USED");
        let out_trade_no = pay["out_trade_no"].as_str().unwrap();
        let receipts = app.state.store.list_receipts(out_trade_no).await.unwrap();
        assert!(receipts.iter().any(|r| r.verified && r.outcome == "paid"));
        // The sandbox heard "success" and stopped retrying.
        let deliveries = sandbox.notifications();
        let ours: Vec<_> = deliveries
            .iter()
            .filter(|d| d.out_trade_no == out_trade_no)
            .collect();
        assert!(!ours.is_empty());
        assert!(ours.iter().any(|d| d.reply == "success"), "{ours:?}");
        // Paying a paid order is refused.
        let (s, v) = app
            .post(
                &format!("/v1/orders/{order_no}/pay"),
                API_KEY,
                json!({"merchant": "legacy-demo", "client_ip": "1.2.3.4"}),
            )
            .await;
        assert_eq!((s, v["error"]["code"].as_str()), (409, Some("order_paid")));
    }
}

#[tokio::test]
async fn fifty_concurrent_duplicate_notifications_make_one_transition() {
    for db in TestDb::all().await.unwrap() {
        let sandbox = sandbox().await;
        let app = Arc::new(spawn_app(&db, &sandbox, &cache_for(&db), &random_prefix()).await);
        app.post(
            "/v1/coupons",
            API_KEY,
            json!({"user_id": "u1", "discount_fen": 1, "code": "ONEFEN"}),
        )
        .await;
        let order = app.create_order("u1", 500, Some("ONEFEN")).await;
        let order_no = order["order_no"].as_str().unwrap().to_string();
        let pay = app.pay(&order_no).await;
        let (query, xml) = notification(pay["out_trade_no"].as_str().unwrap(), 499, &partner_key());
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (app, q, x) = (app.clone(), query.clone(), xml.clone());
            tasks.push(tokio::spawn(async move { post_notify(&app, &q, &x).await }));
        }
        for t in tasks {
            assert_eq!(
                t.await.unwrap(),
                (200, "success".to_string()),
                "every duplicate is acknowledged"
            );
        }
        assert_eq!(app.order(&order_no).await["state"], "PAID");
        assert_eq!(
            events(&app, &order_no).await,
            vec!["order.paid"],
            "one event on {}",
            db.backend_name()
        );
        let c = app.state.store.get_coupon("ONEFEN").await.unwrap().unwrap();
        assert_eq!(c.state, wxpay_store::CouponState::Used);
        let receipts = app
            .state
            .store
            .list_receipts(pay["out_trade_no"].as_str().unwrap())
            .await
            .unwrap();
        assert_eq!(receipts.len(), 50);
        assert_eq!(
            receipts.iter().filter(|r| r.outcome == "paid").count(),
            1,
            "one deciding receipt"
        );
    }
}

#[tokio::test]
async fn forged_and_mismatched_notifications_change_nothing() {
    for db in TestDb::all().await.unwrap() {
        let sandbox = sandbox().await;
        let app = spawn_app(&db, &sandbox, &cache_for(&db), &random_prefix()).await;
        let order = app.create_order("u1", 500, None).await;
        let order_no = order["order_no"].as_str().unwrap().to_string();
        let pay = app.pay(&order_no).await;
        let out = pay["out_trade_no"].as_str().unwrap();
        // Signed with a key that is not the partner's: refused, stored, nothing changed.
        let (q, x) = notification(
            out,
            500,
            &SecretString::from("0123456789abcdef0123456789abcdef"),
        );
        assert_eq!(post_notify(&app, &q, &x).await, (200, "fail".to_string()));
        // A genuine signature over a tampered amount: refused too.
        let (q, x) = notification(out, 500, &partner_key());
        let tampered = q.replace("total_fee=500", "total_fee=5");
        assert_eq!(
            post_notify(&app, &tampered, &x).await,
            (200, "fail".to_string())
        );
        // A genuine notification of the wrong amount: acknowledged, kept as an anomaly, not paid.
        let (q, x) = notification(out, 5, &partner_key());
        assert_eq!(
            post_notify(&app, &q, &x).await,
            (200, "success".to_string())
        );
        assert_eq!(app.order(&order_no).await["state"], "PAYING");
        assert!(events(&app, &order_no).await.is_empty());
        let receipts = app.state.store.list_receipts(out).await.unwrap();
        let outcomes: Vec<_> = receipts
            .iter()
            .map(|r| (r.verified, r.outcome.as_str()))
            .collect();
        assert_eq!(
            outcomes,
            vec![
                (false, "rejected"),
                (false, "rejected"),
                (true, "amount_mismatch")
            ]
        );
        let anomalies = app.state.store.list_anomalies(&order_no).await.unwrap();
        assert_eq!(anomalies.len(), 1);
        assert_eq!(anomalies[0].kind, "AMOUNT_MISMATCH");
        // A notification for an unknown merchant is not ours.
        let r = app
            .http
            .post(format!("{}/notify/nobody?{q}", app.base))
            .body(x.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404);
    }
}

#[tokio::test]
async fn a_dropped_notification_is_found_through_the_apps_hint() {
    for db in TestDb::all().await.unwrap() {
        let sandbox = sandbox().await;
        sandbox.set_faults(Faults::global(FaultSet {
            drop_notification: 1.0,
            ..Default::default()
        }));
        let app = spawn_app(&db, &sandbox, &cache_for(&db), &random_prefix()).await;
        let order = app.create_order("u1", 300, None).await;
        let order_no = order["order_no"].as_str().unwrap().to_string();
        let pay = app.pay(&order_no).await;
        // Before the user pays, the hint finds nothing and marks nothing.
        let (s, o) = app
            .post(
                &format!("/v1/orders/{order_no}/client-result"),
                API_KEY,
                json!({}),
            )
            .await;
        assert_eq!((s, o["state"].as_str()), (200, Some("PAYING")));
        sandbox
            .pay_prepay(pay["app_params"]["prepayid"].as_str().unwrap())
            .unwrap();
        let (s, o) = app
            .post(
                &format!("/v1/orders/{order_no}/client-result"),
                API_KEY,
                json!({}),
            )
            .await;
        assert_eq!((s, o["state"].as_str()), (200, Some("PAID")), "{o}");
        let stored = app.state.store.get_order(&order_no).await.unwrap().unwrap();
        assert_eq!(stored.paid_source.as_deref(), Some("query"));
        assert_eq!(events(&app, &order_no).await, vec!["order.paid"]);
    }
}

fn demo_gateway(base_url: &str, tokens: Arc<dyn TokenCache>) -> LegacyGateway {
    LegacyGateway::with_defaults(
        LegacyConfig {
            merchant_id: "legacy-demo".into(),
            base_url: base_url.into(),
            appid: sb::DEMO_LEGACY_APPID.into(),
            app_secret: SecretString::from(sb::DEMO_LEGACY_APP_SECRET),
            app_key: app_key(),
            partner: sb::DEMO_LEGACY_PARTNER.into(),
            partner_key: partner_key(),
            token_daily_quota: 200,
            input_charset: Charset::Utf8,
        },
        tokens,
        Arc::new(SystemClock),
    )
}

fn prepay_request(i: usize) -> PrepayRequest {
    PrepayRequest {
        out_trade_no: format!("bulk{i:06}"),
        description: "bulk".into(),
        amount: Fen::new(1),
        client_ip: "10.0.0.1".into(),
        notify_url: "http://127.0.0.1:9/notify/legacy-demo".into(),
        attach: None,
        time_start: 1_795_000_000,
        time_expire: None,
        trace_id: "u1".into(),
    }
}

#[tokio::test]
async fn a_thousand_payments_share_one_access_token_and_recover_from_invalidation() {
    let sandbox = sandbox().await;
    let tokens: Arc<dyn TokenCache> = Arc::new(MemoryTokenCache::new(Arc::new(SystemClock)));
    let gw = Arc::new(demo_gateway(&sandbox.base_url, tokens));
    let sem = Arc::new(tokio::sync::Semaphore::new(50));
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let (gw, sem) = (gw.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.unwrap();
            gw.prepay(&prepay_request(i)).await
        }));
    }
    for t in tasks {
        t.await.unwrap().expect("prepay");
    }
    assert_eq!(sandbox.token_fetch_count(sb::DEMO_LEGACY_APPID), 1);
    // WeChat invalidates the token (40001 on the next call): one refetch, and the call succeeds.
    assert!(sandbox.invalidate_token(sb::DEMO_LEGACY_APPID) > 0);
    gw.prepay(&prepay_request(1000))
        .await
        .expect("prepay after invalidation");
    gw.prepay(&prepay_request(1001))
        .await
        .expect("and the next one");
    assert_eq!(sandbox.token_fetch_count(sb::DEMO_LEGACY_APPID), 2);
    // A repeated prepay (same out_trade_no, same request) returns the same prepay id.
    let a = gw.prepay(&prepay_request(7)).await.unwrap();
    let b = gw.prepay(&prepay_request(7)).await.unwrap();
    assert_eq!(a.prepay_id, b.prepay_id);
}

#[tokio::test]
async fn two_server_instances_on_one_postgres_and_redis_fetch_the_token_once() {
    let Some(db) = TestDb::postgres_from_env().await.unwrap() else {
        return;
    };
    let Ok(redis) = std::env::var(REDIS_ENV) else {
        eprintln!("skipped: {REDIS_ENV} is not set");
        return;
    };
    let sandbox = sandbox().await;
    let prefix = random_prefix();
    let a = Arc::new(spawn_app(&db, &sandbox, &redis, &prefix).await);
    let b = Arc::new(spawn_app(&db, &sandbox, &redis, &prefix).await);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let app = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let o = app.create_order(&format!("u{i}"), 100 + i, None).await;
            app.pay(o["order_no"].as_str().unwrap()).await
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        sandbox.token_fetch_count(sb::DEMO_LEGACY_APPID),
        1,
        "one fetch between both instances"
    );
}

#[tokio::test]
async fn every_api_error_answers_its_documented_code() {
    let db = TestDb::sqlite().await.unwrap();
    let sandbox = sandbox().await;
    let app = spawn_app(&db, &sandbox, "memory", "").await;
    let code = |v: &Value| v["error"]["code"].as_str().unwrap_or("").to_string();
    // Authentication.
    let (s, v) = app.post("/v1/orders", "wrong", json!({})).await;
    assert_eq!((s, code(&v)), (401, "unauthorized".into()));
    let r = app
        .http
        .post(format!("{}/v1/orders", app.base))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Malformed and invalid orders.
    let r = app
        .http
        .post(format!("{}/v1/orders", app.base))
        .bearer_auth(API_KEY)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    for (body, expected) in [
        (
            json!({"user_id": "u1", "subject": "x", "amount_fen": 0}),
            "invalid_amount",
        ),
        (
            json!({"user_id": "u1", "subject": "x", "amount_fen": -5}),
            "invalid_amount",
        ),
        (json!({"user_id": "u1", "subject": "x"}), "invalid_amount"),
        (
            json!({"user_id": "u1", "subject": "x".repeat(128), "amount_fen": 1}),
            "invalid_subject",
        ),
        (
            json!({"user_id": "u1", "subject": "tea 🍵", "amount_fen": 1}),
            "invalid_subject",
        ),
        (
            json!({"user_id": "", "subject": "x", "amount_fen": 1}),
            "invalid_user_id",
        ),
        (
            json!({"user_id": "u1", "subject": "x", "items": [{"sku": "a", "name": "a", "unit_price_fen": 1, "quantity": 0}]}),
            "invalid_items",
        ),
        (
            json!({"user_id": "u1", "subject": "x", "items": [{"sku": "a", "name": "a", "unit_price_fen": i64::MAX, "quantity": 2}]}),
            "invalid_items",
        ),
        (
            json!({"user_id": "u1", "subject": "x", "amount_fen": 100, "coupon_code": "NOPE"}),
            "coupon_not_found",
        ),
    ] {
        let (s, v) = app.post("/v1/orders", API_KEY, body.clone()).await;
        assert_eq!((s, code(&v)), (422, expected.to_string()), "{body}");
    }
    // Items are priced in integer fen.
    let (s, v) = app
        .post(
            "/v1/orders",
            API_KEY,
            json!({"user_id": "u1", "subject": "x", "items": [
            {"sku": "tea", "name": "tea", "unit_price_fen": 29, "quantity": 3},
            {"sku": "cup", "name": "cup", "unit_price_fen": 1000, "quantity": 1}]}),
        )
        .await;
    assert_eq!((s, v["amount_fen"].as_i64()), (201, Some(1087)));
    let order_no = v["order_no"].as_str().unwrap().to_string();
    // Pay errors.
    let path = format!("/v1/orders/{order_no}/pay");
    let (s, v) = app
        .post(
            &path,
            API_KEY,
            json!({"merchant": "nobody", "client_ip": "1.2.3.4"}),
        )
        .await;
    assert_eq!((s, code(&v)), (422, "unknown_merchant".into()));
    let (s, v) = app
        .post(
            &path,
            API_KEY,
            json!({"merchant": "legacy-demo", "client_ip": "not-an-ip"}),
        )
        .await;
    assert_eq!((s, code(&v)), (422, "invalid_client_ip".into()));
    let (s, v) = app
        .post(
            "/v1/orders/ordNOPE/pay",
            API_KEY,
            json!({"merchant": "legacy-demo", "client_ip": "1.2.3.4"}),
        )
        .await;
    assert_eq!((s, code(&v)), (404, "order_not_found".into()));
    let (s, _) = app.get("/v1/orders/ordNOPE", API_KEY).await;
    assert_eq!(s, 404);
    // A user token sees only its own orders.
    let secret = SecretString::from(JWT_SECRET);
    let exp = wxpay_gateway::Clock::now_secs(&SystemClock) + 3600;
    let u1 = wxpay_server::auth::issue_jwt("u1", exp, &secret);
    let u2 = wxpay_server::auth::issue_jwt("u2", exp, &secret);
    assert_eq!(app.get(&format!("/v1/orders/{order_no}"), &u1).await.0, 200);
    assert_eq!(app.get(&format!("/v1/orders/{order_no}"), &u2).await.0, 404);
    assert_eq!(app.get("/v1/orders?user_id=u1", &u2).await.0, 403);
    let (s, list) = app.get("/v1/orders", &u1).await;
    assert_eq!((s, list["orders"].as_array().map(Vec::len)), (200, Some(1)));
    let (s, v) = app
        .post(
            "/v1/orders",
            &u2,
            json!({"user_id": "u1", "subject": "x", "amount_fen": 1}),
        )
        .await;
    assert_eq!((s, code(&v)), (403, "forbidden".into()));
    let (s, _) = app
        .post(
            "/v1/coupons",
            &u1,
            json!({"user_id": "u1", "discount_fen": 1}),
        )
        .await;
    assert_eq!(s, 403, "users cannot issue coupons");
    // Idempotency-Key: the same key and body replays; another body is refused.
    let send = |key: &'static str, amount: i64| {
        let app = &app;
        async move {
            let r = app
                .http
                .post(format!("{}/v1/orders", app.base))
                .bearer_auth(API_KEY)
                .header("Idempotency-Key", key)
                .json(&json!({"user_id": "u9", "subject": "x", "amount_fen": amount}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s1, first) = send("k-1", 10).await;
    let (s2, second) = send("k-1", 10).await;
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(first, second, "replayed");
    let (_, listed) = app.get("/v1/orders?user_id=u9", API_KEY).await;
    assert_eq!(
        listed["orders"].as_array().unwrap().len(),
        1,
        "created once"
    );
    let (s3, v) = send("k-1", 11).await;
    assert_eq!((s3, code(&v)), (422, "idempotency_key_reused".into()));
    // Health.
    assert_eq!(app.get("/healthz", "").await.0, 200);
    assert_eq!(app.get("/readyz", "").await.0, 200);
}
