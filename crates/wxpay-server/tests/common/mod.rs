//! A server on a random port against an in-process sandbox, on a fresh database.

#![allow(dead_code)]

use secrecy::SecretString;
use serde_json::{Value, json};
use std::sync::Arc;
use wxpay_sandbox::{Sandbox, SandboxConfig, SandboxHandle, SandboxOptions, SystemClock};
use wxpay_server::configuration::{AuthSettings, Settings};
use wxpay_server::startup::{AppState, BuildOptions, build, sandbox_merchants, serve};
use wxpay_store::testing::TestDb;

pub const API_KEY: &str = "sk_test_integration";
pub const JWT_SECRET: &str = "jwt-test-secret";
pub const REDIS_ENV: &str = "WXPAY_TEST_REDIS_URL";

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub state: Arc<AppState>,
    /// Redis URL and key prefix to clean up when the app is dropped.
    redis: Option<(String, String)>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let Some((url, prefix)) = self.redis.take() else {
            return;
        };
        // Sync client on its own thread: Drop runs inside the test's runtime.
        let _ = std::thread::spawn(move || {
            let Ok(client) = redis::Client::open(url.as_str()) else {
                return;
            };
            let Ok(mut con) = client.get_connection() else {
                return;
            };
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{prefix}*"))
                .query(&mut con)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut con);
            }
        })
        .join();
    }
}

pub async fn sandbox() -> SandboxHandle {
    sandbox_with_clock(Arc::new(SystemClock)).await
}

/// `sandbox()` on an injected clock (share it with the server's to move both through days).
pub async fn sandbox_with_clock(clock: Arc<dyn wxpay_sandbox::Clock>) -> SandboxHandle {
    let options = SandboxOptions {
        time_scale: 0.001,
        seed: 7,
        clock,
    };
    // WeChat spaces refunds of one order ≥ 60 s apart; these tests refund back to back.
    let config = SandboxConfig {
        refund_min_interval_secs: 0,
        ..SandboxConfig::demo()
    };
    Sandbox::new(config, options)
        .expect("sandbox")
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .expect("sandbox spawn")
}

/// `memory`, or the Redis of `WXPAY_TEST_REDIS_URL` when the database is PostgreSQL.
pub fn cache_for(db: &TestDb) -> String {
    match (db.backend_name(), std::env::var(REDIS_ENV)) {
        ("postgres", Ok(url)) if !url.is_empty() => url,
        _ => "memory".into(),
    }
}

pub fn random_prefix() -> String {
    format!("wxpay-test-{}:", wxpay_store::new_id(""))
}

pub async fn spawn_app(
    db: &TestDb,
    sandbox: &SandboxHandle,
    cache_url: &str,
    redis_prefix: &str,
) -> TestApp {
    spawn_app_custom(
        db,
        sandbox,
        cache_url,
        redis_prefix,
        Arc::new(wxpay_gateway::SystemClock),
        |_| {},
    )
    .await
}

/// `spawn_app` with an injected clock and a chance to change the settings.
pub async fn spawn_app_custom(
    db: &TestDb,
    sandbox: &SandboxHandle,
    cache_url: &str,
    redis_prefix: &str,
    clock: Arc<dyn wxpay_gateway::Clock>,
    adjust: impl FnOnce(&mut Settings),
) -> TestApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let settings = Settings {
        listen: addr.to_string(),
        public_url: Some(format!("http://{addr}")),
        database_url: db.url.clone(),
        cache_url: cache_url.to_string(),
        order_ttl_secs: 1800,
        auth: AuthSettings {
            api_keys: vec![SecretString::from(API_KEY)],
            jwt_secret: Some(SecretString::from(JWT_SECRET)),
            admin_key: Some(SecretString::from("adm_test")),
        },
        merchants: sandbox_merchants(sandbox),
        // Tests start workers explicitly when they want them.
        workers: false,
        ..Settings::defaults()
    };
    let mut settings = settings;
    adjust(&mut settings);
    let opts = BuildOptions {
        redis_prefix: redis_prefix.to_string(),
        store: Some(db.store.clone()),
        clock,
    };
    let app = build(settings, opts).await.expect("build app");
    let state = app.state.clone();
    tokio::spawn(serve(app, listener, std::future::pending()));
    let redis = cache_url
        .starts_with("redis://")
        .then(|| (cache_url.to_string(), redis_prefix.to_string()));
    TestApp {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        state,
        redis,
    }
}

impl TestApp {
    pub async fn post(&self, path: &str, auth: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(auth)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, auth: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(auth)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn create_order(&self, user: &str, amount: i64, coupon: Option<&str>) -> Value {
        let mut body = json!({"user_id": user, "subject": "支付测试", "amount_fen": amount});
        if let Some(c) = coupon {
            body["coupon_code"] = json!(c);
        }
        let (status, v) = self.post("/v1/orders", API_KEY, body).await;
        assert_eq!(status, 201, "{v}");
        v
    }

    pub async fn pay(&self, order_no: &str) -> Value {
        let (status, v) = self
            .post(
                &format!("/v1/orders/{order_no}/pay"),
                API_KEY,
                json!({"merchant": "legacy-demo", "client_ip": "196.168.1.1"}),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        v
    }

    pub async fn order(&self, order_no: &str) -> Value {
        let (status, v) = self.get(&format!("/v1/orders/{order_no}"), API_KEY).await;
        assert_eq!(status, 200, "{v}");
        v
    }

    /// Polls the order until `state` (bounded: 20 s).
    pub async fn wait_state(&self, order_no: &str, state: &str) -> Value {
        for _ in 0..400 {
            let o = self.order(order_no).await;
            if o["state"] == state {
                return o;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!(
            "order {order_no} never reached {state}: {}",
            self.order(order_no).await
        );
    }
}
