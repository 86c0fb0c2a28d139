//! `V3Gateway::download_trade_bill` against the in-process sandbox: tradebill → download URL →
//! gunzip → SHA-1 check → CSV parsed exactly; no bill, bill still being made, bad dates; a proxy
//! in front of the sandbox tampers with the file or loses an answer.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use wxpay_gateway::v3::{RetryPolicy, V3Config, V3Gateway, V3Options, V3Verification};
use wxpay_gateway::{Gateway, GatewayError, PrepayRequest, RefundRequest};
use wxpay_proto::Fen;
use wxpay_proto::bill::parse_trade_bill;
use wxpay_proto::v3::aead::ApiV3Key;
use wxpay_proto::v3::rsa::{RsaPrivateKey, RsaPublicKey};
use wxpay_sandbox::config::{
    DEMO_MERCHANT_PRIVATE_KEY_PEM, DEMO_V3_APIV3_KEY, DEMO_V3_APPID, DEMO_V3_MCHID,
    DEMO_V3_SERIAL_NO,
};
use wxpay_sandbox::{RefundRule, Sandbox, SandboxConfig, SandboxHandle, SandboxOptions};

/// 2023-11-15T06:13:20+08:00: the trades happen on Beijing day 2023-11-15.
const T0: i64 = 1_700_000_000;
const DAY: &str = "2023-11-15";

#[derive(Debug)]
struct TestClock(AtomicI64);

impl wxpay_gateway::Clock for TestClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst) * 1000
    }
}

impl wxpay_sandbox::Clock for TestClock {
    fn now_unix(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

struct Env {
    h: SandboxHandle,
    clock: Arc<TestClock>,
    notify_url: String,
}

impl Env {
    async fn start() -> Env {
        let clock = Arc::new(TestClock(AtomicI64::new(T0)));
        let cfg = SandboxConfig {
            refund_min_interval_secs: 0,
            ..SandboxConfig::demo()
        };
        let h = Sandbox::new(
            cfg,
            SandboxOptions {
                time_scale: 0.02,
                seed: 5,
                clock: clock.clone(),
            },
        )
        .unwrap()
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
        // Refunds stay PROCESSING until the test completes them.
        h.set_refund_rule(
            None,
            RefundRule {
                outcome: "MANUAL".into(),
                delay_secs: 0.0,
            },
        );
        // Notifications go to a receiver that takes them all.
        let app = Router::new().fallback(|| async { StatusCode::NO_CONTENT });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Env {
            h,
            clock,
            notify_url: format!("http://{addr}/notify/v3-demo"),
        }
    }

    fn advance(&self, secs: i64) {
        self.clock.0.fetch_add(secs, Ordering::SeqCst);
    }

    fn gateway(&self, base_url: &str) -> V3Gateway {
        let (pem, id) = self.h.wechatpay_public_key(DEMO_V3_MCHID);
        let cfg = V3Config {
            merchant_id: "v3-demo".into(),
            base_url: base_url.to_string(),
            appid: DEMO_V3_APPID.into(),
            mchid: DEMO_V3_MCHID.into(),
            serial_no: DEMO_V3_SERIAL_NO.into(),
            private_key: RsaPrivateKey::from_pkcs8_pem(DEMO_MERCHANT_PRIVATE_KEY_PEM).unwrap(),
            apiv3_key: ApiV3Key::new(DEMO_V3_APIV3_KEY).unwrap(),
            verification: V3Verification::PublicKey {
                id,
                key: RsaPublicKey::from_spki_pem(&pem).unwrap(),
            },
            allow_http: true,
        };
        V3Gateway::with_options(
            cfg,
            wxpay_gateway::http::client(Default::default()),
            self.clock.clone(),
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

    /// Prepay and pay `no` at the sandbox.
    async fn pay(&self, g: &V3Gateway, no: &str, amount: i64) {
        let p = g
            .prepay(&PrepayRequest {
                out_trade_no: no.into(),
                description: "对账测试".into(),
                amount: Fen::new(amount),
                client_ip: "14.23.150.211".into(),
                notify_url: self.notify_url.clone(),
                attach: None,
                time_start: T0,
                time_expire: Some(T0 + 3600),
                trace_id: "u1".into(),
            })
            .await
            .unwrap();
        self.h.pay_prepay(&p.prepay_id).unwrap();
    }

    /// Two payments (1.00 and 2.50 yuan) and a successful refund of 0.50 of the second.
    async fn trade(&self, g: &V3Gateway) {
        self.pay(g, "bill0000001", 100).await;
        self.pay(g, "bill0000002", 250).await;
        let r = g
            .refund(&RefundRequest {
                out_trade_no: "bill0000002".into(),
                out_refund_no: "RF-bill0000002".into(),
                refund: Fen::new(50),
                total: Fen::new(250),
                reason: None,
                notify_url: Some(self.notify_url.clone()),
            })
            .await
            .unwrap();
        assert_eq!(r.status, "PROCESSING");
        self.h
            .complete_refund(Some(DEMO_V3_MCHID), "RF-bill0000002", "SUCCESS")
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trade_bill_is_downloaded_gunzipped_checked_and_parses_exactly() {
    let env = Env::start().await;
    let g = env.gateway(&env.h.base_url);
    env.trade(&g).await;

    // Today's bill is still being made; a bad date never leaves the process.
    assert!(matches!(
        g.download_trade_bill(DAY).await,
        Err(GatewayError::Rejected { code, .. }) if code == "STATEMENT_CREATING"
    ));
    for bad in ["2023-11-5", "20231115", "2023-13-01", "2023-11-15&x=1"] {
        assert!(
            matches!(
                g.download_trade_bill(bad).await,
                Err(GatewayError::Invalid(_))
            ),
            "{bad}"
        );
    }

    // The next morning, 10:00 Beijing time.
    env.advance(86_400 + 4 * 3600);
    let text = g
        .download_trade_bill(DAY)
        .await
        .unwrap()
        .expect("a bill for a day with trades");
    let bill = parse_trade_bill(&text).unwrap();
    assert_eq!(bill.rows.len(), 3, "{text}");
    let row = |no: &str, state: &str| {
        bill.rows
            .iter()
            .find(|r| r.out_trade_no == no && r.trade_state == state)
            .unwrap_or_else(|| panic!("no {state} row for {no}: {text}"))
    };
    let p1 = row("bill0000001", "SUCCESS");
    assert_eq!(p1.mchid, DEMO_V3_MCHID);
    assert_eq!(p1.settlement_total, Fen::new(100));
    assert_eq!(p1.order_amount, Fen::new(100));
    assert!(p1.trade_time.starts_with(DAY), "{}", p1.trade_time);
    assert!(!p1.transaction_id.is_empty());
    assert_eq!(
        row("bill0000002", "SUCCESS").settlement_total,
        Fen::new(250)
    );
    let rf = row("bill0000002", "REFUND");
    assert_eq!(rf.out_refund_no, "RF-bill0000002");
    assert_eq!(rf.refund_amount, Fen::new(50));
    assert_eq!(rf.refund_status, "SUCCESS");
    assert_eq!(bill.summary.total_count, 3);
    assert_eq!(bill.summary.settlement_total, Fen::new(350));
    assert_eq!(bill.summary.refund_total, Fen::new(50));

    // A day without trades has no bill.
    assert_eq!(g.download_trade_bill("2023-11-14").await.unwrap(), None);
    // Legacy merchants (and anything else without a bill API) say so.
    struct NoBill;
    #[async_trait::async_trait]
    impl Gateway for NoBill {
        fn merchant_id(&self) -> &str {
            "x"
        }
        fn protocol(&self) -> wxpay_gateway::Protocol {
            wxpay_gateway::Protocol::Legacy
        }
        async fn prepay(&self, _: &PrepayRequest) -> Result<wxpay_gateway::Prepay, GatewayError> {
            Err(GatewayError::Unsupported("prepay"))
        }
        fn app_params(&self, _: &str) -> wxpay_gateway::AppParams {
            empty_params()
        }
        async fn query(&self, _: &str) -> Result<wxpay_gateway::TradeStatus, GatewayError> {
            Err(GatewayError::Unsupported("query"))
        }
        async fn close(&self, _: &str) -> Result<(), GatewayError> {
            Ok(())
        }
        fn verify_notify(
            &self,
            _: &wxpay_gateway::InboundNotify<'_>,
        ) -> Result<wxpay_gateway::Notification, GatewayError> {
            Err(GatewayError::Unsupported("notify"))
        }
        fn notify_reply(&self, _: bool) -> wxpay_gateway::NotifyReply {
            wxpay_gateway::NotifyReply {
                status: 200,
                content_type: "text/plain",
                body: String::new(),
            }
        }
    }
    assert!(matches!(
        NoBill.download_trade_bill(DAY).await,
        Err(GatewayError::Unsupported(_))
    ));
    env.h.shutdown().await;
}

fn empty_params() -> wxpay_gateway::AppParams {
    wxpay_gateway::AppParams {
        appid: String::new(),
        partnerid: String::new(),
        prepayid: String::new(),
        package: String::new(),
        noncestr: String::new(),
        timestamp: String::new(),
        sign: String::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// A proxy in front of the sandbox that can tamper with the bill file or lose an answer.

#[derive(Clone, Copy, PartialEq, Debug)]
enum FileMode {
    Pass,
    /// Change one amount in the (uncompressed) CSV and gzip it again.
    Tamper,
    /// Answer the first download with a bare 500, forward the rest.
    LoseFirst,
}

struct Proxy {
    url: String,
    mode: Arc<std::sync::Mutex<FileMode>>,
    downloads: Arc<AtomicU32>,
    /// Authorization headers seen on downloads.
    signed_downloads: Arc<AtomicU32>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let mode = Arc::new(std::sync::Mutex::new(FileMode::Pass));
        let downloads = Arc::new(AtomicU32::new(0));
        let signed = Arc::new(AtomicU32::new(0));
        let (m, d, s) = (mode.clone(), downloads.clone(), signed.clone());
        let client = reqwest::Client::new();
        let app = Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let (m, d, s, client, upstream) = (
                    m.clone(),
                    d.clone(),
                    s.clone(),
                    client.clone(),
                    upstream.clone(),
                );
                async move {
                    let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
                    let is_file = uri.path() == "/v3/billdownload/file";
                    let mode = *m.lock().unwrap();
                    if is_file {
                        let n = d.fetch_add(1, Ordering::SeqCst);
                        if headers
                            .get(header::AUTHORIZATION)
                            .and_then(|v| v.to_str().ok())
                            .is_some_and(|a| a.starts_with("WECHATPAY2-SHA256-RSA2048 "))
                        {
                            s.fetch_add(1, Ordering::SeqCst);
                        }
                        if mode == FileMode::LoseFirst && n == 0 {
                            return Response::builder().status(500).body(Body::empty()).unwrap();
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
                    let mut bytes = resp.bytes().await.unwrap().to_vec();
                    if is_file && mode == FileMode::Tamper && status == 200 {
                        let mut csv = String::new();
                        flate2::read::GzDecoder::new(&bytes[..])
                            .read_to_string(&mut csv)
                            .unwrap();
                        let csv = csv.replacen("`1.00,", "`0.01,", 1);
                        let mut enc = flate2::write::GzEncoder::new(
                            Vec::new(),
                            flate2::Compression::default(),
                        );
                        enc.write_all(csv.as_bytes()).unwrap();
                        bytes = enc.finish().unwrap();
                    }
                    rh.remove(header::CONTENT_LENGTH);
                    rh.remove(header::TRANSFER_ENCODING);
                    let mut r = Response::builder().status(status);
                    if let Some(h) = r.headers_mut() {
                        *h = rh;
                    }
                    r.body(Body::from(bytes)).unwrap()
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
            mode,
            downloads,
            signed_downloads: signed,
        }
    }

    fn set(&self, mode: FileMode) {
        *self.mode.lock().unwrap() = mode;
        self.downloads.store(0, Ordering::SeqCst);
        self.signed_downloads.store(0, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_file_fails_the_sha1_check_and_a_lost_download_is_retried() {
    let env = Env::start().await;
    let direct = env.gateway(&env.h.base_url);
    env.trade(&direct).await;
    env.advance(86_400 + 4 * 3600);
    let proxy = Proxy::start(env.h.base_url.clone()).await;
    let g = env.gateway(&proxy.url);

    // Through the proxy untouched: the download is a signed GET and the bill arrives intact.
    let clean = g.download_trade_bill(DAY).await.unwrap().unwrap();
    assert_eq!(
        clean,
        direct.download_trade_bill(DAY).await.unwrap().unwrap()
    );
    assert_eq!(proxy.downloads.load(Ordering::SeqCst), 1);
    assert_eq!(proxy.signed_downloads.load(Ordering::SeqCst), 1);

    // One amount changed on the way: the SHA-1 of the uncompressed file no longer matches.
    proxy.set(FileMode::Tamper);
    match g.download_trade_bill(DAY).await {
        Err(GatewayError::Verification(msg)) => assert!(msg.contains("SHA-1"), "{msg}"),
        other => panic!("expected a verification error, got {other:?}"),
    }

    // A lost answer to the download is retried with the same signed GET.
    proxy.set(FileMode::LoseFirst);
    let again = g.download_trade_bill(DAY).await.unwrap().unwrap();
    assert_eq!(again, clean);
    assert_eq!(proxy.downloads.load(Ordering::SeqCst), 2);
    env.h.shutdown().await;
}
