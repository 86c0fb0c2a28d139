//! `wxpay demo`: the whole story on one machine, in one command.
//!
//! Starts the WeChat Pay sandbox and the wxpay server in-process on free ports, with a temporary
//! SQLite database, then walks through the blog's steps for the legacy merchant (`legacy-demo`)
//! and the APIv3 merchant (`v3-demo`) over real HTTP — a coupon, an order with the coupon, the
//! prepay (and, for legacy, the access token), the app's signed parameters (verified here), the
//! app's hint before paying, the user paying at the sandbox (which checks the app's sign like the
//! WeChat app), WeChat's notification with its receipt, a duplicate of it that changes nothing,
//! the hint after paying, and for v3 a partial refund — printing what was sent, what came back
//! and what was verified. Any unmet expectation ends the demo with an error.
//!
//! Every notification is sent twice (the sandbox's `duplicate_notification` fault), so the
//! duplicate is WeChat's own retry, not a replay made up here.

use crate::configuration::{AuthSettings, Settings};
use crate::startup::{self, Application, BuildOptions};
use secrecy::SecretString;
use serde_json::{Value, json};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wxpay_sandbox::config as sb;
use wxpay_sandbox::{FaultSet, Faults, RefundRule, Sandbox, SandboxConfig, SandboxOptions};

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// After the walk-through, keep the sandbox and the server up (with the background workers)
    /// until ctrl-c, and print their URLs.
    pub keep_running: bool,
    /// The sandbox's time scale (notification retry spacing, refund processing).
    pub time_scale: f64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            keep_running: false,
            time_scale: 1.0,
        }
    }
}

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("could not start: {0}")]
    Start(String),
    #[error("step {step}: {detail}")]
    Step { step: String, detail: String },
    #[error("could not write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// What the walk-through established (for tests and callers).
#[derive(Debug, Clone, Default)]
pub struct DemoReport {
    pub server_url: String,
    pub sandbox_url: String,
    /// `(merchant, order_no, final order state)`.
    pub orders: Vec<(String, String, String)>,
    pub steps: usize,
}

const USER: &str = "demo-user";
const CLIENT_IP: &str = "203.0.113.7";
/// How long one step may wait for the sandbox or the server (real time).
const WAIT: Duration = Duration::from_secs(30);

struct Demo<'a> {
    out: &'a mut (dyn Write + Send),
    http: reqwest::Client,
    base: String,
    api_key: String,
    app: Arc<crate::startup::AppState>,
    sandbox: &'a wxpay_sandbox::SandboxHandle,
    step: usize,
    current: String,
}

fn fail(step: &str, detail: impl Into<String>) -> DemoError {
    DemoError::Step {
        step: step.to_string(),
        detail: detail.into(),
    }
}

/// One line of JSON without the nulls.
fn compact(v: &Value) -> String {
    fn strip(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), strip(v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(strip).collect()),
            other => other.clone(),
        }
    }
    strip(v).to_string()
}

/// An answer as the story needs it: no nulls, no repeated descriptive fields, long values cut.
fn brief(v: &Value) -> String {
    const SKIP: &[&str] = &[
        "items",
        "subject",
        "user_id",
        "created_at",
        "expires_at",
        "paid_at",
        "finished_at",
        "min_spend_fen",
    ];
    fn cut(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(k, v)| !v.is_null() && !SKIP.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), cut(v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(cut).collect()),
            Value::String(s) => Value::String(shorten(s)),
            other => other.clone(),
        }
    }
    compact(&cut(v))
}

/// A long value (an RSA signature) as its start and its length.
fn shorten(s: &str) -> String {
    if s.chars().count() <= 44 {
        s.to_string()
    } else {
        let head: String = s.chars().take(24).collect();
        format!("{head}…({} chars)", s.chars().count())
    }
}

fn s<'v>(v: &'v Value, key: &str) -> &'v str {
    v[key].as_str().unwrap_or("")
}

impl Demo<'_> {
    fn heading(&mut self, title: &str) -> Result<(), DemoError> {
        writeln!(self.out)?;
        writeln!(
            self.out,
            "── {title} {}",
            "─".repeat(70usize.saturating_sub(title.chars().count()))
        )?;
        Ok(())
    }

    fn begin(&mut self, title: &str) -> Result<(), DemoError> {
        self.step += 1;
        self.current = format!("{} ({title})", self.step);
        writeln!(self.out, "[{}] {title}", self.step)?;
        Ok(())
    }

    fn line(&mut self, text: impl AsRef<str>) -> Result<(), DemoError> {
        writeln!(self.out, "    {}", text.as_ref())?;
        Ok(())
    }

    fn ok(&mut self, text: impl AsRef<str>) -> Result<(), DemoError> {
        writeln!(self.out, "    ✓ {}", text.as_ref())?;
        Ok(())
    }

    fn expect(&self, cond: bool, detail: impl Into<String>) -> Result<(), DemoError> {
        if cond {
            Ok(())
        } else {
            Err(fail(&self.current, detail))
        }
    }

    async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), DemoError> {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(&url),
            _ => self.http.post(&url),
        }
        .bearer_auth(&self.api_key);
        let req = match &body {
            Some(b) => {
                self.line(format!("→ {method} {path} {}", compact(b)))?;
                req.header("content-type", "application/json")
                    .body(b.to_string())
            }
            None => {
                self.line(format!("→ {method} {path}"))?;
                req
            }
        };
        let resp = req
            .send()
            .await
            .map_err(|e| fail(&self.current, format!("{method} {path}: {e}")))?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| fail(&self.current, format!("{method} {path}: {e}")))?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        self.line(format!("← {status} {}", brief(&v)))?;
        Ok((status, v))
    }

    async fn expect_call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Value>,
        want: u16,
    ) -> Result<Value, DemoError> {
        let (status, v) = self.call(method, path, body).await?;
        self.expect(
            status == want,
            format!("{method} {path} answered {status}, expected {want}: {v}"),
        )?;
        Ok(v)
    }

    /// Polls the order (quietly) until `state`.
    async fn wait_order(&mut self, order_no: &str, state: &str) -> Result<Value, DemoError> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let r = self
                .http
                .get(format!("{}/v1/orders/{order_no}", self.base))
                .bearer_auth(&self.api_key)
                .send()
                .await;
            if let Ok(r) = r
                && let Ok(v) = r.json::<Value>().await
                && v["state"] == state
            {
                return Ok(v);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(fail(
                    &self.current,
                    format!("order {order_no} did not reach {state}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn receipts(&self, out_trade_no: &str, kind: &str) -> Vec<wxpay_store::Receipt> {
        self.app
            .store
            .list_receipts(out_trade_no)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.kind == kind)
            .collect()
    }

    async fn events(&self, order_no: &str) -> Vec<String> {
        self.app
            .store
            .list_events(order_no)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.event_type)
            .collect()
    }

    /// Waits until both copies of the first attempt of a notification were answered.
    async fn wait_both_copies(
        &mut self,
        out_trade_no: &str,
        refund: Option<&str>,
    ) -> Result<(), DemoError> {
        let ok = self
            .sandbox
            .wait_for_notifications(WAIT, |ds| {
                ds.iter()
                    .filter(|d| {
                        d.out_trade_no == out_trade_no
                            && d.out_refund_no.as_deref() == refund
                            && d.outcome == wxpay_sandbox::Outcome::Success
                    })
                    .count()
                    >= 2
            })
            .await;
        self.expect(
            ok,
            "WeChat's notification and its duplicate were not both acknowledged",
        )
    }

    fn show_deliveries(
        &mut self,
        out_trade_no: &str,
        refund: Option<&str>,
    ) -> Result<(), DemoError> {
        let ds: Vec<_> = self
            .sandbox
            .notifications()
            .into_iter()
            .filter(|d| d.out_trade_no == out_trade_no && d.out_refund_no.as_deref() == refund)
            .collect();
        for d in ds {
            let reply = if d.reply.is_empty() {
                "(empty body)".to_string()
            } else {
                format!("{:?}", d.reply)
            };
            self.line(format!(
                "WeChat → POST /notify/… {} attempt {} copy {}: HTTP {} {reply} ({:?}, {} ms)",
                d.event_type,
                d.attempt,
                d.copy,
                d.status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "-".into()),
                d.outcome,
                d.duration_ms
            ))?;
        }
        Ok(())
    }

    /// What a notification carried and what was checked, from its receipt.
    fn show_notification(&mut self, r: &wxpay_store::Receipt, v3: bool) -> Result<(), DemoError> {
        if v3 {
            let headers: Vec<(String, String)> = r
                .headers_json
                .as_deref()
                .and_then(|h| serde_json::from_str(h).ok())
                .unwrap_or_default();
            let header = |name: &str| {
                headers
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| shorten(v))
                    .unwrap_or_default()
            };
            self.line(format!(
                "headers: Wechatpay-Serial {}, Wechatpay-Timestamp {}, Wechatpay-Signature {}",
                header("wechatpay-serial"),
                header("wechatpay-timestamp"),
                header("wechatpay-signature")
            ))?;
            let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            self.line(format!(
                "body: event_type {}, resource {} (ciphertext {} chars)",
                s(&body, "event_type"),
                s(&body["resource"], "algorithm"),
                s(&body["resource"], "ciphertext").len()
            ))?;
            self.ok("the signature verifies with WeChat Pay's public key (timestamp within 5 minutes); the resource decrypts with the APIv3 key; mchid, appid and amount match")?;
        } else {
            let query = r.query.as_deref().unwrap_or("");
            let fields: Vec<String> = query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .filter(|(k, _)| {
                    [
                        "out_trade_no",
                        "total_fee",
                        "trade_state",
                        "transaction_id",
                        "sign",
                    ]
                    .contains(k)
                })
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            self.line(format!("query: {} …", fields.join(" ")))?;
            self.line(format!(
                "body: <xml> with OpenId, AppId, TimeStamp, NonceStr, AppSignature ({} bytes)",
                r.body.len()
            ))?;
            self.ok("query sign = MD5 with the partner key, body AppSignature = SHA1 with the appkey: both verify; partner and amount match")?;
        }
        Ok(())
    }

    /// The blog's steps for one merchant. Returns the order number.
    async fn walk(&mut self, merchant: &str, v3: bool) -> Result<String, DemoError> {
        let coupon_code = if v3 { "DEMO-V3" } else { "DEMO-LEGACY" };
        self.begin("Issue a coupon to the user (API key)")?;
        let c = self
            .expect_call(
                "POST",
                "/v1/coupons",
                Some(json!({"user_id": USER, "discount_fen": 100, "min_spend_fen": 500, "code": coupon_code})),
                201,
            )
            .await?;
        self.expect(c["state"] == "AVAILABLE", "the coupon is not AVAILABLE")?;
        self.ok(format!(
            "coupon {coupon_code}: 100 fen off from 500 fen, AVAILABLE"
        ))?;

        self.begin("The user orders two cups of tea with the coupon")?;
        let o = self
            .expect_call(
                "POST",
                "/v1/orders",
                Some(json!({
                    "user_id": USER,
                    "subject": "龙井茶 ×2",
                    "items": [{"sku": "tea-longjing", "name": "龙井茶", "unit_price_fen": 550, "quantity": 2}],
                    "coupon_code": coupon_code,
                })),
                201,
            )
            .await?;
        let order_no = s(&o, "order_no").to_string();
        let (amount, discount, payable) = (
            o["amount_fen"].as_i64().unwrap_or(0),
            o["discount_fen"].as_i64().unwrap_or(0),
            o["payable_fen"].as_i64().unwrap_or(0),
        );
        self.expect(
            (amount, discount, payable) == (1100, 100, 1000),
            format!("priced {amount} - {discount} = {payable}, expected 1100 - 100 = 1000"),
        )?;
        self.ok(format!(
            "{order_no}: 2 × 550 = {amount} fen − coupon {discount} = payable {payable} fen (integer fen), {}",
            s(&o, "state")
        ))?;

        let appid = if v3 {
            sb::DEMO_V3_APPID
        } else {
            sb::DEMO_LEGACY_APPID
        };
        let fetches_before = self.sandbox.token_fetch_count(appid);
        self.begin(if v3 {
            "Prepay: POST /v3/pay/transactions/app, signed with the merchant's RSA key"
        } else {
            "Prepay: access_token, the MD5-signed package, the SHA1-signed genprepay"
        })?;
        let pay_path = format!("/v1/orders/{order_no}/pay");
        let body = json!({"merchant": merchant, "client_ip": CLIENT_IP});
        let p = self
            .expect_call("POST", &pay_path, Some(body.clone()), 200)
            .await?;
        let out_trade_no = s(&p, "out_trade_no").to_string();
        let params = p["app_params"].clone();
        let prepay_id = s(&params, "prepayid").to_string();
        self.expect(!prepay_id.is_empty(), "no prepay id")?;
        self.ok(format!(
            "payment attempt {out_trade_no} (its own out_trade_no), prepay id {prepay_id}"
        ))?;
        if !v3 {
            let fetched = self.sandbox.token_fetch_count(appid) - fetches_before;
            self.expect(
                fetched == 1,
                format!("{fetched} access_token fetches, expected 1"),
            )?;
            self.ok("access_token: fetched once from /cgi-bin/token and cached (its value never leaves the server)")?;
            let again = self.expect_call("POST", &pay_path, Some(body), 200).await?;
            self.expect(
                again["app_params"]["prepayid"] == params["prepayid"],
                "paying again did not reuse the prepay",
            )?;
            let fetched = self.sandbox.token_fetch_count(appid) - fetches_before;
            self.expect(
                fetched == 1,
                "the token was fetched again instead of reused",
            )?;
            self.ok("paying again reuses the still-valid prepay; the token is not fetched again")?;
        }

        self.begin("The app's parameters for the WeChat SDK (PayReq)")?;
        for k in [
            "appid",
            "partnerid",
            "prepayid",
            "package",
            "noncestr",
            "timestamp",
            "sign",
        ] {
            self.line(format!("{k:<10} {}", shorten(s(&params, k))))?;
        }
        self.expect(
            s(&params, "package") == "Sign=WXPay",
            "package is not Sign=WXPay",
        )?;
        self.expect(
            s(&params, "timestamp").len() == 10,
            "timestamp is not 10-digit seconds",
        )?;
        if v3 {
            use wxpay_proto::v3::auth::app_pay_message;
            use wxpay_proto::v3::rsa::RsaPrivateKey;
            let key = RsaPrivateKey::from_pkcs8_pem(sb::DEMO_MERCHANT_PRIVATE_KEY_PEM)
                .map_err(|e| fail(&self.current, format!("demo merchant key: {e}")))?
                .public_key();
            let ts: i64 = s(&params, "timestamp").parse().unwrap_or(0);
            let msg = app_pay_message(s(&params, "appid"), ts, s(&params, "noncestr"), &prepay_id);
            self.expect(
                key.verify_sha256_base64(&msg, s(&params, "sign")),
                "the RSA sign does not verify",
            )?;
            self.ok("sign = SHA256withRSA over \"appid\\ntimestamp\\nnoncestr\\nprepayid\\n\": verifies with the merchant's public key")?;
        } else {
            let req: wxpay_proto::legacy::PayReq = serde_json::from_value(params.clone())
                .map_err(|e| fail(&self.current, format!("app params: {e}")))?;
            self.expect(
                req.verify(&SecretString::from(sb::DEMO_LEGACY_APP_KEY)),
                "the SHA1 sign does not verify",
            )?;
            self.ok("sign = SHA1 over appid, appkey, noncestr, package, partnerid, prepayid, timestamp: verifies with the appkey")?;
        }

        self.begin("The app says \"I paid\" before the user did: a hint, not proof")?;
        let hint_path = format!("/v1/orders/{order_no}/client-result");
        let h = self.expect_call("POST", &hint_path, None, 200).await?;
        self.expect(
            h["state"] == "PAYING",
            format!("state {} after an early hint", h["state"]),
        )?;
        self.ok("wxpay asked WeChat (query): not paid, so the order stays PAYING")?;

        self.begin("The user pays in WeChat (the sandbox's cashier)")?;
        let pay_req = wxpay_sandbox::AppPayRequest {
            appid: s(&params, "appid").into(),
            partnerid: s(&params, "partnerid").into(),
            prepayid: prepay_id.clone(),
            package: s(&params, "package").into(),
            noncestr: s(&params, "noncestr").into(),
            timestamp: s(&params, "timestamp").into(),
            sign: s(&params, "sign").into(),
        };
        let paid = self.sandbox.pay_with_request(&pay_req).map_err(|e| {
            fail(
                &self.current,
                format!("the sandbox refused the payment: {e}"),
            )
        })?;
        self.expect(
            paid.state == "SUCCESS",
            format!("sandbox order {}", paid.state),
        )?;
        self.ok(format!(
            "the sandbox checked the app's sign as the WeChat app does; {} fen paid, transaction {}",
            paid.amount,
            paid.transaction_id.as_deref().unwrap_or("-")
        ))?;

        self.begin("WeChat's signed notification, and its duplicate")?;
        self.wait_both_copies(&out_trade_no, None).await?;
        let order = self.wait_order(&order_no, "PAID").await?;
        self.show_deliveries(&out_trade_no, None)?;
        let receipts = self.receipts(&out_trade_no, "payment").await;
        if let Some(r) = receipts.iter().find(|r| r.outcome == "paid") {
            self.show_notification(r, v3)?;
        }
        for r in &receipts {
            let detail = r
                .detail
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default();
            self.line(format!(
                "receipt #{}: verified={} outcome={}{detail}",
                r.id, r.verified, r.outcome
            ))?;
        }
        let deciding = receipts
            .iter()
            .filter(|r| r.verified && r.outcome == "paid")
            .count();
        self.expect(
            receipts.len() >= 2 && receipts.iter().all(|r| r.verified),
            format!("{} receipts, expected two verified ones", receipts.len()),
        )?;
        self.expect(
            deciding == 1,
            format!("{deciding} deciding receipts, expected 1"),
        )?;
        let events = self.events(&order_no).await;
        self.expect(
            events == ["order.paid"],
            format!("events {events:?}, expected one order.paid"),
        )?;
        let (_, coupons) = self
            .call("GET", &format!("/v1/coupons?user_id={USER}"), None)
            .await?;
        let used = coupons["coupons"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["code"] == coupon_code && c["state"] == "USED");
        self.expect(used, "the coupon was not consumed")?;
        self.ok(format!(
            "verified, committed, then answered: order PAID (via {}), coupon USED, one order.paid event",
            s(&order, "paid_out_trade_no")
        ))?;
        self.ok(
            "the duplicate was verified and acknowledged, and changed nothing: one transition",
        )?;

        self.begin("The app's hint after paying")?;
        let h = self.expect_call("POST", &hint_path, None, 200).await?;
        self.expect(h["state"] == "PAID", format!("state {}", h["state"]))?;
        self.ok("the order is PAID")?;

        if v3 {
            self.begin("A partial refund (API key)")?;
            let r = self
                .expect_call(
                    "POST",
                    &format!("/v1/orders/{order_no}/refunds"),
                    Some(json!({"amount_fen": 300, "reason": "少送了一杯", "out_refund_no": "RF-DEMO-1"})),
                    201,
                )
                .await?;
            self.ok(format!(
                "WeChat accepted refund RF-DEMO-1 ({}); its REFUND.SUCCESS notification follows",
                s(&r, "state")
            ))?;
            self.wait_both_copies(&out_trade_no, Some("RF-DEMO-1"))
                .await?;
            self.wait_order(&order_no, "PARTIALLY_REFUNDED").await?;
            self.show_deliveries(&out_trade_no, Some("RF-DEMO-1"))?;
            let (_, rs) = self
                .call("GET", &format!("/v1/orders/{order_no}/refunds"), None)
                .await?;
            let ok = rs["refunds"]
                .as_array()
                .is_some_and(|a| a.len() == 1 && a[0]["state"] == "SUCCESS");
            self.expect(ok, "the refund is not SUCCESS")?;
            let o = self
                .expect_call("GET", &format!("/v1/orders/{order_no}"), None, 200)
                .await?;
            self.expect(
                o["refunded_fen"].as_i64() == Some(300),
                "refunded_fen is not 300",
            )?;
            let events = self.events(&order_no).await;
            self.expect(
                events == ["order.paid", "refund.succeeded"],
                format!("events {events:?}"),
            )?;
            self.ok("refund SUCCESS, order PARTIALLY_REFUNDED with 300 of 1000 fen refunded; one refund.succeeded event")?;
        }
        Ok(order_no)
    }
}

fn temp_dir() -> PathBuf {
    std::env::temp_dir().join(format!(
        "wxpay-demo-{}",
        wxpay_store::new_id("").to_lowercase()
    ))
}

/// Runs the demo, writing the story to `out`.
pub async fn run(opts: DemoOptions, out: &mut (dyn Write + Send)) -> Result<DemoReport, DemoError> {
    let start = |e: &dyn std::fmt::Display| DemoError::Start(e.to_string());
    let sandbox = Sandbox::new(
        SandboxConfig::demo(),
        SandboxOptions {
            time_scale: opts.time_scale,
            seed: 2014,
            ..SandboxOptions::default()
        },
    )
    .map_err(|e| start(&e))?
    .spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
    .await
    .map_err(|e| start(&e))?;
    // Every notification attempt is sent twice, one copy after the other.
    sandbox.set_faults(Faults::global(FaultSet {
        duplicate_notification: 1.0,
        ..FaultSet::default()
    }));
    sandbox.set_refund_rule(
        None,
        RefundRule {
            outcome: "SUCCESS".into(),
            delay_secs: 1.0,
        },
    );

    let dir = temp_dir();
    std::fs::create_dir_all(&dir).map_err(|e| start(&e))?;
    let result = run_with(&opts, out, &sandbox, &dir).await;
    sandbox.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_with(
    opts: &DemoOptions,
    out: &mut (dyn Write + Send),
    sandbox: &wxpay_sandbox::SandboxHandle,
    dir: &std::path::Path,
) -> Result<DemoReport, DemoError> {
    let start = |e: &dyn std::fmt::Display| DemoError::Start(e.to_string());
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(|e| start(&e))?;
    let addr = listener.local_addr().map_err(|e| start(&e))?;
    let api_key = wxpay_store::new_id("sk_demo_");
    let db_path = dir.join("wxpay.db");
    let settings = Settings {
        listen: addr.to_string(),
        public_url: Some(format!("http://{addr}")),
        database_url: format!("sqlite://{}", db_path.display()),
        cache_url: "memory".into(),
        auth: AuthSettings {
            api_keys: vec![SecretString::from(api_key.clone())],
            jwt_secret: None,
            admin_key: Some(SecretString::from(wxpay_store::new_id("adm_demo_"))),
        },
        merchants: startup::sandbox_merchants(sandbox),
        // The walk-through shows each step itself; the workers start for --keep-running.
        workers: false,
        ..Settings::defaults()
    };
    let Application { state, router } = startup::build(settings, BuildOptions::default())
        .await
        .map_err(|e| start(&e))?;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(startup::serve(
        Application {
            state: state.clone(),
            router,
        },
        listener,
        async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        },
    ));
    let base = format!("http://{addr}");
    writeln!(
        out,
        "wxpay demo — the 2014 blog's APP payment, end to end, on this machine"
    )?;
    writeln!(
        out,
        "  WeChat Pay sandbox  {}  (in-process; no real money moves)",
        sandbox.base_url
    )?;
    writeln!(
        out,
        "  wxpay server        {base}  (temporary SQLite database {})",
        db_path.display()
    )?;
    writeln!(
        out,
        "  The sandbox sends every notification twice, so each payment shows a duplicate."
    )?;

    let mut demo = Demo {
        out,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new()),
        base: base.clone(),
        api_key: api_key.clone(),
        app: state.clone(),
        sandbox,
        step: 0,
        current: String::new(),
    };
    let mut report = DemoReport {
        server_url: base.clone(),
        sandbox_url: sandbox.base_url.clone(),
        ..DemoReport::default()
    };
    let walked = async {
        demo.heading(
            "legacy-demo: the 2014 open-platform APP payment (MD5 package, SHA1 signatures)",
        )?;
        let legacy = demo.walk("legacy-demo", false).await?;
        report
            .orders
            .push(("legacy-demo".into(), legacy, "PAID".into()));
        demo.heading("v3-demo: APIv3 (RSA signatures, AES-GCM notifications)")?;
        let v3 = demo.walk("v3-demo", true).await?;
        report
            .orders
            .push(("v3-demo".into(), v3, "PARTIALLY_REFUNDED".into()));
        Ok::<_, DemoError>(())
    }
    .await;
    report.steps = demo.step;
    let out = demo.out;
    match &walked {
        Ok(()) => {
            writeln!(out)?;
            writeln!(
                out,
                "All {} steps held: two merchants paid exactly once each, duplicates ignored, a partial refund applied.",
                report.steps
            )?;
        }
        Err(e) => {
            writeln!(out)?;
            writeln!(out, "FAILED: {e}")?;
        }
    }
    if walked.is_ok() && opts.keep_running {
        let workers = crate::workers::Workers::spawn(state.clone());
        writeln!(out)?;
        writeln!(out, "Still running (ctrl-c to stop):")?;
        writeln!(
            out,
            "  server          {base}   docs {base}/docs   metrics {base}/metrics"
        )?;
        writeln!(out, "  API key         {api_key}")?;
        writeln!(
            out,
            "  sandbox         {}/   (recent orders)",
            sandbox.base_url
        )?;
        writeln!(
            out,
            "  sandbox cashier {}/sandbox/cashier/<prepayid>",
            sandbox.base_url
        )?;
        writeln!(out, "  try:")?;
        writeln!(
            out,
            "    curl -s -XPOST {base}/v1/orders -H 'Authorization: Bearer {api_key}' -d '{{\"user_id\":\"u1\",\"subject\":\"tea\",\"amount_fen\":1}}'"
        )?;
        writeln!(
            out,
            "    curl -s -XPOST {base}/v1/orders/<order_no>/pay -H 'Authorization: Bearer {api_key}' -d '{{\"merchant\":\"v3-demo\",\"client_ip\":\"1.2.3.4\"}}'"
        )?;
        out.flush()?;
        let _ = tokio::signal::ctrl_c().await;
        workers.shutdown().await;
    }
    out.flush()?;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    state.store.close().await;
    walked.map(|()| report)
}
