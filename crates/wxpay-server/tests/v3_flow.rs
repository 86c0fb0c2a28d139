//! The same flow for an APIv3 merchant, plus refunds — against the in-process sandbox, on SQLite
//! and (when configured) PostgreSQL + Redis.

mod common;

use common::*;
use serde_json::{Value, json};
use std::sync::Arc;
use wxpay_proto::v3::auth::app_pay_message;
use wxpay_proto::v3::rsa::RsaPrivateKey;
use wxpay_sandbox::config as sb;
use wxpay_sandbox::{FaultSet, Faults};
use wxpay_store::testing::TestDb;

async fn pay_v3(app: &TestApp, order_no: &str) -> Value {
    let (s, v) = app
        .post(
            &format!("/v1/orders/{order_no}/pay"),
            API_KEY,
            json!({"merchant": "v3-demo", "client_ip": "14.23.150.211"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v
}

async fn refund(app: &TestApp, order_no: &str, amount: i64, no: Option<&str>) -> (u16, Value) {
    let mut body = json!({"amount_fen": amount, "reason": "退货"});
    if let Some(n) = no {
        body["out_refund_no"] = json!(n);
    }
    app.post(&format!("/v1/orders/{order_no}/refunds"), API_KEY, body)
        .await
}

async fn wait_refund(app: &TestApp, order_no: &str, out_refund_no: &str, state: &str) {
    for _ in 0..400 {
        let (_, v) = app
            .get(&format!("/v1/orders/{order_no}/refunds"), API_KEY)
            .await;
        let found = v["refunds"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["out_refund_no"] == out_refund_no && r["state"] == state);
        if found {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("refund {out_refund_no} never reached {state}");
}

#[tokio::test]
async fn the_v3_flow_with_refunds_end_to_end() {
    for db in TestDb::all().await.unwrap() {
        let sandbox = sandbox().await;
        // Probes and forgeries arrive before every genuine notification; all must be refused.
        sandbox.set_faults(Faults::global(FaultSet {
            signtest_probe: 1.0,
            forge_notification: 1.0,
            ..Default::default()
        }));
        let app = spawn_app(&db, &sandbox, &cache_for(&db), &random_prefix()).await;
        app.post(
            "/v1/coupons",
            API_KEY,
            json!({"user_id": "u1", "discount_fen": 100, "code": "V3OFF"}),
        )
        .await;
        let order = app.create_order("u1", 1100, Some("V3OFF")).await;
        let order_no = order["order_no"].as_str().unwrap().to_string();
        let pay = pay_v3(&app, &order_no).await;
        let p = &pay["app_params"];
        assert_eq!(
            (p["partnerid"].as_str(), p["package"].as_str()),
            (Some(sb::DEMO_V3_MCHID), Some("Sign=WXPay"))
        );
        // The app's RSA sign verifies with the merchant's public key (PROTOCOL.md B.6).
        let key = RsaPrivateKey::from_pkcs8_pem(sb::DEMO_MERCHANT_PRIVATE_KEY_PEM)
            .unwrap()
            .public_key();
        let ts: i64 = p["timestamp"].as_str().unwrap().parse().unwrap();
        let msg = app_pay_message(
            p["appid"].as_str().unwrap(),
            ts,
            p["noncestr"].as_str().unwrap(),
            p["prepayid"].as_str().unwrap(),
        );
        assert!(key.verify_sha256_base64(&msg, p["sign"].as_str().unwrap()));
        sandbox.pay_prepay(p["prepayid"].as_str().unwrap()).unwrap();
        app.wait_state(&order_no, "PAID").await;
        let out = pay["out_trade_no"].as_str().unwrap();
        let receipts = app.state.store.list_receipts(out).await.unwrap();
        assert_eq!(receipts.iter().filter(|r| r.outcome == "paid").count(), 1);
        let rejected = app
            .state
            .store
            .recent_receipts("v3-demo", 100)
            .await
            .unwrap();
        assert!(
            rejected
                .iter()
                .filter(|r| !r.verified && r.outcome == "rejected")
                .count()
                >= 2,
            "probe and forgery kept, refused"
        );
        // A partial refund, then the rest.
        let (s, r1) = refund(&app, &order_no, 400, Some("RF-1")).await;
        assert_eq!(s, 201, "{r1}");
        wait_refund(&app, &order_no, "RF-1", "SUCCESS").await;
        assert_eq!(app.order(&order_no).await["state"], "PARTIALLY_REFUNDED");
        // The same out_refund_no again is the same refund, not a second one.
        let (s, again) = refund(&app, &order_no, 400, Some("RF-1")).await;
        assert_eq!((s, again["out_refund_no"].as_str()), (201, Some("RF-1")));
        let (s, v) = refund(&app, &order_no, 601, None).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (422, Some("refund_exceeds_paid"))
        );
        let (s, _) = refund(&app, &order_no, 600, Some("RF-2")).await;
        assert_eq!(s, 201);
        wait_refund(&app, &order_no, "RF-2", "SUCCESS").await;
        let done = app.order(&order_no).await;
        assert_eq!(
            (done["state"].as_str(), done["refunded_fen"].as_i64()),
            (Some("REFUNDED"), Some(1000))
        );
        let events: Vec<String> = app
            .state
            .store
            .list_events(&order_no)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event_type)
            .collect();
        assert_eq!(
            events,
            vec!["order.paid", "refund.succeeded", "refund.succeeded"]
        );
        let (_, coupons) = app.get("/v1/coupons?user_id=u1", API_KEY).await;
        assert_eq!(
            coupons["coupons"][0]["state"], "AVAILABLE",
            "the coupon comes back on a full refund"
        );
    }
}

#[tokio::test]
async fn twenty_concurrent_refunds_only_those_that_fit_succeed() {
    for db in TestDb::all().await.unwrap() {
        let sandbox = sandbox().await;
        let app = Arc::new(spawn_app(&db, &sandbox, &cache_for(&db), &random_prefix()).await);
        let order = app.create_order("u1", 1000, None).await;
        let order_no = order["order_no"].as_str().unwrap().to_string();
        let pay = pay_v3(&app, &order_no).await;
        sandbox
            .pay_prepay(pay["app_params"]["prepayid"].as_str().unwrap())
            .unwrap();
        app.wait_state(&order_no, "PAID").await;
        let mut tasks = Vec::new();
        for i in 0..20 {
            let (app, no) = (app.clone(), order_no.clone());
            tasks.push(tokio::spawn(async move {
                refund(&app, &no, 300, Some(&format!("C-{i}"))).await
            }));
        }
        let mut accepted = 0;
        for t in tasks {
            let (s, v) = t.await.unwrap();
            match s {
                201 => accepted += 1,
                422 => assert_eq!(v["error"]["code"], "refund_exceeds_paid"),
                other => panic!("unexpected {other}: {v}"),
            }
        }
        assert_eq!(accepted, 3, "3 × 300 fits in 1000 on {}", db.backend_name());
        let sandbox_order = sandbox
            .order_for(sb::DEMO_V3_MCHID, pay["out_trade_no"].as_str().unwrap())
            .unwrap();
        let at_wechat: i64 = sandbox_order.refunds.iter().map(|r| r.amount).sum();
        assert!(at_wechat <= 1000, "WeChat never sees more than was paid");
    }
}

#[tokio::test]
async fn refunds_are_refused_for_unpaid_orders_and_legacy_merchants() {
    let db = TestDb::sqlite().await.unwrap();
    let sandbox = sandbox().await;
    let app = spawn_app(&db, &sandbox, "memory", "").await;
    let order = app.create_order("u1", 100, None).await;
    let order_no = order["order_no"].as_str().unwrap().to_string();
    let (s, v) = refund(&app, &order_no, 10, None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (422, Some("order_not_refundable"))
    );
    let pay = app.pay(&order_no).await;
    sandbox
        .pay_prepay(pay["app_params"]["prepayid"].as_str().unwrap())
        .unwrap();
    app.wait_state(&order_no, "PAID").await;
    let (s, v) = refund(&app, &order_no, 10, None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (422, Some("refunds_unsupported"))
    );
    let (s, v) = refund(&app, &order_no, 10, Some("bad refund no")).await;
    assert_eq!(s, 422, "{v}");
    assert!(
        app.state
            .store
            .list_refunds(&order_no)
            .await
            .unwrap()
            .is_empty(),
        "nothing reserved"
    );
}

#[tokio::test]
async fn an_emoji_description_is_refused_before_wechat_sees_it() {
    let db = TestDb::sqlite().await.unwrap();
    let sandbox = sandbox().await;
    let app = spawn_app(&db, &sandbox, "memory", "").await;
    let (s, v) = app
        .post(
            "/v1/orders",
            API_KEY,
            json!({"user_id": "u1", "subject": "🍵", "amount_fen": 1}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (422, Some("invalid_subject"))
    );
}
