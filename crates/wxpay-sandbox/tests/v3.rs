//! APIv3 against the sandbox with a client built from wxpay-proto only.

mod common;

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;
use wxpay_proto::v3::aead::ApiV3Key;
use wxpay_proto::v3::model::{CertificatesResponse, Notification, Transaction};
use wxpay_proto::v3::rsa::Certificate;
use wxpay_proto::v3::verify::{CertificateVerifier, PublicKeyVerifier};
use wxpay_sandbox::config::{DEMO_V3_APIV3_KEY, DEMO_V3_MCHID, DEMO_V3_PUBLIC_KEY_ID};
use wxpay_sandbox::{Clock, NotificationKind, Outcome, RefundRule, SandboxConfig, VerifyMode};

fn key() -> ApiV3Key {
    ApiV3Key::new(DEMO_V3_APIV3_KEY).unwrap()
}

fn q(no: &str) -> String {
    format!("/v3/pay/transactions/out-trade-no/{no}?mchid={DEMO_V3_MCHID}")
}

#[tokio::test]
async fn v3_flow_in_public_key_mode() {
    let (h, clock) = start(0.001).await;
    let c = V3Client::demo(&h.base_url, clock.clone());
    let pk = public_key_verifier(&h);
    assert_eq!(pk.id(), DEMO_V3_PUBLIC_KEY_ID);
    let rx = receiver(
        vec![reply(500, r#"{"code":"FAIL","message":"失败"}"#)],
        reply(204, ""),
    )
    .await;

    let body = app_order("v3flow000001", 100, &rx.url);
    let r = c
        .call("POST", "/v3/pay/transactions/app", Some(&body))
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.verify(&pk, T0),
        "response signature verifies with the public key"
    );
    assert_eq!(r.header("wechatpay-serial"), Some(DEMO_V3_PUBLIC_KEY_ID));
    assert!(r.header("request-id").is_some());
    assert_eq!(
        r.header("wechatpay-signature-type"),
        Some("WECHATPAY2-SHA256-RSA2048")
    );
    let prepay = r.json()["prepay_id"].as_str().unwrap().to_string();
    assert!(prepay.starts_with("wx"));

    // Identical re-order: same prepay id; different parameters: OUT_TRADE_NO_USED.
    let r2 = c
        .call("POST", "/v3/pay/transactions/app", Some(&body))
        .await;
    assert_eq!(r2.json()["prepay_id"], prepay.as_str());
    let r3 = c
        .call(
            "POST",
            "/v3/pay/transactions/app",
            Some(&app_order("v3flow000001", 101, &rx.url)),
        )
        .await;
    assert_eq!((r3.status, r3.code().as_str()), (403, "OUT_TRADE_NO_USED"));
    assert!(r3.verify(&pk, T0), "error responses are signed too");

    let r = c.call("GET", &q("v3flow000001"), None).await;
    assert_eq!(r.status, 200);
    let t: Transaction = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        (t.trade_state.as_str(), t.transaction_id.is_none()),
        ("NOTPAY", true)
    );

    let paid = h.pay_prepay(&prepay).unwrap();
    let tid = paid.transaction_id.clone().unwrap();
    let hits = rx.wait_hits(2, Duration::from_secs(10)).await;
    assert_eq!(hits.len(), 2);
    for hit in &hits {
        let r = V3Resp {
            status: 0,
            headers: hit.headers.clone(),
            body: hit.body.clone(),
        };
        assert!(
            r.verify(&pk, clock.now_unix()),
            "notification signature verifies"
        );
        let n = Notification::from_slice(&hit.body).unwrap();
        assert_eq!(n.event_type, "TRANSACTION.SUCCESS");
        assert_eq!(n.resource_type, "encrypt-resource");
        let t = n.decrypt_transaction(&key()).unwrap();
        assert_eq!(t.trade_state, "SUCCESS");
        assert_eq!(t.amount.as_ref().unwrap().total, 100);
        assert_eq!(t.transaction_id.as_deref(), Some(tid.as_str()));
        assert_eq!(t.attach.as_deref(), Some("自定义数据"));
    }
    assert!(
        h.wait_for_notifications(Duration::from_secs(5), |r| r.len() == 2)
            .await
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let recs = h.notifications();
    assert_eq!(
        recs.iter().map(|r| r.outcome).collect::<Vec<_>>(),
        vec![Outcome::Failure, Outcome::Success]
    );
    assert!(recs.iter().all(|r| r.kind == NotificationKind::Transaction));

    let r = c.call("GET", &q("v3flow000001"), None).await;
    let t: Transaction = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(t.trade_state, "SUCCESS");
    let r = c
        .call(
            "GET",
            &format!("/v3/pay/transactions/id/{tid}?mchid={DEMO_V3_MCHID}"),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.verify(&pk, T0));
    let r = c
        .call("POST", "/v3/pay/transactions/app", Some(&body))
        .await;
    assert_eq!((r.status, r.code().as_str()), (403, "OUT_TRADE_NO_USED"));
    let r = c
        .call(
            "POST",
            "/v3/pay/transactions/out-trade-no/v3flow000001/close",
            Some(&json!({"mchid": DEMO_V3_MCHID}).to_string()),
        )
        .await;
    assert_eq!(r.status, 403);
    h.shutdown().await;
}

#[tokio::test]
async fn v3_query_close_and_not_found() {
    let (h, clock) = start(1.0).await;
    let c = V3Client::demo(&h.base_url, clock.clone());
    let pk = public_key_verifier(&h);
    let r = c.call("GET", &q("nosuchorder01"), None).await;
    assert_eq!((r.status, r.code().as_str()), (404, "ORDER_NOT_EXIST"));
    let r = c
        .call(
            "GET",
            &format!("/v3/pay/transactions/id/4200000000000000000000000000?mchid={DEMO_V3_MCHID}"),
            None,
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (404, "ORDER_NOT_EXIST"));
    let r = c
        .call(
            "GET",
            "/v3/pay/transactions/out-trade-no/nosuchorder01",
            None,
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (400, "PARAM_ERROR"));
    assert_eq!(r.json()["detail"]["field"], "mchid");
    let r = c
        .call(
            "GET",
            "/v3/pay/transactions/out-trade-no/nosuchorder01?mchid=1900000001",
            None,
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (400, "PARAM_ERROR"));

    let body = app_order("closeme000001", 50, "https://example.com/notify");
    let prepay = c
        .call("POST", "/v3/pay/transactions/app", Some(&body))
        .await
        .json()["prepay_id"]
        .as_str()
        .unwrap()
        .to_string();
    let close = json!({"mchid": DEMO_V3_MCHID}).to_string();
    let r = c
        .call(
            "POST",
            "/v3/pay/transactions/out-trade-no/closeme000001/close",
            Some(&close),
        )
        .await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    assert!(r.verify(&pk, T0), "a 204 is signed over an empty body");
    let t: Transaction =
        serde_json::from_slice(&c.call("GET", &q("closeme000001"), None).await.body).unwrap();
    assert_eq!(t.trade_state, "CLOSED");
    let r = c
        .call("POST", "/v3/pay/transactions/app", Some(&body))
        .await;
    assert_eq!((r.status, r.code().as_str()), (400, "ORDER_CLOSED"));
    assert!(h.pay_prepay(&prepay).is_err());
    assert!(
        h.pay_out_trade_no(DEMO_V3_MCHID, "closeme000001").is_err(),
        "a closed order cannot be paid"
    );
    // Only WeChat's race, asked for on purpose, pays a closed order: SUCCESS, once.
    let late = h
        .pay_late_out_trade_no(DEMO_V3_MCHID, "closeme000001")
        .unwrap();
    assert_eq!(late.state, "SUCCESS");
    let t: Transaction =
        serde_json::from_slice(&c.call("GET", &q("closeme000001"), None).await.body).unwrap();
    assert_eq!(t.trade_state, "SUCCESS");
    assert!(
        h.pay_late_out_trade_no(DEMO_V3_MCHID, "closeme000001")
            .is_err()
    );
    let r = c
        .call(
            "POST",
            "/v3/pay/transactions/out-trade-no/nosuchorder01/close",
            Some(&close),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (404, "ORDER_NOT_EXIST"));
    // A prepay id lives 2 h; then the same parameters give a new one.
    let body = app_order("expire000001", 50, "https://example.com/notify");
    let p1 = c
        .call("POST", "/v3/pay/transactions/app", Some(&body))
        .await
        .json()["prepay_id"]
        .clone();
    clock.advance(7201);
    let p2 = c
        .call("POST", "/v3/pay/transactions/app", Some(&body))
        .await
        .json()["prepay_id"]
        .clone();
    assert_ne!(p1, p2);
    assert!(h.pay_prepay(p1.as_str().unwrap()).is_err());
    h.pay_prepay(p2.as_str().unwrap()).unwrap();
    h.shutdown().await;
}

#[tokio::test]
async fn v3_jsapi_and_native() {
    let (h, clock) = start(1.0).await;
    let c = V3Client::demo(&h.base_url, clock.clone());
    let mut v: serde_json::Value =
        serde_json::from_str(&app_order("jsapi0000001", 10, "https://example.com/n")).unwrap();
    let r = c
        .call("POST", "/v3/pay/transactions/jsapi", Some(&v.to_string()))
        .await;
    assert_eq!(
        (r.status, r.json()["detail"]["field"].as_str()),
        (400, Some("/payer"))
    );
    v["payer"] = json!({"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"});
    let r = c
        .call("POST", "/v3/pay/transactions/jsapi", Some(&v.to_string()))
        .await;
    assert_eq!(r.status, 200);
    assert!(r.json()["prepay_id"].is_string());
    v["out_trade_no"] = json!("native000001");
    let r = c
        .call("POST", "/v3/pay/transactions/native", Some(&v.to_string()))
        .await;
    assert_eq!(r.status, 200);
    assert!(
        r.json()["code_url"]
            .as_str()
            .unwrap()
            .starts_with("weixin://wxpay/bizpayurl?pr=")
    );
    let o = h.pay_out_trade_no(DEMO_V3_MCHID, "native000001").unwrap();
    assert_eq!(
        (o.trade_type.as_str(), o.state.as_str()),
        ("NATIVE", "SUCCESS")
    );
    let t: Transaction =
        serde_json::from_slice(&c.call("GET", &q("jsapi0000001"), None).await.body).unwrap();
    assert_eq!(t.trade_type.as_deref(), Some("JSAPI"));
    h.shutdown().await;
}

#[tokio::test]
async fn v3_authentication_rejections() {
    let (h, clock) = start(1.0).await;
    let c = V3Client::demo(&h.base_url, clock.clone());
    let http = http();
    let url = format!("{}{}", h.base_url, q("anything01"));
    // No Authorization.
    let r = http
        .get(&url)
        .header("Accept", "application/json")
        .header("User-Agent", "t")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&r.bytes().await.unwrap()).unwrap()["code"],
        "SIGN_ERROR"
    );
    // Missing Accept / User-Agent.
    let auth = c
        .signer
        .authorization("GET", &q("anything01"), T0, "N1", b"");
    for (accept, ua) in [(false, true), (true, false)] {
        let mut head = format!(
            "GET {} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nConnection: close\r\n",
            q("anything01")
        );
        if accept {
            head.push_str("Accept: application/json\r\n");
        }
        if ua {
            head.push_str("User-Agent: t\r\n");
        }
        head.push_str("\r\n");
        let (status, text) = raw_http(h.addr, &head).await;
        assert_eq!(status, 400, "{text}");
        assert!(text.contains("INVALID_REQUEST"), "{text}");
        assert!(
            text.to_ascii_lowercase().contains("wechatpay-signature:"),
            "{text}"
        );
    }
    // Signature over other bytes (the query string left out).
    let auth = c.signer.authorization(
        "GET",
        "/v3/pay/transactions/out-trade-no/anything01",
        T0,
        "N2",
        b"",
    );
    let r = http
        .get(&url)
        .header("Authorization", &auth)
        .header("Accept", "application/json")
        .header("User-Agent", "t")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Body changed after signing.
    let body = app_order("authbody0001", 1, "https://example.com/n");
    let auth = c.signer.authorization(
        "POST",
        "/v3/pay/transactions/app",
        T0,
        "N3",
        body.as_bytes(),
    );
    let r = http
        .post(format!("{}/v3/pay/transactions/app", h.base_url))
        .header("Authorization", &auth)
        .header("Accept", "application/json")
        .header("User-Agent", "t")
        .header("Content-Type", "application/json")
        .body(body.replace("\"total\":1", "\"total\":2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Wrong serial.
    let bad = wxpay_proto::v3::auth::MerchantSigner::new(
        DEMO_V3_MCHID,
        "0123456789ABCDEF",
        c.signer.key().clone(),
    );
    let auth = bad.authorization("GET", &q("anything01"), T0, "N4", b"");
    let r = http
        .get(&url)
        .header("Authorization", &auth)
        .header("Accept", "a")
        .header("User-Agent", "t")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Unknown mchid.
    let bad = wxpay_proto::v3::auth::MerchantSigner::new(
        "1900000001",
        wxpay_sandbox::config::DEMO_V3_SERIAL_NO,
        c.signer.key().clone(),
    );
    let auth = bad.authorization("GET", &q("anything01"), T0, "N5", b"");
    let r = http
        .get(&url)
        .header("Authorization", &auth)
        .header("Accept", "a")
        .header("User-Agent", "t")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Clock skew: 300 s is fine, 301 s is not.
    let skewed = Arc::new(wxpay_sandbox::ManualClock::new(T0 - 300));
    let c2 = V3Client::demo(&h.base_url, skewed.clone());
    assert_eq!(c2.call("GET", &q("anything01"), None).await.status, 404);
    skewed.set(T0 - 301);
    let r = c2.call("GET", &q("anything01"), None).await;
    assert_eq!((r.status, r.code().as_str()), (401, "SIGN_ERROR"));
    skewed.set(T0 + 301);
    assert_eq!(c2.call("GET", &q("anything01"), None).await.status, 401);
    h.shutdown().await;
}

#[tokio::test]
async fn v3_param_errors_name_the_field() {
    let (h, clock) = start(1.0).await;
    let c = V3Client::demo(&h.base_url, clock.clone());
    let base: serde_json::Value =
        serde_json::from_str(&app_order("param0000001", 100, "https://example.com/n")).unwrap();
    let check = |mutate: Box<dyn Fn(&mut serde_json::Value)>,
                 status: u16,
                 code: &'static str,
                 field: Option<&'static str>| {
        let mut v = base.clone();
        mutate(&mut v);
        let c = &c;
        async move {
            let r = c
                .call("POST", "/v3/pay/transactions/app", Some(&v.to_string()))
                .await;
            assert_eq!(
                (r.status, r.code().as_str()),
                (status, code),
                "{}",
                String::from_utf8_lossy(&r.body)
            );
            if let Some(f) = field {
                assert_eq!(r.json()["detail"]["field"], f);
            }
        }
    };
    check(
        Box::new(|v| {
            v["amount"]["total"] = json!(0);
        }),
        400,
        "PARAM_ERROR",
        Some("/amount/total"),
    )
    .await;
    check(
        Box::new(|v| {
            v["amount"]["total"] = json!(1.5);
        }),
        400,
        "PARAM_ERROR",
        Some("/amount/total"),
    )
    .await;
    check(
        Box::new(|v| {
            v["amount"]["currency"] = json!("XYZ");
        }),
        400,
        "PARAM_ERROR",
        Some("/amount/currency"),
    )
    .await;
    check(
        Box::new(|v| {
            v.as_object_mut().unwrap().remove("description");
        }),
        400,
        "PARAM_ERROR",
        Some("/description"),
    )
    .await;
    check(
        Box::new(|v| {
            v["description"] = json!("emoji 😀");
        }),
        400,
        "PARAM_ERROR",
        Some("/description"),
    )
    .await;
    check(
        Box::new(|v| {
            v["attach"] = serde_json::Value::Null;
        }),
        400,
        "PARAM_ERROR",
        Some("/attach"),
    )
    .await;
    check(
        Box::new(|v| {
            v["out_trade_no"] = json!("abc");
        }),
        400,
        "PARAM_ERROR",
        Some("/out_trade_no"),
    )
    .await;
    check(
        Box::new(|v| {
            v["out_trade_no"] = json!("has space 123");
        }),
        400,
        "PARAM_ERROR",
        Some("/out_trade_no"),
    )
    .await;
    check(
        Box::new(|v| {
            v["notify_url"] = json!("https://example.com/n?x=1");
        }),
        400,
        "PARAM_ERROR",
        Some("/notify_url"),
    )
    .await;
    check(
        Box::new(|v| {
            v["time_expire"] = json!("tomorrow");
        }),
        400,
        "PARAM_ERROR",
        Some("/time_expire"),
    )
    .await;
    check(
        Box::new(|v| {
            v["scene_info"] = json!({});
        }),
        400,
        "PARAM_ERROR",
        Some("/scene_info/payer_client_ip"),
    )
    .await;
    check(
        Box::new(|v| {
            v["description"] = json!("x".repeat(128));
        }),
        400,
        "PARAM_ERROR",
        Some("/description"),
    )
    .await;
    check(
        Box::new(|v| {
            v["appid"] = json!("wx0000000000000000");
        }),
        400,
        "APPID_MCHID_NOT_MATCH",
        None,
    )
    .await;
    check(
        Box::new(|v| {
            v["mchid"] = json!("1900000001");
        }),
        400,
        "PARAM_ERROR",
        Some("/mchid"),
    )
    .await;
    let r = c
        .call("POST", "/v3/pay/transactions/app", Some("{not json"))
        .await;
    assert_eq!((r.status, r.code().as_str()), (400, "PARAM_ERROR"));
    // A valid time_expire (RFC 3339, +08:00) is accepted.
    let mut v = base.clone();
    v["time_expire"] = json!(wxpay_proto::v3::model::format_rfc3339_beijing(T0 + 3600));
    assert_eq!(
        c.call("POST", "/v3/pay/transactions/app", Some(&v.to_string()))
            .await
            .status,
        200
    );
    h.shutdown().await;
}

#[tokio::test]
async fn v3_refunds_and_refund_notifications() {
    let (h, clock) = start(0.001).await;
    let c = V3Client::demo(&h.base_url, clock.clone());
    let pk = public_key_verifier(&h);
    let rx = receiver(vec![], reply(200, "")).await;
    let body = app_order("refund000001", 300, &rx.url);
    let prepay = c
        .call("POST", "/v3/pay/transactions/app", Some(&body))
        .await
        .json()["prepay_id"]
        .as_str()
        .unwrap()
        .to_string();
    let refund = |no: &str, amount: i64, total: i64| {
        json!({"out_trade_no": "refund000001", "out_refund_no": no, "reason": "test",
               "notify_url": rx.url, "amount": {"refund": amount, "total": total, "currency": "CNY"}}).to_string()
    };
    let r = c
        .call(
            "POST",
            "/v3/refund/domestic/refunds",
            Some(&refund("R1", 100, 300)),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (404, "RESOURCE_NOT_EXISTS"),
        "unpaid orders can't be refunded"
    );
    h.pay_prepay(&prepay).unwrap();
    rx.wait_hits(1, Duration::from_secs(5)).await;
    let r = c
        .call(
            "POST",
            "/v3/refund/domestic/refunds",
            Some(&refund("R1", 100, 300)),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.verify(&pk, T0));
    assert_eq!(r.json()["status"], "PROCESSING");
    assert_eq!(r.json()["amount"]["refund"], 100);
    // Retrying with the same out_refund_no returns the same refund.
    let again = c
        .call(
            "POST",
            "/v3/refund/domestic/refunds",
            Some(&refund("R1", 100, 300)),
        )
        .await;
    assert_eq!(again.json()["refund_id"], r.json()["refund_id"]);
    let r2 = c
        .call(
            "POST",
            "/v3/refund/domestic/refunds",
            Some(&refund("R1", 101, 300)),
        )
        .await;
    assert_eq!((r2.status, r2.code().as_str()), (400, "INVALID_REQUEST"));
    // Refund notification REFUND.SUCCESS after the (scaled) delay.
    let hits = rx.wait_hits(2, Duration::from_secs(10)).await;
    assert_eq!(hits.len(), 2);
    let n = Notification::from_slice(&hits[1].body).unwrap();
    assert_eq!(n.event_type, "REFUND.SUCCESS");
    let rn = n.decrypt_refund(&key()).unwrap();
    assert_eq!(
        (
            rn.out_refund_no.as_str(),
            rn.refund_status.as_str(),
            rn.amount.refund
        ),
        ("R1", "SUCCESS", 100)
    );
    let rv = V3Resp {
        status: 0,
        headers: hits[1].headers.clone(),
        body: hits[1].body.clone(),
    };
    assert!(rv.verify(&pk, T0));
    let r = c.call("GET", "/v3/refund/domestic/refunds/R1", None).await;
    assert_eq!(r.json()["status"], "SUCCESS");
    let t: Transaction =
        serde_json::from_slice(&c.call("GET", &q("refund000001"), None).await.body).unwrap();
    assert_eq!(t.trade_state, "REFUND");
    // Rules: 60 s between refunds, total must match, no over-refund.
    let r = c
        .call(
            "POST",
            "/v3/refund/domestic/refunds",
            Some(&refund("R2", 100, 300)),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (429, "FREQUENCY_LIMITED"));
    clock.advance(60);
    let r = c
        .call(
            "POST",
            "/v3/refund/domestic/refunds",
            Some(&refund("R2", 100, 299)),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["detail"]["field"].as_str()),
        (400, Some("/amount/total"))
    );
    let r = c
        .call(
            "POST",
            "/v3/refund/domestic/refunds",
            Some(&refund("R2", 201, 300)),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (400, "INVALID_REQUEST"));
    // Outcomes by rule: ABNORMAL, then CLOSED by hand.
    h.set_refund_rule(
        None,
        RefundRule {
            outcome: "ABNORMAL".into(),
            delay_secs: 1.0,
        },
    );
    let r = c
        .call(
            "POST",
            "/v3/refund/domestic/refunds",
            Some(&refund("R2", 50, 300)),
        )
        .await;
    assert_eq!(r.status, 200);
    let hits = rx.wait_hits(3, Duration::from_secs(10)).await;
    assert_eq!(
        Notification::from_slice(&hits[2].body).unwrap().event_type,
        "REFUND.ABNORMAL"
    );
    let v = h.complete_refund(None, "R2", "CLOSED").unwrap();
    assert_eq!(v.status, "CLOSED");
    let hits = rx.wait_hits(4, Duration::from_secs(10)).await;
    assert_eq!(
        Notification::from_slice(&hits[3].body).unwrap().event_type,
        "REFUND.CLOSED"
    );
    assert!(
        h.complete_refund(None, "R2", "SUCCESS").is_err(),
        "CLOSED is final"
    );
    // A closed refund frees its amount.
    clock.advance(60);
    h.set_refund_rule(
        Some(DEMO_V3_MCHID),
        RefundRule {
            outcome: "MANUAL".into(),
            delay_secs: 0.0,
        },
    );
    let r = c
        .call(
            "POST",
            "/v3/refund/domestic/refunds",
            Some(&refund("R3", 200, 300)),
        )
        .await;
    assert_eq!(r.status, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        c.call("GET", "/v3/refund/domestic/refunds/R3", None)
            .await
            .json()["status"],
        "PROCESSING"
    );
    // By transaction id too.
    let tid = h.order("refund000001").unwrap().transaction_id.unwrap();
    clock.advance(60);
    let by_tid = json!({"transaction_id": tid, "out_refund_no": "R4", "amount": {"refund": 1, "total": 300, "currency": "CNY"}}).to_string();
    let r = c
        .call("POST", "/v3/refund/domestic/refunds", Some(&by_tid))
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "INVALID_REQUEST"),
        "100 + 200 of 300 are taken"
    );
    h.complete_refund(Some(DEMO_V3_MCHID), "R3", "CLOSED")
        .unwrap();
    let r = c
        .call("POST", "/v3/refund/domestic/refunds", Some(&by_tid))
        .await;
    assert_eq!(
        (r.status, r.json()["out_trade_no"].as_str()),
        (200, Some("refund000001"))
    );
    let r = c
        .call("GET", "/v3/refund/domestic/refunds/NOPE", None)
        .await;
    assert_eq!((r.status, r.code().as_str()), (404, "RESOURCE_NOT_EXISTS"));
    let o = h.order("refund000001").unwrap();
    assert_eq!(o.refunds.len(), 4);
    let kinds: Vec<_> = h.notifications().iter().map(|r| r.kind).collect();
    assert!(kinds.contains(&NotificationKind::Refund));
    let r = c.call("POST", "/v3/refund/domestic/refunds", Some(&json!({"out_refund_no": "R9", "amount": {"refund": 1, "total": 300, "currency": "CNY"}}).to_string())).await;
    assert_eq!(r.status, 400);
    h.shutdown().await;
}

async fn cert_verifier(
    c: &V3Client,
) -> (
    CertificateVerifier,
    wxpay_proto::v3::model::CertificatesResponse,
    V3Resp,
) {
    let r = c.call("GET", "/v3/certificates", None).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let list: CertificatesResponse = serde_json::from_slice(&r.body).unwrap();
    let certs: Vec<Certificate> = list
        .data
        .iter()
        .map(|e| e.decrypt_certificate(&key()).unwrap())
        .collect();
    (CertificateVerifier::new(certs), list, r)
}

#[tokio::test]
async fn v3_platform_certificate_mode_with_rotation() {
    let mut cfg = SandboxConfig::demo();
    cfg.v3_merchants[0].verify_mode = VerifyMode::PlatformCertificate;
    let (h, clock) = start_manual(cfg, 0.001).await;
    let c = V3Client::demo(&h.base_url, clock.clone());
    let (v1, list, r) = cert_verifier(&c).await;
    assert_eq!(list.data.len(), 1);
    assert!(
        r.verify(&v1, T0),
        "the certificate list is signed by a certificate it contains"
    );
    let serial1 = list.data[0].serial_no.clone();
    assert_eq!(serial1.len(), 40);
    assert_eq!(r.header("wechatpay-serial"), Some(serial1.as_str()));
    assert_eq!(h.platform_certificates(DEMO_V3_MCHID)[0].0, serial1);

    let rx = receiver(vec![], reply(204, "")).await;
    let body = app_order("certmode0001", 10, &rx.url);
    let r = c
        .call("POST", "/v3/pay/transactions/app", Some(&body))
        .await;
    assert!(r.verify(&v1, T0));
    // Public-key-signed answers on request (migration), and the public key still verifies them.
    let r = c
        .call_with(
            "GET",
            &q("certmode0001"),
            None,
            &[("Wechatpay-Serial", DEMO_V3_PUBLIC_KEY_ID)],
        )
        .await;
    assert_eq!(r.header("wechatpay-serial"), Some(DEMO_V3_PUBLIC_KEY_ID));
    assert!(r.verify(&public_key_verifier(&h), T0));

    // Rotation: a new certificate signs; the old one is still listed.
    let serials = h.rotate_certificates(DEMO_V3_MCHID).unwrap();
    assert_eq!(serials.len(), 2);
    assert_eq!(serials[0], serial1);
    let serial2 = serials[1].clone();
    let r = c.call("GET", &q("certmode0001"), None).await;
    assert_eq!(r.header("wechatpay-serial"), Some(serial2.as_str()));
    assert!(
        !r.verify(&v1, T0),
        "unknown serial for a client with only the old certificate"
    );
    let (v2, list, lr) = cert_verifier(&c).await;
    assert_eq!(list.data.len(), 2);
    assert!(lr.verify(&v2, T0));
    assert!(r.verify(&v2, T0));
    // Notifications are signed with the new certificate.
    let prepay = c
        .call("POST", "/v3/pay/transactions/app", Some(&body))
        .await
        .json()["prepay_id"]
        .as_str()
        .unwrap()
        .to_string();
    h.pay_prepay(&prepay).unwrap();
    let hits = rx.wait_hits(1, Duration::from_secs(5)).await;
    let n = V3Resp {
        status: 0,
        headers: hits[0].headers.clone(),
        body: hits[0].body.clone(),
    };
    assert_eq!(n.header("wechatpay-serial"), Some(serial2.as_str()));
    assert!(n.verify(&v2, T0));
    // A second rotation retires the first certificate.
    let serials = h.rotate_certificates(DEMO_V3_MCHID).unwrap();
    assert!(!serials.contains(&serial1) && serials.contains(&serial2));
    h.shutdown().await;
}

#[tokio::test]
async fn v3_certificates_absent_in_public_key_mode() {
    let (h, clock) = start(1.0).await;
    let c = V3Client::demo(&h.base_url, clock.clone());
    let r = c.call("GET", "/v3/certificates", None).await;
    assert_eq!((r.status, r.code().as_str()), (404, "RESOURCE_NOT_EXISTS"));
    assert!(h.rotate_certificates(DEMO_V3_MCHID).is_err());
    h.shutdown().await;
}

#[tokio::test]
async fn v3_trade_bill_download() {
    let (h, clock) = start(0.001).await;
    let c = V3Client::demo(&h.base_url, clock.clone());
    let pk = public_key_verifier(&h);
    let rx = receiver(vec![], reply(204, "")).await;
    for (no, amount) in [("bill00000001", 1234), ("bill00000002", 1)] {
        let body = app_order(no, amount, &rx.url);
        let p = c
            .call("POST", "/v3/pay/transactions/app", Some(&body))
            .await
            .json()["prepay_id"]
            .as_str()
            .unwrap()
            .to_string();
        h.pay_prepay(&p).unwrap();
    }
    let day = wxpay_proto::v3::model::format_rfc3339_beijing(T0)[..10].to_string();
    let r = c
        .call(
            "GET",
            &format!("/v3/bill/tradebill?bill_date={day}&bill_type=ALL&tar_type=GZIP"),
            None,
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (400, "STATEMENT_CREATING"));
    clock.advance(86_400);
    let r = c
        .call(
            "GET",
            &format!("/v3/bill/tradebill?bill_date={day}&bill_type=ALL&tar_type=GZIP"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.verify(&pk, T0 + 86_400));
    let v = r.json();
    assert_eq!(v["hash_type"], "SHA1");
    let url = v["download_url"].as_str().unwrap();
    let path = url.strip_prefix(&h.base_url).unwrap();
    let f = c.call("GET", path, None).await;
    assert_eq!(f.status, 200);
    assert!(
        f.header("wechatpay-signature").is_none(),
        "the bill file is not signed"
    );
    let mut csv = String::new();
    flate2::read::GzDecoder::new(&f.body[..])
        .read_to_string(&mut csv)
        .unwrap();
    use sha1::Digest;
    assert_eq!(
        hex::encode(sha1::Sha1::digest(csv.as_bytes())),
        v["hash_value"].as_str().unwrap()
    );
    assert!(csv.contains("`bill00000001"), "{csv}");
    assert!(csv.contains("`12.34"), "{csv}");
    let bill = wxpay_proto::bill::parse_trade_bill(&csv).unwrap();
    assert_eq!(bill.rows.len(), 2);
    assert_eq!(bill.summary.total_count, 2);
    assert_eq!(bill.summary.settlement_total.get(), 1235);
    assert_eq!(bill.summary.order_total.get(), 1235);
    // Without GZIP the plain CSV comes back.
    let r = c
        .call("GET", &format!("/v3/bill/tradebill?bill_date={day}"), None)
        .await;
    let f = c
        .call(
            "GET",
            r.json()["download_url"]
                .as_str()
                .unwrap()
                .strip_prefix(&h.base_url)
                .unwrap(),
            None,
        )
        .await;
    assert_eq!(String::from_utf8(f.body).unwrap(), csv);
    // Other days and bad parameters.
    let prev = wxpay_proto::v3::model::format_rfc3339_beijing(T0 - 86_400)[..10].to_string();
    let r = c
        .call("GET", &format!("/v3/bill/tradebill?bill_date={prev}"), None)
        .await;
    assert_eq!((r.status, r.code().as_str()), (400, "NO_STATEMENT_EXIST"));
    let r = c
        .call("GET", "/v3/bill/tradebill?bill_date=2023/11/15", None)
        .await;
    assert_eq!((r.status, r.code().as_str()), (400, "PARAM_ERROR"));
    let r = c
        .call("GET", "/v3/bill/tradebill?bill_date=2099-01-01", None)
        .await;
    assert_eq!((r.status, r.code().as_str()), (400, "INVALID_REQUEST"));
    // The download link expires.
    clock.advance(301);
    let f = c.call("GET", path, None).await;
    assert_eq!(f.status, 400);
    h.shutdown().await;
}

#[tokio::test]
async fn public_key_pem_is_served_and_verifies() {
    let (h, _) = start(1.0).await;
    let (s, v) = get_json(&format!(
        "{}/sandbox/api/merchants/{DEMO_V3_MCHID}/wechatpay-public-key",
        h.base_url
    ))
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["id"], DEMO_V3_PUBLIC_KEY_ID);
    let (pem, id) = h.wechatpay_public_key(DEMO_V3_MCHID);
    assert_eq!(
        (v["pem"].as_str().unwrap(), v["id"].as_str().unwrap()),
        (pem.as_str(), id.as_str())
    );
    assert!(
        PublicKeyVerifier::new(
            id,
            wxpay_proto::v3::rsa::RsaPublicKey::from_spki_pem(&pem).unwrap()
        )
        .matches(DEMO_V3_PUBLIC_KEY_ID)
    );
    let (s, _) = get_json(&format!(
        "{}/sandbox/api/merchants/1/wechatpay-public-key",
        h.base_url
    ))
    .await;
    assert_eq!(s, 404);
    h.shutdown().await;
}

#[tokio::test]
async fn v3_abnormal_refund_can_be_applied_again() {
    let (h, clock) = start(0.001).await;
    let c = V3Client::demo(&h.base_url, clock.clone());
    let rx = receiver(vec![], reply(200, "")).await;
    let p = c
        .call(
            "POST",
            "/v3/pay/transactions/app",
            Some(&app_order("abn000000001", 100, &rx.url)),
        )
        .await
        .json()["prepay_id"]
        .as_str()
        .unwrap()
        .to_string();
    h.pay_prepay(&p).unwrap();
    h.set_refund_rule(
        None,
        RefundRule {
            outcome: "ABNORMAL".into(),
            delay_secs: 0.0,
        },
    );
    let refund =
        json!({"out_trade_no": "abn000000001", "out_refund_no": "AB1", "notify_url": rx.url,
                        "amount": {"refund": 100, "total": 100, "currency": "CNY"}})
        .to_string();
    let r = c
        .call("POST", "/v3/refund/domestic/refunds", Some(&refund))
        .await;
    let refund_id = r.json()["refund_id"].as_str().unwrap().to_string();
    let path = format!("/v3/refund/domestic/refunds/{refund_id}/apply-abnormal-refund");
    let apply = json!({"out_refund_no": "AB1", "type": "USER_BANK_CARD"}).to_string();
    // Still PROCESSING for a moment? Wait until ABNORMAL.
    for _ in 0..200 {
        if c.call("GET", "/v3/refund/domestic/refunds/AB1", None)
            .await
            .json()["status"]
            == "ABNORMAL"
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let bad = c
        .call(
            "POST",
            &path,
            Some(&json!({"out_refund_no": "AB1", "type": "CASH"}).to_string()),
        )
        .await;
    assert_eq!(bad.json()["detail"]["field"], "/type");
    let r = c.call("POST", &path, Some(&apply)).await;
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (200, Some("PROCESSING")),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let hits = rx.wait_hits(3, Duration::from_secs(5)).await;
    let events: Vec<String> = hits
        .iter()
        .map(|x| Notification::from_slice(&x.body).unwrap().event_type)
        .collect();
    assert_eq!(
        events,
        vec!["TRANSACTION.SUCCESS", "REFUND.ABNORMAL", "REFUND.SUCCESS"]
    );
    let again = c.call("POST", &path, Some(&apply)).await;
    assert_eq!(
        (again.status, again.code().as_str()),
        (400, "INVALID_REQUEST")
    );
    let r = c
        .call(
            "POST",
            "/v3/refund/domestic/refunds/999/apply-abnormal-refund",
            Some(&apply),
        )
        .await;
    assert_eq!(r.status, 404);
    h.shutdown().await;
}

#[tokio::test]
async fn v3_time_expire_ends_payability() {
    let (h, clock) = start(1.0).await;
    let c = V3Client::demo(&h.base_url, clock.clone());
    let mut v: serde_json::Value =
        serde_json::from_str(&app_order("v3expire0001", 1, "https://e.com/n")).unwrap();
    v["time_expire"] = json!(wxpay_proto::v3::model::format_rfc3339_beijing(T0 + 120));
    let r = c
        .call("POST", "/v3/pay/transactions/app", Some(&v.to_string()))
        .await;
    let prepay = r.json()["prepay_id"].as_str().unwrap().to_string();
    clock.advance(121);
    assert!(h.pay_prepay(&prepay).is_err());
    v["time_expire"] = json!(wxpay_proto::v3::model::format_rfc3339_beijing(
        T0 + 121 + 30
    ));
    v["out_trade_no"] = json!("v3expire0002");
    let r = c
        .call("POST", "/v3/pay/transactions/app", Some(&v.to_string()))
        .await;
    assert_eq!(
        r.json()["detail"]["field"],
        "/time_expire",
        "less than a minute ahead"
    );
    h.shutdown().await;
}
