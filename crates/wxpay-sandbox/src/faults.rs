//! Fault switches (`PUT /sandbox/api/faults`).
//!
//! A [`Faults`] value has a `global` [`FaultSet`] and optional per-merchant sets keyed by mchid
//! (v3) or partner / appid (legacy). A merchant's own set, when present, *replaces* the global set
//! for that merchant. Probabilities are in `0.0..=1.0` and drawn from one `StdRng` seeded by
//! `--seed`, so a run is reproducible for a given sequence of events. Every fault that fires is
//! counted under its name in `GET /sandbox/api/faults` (`counters`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// All fault switches.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Applies to every merchant without its own set.
    pub global: FaultSet,
    /// Per-merchant sets (mchid, partner or appid), replacing `global` for that merchant.
    pub merchants: BTreeMap<String, FaultSet>,
}

impl Faults {
    /// No faults at all.
    pub fn none() -> Self {
        Self::default()
    }
    /// Only a global set.
    pub fn global(set: FaultSet) -> Self {
        Faults {
            global: set,
            merchants: BTreeMap::new(),
        }
    }
    /// The set in force for `merchant` (any of its identifiers).
    pub fn for_merchant<'a>(&'a self, ids: &[&str]) -> &'a FaultSet {
        ids.iter()
            .find_map(|id| self.merchants.get(*id))
            .unwrap_or(&self.global)
    }
}

/// One group of switches.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultSet {
    /// Probability that a notification attempt is not sent at all (it counts as a failed attempt,
    /// so the retry schedule continues).
    pub drop_notification: f64,
    /// Probability that an attempt is sent twice.
    pub duplicate_notification: f64,
    /// Send the two copies of a duplicated attempt at the same time (default: one after the other).
    pub duplicate_concurrently: bool,
    /// Probability that an attempt is held back by `delay_ms` before it is sent.
    pub delay_notification: f64,
    /// Extra delay in real milliseconds (not scaled); 0 means 1000.
    pub delay_ms: u64,
    /// Probability that an attempt is held until the next attempt to the same merchant has been
    /// sent (or `reorder_hold_ms` passed), so that it arrives out of order.
    pub reorder_notification: f64,
    /// Longest hold of a reordered attempt, real milliseconds; 0 means 2000.
    pub reorder_hold_ms: u64,
    /// Probability that a forged copy (valid shape, signed with a wrong key) is sent before the
    /// genuine attempt. The merchant must reject it; its reply never stops the retries.
    pub forge_notification: f64,
    /// Probability (v3 only) that a SIGNTEST probe (`Wechatpay-Signature: WECHATPAY/SIGNTEST/…`)
    /// is sent before the genuine attempt.
    pub signtest_probe: f64,
    /// Endpoint faults, first match wins.
    pub endpoints: Vec<EndpointFault>,
    /// Probability that a legacy API call finds its access_token invalidated early (→ 42001).
    pub token_early_invalidation: f64,
    /// `/cgi-bin/token` answers 45009 (daily quota reached) while set.
    pub token_quota_exhausted: bool,
    /// v3 refunds answer `403 NOT_ENOUGH` (insufficient merchant balance) while set.
    pub refund_not_enough: bool,
    /// Probability (v3) that a signed API response carries a SIGNTEST probe signature
    /// (`Wechatpay-Signature: WECHATPAY/SIGNTEST/…`) instead of a valid one.
    pub signtest_response: f64,
}

/// Make one endpoint fail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointFault {
    /// Path prefix, e.g. `/pay/genprepay`, `/v3/pay/transactions`, `/cgi-bin/token`.
    pub path: String,
    /// Only this HTTP method (any when absent).
    #[serde(default)]
    pub method: Option<String>,
    /// What happens.
    pub kind: EndpointFaultKind,
    /// Probability per matching request (default 1).
    #[serde(default = "one")]
    pub probability: f64,
    /// For `HANG`: how long, real milliseconds (default 30000, then a 500 SYSTEM_ERROR).
    #[serde(default)]
    pub hang_ms: Option<u64>,
}

fn one() -> f64 {
    1.0
}

/// The failure an endpoint fault produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EndpointFaultKind {
    /// `500` with `SYSTEM_ERROR` (legacy: `{"errcode":-1,"errmsg":"system error"}`).
    SystemError,
    /// `429` with `FREQUENCY_LIMITED` (legacy: `{"errcode":45011,...}`).
    FrequencyLimited,
    /// Answer nothing for `hang_ms`, then `500 SYSTEM_ERROR`.
    Hang,
}

impl EndpointFaultKind {
    pub(crate) fn counter(self) -> &'static str {
        match self {
            EndpointFaultKind::SystemError => "endpoint_system_error",
            EndpointFaultKind::FrequencyLimited => "endpoint_frequency_limited",
            EndpointFaultKind::Hang => "endpoint_hang",
        }
    }
}

/// Names of the counters (a counter appears in the map once it fired).
pub mod counter {
    pub const DROP: &str = "drop_notification";
    pub const DUPLICATE: &str = "duplicate_notification";
    pub const DELAY: &str = "delay_notification";
    pub const REORDER: &str = "reorder_notification";
    pub const FORGE: &str = "forge_notification";
    pub const SIGNTEST: &str = "signtest_probe";
    pub const TOKEN_EARLY: &str = "token_early_invalidation";
    pub const TOKEN_QUOTA: &str = "token_quota_exhausted";
    pub const REFUND_NOT_ENOUGH: &str = "refund_not_enough";
    pub const SIGNTEST_RESPONSE: &str = "signtest_response";
}

/// `GET /sandbox/api/faults`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultStatus {
    pub faults: Faults,
    pub counters: BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merchant_set_replaces_global() {
        let mut f = Faults::global(FaultSet {
            drop_notification: 1.0,
            ..Default::default()
        });
        f.merchants.insert("m1".into(), FaultSet::default());
        assert_eq!(f.for_merchant(&["m1"]).drop_notification, 0.0);
        assert_eq!(f.for_merchant(&["m2"]).drop_notification, 1.0);
    }

    #[test]
    fn json_shape() {
        let f: Faults = serde_json::from_str(
            r#"{"global":{"endpoints":[{"path":"/pay/genprepay","kind":"SYSTEM_ERROR"}]}}"#,
        )
        .unwrap();
        assert_eq!(f.global.endpoints[0].probability, 1.0);
        assert!(serde_json::from_str::<Faults>(r#"{"global":{"nope":1}}"#).is_err());
    }
}
