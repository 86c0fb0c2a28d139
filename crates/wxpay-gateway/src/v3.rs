//! APIv3 for a direct merchant (PROTOCOL.md B): APP prepay and the app's RSA sign, query, close,
//! refunds, notifications, and the three ways of verifying WeChat Pay (public key, platform
//! certificates, combined).
//!
//! Every request body is serialized once; those exact bytes are signed and sent (and sent again,
//! byte for byte, when an idempotent call is retried). Every response is read as raw bytes and its
//! `Wechatpay-*` signature is validated (±300 s by the injected clock) before anything is parsed;
//! an unsigned or badly signed 2xx is a [`GatewayError::Verification`], never a success. Error
//! bodies (`{"code","message"}`) are hints only: 4xx become [`GatewayError::Rejected`], 429 and 5xx
//! [`GatewayError::Transport`] (outcome unknown).
//!
//! Platform-certificate mode downloads `/v3/certificates` at [`V3Gateway::init`] (and whenever
//! [`V3Gateway::refresh_certificates`] is called, e.g. every 12 h by
//! [`V3Gateway::spawn_certificate_refresher`]). A response signed with an unknown serial triggers
//! one download (at most once per [`V3Options::refresh_min_interval_secs`] of the clock) and the
//! verification is retried. `Gateway::verify_notify` is synchronous, so for a notification signed
//! with an unknown serial it starts that download in the background and refuses the notification
//! (WeChat retries it 15 s later); `Gateway::verify_notify_async` (what the server calls, =
//! [`V3Gateway::verify_notify_refreshing`]) downloads inline and verifies again.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use rand::RngExt;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, RETRY_AFTER, USER_AGENT};
use reqwest::{Method, Url};
use wxpay_proto::Fen;
use wxpay_proto::v3::aead::ApiV3Key;
use wxpay_proto::v3::auth::MerchantSigner;
use wxpay_proto::v3::model::{
    self, AppPrepayRequest, CertificatesResponse, CloseRequest, ErrorResponse, OrderAmount,
    PrepayResponse, RefundAmountRequest, SceneInfo, Transaction, trade_state,
};
use wxpay_proto::v3::rsa::{RsaPrivateKey, RsaPublicKey};
use wxpay_proto::v3::verify::{
    CertificateVerifier, CombinedVerifier, HEADER_SERIAL, PublicKeyVerifier, SignedHeaders,
    Verifier, VerifyError, validate,
};

use crate::clock::Clock;
use crate::{
    AppParams, Gateway, GatewayError, InboundNotify, Notification, NotifyReply,
    PaymentNotification, Prepay, PrepayRequest, Protocol, RefundNotification, RefundRequest,
    RefundStatus, TradeStatus,
};

/// A prepay id can be used for this long (B.5).
pub const PREPAY_TTL_SECS: i64 = 7200;
/// How often the platform certificates should be downloaded again.
pub const CERTIFICATE_REFRESH_INTERVAL: Duration = Duration::from_secs(12 * 3600);
/// Largest response body read from WeChat.
const MAX_RESPONSE_BYTES: usize = 4 << 20;
const CERTIFICATES_PATH: &str = "/v3/certificates";
/// Largest bill file accepted, compressed and uncompressed.
const MAX_BILL_BYTES: usize = 512 << 20;
/// Total time allowed for downloading one bill file.
const BILL_DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// How WeChat Pay's signatures are verified (B.3).
#[derive(Clone, Debug)]
pub enum V3Verification {
    /// 微信支付公钥: one key with its id `PUB_KEY_ID_…` (downloaded from the merchant platform).
    PublicKey { id: String, key: RsaPublicKey },
    /// 平台证书: downloaded from `/v3/certificates` and refreshed.
    PlatformCertificates,
    /// The migration from certificates to a public key: a serial equal to `id` is verified with
    /// the public key, any other with the platform certificates.
    Combined { id: String, key: RsaPublicKey },
}

impl V3Verification {
    fn public_key_id(&self) -> Option<&str> {
        match self {
            V3Verification::PublicKey { id, .. } | V3Verification::Combined { id, .. } => {
                Some(id.as_str())
            }
            V3Verification::PlatformCertificates => None,
        }
    }

    fn uses_certificates(&self) -> bool {
        !matches!(self, V3Verification::PublicKey { .. })
    }

    fn name(&self) -> &'static str {
        match self {
            V3Verification::PublicKey { .. } => "public_key",
            V3Verification::PlatformCertificates => "platform_certificates",
            V3Verification::Combined { .. } => "combined",
        }
    }
}

/// One APIv3 merchant.
#[derive(Clone, Debug)]
pub struct V3Config {
    /// Our id of the merchant (the `{merchant}` of `/notify/{merchant}`).
    pub merchant_id: String,
    /// `https://api.mch.weixin.qq.com` in production.
    pub base_url: String,
    /// The open-platform mobile AppID bound to the mchid.
    pub appid: String,
    pub mchid: String,
    /// Serial of the merchant API certificate (upper-case hex).
    pub serial_no: String,
    /// `apiclient_key.pem`.
    pub private_key: RsaPrivateKey,
    pub apiv3_key: ApiV3Key,
    pub verification: V3Verification,
    /// Accept `http://` notify URLs (the sandbox); production requires https.
    pub allow_http: bool,
}

/// Retries of calls that are idempotent by construction (identical bytes, same identifiers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, including the first (1 = no retry).
    pub attempts: u32,
    /// Delay before the first retry; doubled for each further one.
    pub base_delay: Duration,
    /// Upper bound of the exponential delay.
    pub max_delay: Duration,
    /// A `Retry-After` longer than this is not waited for: the call fails as `Transport`.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
            max_retry_after: Duration::from_secs(10),
        }
    }
}

/// Tuning of a [`V3Gateway`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct V3Options {
    pub retry: RetryPolicy,
    /// Minimum spacing (clock seconds) of certificate downloads caused by an unknown serial.
    pub refresh_min_interval_secs: i64,
}

impl Default for V3Options {
    fn default() -> Self {
        V3Options {
            retry: RetryPolicy::default(),
            refresh_min_interval_secs: 60,
        }
    }
}

/// The keys WeChat Pay's signatures are checked with.
#[derive(Clone, Debug)]
enum Keys {
    PublicKey(PublicKeyVerifier),
    Certificates(CertificateVerifier),
    Combined(CombinedVerifier),
}

impl Keys {
    fn verifier(&self) -> &dyn Verifier {
        match self {
            Keys::PublicKey(v) => v,
            Keys::Certificates(v) => v,
            Keys::Combined(v) => v,
        }
    }

    fn certificates(&self) -> Option<&CertificateVerifier> {
        match self {
            Keys::PublicKey(_) => None,
            Keys::Certificates(c) => Some(c),
            Keys::Combined(c) => Some(&c.certificates),
        }
    }

    fn with_certificates(&self, certs: CertificateVerifier) -> Keys {
        match self {
            Keys::PublicKey(p) => Keys::PublicKey(p.clone()),
            Keys::Certificates(_) => Keys::Certificates(certs),
            Keys::Combined(c) => Keys::Combined(CombinedVerifier::new(c.public_key.clone(), certs)),
        }
    }

    /// Whether `serial` names a key we hold.
    fn knows(&self, serial: &str) -> bool {
        match self {
            Keys::PublicKey(p) => p.matches(serial),
            Keys::Certificates(c) => c.contains(serial),
            Keys::Combined(c) => c.public_key.matches(serial) || c.certificates.contains(serial),
        }
    }
}

#[derive(Debug, Default)]
struct RefreshState {
    /// Clock seconds of the last download caused by an unknown serial.
    last_on_demand: Option<i64>,
    /// Successful downloads so far.
    downloads: u64,
}

/// An APIv3 merchant at WeChat Pay. Cheap to clone (an `Arc`).
#[derive(Clone)]
pub struct V3Gateway {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for V3Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V3Gateway")
            .field("merchant_id", &self.inner.merchant_id)
            .field("mchid", &self.inner.mchid)
            .field("base_url", &self.inner.base_url)
            .field("verification", &self.inner.verification.name())
            .finish_non_exhaustive()
    }
}

struct Inner {
    merchant_id: String,
    base_url: String,
    appid: String,
    mchid: String,
    signer: MerchantSigner,
    apiv3_key: ApiV3Key,
    verification: V3Verification,
    allow_http: bool,
    keys: RwLock<Arc<Keys>>,
    /// Serializes certificate downloads.
    refresh_lock: tokio::sync::Mutex<()>,
    refresh: Mutex<RefreshState>,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    options: V3Options,
}

/// One request to WeChat: the body bytes are fixed before the first attempt.
struct Req {
    method: Method,
    /// Path plus `?query`, relative to the base URL.
    path: String,
    body: Option<Vec<u8>>,
    /// Ask for public-key signatures (`Wechatpay-Serial: PUB_KEY_ID_…`) when we hold the key.
    ask_public_key: bool,
    /// Largest response body accepted.
    max_bytes: usize,
    /// Overrides the client's total timeout (large downloads).
    timeout: Option<Duration>,
}

impl Req {
    fn get(path: String) -> Self {
        Req {
            method: Method::GET,
            path,
            body: None,
            ask_public_key: true,
            max_bytes: MAX_RESPONSE_BYTES,
            timeout: None,
        }
    }
    fn post(path: String, body: Vec<u8>) -> Self {
        Req {
            method: Method::POST,
            path,
            body: Some(body),
            ask_public_key: true,
            max_bytes: MAX_RESPONSE_BYTES,
            timeout: None,
        }
    }
}

/// A response as received.
struct Resp {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn signed_headers(&self) -> Result<SignedHeaders, VerifyError> {
        SignedHeaders::from_lookup(|n| self.header(n))
    }
    fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
    /// The `{"code","message"}` of an error answer, if it has one.
    fn error_hint(&self) -> Option<ErrorResponse> {
        serde_json::from_slice::<ErrorResponse>(&self.body)
            .ok()
            .filter(|e| !e.code.is_empty())
    }
    fn retry_after(&self) -> Option<Duration> {
        self.header(RETRY_AFTER.as_str())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs)
    }
}

fn verification(what: &str, e: &VerifyError) -> GatewayError {
    GatewayError::Verification(format!("{what}: {e}"))
}

fn parse_json<T: serde::de::DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, GatewayError> {
    serde_json::from_slice(body)
        .map_err(|e| GatewayError::Protocol(format!("{what} is not the expected JSON: {e}")))
}

fn invalid(e: wxpay_proto::ProtoError) -> GatewayError {
    GatewayError::Invalid(e.to_string())
}

impl V3Gateway {
    /// A gateway with the default [`V3Options`]. Call [`V3Gateway::init`] before serving.
    pub fn new(cfg: V3Config, http: reqwest::Client, clock: Arc<dyn Clock>) -> Self {
        Self::with_options(cfg, http, clock, V3Options::default())
    }

    pub fn with_options(
        cfg: V3Config,
        http: reqwest::Client,
        clock: Arc<dyn Clock>,
        options: V3Options,
    ) -> Self {
        let keys = match &cfg.verification {
            V3Verification::PublicKey { id, key } => {
                Keys::PublicKey(PublicKeyVerifier::new(id.clone(), key.clone()))
            }
            V3Verification::PlatformCertificates => {
                Keys::Certificates(CertificateVerifier::default())
            }
            V3Verification::Combined { id, key } => Keys::Combined(CombinedVerifier::new(
                PublicKeyVerifier::new(id.clone(), key.clone()),
                CertificateVerifier::default(),
            )),
        };
        let signer = MerchantSigner::new(cfg.mchid.clone(), cfg.serial_no.clone(), cfg.private_key);
        V3Gateway {
            inner: Arc::new(Inner {
                merchant_id: cfg.merchant_id,
                base_url: cfg.base_url.trim_end_matches('/').to_string(),
                appid: cfg.appid,
                mchid: cfg.mchid,
                signer,
                apiv3_key: cfg.apiv3_key,
                verification: cfg.verification,
                allow_http: cfg.allow_http,
                keys: RwLock::new(Arc::new(keys)),
                refresh_lock: tokio::sync::Mutex::new(()),
                refresh: Mutex::new(RefreshState::default()),
                http,
                clock,
                options,
            }),
        }
    }

    /// Downloads the platform certificates when the mode needs them. Certificate mode fails when
    /// the download fails; combined mode only logs it (the public key still verifies).
    pub async fn init(&self) -> Result<(), GatewayError> {
        match &self.inner.verification {
            V3Verification::PublicKey { .. } => Ok(()),
            V3Verification::PlatformCertificates => self.refresh_certificates().await.map(|_| ()),
            V3Verification::Combined { .. } => {
                if let Err(e) = self.refresh_certificates().await {
                    tracing::warn!(
                        merchant = %self.inner.merchant_id,
                        error = %e,
                        "v3: platform certificates unavailable; verifying with the public key only"
                    );
                }
                Ok(())
            }
        }
    }

    /// Downloads `/v3/certificates` again and replaces the certificate set (the periodic refresh;
    /// not rate-limited). Returns how many certificates are kept; 0 in public-key mode.
    pub async fn refresh_certificates(&self) -> Result<usize, GatewayError> {
        if !self.inner.verification.uses_certificates() {
            return Ok(0);
        }
        let _one_at_a_time = self.inner.refresh_lock.lock().await;
        self.inner.download_certificates().await
    }

    /// Calls [`V3Gateway::refresh_certificates`] every `every` (e.g.
    /// [`CERTIFICATE_REFRESH_INTERVAL`]) until the task is aborted. None in public-key mode.
    pub fn spawn_certificate_refresher(
        &self,
        every: Duration,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if !self.inner.verification.uses_certificates() {
            return None;
        }
        let me = self.clone();
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = me.refresh_certificates().await {
                    tracing::warn!(
                        merchant = %me.inner.merchant_id,
                        error = %e,
                        "v3: periodic platform certificate refresh failed"
                    );
                }
            }
        }))
    }

    /// Serials of the platform certificates held (sorted); empty in public-key mode.
    pub fn certificate_serials(&self) -> Vec<String> {
        self.inner
            .keys()
            .certificates()
            .map(CertificateVerifier::serials)
            .unwrap_or_default()
    }

    /// How many certificate downloads succeeded since start.
    pub fn certificate_downloads(&self) -> u64 {
        self.inner.refresh_state().downloads
    }

    /// Like `Gateway::verify_notify`, but a notification signed with an unknown serial first
    /// triggers one (rate-limited) certificate download and is then verified again.
    pub async fn verify_notify_refreshing(
        &self,
        n: &InboundNotify<'_>,
    ) -> Result<Notification, GatewayError> {
        let h = SignedHeaders::from_lookup(|name| n.header(name))
            .map_err(|e| verification("notification", &e))?;
        self.inner
            .validate_refreshing(&h, n.body)
            .await
            .map_err(|e| verification("notification", &e))?;
        self.inner.interpret_notification(n.body)
    }
}

impl Inner {
    fn keys(&self) -> Arc<Keys> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn refresh_state(&self) -> std::sync::MutexGuard<'_, RefreshState> {
        self.refresh.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> i64 {
        self.clock.now_secs()
    }

    /// Signature and ±300 s window against the keys held now.
    fn validate_now(&self, h: &SignedHeaders, body: &[u8]) -> Result<(), VerifyError> {
        let keys = self.keys();
        validate(keys.verifier(), h, body, self.now())
    }

    /// [`Inner::validate_now`]; an unknown serial in a certificate mode gets one (rate-limited)
    /// download and a second try.
    async fn validate_refreshing(&self, h: &SignedHeaders, body: &[u8]) -> Result<(), VerifyError> {
        match self.validate_now(h, body) {
            Err(VerifyError::UnknownSerial(serial)) if self.verification.uses_certificates() => {
                if self.refresh_for_unknown(serial.clone()).await {
                    self.validate_now(h, body)
                } else {
                    Err(VerifyError::UnknownSerial(serial))
                }
            }
            other => other,
        }
    }

    /// Downloads the certificates because `serial` is unknown, at most once per
    /// `refresh_min_interval_secs`. True when `serial` is known afterwards. Boxed: the download
    /// goes through the request path, which verifies responses.
    fn refresh_for_unknown(
        &self,
        serial: String,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(async move {
            if !self.verification.uses_certificates() {
                return false;
            }
            let _one_at_a_time = self.refresh_lock.lock().await;
            if self.keys().knows(&serial) {
                return true; // another task downloaded it meanwhile
            }
            {
                let now = self.now();
                let mut st = self.refresh_state();
                if let Some(last) = st.last_on_demand {
                    let since = now - last;
                    if (0..self.options.refresh_min_interval_secs).contains(&since) {
                        tracing::warn!(
                            merchant = %self.merchant_id,
                            serial = %serial,
                            "v3: unknown Wechatpay-Serial; certificate download rate-limited"
                        );
                        return false;
                    }
                }
                st.last_on_demand = Some(now);
            }
            tracing::info!(
                merchant = %self.merchant_id,
                serial = %serial,
                "v3: unknown Wechatpay-Serial; downloading platform certificates"
            );
            match self.download_certificates().await {
                Ok(_) => self.keys().knows(&serial),
                Err(e) => {
                    tracing::warn!(merchant = %self.merchant_id, error = %e, "v3: certificate download failed");
                    false
                }
            }
        })
    }

    /// Starts [`Inner::refresh_for_unknown`] in the background (from synchronous code).
    fn spawn_refresh(self: &Arc<Self>, serial: String) {
        if !self.verification.uses_certificates() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let me = self.clone();
            rt.spawn(async move {
                me.refresh_for_unknown(serial).await;
            });
        }
    }

    /// `GET /v3/certificates`: decrypt every entry, keep those not yet expired, check that the
    /// response is signed by one of them, then install them. The caller holds `refresh_lock`.
    async fn download_certificates(&self) -> Result<usize, GatewayError> {
        let req = Req {
            method: Method::GET,
            path: CERTIFICATES_PATH.to_string(),
            body: None,
            ask_public_key: false,
            max_bytes: MAX_RESPONSE_BYTES,
            timeout: None,
        };
        let resp = crate::telemetry::timed(&self.merchant_id, "certificates", async {
            let resp = self.exchange(&req, true).await?;
            if !resp.is_success() {
                return Err(self.error_of(&resp));
            }
            Ok(resp)
        })
        .await?;
        let list: CertificatesResponse = parse_json("certificate list", &resp.body)?;
        let now = self.now();
        let mut fresh = CertificateVerifier::default();
        for entry in &list.data {
            let cert = entry.decrypt_certificate(&self.apiv3_key).map_err(|e| {
                GatewayError::Verification(format!(
                    "platform certificate {} does not decrypt with the APIv3 key: {e}",
                    entry.serial_no
                ))
            })?;
            if cert.not_after >= now {
                fresh.insert(cert);
            }
        }
        if fresh.is_empty() {
            return Err(GatewayError::Protocol(
                "the certificate list holds no certificate valid now".into(),
            ));
        }
        let h = resp
            .signed_headers()
            .map_err(|e| verification("certificate list", &e))?;
        validate(&fresh, &h, &resp.body, now).map_err(|e| {
            verification(
                "certificate list not signed by a certificate it carries",
                &e,
            )
        })?;
        let n = fresh.len();
        let serials = fresh.serials();
        {
            let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
            let next = keys.with_certificates(fresh);
            *keys = Arc::new(next);
        }
        self.refresh_state().downloads += 1;
        tracing::info!(merchant = %self.merchant_id, ?serials, "v3: platform certificates installed");
        Ok(n)
    }

    /// One attempt: sign the exact bytes, send them, read the raw answer.
    async fn send_once(&self, req: &Req) -> Result<Resp, GatewayError> {
        let url = Url::parse(&format!("{}{}", self.base_url, req.path))
            .map_err(|e| GatewayError::Invalid(format!("bad WeChat Pay URL: {e}")))?;
        // The canonical URL is taken from the URL object that is sent, so it is exactly what the
        // server sees (path plus query).
        let canonical = match url.query() {
            Some(q) => format!("{}?{}", url.path(), q),
            None => url.path().to_string(),
        };
        let body: &[u8] = req.body.as_deref().unwrap_or_default();
        let timestamp = self.now();
        let nonce = crate::nonce(32);
        let authorization =
            self.signer
                .authorization(req.method.as_str(), &canonical, timestamp, &nonce, body);
        let mut rb = self
            .http
            .request(req.method.clone(), url)
            .header(AUTHORIZATION, authorization)
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, crate::http::USER_AGENT);
        if req.ask_public_key
            && let Some(id) = self.verification.public_key_id()
        {
            rb = rb.header(HEADER_SERIAL, id);
        }
        if req.body.is_some() {
            rb = rb.body(body.to_vec());
        }
        if let Some(t) = req.timeout {
            rb = rb.timeout(t);
        }
        let mut resp = rb.send().await.map_err(crate::http::transport)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(crate::http::transport)? {
            if bytes.len() + chunk.len() > req.max_bytes {
                return Err(GatewayError::Protocol(format!(
                    "response larger than {} bytes",
                    req.max_bytes
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Resp {
            status,
            headers,
            body: bytes,
        })
    }

    /// Sends `req`, retrying (when `idempotent`) transport failures, 429 and 5xx with the same
    /// bytes. Returns the final answer (2xx or a non-retryable status), unverified.
    async fn exchange(&self, req: &Req, idempotent: bool) -> Result<Resp, GatewayError> {
        let policy = self.options.retry;
        let attempts = policy.attempts.max(1);
        let mut attempt = 1;
        loop {
            let (err, retry_after) = match self.send_once(req).await {
                Ok(resp) if resp.status == 429 || resp.status >= 500 => {
                    let hint = resp
                        .error_hint()
                        .map(|e| format!(" {}: {}", e.code, e.message))
                        .unwrap_or_default();
                    let retry_after = resp.retry_after();
                    (
                        GatewayError::Transport(format!(
                            "{} {} answered HTTP {}{hint}",
                            req.method,
                            path_only(&req.path),
                            resp.status
                        )),
                        retry_after,
                    )
                }
                Ok(resp) => return Ok(resp),
                Err(e @ GatewayError::Transport(_)) => (e, None),
                Err(e) => return Err(e),
            };
            if !idempotent || attempt >= attempts {
                return Err(err);
            }
            let delay = match retry_after {
                Some(d) if d > policy.max_retry_after => {
                    return Err(GatewayError::Transport(format!(
                        "{err}; WeChat asks to retry after {} s",
                        d.as_secs()
                    )));
                }
                Some(d) => d,
                None => backoff(&policy, attempt),
            };
            tracing::warn!(
                merchant = %self.merchant_id,
                path = %path_only(&req.path),
                attempt,
                error = %err,
                delay_ms = delay.as_millis() as u64,
                "v3: retrying with the same request body"
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// [`Inner::call_unobserved`], recorded in `wechat_call_seconds` (see [`crate::telemetry`]).
    async fn call(&self, req: Req, idempotent: bool) -> Result<Resp, GatewayError> {
        let endpoint = crate::telemetry::v3_endpoint(&req.path);
        crate::telemetry::timed(
            &self.merchant_id,
            endpoint,
            self.call_unobserved(req, idempotent),
        )
        .await
    }

    /// Sends `req` and verifies the answer: a 2xx must be correctly signed; any other final
    /// answer becomes an error (a signed error answer must verify too).
    async fn call_unobserved(&self, req: Req, idempotent: bool) -> Result<Resp, GatewayError> {
        let resp = self.exchange(&req, idempotent).await?;
        let what = format!("{} {} response", req.method, path_only(&req.path));
        if resp.is_success() {
            let h = resp
                .signed_headers()
                .map_err(|e| verification(&format!("{what} (HTTP {})", resp.status), &e))?;
            self.validate_refreshing(&h, &resp.body)
                .await
                .map_err(|e| verification(&format!("{what} (HTTP {})", resp.status), &e))?;
            return Ok(resp);
        }
        if let Ok(h) = resp.signed_headers()
            && let Err(e) = self.validate_refreshing(&h, &resp.body).await
        {
            let code = resp.error_hint().map(|e| e.code).unwrap_or_default();
            return Err(verification(
                &format!("{what} (HTTP {} {code})", resp.status),
                &e,
            ));
        }
        Err(self.error_of(&resp))
    }

    /// A non-2xx answer as an error: `{"code","message"}` is a hint, never proof of state.
    fn error_of(&self, resp: &Resp) -> GatewayError {
        match resp.status {
            429 | 500..=599 => GatewayError::Transport(format!("HTTP {}", resp.status)),
            400..=499 => match resp.error_hint() {
                Some(e) => GatewayError::Rejected {
                    code: e.code,
                    message: e.message,
                },
                None => GatewayError::Rejected {
                    code: format!("HTTP_{}", resp.status),
                    message: "no error body".into(),
                },
            },
            s => GatewayError::Protocol(format!("unexpected HTTP status {s}")),
        }
    }

    fn interpret_notification(&self, body: &[u8]) -> Result<Notification, GatewayError> {
        let envelope = model::Notification::from_slice(body)
            .map_err(|e| GatewayError::Verification(format!("notification body: {e}")))?;
        let event = envelope.event_type.as_str();
        if event.starts_with("TRANSACTION.") {
            let t = envelope.decrypt_transaction(&self.apiv3_key).map_err(|e| {
                GatewayError::Verification(format!(
                    "notification resource does not decrypt with the APIv3 key: {e}"
                ))
            })?;
            if t.mchid != self.mchid {
                return Err(GatewayError::Verification(format!(
                    "payment notification for mchid {}, not ours",
                    t.mchid
                )));
            }
            if t.appid != self.appid {
                return Err(GatewayError::Verification(format!(
                    "payment notification for appid {}, not ours",
                    t.appid
                )));
            }
            let success = t.trade_state == trade_state::SUCCESS;
            let amount = t.amount.as_ref().map(|a| a.total).ok_or_else(|| {
                GatewayError::Verification("payment notification without amount".into())
            })?;
            let transaction_id = t.transaction_id.clone().unwrap_or_default();
            if success && transaction_id.is_empty() {
                return Err(GatewayError::Verification(
                    "successful payment notification without transaction_id".into(),
                ));
            }
            Ok(Notification::Payment(PaymentNotification {
                out_trade_no: t.out_trade_no,
                transaction_id,
                amount: Fen::new(amount),
                success,
            }))
        } else if event.starts_with("REFUND.") {
            let r = envelope.decrypt_refund(&self.apiv3_key).map_err(|e| {
                GatewayError::Verification(format!(
                    "notification resource does not decrypt with the APIv3 key: {e}"
                ))
            })?;
            if r.mchid != self.mchid {
                return Err(GatewayError::Verification(format!(
                    "refund notification for mchid {}, not ours",
                    r.mchid
                )));
            }
            Ok(Notification::Refund(RefundNotification {
                out_trade_no: r.out_trade_no,
                out_refund_no: r.out_refund_no,
                refund_id: r.refund_id,
                status: r.refund_status,
                refund: Fen::new(r.amount.refund),
            }))
        } else {
            Err(GatewayError::Protocol(format!(
                "unsupported notification event_type {event:?}"
            )))
        }
    }

    fn refund_status(
        &self,
        body: &[u8],
        out_refund_no: &str,
    ) -> Result<RefundStatus, GatewayError> {
        let r: model::Refund = parse_json("refund", body)?;
        if r.out_refund_no != out_refund_no {
            return Err(GatewayError::Protocol(format!(
                "asked about refund {out_refund_no}, WeChat answered about {}",
                r.out_refund_no
            )));
        }
        Ok(RefundStatus {
            out_refund_no: r.out_refund_no,
            refund_id: Some(r.refund_id).filter(|s| !s.is_empty()),
            status: r.status,
            refund: Fen::new(r.amount.refund),
        })
    }
}

/// The path without the query (for messages).
fn path_only(path: &str) -> &str {
    path.split('?').next().unwrap_or(path)
}

/// Exponential delay before retry number `attempt` (1-based), with up to 50 % jitter.
fn backoff(p: &RetryPolicy, attempt: u32) -> Duration {
    let exp = p
        .base_delay
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let d = exp.min(p.max_delay);
    let half = d / 2;
    let jitter_ms = half.as_millis() as u64;
    let jitter = if jitter_ms == 0 {
        Duration::ZERO
    } else {
        Duration::from_millis(rand::rng().random_range(0..=jitter_ms))
    };
    half + jitter
}

fn trade_status(t: Transaction) -> Result<TradeStatus, GatewayError> {
    let paid = |t: &Transaction| -> Result<(String, Fen), GatewayError> {
        let tid = t
            .transaction_id
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                GatewayError::Protocol(format!("{} order without transaction_id", t.trade_state))
            })?;
        let amount = t
            .amount
            .as_ref()
            .map(|a| Fen::new(a.total))
            .ok_or_else(|| {
                GatewayError::Protocol(format!("{} order without amount", t.trade_state))
            })?;
        Ok((tid, amount))
    };
    Ok(match t.trade_state.as_str() {
        trade_state::SUCCESS => {
            let (transaction_id, amount) = paid(&t)?;
            TradeStatus::Paid {
                transaction_id,
                amount,
            }
        }
        trade_state::REFUND => {
            let (transaction_id, amount) = paid(&t)?;
            TradeStatus::Refunded {
                transaction_id,
                amount,
            }
        }
        trade_state::NOTPAY => TradeStatus::NotPaid,
        trade_state::CLOSED => TradeStatus::Closed,
        other => TradeStatus::Other(other.to_string()),
    })
}

#[async_trait]
impl Gateway for V3Gateway {
    fn merchant_id(&self) -> &str {
        &self.inner.merchant_id
    }

    fn protocol(&self) -> Protocol {
        Protocol::V3
    }

    async fn prepay(&self, req: &PrepayRequest) -> Result<Prepay, GatewayError> {
        let me = &self.inner;
        let body = AppPrepayRequest {
            appid: me.appid.clone(),
            mchid: me.mchid.clone(),
            description: req.description.clone(),
            out_trade_no: req.out_trade_no.clone(),
            time_expire: req.time_expire.map(model::format_rfc3339_beijing),
            attach: req.attach.clone(),
            notify_url: req.notify_url.clone(),
            amount: OrderAmount {
                total: req.amount.get(),
                currency: Some("CNY".into()),
            },
            scene_info: (!req.client_ip.is_empty()).then(|| SceneInfo {
                payer_client_ip: req.client_ip.clone(),
                device_id: None,
            }),
            ..AppPrepayRequest::default()
        };
        body.validate_with(me.allow_http).map_err(invalid)?;
        let bytes = serde_json::to_vec(&body)
            .map_err(|e| GatewayError::Invalid(format!("prepay body: {e}")))?;
        let asked_at = me.now();
        let resp = me
            .call(
                Req::post("/v3/pay/transactions/app".into(), bytes),
                true, // same out_trade_no, identical bytes
            )
            .await?;
        let p: PrepayResponse = parse_json("prepay response", &resp.body)?;
        if p.prepay_id.is_empty() {
            return Err(GatewayError::Protocol("empty prepay_id".into()));
        }
        let mut expires_at = asked_at + PREPAY_TTL_SECS;
        if let Some(t) = req.time_expire {
            expires_at = expires_at.min(t);
        }
        Ok(Prepay {
            prepay_id: p.prepay_id,
            expires_at,
        })
    }

    fn app_params(&self, prepay_id: &str) -> AppParams {
        let me = &self.inner;
        let p = me
            .signer
            .app_pay_params(&me.appid, prepay_id, me.now(), &crate::nonce(32));
        AppParams {
            appid: p.appid,
            partnerid: p.partnerid,
            prepayid: p.prepayid,
            package: p.package,
            noncestr: p.noncestr,
            timestamp: p.timestamp,
            sign: p.sign,
        }
    }

    async fn query(&self, out_trade_no: &str) -> Result<TradeStatus, GatewayError> {
        let me = &self.inner;
        model::validate_out_trade_no(out_trade_no).map_err(invalid)?;
        let path = format!(
            "/v3/pay/transactions/out-trade-no/{out_trade_no}?mchid={}",
            me.mchid
        );
        let resp = match me.call(Req::get(path), true).await {
            Ok(r) => r,
            Err(GatewayError::Rejected { code, .. }) if code == "ORDER_NOT_EXIST" => {
                return Ok(TradeStatus::NotFound);
            }
            Err(e) => return Err(e),
        };
        let t: Transaction = parse_json("transaction", &resp.body)?;
        if t.mchid != me.mchid || t.out_trade_no != out_trade_no {
            return Err(GatewayError::Protocol(format!(
                "asked about {out_trade_no} of {}, WeChat answered about {} of {}",
                me.mchid, t.out_trade_no, t.mchid
            )));
        }
        trade_status(t)
    }

    /// Closes (retried: closing twice is harmless). After any error the order is queried and the
    /// query is trusted: CLOSED is success; a paid order gives `Rejected { code: "ORDER_PAID" }`.
    async fn close(&self, out_trade_no: &str) -> Result<(), GatewayError> {
        let me = &self.inner;
        model::validate_out_trade_no(out_trade_no).map_err(invalid)?;
        let body = serde_json::to_vec(&CloseRequest {
            mchid: me.mchid.clone(),
        })
        .map_err(|e| GatewayError::Invalid(format!("close body: {e}")))?;
        let path = format!("/v3/pay/transactions/out-trade-no/{out_trade_no}/close");
        let err = match me.call(Req::post(path, body), true).await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        tracing::info!(
            merchant = %me.merchant_id,
            out_trade_no,
            error = %err,
            "v3: close failed; asking WeChat for the order state"
        );
        match self.query(out_trade_no).await {
            Ok(TradeStatus::Closed) => Ok(()),
            Ok(TradeStatus::Paid { .. } | TradeStatus::Refunded { .. }) => {
                Err(GatewayError::Rejected {
                    code: "ORDER_PAID".into(),
                    message: format!("order {out_trade_no} is paid and cannot be closed"),
                })
            }
            _ => Err(err),
        }
    }

    fn verify_notify(&self, n: &InboundNotify<'_>) -> Result<Notification, GatewayError> {
        let me = &self.inner;
        let h = SignedHeaders::from_lookup(|name| n.header(name))
            .map_err(|e| verification("notification", &e))?;
        if let Err(e) = me.validate_now(&h, n.body) {
            if let VerifyError::UnknownSerial(serial) = &e {
                me.spawn_refresh(serial.clone());
            }
            return Err(verification("notification", &e));
        }
        me.interpret_notification(n.body)
    }

    /// [`V3Gateway::verify_notify_refreshing`]: an unknown serial gets one (rate-limited)
    /// certificate download inline before the notification is refused.
    async fn verify_notify_async(
        &self,
        n: &InboundNotify<'_>,
    ) -> Result<Notification, GatewayError> {
        self.verify_notify_refreshing(n).await
    }

    fn notify_reply(&self, accepted: bool) -> NotifyReply {
        if accepted {
            NotifyReply {
                status: 204,
                content_type: "application/json",
                body: String::new(),
            }
        } else {
            NotifyReply {
                status: 500,
                content_type: "application/json",
                body: r#"{"code":"FAIL","message":"失败"}"#.to_string(),
            }
        }
    }

    async fn refund(&self, req: &RefundRequest) -> Result<RefundStatus, GatewayError> {
        let me = &self.inner;
        let body = model::RefundRequest {
            transaction_id: None,
            out_trade_no: Some(req.out_trade_no.clone()),
            out_refund_no: req.out_refund_no.clone(),
            reason: req.reason.clone(),
            notify_url: req.notify_url.clone(),
            funds_account: None,
            amount: RefundAmountRequest {
                refund: req.refund.get(),
                total: req.total.get(),
                currency: "CNY".into(),
                from: None,
            },
            goods_detail: None,
        };
        body.validate_with(me.allow_http).map_err(invalid)?;
        let bytes = serde_json::to_vec(&body)
            .map_err(|e| GatewayError::Invalid(format!("refund body: {e}")))?;
        let resp = me
            .call(
                Req::post("/v3/refund/domestic/refunds".into(), bytes),
                true, // same out_refund_no, identical bytes
            )
            .await?;
        me.refund_status(&resp.body, &req.out_refund_no)
    }

    async fn query_refund(&self, out_refund_no: &str) -> Result<RefundStatus, GatewayError> {
        let me = &self.inner;
        model::validate_out_refund_no(out_refund_no).map_err(invalid)?;
        let resp = me
            .call(
                Req::get(format!("/v3/refund/domestic/refunds/{out_refund_no}")),
                true,
            )
            .await?;
        me.refund_status(&resp.body, out_refund_no)
    }

    async fn download_trade_bill(&self, bill_date: &str) -> Result<Option<String>, GatewayError> {
        self.trade_bill(bill_date).await
    }
}

// ---------------------------------------------------------------------------------------------
// Trade bills (B.11)

impl V3Gateway {
    /// `GET /v3/bill/tradebill?bill_date=…&bill_type=ALL&tar_type=GZIP` (signed, response
    /// verified), then a signed GET of the `download_url`'s path and query against our base URL
    /// (the merchant's signature never goes to another host). The file answer is not signed:
    /// it is gunzipped and its SHA-1 compared with `hash_value` instead. `Ok(None)` when WeChat
    /// says `NO_STATEMENT_EXIST`.
    pub async fn trade_bill(&self, bill_date: &str) -> Result<Option<String>, GatewayError> {
        let me = &self.inner;
        let valid_date = bill_date.len() == 10
            && chrono::NaiveDate::parse_from_str(bill_date, "%Y-%m-%d").is_ok();
        if !valid_date {
            return Err(GatewayError::Invalid(format!(
                "bill_date must be YYYY-MM-DD, got {bill_date:?}"
            )));
        }
        let path = format!("/v3/bill/tradebill?bill_date={bill_date}&bill_type=ALL&tar_type=GZIP");
        let resp = match me.call(Req::get(path), true).await {
            Ok(r) => r,
            Err(GatewayError::Rejected { code, .. }) if code == "NO_STATEMENT_EXIST" => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let bill: model::BillResponse = parse_json("trade bill answer", &resp.body)?;
        if !bill.hash_type.eq_ignore_ascii_case("SHA1") {
            return Err(GatewayError::Protocol(format!(
                "trade bill hash_type {:?}, expected SHA1",
                bill.hash_type
            )));
        }
        let expected = bill.hash_value.trim().to_ascii_lowercase();
        if expected.len() != 40 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(GatewayError::Protocol(
                "trade bill hash_value is not a SHA-1 hex digest".into(),
            ));
        }
        let url = Url::parse(&bill.download_url).map_err(|e| {
            GatewayError::Protocol(format!("trade bill download_url is not a URL: {e}"))
        })?;
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let req = Req {
            method: Method::GET,
            path,
            body: None,
            ask_public_key: false,
            max_bytes: MAX_BILL_BYTES,
            timeout: Some(BILL_DOWNLOAD_TIMEOUT),
        };
        // A GET of a file: idempotent. The answer carries no signature to verify (B.11).
        let file = crate::telemetry::timed(&me.merchant_id, "billdownload", async {
            let file = me.exchange(&req, true).await?;
            if !file.is_success() {
                return Err(me.error_of(&file));
            }
            Ok(file)
        })
        .await?;
        let text = tokio::task::spawn_blocking(move || unpack_bill(&file.body, &expected))
            .await
            .map_err(|e| GatewayError::Protocol(format!("bill unpacking failed: {e}")))??;
        Ok(Some(text))
    }
}

/// Gunzips (when the bytes are gzip; `tar_type=GZIP` asks for it), checks the SHA-1 of the
/// uncompressed bytes against `expected_sha1` (lower-case hex) and decodes UTF-8.
fn unpack_bill(bytes: &[u8], expected_sha1: &str) -> Result<String, GatewayError> {
    use sha1::Digest;
    use std::io::Read;
    let raw = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes)
            .take(MAX_BILL_BYTES as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| GatewayError::Protocol(format!("bill file does not gunzip: {e}")))?;
        if out.len() > MAX_BILL_BYTES {
            return Err(GatewayError::Protocol(format!(
                "bill file larger than {MAX_BILL_BYTES} bytes uncompressed"
            )));
        }
        out
    } else {
        bytes.to_vec()
    };
    let actual = hex::encode(sha1::Sha1::digest(&raw));
    if actual != expected_sha1 {
        return Err(GatewayError::Verification(format!(
            "trade bill SHA-1 {actual} differs from hash_value {expected_sha1}"
        )));
    }
    String::from_utf8(raw)
        .map_err(|_| GatewayError::Protocol("trade bill is not UTF-8 text".into()))
}

#[cfg(test)]
mod bill_tests {
    use super::*;
    use sha1::Digest;
    use std::io::Write;

    fn sha1_hex(b: &[u8]) -> String {
        hex::encode(sha1::Sha1::digest(b))
    }

    #[test]
    fn unpack_gunzips_and_checks_the_uncompressed_sha1() {
        let csv = "交易时间,公众账号ID\r\n`2019-06-11 10:00:00,`wx1\r\n".as_bytes();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(csv).unwrap();
        let gz = enc.finish().unwrap();
        let want = sha1_hex(csv);
        assert_eq!(unpack_bill(&gz, &want).unwrap().as_bytes(), csv);
        // An uncompressed file is accepted as is (still hash-checked).
        assert_eq!(unpack_bill(csv, &want).unwrap().as_bytes(), csv);
        // The hash of the compressed bytes is not the one WeChat sends.
        assert!(matches!(
            unpack_bill(&gz, &sha1_hex(&gz)),
            Err(GatewayError::Verification(_))
        ));
        assert!(matches!(
            unpack_bill(&gz[..gz.len() - 4], &want),
            Err(GatewayError::Protocol(_))
        ));
        let latin1 = [0xe9u8, b'a'];
        assert!(matches!(
            unpack_bill(&latin1, &sha1_hex(&latin1)),
            Err(GatewayError::Protocol(_))
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
            max_retry_after: Duration::from_secs(1),
        };
        for _ in 0..20 {
            let d1 = backoff(&p, 1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d2 = backoff(&p, 2);
            assert!(d2 >= Duration::from_millis(100) && d2 <= Duration::from_millis(200));
            let d9 = backoff(&p, 40);
            assert!(d9 >= Duration::from_millis(150) && d9 <= Duration::from_millis(300));
        }
    }

    #[test]
    fn trade_states_map() {
        let t = |state: &str, tid: Option<&str>| Transaction {
            appid: "wx1".into(),
            mchid: "1".into(),
            out_trade_no: "order1".into(),
            transaction_id: tid.map(str::to_string),
            trade_state: state.into(),
            amount: Some(model::TransactionAmount {
                total: 100,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            trade_status(t("SUCCESS", Some("42"))).unwrap(),
            TradeStatus::Paid {
                transaction_id: "42".into(),
                amount: Fen::new(100)
            }
        );
        assert_eq!(
            trade_status(t("REFUND", Some("42"))).unwrap(),
            TradeStatus::Refunded {
                transaction_id: "42".into(),
                amount: Fen::new(100)
            }
        );
        assert!(matches!(
            trade_status(t("SUCCESS", None)),
            Err(GatewayError::Protocol(_))
        ));
        assert_eq!(
            trade_status(t("NOTPAY", None)).unwrap(),
            TradeStatus::NotPaid
        );
        assert_eq!(
            trade_status(t("CLOSED", None)).unwrap(),
            TradeStatus::Closed
        );
        assert_eq!(
            trade_status(t("USERPAYING", None)).unwrap(),
            TradeStatus::Other("USERPAYING".into())
        );
    }
}
