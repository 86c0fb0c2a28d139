//! Metrics of the calls to WeChat, through the `metrics` facade (a no-op until the server installs
//! a recorder):
//!
//! - `wechat_call_seconds{merchant,endpoint,outcome}` — histogram of each call's duration;
//!   `outcome` is `ok` or the error's code (WeChat's own code for a refusal, else `transport`,
//!   `verification`, `protocol`, `invalid`, `token_quota`, `unsupported`);
//! - `token_fetches_total{appid}` — legacy `cgi-bin/token` calls actually sent.
//!
//! Labels are fixed names, merchant ids and appids: never a secret, a token, an order number or
//! anything else a caller chooses.

use crate::GatewayError;
use std::future::Future;
use std::time::Instant;

/// The `outcome` label of a result.
pub fn outcome<T>(r: &Result<T, GatewayError>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => error_code(e),
    }
}

/// A bounded label for an error: WeChat's code for a refusal (when it looks like one), else the
/// kind of failure.
pub fn error_code(e: &GatewayError) -> String {
    match e {
        GatewayError::Rejected { code, .. } => {
            let plausible = !code.is_empty()
                && code.len() <= 40
                && code
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if plausible {
                code.clone()
            } else {
                "rejected".into()
            }
        }
        GatewayError::Transport(_) => "transport".into(),
        GatewayError::TokenQuota(_) => "token_quota".into(),
        GatewayError::Verification(_) => "verification".into(),
        GatewayError::Protocol(_) => "protocol".into(),
        GatewayError::Invalid(_) => "invalid".into(),
        GatewayError::Unsupported(_) => "unsupported".into(),
    }
}

/// Records one call's duration and outcome.
pub fn observe<T>(
    merchant: &str,
    endpoint: &'static str,
    started: Instant,
    r: &Result<T, GatewayError>,
) {
    metrics::histogram!(
        "wechat_call_seconds",
        "merchant" => merchant.to_string(),
        "endpoint" => endpoint,
        "outcome" => outcome(r),
    )
    .record(started.elapsed().as_secs_f64());
}

/// Runs `call` and records it as one call of `endpoint`.
pub async fn timed<T, F>(merchant: &str, endpoint: &'static str, call: F) -> Result<T, GatewayError>
where
    F: Future<Output = Result<T, GatewayError>>,
{
    let started = Instant::now();
    let r = call.await;
    observe(merchant, endpoint, started, &r);
    r
}

/// Counts one `cgi-bin/token` call for `appid`.
pub fn token_fetched(appid: &str) {
    metrics::counter!("token_fetches_total", "appid" => appid.to_string()).increment(1);
}

/// The endpoint label of an APIv3 path (query and identifiers dropped).
pub fn v3_endpoint(path: &str) -> &'static str {
    let p = path.split('?').next().unwrap_or(path);
    const TRADE: &str = "/v3/pay/transactions/out-trade-no/";
    const REFUNDS: &str = "/v3/refund/domestic/refunds";
    if p.starts_with("/v3/pay/transactions/app")
        || p.starts_with("/v3/pay/transactions/jsapi")
        || p.starts_with("/v3/pay/transactions/native")
    {
        "prepay"
    } else if p.starts_with(TRADE) && p.ends_with("/close") {
        "close"
    } else if p.starts_with(TRADE) || p.starts_with("/v3/pay/transactions/id/") {
        "query"
    } else if p == REFUNDS {
        "refund"
    } else if p.starts_with(REFUNDS) {
        "query_refund"
    } else if p.starts_with("/v3/certificates") {
        "certificates"
    } else if p.starts_with("/v3/bill/tradebill") {
        "tradebill"
    } else if p.starts_with("/v3/bill/fundflowbill") {
        "fundflowbill"
    } else if p.starts_with("/v3/billdownload") {
        "billdownload"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_carry_no_identifiers() {
        assert_eq!(v3_endpoint("/v3/pay/transactions/app"), "prepay");
        assert_eq!(
            v3_endpoint("/v3/pay/transactions/out-trade-no/pay_1?mchid=1900007291"),
            "query"
        );
        assert_eq!(
            v3_endpoint("/v3/pay/transactions/out-trade-no/pay_1/close"),
            "close"
        );
        assert_eq!(v3_endpoint("/v3/refund/domestic/refunds"), "refund");
        assert_eq!(
            v3_endpoint("/v3/refund/domestic/refunds/RF-1"),
            "query_refund"
        );
        assert_eq!(v3_endpoint("/v3/certificates"), "certificates");
        assert_eq!(
            v3_endpoint("/v3/bill/tradebill?bill_date=2026-01-01"),
            "tradebill"
        );
        assert_eq!(v3_endpoint("/v3/something/else"), "other");
    }

    #[test]
    fn error_codes_are_bounded() {
        let r: Result<(), _> = Err(GatewayError::Rejected {
            code: "ORDER_CLOSED".into(),
            message: "x".into(),
        });
        assert_eq!(outcome(&r), "ORDER_CLOSED");
        let r: Result<(), _> = Err(GatewayError::Rejected {
            code: "weird code with spaces".into(),
            message: "x".into(),
        });
        assert_eq!(outcome(&r), "rejected");
        let r: Result<(), _> = Err(GatewayError::Transport("timeout".into()));
        assert_eq!(outcome(&r), "transport");
        assert_eq!(outcome(&Ok::<(), GatewayError>(())), "ok");
    }
}
