//! The business-webhook dispatcher. Each round it fans new outbox events out to the configured
//! endpoints (one delivery row per event × endpoint), leases the deliveries that are due, and
//! POSTs each one, signed:
//!
//! ```text
//! POST <url>
//! Content-Type: application/json
//! Wxpay-Event-Id: evt_…
//! Wxpay-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
//!
//! {"id": "evt_…", "type": "order.paid", "created_at": <unix seconds>, "data": {…}}
//! ```
//!
//! Any 2xx is success. A timeout, a connection failure or any other status (redirects are not
//! followed) reschedules the delivery after the next gap of `webhook_retry_secs`; when those are
//! used up it is DEAD (an operator can redeliver it). At least once, in order per order (see
//! `wxpay_store::webhooks`). On shutdown the loop stops claiming and finishes the deliveries in
//! hand. The recipe for receivers is in `docs/webhooks.md`.

use super::{LEASE_MS, POLL, WorkerContext};
use crate::configuration::Settings;
use crate::startup::AppState;
use hmac::{KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use std::time::Duration;
use wxpay_store::{AttemptOutcome, Event, StoreError, WebhookDelivery, WebhookEndpoint};

pub const EVENT_ID_HEADER: &str = "Wxpay-Event-Id";
pub const SIGNATURE_HEADER: &str = "Wxpay-Signature";
/// Outbox events stepped over per endpoint and round.
const FAN_OUT_BATCH: i64 = 500;
/// Deliveries leased (and sent concurrently) per round.
const CLAIM_BATCH: i64 = 32;
/// How much of a failing answer's body is kept in `last_error`.
const ERROR_BODY_SNIPPET: usize = 200;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The configured endpoints, as the store sees them.
pub fn endpoints(settings: &Settings) -> Vec<WebhookEndpoint> {
    settings
        .webhooks
        .iter()
        .map(|w| WebhookEndpoint {
            url: w.url.clone(),
            events: w.events.clone(),
        })
        .collect()
}

/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature_header(secret: &SecretString, t: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.expose_secret().as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The JSON body of an event: `{"id", "type", "created_at" (unix seconds), "data"}`; `data` is
/// the event's payload as it was written with the state change.
pub fn body(event: &Event) -> Vec<u8> {
    let data = serde_json::from_str::<serde_json::Value>(&event.payload)
        .unwrap_or_else(|_| serde_json::Value::String(event.payload.clone()));
    serde_json::json!({
        "id": event.id,
        "type": event.event_type,
        "created_at": event.created_at.div_euclid(1000),
        "data": data,
    })
    .to_string()
    .into_bytes()
}

/// What to do after a failed attempt, given how many attempts were made before it.
pub fn after_failure(schedule: &[i64], attempts_before: i64, now: i64) -> AttemptOutcome {
    let gap = usize::try_from(attempts_before)
        .ok()
        .and_then(|i| schedule.get(i));
    match gap {
        Some(secs) => AttemptOutcome::RetryAt(now.saturating_add(secs.saturating_mul(1000))),
        None => AttemptOutcome::Dead,
    }
}

/// A URL fit for a log line or the admin page: no user info, no query, no fragment.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (s, r),
        None => ("", url),
    };
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = authority.rsplit('@').next().unwrap_or(authority);
    if scheme.is_empty() {
        format!("{host}{path}")
    } else {
        format!("{scheme}://{host}{path}")
    }
}

/// The one HTTP client of the dispatcher: the configured timeout, no redirects.
pub fn http_client(timeout_ms: u64) -> reqwest::Client {
    let timeout = Duration::from_millis(timeout_ms.max(1));
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("wxpay-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Creates the fan-out cursors of endpoints not seen before (they receive events from now on).
/// `run` does this first; tests call it to know from which event on they will be served.
pub async fn register(state: &AppState) -> Result<(), StoreError> {
    state
        .store
        .register_webhook_endpoints(&endpoints(&state.settings), state.now_ms())
        .await
}

pub async fn run(mut ctx: WorkerContext) {
    if ctx.state.settings.webhooks.is_empty() {
        tracing::debug!("no webhooks configured; the webhook dispatcher is idle");
        return;
    }
    let client = http_client(ctx.state.settings.webhook_timeout_ms);
    loop {
        if ctx.stopping() {
            return;
        }
        let worked = match deliver_once(&ctx, &client).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "webhook round failed");
                0
            }
        };
        if worked == 0 && !ctx.idle(POLL).await {
            return;
        }
    }
}

/// One round: fan out new events, lease the due deliveries and send them (concurrently; the
/// store never hands out two events of one order at once). Returns how much was done.
pub async fn deliver_once(
    ctx: &WorkerContext,
    client: &reqwest::Client,
) -> Result<usize, StoreError> {
    let state = &ctx.state;
    let eps = endpoints(&state.settings);
    let fanned = state
        .store
        .fan_out_webhooks(&eps, state.now_ms(), FAN_OUT_BATCH)
        .await?;
    if ctx.stopping() {
        return Ok(0);
    }
    let urls: Vec<String> = eps.into_iter().map(|e| e.url).collect();
    // A request may take the whole timeout; the lease outlives it comfortably.
    let timeout_ms = i64::try_from(state.settings.webhook_timeout_ms).unwrap_or(i64::MAX / 4);
    let lease_ms = LEASE_MS.max(timeout_ms.saturating_mul(2).saturating_add(10_000));
    let due = state
        .store
        .claim_due_webhooks(&ctx.owner, &urls, state.now_ms(), lease_ms, CLAIM_BATCH)
        .await?;
    let n = due.len();
    let mut jobs = tokio::task::JoinSet::new();
    for d in due {
        jobs.spawn(deliver(state.clone(), ctx.owner.clone(), client.clone(), d));
    }
    while let Some(done) = jobs.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "recording a webhook attempt failed"),
            Err(e) => tracing::warn!(error = %e, "a webhook delivery task failed"),
        }
    }
    Ok(n + usize::try_from(fanned.events).unwrap_or(0))
}

/// Sends one leased delivery and records the outcome.
async fn deliver(
    state: Arc<AppState>,
    owner: String,
    client: reqwest::Client,
    d: WebhookDelivery,
) -> Result<(), StoreError> {
    let Some(endpoint) = state.settings.webhooks.iter().find(|w| w.url == d.endpoint) else {
        // Not ours any more (the configuration changed): the lease runs out, someone else sends.
        return Ok(());
    };
    let Some(event) = state.store.get_event(&d.event_id).await? else {
        let now = state.now_ms();
        state
            .store
            .record_webhook_attempt(
                d.id,
                &owner,
                AttemptOutcome::Dead,
                None,
                Some("the event no longer exists"),
                now,
            )
            .await?;
        return Ok(());
    };
    let body = body(&event);
    let t = state.now_ms().div_euclid(1000);
    let signature = signature_header(&endpoint.secret, t, &body);
    let sent = client
        .post(&endpoint.url)
        .header("Content-Type", "application/json")
        .header(EVENT_ID_HEADER, &event.id)
        .header(SIGNATURE_HEADER, signature)
        .body(body)
        .send()
        .await;
    let (status, error) = match sent {
        Ok(resp) => {
            let status = resp.status();
            if status.is_success() {
                (Some(i64::from(status.as_u16())), None)
            } else {
                let text = resp.text().await.unwrap_or_default();
                let snippet = wxpay_store::truncate_utf8(text.trim(), ERROR_BODY_SNIPPET);
                let error = if snippet.is_empty() {
                    format!("HTTP {}", status.as_u16())
                } else {
                    format!("HTTP {}: {snippet}", status.as_u16())
                };
                (Some(i64::from(status.as_u16())), Some(error))
            }
        }
        // Worded without the URL: it may carry a token in its query.
        Err(e) => (None, Some(transport_error(&e).to_string())),
    };
    let now = state.now_ms();
    let outcome = match &error {
        None => AttemptOutcome::Delivered,
        Some(_) => after_failure(&state.settings.webhook_retry_secs, d.attempts, now),
    };
    let recorded = state
        .store
        .record_webhook_attempt(d.id, &owner, outcome, status, error.as_deref(), now)
        .await?;
    if !recorded {
        tracing::debug!(
            delivery = d.id,
            "webhook lease lost before the attempt was recorded"
        );
        return Ok(());
    }
    match outcome {
        AttemptOutcome::Delivered => {
            tracing::debug!(event_id = %event.id, event_type = %event.event_type,
                endpoint = %redact_url(&d.endpoint), attempts = d.attempts + 1, "webhook delivered");
        }
        AttemptOutcome::RetryAt(at) => {
            tracing::info!(event_id = %event.id, event_type = %event.event_type,
                endpoint = %redact_url(&d.endpoint), attempts = d.attempts + 1,
                retry_in_ms = at - now, error = error.as_deref().unwrap_or(""),
                "webhook delivery failed; will retry");
        }
        AttemptOutcome::Dead => {
            tracing::warn!(event_id = %event.id, event_type = %event.event_type,
                endpoint = %redact_url(&d.endpoint), attempts = d.attempts + 1,
                error = error.as_deref().unwrap_or(""),
                "webhook delivery is DEAD after its last retry; redeliver it from the admin API");
        }
    }
    Ok(())
}

fn transport_error(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "broken response"
    } else {
        "request failed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_over_timestamp_dot_body() {
        // echo -n '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec_test
        let sig = signature_header(
            &SecretString::from("whsec_test"),
            1_700_000_000,
            br#"{"a":1}"#,
        );
        let mut mac = HmacSha256::new_from_slice(b"whsec_test").unwrap();
        mac.update(br#"1700000000.{"a":1}"#);
        assert_eq!(
            sig,
            format!(
                "t=1700000000,v1={}",
                hex::encode(mac.finalize().into_bytes())
            )
        );
        assert!(sig.starts_with("t=1700000000,v1="));
        assert_eq!(sig.len(), "t=1700000000,v1=".len() + 64);
    }

    #[test]
    fn the_schedule_is_followed_then_dead() {
        let s = [15, 30];
        assert_eq!(after_failure(&s, 0, 1_000), AttemptOutcome::RetryAt(16_000));
        assert_eq!(after_failure(&s, 1, 1_000), AttemptOutcome::RetryAt(31_000));
        assert_eq!(after_failure(&s, 2, 1_000), AttemptOutcome::Dead);
        assert_eq!(after_failure(&s, -1, 1_000), AttemptOutcome::Dead);
    }

    #[test]
    fn the_default_schedule_lasts_more_than_a_day() {
        let total: i64 = Settings::defaults().webhook_retry_secs.iter().sum();
        assert_eq!(total, 24 * 3600 + 4 * 60);
    }

    #[test]
    fn urls_are_redacted_for_logs() {
        assert_eq!(
            redact_url("https://u:p@shop.example.com/hooks/wxpay?token=s3cret#x"),
            "https://shop.example.com/hooks/wxpay"
        );
        assert_eq!(redact_url("http://127.0.0.1:9/"), "http://127.0.0.1:9/");
    }

    #[test]
    fn the_body_carries_id_type_seconds_and_the_payload() {
        let e = Event {
            seq: 1,
            id: "evt_1".into(),
            event_type: "order.paid".into(),
            order_no: Some("O1".into()),
            payload: r#"{"order_no":"O1","amount_fen":999}"#.into(),
            created_at: 1_700_000_000_123,
        };
        let v: serde_json::Value = serde_json::from_slice(&body(&e)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id": "evt_1", "type": "order.paid", "created_at": 1_700_000_000i64,
                "data": {"order_no": "O1", "amount_fen": 999}})
        );
    }
}
