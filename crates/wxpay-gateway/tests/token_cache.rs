//! The access-token caches: single flight, expiry, invalidation, the daily quota.
//!
//! The Redis tests run when `WXPAY_TEST_REDIS_URL` is set (e.g. `redis://127.0.0.1:6379`); each
//! uses its own random key prefix and deletes its keys at the end.

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use wxpay_gateway::token::{
    EXPIRY_MARGIN_SECS, FetchedToken, MemoryTokenCache, RedisTokenCache, TokenCache, TokenFetcher,
    beijing_day,
};
use wxpay_gateway::{Clock, GatewayError, ManualClock};

const APPID: &str = "wxd930ea5d5a258f4f";

/// 2024-01-01T15:00:00Z = 23:00 in Beijing, one hour before the quota day turns.
const LATE_EVENING_MS: i64 = 1_704_121_200_000;

/// Counts calls and answers "tok-1", "tok-2", … (numbered by call); the first `failures` calls
/// fail instead.
struct CountingFetcher {
    calls: AtomicU32,
    failures: u32,
    delay: Duration,
}

impl CountingFetcher {
    fn new(delay_ms: u64) -> Arc<Self> {
        Arc::new(CountingFetcher {
            calls: AtomicU32::new(0),
            failures: 0,
            delay: Duration::from_millis(delay_ms),
        })
    }
    fn failing_first(failures: u32, delay_ms: u64) -> Arc<Self> {
        Arc::new(CountingFetcher {
            calls: AtomicU32::new(0),
            failures,
            delay: Duration::from_millis(delay_ms),
        })
    }
    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl TokenFetcher for CountingFetcher {
    async fn fetch(&self) -> Result<FetchedToken, GatewayError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if n <= self.failures {
            return Err(GatewayError::Transport(format!("fake fetch failure {n}")));
        }
        Ok(FetchedToken {
            token: SecretString::from(format!("tok-{n}")),
            expires_in: 7200,
        })
    }
}

fn manual_clock(ms: i64) -> Arc<ManualClock> {
    Arc::new(ManualClock::new(ms))
}

fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_owned())
}

/// Runs `per_cache` concurrent `get`s on each cache (each task optionally invalidating `stale`
/// first) and returns every token handed out.
async fn hammer(
    caches: &[Arc<dyn TokenCache>],
    per_cache: usize,
    quota: u32,
    fetcher: &Arc<CountingFetcher>,
    stale: Option<&str>,
) -> Vec<String> {
    let mut tasks = Vec::new();
    for cache in caches {
        for _ in 0..per_cache {
            let cache = Arc::clone(cache);
            let fetcher = Arc::clone(fetcher);
            let stale = stale.map(secret);
            tasks.push(tokio::spawn(async move {
                if let Some(stale) = &stale {
                    cache.invalidate(APPID, stale).await.expect("invalidate");
                }
                let token = cache.get(APPID, quota, &*fetcher).await.expect("get");
                token.expose_secret().to_owned()
            }));
        }
    }
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(t.await.expect("task"));
    }
    tokens
}

fn assert_all(tokens: &[String], expected: &str) {
    assert!(
        tokens.iter().all(|t| t == expected),
        "expected only {expected}, got {tokens:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// memory

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn memory_thousand_concurrent_gets_fetch_once() {
    let cache: Arc<dyn TokenCache> = Arc::new(MemoryTokenCache::new(manual_clock(LATE_EVENING_MS)));
    let fetcher = CountingFetcher::new(20);
    let tokens = hammer(&[Arc::clone(&cache)], 1000, 2000, &fetcher, None).await;
    assert_eq!(tokens.len(), 1000);
    assert_all(&tokens, "tok-1");
    assert_eq!(fetcher.calls(), 1);
    assert_eq!(cache.fetches_today(APPID).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_expiry_refetches_exactly_once() {
    let clock = manual_clock(LATE_EVENING_MS - 3 * 3600 * 1000);
    let cache: Arc<dyn TokenCache> = Arc::new(MemoryTokenCache::new(clock.clone()));
    let fetcher = CountingFetcher::new(10);

    assert_eq!(
        cache
            .get(APPID, 2000, &*fetcher)
            .await
            .unwrap()
            .expose_secret(),
        "tok-1"
    );
    // Still handed out one second before expires_in − margin …
    clock.advance_secs(7200 - EXPIRY_MARGIN_SECS - 1);
    assert_eq!(
        cache
            .get(APPID, 2000, &*fetcher)
            .await
            .unwrap()
            .expose_secret(),
        "tok-1"
    );
    assert_eq!(fetcher.calls(), 1);
    // … and no longer at it: 200 concurrent callers cause one refetch.
    clock.advance_secs(1);
    let tokens = hammer(&[Arc::clone(&cache)], 200, 2000, &fetcher, None).await;
    assert_all(&tokens, "tok-2");
    assert_eq!(fetcher.calls(), 2);
    assert_eq!(
        cache
            .get(APPID, 2000, &*fetcher)
            .await
            .unwrap()
            .expose_secret(),
        "tok-2"
    );
    assert_eq!(fetcher.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_invalidate_stale_refetches_once_and_keeps_a_replaced_token() {
    let cache: Arc<dyn TokenCache> = Arc::new(MemoryTokenCache::new(manual_clock(LATE_EVENING_MS)));
    let fetcher = CountingFetcher::new(10);
    assert_eq!(
        cache
            .get(APPID, 2000, &*fetcher)
            .await
            .unwrap()
            .expose_secret(),
        "tok-1"
    );

    // 300 callers were all told 40001 for tok-1: one refetch between them.
    let tokens = hammer(&[Arc::clone(&cache)], 300, 2000, &fetcher, Some("tok-1")).await;
    assert_all(&tokens, "tok-2");
    assert_eq!(fetcher.calls(), 2);

    // A late complaint about tok-1 does not throw away tok-2.
    cache.invalidate(APPID, &secret("tok-1")).await.unwrap();
    assert_eq!(
        cache
            .get(APPID, 2000, &*fetcher)
            .await
            .unwrap()
            .expose_secret(),
        "tok-2"
    );
    assert_eq!(fetcher.calls(), 2);
    // Nor does one about a token of the same length that never was ours.
    cache.invalidate(APPID, &secret("tok-9")).await.unwrap();
    assert_eq!(
        cache
            .get(APPID, 2000, &*fetcher)
            .await
            .unwrap()
            .expose_secret(),
        "tok-2"
    );
    assert_eq!(fetcher.calls(), 2);
}

#[tokio::test]
async fn memory_quota_refuses_the_fourth_fetch_and_resets_the_next_beijing_day() {
    let clock = manual_clock(LATE_EVENING_MS);
    let cache = MemoryTokenCache::new(clock.clone());
    let fetcher = CountingFetcher::new(0);
    for n in 1..=3 {
        let token = cache.get(APPID, 3, &*fetcher).await.unwrap();
        assert_eq!(token.expose_secret(), format!("tok-{n}"));
        cache.invalidate(APPID, &token).await.unwrap();
    }
    assert_eq!(cache.fetches_today(APPID).await.unwrap(), 3);

    let err = cache.get(APPID, 3, &*fetcher).await.unwrap_err();
    assert_quota_error(&err, 3);
    assert_eq!(fetcher.calls(), 3, "a refused fetch must not reach WeChat");
    assert_eq!(cache.fetches_today(APPID).await.unwrap(), 3);

    // Midnight in Beijing: a new day, a new count.
    assert_eq!(beijing_day(clock.now_secs()), "20240101");
    clock.advance_secs(3600);
    assert_eq!(beijing_day(clock.now_secs()), "20240102");
    assert_eq!(cache.fetches_today(APPID).await.unwrap(), 0);
    assert_eq!(
        cache
            .get(APPID, 3, &*fetcher)
            .await
            .unwrap()
            .expose_secret(),
        "tok-4"
    );
    assert_eq!(cache.fetches_today(APPID).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_a_failed_fetch_is_shared_by_its_waiters_and_not_cached() {
    let cache = Arc::new(MemoryTokenCache::new(manual_clock(LATE_EVENING_MS)));
    let fetcher = CountingFetcher::failing_first(1, 30);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (cache, fetcher) = (Arc::clone(&cache), Arc::clone(&fetcher));
        tasks.push(tokio::spawn(async move {
            cache.get(APPID, 2000, &*fetcher).await
        }));
    }
    // Every caller either shared the one failure or came after it and got the next token.
    for t in tasks {
        match t.await.unwrap() {
            Err(GatewayError::Transport(m)) => assert_eq!(m, "fake fetch failure 1"),
            Ok(token) => assert_eq!(token.expose_secret(), "tok-2"),
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert!(fetcher.calls() <= 2, "calls: {}", fetcher.calls());
    assert_eq!(
        cache
            .get(APPID, 2000, &*fetcher)
            .await
            .unwrap()
            .expose_secret(),
        "tok-2"
    );
    assert_eq!(fetcher.calls(), 2);
}

fn assert_quota_error(err: &GatewayError, quota: u32) {
    let GatewayError::TokenQuota(msg) = err else {
        panic!("expected TokenQuota, got {err:?}")
    };
    assert!(
        msg.contains(&format!("{quota} access tokens already fetched")),
        "{msg}"
    );
    assert!(msg.contains(&format!("daily quota of {quota}")), "{msg}");
    assert!(msg.contains(APPID), "{msg}");
    assert!(
        !msg.contains("tok-"),
        "a token leaked into the message: {msg}"
    );
}

// ---------------------------------------------------------------------------------------------
// redis

/// The Redis URL, or `None` (after saying so) when the variable is not set.
fn redis_url() -> Option<String> {
    match std::env::var("WXPAY_TEST_REDIS_URL") {
        Ok(url) => Some(url),
        Err(std::env::VarError::NotPresent) => {
            println!("skipped: WXPAY_TEST_REDIS_URL is not set");
            None
        }
        Err(e) => panic!("WXPAY_TEST_REDIS_URL: {e}"),
    }
}

/// A random key prefix for one test; its keys are deleted when this is dropped.
struct TestKeys {
    url: String,
    prefix: String,
}

impl TestKeys {
    fn new(url: &str) -> Self {
        TestKeys {
            url: url.to_owned(),
            prefix: format!("wxpay-test-{}:", wxpay_gateway::nonce(16)),
        }
    }

    async fn cache(&self, clock: Arc<dyn Clock>) -> Arc<RedisTokenCache> {
        let cache = RedisTokenCache::connect(&self.url, &self.prefix, clock)
            .await
            .expect("connect");
        assert!(cache.ping().await);
        Arc::new(cache)
    }

    /// A plain connection for looking at (and tampering with) the keys.
    async fn raw(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    fn delete_all(&self) -> usize {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return 0;
        };
        let Ok(mut conn) = client.get_connection() else {
            return 0;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query(&mut conn)
            .unwrap_or_default();
        if keys.is_empty() {
            return 0;
        }
        redis::cmd("DEL")
            .arg(&keys)
            .query::<usize>(&mut conn)
            .unwrap_or(0)
    }
}

impl Drop for TestKeys {
    fn drop(&mut self) {
        self.delete_all();
    }
}

async fn exists(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<i64>(conn)
        .await
        .unwrap()
        == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn redis_two_instances_hammered_fetch_once() {
    let Some(url) = redis_url() else { return };
    let keys = TestKeys::new(&url);
    let clock = manual_clock(LATE_EVENING_MS);
    let a = keys.cache(clock.clone()).await;
    let b = keys.cache(clock.clone()).await;
    let fetcher = CountingFetcher::new(50);

    let caches: [Arc<dyn TokenCache>; 2] = [a.clone(), b.clone()];
    let tokens = hammer(&caches, 200, 2000, &fetcher, None).await;
    assert_eq!(tokens.len(), 400);
    assert_all(&tokens, "tok-1");
    assert_eq!(fetcher.calls(), 1);
    assert_eq!(a.fetches_today(APPID).await.unwrap(), 1);
    assert_eq!(b.fetches_today(APPID).await.unwrap(), 1);

    let mut raw = keys.raw().await;
    let ttl: i64 = redis::cmd("TTL")
        .arg(a.token_key(APPID))
        .query_async(&mut raw)
        .await
        .unwrap();
    let lifetime = 7200 - EXPIRY_MARGIN_SECS;
    assert!((lifetime - 10..=lifetime).contains(&ttl), "token TTL {ttl}");
    let quota_key = a.quota_key(APPID, "20240101");
    let quota_ttl: i64 = redis::cmd("TTL")
        .arg(&quota_key)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(
        (2 * 86_400 - 10..=2 * 86_400).contains(&quota_ttl),
        "quota TTL {quota_ttl}"
    );
    assert!(
        !exists(&mut raw, &a.lock_key(APPID)).await,
        "the lock was not released"
    );

    drop(keys);
    let left: i64 = redis::cmd("EXISTS")
        .arg(a.token_key(APPID))
        .arg(quota_key)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(left, 0, "the test keys were not deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn redis_expired_token_refetches_exactly_once_across_instances() {
    let Some(url) = redis_url() else { return };
    let keys = TestKeys::new(&url);
    let clock = manual_clock(LATE_EVENING_MS);
    let a = keys.cache(clock.clone()).await;
    let b = keys.cache(clock.clone()).await;
    let fetcher = CountingFetcher::new(30);
    assert_eq!(
        a.get(APPID, 2000, &*fetcher).await.unwrap().expose_secret(),
        "tok-1"
    );

    // Let Redis expire the token key (as its TTL would) and wait until it is gone.
    let mut raw = keys.raw().await;
    let _: i64 = redis::cmd("PEXPIRE")
        .arg(a.token_key(APPID))
        .arg(1)
        .query_async(&mut raw)
        .await
        .unwrap();
    while exists(&mut raw, &a.token_key(APPID)).await {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let caches: [Arc<dyn TokenCache>; 2] = [a.clone(), b.clone()];
    let tokens = hammer(&caches, 100, 2000, &fetcher, None).await;
    assert_all(&tokens, "tok-2");
    assert_eq!(fetcher.calls(), 2);
    assert_eq!(b.fetches_today(APPID).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn redis_invalidate_refetches_exactly_once_across_instances() {
    let Some(url) = redis_url() else { return };
    let keys = TestKeys::new(&url);
    let clock = manual_clock(LATE_EVENING_MS);
    let a = keys.cache(clock.clone()).await;
    let b = keys.cache(clock.clone()).await;
    let fetcher = CountingFetcher::new(30);
    assert_eq!(
        a.get(APPID, 2000, &*fetcher).await.unwrap().expose_secret(),
        "tok-1"
    );
    assert_eq!(
        b.get(APPID, 2000, &*fetcher).await.unwrap().expose_secret(),
        "tok-1"
    );

    // 200 callers in each process were told 40001 for tok-1.
    let caches: [Arc<dyn TokenCache>; 2] = [a.clone(), b.clone()];
    let tokens = hammer(&caches, 200, 2000, &fetcher, Some("tok-1")).await;
    assert_all(&tokens, "tok-2");
    assert_eq!(fetcher.calls(), 2);

    // A late complaint about tok-1 keeps tok-2.
    b.invalidate(APPID, &secret("tok-1")).await.unwrap();
    let mut raw = keys.raw().await;
    let stored: Option<String> = redis::cmd("GET")
        .arg(a.token_key(APPID))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(stored.as_deref(), Some("tok-2"));
    assert_eq!(
        a.get(APPID, 2000, &*fetcher).await.unwrap().expose_secret(),
        "tok-2"
    );
    assert_eq!(fetcher.calls(), 2);
}

#[tokio::test]
async fn redis_quota_is_refused_across_instances_and_resets_the_next_beijing_day() {
    let Some(url) = redis_url() else { return };
    let keys = TestKeys::new(&url);
    let clock = manual_clock(LATE_EVENING_MS);
    let a = keys.cache(clock.clone()).await;
    let b = keys.cache(clock.clone()).await;
    let fetcher = CountingFetcher::new(0);

    for (n, cache) in [(1, &a), (2, &b), (3, &a)] {
        let token = cache.get(APPID, 3, &*fetcher).await.unwrap();
        assert_eq!(token.expose_secret(), format!("tok-{n}"));
        cache.invalidate(APPID, &token).await.unwrap();
    }
    for cache in [&b, &a, &b] {
        let err = cache.get(APPID, 3, &*fetcher).await.unwrap_err();
        assert_quota_error(&err, 3);
    }
    assert_eq!(fetcher.calls(), 3, "a refused fetch must not reach WeChat");
    // Refusals are not counted.
    assert_eq!(a.fetches_today(APPID).await.unwrap(), 3);
    assert_eq!(b.fetches_today(APPID).await.unwrap(), 3);
    let mut raw = keys.raw().await;
    assert!(
        !exists(&mut raw, &a.lock_key(APPID)).await,
        "a refusal kept the lock"
    );

    clock.advance_secs(3600);
    assert_eq!(a.fetches_today(APPID).await.unwrap(), 0);
    assert_eq!(
        b.get(APPID, 3, &*fetcher).await.unwrap().expose_secret(),
        "tok-4"
    );
    assert_eq!(a.fetches_today(APPID).await.unwrap(), 1);
    assert!(exists(&mut raw, &a.quota_key(APPID, "20240102")).await);
}

#[tokio::test]
async fn redis_a_failed_fetch_releases_the_lock() {
    let Some(url) = redis_url() else { return };
    let keys = TestKeys::new(&url);
    let clock = manual_clock(LATE_EVENING_MS);
    let a = keys.cache(clock.clone()).await;
    let b = keys.cache(clock.clone()).await;
    let fetcher = CountingFetcher::failing_first(1, 0);

    let err = a.get(APPID, 2000, &*fetcher).await.unwrap_err();
    assert_eq!(err, GatewayError::Transport("fake fetch failure 1".into()));
    let mut raw = keys.raw().await;
    assert!(
        !exists(&mut raw, &a.lock_key(APPID)).await,
        "the lock outlived a failed fetch"
    );

    // The next caller (in either process) fetches at once instead of waiting for the lock.
    let token = tokio::time::timeout(Duration::from_secs(5), b.get(APPID, 2000, &*fetcher))
        .await
        .expect("waited for a lock that should have been released")
        .unwrap();
    assert_eq!(token.expose_secret(), "tok-2");
    assert_eq!(fetcher.calls(), 2);
    // The failed call still counts against WeChat's quota.
    assert_eq!(a.fetches_today(APPID).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_waiters_read_the_token_the_lock_holder_stores() {
    let Some(url) = redis_url() else { return };
    let keys = TestKeys::new(&url);
    let a = keys.cache(manual_clock(LATE_EVENING_MS)).await;
    let fetcher = CountingFetcher::new(0);
    let mut raw = keys.raw().await;

    // Another process holds the lock and is fetching.
    let _: () = redis::cmd("SET")
        .arg(a.lock_key(APPID))
        .arg("another-process")
        .arg("PX")
        .arg(30_000)
        .query_async(&mut raw)
        .await
        .unwrap();
    let waiter = {
        let (a, fetcher) = (a.clone(), fetcher.clone());
        tokio::spawn(async move { a.get(APPID, 2000, &*fetcher).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _: () = redis::cmd("SET")
        .arg(a.token_key(APPID))
        .arg("tok-from-elsewhere")
        .arg("EX")
        .arg(600)
        .query_async(&mut raw)
        .await
        .unwrap();
    let token = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(token.expose_secret(), "tok-from-elsewhere");
    assert_eq!(fetcher.calls(), 0);
    // The foreign lock is untouched.
    let owner: Option<String> = redis::cmd("GET")
        .arg(a.lock_key(APPID))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(owner.as_deref(), Some("another-process"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_an_abandoned_lock_is_taken_over_when_it_expires() {
    let Some(url) = redis_url() else { return };
    let keys = TestKeys::new(&url);
    let clock = manual_clock(LATE_EVENING_MS);
    let a = keys.cache(clock.clone()).await;
    let b = keys.cache(clock.clone()).await;
    let fetcher = CountingFetcher::new(10);
    let mut raw = keys.raw().await;

    // A process took the lock and died: the lock expires by itself.
    let _: () = redis::cmd("SET")
        .arg(a.lock_key(APPID))
        .arg("crashed-process")
        .arg("PX")
        .arg(300)
        .query_async(&mut raw)
        .await
        .unwrap();
    let caches: [Arc<dyn TokenCache>; 2] = [a.clone(), b.clone()];
    let tokens = tokio::time::timeout(
        Duration::from_secs(5),
        hammer(&caches, 20, 2000, &fetcher, None),
    )
    .await
    .unwrap();
    assert_all(&tokens, "tok-1");
    assert_eq!(fetcher.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_a_cancelled_refresh_releases_the_lock() {
    let Some(url) = redis_url() else { return };
    let keys = TestKeys::new(&url);
    let clock = manual_clock(LATE_EVENING_MS);
    let a = keys.cache(clock.clone()).await;
    let b = keys.cache(clock.clone()).await;
    let slow = CountingFetcher::new(60_000);
    let mut raw = keys.raw().await;

    let task = {
        let (a, slow) = (a.clone(), slow.clone());
        tokio::spawn(async move { a.get(APPID, 2000, &*slow).await })
    };
    // Wait until the refresh holds the lock and is inside the fetch, then drop it.
    tokio::time::timeout(Duration::from_secs(5), async {
        while slow.calls() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the refresh never started");
    assert!(exists(&mut raw, &a.lock_key(APPID)).await);
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());

    // The lock goes at once (not after its 30 s TTL), so the next caller fetches right away.
    let fetcher = CountingFetcher::new(0);
    let token = tokio::time::timeout(Duration::from_secs(5), b.get(APPID, 2000, &*fetcher))
        .await
        .expect("waited for the lock of a cancelled refresh")
        .unwrap();
    assert_eq!(token.expose_secret(), "tok-1");
    assert_eq!(fetcher.calls(), 1);
}

#[tokio::test]
async fn redis_connect_failures_are_cache_transport_errors() {
    let clock: Arc<dyn Clock> = manual_clock(LATE_EVENING_MS);
    for url in ["not a url", "redis://127.0.0.1:1/"] {
        let err = RedisTokenCache::connect(url, "wxpay-test:", clock.clone())
            .await
            .unwrap_err();
        let GatewayError::Transport(msg) = &err else {
            panic!("{url}: {err:?}")
        };
        assert!(msg.starts_with("cache: "), "{url}: {msg}");
    }
}
