//! The legacy `access_token`: fetched by one holder at a time, cached until shortly before it
//! expires, shared by every process (Redis) or kept in memory (one process).
//!
//! WeChat invalidates the previous token when a new one is fetched and allows a small number of
//! fetches per day, so the token must never be fetched per call.

pub mod memory;
pub mod redis;

pub use memory::MemoryTokenCache;
pub use redis::RedisTokenCache;

use crate::GatewayError;
use async_trait::async_trait;
use secrecy::SecretString;

/// A token as `cgi-bin/token` returned it.
#[derive(Debug, Clone)]
pub struct FetchedToken {
    pub token: SecretString,
    /// Seconds, as WeChat said (`expires_in`, normally 7200).
    pub expires_in: i64,
}

/// Fetches a fresh token from WeChat (one HTTP call).
#[async_trait]
pub trait TokenFetcher: Send + Sync {
    async fn fetch(&self) -> Result<FetchedToken, GatewayError>;
}

/// A cache in front of `cgi-bin/token`.
#[async_trait]
pub trait TokenCache: Send + Sync + std::fmt::Debug {
    /// A valid token for `appid`. When none is cached, exactly one caller (across every process
    /// sharing the cache) runs `fetcher`; the others wait for its result. Before fetching, the
    /// daily counter is checked: a fetch that would exceed `daily_quota` is refused with
    /// `GatewayError::TokenQuota` (and logged) instead of being sent.
    async fn get(
        &self,
        appid: &str,
        daily_quota: u32,
        fetcher: &dyn TokenFetcher,
    ) -> Result<SecretString, GatewayError>;

    /// Forgets the cached token of `appid` if it is still `stale` (WeChat said 40001/42001 for
    /// it). A token another caller has already replaced is kept.
    async fn invalidate(&self, appid: &str, stale: &SecretString) -> Result<(), GatewayError>;

    /// How many tokens were fetched today (Beijing date) for `appid`.
    async fn fetches_today(&self, appid: &str) -> Result<u32, GatewayError>;
}

/// Seconds before WeChat's expiry at which a cached token is no longer handed out.
pub const EXPIRY_MARGIN_SECS: i64 = 300;

/// The Beijing calendar day (`YYYYMMDD`) of a unix time: WeChat's quota resets at Beijing midnight.
pub fn beijing_day(unix_secs: i64) -> String {
    let days = (unix_secs + 8 * 3600).div_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}{m:02}{d:02}")
}

// Howard Hinnant's days → civil date.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::beijing_day;

    #[test]
    fn the_quota_day_turns_at_beijing_midnight() {
        // 2024-01-01T15:59:59Z is 23:59:59 in Beijing; one second later it is the 2nd.
        assert_eq!(beijing_day(1_704_124_799), "20240101");
        assert_eq!(beijing_day(1_704_124_800), "20240102");
        assert_eq!(beijing_day(0), "19700101");
    }
}

/// How long (seconds) a freshly fetched token may be handed out: `expires_in` minus
/// [`EXPIRY_MARGIN_SECS`]. A token that lives no longer than twice the margin (never seen from
/// WeChat, but a sandbox may do it) is kept for half its life instead, so that it is usable at all.
pub(crate) fn cache_lifetime_secs(expires_in: i64) -> Result<i64, GatewayError> {
    if expires_in <= 0 {
        return Err(GatewayError::Protocol(format!(
            "access token with a non-positive expires_in ({expires_in})"
        )));
    }
    Ok(if expires_in > 2 * EXPIRY_MARGIN_SECS {
        expires_in - EXPIRY_MARGIN_SECS
    } else {
        (expires_in / 2).max(1)
    })
}

/// Checks a fetched token before it is cached: not empty, a positive `expires_in`. Returns the
/// token and how long (seconds) it may be handed out ([`cache_lifetime_secs`]).
pub(crate) fn checked(fetched: FetchedToken) -> Result<(SecretString, i64), GatewayError> {
    use secrecy::ExposeSecret;
    if fetched.token.expose_secret().is_empty() {
        return Err(GatewayError::Protocol("empty access token".into()));
    }
    let lifetime = cache_lifetime_secs(fetched.expires_in)?;
    Ok((fetched.token, lifetime))
}

/// The refusal of a fetch that would exceed the daily quota (logged). Names the appid, the count
/// and the quota; never a token or a secret.
pub(crate) fn quota_refused(appid: &str, fetched_today: u32, daily_quota: u32) -> GatewayError {
    tracing::warn!(
        appid,
        fetched_today,
        daily_quota,
        "access token fetch refused: the daily quota would be exceeded"
    );
    GatewayError::TokenQuota(format!(
        "{fetched_today} access tokens already fetched today (Beijing time) for appid {appid}; \
         another fetch would exceed the daily quota of {daily_quota}"
    ))
}

/// Called after a fetch has been counted: warns once the count reaches 80 % of the quota.
pub(crate) fn note_fetch_count(appid: &str, fetched_today: u32, daily_quota: u32) {
    if u64::from(fetched_today) * 5 >= u64::from(daily_quota) * 4 {
        tracing::warn!(
            appid,
            fetched_today,
            daily_quota,
            "access token fetches today have reached 80% of the daily quota"
        );
    } else {
        tracing::debug!(
            appid,
            fetched_today,
            daily_quota,
            "fetching a new access token"
        );
    }
}

#[cfg(test)]
mod helper_tests {
    use super::*;

    #[test]
    fn lifetime_is_expires_in_minus_the_margin() {
        assert_eq!(
            cache_lifetime_secs(7200).unwrap(),
            7200 - EXPIRY_MARGIN_SECS
        );
        assert_eq!(
            cache_lifetime_secs(2 * EXPIRY_MARGIN_SECS + 1).unwrap(),
            EXPIRY_MARGIN_SECS + 1
        );
        assert_eq!(cache_lifetime_secs(300).unwrap(), 150);
        assert_eq!(cache_lifetime_secs(1).unwrap(), 1);
        assert!(matches!(
            cache_lifetime_secs(0),
            Err(GatewayError::Protocol(_))
        ));
        assert!(matches!(
            cache_lifetime_secs(-5),
            Err(GatewayError::Protocol(_))
        ));
    }

    #[test]
    fn the_quota_refusal_names_count_and_quota() {
        let e = quota_refused("wx123", 3, 3);
        let GatewayError::TokenQuota(msg) = &e else {
            panic!("{e:?}")
        };
        assert!(
            msg.starts_with("3 access tokens") && msg.contains("wx123"),
            "{msg}"
        );
        assert!(msg.contains("quota of 3"), "{msg}");
    }
}
