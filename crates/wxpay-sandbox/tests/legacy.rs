//! Legacy 2014 APP payment against the sandbox with the official example credentials.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use wxpay_proto::legacy::verify_notify;
use wxpay_sandbox::config::{
    DEMO_LEGACY_APP_KEY, DEMO_LEGACY_APPID, DEMO_LEGACY_PARTNER, DEMO_LEGACY_PARTNER_KEY,
};
use wxpay_sandbox::{DEMO_LEGACY_APP_SECRET, NotificationKind, Outcome, SandboxConfig};

fn token_url(base: &str, appid: &str, secret: &str) -> String {
    format!("{base}/cgi-bin/token?grant_type=client_credential&appid={appid}&secret={secret}")
}

#[tokio::test]
async fn token_happy_path_and_rejections() {
    let (h, _clock) = start(1.0).await;
    let b = &h.base_url;
    let (s, v) = get_json(&token_url(b, DEMO_LEGACY_APPID, DEMO_LEGACY_APP_SECRET)).await;
    assert_eq!(s, 200);
    assert_eq!(v["expires_in"], 7200);
    assert!(v["access_token"].as_str().unwrap().len() >= 32);
    let (_, v) = get_json(&token_url(b, "wx0000000000000000", DEMO_LEGACY_APP_SECRET)).await;
    assert_eq!(v["errcode"], 40013);
    let (_, v) = get_json(&token_url(b, DEMO_LEGACY_APPID, "wrong-secret")).await;
    assert_eq!(v["errcode"], 40001);
    let (_, v) = get_json(&format!(
        "{b}/cgi-bin/token?grant_type=password&appid=x&secret=y"
    ))
    .await;
    assert_eq!(v["errcode"], 40002);
    let (_, v) = get_json(&format!(
        "{b}/cgi-bin/token?grant_type=client_credential&secret=y"
    ))
    .await;
    assert_eq!(v["errcode"], 41002);
    let (_, v) = get_json(&format!(
        "{b}/cgi-bin/token?grant_type=client_credential&appid={DEMO_LEGACY_APPID}"
    ))
    .await;
    assert_eq!(v["errcode"], 41004);
    assert_eq!(h.token_fetch_count(DEMO_LEGACY_APPID), 2);
    h.shutdown().await;
}

#[tokio::test]
async fn token_quota_resets_on_the_next_beijing_day() {
    let mut cfg = SandboxConfig::demo();
    cfg.legacy_merchants[0].token_daily_quota = 3;
    let (h, clock) = start_manual(cfg, 1.0).await;
    for _ in 0..3 {
        legacy_token(&h.base_url).await;
    }
    let (_, v) = get_json(&token_url(
        &h.base_url,
        DEMO_LEGACY_APPID,
        DEMO_LEGACY_APP_SECRET,
    ))
    .await;
    assert_eq!(v["errcode"], 45009);
    clock.advance(86_400);
    legacy_token(&h.base_url).await;
    assert_eq!(h.token_fetch_count(DEMO_LEGACY_APPID), 5);
    h.shutdown().await;
}

#[tokio::test]
async fn tokens_expire_and_are_superseded_after_an_overlap() {
    let (h, clock) = start(1.0).await;
    let b = h.base_url.clone();
    let t1 = legacy_token(&b).await;
    let p = package("tok-order-1", 1, "http://127.0.0.1:9/notify");
    assert_eq!(genprepay(&b, &t1, &p, T0).await["errcode"], 0);
    let t2 = legacy_token(&b).await;
    assert_ne!(t1, t2);
    // Within the overlap both work.
    clock.advance(299);
    assert_eq!(genprepay(&b, &t1, &p, T0).await["errcode"], 0);
    clock.advance(1);
    assert_eq!(genprepay(&b, &t1, &p, T0).await["errcode"], 40001);
    assert_eq!(genprepay(&b, &t2, &p, T0).await["errcode"], 0);
    // t2 expires 7200 s after it was issued.
    clock.advance(7200 - 300 - 1);
    assert_eq!(genprepay(&b, &t2, &p, T0).await["errcode"], 0);
    clock.advance(1);
    assert_eq!(genprepay(&b, &t2, &p, T0).await["errcode"], 42001);
    // Invalidation through the control API.
    let t3 = legacy_token(&b).await;
    let (s, v) = post_json(
        &format!("{b}/sandbox/api/token/invalidate"),
        &json!({"appid": DEMO_LEGACY_APPID}).to_string(),
    )
    .await;
    assert_eq!((s, v["invalidated"].as_u64()), (200, Some(1)));
    assert_eq!(genprepay(&b, &t3, &p, T0).await["errcode"], 40001);
    assert_eq!(genprepay_raw(&b, "", "{}").await["errcode"], 41001);
    assert_eq!(genprepay_raw(&b, "nonsense", "{}").await["errcode"], 40001);
    h.shutdown().await;
}

#[tokio::test]
async fn genprepay_accepts_the_official_example_package() {
    let (h, _) = start(1.0).await;
    let tok = legacy_token(&h.base_url).await;
    // The exact package string of the 2014 documentation (vectors/legacy.json).
    let official = "bank_type=WX&body=%E6%94%AF%E4%BB%98%E6%B5%8B%E8%AF%95&fee_type=1&input_charset=UTF-8&notify_url=http%3A%2F%2Fweixin.qq.com&out_trade_no=7240b65810859cbf2a8d9f76a638c0a3&partner=1900000109&spbill_create_ip=196.168.1.1&total_fee=1&sign=7F77B507B755B3262884291517E380F8";
    let req = wxpay_proto::legacy::GenPrepayRequest::new(
        DEMO_LEGACY_APPID,
        "test_1399514976",
        "e7d161ac8d8a76529d39d9f5b4249ccb",
        official,
        1399514976,
        &secret(DEMO_LEGACY_APP_KEY),
    );
    assert_eq!(
        req.app_signature,
        "8893870b9004ead28691b60db97a8d2c80dbfdc6"
    );
    let v = genprepay_raw(&h.base_url, &tok, &serde_json::to_string(&req).unwrap()).await;
    assert_eq!(v["errcode"], 0, "{v}");
    let prepay = v["prepayid"].as_str().unwrap().to_string();
    assert_eq!(prepay.len(), 32);
    let o = h.order(&prepay).unwrap();
    assert_eq!(
        (o.amount, o.state.as_str(), o.merchant.as_str()),
        (1, "NOTPAY", DEMO_LEGACY_PARTNER)
    );
    assert_eq!(o.description, "支付测试");
    h.shutdown().await;
}

#[tokio::test]
async fn genprepay_rejections_have_their_errcodes() {
    let (h, clock) = start(1.0).await;
    let b = h.base_url.clone();
    let tok = legacy_token(&b).await;
    let p = package("rej-order-1", 100, "http://127.0.0.1:9/notify");
    let good = genprepay_body(&signed_package(&p), T0);
    let send = |v: serde_json::Value| {
        let b = b.clone();
        let tok = tok.clone();
        async move {
            genprepay_raw(&b, &tok, &v.to_string()).await["errcode"]
                .as_i64()
                .unwrap()
        }
    };
    let good_v = serde_json::to_value(&good).unwrap();
    let with = |k: &str, val: serde_json::Value| {
        let mut v = good_v.clone();
        v[k] = val;
        v
    };
    assert_eq!(genprepay_raw(&b, &tok, "").await["errcode"], 44002);
    assert_eq!(genprepay_raw(&b, &tok, "not json").await["errcode"], 47001);
    assert_eq!(genprepay_raw(&b, &tok, "[1]").await["errcode"], 47001);
    let mut missing = good_v.clone();
    missing.as_object_mut().unwrap().remove("traceid");
    assert_eq!(send(missing).await, 49000);
    assert_eq!(
        send(with("appid", json!("wx0000000000000000"))).await,
        40013
    );
    assert_eq!(send(with("sign_method", json!("md5"))).await, 49001);
    assert_eq!(send(with("timestamp", json!("1399514976000"))).await, 49009);
    assert_eq!(send(with("noncestr", json!("x".repeat(33)))).await, 49010);
    assert_eq!(
        send(with("app_signature", json!("0".repeat(40)))).await,
        49002
    );
    // A package with a wrong MD5 (re-signed app signature so only the package fails).
    let tampered = signed_package(&p).replace("total_fee=100", "total_fee=1");
    let req = genprepay_body(&tampered, T0);
    assert_eq!(send(serde_json::to_value(&req).unwrap()).await, 49004);
    let req = genprepay_body("%%%not-a-package", T0);
    assert_eq!(send(serde_json::to_value(&req).unwrap()).await, 49003);
    // Field rules, each signed correctly.
    let signed_with = |p: &wxpay_proto::legacy::Package| {
        let params = p.params();
        let sign = wxpay_proto::legacy::md5_sign(
            &params,
            &secret(DEMO_LEGACY_PARTNER_KEY),
            p.input_charset,
        )
        .unwrap();
        let pkg = wxpay_proto::legacy::encode_package(&params, &sign, p.input_charset).unwrap();
        serde_json::to_value(genprepay_body(&pkg, T0)).unwrap()
    };
    let mut bad = p.clone();
    bad.total_fee = wxpay_proto::money::Fen::new(0);
    assert_eq!(send(signed_with(&bad)).await, 49005);
    let mut bad = p.clone();
    bad.transport_fee = Some(wxpay_proto::money::Fen::new(10));
    bad.product_fee = Some(wxpay_proto::money::Fen::new(80));
    assert_eq!(send(signed_with(&bad)).await, 49005);
    let mut ok = p.clone();
    ok.out_trade_no = "rej-order-fees".into();
    ok.transport_fee = Some(wxpay_proto::money::Fen::new(10));
    ok.product_fee = Some(wxpay_proto::money::Fen::new(90));
    assert_eq!(send(signed_with(&ok)).await, 0);
    let mut bad = p.clone();
    bad.notify_url = "ftp://x/notify".into();
    assert_eq!(send(signed_with(&bad)).await, 49005);
    let mut bad = p.clone();
    bad.partner = "1900000110".into();
    assert_eq!(send(signed_with(&bad)).await, 49006);

    // Idempotency: the same package gives the same prepay id, another package an error.
    let v1 = genprepay(&b, &tok, &p, T0).await;
    let v2 = genprepay(&b, &tok, &p, T0 + 5).await;
    assert_eq!(v1["prepayid"], v2["prepayid"]);
    let mut other = p.clone();
    other.total_fee = wxpay_proto::money::Fen::new(101);
    assert_eq!(genprepay(&b, &tok, &other, T0).await["errcode"], 49008);
    // After 2 h the same order gets a new prepay id, and the old one no longer pays.
    clock.advance(7201);
    let tok = legacy_token(&b).await;
    let v3 = genprepay(&b, &tok, &p, T0).await;
    assert_eq!(v3["errcode"], 0);
    assert_ne!(v3["prepayid"], v1["prepayid"]);
    assert!(h.pay_prepay(v1["prepayid"].as_str().unwrap()).is_err());
    h.pay_prepay(v3["prepayid"].as_str().unwrap()).unwrap();
    assert_eq!(genprepay(&b, &tok, &p, T0).await["errcode"], 49007);
    h.shutdown().await;
}

#[tokio::test]
async fn orderquery_reports_unpaid_paid_and_unknown() {
    let (h, _) = start(0.001).await;
    let b = h.base_url.clone();
    let rx = receiver(vec![], reply(200, "success")).await;
    let tok = legacy_token(&b).await;
    let p = package("query-order-1", 250, &rx.url);
    let prepay = genprepay(&b, &tok, &p, T0).await["prepayid"]
        .as_str()
        .unwrap()
        .to_string();
    let v = orderquery(&b, &tok, "query-order-1", T0).await;
    assert_eq!(v["errcode"], 0, "{v}");
    assert_ne!(v["order_info"]["trade_state"], "0");
    h.pay_prepay(&prepay).unwrap();
    let v = orderquery(&b, &tok, "query-order-1", T0).await;
    assert_eq!(v["order_info"]["trade_state"], "0");
    assert_eq!(v["order_info"]["total_fee"], "250");
    assert_eq!(
        v["order_info"]["transaction_id"].as_str().unwrap().len(),
        28
    );
    assert_eq!(
        orderquery(&b, &tok, "no-such-order", T0).await["errcode"],
        49011
    );
    // A tampered app signature.
    let mut req = wxpay_proto::legacy::OrderQueryRequest::new(
        DEMO_LEGACY_APPID,
        DEMO_LEGACY_PARTNER,
        "query-order-1",
        T0,
        &secret(DEMO_LEGACY_PARTNER_KEY),
        &secret(DEMO_LEGACY_APP_KEY),
    );
    req.app_signature = "0".repeat(40);
    let v = genprepay_raw(&b, &tok, "{}").await;
    assert_eq!(v["errcode"], 49000);
    let (_, v) = post_json(
        &format!("{b}/pay/orderquery?access_token={tok}"),
        &serde_json::to_string(&req).unwrap(),
    )
    .await;
    assert_eq!(v["errcode"], 49002);
    h.shutdown().await;
}

/// The whole 2014 flow: token → genprepay → pay → notification, answered `fail` twice, then
/// `success`: exactly three attempts, verifiable with the official keys.
#[tokio::test]
async fn legacy_flow_with_retries_until_success() {
    let (h, _) = start(0.001).await;
    let rx = receiver(
        vec![reply(200, "fail"), reply(500, "oops")],
        reply(200, "success"),
    )
    .await;
    let tok = legacy_token(&h.base_url).await;
    let p = package("flow-order-0001", 1, &rx.url);
    let v = genprepay(&h.base_url, &tok, &p, T0).await;
    let prepay = v["prepayid"].as_str().unwrap().to_string();
    let paid = h.pay_prepay(&prepay).unwrap();
    assert_eq!(paid.state, "SUCCESS");
    let hits = rx.wait_hits(3, Duration::from_secs(10)).await;
    assert_eq!(hits.len(), 3);
    // Retries stop after success.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(rx.hits().len(), 3);
    for hit in &hits {
        let n = verify_notify(
            &hit.query,
            &hit.body,
            &secret(DEMO_LEGACY_PARTNER_KEY),
            &secret(DEMO_LEGACY_APP_KEY),
        )
        .expect("notify verifies with the official keys");
        assert!(n.is_success());
        assert_eq!(n.out_trade_no, "flow-order-0001");
        assert_eq!(n.total_fee.get(), 1);
        assert_eq!(n.partner, DEMO_LEGACY_PARTNER);
        assert_eq!(Some(n.transaction_id.clone()), paid.transaction_id);
        assert_eq!(n.attach.as_deref(), Some("attach-1"));
        assert_eq!(n.user.as_ref().unwrap().app_id, DEMO_LEGACY_APPID);
    }
    let recs = h.notifications();
    assert_eq!(recs.len(), 3);
    assert!(
        recs.iter()
            .all(|r| r.kind == NotificationKind::LegacyPayment)
    );
    assert_eq!(
        recs.iter().map(|r| r.outcome).collect::<Vec<_>>(),
        vec![Outcome::Failure, Outcome::Failure, Outcome::Success]
    );
    assert_eq!(recs[1].status, Some(500));
    assert_eq!(recs[0].reply, "fail");
    assert_eq!(
        recs.iter().map(|r| r.attempt).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    h.shutdown().await;
}

/// With time_scale 0.001 the gaps follow 15s, 15s, 30s, 3m, 10m (as 15, 15, 30, 180, 600 ms).
#[tokio::test]
async fn retries_follow_the_scaled_schedule() {
    let (h, _) = start(0.001).await;
    let rx = receiver(vec![], reply(200, "fail")).await;
    let tok = legacy_token(&h.base_url).await;
    let p = package("sched-order-01", 1, &rx.url);
    let prepay = genprepay(&h.base_url, &tok, &p, T0).await["prepayid"]
        .as_str()
        .unwrap()
        .to_string();
    h.pay_prepay(&prepay).unwrap();
    let hits = rx.wait_hits(6, Duration::from_secs(20)).await;
    assert!(hits.len() >= 6, "only {} attempts", hits.len());
    let gaps: Vec<u128> = hits
        .windows(2)
        .map(|w| (w[1].at - w[0].at).as_millis())
        .collect();
    // Lower bounds hold exactly (sleeps never end early); upper bounds are generous.
    assert!(gaps[0] >= 14 && gaps[1] >= 14 && gaps[2] >= 29, "{gaps:?}");
    assert!(gaps[3] >= 170 && gaps[4] >= 590, "{gaps:?}");
    assert!(gaps[3] > gaps[2] && gaps[4] > gaps[3], "{gaps:?}");
    let recs = h.notifications();
    assert!(recs.iter().all(|r| r.outcome == Outcome::Failure));
    h.shutdown().await;
}

#[tokio::test]
async fn a_slow_merchant_times_out() {
    // time_scale 0.01: the 5 s timeout becomes 50 ms.
    let (h, _) = start(0.01).await;
    let rx = receiver(
        vec![Reply {
            status: 200,
            body: "success".into(),
            delay_ms: 500,
        }],
        reply(200, "success"),
    )
    .await;
    let tok = legacy_token(&h.base_url).await;
    let p = package("slow-order-01", 1, &rx.url);
    let prepay = genprepay(&h.base_url, &tok, &p, T0).await["prepayid"]
        .as_str()
        .unwrap()
        .to_string();
    h.pay_prepay(&prepay).unwrap();
    assert!(
        h.wait_for_notifications(Duration::from_secs(10), |r| r.len() >= 2)
            .await
    );
    let recs = h.notifications();
    assert_eq!(recs[0].outcome, Outcome::Timeout);
    assert_eq!(recs[1].outcome, Outcome::Success);
    h.shutdown().await;
}

#[tokio::test]
async fn delivernotify_checks_signature_and_order() {
    let (h, _) = start(0.001).await;
    let b = h.base_url.clone();
    let rx = receiver(vec![], reply(200, "success")).await;
    let tok = legacy_token(&b).await;
    let prepay = genprepay(&b, &tok, &package("deliver-01", 1, &rx.url), T0).await["prepayid"]
        .as_str()
        .unwrap()
        .to_string();
    let body = |transid: &str, tamper: bool| {
        let mut f = std::collections::BTreeMap::new();
        for (k, v) in [
            ("appid", DEMO_LEGACY_APPID),
            ("openid", "oSBXuser"),
            ("transid", transid),
            ("out_trade_no", "deliver-01"),
            ("deliver_timestamp", "1700000000"),
            ("deliver_status", "1"),
            ("deliver_msg", "ok"),
        ] {
            f.insert(k.to_string(), v.to_string());
        }
        let sig = wxpay_proto::legacy::app_signature(&f, &secret(DEMO_LEGACY_APP_KEY));
        let mut v = serde_json::to_value(&f).unwrap();
        v["app_signature"] = json!(if tamper { "0".repeat(40) } else { sig });
        v["sign_method"] = json!("sha1");
        v.to_string()
    };
    let url = format!("{b}/pay/delivernotify?access_token={tok}");
    assert_eq!(post_json(&url, &body("x", false)).await.1["errcode"], 49012);
    let tid = h.pay_prepay(&prepay).unwrap().transaction_id.unwrap();
    assert_eq!(post_json(&url, &body(&tid, true)).await.1["errcode"], 49002);
    assert_eq!(post_json(&url, &body(&tid, false)).await.1["errcode"], 0);
    h.shutdown().await;
}

#[tokio::test]
async fn genprepay_rejects_non_integer_amounts() {
    let (h, _) = start(1.0).await;
    let tok = legacy_token(&h.base_url).await;
    for fee in ["1.5", "-1", "abc", ""] {
        let mut params = package("amount-01", 1, "http://127.0.0.1:9/n").params();
        params.insert("total_fee".into(), fee.into());
        let cs = wxpay_proto::form::Charset::Utf8;
        let sign =
            wxpay_proto::legacy::md5_sign(&params, &secret(DEMO_LEGACY_PARTNER_KEY), cs).unwrap();
        let pkg = wxpay_proto::legacy::encode_package(&params, &sign, cs).unwrap();
        let body = serde_json::to_string(&genprepay_body(&pkg, T0)).unwrap();
        let v = genprepay_raw(&h.base_url, &tok, &body).await;
        assert_eq!(v["errcode"], 49005, "total_fee {fee:?}: {v}");
    }
    h.shutdown().await;
}

#[tokio::test]
async fn gbk_packages_and_gbk_notifications() {
    let (h, _) = start(0.001).await;
    let rx = receiver(vec![], reply(200, "success")).await;
    let tok = legacy_token(&h.base_url).await;
    let mut p = package("gbk-order-01", 88, &rx.url);
    p.input_charset = wxpay_proto::form::Charset::Gbk;
    let signed = signed_package(&p);
    assert!(signed.contains("input_charset=GBK"));
    assert!(
        signed.contains("%D6%A7"),
        "GBK percent-encoding of 支: {signed}"
    );
    let v = genprepay(&h.base_url, &tok, &p, T0).await;
    assert_eq!(v["errcode"], 0, "{v}");
    let o = h.order(v["prepayid"].as_str().unwrap()).unwrap();
    assert_eq!(o.description, "支付测试");
    h.pay_prepay(&o.prepay_id).unwrap();
    let hits = rx.wait_hits(1, Duration::from_secs(5)).await;
    assert!(hits[0].query.contains("input_charset=GBK"));
    let n = verify_notify(
        &hits[0].query,
        &hits[0].body,
        &secret(DEMO_LEGACY_PARTNER_KEY),
        &secret(DEMO_LEGACY_APP_KEY),
    )
    .unwrap();
    assert_eq!(
        (n.total_fee.get(), n.attach.as_deref()),
        (88, Some("attach-1"))
    );
    h.shutdown().await;
}

#[tokio::test]
async fn time_expire_ends_payability() {
    let (h, clock) = start(1.0).await;
    let tok = legacy_token(&h.base_url).await;
    let mut p = package("expire-order-1", 1, "http://127.0.0.1:9/n");
    p.time_expire = Some(wxpay_proto::legacy::format_time(T0 + 600));
    let v = genprepay(&h.base_url, &tok, &p, T0).await;
    assert_eq!(v["errcode"], 0, "{v}");
    clock.advance(601);
    let err = h.pay_prepay(v["prepayid"].as_str().unwrap()).unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
    h.shutdown().await;
}

#[tokio::test]
async fn concurrent_identical_genprepay_calls_share_one_prepay_id() {
    let (h, _) = start(1.0).await;
    let tok = legacy_token(&h.base_url).await;
    let p = package("concurrent-01", 5, "http://127.0.0.1:9/n");
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (b, t, p) = (h.base_url.clone(), tok.clone(), p.clone());
        set.spawn(async move {
            genprepay(&b, &t, &p, T0).await["prepayid"]
                .as_str()
                .unwrap()
                .to_string()
        });
    }
    let ids: std::collections::HashSet<String> = set.join_all().await.into_iter().collect();
    assert_eq!(ids.len(), 1);
    h.shutdown().await;
}
