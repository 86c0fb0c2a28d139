//! Every fault switch observably does what it says.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use wxpay_proto::legacy::verify_notify;
use wxpay_sandbox::config::{
    DEMO_LEGACY_APP_KEY, DEMO_LEGACY_APPID, DEMO_LEGACY_PARTNER, DEMO_LEGACY_PARTNER_KEY,
    DEMO_V3_MCHID,
};
use wxpay_sandbox::faults::counter;
use wxpay_sandbox::{
    DEMO_LEGACY_APP_SECRET, EndpointFault, EndpointFaultKind, FaultSet, Faults, Outcome,
    SandboxHandle, Variant,
};

async fn legacy_paid(h: &SandboxHandle, no: &str, url: &str) -> String {
    let tok = legacy_token(&h.base_url).await;
    let v = genprepay(&h.base_url, &tok, &package(no, 1, url), T0).await;
    let prepay = v["prepayid"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string();
    h.pay_prepay(&prepay).unwrap();
    prepay
}

fn verifies(hit: &Hit) -> bool {
    verify_notify(
        &hit.query,
        &hit.body,
        &secret(DEMO_LEGACY_PARTNER_KEY),
        &secret(DEMO_LEGACY_APP_KEY),
    )
    .is_ok()
}

#[tokio::test]
async fn drop_skips_attempts_but_keeps_the_schedule() {
    let (h, _) = start(0.001).await;
    h.set_faults(Faults::global(FaultSet {
        drop_notification: 1.0,
        ..Default::default()
    }));
    let rx = receiver(vec![], reply(200, "success")).await;
    legacy_paid(&h, "drop-0001", &rx.url).await;
    assert!(
        h.wait_for_notifications(Duration::from_secs(5), |r| r.len() >= 3)
            .await
    );
    assert!(
        rx.hits().is_empty(),
        "dropped attempts never reach the merchant"
    );
    assert!(
        h.notifications()
            .iter()
            .all(|r| r.outcome == Outcome::Dropped)
    );
    // Switch off: the next retry arrives and succeeds.
    h.set_faults(Faults::none());
    let hits = rx.wait_hits(1, Duration::from_secs(10)).await;
    assert_eq!(hits.len(), 1);
    assert!(
        h.wait_for_notifications(Duration::from_secs(5), |r| r
            .iter()
            .any(|x| x.outcome == Outcome::Success))
            .await
    );
    assert!(h.fault_count(counter::DROP) >= 3);
    h.shutdown().await;
}

#[tokio::test]
async fn duplicate_sends_each_attempt_twice_sequentially_and_concurrently() {
    for concurrently in [false, true] {
        let (h, _) = start(0.001).await;
        h.set_faults(Faults::global(FaultSet {
            duplicate_notification: 1.0,
            duplicate_concurrently: concurrently,
            ..Default::default()
        }));
        let rx = receiver(
            vec![reply(200, "success"), reply(200, "success")],
            reply(200, "success"),
        )
        .await;
        legacy_paid(&h, "dup-0001", &rx.url).await;
        let hits = rx.wait_hits(2, Duration::from_secs(5)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            rx.hits().len(),
            2,
            "one attempt, two copies, then success stops it"
        );
        assert_eq!(hits[0].body, hits[1].body);
        assert_eq!(hits[0].query, hits[1].query);
        assert!(verifies(&hits[0]) && verifies(&hits[1]));
        let recs = h.notifications();
        assert_eq!(recs.iter().map(|r| r.copy).collect::<Vec<_>>().len(), 2);
        assert!(recs.iter().all(|r| r.attempt == 0));
        assert_eq!(h.fault_count(counter::DUPLICATE), 1);
        h.shutdown().await;
    }
}

#[tokio::test]
async fn concurrent_duplicates_overlap() {
    let (h, _) = start(0.1).await;
    h.set_faults(Faults::global(FaultSet {
        duplicate_notification: 1.0,
        duplicate_concurrently: true,
        ..Default::default()
    }));
    // Each reply takes 200 ms (the scaled timeout is 500 ms): concurrent copies arrive together.
    let slow = Reply {
        status: 200,
        body: "success".into(),
        delay_ms: 200,
    };
    let rx = receiver(vec![slow.clone(), slow.clone()], slow).await;
    legacy_paid(&h, "dupc-0001", &rx.url).await;
    let hits = rx.wait_hits(2, Duration::from_secs(5)).await;
    let gap = if hits[1].at > hits[0].at {
        hits[1].at - hits[0].at
    } else {
        hits[0].at - hits[1].at
    };
    assert!(
        gap < Duration::from_millis(190),
        "copies were not concurrent: {gap:?}"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn delay_holds_an_attempt_back() {
    let (h, _) = start(0.001).await;
    h.set_faults(Faults::global(FaultSet {
        delay_notification: 1.0,
        delay_ms: 400,
        ..Default::default()
    }));
    let rx = receiver(vec![], reply(200, "success")).await;
    let t = std::time::Instant::now();
    legacy_paid(&h, "delay-0001", &rx.url).await;
    let hits = rx.wait_hits(1, Duration::from_secs(5)).await;
    assert!(hits[0].at - t >= Duration::from_millis(400));
    assert_eq!(
        h.notifications()[0].faults,
        vec![counter::DELAY.to_string()]
    );
    assert_eq!(h.fault_count(counter::DELAY), 1);
    h.shutdown().await;
}

#[tokio::test]
async fn reorder_lets_a_later_notification_overtake() {
    let (h, _) = start(0.001).await;
    let rx = receiver(vec![], reply(200, "success")).await;
    h.set_faults(Faults::global(FaultSet {
        reorder_notification: 1.0,
        reorder_hold_ms: 5_000,
        ..Default::default()
    }));
    legacy_paid(&h, "reorder-A", &rx.url).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(rx.hits().is_empty(), "A is held");
    h.set_faults(Faults::none());
    legacy_paid(&h, "reorder-B", &rx.url).await;
    let hits = rx.wait_hits(2, Duration::from_secs(5)).await;
    let order: Vec<bool> = hits
        .iter()
        .map(|x| x.query.contains("out_trade_no=reorder-B"))
        .collect();
    assert_eq!(order, vec![true, false], "B arrives before A");
    assert_eq!(h.fault_count(counter::REORDER), 1);
    h.shutdown().await;
}

#[tokio::test]
async fn forged_notifications_fail_verification_and_do_not_count() {
    let (h, _) = start(0.001).await;
    h.set_faults(Faults::global(FaultSet {
        forge_notification: 1.0,
        ..Default::default()
    }));
    // A careless merchant that answers success to everything.
    let rx = receiver(vec![], reply(200, "success")).await;
    legacy_paid(&h, "forge-0001", &rx.url).await;
    let hits = rx.wait_hits(2, Duration::from_secs(5)).await;
    assert!(!verifies(&hits[0]), "the forged copy must not verify");
    assert!(verifies(&hits[1]));
    let recs = h.notifications();
    assert_eq!(recs[0].variant, Variant::Forged);
    assert_eq!(
        recs[0].outcome,
        Outcome::Success,
        "recorded: the merchant accepted a forgery"
    );
    assert_eq!(recs[1].variant, Variant::Genuine);
    assert_eq!(h.fault_count(counter::FORGE), 1);
    h.shutdown().await;
}

#[tokio::test]
async fn v3_forgery_and_signtest_probes() {
    let (h, clock) = start(0.001).await;
    let c = V3Client::demo(&h.base_url, clock.clone());
    let pk = public_key_verifier(&h);
    h.set_faults(Faults::global(FaultSet {
        forge_notification: 1.0,
        signtest_probe: 1.0,
        ..Default::default()
    }));
    let rx = receiver(
        vec![reply(401, "bad sig"), reply(401, "bad sig")],
        reply(204, ""),
    )
    .await;
    let body = app_order("probe0000001", 5, &rx.url);
    let p = c
        .call("POST", "/v3/pay/transactions/app", Some(&body))
        .await
        .json()["prepay_id"]
        .as_str()
        .unwrap()
        .to_string();
    h.pay_prepay(&p).unwrap();
    let hits = rx.wait_hits(3, Duration::from_secs(5)).await;
    let as_resp = |x: &Hit| V3Resp {
        status: 0,
        headers: x.headers.clone(),
        body: x.body.clone(),
    };
    assert!(!as_resp(&hits[0]).verify(&pk, T0), "forged");
    assert!(
        hits[1]
            .header("wechatpay-signature")
            .unwrap()
            .starts_with("WECHATPAY/SIGNTEST/")
    );
    assert!(!as_resp(&hits[1]).verify(&pk, T0), "probe");
    assert!(as_resp(&hits[2]).verify(&pk, T0), "genuine");
    let recs = h.notifications();
    assert_eq!(
        recs.iter().map(|r| r.variant).collect::<Vec<_>>()[..3],
        [Variant::Forged, Variant::Signtest, Variant::Genuine]
    );
    assert_eq!(
        (
            h.fault_count(counter::FORGE),
            h.fault_count(counter::SIGNTEST)
        ),
        (1, 1)
    );
    h.shutdown().await;
}

#[tokio::test]
async fn endpoint_faults_answer_500_429_or_hang() {
    let (h, clock) = start(1.0).await;
    let c = V3Client::demo(&h.base_url, clock.clone());
    let ep = |path: &str, kind, hang_ms| EndpointFault {
        path: path.into(),
        method: None,
        kind,
        probability: 1.0,
        hang_ms,
    };
    h.set_faults(Faults::global(FaultSet {
        endpoints: vec![
            ep("/pay/genprepay", EndpointFaultKind::SystemError, None),
            ep("/cgi-bin/token", EndpointFaultKind::FrequencyLimited, None),
            ep(
                "/v3/pay/transactions/app",
                EndpointFaultKind::FrequencyLimited,
                None,
            ),
            ep("/v3/refund", EndpointFaultKind::SystemError, None),
            ep(
                "/v3/pay/transactions/out-trade-no",
                EndpointFaultKind::Hang,
                Some(3_000),
            ),
        ],
        ..Default::default()
    }));
    let (s, v) = post_json(
        &format!("{}/pay/genprepay?access_token=x", h.base_url),
        "{}",
    )
    .await;
    assert_eq!((s, v["errcode"].as_i64()), (500, Some(-1)));
    let (s, v) = get_json(&format!("{}/cgi-bin/token?grant_type=client_credential&appid={DEMO_LEGACY_APPID}&secret={DEMO_LEGACY_APP_SECRET}", h.base_url)).await;
    assert_eq!((s, v["errcode"].as_i64()), (429, Some(45011)));
    let r = c
        .call(
            "POST",
            "/v3/pay/transactions/app",
            Some(&app_order("ep0000000001", 1, "https://e.com/n")),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (429, "FREQUENCY_LIMITED"));
    assert!(
        r.verify(&public_key_verifier(&h), T0),
        "fault answers are signed like any v3 answer"
    );
    let r = c
        .call("POST", "/v3/refund/domestic/refunds", Some("{}"))
        .await;
    assert_eq!((r.status, r.code().as_str()), (500, "SYSTEM_ERROR"));
    // A hang longer than the client's timeout.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .no_proxy()
        .build()
        .unwrap();
    let url = format!("/v3/pay/transactions/out-trade-no/x1234567?mchid={DEMO_V3_MCHID}");
    let auth = c.signer.authorization("GET", &url, T0, "HANGNONCE", b"");
    let err = client
        .get(format!("{}{url}", h.base_url))
        .header("Authorization", auth)
        .header("Accept", "application/json")
        .header("User-Agent", "t")
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    let st = h.faults();
    assert_eq!(st.counters.get("endpoint_system_error"), Some(&2));
    assert_eq!(st.counters.get("endpoint_frequency_limited"), Some(&2));
    assert_eq!(st.counters.get("endpoint_hang"), Some(&1));
    // Unmatched endpoints are untouched; method filters apply.
    h.set_faults(Faults::global(FaultSet {
        endpoints: vec![EndpointFault {
            path: "/cgi-bin/token".into(),
            method: Some("POST".into()),
            kind: EndpointFaultKind::SystemError,
            probability: 1.0,
            hang_ms: None,
        }],
        ..Default::default()
    }));
    legacy_token(&h.base_url).await;
    h.shutdown().await;
}

#[tokio::test]
async fn token_faults_invalidate_early_and_exhaust_the_quota() {
    let (h, _) = start(1.0).await;
    let tok = legacy_token(&h.base_url).await;
    let p = package("tokfault-1", 1, "http://127.0.0.1:9/n");
    h.set_faults(Faults::global(FaultSet {
        token_early_invalidation: 1.0,
        ..Default::default()
    }));
    assert_eq!(genprepay(&h.base_url, &tok, &p, T0).await["errcode"], 42001);
    h.set_faults(Faults::none());
    assert_eq!(
        genprepay(&h.base_url, &tok, &p, T0).await["errcode"],
        40001,
        "the token stays dead"
    );
    let tok = legacy_token(&h.base_url).await;
    assert_eq!(genprepay(&h.base_url, &tok, &p, T0).await["errcode"], 0);
    h.set_faults(Faults::global(FaultSet {
        token_quota_exhausted: true,
        ..Default::default()
    }));
    let (_, v) = get_json(&format!("{}/cgi-bin/token?grant_type=client_credential&appid={DEMO_LEGACY_APPID}&secret={DEMO_LEGACY_APP_SECRET}", h.base_url)).await;
    assert_eq!(v["errcode"], 45009);
    assert_eq!(
        (
            h.fault_count(counter::TOKEN_EARLY),
            h.fault_count(counter::TOKEN_QUOTA)
        ),
        (1, 1)
    );
    h.shutdown().await;
}

#[tokio::test]
async fn refund_not_enough_and_per_merchant_sets() {
    let (h, clock) = start(0.001).await;
    let c = V3Client::demo(&h.base_url, clock.clone());
    let rx = receiver(vec![], reply(204, "")).await;
    let p = c
        .call(
            "POST",
            "/v3/pay/transactions/app",
            Some(&app_order("ne0000000001", 10, &rx.url)),
        )
        .await
        .json()["prepay_id"]
        .as_str()
        .unwrap()
        .to_string();
    h.pay_prepay(&p).unwrap();
    let mut f = Faults::none();
    f.merchants.insert(
        DEMO_V3_MCHID.into(),
        FaultSet {
            refund_not_enough: true,
            ..Default::default()
        },
    );
    f.global.token_quota_exhausted = true;
    h.set_faults(f);
    let refund = json!({"out_trade_no": "ne0000000001", "out_refund_no": "NE1", "amount": {"refund": 1, "total": 10, "currency": "CNY"}}).to_string();
    let r = c
        .call("POST", "/v3/refund/domestic/refunds", Some(&refund))
        .await;
    assert_eq!((r.status, r.code().as_str()), (403, "NOT_ENOUGH"));
    // The legacy merchant has no set of its own: the global one applies to it.
    let (_, v) = get_json(&format!("{}/cgi-bin/token?grant_type=client_credential&appid={DEMO_LEGACY_APPID}&secret={DEMO_LEGACY_APP_SECRET}", h.base_url)).await;
    assert_eq!(v["errcode"], 45009);
    // A set for the legacy partner replaces the global one.
    let mut f = h.faults().faults;
    f.merchants
        .insert(DEMO_LEGACY_PARTNER.into(), FaultSet::default());
    h.set_faults(f);
    legacy_token(&h.base_url).await;
    h.set_faults(Faults::none());
    assert_eq!(
        c.call("POST", "/v3/refund/domestic/refunds", Some(&refund))
            .await
            .status,
        200
    );
    assert_eq!(h.fault_count(counter::REFUND_NOT_ENOUGH), 1);
    h.shutdown().await;
}

#[tokio::test]
async fn fault_draws_are_reproducible_for_a_seed() {
    async fn pattern(seed: u64) -> Vec<Outcome> {
        let clock = std::sync::Arc::new(wxpay_sandbox::ManualClock::new(T0));
        let h = wxpay_sandbox::Sandbox::new(
            wxpay_sandbox::SandboxConfig::demo(),
            wxpay_sandbox::SandboxOptions {
                time_scale: 0.001,
                seed,
                clock,
            },
        )
        .unwrap()
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
        h.set_faults(Faults::global(FaultSet {
            drop_notification: 0.5,
            ..Default::default()
        }));
        let rx = receiver(vec![], reply(200, "fail")).await;
        legacy_paid(&h, "seed-0001", &rx.url).await;
        assert!(
            h.wait_for_notifications(Duration::from_secs(10), |r| r.len() >= 6)
                .await
        );
        let out = h
            .notifications()
            .iter()
            .take(6)
            .map(|r| r.outcome)
            .collect();
        h.shutdown().await;
        out
    }
    let a = pattern(42).await;
    let b = pattern(42).await;
    assert_eq!(a, b);
    assert!(a.contains(&Outcome::Dropped) || pattern(43).await != a);
}

#[tokio::test]
async fn faults_over_http() {
    let (h, _) = start(1.0).await;
    let url = format!("{}/sandbox/api/faults", h.base_url);
    let body = json!({"global": {"drop_notification": 0.25, "endpoints": [{"path": "/pay/genprepay", "kind": "HANG", "hang_ms": 10}]},
                      "merchants": {"1900007291": {"signtest_probe": 1.0}}});
    let r = http()
        .put(&url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (s, v) = get_json(&url).await;
    assert_eq!(s, 200);
    assert_eq!(v["faults"]["global"]["drop_notification"], 0.25);
    assert_eq!(
        v["faults"]["merchants"]["1900007291"]["signtest_probe"],
        1.0
    );
    let (s, v) = post_json(
        &format!("{}/pay/genprepay?access_token=x", h.base_url),
        "{}",
    )
    .await;
    assert_eq!((s, v["errcode"].as_i64()), (500, Some(-1)));
    assert_eq!(get_json(&url).await.1["counters"]["endpoint_hang"], 1);
    let r = http()
        .put(&url)
        .body(r#"{"global":{"no_such_switch":1}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    h.shutdown().await;
}

#[tokio::test]
async fn signtest_responses_fail_verification() {
    let (h, clock) = start(1.0).await;
    let c = V3Client::demo(&h.base_url, clock.clone());
    let pk = public_key_verifier(&h);
    h.set_faults(Faults::global(FaultSet {
        signtest_response: 1.0,
        ..Default::default()
    }));
    let r = c
        .call(
            "POST",
            "/v3/pay/transactions/app",
            Some(&app_order("stresp000001", 1, "https://e.com/n")),
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("wechatpay-signature")
            .unwrap()
            .starts_with("WECHATPAY/SIGNTEST/")
    );
    assert!(!r.verify(&pk, T0));
    h.set_faults(Faults::none());
    let r = c
        .call(
            "POST",
            "/v3/pay/transactions/app",
            Some(&app_order("stresp000001", 1, "https://e.com/n")),
        )
        .await;
    assert!(r.verify(&pk, T0));
    assert_eq!(h.fault_count(counter::SIGNTEST_RESPONSE), 1);
    h.shutdown().await;
}
