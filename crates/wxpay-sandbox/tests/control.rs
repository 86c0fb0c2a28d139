//! The control API and the cashier page over HTTP.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use wxpay_sandbox::config::{DEMO_LEGACY_APPID, DEMO_LEGACY_PARTNER, DEMO_V3_MCHID};
use wxpay_sandbox::{DeliveryRecord, OrderView, SandboxConfig, VerifyMode};

#[tokio::test]
async fn pay_cancel_and_orders_over_http() {
    let (h, clock) = start(0.001).await;
    let b = h.base_url.clone();
    let rx = receiver(vec![], reply(200, "success")).await;
    let tok = legacy_token(&b).await;
    let prepay = genprepay(&b, &tok, &package("ctl-0001", 1999, &rx.url), T0).await["prepayid"]
        .as_str()
        .unwrap()
        .to_string();

    let (s, v) = post_json(
        &format!("{b}/sandbox/api/cancel"),
        &json!({"prepay_id": prepay}).to_string(),
    )
    .await;
    assert_eq!(s, 200);
    let o: OrderView = serde_json::from_value(v).unwrap();
    assert!(o.user_cancelled);
    assert_eq!(o.state, "NOTPAY");

    let (s, v) = post_json(
        &format!("{b}/sandbox/api/pay"),
        &json!({"out_trade_no": "ctl-0001", "partner": DEMO_LEGACY_PARTNER}).to_string(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "SUCCESS");
    let tid = v["transaction_id"].as_str().unwrap().to_string();
    let (s, v) = post_json(
        &format!("{b}/sandbox/api/pay"),
        &json!({"prepay_id": prepay}).to_string(),
    )
    .await;
    assert_eq!((s, v["error"].as_str().is_some()), (409, true));
    let (s, _) = post_json(
        &format!("{b}/sandbox/api/pay"),
        &json!({"prepay_id": "nope"}).to_string(),
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = post_json(
        &format!("{b}/sandbox/api/pay"),
        &json!({"out_trade_no": "x"}).to_string(),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = post_json(&format!("{b}/sandbox/api/pay"), "not json").await;
    assert_eq!(s, 400);

    for id in ["ctl-0001", tid.as_str(), prepay.as_str()] {
        let (s, v) = get_json(&format!("{b}/sandbox/api/orders/{id}")).await;
        assert_eq!(s, 200);
        assert_eq!(
            (v["amount"].as_i64(), v["state"].as_str()),
            (Some(1999), Some("SUCCESS"))
        );
        assert_eq!(v["generation"], "legacy");
    }
    let (s, _) = get_json(&format!(
        "{b}/sandbox/api/orders/ctl-0001?merchant={DEMO_LEGACY_PARTNER}"
    ))
    .await;
    assert_eq!(s, 200);
    let (s, _) = get_json(&format!(
        "{b}/sandbox/api/orders/ctl-0001?merchant={DEMO_V3_MCHID}"
    ))
    .await;
    assert_eq!(s, 404);
    let (s, _) = get_json(&format!("{b}/sandbox/api/orders/unknown")).await;
    assert_eq!(s, 404);

    // v3 order with refunds in the view; refunds wait for the control API.
    h.set_refund_rule(
        None,
        wxpay_sandbox::RefundRule {
            outcome: "MANUAL".into(),
            delay_secs: 0.0,
        },
    );
    let c = V3Client::demo(&b, clock.clone());
    let p = c
        .call(
            "POST",
            "/v3/pay/transactions/app",
            Some(&app_order("ctlv3000001", 500, &rx.url)),
        )
        .await
        .json()["prepay_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, v) = post_json(
        &format!("{b}/sandbox/api/pay"),
        &json!({"out_trade_no": "ctlv3000001", "mchid": DEMO_V3_MCHID}).to_string(),
    )
    .await;
    assert_eq!((s, v["prepay_id"].as_str()), (200, Some(p.as_str())));
    let r = c.call("POST", "/v3/refund/domestic/refunds", Some(&json!({"out_trade_no": "ctlv3000001", "out_refund_no": "CR1", "amount": {"refund": 100, "total": 500, "currency": "CNY"}}).to_string())).await;
    assert_eq!(r.status, 200);
    let (_, v) = get_json(&format!("{b}/sandbox/api/orders/ctlv3000001")).await;
    assert_eq!(v["state"], "REFUND");
    assert_eq!(v["refunds"][0]["out_refund_no"], "CR1");
    assert_eq!(v["refunds"][0]["amount"], 100);
    let (s, v) = post_json(
        &format!("{b}/sandbox/api/refunds/CR1/complete"),
        &json!({"status": "SUCCESS"}).to_string(),
    )
    .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("SUCCESS")));

    // Notifications with filters.
    assert!(
        h.wait_for_notifications(Duration::from_secs(5), |r| r.len() >= 2)
            .await
    );
    let (s, v) = get_json(&format!("{b}/sandbox/api/notifications")).await;
    assert_eq!(s, 200);
    let all: Vec<DeliveryRecord> = serde_json::from_value(v).unwrap();
    assert!(all.len() >= 2);
    let (_, v) = get_json(&format!("{b}/sandbox/api/notifications?merchant={DEMO_LEGACY_PARTNER}&kind=legacy_payment&outcome=success")).await;
    let legacy: Vec<DeliveryRecord> = serde_json::from_value(v).unwrap();
    assert_eq!(legacy.len(), 1);
    assert_eq!(legacy[0].out_trade_no, "ctl-0001");
    assert!(legacy[0].url.starts_with(&rx.url));
    let (_, v) = get_json(&format!(
        "{b}/sandbox/api/notifications?out_trade_no=nothing"
    ))
    .await;
    assert_eq!(v, json!([]));
    h.shutdown().await;
}

#[tokio::test]
async fn merchants_tokens_and_certificates_over_http() {
    let mut cfg = SandboxConfig::demo();
    let mut second = cfg.v3_merchants[0].clone();
    second.mchid = "1900009999".into();
    second.verify_mode = VerifyMode::PlatformCertificate;
    second.wechatpay_public_key_id = None;
    cfg.v3_merchants.push(second);
    let (h, _) = start_manual(cfg, 1.0).await;
    let b = h.base_url.clone();
    let (s, v) = get_json(&format!("{b}/sandbox/api/merchants")).await;
    assert_eq!(s, 200);
    assert_eq!(v["legacy"][0]["appid"], DEMO_LEGACY_APPID);
    assert_eq!(v["v3"][1]["verify_mode"], "platform_certificate");
    assert!(
        v["v3"][1]["wechatpay_public_key_id"]
            .as_str()
            .unwrap()
            .starts_with("PUB_KEY_ID_")
    );
    assert!(
        !v.to_string().contains("a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb"),
        "no secrets in the merchant list"
    );

    let (s, _) = post_json(
        &format!("{b}/sandbox/api/merchants/{DEMO_V3_MCHID}/rotate-certificates"),
        "",
    )
    .await;
    assert_eq!(
        s, 409,
        "public-key merchants have no certificates to rotate"
    );
    let (s, v) = post_json(
        &format!("{b}/sandbox/api/merchants/1900009999/rotate-certificates"),
        "",
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["serials"].as_array().unwrap().len(), 2);
    assert_eq!(v["signing_serial"], v["serials"][1]);
    let (s, v) = get_json(&format!(
        "{b}/sandbox/api/merchants/1900009999/certificates"
    ))
    .await;
    assert_eq!(s, 200);
    assert!(
        v[1]["pem"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    let cert = wxpay_proto::v3::rsa::Certificate::from_pem(v[1]["pem"].as_str().unwrap()).unwrap();
    assert_eq!(cert.serial_no, v[1]["serial_no"].as_str().unwrap());
    let (s, _) = post_json(
        &format!("{b}/sandbox/api/merchants/1/rotate-certificates"),
        "",
    )
    .await;
    assert_eq!(s, 404);

    legacy_token(&b).await;
    let (s, v) = get_json(&format!("{b}/sandbox/api/tokens/{DEMO_LEGACY_APPID}")).await;
    assert_eq!((s, v["fetch_count"].as_u64()), (200, Some(1)));
    let (s, _) = post_json(
        &format!("{b}/sandbox/api/token/invalidate"),
        &json!({"appid": "wx_unknown"}).to_string(),
    )
    .await;
    assert_eq!(s, 404);
    let r = http()
        .put(format!("{b}/sandbox/api/refund-rule"))
        .body(json!({"merchant": DEMO_V3_MCHID, "outcome": "MANUAL", "delay_secs": 1}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (s, _) = post_json(
        &format!("{b}/sandbox/api/refund-rule"),
        &json!({"outcome": "MAYBE"}).to_string(),
    )
    .await;
    assert_eq!(s, 405, "refund-rule is PUT");
    let r = http()
        .put(format!("{b}/sandbox/api/refund-rule"))
        .body(json!({"outcome": "MAYBE"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    h.shutdown().await;
}

#[tokio::test]
async fn cashier_page_pays_and_cancels() {
    let (h, _) = start(0.001).await;
    let b = h.base_url.clone();
    let rx = receiver(vec![], reply(200, "success")).await;
    let tok = legacy_token(&b).await;
    let prepay = genprepay(&b, &tok, &package("cashier-01", 1234, &rx.url), T0).await["prepayid"]
        .as_str()
        .unwrap()
        .to_string();
    let r = http()
        .get(format!("{b}/sandbox/cashier/{prepay}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let html = r.text().await.unwrap();
    for needle in [
        "¥12.34",
        "支付测试",
        "Sandbox Demo Shop (legacy)",
        "cashier-01",
        ">Pay<",
        ">Cancel<",
        &format!("action=\"/sandbox/cashier/{prepay}/pay\""),
    ] {
        assert!(html.contains(needle), "missing {needle}: {html}");
    }
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "self-contained"
    );
    let html = http()
        .post(format!("{b}/sandbox/cashier/{prepay}/cancel"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("cancelled"));
    assert_eq!(h.order(&prepay).unwrap().state, "NOTPAY");
    let html = http()
        .post(format!("{b}/sandbox/cashier/{prepay}/pay"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("Payment successful"));
    assert!(html.contains("SUCCESS"));
    assert!(!html.contains(">Pay<"), "no Pay button once paid");
    assert_eq!(rx.wait_hits(1, Duration::from_secs(5)).await.len(), 1);
    let html = http()
        .post(format!("{b}/sandbox/cashier/{prepay}/pay"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("already paid"), "{html}");
    let r = http()
        .get(format!("{b}/sandbox/cashier/<script>"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert!(!r.text().await.unwrap().contains("<script>"));
    let index = http()
        .get(format!("{b}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(index.contains("cashier-01"));
    h.shutdown().await;
}

#[tokio::test]
async fn router_can_be_mounted_without_spawn() {
    let sb = wxpay_sandbox::Sandbox::new(SandboxConfig::demo(), Default::default()).unwrap();
    let app = axum::Router::new().nest_service("/wechat", sb.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let (s, v) = get_json(&format!("http://{addr}/wechat/sandbox/api/merchants")).await;
    assert_eq!(s, 200);
    assert_eq!(v["v3"][0]["mchid"], DEMO_V3_MCHID);
}

#[tokio::test]
async fn config_from_toml_file_runs() {
    let dir = std::env::temp_dir().join(format!("wxpay-sandbox-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = wxpay_proto::v3::rsa::RsaPrivateKey::from_pkcs8_pem(
        wxpay_sandbox::config::DEMO_MERCHANT_PRIVATE_KEY_PEM,
    )
    .unwrap();
    std::fs::write(dir.join("merchant_pub.pem"), key.public_key().to_spki_pem()).unwrap();
    let wk = wxpay_proto::v3::rsa::RsaPrivateKey::generate_2048().unwrap();
    use wxpay_proto::ExposeSecret;
    std::fs::write(
        dir.join("wechatpay_key.pem"),
        wk.to_pkcs8_pem().expose_secret(),
    )
    .unwrap();
    std::fs::write(
        dir.join("sandbox.toml"),
        r#"
[[legacy_merchant]]
appid = "wxd930ea5d5a258f4f"
app_secret = "s3cret"
app_key = "L8LrMqqeGRxST5reouB0K66CaYAWpqhAVsq7ggKkxHCOastWksvuX1uvmvQclxaHoYd3ElNBrNO2DHnnzgfVG9Qs473M3DTOZug5er46FhuGofumV8H2FVR9qkjSlC5K"
partner = "1900000109"
partner_key = "8934e7d15453e97507ef794cf7b0519d"
token_daily_quota = 200

[[v3_merchant]]
mchid = "1900007291"
appids = ["wxd678efh567hg6787"]
merchant_serial_no = "408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB"
merchant_public_key_file = "merchant_pub.pem"
apiv3_key = "a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb"
verify_mode = "public_key"
wechatpay_private_key_file = "wechatpay_key.pem"
wechatpay_public_key_id = "PUB_KEY_ID_0114232134912410000000000000"
"#,
    )
    .unwrap();
    let cfg = SandboxConfig::from_toml_file(&dir.join("sandbox.toml")).unwrap();
    let (h, clock) = start_manual(cfg, 1.0).await;
    let (pem, _) = h.wechatpay_public_key(DEMO_V3_MCHID);
    assert_eq!(
        pem,
        wk.public_key().to_spki_pem(),
        "the configured WeChat Pay key is used"
    );
    let c = V3Client::demo(&h.base_url, clock.clone());
    let r = c
        .call(
            "POST",
            "/v3/pay/transactions/app",
            Some(&app_order("toml00000001", 1, "https://e.com/n")),
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.verify(&public_key_verifier(&h), T0));
    let (_, v) = get_json(&format!(
        "{}/cgi-bin/token?grant_type=client_credential&appid={DEMO_LEGACY_APPID}&secret=s3cret",
        h.base_url
    ))
    .await;
    assert!(v["access_token"].is_string());
    assert!(h.banner().contains(&h.base_url));
    assert!(
        !h.banner().contains("s3cret"),
        "non-demo secrets are not printed"
    );
    let (demo, _) = start(1.0).await;
    assert!(
        demo.banner()
            .contains(wxpay_sandbox::DEMO_LEGACY_APP_SECRET)
    );
    assert!(demo.banner().contains("a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb"));
    demo.shutdown().await;
    h.shutdown().await;
}

#[tokio::test]
async fn pay_requests_are_verified_like_the_wechat_app() {
    use wxpay_sandbox::AppPayRequest;
    use wxpay_sandbox::config::{DEMO_LEGACY_APP_KEY, DEMO_V3_APPID};
    let (h, clock) = start(0.001).await;
    let b = h.base_url.clone();
    let rx = receiver(vec![], reply(200, "success")).await;
    // Legacy PayReq (A.5).
    let tok = legacy_token(&b).await;
    let prepay = genprepay(&b, &tok, &package("payreq-01", 1, &rx.url), T0).await["prepayid"]
        .as_str()
        .unwrap()
        .to_string();
    let good = wxpay_proto::legacy::PayReq::new(
        DEMO_LEGACY_APPID,
        DEMO_LEGACY_PARTNER,
        &prepay,
        "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
        T0,
        &secret(DEMO_LEGACY_APP_KEY),
    );
    let as_req = |v: serde_json::Value| serde_json::from_value::<AppPayRequest>(v).unwrap();
    let good_v = serde_json::to_value(&good).unwrap();
    let mut tampered = good_v.clone();
    tampered["noncestr"] = json!("other");
    assert!(h.pay_with_request(&as_req(tampered)).is_err());
    let mut millis = good_v.clone();
    millis["timestamp"] = json!(format!("{T0}000"));
    assert!(h.pay_with_request(&as_req(millis)).is_err());
    let mut pkg = good_v.clone();
    pkg["package"] = json!(format!("prepay_id={prepay}"));
    assert!(h.pay_with_request(&as_req(pkg)).is_err());
    assert_eq!(h.order(&prepay).unwrap().state, "NOTPAY");
    // OpenSDK field names work over HTTP.
    let sdk = json!({"appId": good.appid, "partnerId": good.partnerid, "prepayId": good.prepayid,
                     "packageValue": good.package, "nonceStr": good.noncestr, "timeStamp": good.timestamp, "sign": good.sign});
    let (s, v) = post_json(
        &format!("{b}/sandbox/api/pay"),
        &json!({"pay_req": sdk}).to_string(),
    )
    .await;
    assert_eq!((s, v["state"].as_str()), (200, Some("SUCCESS")), "{v}");

    // v3 APP pay params (B.6), signed with the merchant key.
    let c = V3Client::demo(&b, clock.clone());
    let p = c
        .call(
            "POST",
            "/v3/pay/transactions/app",
            Some(&app_order("payreqv3001", 1, &rx.url)),
        )
        .await
        .json()["prepay_id"]
        .as_str()
        .unwrap()
        .to_string();
    let params = c
        .signer
        .app_pay_params(DEMO_V3_APPID, &p, T0, "5K8264ILTKCH16CQ2502SI8ZNMTM67VS");
    let mut bad = serde_json::to_value(&params).unwrap();
    bad["sign"] = json!(
        c.signer
            .app_pay_sign(DEMO_V3_APPID, T0 + 1, &params.noncestr, &p)
    );
    let (s, v) = post_json(
        &format!("{b}/sandbox/api/pay"),
        &json!({"pay_req": bad}).to_string(),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("errCode -1"));
    let (s, v) = post_json(
        &format!("{b}/sandbox/api/pay"),
        &json!({"pay_req": params}).to_string(),
    )
    .await;
    assert_eq!((s, v["state"].as_str()), (200, Some("SUCCESS")), "{v}");
    h.shutdown().await;
}
