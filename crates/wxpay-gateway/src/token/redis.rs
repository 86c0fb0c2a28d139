//! The access token shared through Redis by any number of server processes.
//!
//! Keys (`{prefix}` is the configured key prefix, `{day}` the Beijing day `YYYYMMDD`):
//!
//! | key | value | expiry |
//! |---|---|---|
//! | `{prefix}token:{appid}` | the token | `SET … EX` lifetime (`expires_in` − [`EXPIRY_MARGIN_SECS`]) |
//! | `{prefix}token-lock:{appid}` | random owner id of the one refresher | `SET … NX PX 30000` |
//! | `{prefix}token-quota:{appid}:{day}` | fetches counted that day | `INCR` + `EXPIRE` 2 days |
//!
//! A caller that finds no token takes the lock, looks for the token again (a previous holder may
//! just have stored one), counts the fetch (`INCR`; over the quota it `DECR`s back and refuses),
//! fetches, stores, and releases the lock with a compare-and-delete script. Callers that find the
//! lock taken poll the token key until it appears, or take the lock themselves once it is free
//! (released without a token, or expired), for at most [`MAX_WAIT`]. Within one process, callers
//! of the same appid queue behind one in-process refresher and share its result, so only one
//! connection polls Redis.
//!
//! [`EXPIRY_MARGIN_SECS`]: super::EXPIRY_MARGIN_SECS

use super::{TokenCache, TokenFetcher, beijing_day, checked, note_fetch_count, quota_refused};
use crate::{Clock, GatewayError};
use async_trait::async_trait;
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How long the refresher's lock lives if it is never released (a crashed process).
pub const LOCK_TTL_MS: u64 = 30_000;
/// A fetch that takes longer is abandoned, so that it never outlives the lock.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(25);
/// How often a waiter looks for the token another process is fetching.
pub const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// How long a caller waits for another process's refresh before giving up.
pub const MAX_WAIT: Duration = Duration::from_secs(10);
/// Lifetime of a day's quota counter.
const QUOTA_KEY_TTL_SECS: i64 = 2 * 86_400;

/// Deletes `KEYS[1]` only if it still holds `ARGV[1]`.
static COMPARE_AND_DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then
              return redis.call('DEL', KEYS[1])
          else
              return 0
          end",
    )
});

/// A [`TokenCache`] in Redis, shared by every process using the same Redis and key prefix.
pub struct RedisTokenCache {
    conn: ConnectionManager,
    prefix: String,
    clock: Arc<dyn Clock>,
    local: Mutex<HashMap<String, Arc<LocalSlot>>>,
}

impl std::fmt::Debug for RedisTokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTokenCache")
            .field("key_prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// In-process single flight for one appid.
#[derive(Debug, Default)]
struct LocalSlot {
    refresh: tokio::sync::Mutex<()>,
    state: Mutex<LocalState>,
}

#[derive(Debug, Default)]
struct LocalState {
    /// Finished refresh attempts of this process.
    attempts: u64,
    last_error: Option<GatewayError>,
}

impl LocalSlot {
    fn state(&self) -> MutexGuard<'_, LocalState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn cache_err(e: redis::RedisError) -> GatewayError {
    GatewayError::Transport(format!("cache: {e}"))
}

/// The refresher's lock; released when dropped (also when the `get` future is cancelled).
struct HeldLock {
    conn: ConnectionManager,
    key: String,
    owner: String,
    armed: bool,
}

impl HeldLock {
    async fn release(mut self) -> Result<(), GatewayError> {
        let mut conn = self.conn.clone();
        let released = COMPARE_AND_DELETE
            .key(&self.key)
            .arg(&self.owner)
            .invoke_async::<i64>(&mut conn)
            .await;
        // Only now: if this future is dropped while waiting, `Drop` still releases.
        self.armed = false;
        released.map(drop).map_err(cache_err)
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let mut conn = self.conn.clone();
            let key = std::mem::take(&mut self.key);
            let owner = std::mem::take(&mut self.owner);
            rt.spawn(async move {
                let _ = COMPARE_AND_DELETE
                    .key(&key)
                    .arg(&owner)
                    .invoke_async::<i64>(&mut conn)
                    .await;
            });
        }
    }
}

impl RedisTokenCache {
    /// Connects to Redis (`redis://…`, `rediss://…`). Every key starts with `key_prefix`.
    pub async fn connect(
        url: &str,
        key_prefix: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, GatewayError> {
        let client = redis::Client::open(url)
            .map_err(|e| GatewayError::Transport(format!("cache: invalid Redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(3)))
            .set_response_timeout(Some(Duration::from_secs(3)))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| GatewayError::Transport(format!("cache: cannot connect to Redis: {e}")))?;
        Ok(RedisTokenCache {
            conn,
            prefix: key_prefix.to_owned(),
            clock,
            local: Mutex::new(HashMap::new()),
        })
    }

    /// True when Redis answers `PING`.
    pub async fn ping(&self) -> bool {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .is_ok_and(|s| s == "PONG")
    }

    /// `{prefix}token:{appid}`
    pub fn token_key(&self, appid: &str) -> String {
        format!("{}token:{appid}", self.prefix)
    }

    /// `{prefix}token-lock:{appid}`
    pub fn lock_key(&self, appid: &str) -> String {
        format!("{}token-lock:{appid}", self.prefix)
    }

    /// `{prefix}token-quota:{appid}:{beijing_day}`
    pub fn quota_key(&self, appid: &str, beijing_day: &str) -> String {
        format!("{}token-quota:{appid}:{beijing_day}", self.prefix)
    }

    fn slot(&self, appid: &str) -> Arc<LocalSlot> {
        let mut local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(local.entry(appid.to_owned()).or_default())
    }

    async fn read_token(&self, appid: &str) -> Result<Option<SecretString>, GatewayError> {
        let mut conn = self.conn.clone();
        let token: Option<String> = redis::cmd("GET")
            .arg(self.token_key(appid))
            .query_async(&mut conn)
            .await
            .map_err(cache_err)?;
        Ok(token.filter(|t| !t.is_empty()).map(SecretString::from))
    }

    async fn try_lock(&self, appid: &str) -> Result<Option<HeldLock>, GatewayError> {
        let mut conn = self.conn.clone();
        let key = self.lock_key(appid);
        let owner = crate::nonce(32);
        let set: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(&owner)
            .arg("NX")
            .arg("PX")
            .arg(LOCK_TTL_MS)
            .query_async(&mut conn)
            .await
            .map_err(cache_err)?;
        Ok(set.map(|_| HeldLock {
            conn,
            key,
            owner,
            armed: true,
        }))
    }

    /// One refresher across all processes: take the lock and refresh, or wait for the token
    /// another process is fetching.
    async fn refresh_shared(
        &self,
        appid: &str,
        daily_quota: u32,
        fetcher: &dyn TokenFetcher,
    ) -> Result<SecretString, GatewayError> {
        let deadline = tokio::time::Instant::now() + MAX_WAIT;
        loop {
            if let Some(lock) = self.try_lock(appid).await? {
                let result = self.refresh_locked(appid, daily_quota, fetcher).await;
                if let Err(e) = lock.release().await {
                    // It expires by itself within LOCK_TTL_MS.
                    tracing::warn!(appid, error = %e, "could not release the access token lock");
                }
                return result;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(GatewayError::Transport(format!(
                    "cache: waited {} s for another process to refresh the access token of \
                     appid {appid}",
                    MAX_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
            if let Some(token) = self.read_token(appid).await? {
                return Ok(token);
            }
        }
    }

    /// Called with the Redis lock held.
    async fn refresh_locked(
        &self,
        appid: &str,
        daily_quota: u32,
        fetcher: &dyn TokenFetcher,
    ) -> Result<SecretString, GatewayError> {
        // The previous holder may have stored a token between our last look and our lock.
        if let Some(token) = self.read_token(appid).await? {
            return Ok(token);
        }

        let quota_key = self.quota_key(appid, &beijing_day(self.clock.now_secs()));
        let mut conn = self.conn.clone();
        let (count,): (i64,) = redis::pipe()
            .atomic()
            .cmd("INCR")
            .arg(&quota_key)
            .cmd("EXPIRE")
            .arg(&quota_key)
            .arg(QUOTA_KEY_TTL_SECS)
            .ignore()
            .query_async(&mut conn)
            .await
            .map_err(cache_err)?;
        if count > i64::from(daily_quota) {
            let undone: Result<i64, _> = redis::cmd("DECR")
                .arg(&quota_key)
                .query_async(&mut conn)
                .await;
            if let Err(e) = undone {
                tracing::warn!(appid, error = %cache_err(e), "could not undo a refused quota count");
            }
            let before = u32::try_from(count - 1).unwrap_or(u32::MAX);
            return Err(quota_refused(appid, before, daily_quota));
        }
        // Counted before the call: a call that fails may still have used WeChat's quota.
        note_fetch_count(appid, u32::try_from(count).unwrap_or(u32::MAX), daily_quota);

        let fetched = tokio::time::timeout(FETCH_TIMEOUT, fetcher.fetch())
            .await
            .map_err(|_| {
                GatewayError::Transport(format!(
                    "access token fetch took longer than {} s",
                    FETCH_TIMEOUT.as_secs()
                ))
            })??;
        let (token, lifetime) = checked(fetched)?;
        let stored: Result<(), _> = redis::cmd("SET")
            .arg(self.token_key(appid))
            .arg(token.expose_secret())
            .arg("EX")
            .arg(lifetime)
            .query_async(&mut conn)
            .await;
        if let Err(e) = stored {
            // The token is valid (and has replaced the previous one at WeChat): hand it out.
            tracing::warn!(appid, error = %cache_err(e), "could not store the new access token");
        }
        Ok(token)
    }
}

#[async_trait]
impl TokenCache for RedisTokenCache {
    async fn get(
        &self,
        appid: &str,
        daily_quota: u32,
        fetcher: &dyn TokenFetcher,
    ) -> Result<SecretString, GatewayError> {
        if let Some(token) = self.read_token(appid).await? {
            return Ok(token);
        }
        let slot = self.slot(appid);
        let seen_attempts = slot.state().attempts;
        let _flight = slot.refresh.lock().await;
        if let Some(token) = self.read_token(appid).await? {
            return Ok(token);
        }
        {
            let st = slot.state();
            if st.attempts != seen_attempts
                && let Some(e) = &st.last_error
            {
                // This process's attempt we waited for failed: share its answer.
                return Err(e.clone());
            }
        }
        let result = self.refresh_shared(appid, daily_quota, fetcher).await;
        let mut st = slot.state();
        st.attempts += 1;
        st.last_error = result.as_ref().err().cloned();
        result
    }

    async fn invalidate(&self, appid: &str, stale: &SecretString) -> Result<(), GatewayError> {
        let mut conn = self.conn.clone();
        COMPARE_AND_DELETE
            .key(self.token_key(appid))
            .arg(stale.expose_secret())
            .invoke_async::<i64>(&mut conn)
            .await
            .map(drop)
            .map_err(cache_err)
    }

    async fn fetches_today(&self, appid: &str) -> Result<u32, GatewayError> {
        let mut conn = self.conn.clone();
        let n: Option<i64> = redis::cmd("GET")
            .arg(self.quota_key(appid, &beijing_day(self.clock.now_secs())))
            .query_async(&mut conn)
            .await
            .map_err(cache_err)?;
        Ok(n.map_or(0, |n| u32::try_from(n.max(0)).unwrap_or(u32::MAX)))
    }
}
