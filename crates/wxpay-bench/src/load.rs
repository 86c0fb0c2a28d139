//! Load generation: a closed loop (C workers, each sending its next request as soon as the last
//! one is answered) and an open loop (requests started on a fixed schedule, latency counted from
//! the scheduled start, so a slow server cannot hide its queueing).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// One request of a workload: `op(i)` sends request number `i`.
pub type Op =
    Arc<dyn Fn(usize) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// What a run measured.
#[derive(Clone, Debug, Default)]
pub struct RunStats {
    pub ok: usize,
    pub errors: usize,
    pub secs: f64,
    /// Latencies of the successful requests in microseconds, sorted.
    pub lat_us: Vec<u32>,
    pub first_error: Option<String>,
}

impl RunStats {
    /// Successful requests per second.
    pub fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.ok as f64 / self.secs
        } else {
            0.0
        }
    }

    /// The `p`-quantile (0..=1) of the latency in milliseconds; 0 when nothing succeeded.
    pub fn pct_ms(&self, p: f64) -> f64 {
        if self.lat_us.is_empty() {
            return 0.0;
        }
        let n = self.lat_us.len();
        let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
        self.lat_us[rank - 1] as f64 / 1000.0
    }

    /// Adds another run's results (its time too).
    pub fn absorb(&mut self, other: RunStats) {
        self.secs += other.secs;
        self.merge(other.lat_us, other.errors, other.first_error);
        self.lat_us.sort_unstable();
    }

    fn merge(&mut self, lat: Vec<u32>, errors: usize, first_error: Option<String>) {
        self.ok += lat.len();
        self.lat_us.extend(lat);
        self.errors += errors;
        if self.first_error.is_none() {
            self.first_error = first_error;
        }
    }
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

/// Sends `count` requests with `c` concurrent workers; stops early at `cap`.
pub async fn closed_loop(count: usize, c: usize, cap: Duration, op: Op) -> RunStats {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + cap;
    let mut set = JoinSet::new();
    for _ in 0..c.max(1) {
        let next = next.clone();
        let op = op.clone();
        set.spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            let mut first_error = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count || Instant::now() >= deadline {
                    break;
                }
                let t = Instant::now();
                match op(i).await {
                    Ok(()) => lat.push(micros(t.elapsed())),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (lat, errors, first_error)
        });
    }
    let mut stats = RunStats::default();
    while let Some(r) = set.join_next().await {
        match r {
            Ok((lat, errors, first)) => stats.merge(lat, errors, first),
            Err(e) => stats.merge(Vec::new(), 1, Some(format!("worker task failed: {e}"))),
        }
    }
    stats.secs = start.elapsed().as_secs_f64();
    stats.lat_us.sort_unstable();
    stats
}

/// Starts request `i` at `i / rate` seconds (at most `count` requests, none scheduled after
/// `cap`), with at most `max_inflight` outstanding. Latency runs from the scheduled start.
pub async fn open_loop(
    count: usize,
    rate: f64,
    cap: Duration,
    max_inflight: usize,
    op: Op,
) -> RunStats {
    let rate = rate.max(1.0);
    let sem = Arc::new(Semaphore::new(max_inflight.max(1)));
    let start = Instant::now() + Duration::from_millis(5);
    let mut set = JoinSet::new();
    for i in 0..count {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        if due > start + cap {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        let op = op.clone();
        set.spawn(async move {
            let r = op(i).await;
            drop(permit);
            (r, micros(due.elapsed()))
        });
    }
    let mut stats = RunStats::default();
    while let Some(r) = set.join_next().await {
        match r {
            Ok((Ok(()), us)) => stats.merge(vec![us], 0, None),
            Ok((Err(e), _)) => stats.merge(Vec::new(), 1, Some(e)),
            Err(e) => stats.merge(Vec::new(), 1, Some(format!("request task failed: {e}"))),
        }
    }
    stats.secs = start.elapsed().as_secs_f64();
    stats.lat_us.sort_unstable();
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let s = RunStats {
            ok: 100,
            lat_us: (1..=100).map(|v| v * 1000).collect(),
            secs: 2.0,
            ..Default::default()
        };
        assert_eq!(s.pct_ms(0.5), 50.0);
        assert_eq!(s.pct_ms(0.99), 99.0);
        assert_eq!(s.pct_ms(1.0), 100.0);
        assert_eq!(s.rate(), 50.0);
        assert_eq!(RunStats::default().pct_ms(0.99), 0.0);
    }

    #[tokio::test]
    async fn both_loops_send_every_request_once() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let op: Op = Arc::new(move |i| {
            let seen = s2.clone();
            Box::pin(async move {
                seen.lock().unwrap().push(i);
                if i == 3 { Err("three".into()) } else { Ok(()) }
            })
        });
        let st = closed_loop(20, 4, Duration::from_secs(60), op.clone()).await;
        assert_eq!((st.ok, st.errors), (19, 1));
        assert_eq!(st.first_error.as_deref(), Some("three"));
        let st = open_loop(10, 1000.0, Duration::from_secs(60), 4, op).await;
        assert_eq!((st.ok, st.errors), (9, 1));
        let mut v = seen.lock().unwrap().clone();
        v.sort_unstable();
        let expected: Vec<usize> = (0..20).chain(0..10).collect::<Vec<_>>();
        let mut e = expected;
        e.sort_unstable();
        assert_eq!(v, e);
    }
}
