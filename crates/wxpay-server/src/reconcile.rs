//! Daily reconciliation against WeChat Pay's trade bill (APIv3, PROTOCOL.md B.11).
//!
//! For a merchant and a Beijing calendar day: download the `ALL` trade bill (SHA-1 checked by the
//! gateway), parse it exactly (yuan → fen without floats), and match it three ways against our
//! payment attempts (by `out_trade_no`) and refunds (by `out_refund_no`):
//!
//! - **matched**: in the bill and successful with us, same amount and transaction;
//! - **missing here**: in the bill, not successful with us. WeChat is asked (a verified query) and
//!   what it says goes through the normal transition (`payments::record_success` with source
//!   `query`, `refunds::apply_status`); repaired when that records it, unresolved otherwise;
//! - **missing at WeChat**: successful with us that day, absent from the bill. A verified query
//!   that confirms the same transaction (or refund) means it sits in a neighbouring day's bill
//!   (paid at 23:59:59, notified after midnight; or repaired by an earlier reconciliation): noted
//!   as `other_day`, not a difference. Otherwise unresolved;
//! - **amount** or **state mismatch**: in both, disagreeing (amount in fen, transaction id, a
//!   refund we closed that WeChat paid out): unresolved.
//!
//! The report is stored (`reconciliation_reports`) with counts, sums and every difference as
//! JSON. The CLI (`wxpay reconcile`) prints it and exits non-zero when something is unresolved;
//! the daily worker (`workers::reconciler`) runs it for yesterday.

use crate::configuration::{ProtocolSetting, Settings};
use crate::startup::AppState;
use crate::{payments, refunds};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt::Write as _;
use wxpay_gateway::{Gateway, GatewayError, Protocol, RefundStatus, TradeStatus};
use wxpay_proto::Fen;
use wxpay_proto::bill::{TradeBill, TradeBillRow, parse_trade_bill};
use wxpay_store::reconcile::{
    NewReconciliationReport, REPORT_BALANCED, REPORT_REPAIRED, REPORT_UNRESOLVED,
    ReconciliationCounts, ReconciliationReport, beijing_date_of_ms,
};
use wxpay_store::{AttemptState, MarkPaid, PaidSource, StoreError};

/// What kind of difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DifferenceKind {
    MissingHere,
    MissingAtWechat,
    AmountMismatch,
    StateMismatch,
    /// Not a difference: ours that day, in WeChat's bill of another day (confirmed by a query).
    OtherDay,
}

impl DifferenceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DifferenceKind::MissingHere => "missing_here",
            DifferenceKind::MissingAtWechat => "missing_at_wechat",
            DifferenceKind::AmountMismatch => "amount_mismatch",
            DifferenceKind::StateMismatch => "state_mismatch",
            DifferenceKind::OtherDay => "other_day",
        }
    }
}

/// A payment or a refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    Payment,
    Refund,
}

/// One difference between the bill and our books.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    pub kind: DifferenceKind,
    pub record: Record,
    pub out_trade_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_refund_no: Option<String>,
    /// WeChat's transaction id (of the bill row, else ours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    /// The amount in the bill, in fen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bill_fen: Option<i64>,
    /// Our amount, in fen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub our_fen: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bill_state: Option<String>,
    /// Our state when reconciliation found it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub our_state: Option<String>,
    /// True when nothing is left for a person to do (repaired, or only another day's bill).
    pub resolved: bool,
    /// What was found and done, in words.
    pub note: String,
}

impl Difference {
    fn new(kind: DifferenceKind, record: Record, out_trade_no: &str) -> Self {
        Difference {
            kind,
            record,
            out_trade_no: out_trade_no.to_string(),
            out_refund_no: None,
            transaction_id: None,
            bill_fen: None,
            our_fen: None,
            bill_state: None,
            our_state: None,
            resolved: false,
            note: String::new(),
        }
    }
}

/// A stored reconciliation report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub id: i64,
    pub merchant_id: String,
    /// `YYYY-MM-DD`, a Beijing calendar day.
    pub bill_date: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// BALANCED, REPAIRED or UNRESOLVED.
    pub status: String,
    pub counts: ReconciliationCounts,
    pub differences: Vec<Difference>,
}

impl Report {
    /// Differences that need a person.
    pub fn unresolved(&self) -> i64 {
        self.counts.unresolved
    }

    /// A stored report with its differences decoded.
    pub fn from_stored(r: ReconciliationReport) -> Result<Report, serde_json::Error> {
        Ok(Report {
            differences: serde_json::from_str(&r.differences_json)?,
            id: r.id,
            merchant_id: r.merchant_id,
            bill_date: r.bill_date,
            created_at: r.created_at,
            status: r.status,
            counts: r.counts,
        })
    }
}

/// Why a day could not be reconciled.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("no merchant {0:?} is configured")]
    UnknownMerchant(String),
    #[error(
        "merchant {0} speaks the 2014 protocol, which has no bill API: reconcile it in the merchant platform"
    )]
    NoBillApi(String),
    #[error("invalid date: {0}")]
    InvalidDate(String),
    #[error("the Beijing day {0} is not over yet; WeChat publishes its bill the next morning")]
    DayNotOver(String),
    #[error("downloading the trade bill failed: {0}")]
    Download(GatewayError),
    #[error("the trade bill does not parse: {0}")]
    Bill(wxpay_proto::ProtoError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the report cannot be encoded: {0}")]
    Encode(#[from] serde_json::Error),
}

impl ReconcileError {
    /// True when waiting and trying again may help (bill not ready, WeChat or the database
    /// unreachable).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ReconcileError::Download(_) | ReconcileError::Store(_) | ReconcileError::DayNotOver(_)
        )
    }
}

/// Parses a `YYYY-MM-DD` date.
pub fn parse_date(date: &str) -> Result<NaiveDate, ReconcileError> {
    wxpay_store::reconcile::parse_bill_date(date)
        .map_err(|_| ReconcileError::InvalidDate(format!("{date:?} is not YYYY-MM-DD")))
}

fn is_refund_row(r: &TradeBillRow) -> bool {
    r.trade_state == "REFUND" || (!r.out_refund_no.is_empty() && r.out_refund_no != "0")
}

/// The order amount of a payment row (订单金额; 应结订单金额 when the bill leaves it empty).
fn bill_payment_fen(r: &TradeBillRow) -> i64 {
    if r.order_amount != Fen::ZERO {
        r.order_amount.get()
    } else {
        r.settlement_total.get()
    }
}

/// The amount of a refund row (申请退款金额; 退款金额 when the bill leaves it empty).
fn bill_refund_fen(r: &TradeBillRow) -> i64 {
    if r.requested_refund != Fen::ZERO {
        r.requested_refund.get()
    } else {
        r.refund_amount.get()
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty() && s != "0").then(|| s.to_string())
}

fn trade_status_text(t: &TradeStatus) -> String {
    match t {
        TradeStatus::Paid {
            transaction_id,
            amount,
        } => format!("SUCCESS ({transaction_id}, {} fen)", amount.get()),
        TradeStatus::Refunded {
            transaction_id,
            amount,
        } => format!("REFUND ({transaction_id}, {} fen)", amount.get()),
        TradeStatus::NotPaid => "NOTPAY".into(),
        TradeStatus::Closed => "CLOSED".into(),
        TradeStatus::NotFound => "ORDER_NOT_EXIST".into(),
        TradeStatus::Other(s) => s.clone(),
    }
}

/// Reconciles `merchant`'s Beijing day `date` against WeChat's trade bill and stores the report.
/// Repairs what a verified query proves we missed.
pub async fn reconcile(
    state: &AppState,
    merchant: &str,
    date: NaiveDate,
) -> Result<Report, ReconcileError> {
    let gw = state
        .gateways
        .get(merchant)
        .cloned()
        .ok_or_else(|| ReconcileError::UnknownMerchant(merchant.to_string()))?;
    if gw.protocol() == Protocol::Legacy {
        return Err(ReconcileError::NoBillApi(merchant.to_string()));
    }
    let bill_date = date.format("%Y-%m-%d").to_string();
    if date >= beijing_date_of_ms(state.now_ms()) {
        return Err(ReconcileError::DayNotOver(bill_date));
    }
    let bill = match gw
        .download_trade_bill(&bill_date)
        .await
        .map_err(ReconcileError::Download)?
    {
        Some(text) => parse_trade_bill(&text).map_err(ReconcileError::Bill)?,
        None => TradeBill::default(),
    };
    let mut run = Run {
        state,
        merchant,
        gw: gw.as_ref(),
        counts: ReconciliationCounts {
            bill_rows: bill.rows.len() as i64,
            ..Default::default()
        },
        differences: Vec::new(),
    };
    let (refund_rows, payment_rows): (Vec<&TradeBillRow>, Vec<&TradeBillRow>) =
        bill.rows.iter().partition(|r| is_refund_row(r));
    run.payments(&payment_rows, date).await?;
    run.refunds(&refund_rows, date).await?;

    let Run {
        counts,
        differences,
        ..
    } = run;
    let any_difference = differences
        .iter()
        .any(|d| d.kind != DifferenceKind::OtherDay);
    let status = if counts.unresolved > 0 {
        REPORT_UNRESOLVED
    } else if any_difference {
        REPORT_REPAIRED
    } else {
        REPORT_BALANCED
    };
    let stored = state
        .store
        .insert_reconciliation_report(
            &NewReconciliationReport {
                merchant_id: merchant.to_string(),
                bill_date: bill_date.clone(),
                status: status.to_string(),
                counts,
                differences_json: serde_json::to_string(&differences)?,
            },
            state.now_ms(),
        )
        .await?;
    let report = Report::from_stored(stored)?;
    for d in &report.differences {
        metrics::counter!(
            "reconciliation_differences_total",
            "merchant" => merchant.to_string(),
            "kind" => d.kind.as_str(),
            "resolved" => if d.resolved { "true" } else { "false" },
        )
        .increment(1);
    }
    metrics::gauge!("reconciliation_unresolved", "merchant" => merchant.to_string())
        .set(report.unresolved() as f64);
    if report.unresolved() > 0 {
        tracing::warn!(merchant, %bill_date, report = report.id, unresolved = report.unresolved(), "reconciliation found unresolved differences");
    } else {
        tracing::info!(merchant, %bill_date, report = report.id, status = %report.status, matched = report.counts.matched, repaired = report.counts.repaired, "reconciliation done");
    }
    Ok(report)
}

/// One reconciliation in progress.
struct Run<'a> {
    state: &'a AppState,
    merchant: &'a str,
    gw: &'a dyn Gateway,
    counts: ReconciliationCounts,
    differences: Vec<Difference>,
}

impl Run<'_> {
    fn push(&mut self, d: Difference) {
        let c = &mut self.counts;
        match d.kind {
            DifferenceKind::MissingHere => {
                c.missing_here += 1;
                if d.resolved {
                    c.repaired += 1;
                }
            }
            DifferenceKind::MissingAtWechat => c.missing_at_wechat += 1,
            DifferenceKind::AmountMismatch => c.amount_mismatches += 1,
            DifferenceKind::StateMismatch => c.state_mismatches += 1,
            DifferenceKind::OtherDay => c.other_day += 1,
        }
        if !d.resolved {
            c.unresolved += 1;
        }
        self.differences.push(d);
    }

    async fn payments(
        &mut self,
        rows: &[&TradeBillRow],
        date: NaiveDate,
    ) -> Result<(), ReconcileError> {
        let store = &self.state.store;
        let nos: Vec<String> = rows
            .iter()
            .map(|r| r.out_trade_no.clone())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let ours = store.attempts_by_out_trade_no(self.merchant, &nos).await?;
        let mut seen = HashSet::new();
        for row in rows {
            let no = row.out_trade_no.as_str();
            let bill_fen = bill_payment_fen(row);
            let mut d = Difference::new(DifferenceKind::MissingHere, Record::Payment, no);
            d.transaction_id = non_empty(&row.transaction_id);
            d.bill_fen = Some(bill_fen);
            d.bill_state = Some(row.trade_state.clone());
            if !seen.insert(no) {
                d.kind = DifferenceKind::StateMismatch;
                d.note = "the bill lists this payment more than once".into();
                self.push(d);
                continue;
            }
            if row.trade_state != "SUCCESS" {
                d.kind = DifferenceKind::StateMismatch;
                d.our_state = ours.get(no).map(|a| a.state.as_str().to_string());
                d.note = format!("a bill row in state {}", row.trade_state);
                self.push(d);
                continue;
            }
            self.counts.bill_payments += 1;
            self.counts.bill_payments_fen += bill_fen;
            let Some(a) = ours.get(no) else {
                d.note = "no payment attempt here has this out_trade_no".into();
                self.push(d);
                continue;
            };
            d.our_state = Some(a.state.as_str().to_string());
            if a.state == AttemptState::Succeeded {
                let paid = a.paid_fen.unwrap_or(a.amount_fen);
                d.our_fen = Some(paid);
                if paid != bill_fen {
                    d.kind = DifferenceKind::AmountMismatch;
                    d.note = format!("the bill says {bill_fen} fen, we recorded {paid} fen");
                    self.push(d);
                } else if let (Some(theirs), Some(mine)) = (&d.transaction_id, &a.transaction_id)
                    && theirs != mine
                {
                    d.kind = DifferenceKind::StateMismatch;
                    d.note = format!("we recorded transaction {mine}, the bill says {theirs}");
                    self.push(d);
                } else {
                    self.counts.matched += 1;
                }
                continue;
            }
            d.our_fen = Some(a.amount_fen);
            self.repair_payment(&mut d).await;
            self.push(d);
        }
        // Ours that day, absent from the bill.
        let billed: HashSet<&str> = rows.iter().map(|r| r.out_trade_no.as_str()).collect();
        for a in store.succeeded_attempts_on_day(self.merchant, date).await? {
            let paid = a.paid_fen.unwrap_or(a.amount_fen);
            self.counts.our_payments += 1;
            self.counts.our_payments_fen += paid;
            if billed.contains(a.out_trade_no.as_str()) {
                continue;
            }
            let mut d = Difference::new(
                DifferenceKind::MissingAtWechat,
                Record::Payment,
                &a.out_trade_no,
            );
            d.transaction_id = a.transaction_id.clone();
            d.our_fen = Some(paid);
            d.our_state = Some(a.state.as_str().to_string());
            match self.gw.query(&a.out_trade_no).await {
                Ok(
                    TradeStatus::Paid {
                        transaction_id,
                        amount,
                    }
                    | TradeStatus::Refunded {
                        transaction_id,
                        amount,
                    },
                ) if Some(&transaction_id) == a.transaction_id.as_ref() && amount.get() == paid => {
                    d.kind = DifferenceKind::OtherDay;
                    d.resolved = true;
                    d.note = "WeChat confirms the payment; it is in another day's bill".into();
                }
                Ok(other) => {
                    d.note = format!(
                        "not in WeChat's bill, and WeChat's query says {}",
                        trade_status_text(&other)
                    );
                }
                Err(e) => d.note = format!("not in WeChat's bill; the query failed: {e}"),
            }
            self.push(d);
        }
        Ok(())
    }

    /// In the bill, not SUCCEEDED here: ask WeChat and record what a verified query says.
    async fn repair_payment(&mut self, d: &mut Difference) {
        let no = d.out_trade_no.clone();
        let (transaction_id, amount) = match self.gw.query(&no).await {
            Ok(
                TradeStatus::Paid {
                    transaction_id,
                    amount,
                }
                | TradeStatus::Refunded {
                    transaction_id,
                    amount,
                },
            ) => (transaction_id, amount),
            Ok(other) => {
                d.note = format!(
                    "the bill lists it paid, but WeChat's query says {}",
                    trade_status_text(&other)
                );
                return;
            }
            Err(e) => {
                d.note = format!("not repaired: the query failed: {e}");
                return;
            }
        };
        match payments::record_success(
            self.state,
            self.merchant,
            &no,
            &transaction_id,
            amount.get(),
            PaidSource::Query,
            None,
        )
        .await
        {
            Ok(MarkPaid::Paid { order_no }) => {
                d.resolved = true;
                d.note = format!("repaired: order {order_no} is PAID from a verified query");
            }
            Ok(MarkPaid::AlreadyRecorded { order_no }) => {
                d.resolved = true;
                d.note = format!("repaired: order {order_no}'s payment was recorded meanwhile");
            }
            Ok(MarkPaid::AmountMismatch {
                order_no,
                expected_fen,
                got_fen,
            }) => {
                d.note = format!(
                    "not repaired: WeChat collected {got_fen} fen for order {order_no}, which expects {expected_fen} fen (AMOUNT_MISMATCH anomaly)"
                );
            }
            Ok(MarkPaid::PaidAfterClose { order_no }) => {
                d.note = format!(
                    "recorded, but order {order_no} had been closed (PAID_AFTER_CLOSE anomaly: refund or review)"
                );
            }
            Ok(MarkPaid::DuplicatePayment { order_no }) => {
                d.note = format!(
                    "recorded, but order {order_no} was already paid by another attempt (DUPLICATE_PAYMENT anomaly: refund)"
                );
            }
            Ok(MarkPaid::UnknownAttempt) => {
                d.note = "not repaired: the attempt is not this merchant's".into();
            }
            Err(e) => d.note = format!("not repaired: {}", e.message),
        }
    }

    async fn refunds(
        &mut self,
        rows: &[&TradeBillRow],
        date: NaiveDate,
    ) -> Result<(), ReconcileError> {
        let store = &self.state.store;
        // Refund rows that are not SUCCESS (when a bill carries them) prove nothing either way.
        let rows: Vec<&TradeBillRow> = rows
            .iter()
            .copied()
            .filter(|r| r.refund_status.is_empty() || r.refund_status == "SUCCESS")
            .collect();
        let nos: Vec<String> = rows
            .iter()
            .map(|r| r.out_refund_no.clone())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let ours = store.refunds_by_out_refund_no(self.merchant, &nos).await?;
        let mut seen = HashSet::new();
        for row in &rows {
            let no = row.out_refund_no.as_str();
            let bill_fen = bill_refund_fen(row);
            let mut d = Difference::new(
                DifferenceKind::MissingHere,
                Record::Refund,
                &row.out_trade_no,
            );
            d.out_refund_no = Some(no.to_string());
            d.transaction_id = non_empty(&row.transaction_id);
            d.bill_fen = Some(bill_fen);
            d.bill_state = Some("SUCCESS".into());
            if !seen.insert(no) {
                d.kind = DifferenceKind::StateMismatch;
                d.note = "the bill lists this refund more than once".into();
                self.push(d);
                continue;
            }
            self.counts.bill_refunds += 1;
            self.counts.bill_refunds_fen += bill_fen;
            let Some(r) = ours.get(no) else {
                d.note = "no refund here has this out_refund_no (made outside wxpay?)".into();
                self.push(d);
                continue;
            };
            d.our_fen = Some(r.amount_fen);
            d.our_state = Some(r.state.clone());
            if r.amount_fen != bill_fen {
                d.kind = DifferenceKind::AmountMismatch;
                d.note = format!(
                    "the bill says {bill_fen} fen, we recorded {} fen",
                    r.amount_fen
                );
                self.push(d);
                continue;
            }
            if r.out_trade_no != row.out_trade_no {
                d.kind = DifferenceKind::StateMismatch;
                d.note = format!(
                    "we recorded this refund against {}, the bill against {}",
                    r.out_trade_no, row.out_trade_no
                );
                self.push(d);
                continue;
            }
            if r.state == "SUCCESS" {
                self.counts.matched += 1;
                continue;
            }
            self.repair_refund(&mut d, r.amount_fen).await;
            self.push(d);
        }
        // Ours that day, absent from the bill.
        let billed: HashSet<&str> = rows.iter().map(|r| r.out_refund_no.as_str()).collect();
        for r in store.succeeded_refunds_on_day(self.merchant, date).await? {
            self.counts.our_refunds += 1;
            self.counts.our_refunds_fen += r.amount_fen;
            if billed.contains(r.out_refund_no.as_str()) {
                continue;
            }
            let mut d = Difference::new(
                DifferenceKind::MissingAtWechat,
                Record::Refund,
                &r.out_trade_no,
            );
            d.out_refund_no = Some(r.out_refund_no.clone());
            d.our_fen = Some(r.amount_fen);
            d.our_state = Some(r.state.clone());
            match self.gw.query_refund(&r.out_refund_no).await {
                Ok(st) if st.status == "SUCCESS" && st.refund.get() == r.amount_fen => {
                    d.kind = DifferenceKind::OtherDay;
                    d.resolved = true;
                    d.note = "WeChat confirms the refund; it is in another day's bill".into();
                }
                Ok(st) => {
                    d.note = format!(
                        "not in WeChat's bill, and WeChat's query says {} ({} fen)",
                        st.status,
                        st.refund.get()
                    );
                }
                Err(e) => d.note = format!("not in WeChat's bill; the query failed: {e}"),
            }
            self.push(d);
        }
        Ok(())
    }

    /// In the bill as SUCCESS, not SUCCESS here: ask WeChat and apply what it says.
    async fn repair_refund(&mut self, d: &mut Difference, our_fen: i64) {
        let no = d.out_refund_no.clone().unwrap_or_default();
        let st: RefundStatus = match self.gw.query_refund(&no).await {
            Ok(st) => st,
            Err(e) => {
                d.note = format!("not repaired: the refund query failed: {e}");
                return;
            }
        };
        if st.status != "SUCCESS" {
            d.kind = DifferenceKind::StateMismatch;
            d.note = format!(
                "the bill lists it refunded, but WeChat's query says {}",
                st.status
            );
            return;
        }
        if st.refund.get() != our_fen {
            d.kind = DifferenceKind::AmountMismatch;
            d.note = format!(
                "WeChat refunded {} fen, we asked for {our_fen} fen: not applied",
                st.refund.get()
            );
            return;
        }
        if let Err(e) = refunds::apply_status(self.state, self.merchant, &st).await {
            d.note = format!("not repaired: {}", e.message);
            return;
        }
        match self.state.store.get_refund(&no).await {
            Ok(Some(r)) if r.state == "SUCCESS" => {
                d.resolved = true;
                d.note = format!(
                    "repaired: refund of order {} is SUCCESS from a verified query",
                    r.order_no
                );
            }
            Ok(Some(r)) => {
                d.kind = DifferenceKind::StateMismatch;
                d.note = format!(
                    "WeChat refunded it, but our refund is {} and cannot become SUCCESS: review",
                    r.state
                );
            }
            Ok(None) => d.note = "not repaired: the refund disappeared".into(),
            Err(e) => d.note = format!("not repaired: {e}"),
        }
    }
}

// -------------------------------------------------------------------------------------------
// The command line: `wxpay reconcile --merchant ID --date YYYY-MM-DD [--config wxpay.toml]`

/// Exit code: nothing unresolved.
pub const EXIT_OK: u8 = 0;
/// Exit code: the report has unresolved differences (or the run failed: WeChat or the
/// database could not be reached, the bill did not parse).
pub const EXIT_UNRESOLVED: u8 = 1;
/// Exit code: this merchant or date cannot be reconciled (a 2014-protocol merchant, an unknown
/// merchant, a bad date, a day not over yet) or the configuration is wrong.
pub const EXIT_UNSUPPORTED: u8 = 2;

/// The exit code for a reconciliation's outcome.
pub fn exit_code(r: &Result<Report, ReconcileError>) -> u8 {
    match r {
        Ok(report) if report.unresolved() == 0 => EXIT_OK,
        Ok(_) => EXIT_UNRESOLVED,
        Err(
            ReconcileError::NoBillApi(_)
            | ReconcileError::UnknownMerchant(_)
            | ReconcileError::InvalidDate(_)
            | ReconcileError::DayNotOver(_),
        ) => EXIT_UNSUPPORTED,
        Err(_) => EXIT_UNRESOLVED,
    }
}

fn yuan(fen: i64) -> String {
    Fen::new(fen).to_yuan_string()
}

fn cell(s: Option<&str>, width: usize) -> String {
    let s = s.unwrap_or("-");
    let n = s.chars().count();
    if n > width {
        let cut: String = s.chars().take(width.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        format!("{s:<width$}")
    }
}

/// A readable summary of a report: totals side by side, then one line per difference.
pub fn render_summary(r: &Report) -> String {
    let c = &r.counts;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Reconciliation of merchant {} for {} (Beijing day) — report #{}: {}",
        r.merchant_id, r.bill_date, r.id, r.status
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "  {:<10} {:>22} {:>22}", "", "WeChat bill", "wxpay");
    let _ = writeln!(
        s,
        "  {:<10} {:>22} {:>22}",
        "payments",
        format!("{} · {} yuan", c.bill_payments, yuan(c.bill_payments_fen)),
        format!("{} · {} yuan", c.our_payments, yuan(c.our_payments_fen)),
    );
    let _ = writeln!(
        s,
        "  {:<10} {:>22} {:>22}",
        "refunds",
        format!("{} · {} yuan", c.bill_refunds, yuan(c.bill_refunds_fen)),
        format!("{} · {} yuan", c.our_refunds, yuan(c.our_refunds_fen)),
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "  matched {} · missing here {} (repaired {}) · missing at WeChat {} · amount mismatches {} · state mismatches {} · in another day's bill {}",
        c.matched,
        c.missing_here,
        c.repaired,
        c.missing_at_wechat,
        c.amount_mismatches,
        c.state_mismatches,
        c.other_day
    );
    let _ = writeln!(s, "  unresolved: {}", c.unresolved);
    if !r.differences.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "  {:<18} {:<8} {:<28} {:<24} {:>10} {:>10} {:<10} NOTE",
            "KIND", "RECORD", "OUT_TRADE_NO", "OUT_REFUND_NO", "BILL", "OURS", "RESOLVED"
        );
        for d in &r.differences {
            let _ = writeln!(
                s,
                "  {:<18} {:<8} {} {} {:>10} {:>10} {:<10} {}",
                d.kind.as_str(),
                match d.record {
                    Record::Payment => "payment",
                    Record::Refund => "refund",
                },
                cell(Some(&d.out_trade_no), 28),
                cell(d.out_refund_no.as_deref(), 24),
                d.bill_fen.map(yuan).unwrap_or_else(|| "-".into()),
                d.our_fen.map(yuan).unwrap_or_else(|| "-".into()),
                if d.resolved { "yes" } else { "NO" },
                d.note
            );
        }
    }
    s
}

/// `wxpay reconcile`: builds the application from the configuration, reconciles the day, prints
/// the summary; returns the process exit code (see [`exit_code`]).
pub async fn run_cli(config: Option<&std::path::Path>, merchant: &str, date: &str) -> u8 {
    let settings = match Settings::load(config).and_then(|s| s.check().map(|()| s)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("wxpay reconcile: {e}");
            return EXIT_UNSUPPORTED;
        }
    };
    let early = match settings.merchants.iter().find(|m| m.id == merchant) {
        None => Some(ReconcileError::UnknownMerchant(merchant.to_string())),
        Some(m) if matches!(m.protocol, ProtocolSetting::Legacy) => {
            Some(ReconcileError::NoBillApi(merchant.to_string()))
        }
        Some(_) => parse_date(date).err(),
    };
    if let Some(e) = early {
        eprintln!("wxpay reconcile: {e}");
        return exit_code(&Err(e));
    }
    let app = match crate::startup::build(settings, Default::default()).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("wxpay reconcile: {e}");
            return EXIT_UNSUPPORTED;
        }
    };
    let result = match parse_date(date) {
        Ok(day) => reconcile(&app.state, merchant, day).await,
        Err(e) => Err(e),
    };
    match &result {
        Ok(report) => print!("{}", render_summary(report)),
        Err(e) => eprintln!("wxpay reconcile: {e}"),
    }
    exit_code(&result)
}

/// The latest stored report of every (merchant, day) among the `limit` newest, decoded.
pub async fn recent_reports(state: &AppState, limit: i64) -> Result<Vec<Report>, ReconcileError> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for r in state
        .store
        .list_reconciliation_reports(None, None, limit)
        .await?
    {
        if seen.insert((r.merchant_id.clone(), r.bill_date.clone())) {
            out.push(Report::from_stored(r)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(unresolved: i64, differences: Vec<Difference>) -> Report {
        Report {
            id: 7,
            merchant_id: "v3-demo".into(),
            bill_date: "2024-03-15".into(),
            created_at: 0,
            status: if unresolved > 0 {
                REPORT_UNRESOLVED.into()
            } else {
                REPORT_BALANCED.into()
            },
            counts: ReconciliationCounts {
                bill_payments: 2,
                bill_payments_fen: 1250,
                our_payments: 2,
                our_payments_fen: 1250,
                matched: 2,
                missing_at_wechat: unresolved,
                unresolved,
                ..Default::default()
            },
            differences,
        }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(&Ok(report(0, vec![]))), EXIT_OK);
        assert_eq!(exit_code(&Ok(report(1, vec![]))), EXIT_UNRESOLVED);
        assert_eq!(
            exit_code(&Err(ReconcileError::NoBillApi("legacy-demo".into()))),
            EXIT_UNSUPPORTED
        );
        assert_eq!(
            exit_code(&Err(ReconcileError::Download(GatewayError::Transport(
                "timeout".into()
            )))),
            EXIT_UNRESOLVED
        );
        assert!(
            ReconcileError::NoBillApi("legacy-demo".into())
                .to_string()
                .contains("2014 protocol, which has no bill API")
        );
    }

    #[test]
    fn summary_is_readable() {
        let mut d = Difference::new(
            DifferenceKind::MissingAtWechat,
            Record::Payment,
            "pay_abc123",
        );
        d.our_fen = Some(1234);
        d.note = "not in WeChat's bill, and WeChat's query says NOTPAY".into();
        let text = render_summary(&report(1, vec![d]));
        assert!(text.contains("report #7: UNRESOLVED"), "{text}");
        assert!(text.contains("2 · 12.50 yuan"), "{text}");
        assert!(text.contains("unresolved: 1"), "{text}");
        let line = text
            .lines()
            .find(|l| l.contains("pay_abc123"))
            .expect("a line per difference");
        assert!(line.contains("missing_at_wechat"), "{line}");
        assert!(line.contains("12.34"), "{line}");
        assert!(line.contains(" NO "), "{line}");
    }

    #[test]
    fn differences_round_trip_as_json() {
        let mut d = Difference::new(DifferenceKind::MissingHere, Record::Refund, "pay_1");
        d.out_refund_no = Some("RF-1".into());
        d.resolved = true;
        let json = serde_json::to_string(&vec![d.clone()]).unwrap();
        assert!(json.contains(r#""kind":"missing_here""#), "{json}");
        assert!(json.contains(r#""record":"refund""#), "{json}");
        let back: Vec<Difference> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, vec![d]);
    }

    #[test]
    fn bill_rows_are_told_apart() {
        let pay = TradeBillRow {
            trade_state: "SUCCESS".into(),
            out_refund_no: "0".into(),
            order_amount: Fen::new(100),
            settlement_total: Fen::new(90),
            ..Default::default()
        };
        assert!(!is_refund_row(&pay));
        assert_eq!(bill_payment_fen(&pay), 100);
        let older = TradeBillRow {
            order_amount: Fen::ZERO,
            ..pay.clone()
        };
        assert_eq!(bill_payment_fen(&older), 90);
        let refund = TradeBillRow {
            trade_state: "REFUND".into(),
            out_refund_no: "RF-1".into(),
            refund_amount: Fen::new(40),
            ..Default::default()
        };
        assert!(is_refund_row(&refund));
        assert_eq!(bill_refund_fen(&refund), 40);
    }
}
