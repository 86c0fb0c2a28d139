//! The sandbox's truth: tokens, orders, refunds, delivery records, fault switches.
//! Everything lives behind one `std::sync::Mutex` that is never held across an `.await`.

use std::collections::{BTreeMap, HashMap};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::faults::Faults;
use crate::notify::DeliveryRecord;

/// Which protocol generation an order belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Generation {
    Legacy,
    V3,
}

/// Trade state, named as APIv3 names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TradeState {
    Notpay,
    Success,
    Closed,
    Refund,
}

impl TradeState {
    pub fn as_str(self) -> &'static str {
        match self {
            TradeState::Notpay => "NOTPAY",
            TradeState::Success => "SUCCESS",
            TradeState::Closed => "CLOSED",
            TradeState::Refund => "REFUND",
        }
    }
    pub fn is_paid(self) -> bool {
        matches!(self, TradeState::Success | TradeState::Refund)
    }
}

/// Refund state (APIv3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RefundStatus {
    Processing,
    Success,
    Closed,
    Abnormal,
}

impl RefundStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Processing => "PROCESSING",
            RefundStatus::Success => "SUCCESS",
            RefundStatus::Closed => "CLOSED",
            RefundStatus::Abnormal => "ABNORMAL",
        }
    }
}

/// Legacy-only order details.
#[derive(Clone, Debug)]
pub(crate) struct LegacyOrder {
    /// The decoded package fields (without `sign`).
    pub params: BTreeMap<String, String>,
    pub charset: String,
    pub traceid: String,
}

#[derive(Clone, Debug)]
pub(crate) struct Order {
    pub generation: Generation,
    /// partner (legacy) or mchid (v3).
    pub merchant: String,
    pub appid: String,
    pub out_trade_no: String,
    pub trade_type: String,
    pub description: String,
    pub attach: Option<String>,
    pub total: i64,
    pub notify_url: String,
    pub prepay_id: String,
    pub prepay_expires_at: i64,
    pub created_at: i64,
    /// After this the order can no longer be paid.
    pub pay_deadline: i64,
    pub state: TradeState,
    pub user_cancelled: bool,
    pub transaction_id: Option<String>,
    pub success_time: Option<i64>,
    /// The payer (APP: made up per appid when paid; JSAPI: from the request).
    pub openid: Option<String>,
    /// What must be identical when the same out_trade_no is ordered again.
    pub fingerprint: String,
    pub legacy: Option<LegacyOrder>,
    pub scene_info: Option<serde_json::Value>,
    pub code_url: Option<String>,
    pub refunds: Vec<usize>,
}

#[derive(Clone, Debug)]
pub(crate) struct Refund {
    pub mchid: String,
    pub out_refund_no: String,
    pub refund_id: String,
    pub order: usize,
    pub amount: i64,
    pub notify_url: Option<String>,
    pub status: RefundStatus,
    pub create_time: i64,
    pub success_time: Option<i64>,
    pub funds_account: Option<String>,
    pub fingerprint: String,
}

/// What the control API shows about an order (`GET /sandbox/api/orders/{id}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderView {
    pub generation: Generation,
    /// partner (legacy) or mchid (v3).
    pub merchant: String,
    pub appid: String,
    pub out_trade_no: String,
    /// `APP`, `JSAPI` or `NATIVE`.
    pub trade_type: String,
    pub prepay_id: String,
    pub prepay_expires_at: i64,
    /// `NOTPAY`, `SUCCESS`, `CLOSED` or `REFUND`.
    pub state: String,
    /// The user pressed "Cancel" on the cashier (the order stays NOTPAY, as at WeChat).
    pub user_cancelled: bool,
    /// Total in fen.
    pub amount: i64,
    pub description: String,
    pub attach: Option<String>,
    pub notify_url: String,
    pub transaction_id: Option<String>,
    pub created_at: i64,
    pub success_time: Option<i64>,
    pub openid: Option<String>,
    pub code_url: Option<String>,
    pub refunds: Vec<RefundView>,
}

/// A refund as the control API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundView {
    pub out_refund_no: String,
    pub refund_id: String,
    /// Fen.
    pub amount: i64,
    /// `PROCESSING`, `SUCCESS`, `CLOSED` or `ABNORMAL`.
    pub status: String,
    pub create_time: i64,
    pub success_time: Option<i64>,
}

#[derive(Clone, Debug)]
pub(crate) struct TokenEntry {
    pub appid: String,
    pub expires_at: i64,
    /// Set when superseded (end of overlap) or invalidated.
    pub revoked_at: Option<i64>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct TokenBook {
    pub current: Option<String>,
    pub day: i64,
    pub issued_today: u32,
    /// Every call of `/cgi-bin/token` for this appid (successful or not).
    pub fetch_count: u64,
}

/// How refunds end (`PUT /sandbox/api/refund-rule`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefundRule {
    /// `SUCCESS`, `ABNORMAL`, `CLOSED`, or `MANUAL` (stay PROCESSING until
    /// `POST /sandbox/api/refunds/{out_refund_no}/complete`).
    #[serde(default = "default_outcome")]
    pub outcome: String,
    /// Seconds (scaled by time_scale) from acceptance to the outcome.
    #[serde(default = "default_refund_delay")]
    pub delay_secs: f64,
}

fn default_outcome() -> String {
    "SUCCESS".into()
}
fn default_refund_delay() -> f64 {
    5.0
}

impl Default for RefundRule {
    fn default() -> Self {
        RefundRule {
            outcome: default_outcome(),
            delay_secs: default_refund_delay(),
        }
    }
}

pub(crate) struct State {
    pub tokens: HashMap<String, TokenBook>,
    pub token_index: HashMap<String, TokenEntry>,
    pub orders: Vec<Order>,
    pub by_prepay: HashMap<String, usize>,
    pub by_out_trade_no: HashMap<(String, String), usize>,
    pub by_transaction: HashMap<String, usize>,
    pub refunds: Vec<Refund>,
    pub by_out_refund_no: HashMap<(String, String), usize>,
    pub deliveries: Vec<DeliveryRecord>,
    pub faults: Faults,
    pub counters: BTreeMap<String, u64>,
    pub fault_rng: StdRng,
    pub id_rng: StdRng,
    pub seq: u64,
    /// Reordered attempts waiting for the next attempt to the same merchant.
    pub held: HashMap<String, Vec<oneshot::Sender<()>>>,
    pub refund_rule: RefundRule,
    pub refund_rules: HashMap<String, RefundRule>,
    pub bills: HashMap<String, crate::v3::bill::BillFile>,
}

impl State {
    pub fn new(seed: u64) -> Self {
        State {
            tokens: HashMap::new(),
            token_index: HashMap::new(),
            orders: Vec::new(),
            by_prepay: HashMap::new(),
            by_out_trade_no: HashMap::new(),
            by_transaction: HashMap::new(),
            refunds: Vec::new(),
            by_out_refund_no: HashMap::new(),
            deliveries: Vec::new(),
            faults: Faults::default(),
            counters: BTreeMap::new(),
            fault_rng: StdRng::seed_from_u64(seed),
            id_rng: StdRng::seed_from_u64(seed ^ 0x05EE_D1D5_u64.rotate_left(17)),
            seq: 0,
            held: HashMap::new(),
            refund_rule: RefundRule::default(),
            refund_rules: HashMap::new(),
            bills: HashMap::new(),
        }
    }

    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub fn count(&mut self, name: &str) {
        *self.counters.entry(name.to_string()).or_insert(0) += 1;
    }

    /// Draw a fault with probability `p`.
    pub fn draw(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        if p >= 1.0 {
            return true;
        }
        self.fault_rng.random_bool(p)
    }

    /// Random characters from `alphabet`.
    pub fn random_str(&mut self, len: usize, alphabet: &[u8]) -> String {
        (0..len)
            .map(|_| alphabet[self.id_rng.random_range(0..alphabet.len())] as char)
            .collect()
    }
    pub fn random_hex(&mut self, len: usize) -> String {
        self.random_str(len, b"0123456789abcdef")
    }
    pub fn random_digits(&mut self, len: usize) -> String {
        self.random_str(len, b"0123456789")
    }
    pub fn random_alnum(&mut self, len: usize) -> String {
        self.random_str(
            len,
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
        )
    }
    pub fn random_upper(&mut self, len: usize) -> String {
        self.random_str(len, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    }

    pub fn order_view(&self, idx: usize) -> OrderView {
        let o = &self.orders[idx];
        OrderView {
            generation: o.generation,
            merchant: o.merchant.clone(),
            appid: o.appid.clone(),
            out_trade_no: o.out_trade_no.clone(),
            trade_type: o.trade_type.clone(),
            prepay_id: o.prepay_id.clone(),
            prepay_expires_at: o.prepay_expires_at,
            state: o.state.as_str().to_string(),
            user_cancelled: o.user_cancelled,
            amount: o.total,
            description: o.description.clone(),
            attach: o.attach.clone(),
            notify_url: o.notify_url.clone(),
            transaction_id: o.transaction_id.clone(),
            created_at: o.created_at,
            success_time: o.success_time,
            openid: o.openid.clone(),
            code_url: o.code_url.clone(),
            refunds: o.refunds.iter().map(|&r| self.refund_view(r)).collect(),
        }
    }

    pub fn refund_view(&self, idx: usize) -> RefundView {
        let r = &self.refunds[idx];
        RefundView {
            out_refund_no: r.out_refund_no.clone(),
            refund_id: r.refund_id.clone(),
            amount: r.amount,
            status: r.status.as_str().to_string(),
            create_time: r.create_time,
            success_time: r.success_time,
        }
    }

    /// Find an order by prepay id, transaction id or out_trade_no (first merchant that has it).
    pub fn find_order(&self, id: &str) -> Option<usize> {
        if let Some(&i) = self.by_prepay.get(id) {
            return Some(i);
        }
        if let Some(&i) = self.by_transaction.get(id) {
            return Some(i);
        }
        self.orders.iter().position(|o| o.out_trade_no == id)
    }

    /// Insert a fresh order and index it.
    pub fn insert_order(&mut self, o: Order) -> usize {
        let idx = self.orders.len();
        self.by_prepay.insert(o.prepay_id.clone(), idx);
        self.by_out_trade_no
            .insert((o.merchant.clone(), o.out_trade_no.clone()), idx);
        self.orders.push(o);
        idx
    }

    /// Refunded amount that still counts (everything but CLOSED refunds).
    pub fn refunded_total(&self, order: usize) -> i64 {
        self.orders[order]
            .refunds
            .iter()
            .map(|&r| &self.refunds[r])
            .filter(|r| r.status != RefundStatus::Closed)
            .map(|r| r.amount)
            .sum()
    }

    /// Release every reordered attempt held for `merchant`.
    pub fn release_held(&mut self, merchant: &str) {
        if let Some(list) = self.held.remove(merchant) {
            for tx in list {
                let _ = tx.send(());
            }
        }
    }
}
