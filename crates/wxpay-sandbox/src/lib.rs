//! # wxpay-sandbox — a strict, stateful WeChat Pay simulator
//!
//! It speaks the legacy 2014 open-platform APP payment (PROTOCOL.md A) and APIv3 (PROTOCOL.md B),
//! verifies every merchant signature with `wxpay-proto`, keeps its own state, sends signed
//! notifications on WeChat's retry schedule, and offers a JSON control API, a cashier page and
//! fault switches. Use it in-process:
//!
//! ```no_run
//! # async fn demo() -> Result<(), wxpay_sandbox::SandboxError> {
//! use wxpay_sandbox::{Sandbox, SandboxConfig, SandboxOptions};
//! let handle = Sandbox::new(SandboxConfig::demo(), SandboxOptions::default())?
//!     .spawn("127.0.0.1:0".parse().unwrap())
//!     .await?;
//! println!("WeChat Pay lives at {}", handle.base_url);
//! handle.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! or as a standalone server with [`run`] (`wxpay sandbox`).
//!
//! ## Time
//! Protocol times (token lifetime 7200 s, prepay lifetime 2 h, signature timestamps and the 5-minute
//! skew check, `time_end`, `success_time`, bill dates) come from the injected [`Clock`]. The spacing
//! of notification retries, the delivery timeout and refund processing use real time multiplied by
//! `time_scale`. **The delivery timeout (5 s × `time_scale`) never goes below 50 ms**, so a
//! scaled-down run still gives a local receiver a chance to answer (see [`notify`]).
//!
//! ## Endpoints
//! * Legacy (PROTOCOL.md A): `GET /cgi-bin/token`, `POST /pay/genprepay?access_token=`,
//!   `POST /pay/orderquery?access_token=`, `POST /pay/delivernotify?access_token=` (A.8); payment
//!   notifications as A.6 (POST to `notify_url` with the MD5-signed query string and the XML body
//!   with `AppSignature`), retried until the merchant answers `success`.
//! * APIv3 (PROTOCOL.md B): `POST /v3/pay/transactions/{app,jsapi,native}`,
//!   `GET /v3/pay/transactions/out-trade-no/{no}?mchid=`, `GET /v3/pay/transactions/id/{id}?mchid=`,
//!   `POST /v3/pay/transactions/out-trade-no/{no}/close`, `POST /v3/refund/domestic/refunds`,
//!   `GET /v3/refund/domestic/refunds/{out_refund_no}`,
//!   `POST /v3/refund/domestic/refunds/{refund_id}/apply-abnormal-refund`, `GET /v3/certificates`,
//!   `GET /v3/bill/tradebill`, `GET /v3/billdownload/file?token=`; `TRANSACTION.SUCCESS` and
//!   `REFUND.*` notifications, encrypted with the APIv3 key and signed. A request header
//!   `Wechatpay-Serial: PUB_KEY_ID_…` asks for public-key signatures in certificate mode.
//!   WeChat demands https notify URLs; the sandbox also accepts http unless
//!   `allow_http_notify_url = false`.
//!
//! ## Control API (JSON) and cashier
//!
//! | route | body / query | answer |
//! |---|---|---|
//! | `POST /sandbox/api/pay` | `{"prepay_id"}`, `{"out_trade_no","mchid"\|"partner"}`, or `{"pay_req": `[`AppPayRequest`]`}` (verified like the WeChat app: 400 when the client sign is wrong) | [`OrderView`]; the notification starts |
//! | `POST /sandbox/api/cancel` | same | [`OrderView`] (user cancelled; stays NOTPAY) |
//! | `GET /sandbox/api/notifications` | `?merchant=&out_trade_no=&kind=&outcome=&notification_id=` | `[`[`DeliveryRecord`]`]` |
//! | `GET /sandbox/api/faults` | | [`FaultStatus`] `{"faults","counters"}` |
//! | `PUT /sandbox/api/faults` | [`Faults`] | [`FaultStatus`] |
//! | `GET /sandbox/api/merchants` | | merchant ids and modes (no secrets) |
//! | `GET /sandbox/api/merchants/{mchid}/wechatpay-public-key` | | `{"id","pem"}` |
//! | `GET /sandbox/api/merchants/{mchid}/certificates` | | `[{"serial_no","pem","not_before","not_after"}]` |
//! | `POST /sandbox/api/merchants/{mchid}/rotate-certificates` | | `{"serials","signing_serial"}` (409 in public-key mode) |
//! | `GET /sandbox/api/orders/{id}` | id = out_trade_no, transaction id or prepay id; `?merchant=` | [`OrderView`] with refunds |
//! | `POST /sandbox/api/token/invalidate` | `{"appid"}` | `{"appid","invalidated"}` |
//! | `GET /sandbox/api/tokens/{appid}` | | `{"appid","fetch_count"}` |
//! | `PUT /sandbox/api/refund-rule` | `{"merchant"?,"outcome":"SUCCESS"\|"ABNORMAL"\|"CLOSED"\|"MANUAL","delay_secs"}` | the rule |
//! | `POST /sandbox/api/refunds/{out_refund_no}/complete` | `{"status","mchid"?}` | [`RefundView`] |
//! | `GET /sandbox/cashier/{prepay_id}` | | HTML page with Pay / Cancel (form POSTs to `…/pay`, `…/cancel`) |
//! | `GET /` | | HTML index of recent orders |
//!
//! Control errors are `{"error": "..."}` with 400, 404 or 409. Fault switches: see [`faults`].
//!
//! ## Legacy error codes (`errcode` in the JSON body, HTTP 200)
//!
//! | errcode | errmsg | when |
//! |---|---|---|
//! | 0 | `Success` / `ok` | |
//! | -1 | `system error` | fault `SYSTEM_ERROR` (HTTP 500) |
//! | 40001 | `invalid credential` | wrong `secret`; unknown, superseded (after the overlap) or invalidated `access_token` |
//! | 40002 | `invalid grant_type` | `grant_type` is not `client_credential` |
//! | 40013 | `invalid appid` | unknown appid, or body `appid` is not the token's appid |
//! | 41001 | `access_token missing` | no `access_token` query parameter |
//! | 41002 | `appid missing` | `/cgi-bin/token` without appid |
//! | 41004 | `appsecret missing` | `/cgi-bin/token` without secret |
//! | 42001 | `access_token expired` | token older than 7200 s, or fault `token_early_invalidation` |
//! | 44002 | `empty post data` | empty body |
//! | 45009 | `reach max api daily quota limit` | more than `token_daily_quota` token calls on one Beijing day, or fault `token_quota_exhausted` |
//! | 45011 | `api minute-quota reach limit` | fault `FREQUENCY_LIMITED` (HTTP 429) |
//! | 47001 | `data format error` | body is not JSON of the expected shape |
//! | 49000 | `<field> missing` | a required genprepay/orderquery/delivernotify field is missing or empty |
//! | 49001 | `invalid sign_method` | `sign_method` is not `sha1` |
//! | 49002 | `invalid app_signature` | SHA-1 app signature does not verify over the fields as sent |
//! | 49003 | `invalid package` | package is not a parsable query string / unknown charset / no `sign` |
//! | 49004 | `invalid package sign` | package MD5 does not verify with the partner key |
//! | 49005 | `invalid package field: <field>: <reason>` | field rules of PROTOCOL.md A.3 (bank_type, body, out_trade_no, total_fee > 0 integer fen, transport_fee + product_fee = total_fee, fee_type, notify_url, spbill_create_ip, times) |
//! | 49006 | `partner does not match appid` | package `partner` is not the appid's merchant |
//! | 49007 | `order paid` | out_trade_no already paid |
//! | 49008 | `out_trade_no used with a different package` | same out_trade_no, other order description |
//! | 49009 | `invalid timestamp` | `timestamp` is not 10-digit Unix seconds |
//! | 49010 | `invalid traceid/noncestr` | longer than 32 characters |
//! | 49011 | `order not exist` | orderquery / delivernotify for an unknown out_trade_no |
//! | 49012 | `order not paid or transid mismatch` | delivernotify for an unpaid order or another transaction id |
//!
//! ## APIv3 errors
//! `{"code","message","detail":{"field","value","issue","location"}}` with HTTP status:
//! 400 `PARAM_ERROR` (detail.field is a JSON pointer into the body; for query parameters the
//! parameter name with `location: "query"`), 400 `INVALID_REQUEST` (missing Accept or
//! User-Agent, over-refund, bill date), 400 `APPID_MCHID_NOT_MATCH`, 400 `ORDER_CLOSED`, 400
//! `NO_STATEMENT_EXIST`, 400 `STATEMENT_CREATING`, 401 `SIGN_ERROR` (bad/missing Authorization,
//! unknown mchid or serial, timestamp more than 300 s off), 403 `OUT_TRADE_NO_USED` (paid, or reused
//! with different parameters), 403 `TRADE_ERROR` (closing a paid order), 403 `NOT_ENOUGH` (fault
//! `refund_not_enough`), 404 `ORDER_NOT_EXIST`, 404 `RESOURCE_NOT_EXISTS`, 429 `FREQUENCY_LIMITED`
//! (fault, or two refunds of one order within `refund_min_interval_secs`), 500 `SYSTEM_ERROR`.

pub mod clock;
pub mod config;
pub mod error;
pub mod faults;
pub mod notify;
pub mod state;

mod cashier;
mod control;
mod fault_layer;
mod http_util;
mod legacy;
mod v3;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use rand::RngExt;
use tokio::sync::watch;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{DEMO_LEGACY_APP_SECRET, LegacyMerchant, SandboxConfig, V3Merchant, VerifyMode};
pub use control::AppPayRequest;
pub use error::SandboxError;
pub use faults::{EndpointFault, EndpointFaultKind, FaultSet, FaultStatus, Faults};
pub use notify::{DeliveryRecord, NotificationKind, Outcome, Variant};
pub use state::{Generation, OrderView, RefundRule, RefundView};

/// Runtime options.
#[derive(Clone)]
pub struct SandboxOptions {
    /// Multiplies every retry interval, the delivery timeout and the refund processing delay.
    pub time_scale: f64,
    /// Seeds the fault draws (and generated ids).
    pub seed: u64,
    /// The protocol clock.
    pub clock: Arc<dyn Clock>,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            time_scale: 1.0,
            seed: rand::rng().random(),
            clock: Arc::new(SystemClock),
        }
    }
}

impl std::fmt::Debug for SandboxOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxOptions")
            .field("time_scale", &self.time_scale)
            .field("seed", &self.seed)
            .field("now_unix", &self.clock.now_unix())
            .finish()
    }
}

pub(crate) struct Inner {
    pub config: SandboxConfig,
    pub clock: Arc<dyn Clock>,
    pub time_scale: f64,
    pub seed: u64,
    pub state: Mutex<state::State>,
    pub v3: v3::keys::KeyStore,
    pub http: reqwest::Client,
    pub started: Instant,
    pub shutdown: watch::Sender<bool>,
}

impl Inner {
    pub fn lock(&self) -> MutexGuard<'_, state::State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
    pub fn now(&self) -> i64 {
        self.clock.now_unix()
    }
    /// `secs` of protocol time as real time under `time_scale`.
    pub fn scaled(&self, secs: f64) -> Duration {
        Duration::from_secs_f64((secs * self.time_scale).max(0.0))
    }
}

/// The simulator. Cheap to clone (an `Arc`).
#[derive(Clone)]
pub struct Sandbox {
    pub(crate) inner: Arc<Inner>,
}

impl Sandbox {
    /// Build a sandbox; generates WeChat Pay keys (and certificates) for the v3 merchants.
    pub fn new(config: SandboxConfig, options: SandboxOptions) -> Result<Self, SandboxError> {
        config.check()?;
        if !(options.time_scale.is_finite() && options.time_scale > 0.0) {
            return Err(SandboxError::Config(
                "time_scale must be a positive number".into(),
            ));
        }
        let keys = v3::keys::KeyStore::new(&config, options.clock.now_unix())?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent("Mozilla/4.0 (wxpay-sandbox notify)")
            .build()
            .map_err(|e| SandboxError::Config(format!("http client: {e}")))?;
        let (shutdown, _) = watch::channel(false);
        Ok(Sandbox {
            inner: Arc::new(Inner {
                config,
                clock: options.clock,
                time_scale: options.time_scale,
                seed: options.seed,
                state: Mutex::new(state::State::new(options.seed)),
                v3: keys,
                http,
                started: Instant::now(),
                shutdown,
            }),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &SandboxConfig {
        &self.inner.config
    }

    /// The fault-draw seed.
    pub fn seed(&self) -> u64 {
        self.inner.seed
    }

    /// Every route: legacy, APIv3, control API and cashier.
    pub fn router(&self) -> Router {
        let inner = self.inner.clone();
        Router::new()
            .merge(legacy::router(inner.clone()))
            .merge(v3::router(inner.clone()))
            .merge(control::router(inner.clone()))
            .merge(cashier::router(inner))
    }

    /// Bind `addr` (port 0 picks a free port) and serve in a background task.
    pub async fn spawn(self, addr: SocketAddr) -> Result<SandboxHandle, SandboxError> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let app = self.router();
        let mut rx = self.inner.shutdown.subscribe();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|v| *v).await;
                })
                .await;
        });
        Ok(SandboxHandle {
            base_url: format!("http://{local}"),
            addr: local,
            sandbox: self,
            task: Mutex::new(Some(task)),
        })
    }
}

/// A running sandbox. Derefs to [`Sandbox`], whose methods mirror the control API.
pub struct SandboxHandle {
    /// `http://127.0.0.1:PORT` — the WeChat Pay base URL for clients.
    pub base_url: String,
    pub addr: SocketAddr,
    pub sandbox: Sandbox,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::ops::Deref for SandboxHandle {
    type Target = Sandbox;
    fn deref(&self) -> &Sandbox {
        &self.sandbox
    }
}

impl SandboxHandle {
    /// Stop serving and stop every pending delivery.
    pub async fn shutdown(&self) {
        let _ = self.sandbox.inner.shutdown.send(true);
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

/// The `wxpay sandbox` entry: serve until ctrl-c, printing the base URL and demo credentials.
pub async fn run(
    listen: SocketAddr,
    config: Option<PathBuf>,
    time_scale: f64,
    seed: Option<u64>,
) -> Result<(), SandboxError> {
    let cfg = match &config {
        Some(p) => SandboxConfig::from_toml_file(p)?,
        None => SandboxConfig::demo(),
    };
    let mut options = SandboxOptions {
        time_scale,
        ..SandboxOptions::default()
    };
    if let Some(s) = seed {
        options.seed = s;
    }
    let sandbox = Sandbox::new(cfg, options)?;
    let handle = sandbox.spawn(listen).await?;
    println!("{}", handle.banner());
    let _ = tokio::signal::ctrl_c().await;
    println!("wxpay sandbox: shutting down");
    handle.shutdown().await;
    Ok(())
}

impl SandboxHandle {
    /// Human-readable start-up text: base URL, control API, merchants and demo credentials.
    pub fn banner(&self) -> String {
        let cfg = self.sandbox.config();
        let mut s = format!(
            "wxpay sandbox listening on {base}\n  control API: {base}/sandbox/api/   cashier: {base}/sandbox/cashier/{{prepay_id}}\n  time scale {ts}, seed {seed}\n",
            base = self.base_url,
            ts = self.sandbox.inner.time_scale,
            seed = self.sandbox.seed()
        );
        // Credentials are printed only where they are the published demo ones.
        for m in &cfg.legacy_merchants {
            let demo = m.app_secret == config::DEMO_LEGACY_APP_SECRET
                && m.partner_key == config::DEMO_LEGACY_PARTNER_KEY
                && m.app_key == config::DEMO_LEGACY_APP_KEY;
            if demo {
                s.push_str(&format!(
                    "  legacy merchant (demo): appid={} app_secret={} partner={} partner_key={} app_key={} (token quota {}/day)\n",
                    m.appid, m.app_secret, m.partner, m.partner_key, m.app_key, m.token_daily_quota
                ));
            } else {
                s.push_str(&format!(
                    "  legacy merchant: appid={} partner={} (token quota {}/day)\n",
                    m.appid, m.partner, m.token_daily_quota
                ));
            }
        }
        for m in &cfg.v3_merchants {
            let key = if m.apiv3_key == config::DEMO_V3_APIV3_KEY {
                format!(
                    " apiv3_key={} merchant key=demo/keys/official_test_key.pem",
                    m.apiv3_key
                )
            } else {
                String::new()
            };
            s.push_str(&format!(
                "  v3 merchant: mchid={} appids={} serial_no={}{} verify_mode={:?} public_key_id={}\n    WeChat Pay public key: GET {}/sandbox/api/merchants/{}/wechatpay-public-key\n",
                m.mchid,
                m.appids.join(","),
                m.merchant_serial_no,
                key,
                m.verify_mode,
                m.public_key_id(),
                self.base_url,
                m.mchid
            ));
        }
        s
    }
}
