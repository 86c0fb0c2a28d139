//! The sweeper and the expirer, driven round by round with an injected clock — on SQLite and (when
//! configured) PostgreSQL + Redis.

mod common;

use common::*;
use serde_json::{Value, json};
use std::sync::Arc;
use wxpay_gateway::ManualClock;
use wxpay_sandbox::config as sb;
use wxpay_sandbox::{EndpointFault, EndpointFaultKind, FaultSet, Faults};
use wxpay_server::workers::{WorkerContext, expirer, sweeper};
use wxpay_store::testing::TestDb;

struct Rig {
    app: TestApp,
    sandbox: wxpay_sandbox::SandboxHandle,
    clock: Arc<ManualClock>,
    ctx: WorkerContext,
    _stop: tokio::sync::watch::Sender<bool>,
}

async fn rig(db: &TestDb) -> Rig {
    let sandbox = sandbox().await;
    let clock = Arc::new(ManualClock::starting_now());
    let app = spawn_app_custom(
        db,
        &sandbox,
        &cache_for(db),
        &random_prefix(),
        clock.clone(),
        |s| {
            s.order_ttl_secs = 120;
        },
    )
    .await;
    let (stop, rx) = tokio::sync::watch::channel(false);
    let ctx = WorkerContext {
        state: app.state.clone(),
        stop: rx,
        owner: "test-worker".into(),
    };
    Rig {
        app,
        sandbox,
        clock,
        ctx,
        _stop: stop,
    }
}

async fn order_and_pay(r: &Rig, merchant: &str, coupon: Option<&str>) -> (String, Value) {
    let order = r.app.create_order("u1", 1000, coupon).await;
    let order_no = order["order_no"].as_str().unwrap().to_string();
    let (s, pay) = r
        .app
        .post(
            &format!("/v1/orders/{order_no}/pay"),
            API_KEY,
            json!({"merchant": merchant, "client_ip": "1.2.3.4"}),
        )
        .await;
    assert_eq!(s, 200, "{pay}");
    (order_no, pay)
}

async fn events(r: &Rig, order_no: &str) -> Vec<String> {
    r.app
        .state
        .store
        .list_events(order_no)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

#[tokio::test]
async fn the_sweeper_finds_a_payment_whose_notifications_were_all_dropped() {
    for db in TestDb::all().await.unwrap() {
        let r = rig(&db).await;
        r.sandbox.set_faults(Faults::global(FaultSet {
            drop_notification: 1.0,
            ..Default::default()
        }));
        for merchant in ["legacy-demo", "v3-demo"] {
            let (order_no, pay) = order_and_pay(&r, merchant, None).await;
            // Nothing is due before the first gap of the schedule.
            assert_eq!(sweeper::sweep_once(&r.ctx).await.unwrap(), 0);
            r.clock.advance_secs(11);
            // Due, asked, not paid yet: rescheduled, still pending.
            assert_eq!(sweeper::sweep_once(&r.ctx).await.unwrap(), 1);
            assert_eq!(r.app.order(&order_no).await["state"], "PAYING");
            r.sandbox
                .pay_prepay(pay["app_params"]["prepayid"].as_str().unwrap())
                .unwrap();
            assert_eq!(
                sweeper::sweep_once(&r.ctx).await.unwrap(),
                0,
                "next query only after the next gap (30 s)"
            );
            r.clock.advance_secs(31);
            assert_eq!(sweeper::sweep_once(&r.ctx).await.unwrap(), 1);
            let o = r
                .app
                .state
                .store
                .get_order(&order_no)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                (o.state.as_str(), o.paid_source.as_deref()),
                ("PAID", Some("sweep")),
                "{merchant}"
            );
            assert_eq!(events(&r, &order_no).await, vec!["order.paid"]);
            let a = r
                .app
                .state
                .store
                .get_attempt(pay["out_trade_no"].as_str().unwrap())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                (a.query_count, a.next_query_at),
                (1, None),
                "stops asking once paid"
            );
        }
    }
}

#[tokio::test]
async fn an_expired_order_is_closed_at_wechat_first_then_locally_with_its_coupon_released() {
    for db in TestDb::all().await.unwrap() {
        let r = rig(&db).await;
        r.app
            .post(
                "/v1/coupons",
                API_KEY,
                json!({"user_id": "u1", "discount_fen": 100, "code": "EXP1"}),
            )
            .await;
        let (order_no, pay) = order_and_pay(&r, "v3-demo", Some("EXP1")).await;
        let out = pay["out_trade_no"].as_str().unwrap().to_string();
        assert_eq!(
            expirer::expire_once(&r.ctx).await.unwrap(),
            0,
            "not expired yet"
        );
        // WeChat's close fails: nothing is closed locally, the close is retried later.
        r.sandbox.set_faults(Faults::global(FaultSet {
            endpoints: vec![EndpointFault {
                path: "/v3/pay/transactions/out-trade-no".into(),
                method: Some("POST".into()),
                kind: EndpointFaultKind::SystemError,
                probability: 1.0,
                hang_ms: None,
            }],
            ..Default::default()
        }));
        r.clock.advance_secs(121);
        assert_eq!(expirer::expire_once(&r.ctx).await.unwrap(), 1);
        assert_eq!(
            r.app.order(&order_no).await["state"],
            "PAYING",
            "not closed before WeChat agrees"
        );
        assert_eq!(
            r.app
                .state
                .store
                .get_coupon("EXP1")
                .await
                .unwrap()
                .unwrap()
                .state,
            wxpay_store::CouponState::Reserved
        );
        assert_eq!(
            expirer::expire_once(&r.ctx).await.unwrap(),
            0,
            "retried only after a backoff"
        );
        r.sandbox.set_faults(Faults::none());
        r.clock.advance_secs(30);
        assert_eq!(expirer::expire_once(&r.ctx).await.unwrap(), 1);
        assert_eq!(r.app.order(&order_no).await["state"], "CLOSED");
        assert_eq!(
            r.sandbox
                .order_for(sb::DEMO_V3_MCHID, &out)
                .unwrap()
                .state
                .as_str(),
            "CLOSED"
        );
        assert_eq!(
            r.app
                .state
                .store
                .get_coupon("EXP1")
                .await
                .unwrap()
                .unwrap()
                .state,
            wxpay_store::CouponState::Available
        );
        assert_eq!(events(&r, &order_no).await, vec!["order.closed"]);
        // A closed order takes no new payment attempt.
        let (s, v) = r
            .app
            .post(
                &format!("/v1/orders/{order_no}/pay"),
                API_KEY,
                json!({"merchant": "v3-demo", "client_ip": "1.2.3.4"}),
            )
            .await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (409, Some("order_closed"))
        );
    }
}

#[tokio::test]
async fn a_payment_found_at_expiry_is_recorded_instead_of_closing() {
    for db in TestDb::all().await.unwrap() {
        let r = rig(&db).await;
        r.sandbox.set_faults(Faults::global(FaultSet {
            drop_notification: 1.0,
            ..Default::default()
        }));
        let (order_no, pay) = order_and_pay(&r, "v3-demo", None).await;
        r.sandbox
            .pay_prepay(pay["app_params"]["prepayid"].as_str().unwrap())
            .unwrap();
        r.clock.advance_secs(121);
        expirer::expire_once(&r.ctx).await.unwrap();
        assert_eq!(r.app.order(&order_no).await["state"], "PAID");
        assert_eq!(events(&r, &order_no).await, vec!["order.paid"]);
    }
}

#[tokio::test]
async fn a_legacy_order_is_closed_after_its_time_expire_and_a_final_query() {
    for db in TestDb::all().await.unwrap() {
        let r = rig(&db).await;
        let (order_no, _pay) = order_and_pay(&r, "legacy-demo", None).await;
        r.clock.advance_secs(121);
        expirer::expire_once(&r.ctx).await.unwrap();
        assert_eq!(
            r.app.order(&order_no).await["state"],
            "PAYING",
            "waits out the grace period"
        );
        r.clock.advance_secs(121);
        expirer::expire_once(&r.ctx).await.unwrap();
        assert_eq!(r.app.order(&order_no).await["state"], "CLOSED");
        assert_eq!(events(&r, &order_no).await, vec!["order.closed"]);
    }
}

#[tokio::test]
async fn a_second_payment_is_refunded_automatically_when_configured() {
    for db in TestDb::all().await.unwrap() {
        let sandbox = sandbox().await;
        let clock = Arc::new(ManualClock::starting_now());
        let app = spawn_app_custom(
            &db,
            &sandbox,
            &cache_for(&db),
            &random_prefix(),
            clock.clone(),
            |s| {
                s.late_success_refund = true;
            },
        )
        .await;
        let order = app.create_order("u1", 700, None).await;
        let order_no = order["order_no"].as_str().unwrap().to_string();
        let pay = |merchant: &'static str| {
            let (app, no) = (&app, order_no.clone());
            async move {
                let (s, v) = app
                    .post(
                        &format!("/v1/orders/{no}/pay"),
                        API_KEY,
                        json!({"merchant": merchant, "client_ip": "1.2.3.4"}),
                    )
                    .await;
                assert_eq!(s, 200, "{v}");
                v
            }
        };
        let first = pay("v3-demo").await;
        let second = pay("legacy-demo").await;
        // The user pays both: the legacy one first decides the order, the v3 one is a second payment.
        sandbox
            .pay_prepay(second["app_params"]["prepayid"].as_str().unwrap())
            .unwrap();
        app.wait_state(&order_no, "PAID").await;
        sandbox
            .pay_prepay(first["app_params"]["prepayid"].as_str().unwrap())
            .unwrap();
        let late = format!("late-{}", first["out_trade_no"].as_str().unwrap());
        let (_stop, rx) = tokio::sync::watch::channel(false);
        let ctx = WorkerContext {
            state: app.state.clone(),
            stop: rx,
            owner: "test-worker".into(),
        };
        let mut refunded = false;
        for _ in 0..400 {
            // The refund sweeper sends the scheduled refund (and asks about it until it is done).
            sweeper::sweep_refunds_once(&ctx).await.unwrap();
            if app
                .state
                .store
                .get_refund(&late)
                .await
                .unwrap()
                .is_some_and(|r| r.state == "SUCCESS")
            {
                refunded = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(
            refunded,
            "the second payment was refunded: {:?} / {:?}",
            app.state.store.get_refund(&late).await.unwrap(),
            app.state.store.list_anomalies(&order_no).await.unwrap()
        );
        let o = app.state.store.get_order(&order_no).await.unwrap().unwrap();
        assert_eq!(
            (o.state.as_str(), o.refunded_fen),
            ("PAID", 0),
            "the order itself is untouched"
        );
        let anomalies = app.state.store.list_anomalies(&order_no).await.unwrap();
        assert_eq!(anomalies.len(), 1);
        assert_eq!(anomalies[0].kind, "DUPLICATE_PAYMENT");
        assert!(anomalies[0].resolved_at.is_some(), "resolved by the refund");
        let at_wechat = sandbox
            .order_for(sb::DEMO_V3_MCHID, first["out_trade_no"].as_str().unwrap())
            .unwrap();
        assert_eq!(at_wechat.refunds.iter().map(|r| r.amount).sum::<i64>(), 700);
    }
}

#[tokio::test]
async fn a_refund_whose_answer_was_lost_is_sent_again_with_the_same_number() {
    for db in TestDb::all().await.unwrap() {
        let r = rig(&db).await;
        let (order_no, pay) = order_and_pay(&r, "v3-demo", None).await;
        r.sandbox
            .pay_prepay(pay["app_params"]["prepayid"].as_str().unwrap())
            .unwrap();
        r.app.wait_state(&order_no, "PAID").await;
        r.sandbox.set_faults(Faults::global(FaultSet {
            endpoints: vec![EndpointFault {
                path: "/v3/refund/domestic/refunds".into(),
                method: Some("POST".into()),
                kind: EndpointFaultKind::SystemError,
                probability: 1.0,
                hang_ms: None,
            }],
            ..Default::default()
        }));
        let (s, v) = r
            .app
            .post(
                &format!("/v1/orders/{order_no}/refunds"),
                API_KEY,
                json!({"amount_fen": 250, "out_refund_no": "LOST-1"}),
            )
            .await;
        assert_eq!((s, v["state"].as_str()), (201, Some("PENDING")), "{v}");
        r.sandbox.set_faults(Faults::none());
        assert_eq!(
            sweeper::sweep_refunds_once(&r.ctx).await.unwrap(),
            0,
            "not due yet"
        );
        r.clock.advance_secs(61);
        assert_eq!(sweeper::sweep_refunds_once(&r.ctx).await.unwrap(), 1);
        let refund = r
            .app
            .state
            .store
            .get_refund("LOST-1")
            .await
            .unwrap()
            .unwrap();
        assert!(
            refund.state == "PROCESSING" || refund.state == "SUCCESS",
            "{refund:?}"
        );
        let at_wechat = r
            .sandbox
            .order_for(sb::DEMO_V3_MCHID, pay["out_trade_no"].as_str().unwrap())
            .unwrap();
        let numbers: Vec<_> = at_wechat
            .refunds
            .iter()
            .map(|x| x.out_refund_no.as_str())
            .collect();
        assert_eq!(
            numbers,
            vec!["LOST-1"],
            "one refund at WeChat, under the same number"
        );
    }
}
