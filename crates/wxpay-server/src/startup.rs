//! Building the application: store, token cache, gateways (or the in-process sandbox), router.

use crate::configuration::{MerchantSettings, ProtocolSetting, Settings};
use crate::routes;
use axum::Router;
use secrecy::SecretString;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use wxpay_gateway::legacy::{LegacyConfig, LegacyGateway};
use wxpay_gateway::token::{MemoryTokenCache, RedisTokenCache, TokenCache};
use wxpay_gateway::v3::{V3Config, V3Gateway, V3Verification};
use wxpay_gateway::{Clock, Gateway, SystemClock};
use wxpay_proto::Charset;
use wxpay_store::Store;

/// Everything a request handler needs.
pub struct AppState {
    pub store: Store,
    pub gateways: HashMap<String, Arc<dyn Gateway>>,
    pub settings: Settings,
    pub public_url: String,
    pub clock: Arc<dyn Clock>,
    pub tokens: Arc<dyn TokenCache>,
}

impl AppState {
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
    pub fn notify_url(&self, merchant_id: &str) -> String {
        format!(
            "{}/notify/{merchant_id}",
            self.public_url.trim_end_matches('/')
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] crate::configuration::ConfigError),
    #[error(transparent)]
    Store(#[from] wxpay_store::StoreError),
    #[error("cache: {0}")]
    Cache(String),
    #[error("merchant {0}: {1}")]
    Merchant(String, String),
    #[error("sandbox: {0}")]
    Sandbox(String),
    #[error("listen on {0}: {1}")]
    Listen(String, std::io::Error),
}

/// Options a caller (CLI, tests) sets beside the settings.
#[derive(Clone)]
pub struct BuildOptions {
    pub clock: Arc<dyn Clock>,
    /// Prefix of every Redis key this instance writes (tests use a random one).
    pub redis_prefix: String,
    /// An already connected store (tests); otherwise `database_url` is opened.
    pub store: Option<Store>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            clock: Arc::new(SystemClock),
            redis_prefix: "wxpay:".into(),
            store: None,
        }
    }
}

pub async fn token_cache(
    settings: &Settings,
    opts: &BuildOptions,
) -> Result<Arc<dyn TokenCache>, StartupError> {
    if settings.cache_url == "memory" {
        Ok(Arc::new(MemoryTokenCache::new(opts.clock.clone())))
    } else if settings.cache_url.starts_with("redis://")
        || settings.cache_url.starts_with("rediss://")
    {
        let c =
            RedisTokenCache::connect(&settings.cache_url, &opts.redis_prefix, opts.clock.clone())
                .await
                .map_err(|e| StartupError::Cache(e.to_string()))?;
        Ok(Arc::new(c))
    } else {
        Err(StartupError::Cache(
            "cache_url must be `memory` or redis://…".into(),
        ))
    }
}

fn secret(
    m: &MerchantSettings,
    v: &Option<SecretString>,
    key: &str,
) -> Result<SecretString, StartupError> {
    v.clone()
        .ok_or_else(|| StartupError::Merchant(m.id.clone(), format!("`{key}` is required")))
}

fn read_file(m: &MerchantSettings, path: &str) -> Result<String, StartupError> {
    std::fs::read_to_string(path)
        .map_err(|e| StartupError::Merchant(m.id.clone(), format!("cannot read {path}: {e}")))
}

/// Makes the gateway of one configured merchant (downloading platform certificates when its
/// verification mode needs them).
pub async fn gateway(
    m: &MerchantSettings,
    http: wxpay_gateway::http::Client,
    tokens: Arc<dyn TokenCache>,
    clock: Arc<dyn Clock>,
    production: bool,
) -> Result<Arc<dyn Gateway>, StartupError> {
    let bad = |e: String| StartupError::Merchant(m.id.clone(), e);
    match m.protocol {
        ProtocolSetting::Legacy => {
            let cfg = LegacyConfig {
                merchant_id: m.id.clone(),
                base_url: m.base_url.clone(),
                appid: m.appid.clone(),
                app_secret: secret(m, &m.app_secret, "app_secret")?,
                app_key: secret(m, &m.app_key, "app_key")?,
                partner: m.partner.clone().unwrap_or_default(),
                partner_key: secret(m, &m.partner_key, "partner_key")?,
                token_daily_quota: m.token_daily_quota,
                input_charset: Charset::Utf8,
            };
            Ok(Arc::new(LegacyGateway::new(cfg, http, tokens, clock)))
        }
        ProtocolSetting::V3 => {
            use secrecy::ExposeSecret;
            use wxpay_proto::v3::aead::ApiV3Key;
            use wxpay_proto::v3::rsa::{RsaPrivateKey, RsaPublicKey};
            let key_pem = match (&m.private_key_pem, &m.private_key_file) {
                (Some(pem), _) => SecretString::from(pem.expose_secret().to_string()),
                (None, Some(path)) => SecretString::from(read_file(m, path)?),
                (None, None) => return Err(bad("`private_key_file` is required".into())),
            };
            let private_key = RsaPrivateKey::from_pkcs8_pem(key_pem.expose_secret())
                .map_err(|e| bad(format!("private key: {e}")))?;
            let apiv3_key = ApiV3Key::new(secret(m, &m.apiv3_key, "apiv3_key")?.expose_secret())
                .map_err(|e| bad(format!("apiv3_key: {e}")))?;
            let public_pem = match (&m.wechatpay_public_key_pem, &m.wechatpay_public_key_file) {
                (Some(pem), _) => Some(pem.clone()),
                (None, Some(path)) => Some(read_file(m, path)?),
                (None, None) => None,
            };
            let verification = match (public_pem, &m.wechatpay_public_key_id) {
                (Some(pem), Some(id)) => {
                    let key = RsaPublicKey::from_spki_pem(&pem)
                        .map_err(|e| bad(format!("WeChat Pay public key: {e}")))?;
                    if m.combined_verification {
                        V3Verification::Combined {
                            id: id.clone(),
                            key,
                        }
                    } else {
                        V3Verification::PublicKey {
                            id: id.clone(),
                            key,
                        }
                    }
                }
                _ => V3Verification::PlatformCertificates,
            };
            let cfg = V3Config {
                merchant_id: m.id.clone(),
                base_url: m.base_url.clone(),
                appid: m.appid.clone(),
                mchid: m.mchid.clone().unwrap_or_default(),
                serial_no: m.serial_no.clone().unwrap_or_default(),
                private_key,
                apiv3_key,
                verification,
                allow_http: !production,
            };
            let gw = V3Gateway::new(cfg, http, clock);
            gw.init()
                .await
                .map_err(|e| bad(format!("initialising the APIv3 gateway: {e}")))?;
            // Platform certificates are downloaded again every 12 h (a no-op in public-key mode).
            let _ = gw.spawn_certificate_refresher(wxpay_gateway::v3::CERTIFICATE_REFRESH_INTERVAL);
            Ok(Arc::new(gw))
        }
    }
}

/// The demo merchants of the in-process sandbox: `legacy-demo` and `v3-demo` (public-key mode,
/// with the key the sandbox hands out as a merchant would download it).
pub fn sandbox_merchants(sandbox: &wxpay_sandbox::SandboxHandle) -> Vec<MerchantSettings> {
    use wxpay_sandbox::config as sb;
    let base_url = sandbox.base_url.as_str();
    let (pk_pem, pk_id) = sandbox.wechatpay_public_key(sb::DEMO_V3_MCHID);
    let legacy = MerchantSettings {
        id: "legacy-demo".into(),
        protocol: ProtocolSetting::Legacy,
        base_url: base_url.to_string(),
        appid: sb::DEMO_LEGACY_APPID.into(),
        app_secret: Some(SecretString::from(sb::DEMO_LEGACY_APP_SECRET)),
        app_key: Some(SecretString::from(sb::DEMO_LEGACY_APP_KEY)),
        partner: Some(sb::DEMO_LEGACY_PARTNER.into()),
        partner_key: Some(SecretString::from(sb::DEMO_LEGACY_PARTNER_KEY)),
        token_daily_quota: 200,
        mchid: None,
        serial_no: None,
        private_key_file: None,
        apiv3_key: None,
        wechatpay_public_key_file: None,
        wechatpay_public_key_id: None,
        private_key_pem: None,
        wechatpay_public_key_pem: None,
        combined_verification: false,
        return_coupon_on_full_refund: true,
    };
    let v3 = MerchantSettings {
        id: "v3-demo".into(),
        protocol: ProtocolSetting::V3,
        appid: sb::DEMO_V3_APPID.into(),
        app_secret: None,
        app_key: None,
        partner: None,
        partner_key: None,
        mchid: Some(sb::DEMO_V3_MCHID.into()),
        serial_no: Some(sb::DEMO_V3_SERIAL_NO.into()),
        private_key_pem: Some(SecretString::from(sb::DEMO_MERCHANT_PRIVATE_KEY_PEM)),
        apiv3_key: Some(SecretString::from(sb::DEMO_V3_APIV3_KEY)),
        wechatpay_public_key_pem: Some(pk_pem),
        wechatpay_public_key_id: Some(pk_id),
        ..legacy.clone()
    };
    vec![legacy, v3]
}

/// A built application, ready to serve.
pub struct Application {
    pub state: Arc<AppState>,
    pub router: Router,
}

pub async fn build(settings: Settings, opts: BuildOptions) -> Result<Application, StartupError> {
    settings.check()?;
    // The process-wide Prometheus recorder (installed once; later builds share it).
    crate::metrics::install();
    let store = match opts.store.clone() {
        Some(s) => s,
        None => Store::connect(&settings.database_url).await?,
    };
    let tokens = token_cache(&settings, &opts).await?;
    let http = wxpay_gateway::http::client(Default::default());
    let mut gateways: HashMap<String, Arc<dyn Gateway>> = HashMap::new();
    for m in &settings.merchants {
        let g = gateway(
            m,
            http.clone(),
            tokens.clone(),
            opts.clock.clone(),
            settings.production,
        )
        .await?;
        gateways.insert(m.id.clone(), g);
    }
    let public_url = settings
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", settings.listen));
    let state = Arc::new(AppState {
        store,
        gateways,
        settings,
        public_url,
        clock: opts.clock.clone(),
        tokens,
    });
    // Webhook endpoints start their cursor now, before any request can create an event, so no
    // event of this process's lifetime is missed by a freshly configured endpoint.
    crate::workers::webhooks::register(&state).await?;
    let router = routes::router(state.clone());
    Ok(Application { state, router })
}

/// Binds the listener and serves until `shutdown` resolves (then finishes in-flight requests).
pub async fn serve(
    app: Application,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app.router
            .into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// `wxpay serve`: with no merchant configured, starts the sandbox in-process and says so loudly.
pub async fn run(mut settings: Settings) -> Result<(), StartupError> {
    let mut _sandbox = None;
    if settings.merchants.is_empty() {
        let sandbox = wxpay_sandbox::Sandbox::new(
            wxpay_sandbox::SandboxConfig::demo(),
            wxpay_sandbox::SandboxOptions::default(),
        )
        .map_err(|e| StartupError::Sandbox(e.to_string()))?;
        let handle = sandbox
            .spawn("127.0.0.1:0".parse().expect("literal address"))
            .await
            .map_err(|e| StartupError::Sandbox(e.to_string()))?;
        eprintln!("================================================================");
        eprintln!(" SANDBOX MODE: no merchant is configured, so wxpay talks to the");
        eprintln!(" built-in WeChat Pay sandbox at {}", handle.base_url);
        eprintln!(
            " Nothing here moves real money. Cashier: {}/sandbox/cashier/<prepay_id>",
            handle.base_url
        );
        eprintln!("================================================================");
        settings.merchants = sandbox_merchants(&handle);
        if settings.auth.api_keys.is_empty() {
            settings
                .auth
                .api_keys
                .push(SecretString::from("sk_test_change_me"));
            eprintln!(" demo API key: sk_test_change_me");
        }
        _sandbox = Some(handle);
    }
    let listen = settings.listen.clone();
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| StartupError::Listen(listen.clone(), e))?;
    let app = build(settings, BuildOptions::default()).await?;
    let merchants: Vec<_> = app.state.gateways.keys().cloned().collect();
    tracing::info!(%listen, ?merchants, database = %redact_url(&app.state.settings.database_url), "wxpay serving");
    eprintln!(
        "wxpay listening on http://{listen} (merchants: {})",
        merchants.join(", ")
    );
    // One signal for everything: on SIGTERM/ctrl-c the workers stop claiming at once, the
    // server stops accepting and finishes in-flight requests, then the workers finish their jobs.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let signal_tx = stop_tx.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = signal_tx.send(true);
    });
    let _workers_lock;
    let workers = if !app.state.settings.workers {
        None
    } else {
        match worker_lock(&app.state.settings.database_url) {
            Ok(lock) => {
                _workers_lock = lock;
                Some(crate::workers::Workers::spawn_with(
                    app.state.clone(),
                    stop_tx,
                    stop_rx.clone(),
                ))
            }
            Err(msg) => {
                eprintln!("wxpay: {msg}; this process serves requests only");
                None
            }
        }
    };
    let mut rx = stop_rx;
    serve(app, listener, async move {
        let _ = rx.wait_for(|stop| *stop).await;
    })
    .await
    .map_err(|e| StartupError::Listen(listen, e))?;
    if let Some(w) = workers {
        w.shutdown().await;
    }
    drop(_sandbox);
    Ok(())
}

/// On SQLite only one process may run the workers: it holds an exclusive lock on
/// `<database>.workers.lock` for as long as it runs. PostgreSQL needs no lock (leases).
pub fn worker_lock(database_url: &str) -> Result<Option<std::fs::File>, String> {
    let Some(path) = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))
    else {
        return Ok(None);
    };
    let path = path.split('?').next().unwrap_or(path);
    if path.contains(":memory:") {
        return Ok(None);
    }
    let lock_path = format!("{path}.workers.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {lock_path}: {e}"))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(_) => Err(format!(
            "another wxpay process already runs the background workers on {path} (SQLite allows one; use PostgreSQL for several)"
        )),
    }
}

pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: finishing in-flight requests");
}
