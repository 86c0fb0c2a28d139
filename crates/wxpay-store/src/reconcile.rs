//! Reconciliation against WeChat Pay's daily trade bill: what we recorded for a Beijing calendar
//! day (UTC+8, the day WeChat's bills use), lookups of the bill's rows, the stored reports, and
//! the claim of a (merchant, day) that makes the daily worker run once across processes.

use crate::ops::{ATTEMPT_COLS, decode_attempt_row};
use crate::{Attempt, Result, Store, StoreError};
use chrono::{Duration, NaiveDate};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};
use std::collections::HashMap;

/// Beijing time is UTC+8 all year.
pub const BEIJING_OFFSET_MS: i64 = 8 * 3600 * 1000;
const DAY_MS: i64 = 86_400_000;
/// Identifiers per `IN (...)` lookup.
const LOOKUP_CHUNK: usize = 500;

/// Parses `YYYY-MM-DD` strictly.
pub fn parse_bill_date(date: &str) -> Result<NaiveDate> {
    NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .ok()
        .filter(|_| date.len() == 10)
        .ok_or_else(|| StoreError::Invalid(format!("bill date must be YYYY-MM-DD, got {date:?}")))
}

/// `[start, end)` in unix milliseconds of a Beijing calendar day.
pub fn beijing_day_bounds_ms(date: NaiveDate) -> (i64, i64) {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    let start = (date - epoch).num_days() * DAY_MS - BEIJING_OFFSET_MS;
    (start, start + DAY_MS)
}

/// The Beijing calendar day of a unix-milliseconds time.
pub fn beijing_date_of_ms(ms: i64) -> NaiveDate {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    epoch + Duration::days((ms + BEIJING_OFFSET_MS).div_euclid(DAY_MS))
}

/// A refund as reconciliation sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefundEntry {
    pub out_refund_no: String,
    pub order_no: String,
    pub out_trade_no: String,
    pub merchant_id: String,
    pub amount_fen: i64,
    /// PENDING, PROCESSING, SUCCESS, CLOSED, ABNORMAL.
    pub state: String,
    pub refund_id: Option<String>,
    pub finished_at: Option<i64>,
}

const REFUND_ENTRY_COLS: &str =
    "out_refund_no, order_no, out_trade_no, merchant_id, amount_fen, state, refund_id, finished_at";

fn decode_refund_entry(r: &AnyRow) -> Result<RefundEntry> {
    Ok(RefundEntry {
        out_refund_no: r.try_get("out_refund_no")?,
        order_no: r.try_get("order_no")?,
        out_trade_no: r.try_get("out_trade_no")?,
        merchant_id: r.try_get("merchant_id")?,
        amount_fen: r.try_get("amount_fen")?,
        state: r.try_get("state")?,
        refund_id: r.try_get("refund_id")?,
        finished_at: r.try_get("finished_at")?,
    })
}

/// Counts and sums of one reconciliation (money in fen).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ReconciliationCounts {
    /// Detail rows in WeChat's bill.
    pub bill_rows: i64,
    /// Successful payments in the bill and their order amounts.
    pub bill_payments: i64,
    pub bill_payments_fen: i64,
    /// Successful refunds in the bill and their amounts.
    pub bill_refunds: i64,
    pub bill_refunds_fen: i64,
    /// Our successful payments whose `paid_at` falls in the day, and their paid amounts.
    pub our_payments: i64,
    pub our_payments_fen: i64,
    /// Our refunds that succeeded in the day, and their amounts.
    pub our_refunds: i64,
    pub our_refunds_fen: i64,
    /// Bill rows that agree with what we have.
    pub matched: i64,
    /// In the bill, not successful with us.
    pub missing_here: i64,
    /// Of those, repaired through the normal transition after a verified query.
    pub repaired: i64,
    /// Successful with us, absent from the bill and not confirmed by WeChat.
    pub missing_at_wechat: i64,
    pub amount_mismatches: i64,
    pub state_mismatches: i64,
    /// Successful with us in this day, in WeChat's bill of a neighbouring day (confirmed by a
    /// query): not a difference, reported for information.
    pub other_day: i64,
    /// Differences that need a person.
    pub unresolved: i64,
}

/// BALANCED: no difference; REPAIRED: differences, all repaired; UNRESOLVED: some need a person.
pub const REPORT_BALANCED: &str = "BALANCED";
pub const REPORT_REPAIRED: &str = "REPAIRED";
pub const REPORT_UNRESOLVED: &str = "UNRESOLVED";

/// What a reconciliation found, to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReconciliationReport {
    pub merchant_id: String,
    /// `YYYY-MM-DD`, a Beijing calendar day.
    pub bill_date: String,
    pub status: String,
    pub counts: ReconciliationCounts,
    /// A JSON array of differences.
    pub differences_json: String,
}

/// A stored reconciliation report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReconciliationReport {
    pub id: i64,
    pub merchant_id: String,
    pub bill_date: String,
    pub created_at: i64,
    pub status: String,
    #[serde(flatten)]
    pub counts: ReconciliationCounts,
    pub differences_json: String,
}

const COUNT_COLS: [&str; 17] = [
    "bill_rows",
    "bill_payments",
    "bill_payments_fen",
    "bill_refunds",
    "bill_refunds_fen",
    "our_payments",
    "our_payments_fen",
    "our_refunds",
    "our_refunds_fen",
    "matched",
    "missing_here",
    "repaired",
    "missing_at_wechat",
    "amount_mismatches",
    "state_mismatches",
    "other_day",
    "unresolved",
];

impl ReconciliationCounts {
    fn values(&self) -> [i64; 17] {
        [
            self.bill_rows,
            self.bill_payments,
            self.bill_payments_fen,
            self.bill_refunds,
            self.bill_refunds_fen,
            self.our_payments,
            self.our_payments_fen,
            self.our_refunds,
            self.our_refunds_fen,
            self.matched,
            self.missing_here,
            self.repaired,
            self.missing_at_wechat,
            self.amount_mismatches,
            self.state_mismatches,
            self.other_day,
            self.unresolved,
        ]
    }

    fn decode(r: &AnyRow) -> Result<Self> {
        let g = |c: &str| -> Result<i64> { Ok(r.try_get::<i64, _>(c)?) };
        Ok(ReconciliationCounts {
            bill_rows: g("bill_rows")?,
            bill_payments: g("bill_payments")?,
            bill_payments_fen: g("bill_payments_fen")?,
            bill_refunds: g("bill_refunds")?,
            bill_refunds_fen: g("bill_refunds_fen")?,
            our_payments: g("our_payments")?,
            our_payments_fen: g("our_payments_fen")?,
            our_refunds: g("our_refunds")?,
            our_refunds_fen: g("our_refunds_fen")?,
            matched: g("matched")?,
            missing_here: g("missing_here")?,
            repaired: g("repaired")?,
            missing_at_wechat: g("missing_at_wechat")?,
            amount_mismatches: g("amount_mismatches")?,
            state_mismatches: g("state_mismatches")?,
            other_day: g("other_day")?,
            unresolved: g("unresolved")?,
        })
    }
}

fn report_cols() -> String {
    format!(
        "id, merchant_id, bill_date, created_at, status, {}, differences_json",
        COUNT_COLS.join(", ")
    )
}

fn decode_report(r: &AnyRow) -> Result<ReconciliationReport> {
    Ok(ReconciliationReport {
        id: r.try_get("id")?,
        merchant_id: r.try_get("merchant_id")?,
        bill_date: r.try_get("bill_date")?,
        created_at: r.try_get("created_at")?,
        status: r.try_get("status")?,
        counts: ReconciliationCounts::decode(r)?,
        differences_json: r.try_get("differences_json")?,
    })
}

/// The daily worker's claim of a (merchant, day).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReconciliationRun {
    pub merchant_id: String,
    pub bill_date: String,
    /// RUNNING, RETRY, DONE.
    pub state: String,
    pub owner: Option<String>,
    pub lease_until: Option<i64>,
    pub attempts: i64,
    pub next_try_at: Option<i64>,
    pub last_error: Option<String>,
    pub report_id: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// `$from, $from+1, …` for `n` parameters.
fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    /// The merchant's SUCCEEDED payment attempts whose `paid_at` falls in the Beijing day.
    pub async fn succeeded_attempts_on_day(
        &self,
        merchant_id: &str,
        day: NaiveDate,
    ) -> Result<Vec<Attempt>> {
        let (from, to) = beijing_day_bounds_ms(day);
        let sql = format!(
            "SELECT {ATTEMPT_COLS} FROM payment_attempts WHERE merchant_id = $1 AND state = 'SUCCEEDED' \
             AND paid_at >= $2 AND paid_at < $3 ORDER BY paid_at, out_trade_no"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(merchant_id)
            .bind(from)
            .bind(to)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(decode_attempt_row).collect()
    }

    /// The merchant's refunds that became SUCCESS in the Beijing day.
    pub async fn succeeded_refunds_on_day(
        &self,
        merchant_id: &str,
        day: NaiveDate,
    ) -> Result<Vec<RefundEntry>> {
        let (from, to) = beijing_day_bounds_ms(day);
        let sql = format!(
            "SELECT {REFUND_ENTRY_COLS} FROM refunds WHERE merchant_id = $1 AND state = 'SUCCESS' \
             AND finished_at >= $2 AND finished_at < $3 ORDER BY finished_at, out_refund_no"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(merchant_id)
            .bind(from)
            .bind(to)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(decode_refund_entry).collect()
    }

    /// The merchant's attempts with these out_trade_nos, whatever their state.
    pub async fn attempts_by_out_trade_no(
        &self,
        merchant_id: &str,
        out_trade_nos: &[String],
    ) -> Result<HashMap<String, Attempt>> {
        let mut found = HashMap::new();
        for chunk in out_trade_nos.chunks(LOOKUP_CHUNK) {
            let sql = format!(
                "SELECT {ATTEMPT_COLS} FROM payment_attempts WHERE merchant_id = $1 AND out_trade_no IN ({})",
                placeholders(2, chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(merchant_id);
            for no in chunk {
                q = q.bind(no);
            }
            for row in q.fetch_all(self.pool()).await? {
                let a = decode_attempt_row(&row)?;
                found.insert(a.out_trade_no.clone(), a);
            }
        }
        Ok(found)
    }

    /// The merchant's refunds with these out_refund_nos, whatever their state.
    pub async fn refunds_by_out_refund_no(
        &self,
        merchant_id: &str,
        out_refund_nos: &[String],
    ) -> Result<HashMap<String, RefundEntry>> {
        let mut found = HashMap::new();
        for chunk in out_refund_nos.chunks(LOOKUP_CHUNK) {
            let sql = format!(
                "SELECT {REFUND_ENTRY_COLS} FROM refunds WHERE merchant_id = $1 AND out_refund_no IN ({})",
                placeholders(2, chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(merchant_id);
            for no in chunk {
                q = q.bind(no);
            }
            for row in q.fetch_all(self.pool()).await? {
                let r = decode_refund_entry(&row)?;
                found.insert(r.out_refund_no.clone(), r);
            }
        }
        Ok(found)
    }

    // ----------------------------------------------------------------- reports

    /// Stores a report.
    pub async fn insert_reconciliation_report(
        &self,
        r: &NewReconciliationReport,
        now: i64,
    ) -> Result<ReconciliationReport> {
        if ![REPORT_BALANCED, REPORT_REPAIRED, REPORT_UNRESOLVED].contains(&r.status.as_str()) {
            return Err(StoreError::Invalid(format!(
                "unknown report status {:?}",
                r.status
            )));
        }
        let counts = r.counts.values();
        let sql = format!(
            "INSERT INTO reconciliation_reports (merchant_id, bill_date, created_at, status, {}, differences_json) \
             VALUES ($1, $2, $3, $4, {}, ${}) RETURNING id",
            COUNT_COLS.join(", "),
            placeholders(5, counts.len()),
            5 + counts.len()
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(&r.merchant_id)
            .bind(&r.bill_date)
            .bind(now)
            .bind(&r.status);
        for v in counts {
            q = q.bind(v);
        }
        let row = q.bind(&r.differences_json).fetch_one(self.pool()).await?;
        let id: i64 = row.try_get("id")?;
        self.get_reconciliation_report(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("reconciliation report {id}")))
    }

    pub async fn get_reconciliation_report(&self, id: i64) -> Result<Option<ReconciliationReport>> {
        let sql = format!(
            "SELECT {} FROM reconciliation_reports WHERE id = $1",
            report_cols()
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(decode_report).transpose()
    }

    /// Reports, newest first: of one merchant or all, older than `before_id` when given.
    pub async fn list_reconciliation_reports(
        &self,
        merchant_id: Option<&str>,
        before_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<ReconciliationReport>> {
        let sql = format!(
            "SELECT {} FROM reconciliation_reports WHERE ($1 IS NULL OR merchant_id = $1) \
             AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
            report_cols()
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(merchant_id)
            .bind(before_id)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(decode_report).collect()
    }

    /// The latest report of a (merchant, day).
    pub async fn latest_reconciliation_report(
        &self,
        merchant_id: &str,
        bill_date: &str,
    ) -> Result<Option<ReconciliationReport>> {
        let sql = format!(
            "SELECT {} FROM reconciliation_reports WHERE merchant_id = $1 AND bill_date = $2 \
             ORDER BY id DESC LIMIT 1",
            report_cols()
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(merchant_id)
            .bind(bill_date)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(decode_report).transpose()
    }

    // -------------------------------------------------------------------- runs

    /// Claims the reconciliation of a (merchant, day) for `owner` until `now + lease_ms`: the
    /// first claim is a unique insert; later ones take over a run waiting for a retry that is
    /// due, or one whose owner's lease expired. False when someone else has it or it is done.
    pub async fn claim_reconciliation(
        &self,
        merchant_id: &str,
        bill_date: &str,
        owner: &str,
        now: i64,
        lease_ms: i64,
    ) -> Result<bool> {
        let inserted = sqlx::query(
            "INSERT INTO reconciliation_runs (merchant_id, bill_date, state, owner, lease_until, attempts, \
             created_at, updated_at) VALUES ($1, $2, 'RUNNING', $3, $4, 1, $5, $5) \
             ON CONFLICT (merchant_id, bill_date) DO NOTHING",
        )
        .bind(merchant_id)
        .bind(bill_date)
        .bind(owner)
        .bind(now + lease_ms)
        .bind(now)
        .execute(self.pool())
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(true);
        }
        let taken = sqlx::query(
            "UPDATE reconciliation_runs SET state = 'RUNNING', owner = $1, lease_until = $2, \
             attempts = attempts + 1, updated_at = $3 WHERE merchant_id = $4 AND bill_date = $5 \
             AND ((state = 'RETRY' AND (next_try_at IS NULL OR next_try_at <= $3)) \
             OR (state = 'RUNNING' AND lease_until < $3))",
        )
        .bind(owner)
        .bind(now + lease_ms)
        .bind(now)
        .bind(merchant_id)
        .bind(bill_date)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(taken == 1)
    }

    /// The claimed run is done; `report_id` is its report.
    pub async fn finish_reconciliation(
        &self,
        merchant_id: &str,
        bill_date: &str,
        owner: &str,
        report_id: i64,
        now: i64,
    ) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE reconciliation_runs SET state = 'DONE', report_id = $1, lease_until = NULL, \
             next_try_at = NULL, last_error = NULL, updated_at = $2 \
             WHERE merchant_id = $3 AND bill_date = $4 AND owner = $5 AND state = 'RUNNING'",
        )
        .bind(report_id)
        .bind(now)
        .bind(merchant_id)
        .bind(bill_date)
        .bind(owner)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// The claimed run failed (bill not ready, WeChat unreachable): try again from `next_try_at`.
    pub async fn defer_reconciliation(
        &self,
        merchant_id: &str,
        bill_date: &str,
        owner: &str,
        next_try_at: i64,
        error: &str,
        now: i64,
    ) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE reconciliation_runs SET state = 'RETRY', next_try_at = $1, last_error = $2, \
             lease_until = NULL, updated_at = $3 \
             WHERE merchant_id = $4 AND bill_date = $5 AND owner = $6 AND state = 'RUNNING'",
        )
        .bind(next_try_at)
        .bind(error)
        .bind(now)
        .bind(merchant_id)
        .bind(bill_date)
        .bind(owner)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    pub async fn get_reconciliation_run(
        &self,
        merchant_id: &str,
        bill_date: &str,
    ) -> Result<Option<ReconciliationRun>> {
        let row = sqlx::query(
            "SELECT merchant_id, bill_date, state, owner, lease_until, attempts, next_try_at, last_error, \
             report_id, created_at, updated_at FROM reconciliation_runs WHERE merchant_id = $1 AND bill_date = $2",
        )
        .bind(merchant_id)
        .bind(bill_date)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| -> Result<ReconciliationRun> {
            Ok(ReconciliationRun {
                merchant_id: r.try_get("merchant_id")?,
                bill_date: r.try_get("bill_date")?,
                state: r.try_get("state")?,
                owner: r.try_get("owner")?,
                lease_until: r.try_get("lease_until")?,
                attempts: r.try_get("attempts")?,
                next_try_at: r.try_get("next_try_at")?,
                last_error: r.try_get("last_error")?,
                report_id: r.try_get("report_id")?,
                created_at: r.try_get("created_at")?,
                updated_at: r.try_get("updated_at")?,
            })
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDb;

    #[test]
    fn beijing_days() {
        let d = parse_bill_date("2024-01-02").unwrap();
        let (from, to) = beijing_day_bounds_ms(d);
        // 2024-01-02T00:00:00+08:00 = 2024-01-01T16:00:00Z.
        assert_eq!(from, 1_704_124_800_000);
        assert_eq!(to - from, DAY_MS);
        assert_eq!(beijing_date_of_ms(from), d);
        assert_eq!(beijing_date_of_ms(to - 1), d);
        assert_eq!(beijing_date_of_ms(to), d.succ_opt().unwrap());
        assert_eq!(
            beijing_date_of_ms(from - 1).to_string(),
            "2024-01-01".to_string()
        );
        for bad in ["2024-1-02", "2024-01-32", "20240102", ""] {
            assert!(parse_bill_date(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn reports_and_claims() {
        for db in TestDb::all().await.unwrap() {
            let s = &db.store;
            let counts = ReconciliationCounts {
                bill_rows: 3,
                bill_payments: 2,
                bill_payments_fen: 350,
                matched: 3,
                ..Default::default()
            };
            let r = s
                .insert_reconciliation_report(
                    &NewReconciliationReport {
                        merchant_id: "m1".into(),
                        bill_date: "2024-01-02".into(),
                        status: REPORT_BALANCED.into(),
                        counts: counts.clone(),
                        differences_json: "[]".into(),
                    },
                    10,
                )
                .await
                .unwrap();
            assert_eq!((r.counts.clone(), r.created_at), (counts, 10));
            let r2 = s
                .insert_reconciliation_report(
                    &NewReconciliationReport {
                        merchant_id: "m1".into(),
                        bill_date: "2024-01-02".into(),
                        status: REPORT_UNRESOLVED.into(),
                        counts: ReconciliationCounts {
                            unresolved: 1,
                            ..Default::default()
                        },
                        differences_json: r#"[{"kind":"missing_at_wechat"}]"#.into(),
                    },
                    20,
                )
                .await
                .unwrap();
            assert!(r2.id > r.id);
            assert_eq!(
                s.latest_reconciliation_report("m1", "2024-01-02")
                    .await
                    .unwrap()
                    .map(|r| r.id),
                Some(r2.id)
            );
            assert_eq!(
                s.list_reconciliation_reports(None, None, 10)
                    .await
                    .unwrap()
                    .len(),
                2
            );
            let older = s
                .list_reconciliation_reports(Some("m1"), Some(r2.id), 10)
                .await
                .unwrap();
            assert_eq!(older.iter().map(|r| r.id).collect::<Vec<_>>(), vec![r.id]);
            assert!(
                s.list_reconciliation_reports(Some("m2"), None, 10)
                    .await
                    .unwrap()
                    .is_empty()
            );
            assert!(
                s.insert_reconciliation_report(
                    &NewReconciliationReport {
                        merchant_id: "m1".into(),
                        bill_date: "2024-01-02".into(),
                        status: "FINE".into(),
                        counts: ReconciliationCounts::default(),
                        differences_json: "[]".into(),
                    },
                    30,
                )
                .await
                .is_err()
            );

            // One claimer wins; a deferred run is taken again when due; a done run never.
            let day = "2024-01-02";
            assert!(
                s.claim_reconciliation("m1", day, "a", 100, 1000)
                    .await
                    .unwrap()
            );
            assert!(
                !s.claim_reconciliation("m1", day, "b", 100, 1000)
                    .await
                    .unwrap()
            );
            assert!(
                s.claim_reconciliation("m2", day, "b", 100, 1000)
                    .await
                    .unwrap()
            );
            assert!(
                s.defer_reconciliation("m1", day, "a", 500, "STATEMENT_CREATING", 200)
                    .await
                    .unwrap()
            );
            assert!(
                !s.claim_reconciliation("m1", day, "b", 400, 1000)
                    .await
                    .unwrap()
            );
            assert!(
                s.claim_reconciliation("m1", day, "b", 500, 1000)
                    .await
                    .unwrap()
            );
            let run = s.get_reconciliation_run("m1", day).await.unwrap().unwrap();
            assert_eq!(
                (run.state.as_str(), run.owner.as_deref(), run.attempts),
                ("RUNNING", Some("b"), 2)
            );
            assert!(
                !s.finish_reconciliation("m1", day, "a", r.id, 600)
                    .await
                    .unwrap()
            );
            assert!(
                s.finish_reconciliation("m1", day, "b", r.id, 600)
                    .await
                    .unwrap()
            );
            assert!(
                !s.claim_reconciliation("m1", day, "c", 9_999_999, 1000)
                    .await
                    .unwrap()
            );
            // A run whose owner died is taken over after its lease.
            assert!(
                !s.claim_reconciliation("m2", day, "c", 1000, 1000)
                    .await
                    .unwrap()
            );
            assert!(
                s.claim_reconciliation("m2", day, "c", 1101, 1000)
                    .await
                    .unwrap()
            );
            let run = s.get_reconciliation_run("m1", day).await.unwrap().unwrap();
            assert_eq!((run.state.as_str(), run.report_id), ("DONE", Some(r.id)));
        }
    }
}
