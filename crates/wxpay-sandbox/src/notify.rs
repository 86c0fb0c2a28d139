//! The notification delivery engine.
//!
//! The first attempt goes out immediately after the event (payment, refund outcome); when it is
//! not answered with success, WeChat's schedule follows: 15s, 15s, 30s, 3m, 10m, 20m, 30m, 30m,
//! 30m, 60m, 3h, 3h, 3h, 6h, 6h (15 retries, 24h4m), every interval multiplied by `time_scale`.
//! Each attempt times out after 5 s × `time_scale`, **but never less than 50 ms**, so that a
//! scaled-down run still gives a local receiver a fair chance to answer.
//!
//! Success is, for legacy notifications, HTTP 200 with the body `success` (surrounding ASCII
//! whitespace is tolerated); for APIv3, HTTP 200 or 204. Everything else, a timeout or a connection
//! error is a failed attempt. Every attempt, including dropped, forged and probe ones, is recorded.
//! Deliveries ignore `HTTP(S)_PROXY` (the merchant is usually on the same machine) and follow no
//! redirects.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Inner;
use crate::faults::counter;

/// WeChat's retry intervals after the first attempt, in seconds.
pub const RETRY_SCHEDULE_SECS: [u64; 15] = [
    15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600, 21600,
];
/// The delivery timeout before scaling.
pub const DELIVERY_TIMEOUT_SECS: f64 = 5.0;
/// The scaled delivery timeout never goes below this.
pub const MIN_DELIVERY_TIMEOUT_MS: u64 = 50;
/// Replies are stored up to this many bytes.
pub const REPLY_LIMIT: usize = 1024;

/// What a notification is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// PROTOCOL.md A.6.
    LegacyPayment,
    /// APIv3 `TRANSACTION.SUCCESS`.
    Transaction,
    /// APIv3 `REFUND.*`.
    Refund,
}

/// Genuine, or one of the fault injections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    Genuine,
    /// Valid shape, signed with a wrong key.
    Forged,
    /// v3: `Wechatpay-Signature: WECHATPAY/SIGNTEST/…`.
    Signtest,
}

/// How an attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The merchant answered with success (for a forged/probe variant that is a merchant bug).
    Success,
    /// The merchant answered something else.
    Failure,
    /// No answer within the delivery timeout.
    Timeout,
    /// Connection refused, DNS failure, ...
    Error,
    /// Not sent (fault `drop_notification`).
    Dropped,
}

/// One delivery attempt (`GET /sandbox/api/notifications`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// Global sequence number of the record.
    pub seq: u64,
    /// The notification (legacy `notify_id`, v3 envelope `id`); equal for all attempts.
    pub notification_id: String,
    pub kind: NotificationKind,
    /// `TRANSACTION.SUCCESS`, `REFUND.SUCCESS`, ... (legacy: `PAYMENT`).
    pub event_type: String,
    /// partner (legacy) or mchid (v3).
    pub merchant: String,
    pub out_trade_no: String,
    pub out_refund_no: Option<String>,
    /// 0 for the first attempt, 1..=15 for the retries.
    pub attempt: u32,
    /// 0, or 1 for the second copy of a duplicated attempt.
    pub copy: u32,
    pub variant: Variant,
    /// Sandbox clock (Unix seconds) when the attempt started.
    pub at_unix: i64,
    /// Real milliseconds since the sandbox started, when the attempt started.
    pub elapsed_ms: u64,
    pub url: String,
    pub status: Option<u16>,
    /// Reply body, truncated to 1024 bytes.
    pub reply: String,
    pub outcome: Outcome,
    /// Faults that shaped this attempt (`delay_notification`, `reorder_notification`, ...).
    pub faults: Vec<String>,
    /// Real milliseconds the attempt took.
    pub duration_ms: u64,
}

/// An HTTP request ready to go.
pub(crate) struct PreparedRequest {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Builds the request of one attempt (v3 signs each attempt afresh with the current key).
pub(crate) trait Prepare: Send + Sync {
    fn prepare(&self, inner: &Inner, variant: Variant) -> Result<PreparedRequest, String>;
}

pub(crate) struct Notification {
    pub id: String,
    pub kind: NotificationKind,
    pub event_type: String,
    pub merchant: String,
    /// Every identifier a per-merchant fault set may use (mchid; partner and appid).
    pub fault_ids: Vec<String>,
    pub out_trade_no: String,
    pub out_refund_no: Option<String>,
    pub source: Box<dyn Prepare>,
}

/// The scaled delivery timeout.
pub(crate) fn delivery_timeout(time_scale: f64) -> Duration {
    let ms = (DELIVERY_TIMEOUT_SECS * 1000.0 * time_scale).round() as u64;
    Duration::from_millis(ms.max(MIN_DELIVERY_TIMEOUT_MS))
}

/// Start delivering a notification in the background.
pub(crate) fn spawn_delivery(inner: &Arc<Inner>, n: Notification) {
    let inner = inner.clone();
    tokio::spawn(async move {
        let mut shutdown = inner.shutdown.subscribe();
        let n = Arc::new(n);
        for attempt in 0..=RETRY_SCHEDULE_SECS.len() {
            if attempt > 0 {
                let d = inner.scaled(RETRY_SCHEDULE_SECS[attempt - 1] as f64);
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = shutdown.changed() => return,
                }
            }
            if *shutdown.borrow() {
                return;
            }
            if attempt_once(&inner, &n, attempt as u32).await {
                return;
            }
        }
    });
}

struct Draws {
    drop: bool,
    duplicate: bool,
    concurrent: bool,
    delay: Option<u64>,
    reorder: Option<u64>,
    forge: bool,
    probe: bool,
}

fn draw(inner: &Inner, n: &Notification) -> Draws {
    let mut st = inner.lock();
    let ids: Vec<&str> = n.fault_ids.iter().map(String::as_str).collect();
    let fs = st.faults.for_merchant(&ids).clone();
    let mut d = Draws {
        drop: st.draw(fs.drop_notification),
        duplicate: st.draw(fs.duplicate_notification),
        concurrent: fs.duplicate_concurrently,
        delay: None,
        reorder: None,
        forge: st.draw(fs.forge_notification),
        probe: n.kind != NotificationKind::LegacyPayment && st.draw(fs.signtest_probe),
    };
    if st.draw(fs.delay_notification) {
        d.delay = Some(if fs.delay_ms == 0 { 1000 } else { fs.delay_ms });
    }
    if st.draw(fs.reorder_notification) {
        d.reorder = Some(if fs.reorder_hold_ms == 0 {
            2000
        } else {
            fs.reorder_hold_ms
        });
    }
    for (hit, name) in [
        (d.drop, counter::DROP),
        (d.duplicate && !d.drop, counter::DUPLICATE),
        (d.delay.is_some() && !d.drop, counter::DELAY),
        (d.reorder.is_some() && !d.drop, counter::REORDER),
        (d.forge, counter::FORGE),
        (d.probe, counter::SIGNTEST),
    ] {
        if hit {
            st.count(name);
        }
    }
    d
}

/// One scheduled attempt with its faults. Returns true when the merchant acknowledged it.
async fn attempt_once(inner: &Arc<Inner>, n: &Arc<Notification>, attempt: u32) -> bool {
    let d = draw(inner, n);
    if d.forge {
        send(
            inner,
            n,
            attempt,
            0,
            Variant::Forged,
            vec![counter::FORGE.into()],
        )
        .await;
    }
    if d.probe {
        send(
            inner,
            n,
            attempt,
            0,
            Variant::Signtest,
            vec![counter::SIGNTEST.into()],
        )
        .await;
    }
    if d.drop {
        record(
            inner,
            n,
            attempt,
            0,
            Variant::Genuine,
            String::new(),
            None,
            String::new(),
            Outcome::Dropped,
            vec![counter::DROP.into()],
            std::time::Instant::now(),
        );
        return false;
    }
    let mut faults = Vec::new();
    if let Some(ms) = d.delay {
        faults.push(counter::DELAY.to_string());
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(ms) = d.reorder {
        faults.push(counter::REORDER.to_string());
        let (tx, rx) = tokio::sync::oneshot::channel();
        inner
            .lock()
            .held
            .entry(n.merchant.clone())
            .or_default()
            .push(tx);
        let _ = tokio::time::timeout(Duration::from_millis(ms), rx).await;
    }
    let ok = if d.duplicate {
        faults.push(counter::DUPLICATE.to_string());
        if d.concurrent {
            let (a, b) = tokio::join!(
                send(inner, n, attempt, 0, Variant::Genuine, faults.clone()),
                send(inner, n, attempt, 1, Variant::Genuine, faults.clone())
            );
            a || b
        } else {
            let a = send(inner, n, attempt, 0, Variant::Genuine, faults.clone()).await;
            let b = send(inner, n, attempt, 1, Variant::Genuine, faults).await;
            a || b
        }
    } else {
        send(inner, n, attempt, 0, Variant::Genuine, faults).await
    };
    inner.lock().release_held(&n.merchant);
    ok
}

fn truncate(mut s: String) -> String {
    if s.len() > REPLY_LIMIT {
        let mut cut = REPLY_LIMIT;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

#[allow(clippy::too_many_arguments)]
fn record(
    inner: &Inner,
    n: &Notification,
    attempt: u32,
    copy: u32,
    variant: Variant,
    url: String,
    status: Option<u16>,
    reply: String,
    outcome: Outcome,
    faults: Vec<String>,
    started: std::time::Instant,
) {
    let at_unix = inner.clock.now_unix();
    let elapsed_ms = started.duration_since(inner.started).as_millis() as u64;
    let duration_ms = started.elapsed().as_millis() as u64;
    let mut st = inner.lock();
    let seq = st.next_seq();
    st.deliveries.push(DeliveryRecord {
        seq,
        notification_id: n.id.clone(),
        kind: n.kind,
        event_type: n.event_type.clone(),
        merchant: n.merchant.clone(),
        out_trade_no: n.out_trade_no.clone(),
        out_refund_no: n.out_refund_no.clone(),
        attempt,
        copy,
        variant,
        at_unix,
        elapsed_ms,
        url,
        status,
        reply: truncate(reply),
        outcome,
        faults,
        duration_ms,
    });
}

/// Send one HTTP request; returns true for a genuine attempt the merchant acknowledged.
async fn send(
    inner: &Arc<Inner>,
    n: &Arc<Notification>,
    attempt: u32,
    copy: u32,
    variant: Variant,
    faults: Vec<String>,
) -> bool {
    let started = std::time::Instant::now();
    let req = match n.source.prepare(inner, variant) {
        Ok(r) => r,
        Err(e) => {
            record(
                inner,
                n,
                attempt,
                copy,
                variant,
                String::new(),
                None,
                e,
                Outcome::Error,
                faults,
                started,
            );
            return false;
        }
    };
    let mut rb = inner
        .http
        .post(&req.url)
        .timeout(delivery_timeout(inner.time_scale))
        .body(req.body);
    for (k, v) in &req.headers {
        rb = rb.header(k.as_str(), v.as_str());
    }
    let (status, reply, outcome) = match rb.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            match resp.text().await {
                Ok(body) => {
                    let ok = match n.kind {
                        NotificationKind::LegacyPayment => {
                            status == 200
                                && body.trim_matches(|c: char| c.is_ascii_whitespace()) == "success"
                        }
                        _ => status == 200 || status == 204,
                    };
                    (
                        Some(status),
                        body,
                        if ok {
                            Outcome::Success
                        } else {
                            Outcome::Failure
                        },
                    )
                }
                Err(e) if e.is_timeout() => (Some(status), String::new(), Outcome::Timeout),
                Err(e) => (Some(status), e.to_string(), Outcome::Error),
            }
        }
        Err(e) if e.is_timeout() => (None, String::new(), Outcome::Timeout),
        Err(e) => (None, e.to_string(), Outcome::Error),
    };
    tracing::debug!(
        notification = %n.id,
        attempt,
        copy,
        ?variant,
        ?status,
        ?outcome,
        "sandbox: notification attempt"
    );
    record(
        inner, n, attempt, copy, variant, req.url, status, reply, outcome, faults, started,
    );
    variant == Variant::Genuine && outcome == Outcome::Success
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_sums_to_24h4m() {
        assert_eq!(RETRY_SCHEDULE_SECS.iter().sum::<u64>(), 86_640);
    }

    #[test]
    fn timeout_is_scaled_with_a_floor() {
        assert_eq!(delivery_timeout(1.0), Duration::from_secs(5));
        assert_eq!(delivery_timeout(0.001), Duration::from_millis(50));
        assert_eq!(delivery_timeout(0.1), Duration::from_millis(500));
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        let s = "支".repeat(600);
        let t = truncate(s);
        assert!(t.len() <= REPLY_LIMIT);
        assert!(t.chars().all(|c| c == '支'));
    }
}
