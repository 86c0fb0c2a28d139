//! Injected time. Every protocol time (token and prepay expiry, signature timestamps, the 5-minute
//! skew check, bill dates, `time_end`/`success_time`) comes from a [`Clock`]; only the *spacing*
//! of notification retries and refund processing uses real (tokio) time scaled by `time_scale`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of Unix seconds.
pub trait Clock: Send + Sync {
    /// The current time as Unix seconds.
    fn now_unix(&self) -> i64;
}

/// The machine's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to (for tests).
#[derive(Debug)]
pub struct ManualClock {
    now: AtomicI64,
}

impl ManualClock {
    /// A clock standing at `unix` seconds.
    pub fn new(unix: i64) -> Self {
        ManualClock {
            now: AtomicI64::new(unix),
        }
    }
    /// A clock standing at the current wall-clock time (then frozen).
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now_unix())
    }
    /// Jump to `unix` seconds.
    pub fn set(&self, unix: i64) {
        self.now.store(unix, Ordering::SeqCst);
    }
    /// Move forward (or backward, if negative) by `secs` seconds.
    pub fn advance(&self, secs: i64) {
        self.now.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_unix(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }
}

/// Beijing (UTC+8) day number of a Unix time, used for the daily token quota and bill dates.
pub(crate) fn beijing_day(unix: i64) -> i64 {
    (unix + 8 * 3600).div_euclid(86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(1_000);
        assert_eq!(c.now_unix(), 1_000);
        c.advance(5);
        assert_eq!(c.now_unix(), 1_005);
        c.set(7);
        assert_eq!(c.now_unix(), 7);
    }

    #[test]
    fn beijing_day_rolls_over_at_16_utc() {
        // 2024-01-01T15:59:59Z is 23:59:59 in Beijing; one second later is the next day.
        let t = 1_704_124_799;
        assert_eq!(beijing_day(t) + 1, beijing_day(t + 1));
    }
}
