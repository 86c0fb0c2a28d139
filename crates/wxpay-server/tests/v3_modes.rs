//! The whole v3 flow through the server in each way of verifying WeChat Pay: platform
//! certificates (with a rotation in the middle) and the combined certificate → public-key mode —
//! on SQLite and (when configured) PostgreSQL + Redis.

mod common;

use common::*;
use serde_json::json;
use std::sync::Arc;
use wxpay_sandbox::config as sb;
use wxpay_sandbox::{
    Sandbox, SandboxConfig, SandboxHandle, SandboxOptions, SystemClock, VerifyMode,
};
use wxpay_store::testing::TestDb;

async fn certificate_sandbox() -> SandboxHandle {
    let mut config = SandboxConfig {
        refund_min_interval_secs: 0,
        ..SandboxConfig::demo()
    };
    for m in &mut config.v3_merchants {
        m.verify_mode = VerifyMode::PlatformCertificate;
    }
    let options = SandboxOptions {
        time_scale: 0.001,
        seed: 11,
        clock: Arc::new(SystemClock),
    };
    Sandbox::new(config, options)
        .unwrap()
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// Order, prepay, pay at the sandbox, notification → PAID; then a partial refund → SUCCESS.
async fn pay_and_refund(app: &TestApp, sandbox: &SandboxHandle, amount: i64) -> String {
    let order = app.create_order("u1", amount, None).await;
    let order_no = order["order_no"].as_str().unwrap().to_string();
    let (s, pay) = app
        .post(
            &format!("/v1/orders/{order_no}/pay"),
            API_KEY,
            json!({"merchant": "v3-demo", "client_ip": "1.2.3.4"}),
        )
        .await;
    assert_eq!(s, 200, "{pay}");
    sandbox
        .pay_prepay(pay["app_params"]["prepayid"].as_str().unwrap())
        .unwrap();
    app.wait_state(&order_no, "PAID").await;
    let (s, r) = app
        .post(
            &format!("/v1/orders/{order_no}/refunds"),
            API_KEY,
            json!({"amount_fen": 1}),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    app.wait_state(&order_no, "PARTIALLY_REFUNDED").await;
    order_no
}

#[tokio::test]
async fn the_v3_flow_in_platform_certificate_mode_across_a_rotation() {
    for db in TestDb::all().await.unwrap() {
        let sandbox = certificate_sandbox().await;
        let app = spawn_app_custom(
            &db,
            &sandbox,
            &cache_for(&db),
            &random_prefix(),
            Arc::new(wxpay_gateway::SystemClock),
            |s| {
                for m in &mut s.merchants {
                    if m.id == "v3-demo" {
                        // No public key: certificates are downloaded from /v3/certificates.
                        m.wechatpay_public_key_pem = None;
                        m.wechatpay_public_key_id = None;
                    }
                }
            },
        )
        .await;
        pay_and_refund(&app, &sandbox, 500).await;
        // WeChat rotates: a new certificate signs from now on; the old one stays listed a while.
        sandbox.rotate_certificates(sb::DEMO_V3_MCHID).unwrap();
        let order_no = pay_and_refund(&app, &sandbox, 600).await;
        let paid = app.state.store.list_events(&order_no).await.unwrap();
        assert_eq!(
            paid.iter().filter(|e| e.event_type == "order.paid").count(),
            1
        );
    }
}

#[tokio::test]
async fn the_v3_flow_in_combined_mode_during_the_migration_to_a_public_key() {
    for db in TestDb::all().await.unwrap() {
        let sandbox = certificate_sandbox().await;
        let app = spawn_app_custom(
            &db,
            &sandbox,
            &cache_for(&db),
            &random_prefix(),
            Arc::new(wxpay_gateway::SystemClock),
            |s| {
                for m in &mut s.merchants {
                    if m.id == "v3-demo" {
                        // The public key (and its id) from the merchant platform, plus certificates.
                        m.combined_verification = true;
                    }
                }
            },
        )
        .await;
        pay_and_refund(&app, &sandbox, 700).await;
        sandbox.rotate_certificates(sb::DEMO_V3_MCHID).unwrap();
        pay_and_refund(&app, &sandbox, 800).await;
    }
}
