//! The one HTTP client every gateway uses: connect and total timeouts, rustls, a User-Agent.

use crate::GatewayError;
pub use reqwest::Client;
use std::time::Duration;

/// Timeouts for calls to WeChat.
#[derive(Debug, Clone, Copy)]
pub struct HttpOptions {
    pub connect_timeout: Duration,
    pub timeout: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
        }
    }
}

pub const USER_AGENT: &str = concat!("wxpay/", env!("CARGO_PKG_VERSION"), " (+self-hosted)");

pub fn client(opts: HttpOptions) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(opts.connect_timeout)
        .timeout(opts.timeout)
        .user_agent(USER_AGENT)
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// A transport failure, worded without the URL's query (it may hold an access token).
pub fn transport(e: reqwest::Error) -> GatewayError {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "broken response body"
    } else {
        "request failed"
    };
    GatewayError::Transport(kind.to_string())
}
