//! `V3Gateway` against the in-process sandbox: public-key, platform-certificate (with rotation)
//! and combined verification; notifications captured raw by a tiny receiver; a recording proxy in
//! front of the sandbox to lose, tamper with or rate-limit answers.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use wxpay_gateway::v3::{RetryPolicy, V3Config, V3Gateway, V3Options, V3Verification};
use wxpay_gateway::{
    Gateway, GatewayError, InboundNotify, Notification, PrepayRequest, RefundRequest, TradeStatus,
};
use wxpay_proto::v3::aead::ApiV3Key;
use wxpay_proto::v3::auth::app_pay_message;
use wxpay_proto::v3::model::{
    self, EncryptedResource, RefundNotification, RefundNotificationAmount, Transaction,
    TransactionAmount,
};
use wxpay_proto::v3::rsa::{RsaPrivateKey, RsaPublicKey};
use wxpay_proto::v3::verify::SignedHeaders;
use wxpay_proto::{ExposeSecret, Fen};
use wxpay_sandbox::config::{
    DEMO_MERCHANT_PRIVATE_KEY_PEM, DEMO_V3_APIV3_KEY, DEMO_V3_APPID, DEMO_V3_MCHID,
    DEMO_V3_PUBLIC_KEY_ID, DEMO_V3_SERIAL_NO,
};
use wxpay_sandbox::{
    EndpointFault, EndpointFaultKind, FaultSet, Faults, Sandbox, SandboxConfig, SandboxHandle,
    SandboxOptions, VerifyMode,
};

const T0: i64 = 1_700_000_000; // 2023-11-15T06:13:20+08:00
const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// One clock for the sandbox and the gateway.

#[derive(Debug)]
struct TestClock(AtomicI64);

impl TestClock {
    fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl wxpay_gateway::Clock for TestClock {
    fn now_ms(&self) -> i64 {
        self.now() * 1000
    }
}

impl wxpay_sandbox::Clock for TestClock {
    fn now_unix(&self) -> i64 {
        self.now()
    }
}

// ---------------------------------------------------------------------------------------------
// Set-up

struct Env {
    h: SandboxHandle,
    clock: Arc<TestClock>,
    /// WeChat Pay's public-key pair (we configure the sandbox with it, so tests can sign too).
    wechatpay_key: RsaPrivateKey,
}

impl Env {
    async fn start(mode: VerifyMode) -> Env {
        let clock = Arc::new(TestClock(AtomicI64::new(T0)));
        let wechatpay_key = RsaPrivateKey::generate_2048().unwrap();
        let mut cfg = SandboxConfig::demo();
        cfg.v3_merchants[0].verify_mode = mode;
        cfg.v3_merchants[0].wechatpay_private_key_pem =
            Some(wechatpay_key.to_pkcs8_pem().expose_secret().to_string());
        let h = Sandbox::new(
            cfg,
            SandboxOptions {
                time_scale: 0.02,
                seed: 11,
                clock: clock.clone(),
            },
        )
        .unwrap()
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
        Env {
            h,
            clock,
            wechatpay_key,
        }
    }

    fn public_key(&self) -> (String, RsaPublicKey) {
        let (pem, id) = self.h.wechatpay_public_key(DEMO_V3_MCHID);
        let key = RsaPublicKey::from_spki_pem(&pem).unwrap();
        assert_eq!(key, self.wechatpay_key.public_key());
        (id, key)
    }

    fn pk_mode(&self) -> V3Verification {
        let (id, key) = self.public_key();
        V3Verification::PublicKey { id, key }
    }

    fn combined_mode(&self) -> V3Verification {
        let (id, key) = self.public_key();
        V3Verification::Combined { id, key }
    }

    fn gateway(&self, verification: V3Verification) -> V3Gateway {
        self.gateway_at(&self.h.base_url, verification)
    }

    fn gateway_at(&self, base_url: &str, verification: V3Verification) -> V3Gateway {
        gateway(base_url, verification, self.clock.clone())
    }

    /// Signs `body` as WeChat Pay with the public key (serial `PUB_KEY_ID_…`).
    fn sign_pk(&self, body: &[u8], ts: i64) -> Vec<(String, String)> {
        headers_of(&SignedHeaders::sign(
            &self.wechatpay_key,
            DEMO_V3_PUBLIC_KEY_ID,
            ts,
            "NONCE0123456789NONCE0123456789AB",
            body,
        ))
    }
}

fn merchant_key() -> RsaPrivateKey {
    RsaPrivateKey::from_pkcs8_pem(DEMO_MERCHANT_PRIVATE_KEY_PEM).unwrap()
}

fn apiv3_key() -> ApiV3Key {
    ApiV3Key::new(DEMO_V3_APIV3_KEY).unwrap()
}

fn gateway(base_url: &str, verification: V3Verification, clock: Arc<TestClock>) -> V3Gateway {
    let cfg = V3Config {
        merchant_id: "v3-demo".into(),
        base_url: base_url.to_string(),
        appid: DEMO_V3_APPID.into(),
        mchid: DEMO_V3_MCHID.into(),
        serial_no: DEMO_V3_SERIAL_NO.into(),
        private_key: merchant_key(),
        apiv3_key: apiv3_key(),
        verification,
        allow_http: true,
    };
    let http = wxpay_gateway::http::client(wxpay_gateway::http::HttpOptions {
        connect_timeout: Duration::from_secs(10),
        timeout: Duration::from_secs(30),
    });
    V3Gateway::with_options(
        cfg,
        http,
        clock,
        V3Options {
            retry: RetryPolicy {
                attempts: 3,
                base_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(50),
                max_retry_after: Duration::from_secs(5),
            },
            refresh_min_interval_secs: 60,
        },
    )
}

fn order(no: &str, amount: i64, notify_url: &str) -> PrepayRequest {
    PrepayRequest {
        out_trade_no: no.into(),
        description: "Image形象店-深圳腾大-QQ公仔".into(),
        amount: Fen::new(amount),
        client_ip: "14.23.150.211".into(),
        notify_url: notify_url.into(),
        attach: Some("自定义数据".into()),
        time_start: T0,
        time_expire: Some(T0 + 3 * 3600),
        trace_id: "user-1".into(),
    }
}

fn headers_of(h: &SignedHeaders) -> Vec<(String, String)> {
    h.to_header_pairs()
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect()
}

fn set_header(headers: &mut [(String, String)], name: &str, value: &str) {
    for (k, v) in headers.iter_mut() {
        if k.eq_ignore_ascii_case(name) {
            *v = value.to_string();
        }
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no header {name}"))
}

fn verify(
    g: &V3Gateway,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Notification, GatewayError> {
    g.verify_notify(&InboundNotify {
        query: None,
        headers,
        body,
    })
}

fn refused(r: Result<Notification, GatewayError>, why: &str) -> String {
    match r {
        Err(GatewayError::Verification(msg)) => msg,
        other => panic!("{why}: expected a verification error, got {other:?}"),
    }
}

/// A notification envelope with an encrypted resource, as WeChat Pay builds it.
fn envelope(event_type: &str, original_type: &str, plaintext: &[u8]) -> Vec<u8> {
    let resource = EncryptedResource::encrypt(
        &apiv3_key(),
        "fdasflkja484",
        original_type,
        Some(original_type),
        plaintext,
    )
    .unwrap();
    serde_json::to_vec(&model::Notification {
        id: "EV-2018022511223320873".into(),
        create_time: model::format_rfc3339_beijing(T0),
        resource_type: "encrypt-resource".into(),
        event_type: event_type.into(),
        summary: Some("支付成功".into()),
        resource,
    })
    .unwrap()
}

fn paid_transaction(mchid: &str, appid: &str) -> Vec<u8> {
    serde_json::to_vec(&Transaction {
        appid: appid.into(),
        mchid: mchid.into(),
        out_trade_no: "crafted000001".into(),
        transaction_id: Some("4200000000202311150000000001".into()),
        trade_type: Some("APP".into()),
        trade_state: "SUCCESS".into(),
        amount: Some(TransactionAmount {
            total: 100,
            payer_total: Some(100),
            currency: Some("CNY".into()),
            payer_currency: Some("CNY".into()),
        }),
        ..Default::default()
    })
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// A notify receiver that records raw bytes and answers 204.

#[derive(Clone, Debug)]
struct Hit {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

struct Receiver {
    url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let rec = hits.clone();
        let app = Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let rec = rec.clone();
            async move {
                let headers = headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_ascii_lowercase(),
                            v.to_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect();
                rec.lock().unwrap().push(Hit {
                    headers,
                    body: body.to_vec(),
                });
                StatusCode::NO_CONTENT
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url: format!("http://{addr}/notify/v3-demo"),
            hits,
        }
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// The first notification whose envelope has `event_type` (waits for it).
    async fn wait_event(&self, event_type: &str) -> Hit {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let found = self.hits().into_iter().find(|h| {
                model::Notification::from_slice(&h.body).is_ok_and(|n| n.event_type == event_type)
            });
            if let Some(h) = found {
                return h;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {event_type} notification arrived"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Receiver {
    /// The first payment notification of `out_trade_no` (waits for it).
    async fn wait_payment(&self, out_trade_no: &str) -> Hit {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let found = self.hits().into_iter().find(|h| {
                model::Notification::from_slice(&h.body).is_ok_and(|n| {
                    n.decrypt_transaction(&apiv3_key())
                        .is_ok_and(|t| t.out_trade_no == out_trade_no)
                })
            });
            if let Some(h) = found {
                return h;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no payment notification for {out_trade_no}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Prepay, pay at the sandbox and capture the payment notification.
async fn paid_order(env: &Env, g: &V3Gateway, no: &str, amount: i64) -> Hit {
    let rx = Receiver::start().await;
    let p = g.prepay(&order(no, amount, &rx.url)).await.unwrap();
    env.h.pay_prepay(&p.prepay_id).unwrap();
    rx.wait_event("TRANSACTION.SUCCESS").await
}

// ---------------------------------------------------------------------------------------------
// A recording proxy in front of the sandbox.

#[derive(Clone, Debug, PartialEq)]
enum Mode {
    Pass,
    /// Clear the sandbox's faults once the first request to this path has been answered.
    ClearFaultsAfterFirst(&'static str),
    /// Remove `Wechatpay-Signature` from answers.
    StripSignature,
    /// Append a space to 2xx bodies (still valid JSON).
    AppendSpace,
    /// Replace the signature with a `WECHATPAY/SIGNTEST/…` probe.
    Signtest,
    /// Answer the first request whose path starts with `path` with 429 and `Retry-After`.
    RateLimitOnce {
        path: &'static str,
        retry_after: &'static str,
    },
    /// Forward requests whose path ends with this, but answer an unsigned 500 instead.
    LoseAnswer(&'static str),
}

#[derive(Clone, Debug)]
struct Logged {
    method: String,
    path: String,
    body: Vec<u8>,
    status: u16,
    /// `Wechatpay-Serial` of the answer.
    serial: Option<String>,
}

struct ProxyState {
    mode: Mode,
    fired: bool,
    log: Vec<Logged>,
}

struct Proxy {
    url: String,
    state: Arc<Mutex<ProxyState>>,
}

impl Proxy {
    async fn start(sandbox: Sandbox, upstream: String) -> Proxy {
        let state = Arc::new(Mutex::new(ProxyState {
            mode: Mode::Pass,
            fired: false,
            log: Vec::new(),
        }));
        let st = state.clone();
        let client = reqwest::Client::new();
        let app =
            Router::new().fallback(
                move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                    let st = st.clone();
                    let client = client.clone();
                    let sandbox = sandbox.clone();
                    let upstream = upstream.clone();
                    async move {
                        forward(st, client, sandbox, upstream, method, uri, headers, body).await
                    }
                },
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Proxy {
            url: format!("http://{addr}"),
            state,
        }
    }

    fn set(&self, mode: Mode) {
        let mut st = self.state.lock().unwrap();
        st.mode = mode;
        st.fired = false;
    }

    fn requests_to(&self, path: &str) -> Vec<Logged> {
        self.state
            .lock()
            .unwrap()
            .log
            .iter()
            .filter(|l| l.path == path)
            .cloned()
            .collect()
    }

    fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }
}

fn json_answer(status: u16, body: &str, extra: &[(&'static str, &str)]) -> Response {
    let mut r = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json");
    for (k, v) in extra {
        r = r.header(*k, *v);
    }
    r.body(Body::from(body.to_string())).unwrap()
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    st: Arc<Mutex<ProxyState>>,
    client: reqwest::Client,
    sandbox: Sandbox,
    upstream: String,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let pq = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| path.clone());
    let mode = st.lock().unwrap().mode.clone();
    let mut log = Logged {
        method: method.to_string(),
        path: path.clone(),
        body: body.to_vec(),
        status: 0,
        serial: None,
    };
    if let Mode::RateLimitOnce {
        path: p,
        retry_after,
    } = &mode
    {
        let mut s = st.lock().unwrap();
        if path.starts_with(p) && !s.fired {
            s.fired = true;
            log.status = 429;
            s.log.push(log);
            return json_answer(
                429,
                r#"{"code":"FREQUENCY_LIMITED","message":"频率超限"}"#,
                &[("retry-after", retry_after)],
            );
        }
    }
    let mut rb = client.request(method, format!("{upstream}{pq}"));
    for (k, v) in headers.iter() {
        if k != header::HOST && k != header::CONTENT_LENGTH {
            rb = rb.header(k, v);
        }
    }
    let resp = rb.body(body.to_vec()).send().await.unwrap();
    let status = resp.status().as_u16();
    let mut rh = resp.headers().clone();
    let mut rbody = resp.bytes().await.unwrap().to_vec();
    match &mode {
        Mode::ClearFaultsAfterFirst(p) if path == *p => {
            let mut s = st.lock().unwrap();
            if !s.fired {
                s.fired = true;
                sandbox.set_faults(Faults::none());
            }
        }
        Mode::StripSignature => {
            rh.remove("wechatpay-signature");
        }
        Mode::AppendSpace if (200..300).contains(&status) => rbody.push(b' '),
        Mode::Signtest => {
            let sig = rh
                .get("wechatpay-signature")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            rh.insert(
                "wechatpay-signature",
                HeaderValue::from_str(&format!("WECHATPAY/SIGNTEST/{sig}")).unwrap(),
            );
        }
        Mode::LoseAnswer(suffix) if path.ends_with(*suffix) => {
            log.status = status;
            st.lock().unwrap().log.push(log);
            return json_answer(500, r#"{"code":"SYSTEM_ERROR","message":"系统错误"}"#, &[]);
        }
        _ => {}
    }
    log.status = status;
    log.serial = rh
        .get("wechatpay-serial")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    st.lock().unwrap().log.push(log);
    rh.remove(header::CONTENT_LENGTH);
    rh.remove(header::TRANSFER_ENCODING);
    let mut r = Response::builder().status(status);
    if let Some(h) = r.headers_mut() {
        *h = rh;
    }
    r.body(Body::from(rbody)).unwrap()
}

fn system_error_on(path: &str) -> Faults {
    Faults::global(FaultSet {
        endpoints: vec![EndpointFault {
            path: path.into(),
            method: Some("POST".into()),
            kind: EndpointFaultKind::SystemError,
            probability: 1.0,
            hang_ms: None,
        }],
        ..Default::default()
    })
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_key_mode_prepay_app_params_pay_query_and_notification() {
    let env = Env::start(VerifyMode::PublicKey).await;
    let g = env.gateway(env.pk_mode());
    g.init().await.unwrap();
    assert!(g.certificate_serials().is_empty());
    assert_eq!(g.merchant_id(), "v3-demo");
    assert_eq!(g.protocol(), wxpay_gateway::Protocol::V3);

    let rx = Receiver::start().await;
    let req = order("pkflow0000001", 100, &rx.url);
    let p = g.prepay(&req).await.unwrap();
    assert!(p.prepay_id.starts_with("wx"), "{}", p.prepay_id);
    assert_eq!(p.expires_at, T0 + 7200, "2 h from the clock");
    // The same request again is safe: same out_trade_no, same body, same prepay id.
    assert_eq!(g.prepay(&req).await.unwrap().prepay_id, p.prepay_id);

    // app_params: B.6, verified with the merchant's public key.
    env.clock.advance(5);
    let a = g.app_params(&p.prepay_id);
    assert_eq!(a.appid, DEMO_V3_APPID);
    assert_eq!(a.partnerid, DEMO_V3_MCHID);
    assert_eq!(a.prepayid, p.prepay_id);
    assert_eq!(a.package, "Sign=WXPay");
    assert_eq!(a.timestamp, (T0 + 5).to_string());
    assert_eq!(a.timestamp.len(), 10);
    assert_eq!(a.noncestr.len(), 32);
    let msg = app_pay_message(&a.appid, T0 + 5, &a.noncestr, &a.prepayid);
    assert!(
        merchant_key()
            .public_key()
            .verify_sha256_base64(&msg, &a.sign)
    );
    assert_ne!(
        g.app_params(&p.prepay_id).noncestr,
        a.noncestr,
        "fresh nonce"
    );

    assert_eq!(
        g.query("pkflow0000001").await.unwrap(),
        TradeStatus::NotPaid
    );

    let paid = env.h.pay_prepay(&p.prepay_id).unwrap();
    let tid = paid.transaction_id.clone().unwrap();
    let hit = rx.wait_event("TRANSACTION.SUCCESS").await;
    assert_eq!(
        header(&hit.headers, "wechatpay-serial"),
        DEMO_V3_PUBLIC_KEY_ID
    );
    let n = verify(&g, &hit.headers, &hit.body).unwrap();
    let Notification::Payment(pn) = n else {
        panic!("{n:?}")
    };
    assert!(pn.success);
    assert_eq!(pn.out_trade_no, "pkflow0000001");
    assert_eq!(pn.transaction_id, tid);
    assert_eq!(pn.amount, Fen::new(100));
    // the async variant agrees
    let again = g
        .verify_notify_refreshing(&InboundNotify {
            query: None,
            headers: &hit.headers,
            body: &hit.body,
        })
        .await
        .unwrap();
    assert_eq!(again, Notification::Payment(pn));

    assert_eq!(
        g.query("pkflow0000001").await.unwrap(),
        TradeStatus::Paid {
            transaction_id: tid,
            amount: Fen::new(100)
        }
    );
    // Paid: re-ordering the same number is refused by WeChat.
    assert!(matches!(
        g.prepay(&req).await,
        Err(GatewayError::Rejected { code, .. }) if code == "OUT_TRADE_NO_USED"
    ));
    env.h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_probe_stale_tampered_and_foreign_notifications_are_refused() {
    let env = Env::start(VerifyMode::PublicKey).await;
    let g = env.gateway(env.pk_mode());
    let hit = paid_order(&env, &g, "forge00000001", 100).await;
    assert!(verify(&g, &hit.headers, &hit.body).is_ok());

    // Tampered body (one byte of the ciphertext).
    let mut body = hit.body.clone();
    let text = String::from_utf8(body.clone()).unwrap();
    let at = text.find("\"ciphertext\":\"").unwrap() + 14;
    body[at] = if body[at] == b'A' { b'B' } else { b'A' };
    let msg = refused(verify(&g, &hit.headers, &body), "tampered body");
    assert!(msg.contains("bad signature"), "{msg}");

    // A tampered ciphertext that is correctly signed still does not decrypt.
    let signed = env.sign_pk(&body, env.clock.now());
    let msg = refused(verify(&g, &signed, &body), "tampered ciphertext");
    assert!(msg.contains("decrypt"), "{msg}");

    // SIGNTEST probe.
    let mut probe = hit.headers.clone();
    let sig = header(&hit.headers, "wechatpay-signature").to_string();
    set_header(
        &mut probe,
        "wechatpay-signature",
        &format!("WECHATPAY/SIGNTEST/{sig}"),
    );
    refused(verify(&g, &probe, &hit.body), "SIGNTEST probe");

    // Stale: the genuine notification replayed more than 300 s later.
    env.clock.advance(301);
    let msg = refused(verify(&g, &hit.headers, &hit.body), "stale");
    assert!(msg.contains("300"), "{msg}");
    env.clock.advance(-301);
    assert!(verify(&g, &hit.headers, &hit.body).is_ok());
    // ... and a correctly signed one whose timestamp is 301 s old.
    let old = env.sign_pk(&hit.body, env.clock.now() - 301);
    refused(verify(&g, &old, &hit.body), "old timestamp");
    let fresh = env.sign_pk(&hit.body, env.clock.now() - 299);
    assert!(verify(&g, &fresh, &hit.body).is_ok());

    // Unknown serial.
    let mut unknown = hit.headers.clone();
    set_header(
        &mut unknown,
        "wechatpay-serial",
        "PUB_KEY_ID_0000000000000000000000000099",
    );
    let msg = refused(verify(&g, &unknown, &hit.body), "unknown serial");
    assert!(msg.contains("unknown"), "{msg}");

    // Signed with another key under the right serial.
    let other = RsaPrivateKey::generate_2048().unwrap();
    let forged = headers_of(&SignedHeaders::sign(
        &other,
        DEMO_V3_PUBLIC_KEY_ID,
        env.clock.now(),
        "N",
        &hit.body,
    ));
    refused(verify(&g, &forged, &hit.body), "wrong key");

    // Missing headers.
    let no_sig: Vec<_> = hit
        .headers
        .iter()
        .filter(|(k, _)| k != "wechatpay-signature")
        .cloned()
        .collect();
    let msg = refused(verify(&g, &no_sig, &hit.body), "unsigned");
    assert!(msg.contains("Wechatpay-Signature"), "{msg}");

    // Genuinely signed, but for another merchant / another app.
    let body = envelope(
        "TRANSACTION.SUCCESS",
        "transaction",
        &paid_transaction("1900000001", DEMO_V3_APPID),
    );
    let msg = refused(
        verify(&g, &env.sign_pk(&body, env.clock.now()), &body),
        "mchid",
    );
    assert!(msg.contains("mchid 1900000001"), "{msg}");
    let body = envelope(
        "TRANSACTION.SUCCESS",
        "transaction",
        &paid_transaction(DEMO_V3_MCHID, "wx0000000000000000"),
    );
    let msg = refused(
        verify(&g, &env.sign_pk(&body, env.clock.now()), &body),
        "appid",
    );
    assert!(msg.contains("appid"), "{msg}");
    // ours, crafted with the right keys: accepted
    let body = envelope(
        "TRANSACTION.SUCCESS",
        "transaction",
        &paid_transaction(DEMO_V3_MCHID, DEMO_V3_APPID),
    );
    assert!(matches!(
        verify(&g, &env.sign_pk(&body, env.clock.now()), &body),
        Ok(Notification::Payment(p)) if p.amount == Fen::new(100) && p.success
    ));
    // Not JSON at all, but signed.
    let junk = b"not json".to_vec();
    refused(
        verify(&g, &env.sign_pk(&junk, env.clock.now()), &junk),
        "junk",
    );

    // Replies.
    let ok = g.notify_reply(true);
    assert_eq!((ok.status, ok.body.as_str()), (204, ""));
    let fail = g.notify_reply(false);
    assert!(fail.status >= 400);
    let v: serde_json::Value = serde_json::from_str(&fail.body).unwrap();
    assert_eq!(v["code"], "FAIL");
    assert!(v["message"].is_string());
    env.h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refund_status_query_and_refund_notification() {
    let env = Env::start(VerifyMode::PublicKey).await;
    let g = env.gateway(env.pk_mode());
    let hit = paid_order(&env, &g, "refund0000001", 300).await;
    let Ok(Notification::Payment(pn)) = verify(&g, &hit.headers, &hit.body) else {
        panic!("payment notification")
    };

    let rx = Receiver::start().await;
    let req = RefundRequest {
        out_trade_no: "refund0000001".into(),
        out_refund_no: "R-refund0000001-1".into(),
        refund: Fen::new(100),
        total: Fen::new(300),
        reason: Some("商品已售完".into()),
        notify_url: Some(rx.url.clone()),
    };
    let r = g.refund(&req).await.unwrap();
    assert_eq!(r.out_refund_no, "R-refund0000001-1");
    assert_eq!(r.refund, Fen::new(100));
    assert!(r.refund_id.is_some());
    assert!(
        ["PROCESSING", "SUCCESS"].contains(&r.status.as_str()),
        "{}",
        r.status
    );
    // Repeating the same refund (same out_refund_no, same body) is safe.
    let again = g.refund(&req).await.unwrap();
    assert_eq!(again.refund_id, r.refund_id);

    let hit = rx.wait_event("REFUND.SUCCESS").await;
    let n = verify(&g, &hit.headers, &hit.body).unwrap();
    let Notification::Refund(rn) = n else {
        panic!("{n:?}")
    };
    assert_eq!(rn.out_trade_no, "refund0000001");
    assert_eq!(rn.out_refund_no, "R-refund0000001-1");
    assert_eq!(Some(rn.refund_id.clone()), r.refund_id);
    assert_eq!(rn.status, "SUCCESS");
    assert_eq!(rn.refund, Fen::new(100));

    let q = g.query_refund("R-refund0000001-1").await.unwrap();
    assert_eq!(q.status, "SUCCESS");
    assert_eq!(q.refund, Fen::new(100));
    assert_eq!(
        g.query("refund0000001").await.unwrap(),
        TradeStatus::Refunded {
            transaction_id: pn.transaction_id,
            amount: Fen::new(300)
        }
    );
    // Unknown refund: a rejection, not a state.
    assert!(matches!(
        g.query_refund("R-nosuchrefund").await,
        Err(GatewayError::Rejected { code, .. }) if code == "RESOURCE_NOT_EXISTS"
    ));

    // A refund notification for another merchant is refused.
    let foreign = serde_json::to_vec(&RefundNotification {
        mchid: "1900000001".into(),
        out_trade_no: "refund0000001".into(),
        transaction_id: "42".into(),
        out_refund_no: "R1".into(),
        refund_id: "50".into(),
        refund_status: "SUCCESS".into(),
        success_time: None,
        user_received_account: None,
        amount: RefundNotificationAmount {
            total: 300,
            refund: 100,
            payer_total: 300,
            payer_refund: 100,
        },
    })
    .unwrap();
    let body = envelope("REFUND.SUCCESS", "refund", &foreign);
    refused(
        verify(&g, &env.sign_pk(&body, env.clock.now()), &body),
        "foreign refund",
    );
    env.h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_then_query_says_closed_and_unknown_is_not_found() {
    let env = Env::start(VerifyMode::PublicKey).await;
    let g = env.gateway(env.pk_mode());
    assert_eq!(
        g.query("nosuchorder01").await.unwrap(),
        TradeStatus::NotFound
    );

    let p = g
        .prepay(&order("close00000001", 50, "https://example.com/notify"))
        .await
        .unwrap();
    g.close("close00000001").await.unwrap();
    assert_eq!(g.query("close00000001").await.unwrap(), TradeStatus::Closed);
    g.close("close00000001").await.unwrap(); // closing twice is harmless
    assert!(
        env.h.pay_prepay(&p.prepay_id).is_err(),
        "a closed order cannot be paid"
    );

    // A paid order cannot be closed: the query after the error says so.
    let hit = paid_order(&env, &g, "close00000002", 50).await;
    assert!(verify(&g, &hit.headers, &hit.body).is_ok());
    assert!(matches!(
        g.close("close00000002").await,
        Err(GatewayError::Rejected { code, .. }) if code == "ORDER_PAID"
    ));
    // Unknown order: the close error stands.
    assert!(matches!(
        g.close("nosuchorder02").await,
        Err(GatewayError::Rejected { code, .. }) if code == "ORDER_NOT_EXIST"
    ));
    env.h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_whose_answers_are_lost_is_confirmed_by_query() {
    let env = Env::start(VerifyMode::PublicKey).await;
    let proxy = Proxy::start(env.h.sandbox.clone(), env.h.base_url.clone()).await;
    let g = env.gateway_at(&proxy.url, env.pk_mode());
    g.prepay(&order("lost000000001", 50, "https://example.com/notify"))
        .await
        .unwrap();
    proxy.set(Mode::LoseAnswer("/close"));
    g.close("lost000000001").await.unwrap();
    let closes = proxy.requests_to("/v3/pay/transactions/out-trade-no/lost000000001/close");
    assert_eq!(closes.len(), 3, "retried: closing twice is harmless");
    assert!(closes.iter().all(|c| c.body == closes[0].body));
    assert_eq!(g.query("lost000000001").await.unwrap(), TradeStatus::Closed);

    // When the query says it is still unpaid, the close error is reported.
    g.prepay(&order("lost000000002", 50, "https://example.com/notify"))
        .await
        .unwrap();
    proxy.set(Mode::LoseAnswer("/close"));
    env.h.set_faults(system_error_on(
        "/v3/pay/transactions/out-trade-no/lost000000002/close",
    ));
    assert!(matches!(
        g.close("lost000000002").await,
        Err(GatewayError::Transport(_))
    ));
    env.h.set_faults(Faults::none());
    assert_eq!(
        g.query("lost000000002").await.unwrap(),
        TradeStatus::NotPaid
    );
    env.h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_error_on_prepay_is_retried_with_identical_body_and_yields_one_order() {
    let env = Env::start(VerifyMode::PublicKey).await;
    let proxy = Proxy::start(env.h.sandbox.clone(), env.h.base_url.clone()).await;
    let g = env.gateway_at(&proxy.url, env.pk_mode());
    const PREPAY: &str = "/v3/pay/transactions/app";

    // First attempt: 500 SYSTEM_ERROR; the retry succeeds.
    env.h.set_faults(system_error_on(PREPAY));
    proxy.set(Mode::ClearFaultsAfterFirst(PREPAY));
    let req = order("retry00000001", 100, "https://example.com/notify");
    let p = g.prepay(&req).await.unwrap();
    let sent = proxy.requests_to(PREPAY);
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].status, 500);
    assert_eq!(sent[1].status, 200);
    assert_eq!(sent[0].body, sent[1].body, "identical body bytes");
    assert!(sent.iter().all(|s| s.method == "POST"));
    assert_eq!(env.h.fault_count("endpoint_system_error"), 1);
    let o = env.h.order_for(DEMO_V3_MCHID, "retry00000001").unwrap();
    assert_eq!(o.prepay_id, p.prepay_id);
    assert_eq!(o.amount, 100);
    assert_eq!(
        env.h
            .notifications()
            .iter()
            .filter(|n| n.out_trade_no == "retry00000001")
            .count(),
        0
    );

    // Every attempt fails: Transport (outcome unknown) after 3 identical attempts...
    proxy.clear_log();
    proxy.set(Mode::Pass);
    env.h.set_faults(system_error_on(PREPAY));
    let req2 = order("retry00000002", 100, "https://example.com/notify");
    assert!(matches!(
        g.prepay(&req2).await,
        Err(GatewayError::Transport(_))
    ));
    let sent = proxy.requests_to(PREPAY);
    assert_eq!(sent.len(), 3);
    assert!(
        sent.iter()
            .all(|s| s.body == sent[0].body && s.status == 500)
    );
    // ... and sending it again later gives one order, under the same number.
    env.h.set_faults(Faults::none());
    let p2 = g.prepay(&req2).await.unwrap();
    assert_eq!(proxy.requests_to(PREPAY).last().unwrap().body, sent[0].body);
    assert_eq!(
        env.h
            .order_for(DEMO_V3_MCHID, "retry00000002")
            .unwrap()
            .prepay_id,
        p2.prepay_id
    );
    env.h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_tampered_or_probe_answers_are_verification_errors() {
    let env = Env::start(VerifyMode::PublicKey).await;
    let proxy = Proxy::start(env.h.sandbox.clone(), env.h.base_url.clone()).await;
    let g = env.gateway_at(&proxy.url, env.pk_mode());
    g.prepay(&order("tamper0000001", 100, "https://example.com/notify"))
        .await
        .unwrap();
    assert_eq!(
        g.query("tamper0000001").await.unwrap(),
        TradeStatus::NotPaid
    );

    for mode in [Mode::StripSignature, Mode::AppendSpace, Mode::Signtest] {
        proxy.set(mode.clone());
        match g.query("tamper0000001").await {
            Err(GatewayError::Verification(msg)) => {
                assert!(!msg.is_empty());
            }
            other => panic!("{mode:?}: {other:?}"),
        }
        // A 2xx prepay answer is checked just the same.
        assert!(
            matches!(
                g.prepay(&order("tamper0000001", 100, "https://example.com/notify"))
                    .await,
                Err(GatewayError::Verification(_))
            ),
            "{mode:?}"
        );
    }
    // A signed error answer with a probe signature is not taken as "not found".
    proxy.set(Mode::Signtest);
    assert!(matches!(
        g.query("nosuchorder03").await,
        Err(GatewayError::Verification(_))
    ));
    proxy.set(Mode::Pass);
    assert_eq!(
        g.query("nosuchorder03").await.unwrap(),
        TradeStatus::NotFound
    );
    env.h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_call_honours_retry_after() {
    let env = Env::start(VerifyMode::PublicKey).await;
    let proxy = Proxy::start(env.h.sandbox.clone(), env.h.base_url.clone()).await;
    let g = env.gateway_at(&proxy.url, env.pk_mode());
    const Q: &str = "/v3/pay/transactions/out-trade-no/nosuchorder04";

    proxy.set(Mode::RateLimitOnce {
        path: Q,
        retry_after: "1",
    });
    assert_eq!(
        g.query("nosuchorder04").await.unwrap(),
        TradeStatus::NotFound
    );
    let sent = proxy.requests_to(Q);
    assert_eq!(
        sent.iter().map(|s| s.status).collect::<Vec<_>>(),
        vec![429, 404]
    );

    // Longer than the policy allows: not waited for, the call fails as Transport.
    proxy.clear_log();
    proxy.set(Mode::RateLimitOnce {
        path: Q,
        retry_after: "3600",
    });
    assert!(matches!(
        g.query("nosuchorder04").await,
        Err(GatewayError::Transport(msg)) if msg.contains("3600")
    ));
    assert_eq!(proxy.requests_to(Q).len(), 1);
    env.h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emoji_description_is_invalid_without_any_http_call() {
    let rx = Receiver::start().await;
    let base = rx.url.trim_end_matches("/notify/v3-demo").to_string();
    let key = RsaPrivateKey::generate_2048().unwrap().public_key();
    let clock = Arc::new(TestClock(AtomicI64::new(T0)));
    let g = gateway(
        &base,
        V3Verification::PublicKey {
            id: DEMO_V3_PUBLIC_KEY_ID.into(),
            key,
        },
        clock,
    );
    let mut req = order("emoji00000001", 100, "https://example.com/notify");
    req.description = "好物😀".into();
    match g.prepay(&req).await {
        Err(GatewayError::Invalid(msg)) => {
            assert!(
                msg.contains("description") && msg.contains("4-byte"),
                "{msg}"
            )
        }
        other => panic!("{other:?}"),
    }
    let mut req = order("emoji00000002", 100, "https://example.com/notify");
    req.attach = Some("🎉".into());
    assert!(matches!(
        g.prepay(&req).await,
        Err(GatewayError::Invalid(_))
    ));
    let req = order("bad/number", 100, "https://example.com/notify");
    assert!(matches!(
        g.prepay(&req).await,
        Err(GatewayError::Invalid(_))
    ));
    assert!(matches!(
        g.query("../x?y").await,
        Err(GatewayError::Invalid(_))
    ));
    assert!(matches!(
        g.close("a b c d e").await,
        Err(GatewayError::Invalid(_))
    ));
    let refund = RefundRequest {
        out_trade_no: "emoji00000001".into(),
        out_refund_no: "R1".into(),
        refund: Fen::new(10),
        total: Fen::new(100),
        reason: Some("退款😀".into()),
        notify_url: None,
    };
    assert!(matches!(
        g.refund(&refund).await,
        Err(GatewayError::Invalid(_))
    ));
    assert!(matches!(
        g.refund(&RefundRequest {
            reason: None,
            refund: Fen::new(101),
            ..refund.clone()
        })
        .await,
        Err(GatewayError::Invalid(_))
    ));
    assert!(matches!(
        g.query_refund("R#1").await,
        Err(GatewayError::Invalid(_))
    ));
    assert!(rx.hits().is_empty(), "WeChat never saw any of these");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_certificate_mode_with_rotation_refreshes_once() {
    let env = Env::start(VerifyMode::PlatformCertificate).await;
    let g = env.gateway(V3Verification::PlatformCertificates);
    assert!(g.certificate_serials().is_empty());
    g.init().await.unwrap();
    let listed: Vec<String> = env
        .h
        .platform_certificates(DEMO_V3_MCHID)
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(g.certificate_serials(), listed);
    assert_eq!(g.certificate_downloads(), 1);

    // Responses and notifications signed by the certificate verify.
    let hit = paid_order(&env, &g, "cert000000001", 100).await;
    assert_eq!(header(&hit.headers, "wechatpay-serial"), listed[0]);
    assert!(matches!(
        verify(&g, &hit.headers, &hit.body),
        Ok(Notification::Payment(p)) if p.success
    ));
    assert!(matches!(
        g.query("cert000000001").await.unwrap(),
        TradeStatus::Paid { .. }
    ));
    assert_eq!(g.certificate_downloads(), 1);

    // Rotation: the new certificate signs; one download makes it known.
    let serials = env.h.rotate_certificates(DEMO_V3_MCHID).unwrap();
    assert_eq!(serials.len(), 2);
    let newest = serials[1].clone();
    assert!(!g.certificate_serials().contains(&newest));
    assert!(matches!(
        g.query("cert000000001").await.unwrap(),
        TradeStatus::Paid { .. }
    ));
    assert_eq!(g.certificate_downloads(), 2);
    let mut sorted = serials.clone();
    sorted.sort();
    assert_eq!(g.certificate_serials(), sorted);
    assert_eq!(
        g.query("nosuchorder05").await.unwrap(),
        TradeStatus::NotFound
    );
    assert_eq!(
        g.certificate_downloads(),
        2,
        "a known serial needs no download"
    );
    // the old certificate still verifies (overlap)
    assert!(verify(&g, &hit.headers, &hit.body).is_ok());

    // The periodic refresh is not rate-limited.
    assert_eq!(g.refresh_certificates().await.unwrap(), 2);
    assert_eq!(g.certificate_downloads(), 3);
    env.h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notification_with_unknown_serial_refreshes_rate_limited() {
    let env = Env::start(VerifyMode::PlatformCertificate).await;
    let g = env.gateway(V3Verification::PlatformCertificates);
    g.init().await.unwrap();
    let rx = Receiver::start().await;

    // A response with an unknown serial: one on-demand download (clock T0).
    env.h.rotate_certificates(DEMO_V3_MCHID).unwrap();
    let p = g
        .prepay(&order("unk0000000001", 100, &rx.url))
        .await
        .unwrap();
    assert_eq!(g.certificate_downloads(), 2);

    // Rotate again at once: the next on-demand download is rate-limited (60 s by the clock).
    let serials = env.h.rotate_certificates(DEMO_V3_MCHID).unwrap();
    let newest = serials.last().unwrap().clone();
    env.h.pay_prepay(&p.prepay_id).unwrap();
    let hit = rx.wait_event("TRANSACTION.SUCCESS").await;
    assert_eq!(header(&hit.headers, "wechatpay-serial"), newest);
    let msg = refused(verify(&g, &hit.headers, &hit.body), "unknown serial");
    assert!(msg.contains("unknown"), "{msg}");
    assert!(matches!(
        g.query("unk0000000001").await,
        Err(GatewayError::Verification(_))
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(g.certificate_downloads(), 2, "rate-limited");

    // 61 s later: the refused notification starts a background download; WeChat's retry verifies.
    env.clock.advance(61);
    refused(verify(&g, &hit.headers, &hit.body), "still unknown");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !g.certificate_serials().contains(&newest) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no background refresh"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(g.certificate_downloads(), 3);
    assert!(matches!(
        verify(&g, &hit.headers, &hit.body),
        Ok(Notification::Payment(p)) if p.out_trade_no == "unk0000000001"
    ));

    // The inline variant: rotate, 61 s later a notification with the new serial verifies at once.
    let p = g
        .prepay(&order("unk0000000002", 100, &rx.url))
        .await
        .unwrap();
    env.h.rotate_certificates(DEMO_V3_MCHID).unwrap();
    env.clock.advance(61);
    env.h.pay_prepay(&p.prepay_id).unwrap();
    let hit = rx.wait_payment("unk0000000002").await;
    let dyn_gateway: &dyn Gateway = &g;
    let n = dyn_gateway
        .verify_notify_async(&InboundNotify {
            query: None,
            headers: &hit.headers,
            body: &hit.body,
        })
        .await
        .unwrap();
    assert!(matches!(n, Notification::Payment(p) if p.out_trade_no == "unk0000000002"));
    assert_eq!(g.certificate_downloads(), 4);

    // A made-up serial never verifies, and within 60 s causes no further download.
    let mut fake = hit.headers.clone();
    set_header(&mut fake, "wechatpay-serial", "1234567890ABCDEF");
    let r = g
        .verify_notify_refreshing(&InboundNotify {
            query: None,
            headers: &fake,
            body: &hit.body,
        })
        .await;
    refused(r, "made-up serial");
    assert_eq!(g.certificate_downloads(), 4);
    env.h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_mode_uses_public_key_for_its_id_and_certificates_otherwise() {
    let env = Env::start(VerifyMode::PlatformCertificate).await;
    let proxy = Proxy::start(env.h.sandbox.clone(), env.h.base_url.clone()).await;
    let g = env.gateway_at(&proxy.url, env.combined_mode());
    g.init().await.unwrap();
    let cert_serial = env.h.platform_certificates(DEMO_V3_MCHID)[0].0.clone();
    assert_eq!(g.certificate_serials(), vec![cert_serial.clone()]);
    // The certificate list is signed by a certificate it carries.
    assert_eq!(
        proxy.requests_to("/v3/certificates")[0].serial.as_deref(),
        Some(cert_serial.as_str())
    );

    // API answers are asked for (and verified with) the public key.
    let hit = paid_order(&env, &g, "comb000000001", 100).await;
    let q = proxy.requests_to("/v3/pay/transactions/app");
    assert_eq!(q[0].serial.as_deref(), Some(DEMO_V3_PUBLIC_KEY_ID));
    assert!(matches!(
        g.query("comb000000001").await.unwrap(),
        TradeStatus::Paid { .. }
    ));

    // The notification is signed by the platform certificate.
    assert_eq!(header(&hit.headers, "wechatpay-serial"), cert_serial);
    assert!(verify(&g, &hit.headers, &hit.body).is_ok());
    // The same body signed with the public key under its id.
    let pk_signed = env.sign_pk(&hit.body, env.clock.now());
    assert!(verify(&g, &pk_signed, &hit.body).is_ok());
    // Public-key signature under the certificate serial: no fallback.
    let mut mixed = pk_signed.clone();
    set_header(&mut mixed, "wechatpay-serial", &cert_serial);
    refused(verify(&g, &mixed, &hit.body), "pk signature, cert serial");
    // Certificate signature under the public-key id: no fallback either.
    let mut mixed = hit.headers.clone();
    set_header(&mut mixed, "wechatpay-serial", DEMO_V3_PUBLIC_KEY_ID);
    refused(verify(&g, &mixed, &hit.body), "cert signature, pk id");
    env.h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_mode_needs_certificates_combined_mode_does_not() {
    // The sandbox merchant has only a public key: /v3/certificates answers 404.
    let env = Env::start(VerifyMode::PublicKey).await;
    let g = env.gateway(V3Verification::PlatformCertificates);
    assert!(matches!(
        g.init().await,
        Err(GatewayError::Rejected { code, .. }) if code == "RESOURCE_NOT_EXISTS"
    ));
    let c = env.gateway(env.combined_mode());
    c.init().await.unwrap();
    assert!(c.certificate_serials().is_empty());
    c.prepay(&order("combpk0000001", 100, "https://example.com/notify"))
        .await
        .unwrap();
    assert_eq!(
        c.query("combpk0000001").await.unwrap(),
        TradeStatus::NotPaid
    );
    env.h.shutdown().await;
}
