//! The store's domain operations, on SQLite and (when configured) PostgreSQL.

use wxpay_store::idempotency::{self, Begin};
use wxpay_store::testing::TestDb;
use wxpay_store::*;

const NOW: i64 = 1_700_000_000_000;

fn order(no: &str, amount: i64, coupon: Option<&str>) -> NewOrder {
    NewOrder {
        order_no: no.into(),
        user_id: "u1".into(),
        subject: "a cup of tea".into(),
        items_json: None,
        amount_fen: amount,
        coupon_code: coupon.map(Into::into),
        expires_at: NOW + 1_800_000,
    }
}

fn coupon(code: &str, discount: i64, min_spend: i64, expires_at: Option<i64>) -> NewCoupon {
    NewCoupon {
        code: code.into(),
        user_id: "u1".into(),
        discount_fen: discount,
        min_spend_fen: min_spend,
        expires_at,
    }
}

fn attempt(no: &str, order_no: &str) -> NewAttempt {
    NewAttempt {
        out_trade_no: no.into(),
        order_no: order_no.into(),
        merchant_id: "m1".into(),
        protocol: "legacy".into(),
        request_json: None,
        next_query_at: None,
    }
}

fn success(out_trade_no: &str, fen: i64, receipt: Option<i64>) -> PaymentSuccess {
    PaymentSuccess {
        merchant_id: "m1".into(),
        out_trade_no: out_trade_no.into(),
        transaction_id: "1219350001201407033233368018".into(),
        paid_fen: fen,
        source: PaidSource::Notify,
        receipt_id: receipt,
        refund_if_late: false,
    }
}

fn code(e: StoreError) -> &'static str {
    match e {
        StoreError::Rejected(r) => r.code,
        other => panic!("expected a rejection, got {other}"),
    }
}

#[tokio::test]
async fn coupons_are_priced_reserved_and_refused_with_clear_codes() {
    for db in TestDb::all().await.unwrap() {
        let s = &db.store;
        s.issue_coupon(&coupon("TEN", 1000, 5000, None), NOW)
            .await
            .unwrap();
        s.issue_coupon(&coupon("OLD", 100, 0, Some(NOW - 1)), NOW)
            .await
            .unwrap();
        s.issue_coupon(&coupon("BIG", 9999, 0, None), NOW)
            .await
            .unwrap();
        s.issue_coupon(
            &NewCoupon {
                user_id: "u2".into(),
                ..coupon("HIS", 100, 0, None)
            },
            NOW,
        )
        .await
        .unwrap();
        assert_eq!(
            code(
                s.issue_coupon(&coupon("TEN", 1, 0, None), NOW)
                    .await
                    .unwrap_err()
            ),
            "coupon_exists"
        );
        assert_eq!(
            code(
                s.issue_coupon(&coupon("NEG", 0, 0, None), NOW)
                    .await
                    .unwrap_err()
            ),
            "invalid_coupon"
        );

        let o = s
            .create_order(&order("o1", 6000, Some("TEN")), NOW)
            .await
            .unwrap();
        assert_eq!(
            (o.amount_fen, o.discount_fen, o.payable_fen),
            (6000, 1000, 5000)
        );
        assert_eq!(o.state, OrderState::Created);
        let c = s.get_coupon("TEN").await.unwrap().unwrap();
        assert_eq!(
            (c.state, c.order_no.as_deref()),
            (CouponState::Reserved, Some("o1"))
        );

        let err = |no: &str, amount, c: &str| {
            let o = order(no, amount, Some(c));
            async move { code(s.create_order(&o, NOW).await.unwrap_err()) }
        };
        assert_eq!(err("o2", 6000, "TEN").await, "coupon_in_use");
        assert_eq!(err("o3", 6000, "NOPE").await, "coupon_not_found");
        assert_eq!(err("o4", 6000, "HIS").await, "coupon_not_found");
        assert_eq!(err("o5", 6000, "OLD").await, "coupon_expired");
        assert_eq!(err("o6", 9999, "BIG").await, "payable_not_positive");
        s.issue_coupon(&coupon("MIN", 100, 5000, None), NOW)
            .await
            .unwrap();
        assert_eq!(err("o7", 4999, "MIN").await, "coupon_not_applicable");
        // Nothing of the refused orders exists, and the refused coupons are untouched.
        for no in ["o2", "o3", "o4", "o5", "o6", "o7"] {
            assert!(s.get_order(no).await.unwrap().is_none());
        }
        assert_eq!(
            s.get_coupon("MIN").await.unwrap().unwrap().state,
            CouponState::Available
        );
        let listed = s.list_coupons("u1", NOW).await.unwrap();
        let old = listed.iter().find(|c| c.code == "OLD").unwrap();
        assert_eq!(old.state, CouponState::Expired);
    }
}

#[tokio::test]
async fn fifty_concurrent_duplicates_make_one_transition() {
    for db in TestDb::all().await.unwrap() {
        let s = db.store.clone();
        s.issue_coupon(&coupon("C1", 100, 0, None), NOW)
            .await
            .unwrap();
        s.create_order(&order("o1", 1000, Some("C1")), NOW)
            .await
            .unwrap();
        s.start_attempt(&attempt("p1", "o1"), NOW).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..50 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let r = s
                    .insert_receipt(
                        &NewReceipt {
                            merchant_id: "m1".into(),
                            kind: "payment".into(),
                            body: format!("dup {i}").into_bytes(),
                            verified: true,
                            outcome: "received".into(),
                            out_trade_no: Some("p1".into()),
                            ..Default::default()
                        },
                        NOW,
                    )
                    .await
                    .unwrap();
                s.mark_paid(&success("p1", 900, Some(r)), NOW + 1)
                    .await
                    .unwrap()
            }));
        }
        let mut paid = 0;
        for t in tasks {
            match t.await.unwrap() {
                MarkPaid::Paid { .. } => paid += 1,
                MarkPaid::AlreadyRecorded { .. } => {}
                other => panic!("unexpected outcome {other:?} on {}", db.backend_name()),
            }
        }
        assert_eq!(paid, 1, "exactly one transition on {}", db.backend_name());
        let o = s.get_order("o1").await.unwrap().unwrap();
        assert_eq!(o.state, OrderState::Paid);
        let events = s.list_events("o1").await.unwrap();
        assert_eq!(
            events
                .iter()
                .filter(|e| e.event_type == "order.paid")
                .count(),
            1
        );
        assert_eq!(
            s.get_coupon("C1").await.unwrap().unwrap().state,
            CouponState::Used
        );
        let receipts = s.list_receipts("p1").await.unwrap();
        assert_eq!(receipts.len(), 50);
        let deciding: Vec<_> = receipts.iter().filter(|r| r.outcome == "paid").collect();
        assert_eq!(deciding.len(), 1);
        assert_eq!(Some(deciding[0].id), o.paid_receipt_id);
    }
}

#[tokio::test]
async fn a_wrong_amount_is_an_anomaly_never_paid() {
    for db in TestDb::all().await.unwrap() {
        let s = &db.store;
        s.create_order(&order("o1", 1000, None), NOW).await.unwrap();
        s.start_attempt(&attempt("p1", "o1"), NOW).await.unwrap();
        let out = s.mark_paid(&success("p1", 1, None), NOW).await.unwrap();
        assert_eq!(
            out,
            MarkPaid::AmountMismatch {
                order_no: "o1".into(),
                expected_fen: 1000,
                got_fen: 1
            }
        );
        assert_eq!(
            s.get_order("o1").await.unwrap().unwrap().state,
            OrderState::Paying
        );
        assert_eq!(s.list_anomalies("o1").await.unwrap().len(), 1);
        assert!(s.list_events("o1").await.unwrap().is_empty());
        assert_eq!(
            s.mark_paid(&success("nope", 1000, None), NOW)
                .await
                .unwrap(),
            MarkPaid::UnknownAttempt
        );
        let foreign = PaymentSuccess {
            merchant_id: "m2".into(),
            ..success("p1", 1000, None)
        };
        assert_eq!(
            s.mark_paid(&foreign, NOW).await.unwrap(),
            MarkPaid::UnknownAttempt
        );
    }
}

#[tokio::test]
async fn a_second_payment_of_a_paid_order_is_recorded_for_refund() {
    for db in TestDb::all().await.unwrap() {
        let s = &db.store;
        s.create_order(&order("o1", 1000, None), NOW).await.unwrap();
        s.start_attempt(&attempt("p1", "o1"), NOW).await.unwrap();
        s.start_attempt(&attempt("p2", "o1"), NOW).await.unwrap();
        assert!(matches!(
            s.mark_paid(&success("p1", 1000, None), NOW).await.unwrap(),
            MarkPaid::Paid { .. }
        ));
        let second = PaymentSuccess {
            transaction_id: "t2".into(),
            refund_if_late: true,
            ..success("p2", 1000, None)
        };
        assert!(matches!(
            s.mark_paid(&second, NOW).await.unwrap(),
            MarkPaid::DuplicatePayment { .. }
        ));
        // late_success_refund: its full refund was reserved with the anomaly, once, due now.
        assert!(matches!(
            s.mark_paid(&second, NOW).await.unwrap(),
            MarkPaid::AlreadyRecorded { .. }
        ));
        let refunds = s.list_refunds("o1").await.unwrap();
        assert_eq!(refunds.len(), 1, "{refunds:?}");
        let r = &refunds[0];
        assert_eq!(
            (
                r.out_refund_no.as_str(),
                r.out_trade_no.as_str(),
                r.amount_fen,
                r.state.as_str()
            ),
            ("late-p2", "p2", 1000, "PENDING")
        );
        assert_eq!(s.get_order("o1").await.unwrap().unwrap().refunded_fen, 0);
        let o = s.get_order("o1").await.unwrap().unwrap();
        assert_eq!(o.paid_out_trade_no.as_deref(), Some("p1"));
        let kinds: Vec<_> = s
            .list_anomalies("o1")
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.kind)
            .collect();
        assert_eq!(kinds, vec!["DUPLICATE_PAYMENT"]);
    }
}

#[tokio::test]
async fn attempts_require_a_payable_order_and_are_reused() {
    for db in TestDb::all().await.unwrap() {
        let s = &db.store;
        s.create_order(&order("o1", 1000, None), NOW).await.unwrap();
        assert_eq!(
            code(
                s.start_attempt(&attempt("p0", "zz"), NOW)
                    .await
                    .unwrap_err()
            ),
            "order_not_found"
        );
        let a = s.start_attempt(&attempt("p1", "o1"), NOW).await.unwrap();
        assert_eq!((a.state, a.amount_fen), (AttemptState::Pending, 1000));
        assert_eq!(
            s.get_order("o1").await.unwrap().unwrap().state,
            OrderState::Paying
        );
        // Without a prepay it is reusable (the prepay is retried with the same number) ...
        assert_eq!(
            s.reusable_attempt("o1", "m1", NOW)
                .await
                .unwrap()
                .unwrap()
                .out_trade_no,
            "p1"
        );
        // ... with a valid prepay too, but not once the prepay has expired.
        s.set_prepay("p1", "prepay-1", NOW + 7_200_000, NOW)
            .await
            .unwrap();
        assert!(
            s.reusable_attempt("o1", "m1", NOW + 100)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            s.reusable_attempt("o1", "m1", NOW + 7_200_000)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            s.reusable_attempt("o1", "other", NOW)
                .await
                .unwrap()
                .is_none()
        );
        // Expired orders take no new attempt; paid ones neither.
        assert_eq!(
            code(
                s.start_attempt(&attempt("p2", "o1"), NOW + 1_800_000)
                    .await
                    .unwrap_err()
            ),
            "order_expired"
        );
        assert!(
            s.get_attempt("p2").await.unwrap().is_none(),
            "a refused attempt leaves nothing behind"
        );
        s.mark_paid(&success("p1", 1000, None), NOW).await.unwrap();
        assert_eq!(
            code(
                s.start_attempt(&attempt("p3", "o1"), NOW)
                    .await
                    .unwrap_err()
            ),
            "order_paid"
        );
    }
}

#[tokio::test]
async fn idempotency_keys_replay_refuse_and_release() {
    for db in TestDb::all().await.unwrap() {
        let s = &db.store;
        assert_eq!(
            s.idempotency_begin("k", "a", "h1", NOW).await.unwrap(),
            Begin::New
        );
        assert_eq!(
            s.idempotency_begin("k", "a", "h1", NOW).await.unwrap(),
            Begin::InProgress
        );
        assert_eq!(
            s.idempotency_begin("k", "a", "h2", NOW).await.unwrap(),
            Begin::Mismatch
        );
        s.idempotency_complete("k", "a", 201, "{\"x\":1}")
            .await
            .unwrap();
        assert_eq!(
            s.idempotency_begin("k", "a", "h1", NOW).await.unwrap(),
            Begin::Replay {
                status: 201,
                body: "{\"x\":1}".into()
            }
        );
        // Another scope is another key space.
        assert_eq!(
            s.idempotency_begin("other", "a", "h9", NOW).await.unwrap(),
            Begin::New
        );
        s.idempotency_abandon("other", "a").await.unwrap();
        assert_eq!(
            s.idempotency_begin("other", "a", "h8", NOW).await.unwrap(),
            Begin::New
        );
    }
}

#[tokio::test]
async fn receipts_are_capped_and_flagged() {
    for db in TestDb::all().await.unwrap() {
        let s = &db.store;
        let big = vec![b'x'; RECEIPT_BODY_CAP + 10];
        let id = s
            .insert_receipt(
                &NewReceipt {
                    merchant_id: "m1".into(),
                    kind: "payment".into(),
                    body: big,
                    outcome: "bad_signature".into(),
                    out_trade_no: Some("p9".into()),
                    ..Default::default()
                },
                NOW,
            )
            .await
            .unwrap();
        let r = &s.list_receipts("p9").await.unwrap()[0];
        assert_eq!(r.id, id);
        assert_eq!(r.body.len(), RECEIPT_BODY_CAP);
        assert!(r.body_truncated);
        assert!(!r.verified);
    }
}

#[tokio::test]
async fn concurrent_claimers_never_take_the_same_row() {
    for db in TestDb::all().await.unwrap() {
        let s = db.store.clone();
        for i in 0..40 {
            let no = format!("o{i}");
            s.create_order(&order(&no, 100, None), NOW).await.unwrap();
            let mut a = attempt(&format!("p{i}"), &no);
            a.next_query_at = Some(NOW);
            s.start_attempt(&a, NOW).await.unwrap();
        }
        let mut tasks = Vec::new();
        for w in 0..4 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = s
                        .claim_due_attempts(&format!("w{w}"), NOW + 1, 60_000, 3)
                        .await
                        .unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|a| a.out_trade_no));
                }
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(
            (n, all.len()),
            (40, 40),
            "every row claimed exactly once on {}",
            db.backend_name()
        );
        // A lease that expired can be taken over; one that did not cannot.
        assert!(
            s.claim_due_attempts("late", NOW + 2, 60_000, 100)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            s.claim_due_attempts("late", NOW + 60_002, 60_000, 100)
                .await
                .unwrap()
                .len(),
            40
        );
    }
}

#[tokio::test]
async fn a_success_for_a_closed_order_is_recorded_as_paid_after_close() {
    for db in TestDb::all().await.unwrap() {
        let s = &db.store;
        s.issue_coupon(&coupon("CL", 100, 0, None), NOW)
            .await
            .unwrap();
        s.create_order(&order("o1", 1000, Some("CL")), NOW)
            .await
            .unwrap();
        s.start_attempt(&attempt("p1", "o1"), NOW).await.unwrap();
        assert!(s.close_order("o1", NOW).await.unwrap());
        assert!(
            !s.close_order("o1", NOW).await.unwrap(),
            "closing twice changes nothing"
        );
        assert_eq!(
            s.get_coupon("CL").await.unwrap().unwrap().state,
            CouponState::Available
        );
        let out = s.mark_paid(&success("p1", 900, None), NOW).await.unwrap();
        assert_eq!(
            out,
            MarkPaid::PaidAfterClose {
                order_no: "o1".into()
            }
        );
        assert_eq!(
            s.get_order("o1").await.unwrap().unwrap().state,
            OrderState::Closed
        );
        let a = s.get_attempt("p1").await.unwrap().unwrap();
        assert_eq!(
            (a.state, a.anomaly.as_deref()),
            (AttemptState::Succeeded, Some("PAID_AFTER_CLOSE"))
        );
        let kinds: Vec<_> = s
            .list_events("o1")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event_type)
            .collect();
        assert_eq!(kinds, vec!["order.closed", "order.paid_after_close"]);
        assert_eq!(
            s.list_anomalies("o1").await.unwrap()[0].kind,
            "PAID_AFTER_CLOSE"
        );
        // The released coupon was not consumed by the late payment.
        assert_eq!(
            s.get_coupon("CL").await.unwrap().unwrap().state,
            CouponState::Available
        );
    }
}

#[tokio::test]
async fn a_key_left_in_progress_by_a_dead_process_is_taken_over_once() {
    for db in TestDb::all().await.unwrap() {
        let s = &db.store;
        assert_eq!(
            s.idempotency_begin("k", "a", "h", NOW).await.unwrap(),
            Begin::New
        );
        assert_eq!(
            s.idempotency_begin("k", "a", "h", NOW + 29_999)
                .await
                .unwrap(),
            Begin::InProgress
        );
        let later = NOW + idempotency::IN_PROGRESS_TAKEOVER_MS + 1;
        assert_eq!(
            s.idempotency_begin("k", "a", "h", later).await.unwrap(),
            Begin::New
        );
        assert_eq!(
            s.idempotency_begin("k", "a", "h", later).await.unwrap(),
            Begin::InProgress,
            "taken over once"
        );
    }
}
