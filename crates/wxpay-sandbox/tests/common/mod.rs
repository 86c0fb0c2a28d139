//! Test helpers: a scripted notification receiver and clients built only from wxpay-proto +
//! reqwest.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::IntoResponse;
use serde_json::Value;
use wxpay_proto::SecretString;
use wxpay_proto::form::Charset;
use wxpay_proto::legacy::{GenPrepayRequest, OrderQueryRequest, Package};
use wxpay_proto::money::Fen;
use wxpay_proto::v3::auth::MerchantSigner;
use wxpay_proto::v3::rsa::{RsaPrivateKey, RsaPublicKey};
use wxpay_proto::v3::verify::{PublicKeyVerifier, SignedHeaders, Verifier, validate};
use wxpay_sandbox::config::{
    DEMO_LEGACY_APP_KEY, DEMO_LEGACY_APPID, DEMO_LEGACY_PARTNER, DEMO_LEGACY_PARTNER_KEY,
    DEMO_MERCHANT_PRIVATE_KEY_PEM, DEMO_V3_MCHID, DEMO_V3_SERIAL_NO,
};
use wxpay_sandbox::{
    Clock, DEMO_LEGACY_APP_SECRET, ManualClock, Sandbox, SandboxConfig, SandboxHandle,
    SandboxOptions,
};

pub const T0: i64 = 1_700_000_000; // 2023-11-15T06:13:20+08:00

pub fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_string())
}

/// A sandbox on a random port with a manual clock at T0.
pub async fn start_manual(
    config: SandboxConfig,
    time_scale: f64,
) -> (SandboxHandle, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let options = SandboxOptions {
        time_scale,
        seed: 7,
        clock: clock.clone(),
    };
    let h = Sandbox::new(config, options)
        .unwrap()
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    (h, clock)
}

pub async fn start(time_scale: f64) -> (SandboxHandle, Arc<ManualClock>) {
    start_manual(SandboxConfig::demo(), time_scale).await
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// A notify receiver that answers from a script.

#[derive(Clone, Debug)]
pub struct Hit {
    pub at: Instant,
    pub path_and_query: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Hit {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub delay_ms: u64,
}

pub fn reply(status: u16, body: &str) -> Reply {
    Reply {
        status,
        body: body.to_string(),
        delay_ms: 0,
    }
}

#[derive(Clone)]
struct RecvState {
    hits: Arc<Mutex<Vec<Hit>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    default: Reply,
}

pub struct Receiver {
    pub url: String,
    pub hits: Arc<Mutex<Vec<Hit>>>,
}

impl Receiver {
    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
    pub async fn wait_hits(&self, n: usize, timeout: Duration) -> Vec<Hit> {
        let deadline = Instant::now() + timeout;
        loop {
            let h = self.hits();
            if h.len() >= n || Instant::now() > deadline {
                return h;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn recv(
    State(s): State<RecvState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    s.hits.lock().unwrap().push(Hit {
        at: Instant::now(),
        path_and_query: uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        query: uri.query().unwrap_or("").to_string(),
        headers,
        body: body.to_vec(),
    });
    let r = s
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| s.default.clone());
    if r.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(r.delay_ms)).await;
    }
    (axum::http::StatusCode::from_u16(r.status).unwrap(), r.body)
}

pub async fn receiver(script: Vec<Reply>, default: Reply) -> Receiver {
    let state = RecvState {
        hits: Arc::new(Mutex::new(Vec::new())),
        script: Arc::new(Mutex::new(script.into())),
        default,
    };
    let hits = state.hits.clone();
    let app = Router::new().fallback(recv).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Receiver {
        url: format!("http://{addr}/notify"),
        hits,
    }
}

// ---------------------------------------------------------------------------------------------
// Legacy client (PROTOCOL.md A) from wxpay-proto only.

pub async fn get_json(url: &str) -> (u16, Value) {
    let r = http().get(url).send().await.unwrap();
    let s = r.status().as_u16();
    (
        s,
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null),
    )
}

pub async fn post_json(url: &str, body: &str) -> (u16, Value) {
    let r = http()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (
        s,
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null),
    )
}

pub async fn legacy_token(base: &str) -> String {
    let (_, v) = get_json(&format!(
        "{base}/cgi-bin/token?grant_type=client_credential&appid={DEMO_LEGACY_APPID}&secret={DEMO_LEGACY_APP_SECRET}"
    ))
    .await;
    v["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("token: {v}"))
        .to_string()
}

pub fn package(out_trade_no: &str, total: i64, notify_url: &str) -> Package {
    Package {
        bank_type: "WX".into(),
        body: "支付测试".into(),
        attach: Some("attach-1".into()),
        partner: DEMO_LEGACY_PARTNER.into(),
        out_trade_no: out_trade_no.into(),
        total_fee: Fen::new(total),
        fee_type: "1".into(),
        notify_url: notify_url.into(),
        spbill_create_ip: "196.168.1.1".into(),
        time_start: None,
        time_expire: None,
        transport_fee: None,
        product_fee: None,
        goods_tag: None,
        input_charset: Charset::Utf8,
    }
}

pub fn signed_package(p: &Package) -> String {
    p.sign(&secret(DEMO_LEGACY_PARTNER_KEY)).unwrap().package
}

pub fn genprepay_body(package: &str, now: i64) -> GenPrepayRequest {
    GenPrepayRequest::new(
        DEMO_LEGACY_APPID,
        "trace_user_1",
        "e7d161ac8d8a76529d39d9f5b4249ccb",
        package,
        now,
        &secret(DEMO_LEGACY_APP_KEY),
    )
}

pub async fn genprepay_raw(base: &str, token: &str, body: &str) -> Value {
    post_json(&format!("{base}/pay/genprepay?access_token={token}"), body)
        .await
        .1
}

pub async fn genprepay(base: &str, token: &str, p: &Package, now: i64) -> Value {
    let req = genprepay_body(&signed_package(p), now);
    genprepay_raw(base, token, &serde_json::to_string(&req).unwrap()).await
}

pub async fn orderquery(base: &str, token: &str, out_trade_no: &str, now: i64) -> Value {
    let req = OrderQueryRequest::new(
        DEMO_LEGACY_APPID,
        DEMO_LEGACY_PARTNER,
        out_trade_no,
        now,
        &secret(DEMO_LEGACY_PARTNER_KEY),
        &secret(DEMO_LEGACY_APP_KEY),
    );
    post_json(
        &format!("{base}/pay/orderquery?access_token={token}"),
        &serde_json::to_string(&req).unwrap(),
    )
    .await
    .1
}

// ---------------------------------------------------------------------------------------------
// v3 client from wxpay-proto only.

pub struct V3Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl V3Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or("").to_string()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn signed_headers(&self) -> SignedHeaders {
        SignedHeaders::from_lookup(|n| self.header(n)).expect("signed headers")
    }
    pub fn verify(&self, v: &dyn Verifier, now: i64) -> bool {
        match SignedHeaders::from_lookup(|n| self.header(n)) {
            Ok(h) => validate(v, &h, &self.body, now).is_ok(),
            Err(_) => false,
        }
    }
}

pub struct V3Client {
    pub base: String,
    pub signer: MerchantSigner,
    pub clock: Arc<dyn Clock>,
    pub http: reqwest::Client,
    pub nonce: Mutex<u64>,
}

impl V3Client {
    pub fn demo(base: &str, clock: Arc<dyn Clock>) -> Self {
        let key = RsaPrivateKey::from_pkcs8_pem(DEMO_MERCHANT_PRIVATE_KEY_PEM).unwrap();
        V3Client {
            base: base.to_string(),
            signer: MerchantSigner::new(DEMO_V3_MCHID, DEMO_V3_SERIAL_NO, key),
            clock,
            http: http(),
            nonce: Mutex::new(0),
        }
    }

    pub async fn call(&self, method: &str, url: &str, body: Option<&str>) -> V3Resp {
        self.call_with(method, url, body, &[]).await
    }

    pub async fn call_with(
        &self,
        method: &str,
        url: &str,
        body: Option<&str>,
        extra: &[(&str, &str)],
    ) -> V3Resp {
        let nonce = {
            let mut n = self.nonce.lock().unwrap();
            *n += 1;
            format!("NONCE{:027}", *n)
        };
        let b = body.unwrap_or("");
        let auth =
            self.signer
                .authorization(method, url, self.clock.now_unix(), &nonce, b.as_bytes());
        let mut rb = self
            .http
            .request(method.parse().unwrap(), format!("{}{}", self.base, url))
            .header("Authorization", auth)
            .header("Accept", "application/json")
            .header("User-Agent", "wxpay-sandbox-tests/1.0");
        if body.is_some() {
            rb = rb
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        for (k, v) in extra {
            rb = rb.header(*k, *v);
        }
        let r = rb.send().await.unwrap();
        V3Resp {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            body: r.bytes().await.unwrap().to_vec(),
        }
    }
}

pub fn public_key_verifier(h: &SandboxHandle) -> PublicKeyVerifier {
    let (pem, id) = h.wechatpay_public_key(DEMO_V3_MCHID);
    PublicKeyVerifier::new(id, RsaPublicKey::from_spki_pem(&pem).unwrap())
}

pub fn app_order(out_trade_no: &str, total: i64, notify_url: &str) -> String {
    serde_json::json!({
        "appid": "wxd678efh567hg6787",
        "mchid": DEMO_V3_MCHID,
        "description": "Image形象店-深圳腾大-QQ公仔",
        "out_trade_no": out_trade_no,
        "attach": "自定义数据",
        "notify_url": notify_url,
        "amount": {"total": total, "currency": "CNY"},
        "scene_info": {"payer_client_ip": "14.23.150.211", "device_id": "013467007045764"}
    })
    .to_string()
}

/// Send a hand-written HTTP/1.1 request (reqwest always adds `Accept: */*`).
pub async fn raw_http(addr: std::net::SocketAddr, head: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    (status, text)
}
