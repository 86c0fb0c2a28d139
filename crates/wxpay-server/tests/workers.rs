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
            s.order_ttl_secs = 60;
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
        r.clock.advance_secs(61);
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
        r.clock.advance_secs(61);
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
        r.clock.advance_secs(61);
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
