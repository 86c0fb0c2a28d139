//! The access token kept in this process's memory: for a single server instance.
//!
//! Per appid: one `tokio::sync::Mutex` so that only one caller fetches at a time (the others wait
//! for it and take its token, or its error), the cached token with the time it stops being handed
//! out (by the injected clock), and the daily fetch counter keyed by the Beijing day.

use super::{TokenCache, TokenFetcher, beijing_day, checked, note_fetch_count, quota_refused};
use crate::{Clock, GatewayError};
use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use subtle::ConstantTimeEq;

/// An in-process [`TokenCache`]. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct MemoryTokenCache {
    clock: Arc<dyn Clock>,
    apps: Mutex<HashMap<String, Arc<AppSlot>>>,
}

/// Everything kept for one appid.
#[derive(Debug, Default)]
struct AppSlot {
    /// Held by the one caller that is fetching.
    refresh: tokio::sync::Mutex<()>,
    state: Mutex<AppState>,
}

#[derive(Debug, Default)]
struct AppState {
    token: Option<CachedToken>,
    /// The Beijing day `fetches` counts for.
    day: String,
    fetches: u32,
    /// Finished refresh attempts (successful or not); lets waiters recognise that the attempt
    /// they waited for failed, so they return its error instead of each fetching in turn.
    attempts: u64,
    last_error: Option<GatewayError>,
}

#[derive(Debug)]
struct CachedToken {
    token: SecretString,
    /// Unix ms (injected clock) from which the token is no longer handed out.
    valid_until_ms: i64,
}

impl AppState {
    fn valid_token(&self, now_ms: i64) -> Option<SecretString> {
        self.token
            .as_ref()
            .filter(|c| now_ms < c.valid_until_ms)
            .map(|c| c.token.clone())
    }
}

impl AppSlot {
    fn state(&self) -> MutexGuard<'_, AppState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl MemoryTokenCache {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        MemoryTokenCache {
            clock,
            apps: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, appid: &str) -> Arc<AppSlot> {
        let mut apps = self.apps.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(apps.entry(appid.to_owned()).or_default())
    }

    fn existing_slot(&self, appid: &str) -> Option<Arc<AppSlot>> {
        self.apps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(appid)
            .cloned()
    }

    /// Counts the fetch against today's quota, fetches and caches. Called with `refresh` held.
    async fn refresh(
        &self,
        slot: &AppSlot,
        appid: &str,
        daily_quota: u32,
        fetcher: &dyn TokenFetcher,
    ) -> Result<SecretString, GatewayError> {
        let fetched_at_ms = self.clock.now_ms();
        let day = beijing_day(fetched_at_ms.div_euclid(1000));
        let count = {
            let mut st = slot.state();
            if st.day != day {
                st.day = day;
                st.fetches = 0;
            }
            if st.fetches >= daily_quota {
                return Err(quota_refused(appid, st.fetches, daily_quota));
            }
            // Counted before the call: a call that fails may still have used WeChat's quota.
            st.fetches += 1;
            st.fetches
        };
        note_fetch_count(appid, count, daily_quota);
        let (token, lifetime) = checked(fetcher.fetch().await?)?;
        slot.state().token = Some(CachedToken {
            token: token.clone(),
            valid_until_ms: fetched_at_ms.saturating_add(lifetime.saturating_mul(1000)),
        });
        Ok(token)
    }
}

#[async_trait]
impl TokenCache for MemoryTokenCache {
    async fn get(
        &self,
        appid: &str,
        daily_quota: u32,
        fetcher: &dyn TokenFetcher,
    ) -> Result<SecretString, GatewayError> {
        let slot = self.slot(appid);
        let seen_attempts = {
            let st = slot.state();
            if let Some(token) = st.valid_token(self.clock.now_ms()) {
                return Ok(token);
            }
            st.attempts
        };

        let _flight = slot.refresh.lock().await;
        {
            let st = slot.state();
            if let Some(token) = st.valid_token(self.clock.now_ms()) {
                return Ok(token);
            }
            if st.attempts != seen_attempts
                && let Some(e) = &st.last_error
            {
                // The attempt we waited for failed: share its answer.
                return Err(e.clone());
            }
        }

        let result = self.refresh(&slot, appid, daily_quota, fetcher).await;
        let mut st = slot.state();
        st.attempts += 1;
        st.last_error = result.as_ref().err().cloned();
        result
    }

    async fn invalidate(&self, appid: &str, stale: &SecretString) -> Result<(), GatewayError> {
        let Some(slot) = self.existing_slot(appid) else {
            return Ok(());
        };
        let mut st = slot.state();
        let same = st.token.as_ref().is_some_and(|c| {
            bool::from(
                c.token
                    .expose_secret()
                    .as_bytes()
                    .ct_eq(stale.expose_secret().as_bytes()),
            )
        });
        if same {
            st.token = None;
        }
        Ok(())
    }

    async fn fetches_today(&self, appid: &str) -> Result<u32, GatewayError> {
        let Some(slot) = self.existing_slot(appid) else {
            return Ok(0);
        };
        let today = beijing_day(self.clock.now_secs());
        let st = slot.state();
        Ok(if st.day == today { st.fetches } else { 0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;
    use crate::token::FetchedToken;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Default)]
    struct Counting(AtomicU32);

    #[async_trait]
    impl TokenFetcher for Counting {
        async fn fetch(&self) -> Result<FetchedToken, GatewayError> {
            let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(FetchedToken {
                token: SecretString::from(format!("tok-{n}")),
                expires_in: 7200,
            })
        }
    }

    #[tokio::test]
    async fn an_unknown_appid_has_no_fetches_and_invalidate_is_a_no_op() {
        let cache = MemoryTokenCache::new(Arc::new(ManualClock::new(0)));
        assert_eq!(cache.fetches_today("wx-none").await.unwrap(), 0);
        cache
            .invalidate("wx-none", &SecretString::from("x"))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_non_positive_expires_in_is_not_cached() {
        struct Zero;
        #[async_trait]
        impl TokenFetcher for Zero {
            async fn fetch(&self) -> Result<FetchedToken, GatewayError> {
                Ok(FetchedToken {
                    token: SecretString::from("t"),
                    expires_in: 0,
                })
            }
        }
        let cache = MemoryTokenCache::new(Arc::new(ManualClock::new(0)));
        let e = cache.get("wx1", 10, &Zero).await.unwrap_err();
        assert!(matches!(e, GatewayError::Protocol(_)), "{e:?}");
        let f = Counting::default();
        assert_eq!(
            cache.get("wx1", 10, &f).await.unwrap().expose_secret(),
            "tok-1"
        );
        assert_eq!(cache.fetches_today("wx1").await.unwrap(), 2);
    }

    #[tokio::test]
    async fn an_empty_token_is_refused() {
        struct Empty;
        #[async_trait]
        impl TokenFetcher for Empty {
            async fn fetch(&self) -> Result<FetchedToken, GatewayError> {
                Ok(FetchedToken {
                    token: SecretString::from(""),
                    expires_in: 7200,
                })
            }
        }
        let cache = MemoryTokenCache::new(Arc::new(ManualClock::new(0)));
        let e = cache.get("wx1", 10, &Empty).await.unwrap_err();
        assert_eq!(e, GatewayError::Protocol("empty access token".into()));
    }

    #[tokio::test]
    async fn appids_are_cached_separately() {
        let cache = MemoryTokenCache::new(Arc::new(ManualClock::new(0)));
        let f = Counting::default();
        assert_eq!(
            cache.get("wxa", 10, &f).await.unwrap().expose_secret(),
            "tok-1"
        );
        assert_eq!(
            cache.get("wxb", 10, &f).await.unwrap().expose_secret(),
            "tok-2"
        );
        assert_eq!(
            cache.get("wxa", 10, &f).await.unwrap().expose_secret(),
            "tok-1"
        );
        assert_eq!(cache.fetches_today("wxa").await.unwrap(), 1);
        assert_eq!(cache.fetches_today("wxb").await.unwrap(), 1);
    }
}
