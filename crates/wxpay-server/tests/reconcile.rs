//! Reconciliation against the sandbox's trade bill, on SQLite and (when configured) PostgreSQL +
//! Redis. The server and the sandbox share one clock that starts at noon (Beijing) of today and
//! runs in real time; moving it a day forward makes "today" yesterday, whose bill the sandbox
//! then serves (it dates rows by its clock's Beijing day, like WeChat).

mod common;

use chrono::NaiveDate;
use common::*;
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};
use wxpay_sandbox::{FaultSet, Faults, SandboxHandle};
use wxpay_server::reconcile::{
    DifferenceKind, EXIT_OK, EXIT_UNRESOLVED, EXIT_UNSUPPORTED, ReconcileError, Record, Report,
    exit_code, reconcile, render_summary,
};
use wxpay_server::workers::{WorkerContext, reconciler};
use wxpay_store::reconcile::{beijing_date_of_ms, beijing_day_bounds_ms};
use wxpay_store::testing::TestDb;
use wxpay_store::{OrderState, PaidSource, PaymentSuccess};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// Noon (Beijing) of today, moving in real time, plus whatever the test adds.
#[derive(Debug)]
struct DayClock {
    base_ms: i64,
    started: Instant,
    offset_ms: AtomicI64,
}

impl DayClock {
    fn new() -> Arc<DayClock> {
        let real = wxpay_gateway::Clock::now_ms(&wxpay_gateway::SystemClock);
        let (midnight, _) = beijing_day_bounds_ms(beijing_date_of_ms(real));
        Arc::new(DayClock {
            base_ms: midnight + 12 * HOUR_MS,
            started: Instant::now(),
            offset_ms: AtomicI64::new(0),
        })
    }
    /// The Beijing day the trades happen on.
    fn trade_day(&self) -> NaiveDate {
        beijing_date_of_ms(self.base_ms)
    }
    fn shift(&self, ms: i64) {
        self.offset_ms.fetch_add(ms, Ordering::SeqCst);
    }
    fn next_day(&self) {
        self.shift(DAY_MS);
    }
}

impl wxpay_gateway::Clock for DayClock {
    fn now_ms(&self) -> i64 {
        self.base_ms
            + self.started.elapsed().as_millis() as i64
            + self.offset_ms.load(Ordering::SeqCst)
    }
}

impl wxpay_sandbox::Clock for DayClock {
    fn now_unix(&self) -> i64 {
        wxpay_gateway::Clock::now_secs(self)
    }
}

struct Env {
    clock: Arc<DayClock>,
    sandbox: SandboxHandle,
    app: TestApp,
}

async fn env(db: &TestDb) -> Env {
    let clock = DayClock::new();
    let sandbox = sandbox_with_clock(clock.clone()).await;
    let app = spawn_app_custom(
        db,
        &sandbox,
        &cache_for(db),
        &random_prefix(),
        clock.clone(),
        |_| {},
    )
    .await;
    Env {
        clock,
        sandbox,
        app,
    }
}

impl Env {
    /// An order at the v3 merchant with its prepay; returns (order_no, out_trade_no, prepay_id).
    async fn order(&self, amount: i64) -> (String, String, String) {
        let order = self.app.create_order("u-rec", amount, None).await;
        let order_no = order["order_no"].as_str().unwrap().to_string();
        let (s, pay) = self
            .app
            .post(
                &format!("/v1/orders/{order_no}/pay"),
                API_KEY,
                json!({"merchant": "v3-demo", "client_ip": "14.23.150.211"}),
            )
            .await;
        assert_eq!(s, 200, "{pay}");
        (
            order_no,
            pay["out_trade_no"].as_str().unwrap().to_string(),
            pay["app_params"]["prepayid"].as_str().unwrap().to_string(),
        )
    }

    /// An order paid at the sandbox and PAID here (through the notification).
    async fn paid_order(&self, amount: i64) -> (String, String) {
        let (order_no, out_trade_no, prepay_id) = self.order(amount).await;
        self.sandbox.pay_prepay(&prepay_id).unwrap();
        self.app.wait_state(&order_no, "PAID").await;
        (order_no, out_trade_no)
    }

    async fn refund(&self, order_no: &str, amount: i64, out_refund_no: &str) {
        let (s, v) = self
            .app
            .post(
                &format!("/v1/orders/{order_no}/refunds"),
                API_KEY,
                json!({"amount_fen": amount, "out_refund_no": out_refund_no}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        for _ in 0..400 {
            let r = self
                .app
                .state
                .store
                .get_refund(out_refund_no)
                .await
                .unwrap();
            if r.is_some_and(|r| r.state == "SUCCESS") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("refund {out_refund_no} never succeeded");
    }

    async fn reconcile(&self, day: NaiveDate) -> Report {
        reconcile(&self.app.state, "v3-demo", day)
            .await
            .unwrap_or_else(|e| panic!("reconcile {day}: {e}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_day_of_payments_and_a_refund_reconciles_balanced() {
    for db in TestDb::all().await.unwrap() {
        let e = env(&db).await;
        let day = e.clock.trade_day();
        let (_, o1) = e.paid_order(100).await;
        let (order2, o2) = e.paid_order(250).await;
        let (_, o3) = e.paid_order(1999).await;
        e.refund(&order2, 50, "RF-rec-1").await;

        // The bill of a day is served once the day is over.
        assert!(matches!(
            reconcile(&e.app.state, "v3-demo", day).await,
            Err(ReconcileError::DayNotOver(_))
        ));
        e.clock.next_day();
        let report = e.reconcile(day).await;
        let c = &report.counts;
        assert_eq!(report.status, "BALANCED", "{}", render_summary(&report));
        assert_eq!(report.bill_date, day.to_string());
        assert_eq!(
            (c.bill_rows, c.bill_payments, c.bill_payments_fen),
            (4, 3, 2349)
        );
        assert_eq!((c.bill_refunds, c.bill_refunds_fen), (1, 50));
        assert_eq!((c.our_payments, c.our_payments_fen), (3, 2349));
        assert_eq!((c.our_refunds, c.our_refunds_fen), (1, 50));
        assert_eq!((c.matched, c.unresolved, c.missing_here), (4, 0, 0));
        assert!(report.differences.is_empty(), "{:?}", report.differences);
        assert_eq!(exit_code(&Ok(report.clone())), EXIT_OK);
        let _ = (o1, o2, o3);

        // Stored as it was returned.
        let stored = e
            .app
            .state
            .store
            .latest_reconciliation_report("v3-demo", &day.to_string())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(Report::from_stored(stored).unwrap(), report);
        let summary = render_summary(&report);
        assert!(summary.contains("BALANCED"), "{summary}");
        assert!(summary.contains("3 · 23.49 yuan"), "{summary}");

        // A day without trades has no bill, and nothing of ours: balanced and empty.
        let before = e.reconcile(day.pred_opt().unwrap()).await;
        assert_eq!(
            (
                before.status.as_str(),
                before.counts.bill_rows,
                before.counts.our_payments
            ),
            ("BALANCED", 0, 0)
        );

        // The 2014 protocol has no bill API; unknown merchants are refused.
        let legacy = reconcile(&e.app.state, "legacy-demo", day).await;
        assert!(matches!(legacy, Err(ReconcileError::NoBillApi(_))));
        assert!(
            legacy
                .as_ref()
                .unwrap_err()
                .to_string()
                .contains("2014 protocol, which has no bill API")
        );
        assert_eq!(exit_code(&legacy), EXIT_UNSUPPORTED);
        assert!(matches!(
            reconcile(&e.app.state, "nobody", day).await,
            Err(ReconcileError::UnknownMerchant(_))
        ));
        e.sandbox.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payment_we_never_heard_of_is_found_in_the_bill_and_repaired() {
    for db in TestDb::all().await.unwrap() {
        let e = env(&db).await;
        let day = e.clock.trade_day();
        let (_, heard) = e.paid_order(300).await;
        // From now on WeChat's notifications are lost, and nobody asks (no app hint, no sweeper).
        e.sandbox.set_faults(Faults::global(FaultSet {
            drop_notification: 1.0,
            ..Default::default()
        }));
        let (unheard_order, unheard, prepay_id) = e.order(720).await;
        e.sandbox.pay_prepay(&prepay_id).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(e.app.order(&unheard_order).await["state"], "PAYING");

        e.clock.next_day();
        let report = e.reconcile(day).await;
        let c = &report.counts;
        assert_eq!(report.status, "REPAIRED", "{}", render_summary(&report));
        assert_eq!((c.bill_payments, c.bill_payments_fen), (2, 1020));
        assert_eq!((c.our_payments, c.our_payments_fen), (1, 300));
        assert_eq!(
            (c.matched, c.missing_here, c.repaired, c.unresolved),
            (1, 1, 1, 0)
        );
        assert_eq!(report.differences.len(), 1);
        let d = &report.differences[0];
        assert_eq!(
            (d.kind, d.record, d.out_trade_no.as_str(), d.resolved),
            (
                DifferenceKind::MissingHere,
                Record::Payment,
                unheard.as_str(),
                true
            )
        );
        assert_eq!(
            (d.bill_fen, d.our_state.as_deref()),
            (Some(720), Some("PENDING"))
        );
        assert!(d.note.starts_with("repaired"), "{}", d.note);
        assert_eq!(exit_code(&Ok(report.clone())), EXIT_OK);

        // Repaired through the normal transition, from a verified query.
        let order = e
            .app
            .state
            .store
            .get_order(&unheard_order)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(order.state, OrderState::Paid);
        assert_eq!(order.paid_source.as_deref(), Some("query"));
        let events = e.app.state.store.list_events(&unheard_order).await.unwrap();
        assert_eq!(
            events
                .iter()
                .filter(|ev| ev.event_type == "order.paid")
                .count(),
            1
        );

        // Reconciling the day again finds nothing left to repair.
        let again = e.reconcile(day).await;
        assert_eq!(
            (
                again.status.as_str(),
                again.counts.matched,
                again.counts.unresolved
            ),
            ("BALANCED", 2, 0),
            "{}",
            render_summary(&again)
        );

        // The repaired payment is ours the next day (paid_at is when we learnt it) but in the
        // bill of the day before: a query confirms it, so it is not a difference.
        let next = day.succ_opt().unwrap();
        e.clock.next_day();
        let later = e.reconcile(next).await;
        assert_eq!(later.status, "BALANCED", "{}", render_summary(&later));
        assert_eq!(
            (
                later.counts.our_payments,
                later.counts.other_day,
                later.counts.unresolved
            ),
            (1, 1, 0)
        );
        assert_eq!(later.differences[0].kind, DifferenceKind::OtherDay);
        assert_eq!(later.differences[0].out_trade_no, unheard);
        let _ = heard;
        e.sandbox.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payment_wechat_never_saw_is_unresolved() {
    for db in TestDb::all().await.unwrap() {
        let e = env(&db).await;
        let day = e.clock.trade_day();
        let (_, real) = e.paid_order(500).await;
        // An attempt marked paid here with a transaction WeChat never made.
        let (ghost_order, ghost, _) = e.order(880).await;
        let now = e.app.state.now_ms();
        e.app
            .state
            .store
            .mark_paid(
                &PaymentSuccess {
                    merchant_id: "v3-demo".into(),
                    out_trade_no: ghost.clone(),
                    transaction_id: "4200009999202401010000000000".into(),
                    paid_fen: 880,
                    source: PaidSource::Query,
                    receipt_id: None,
                    refund_if_late: false,
                },
                now,
            )
            .await
            .unwrap();
        assert_eq!(e.app.order(&ghost_order).await["state"], "PAID");

        e.clock.next_day();
        let report = e.reconcile(day).await;
        let c = &report.counts;
        assert_eq!(report.status, "UNRESOLVED", "{}", render_summary(&report));
        assert_eq!(
            (c.bill_payments, c.our_payments, c.our_payments_fen),
            (1, 2, 1380)
        );
        assert_eq!((c.matched, c.missing_at_wechat, c.unresolved), (1, 1, 1));
        let d = &report.differences[0];
        assert_eq!(
            (d.kind, d.out_trade_no.as_str(), d.our_fen, d.resolved),
            (
                DifferenceKind::MissingAtWechat,
                ghost.as_str(),
                Some(880),
                false
            )
        );
        assert!(d.note.contains("NOTPAY"), "{}", d.note);
        // The CLI exits non-zero on this report and names the payment.
        assert_eq!(exit_code(&Ok(report.clone())), EXIT_UNRESOLVED);
        let summary = render_summary(&report);
        assert!(summary.contains(&ghost), "{summary}");
        assert!(summary.contains("unresolved: 1"), "{summary}");
        let _ = real;
        e.sandbox.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_daily_worker_reconciles_yesterday_once_across_processes() {
    for db in TestDb::all().await.unwrap() {
        let e = env(&db).await;
        let day = e.clock.trade_day();
        e.paid_order(120).await;
        let ctx = |owner: &str| {
            let (tx, rx) = tokio::sync::watch::channel(false);
            (
                tx,
                WorkerContext {
                    state: e.app.state.clone(),
                    stop: rx,
                    owner: owner.into(),
                },
            )
        };
        let (_tx1, w1) = ctx("process-1");
        let (_tx2, w2) = ctx("process-2");
        let (mut d1, mut d2) = (HashSet::new(), HashSet::new());

        // Next day, 09:00 Beijing: the bill may not be there yet; nothing happens.
        e.clock.next_day();
        e.clock.shift(-3 * HOUR_MS);
        assert_eq!(reconciler::round(&w1, &mut d1).await, 0);
        // From 10:00 two processes look at once: one reconciles, the other finds it claimed.
        e.clock.shift(3 * HOUR_MS);
        let (a, b) = tokio::join!(
            reconciler::round(&w1, &mut d1),
            reconciler::round(&w2, &mut d2)
        );
        assert_eq!(a + b, 1);
        let reports = e
            .app
            .state
            .store
            .list_reconciliation_reports(Some("v3-demo"), None, 10)
            .await
            .unwrap();
        assert_eq!(reports.len(), 1);
        assert_eq!(
            (
                reports[0].bill_date.clone(),
                reports[0].status.as_str(),
                reports[0].counts.matched
            ),
            (day.to_string(), "BALANCED", 1)
        );
        let run = e
            .app
            .state
            .store
            .get_reconciliation_run("v3-demo", &day.to_string())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (run.state.as_str(), run.report_id),
            ("DONE", Some(reports[0].id))
        );
        // Later looks the same day do nothing.
        assert_eq!(reconciler::round(&w2, &mut d2).await, 0);
        assert_eq!(reconciler::round(&w1, &mut d1).await, 0);

        // The loop runs a round at once and stops when told.
        let (tx3, w3) = ctx("process-3");
        e.clock.next_day();
        let handle = tokio::spawn(reconciler::run(w3));
        let next = day.succ_opt().unwrap().to_string();
        let mut done = false;
        for _ in 0..200 {
            if let Ok(Some(run)) = e
                .app
                .state
                .store
                .get_reconciliation_run("v3-demo", &next)
                .await
                && run.state == "DONE"
            {
                done = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(done, "the worker reconciled {next}");
        tx3.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .expect("the worker stops")
            .unwrap();
        e.sandbox.shutdown().await;
    }
}
