//! The 2014 open-platform APP payment (PROTOCOL.md A): `access_token` through the `TokenCache`,
//! the MD5-signed package, the SHA1-signed `genprepay`, the app's `PayReq`, `orderquery`, and the
//! Tenpay-style notification (MD5 query string + SHA1 `AppSignature` XML body).

use crate::http::{HttpOptions, client, transport};
use crate::token::{FetchedToken, TokenCache, TokenFetcher};
use crate::{
    AppParams, Clock, Gateway, GatewayError, InboundNotify, Notification, NotifyReply,
    PaymentNotification, Prepay, PrepayRequest, Protocol, TradeStatus,
};
use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use wxpay_proto::Charset;
use wxpay_proto::legacy::{
    self, AccessTokenResponse, GenPrepayRequest, GenPrepayResponse, OrderQueryRequest,
    OrderQueryResponse, Package, PayReq,
};

/// How long WeChat keeps a legacy prepay id usable (not documented for 2014; APIv2/v3 say 2 h).
pub const PREPAY_TTL_SECS: i64 = 7200;

/// A legacy merchant's credentials and where its WeChat lives.
#[derive(Clone)]
pub struct LegacyConfig {
    pub merchant_id: String,
    /// `https://api.weixin.qq.com` in production; the sandbox's URL otherwise.
    pub base_url: String,
    pub appid: String,
    pub app_secret: SecretString,
    /// The 128-character paySignKey.
    pub app_key: SecretString,
    pub partner: String,
    pub partner_key: SecretString,
    /// `cgi-bin/token` calls allowed per Beijing day.
    pub token_daily_quota: u32,
    pub input_charset: Charset,
}

impl std::fmt::Debug for LegacyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacyConfig")
            .field("merchant_id", &self.merchant_id)
            .field("base_url", &self.base_url)
            .field("appid", &self.appid)
            .field("partner", &self.partner)
            .field("secrets", &"[REDACTED]")
            .finish()
    }
}

/// A legacy merchant at WeChat.
pub struct LegacyGateway {
    cfg: LegacyConfig,
    http: reqwest::Client,
    tokens: Arc<dyn TokenCache>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for LegacyGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacyGateway")
            .field("cfg", &self.cfg)
            .finish()
    }
}

struct Fetcher<'a> {
    gw: &'a LegacyGateway,
}

#[async_trait]
impl TokenFetcher for Fetcher<'_> {
    async fn fetch(&self) -> Result<FetchedToken, GatewayError> {
        let cfg = &self.gw.cfg;
        crate::telemetry::token_fetched(&cfg.appid);
        crate::telemetry::timed(&cfg.merchant_id, "token", self.fetch_unobserved()).await
    }
}

impl Fetcher<'_> {
    async fn fetch_unobserved(&self) -> Result<FetchedToken, GatewayError> {
        let cfg = &self.gw.cfg;
        let url = format!("{}/cgi-bin/token", cfg.base_url.trim_end_matches('/'));
        let resp = self
            .gw
            .http
            .get(url)
            .query(&[
                ("grant_type", "client_credential"),
                ("appid", cfg.appid.as_str()),
                ("secret", cfg.app_secret.expose_secret()),
            ])
            .send()
            .await
            .map_err(transport)?;
        let t: AccessTokenResponse = read_json(resp).await?;
        match (t.access_token, t.errcode) {
            (Some(token), None | Some(0)) if !token.is_empty() => Ok(FetchedToken {
                token: SecretString::from(token),
                expires_in: t.expires_in.unwrap_or(7200),
            }),
            (_, code) => Err(GatewayError::Rejected {
                code: code.unwrap_or(-1).to_string(),
                message: t
                    .errmsg
                    .unwrap_or_else(|| "no access_token in the answer".into()),
            }),
        }
    }
}

async fn read_json<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, GatewayError> {
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(transport)?;
    if status.is_server_error() || status.as_u16() == 429 {
        return Err(GatewayError::Transport(format!("HTTP {status}")));
    }
    if !status.is_success() {
        return Err(GatewayError::Protocol(format!("HTTP {status}")));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| GatewayError::Protocol(format!("undecodable answer: {e}")))
}

/// 40001 (invalid credential) and 42001 (expired): the token must be replaced.
fn is_token_error(code: i64) -> bool {
    code == 40001 || code == 42001
}

impl LegacyGateway {
    pub fn new(
        cfg: LegacyConfig,
        http: reqwest::Client,
        tokens: Arc<dyn TokenCache>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        LegacyGateway {
            cfg,
            http,
            tokens,
            clock,
        }
    }

    /// A gateway with its own HTTP client (default timeouts).
    pub fn with_defaults(
        cfg: LegacyConfig,
        tokens: Arc<dyn TokenCache>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self::new(cfg, client(HttpOptions::default()), tokens, clock)
    }

    pub fn config(&self) -> &LegacyConfig {
        &self.cfg
    }

    async fn token(&self) -> Result<SecretString, GatewayError> {
        self.tokens
            .get(
                &self.cfg.appid,
                self.cfg.token_daily_quota,
                &Fetcher { gw: self },
            )
            .await
    }

    /// POSTs `body` to `path?access_token=…`; on 40001/42001 the token is replaced once and the
    /// very same body is sent again.
    async fn call<T, F>(&self, path: &str, body: &str, errcode: F) -> Result<T, GatewayError>
    where
        T: DeserializeOwned,
        F: Fn(&T) -> i64,
    {
        let url = format!("{}{}", self.cfg.base_url.trim_end_matches('/'), path);
        for round in 0..2 {
            let token = self.token().await?;
            let resp = self
                .http
                .post(&url)
                .query(&[("access_token", token.expose_secret())])
                .header("Content-Type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .map_err(transport)?;
            let answer: T = read_json(resp).await?;
            let code = errcode(&answer);
            if is_token_error(code) && round == 0 {
                tracing::info!(appid = %self.cfg.appid, code, "access token refused; refreshing once");
                self.tokens.invalidate(&self.cfg.appid, &token).await?;
                continue;
            }
            return Ok(answer);
        }
        Err(GatewayError::Rejected {
            code: "42001".into(),
            message: "access token refused twice".into(),
        })
    }

    fn package(&self, req: &PrepayRequest) -> Package {
        Package {
            bank_type: "WX".into(),
            body: req.description.clone(),
            attach: req.attach.clone(),
            partner: self.cfg.partner.clone(),
            out_trade_no: req.out_trade_no.clone(),
            total_fee: req.amount,
            fee_type: "1".into(),
            notify_url: req.notify_url.clone(),
            spbill_create_ip: req.client_ip.clone(),
            time_start: Some(legacy::format_time(req.time_start)),
            time_expire: req.time_expire.map(legacy::format_time),
            transport_fee: None,
            product_fee: None,
            goods_tag: None,
            input_charset: self.cfg.input_charset,
        }
    }

    /// The genprepay body for a request. Deterministic for a given request: the nonce and
    /// timestamp derive from the stored request, so a retry sends the same bytes.
    pub fn genprepay_body(&self, req: &PrepayRequest) -> Result<String, GatewayError> {
        let signed = self
            .package(req)
            .sign(&self.cfg.partner_key)
            .map_err(|e| GatewayError::Invalid(e.to_string()))?;
        let noncestr = deterministic_nonce(&req.out_trade_no, req.time_start);
        let body = GenPrepayRequest::new(
            &self.cfg.appid,
            &req.trace_id,
            &noncestr,
            &signed.package,
            req.time_start,
            &self.cfg.app_key,
        );
        serde_json::to_string(&body).map_err(|e| GatewayError::Invalid(e.to_string()))
    }
}

/// 32 hex characters derived from the attempt, so a repeated genprepay is byte-identical.
fn deterministic_nonce(out_trade_no: &str, time_start: i64) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{out_trade_no}:{time_start}").as_bytes());
    hex::encode(&digest[..16])
}

#[async_trait]
impl Gateway for LegacyGateway {
    fn merchant_id(&self) -> &str {
        &self.cfg.merchant_id
    }

    fn protocol(&self) -> Protocol {
        Protocol::Legacy
    }

    async fn prepay(&self, req: &PrepayRequest) -> Result<Prepay, GatewayError> {
        crate::telemetry::timed(&self.cfg.merchant_id, "prepay", async {
            let body = self.genprepay_body(req)?;
            let answer: GenPrepayResponse = self
                .call("/pay/genprepay", &body, |r: &GenPrepayResponse| r.errcode)
                .await?;
            match answer.prepayid {
                Some(id) if answer.errcode == 0 && !id.is_empty() => Ok(Prepay {
                    prepay_id: id,
                    expires_at: self.clock.now_secs() + PREPAY_TTL_SECS,
                }),
                _ => Err(GatewayError::Rejected {
                    code: answer.errcode.to_string(),
                    message: answer.errmsg,
                }),
            }
        })
        .await
    }

    fn app_params(&self, prepay_id: &str) -> AppParams {
        let r = PayReq::new(
            &self.cfg.appid,
            &self.cfg.partner,
            prepay_id,
            &crate::nonce(32),
            self.clock.now_secs(),
            &self.cfg.app_key,
        );
        AppParams {
            appid: r.appid,
            partnerid: r.partnerid,
            prepayid: r.prepayid,
            package: r.package,
            noncestr: r.noncestr,
            timestamp: r.timestamp,
            sign: r.sign,
        }
    }

    async fn query(&self, out_trade_no: &str) -> Result<TradeStatus, GatewayError> {
        crate::telemetry::timed(&self.cfg.merchant_id, "query", async {
            let req = OrderQueryRequest::new(
                &self.cfg.appid,
                &self.cfg.partner,
                out_trade_no,
                self.clock.now_secs(),
                &self.cfg.partner_key,
                &self.cfg.app_key,
            );
            let body =
                serde_json::to_string(&req).map_err(|e| GatewayError::Invalid(e.to_string()))?;
            let answer: OrderQueryResponse = self
                .call("/pay/orderquery", &body, |r: &OrderQueryResponse| r.errcode)
                .await?;
            if answer.errcode == 49011 {
                return Ok(TradeStatus::NotFound);
            }
            if answer.errcode != 0 {
                return Err(GatewayError::Rejected {
                    code: answer.errcode.to_string(),
                    message: answer.errmsg,
                });
            }
            let info = answer.order_info.ok_or_else(|| {
                GatewayError::Protocol("orderquery answered without order_info".into())
            })?;
            if info.partner != self.cfg.partner || info.out_trade_no != out_trade_no {
                return Err(GatewayError::Verification(
                    "orderquery answered for another partner or out_trade_no".into(),
                ));
            }
            if info.ret_code != "0" {
                return Err(GatewayError::Rejected {
                    code: info.ret_code.clone(),
                    message: info.ret_msg.clone(),
                });
            }
            if info.is_paid() {
                let total = info
                    .total_fee_fen()
                    .map_err(|e| GatewayError::Protocol(e.to_string()))?;
                let discount = info
                    .discount_fen()
                    .map_err(|e| GatewayError::Protocol(e.to_string()))?
                    .unwrap_or(wxpay_proto::Fen::ZERO);
                let amount = total
                    .checked_add(discount)
                    .ok_or_else(|| GatewayError::Protocol("amount overflow".into()))?;
                Ok(TradeStatus::Paid {
                    transaction_id: info.transaction_id.clone(),
                    amount,
                })
            } else {
                Ok(TradeStatus::NotPaid)
            }
        })
        .await
    }

    async fn close(&self, _out_trade_no: &str) -> Result<(), GatewayError> {
        // The 2014 protocol has no close: an order stops being payable at `time_expire`
        // (sent in the package); after it, a final query decides.
        Err(GatewayError::Unsupported(
            "close (legacy orders expire through time_expire)",
        ))
    }

    fn verify_notify(&self, n: &InboundNotify<'_>) -> Result<Notification, GatewayError> {
        let query = n.query.unwrap_or("");
        let v = legacy::verify_notify(query, n.body, &self.cfg.partner_key, &self.cfg.app_key)
            .map_err(|e| GatewayError::Verification(e.to_string()))?;
        if v.partner != self.cfg.partner {
            return Err(GatewayError::Verification(
                "the notification is for another partner".into(),
            ));
        }
        if let Some(user) = &v.user
            && user.app_id != self.cfg.appid
        {
            return Err(GatewayError::Verification(
                "the notification is for another appid".into(),
            ));
        }
        let amount = v
            .requested_total()
            .ok_or_else(|| GatewayError::Protocol("total_fee + discount overflows".into()))?;
        Ok(Notification::Payment(PaymentNotification {
            out_trade_no: v.out_trade_no.clone(),
            transaction_id: v.transaction_id.clone(),
            amount,
            success: v.is_success(),
        }))
    }

    fn notify_reply(&self, accepted: bool) -> NotifyReply {
        NotifyReply {
            status: 200,
            content_type: "text/plain",
            body: if accepted {
                legacy::REPLY_SUCCESS
            } else {
                legacy::REPLY_FAIL
            }
            .to_string(),
        }
    }
}
