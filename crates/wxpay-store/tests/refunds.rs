//! Refund reservations and state changes, on SQLite and (when configured) PostgreSQL.

use wxpay_store::testing::TestDb;
use wxpay_store::*;

const NOW: i64 = 1_700_000_000_000;

async fn paid_order(s: &Store, order_no: &str, amount: i64, coupon: Option<&str>) {
    if let Some(c) = coupon {
        s.issue_coupon(
            &NewCoupon {
                code: c.into(),
                user_id: "u1".into(),
                discount_fen: 100,
                min_spend_fen: 0,
                expires_at: None,
            },
            NOW,
        )
        .await
        .unwrap();
    }
    s.create_order(
        &NewOrder {
            order_no: order_no.into(),
            user_id: "u1".into(),
            subject: "s".into(),
            items_json: None,
            amount_fen: amount,
            coupon_code: coupon.map(Into::into),
            expires_at: NOW + 1_000_000,
        },
        NOW,
    )
    .await
    .unwrap();
    let p = format!("p-{order_no}");
    s.start_attempt(
        &NewAttempt {
            out_trade_no: p.clone(),
            order_no: order_no.into(),
            merchant_id: "m1".into(),
            protocol: "v3".into(),
            request_json: None,
            next_query_at: None,
        },
        NOW,
    )
    .await
    .unwrap();
    let payable = s.get_order(order_no).await.unwrap().unwrap().payable_fen;
    let out = s
        .mark_paid(
            &PaymentSuccess {
                merchant_id: "m1".into(),
                out_trade_no: p,
                transaction_id: format!("t-{order_no}"),
                paid_fen: payable,
                source: PaidSource::Notify,
                receipt_id: None,
                refund_if_late: false,
            },
            NOW,
        )
        .await
        .unwrap();
    assert!(matches!(out, MarkPaid::Paid { .. }));
}

fn refund(order_no: &str, no: &str, amount: i64) -> NewRefund {
    NewRefund {
        order_no: order_no.into(),
        out_refund_no: no.into(),
        amount_fen: amount,
        reason: None,
        next_query_at: None,
    }
}

#[tokio::test]
async fn twenty_concurrent_refunds_never_exceed_the_paid_amount() {
    for db in TestDb::all().await.unwrap() {
        let s = db.store.clone();
        paid_order(&s, "o1", 1000, None).await;
        let mut tasks = Vec::new();
        for i in 0..20 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.create_refund(&refund("o1", &format!("r{i}"), 150), NOW)
                    .await
            }));
        }
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(RefundCreated::New(_)) => ok += 1,
                Err(StoreError::Rejected(r)) => assert_eq!(r.code, "refund_exceeds_paid"),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            ok,
            6,
            "6 × 150 fits in 1000, a 7th does not ({})",
            db.backend_name()
        );
        let total: i64 = s
            .list_refunds("o1")
            .await
            .unwrap()
            .iter()
            .map(|r| r.amount_fen)
            .sum();
        assert_eq!(total, 900);
    }
}

#[tokio::test]
async fn refund_results_apply_once_and_move_the_order() {
    for db in TestDb::all().await.unwrap() {
        let s = &db.store;
        paid_order(s, "o1", 1000, Some("C1")).await;
        let RefundCreated::New(r1) = s
            .create_refund(&refund("o1", "r1", 400), NOW)
            .await
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (r1.state.as_str(), r1.total_fen, r1.out_trade_no.as_str()),
            ("PENDING", 900, "p-o1")
        );
        // The same out_refund_no and amount is the same refund; another amount is refused.
        assert!(matches!(
            s.create_refund(&refund("o1", "r1", 400), NOW)
                .await
                .unwrap(),
            RefundCreated::Existing(_)
        ));
        let err = s
            .create_refund(&refund("o1", "r1", 1), NOW)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Rejected(ref r) if r.code == "out_refund_no_used"));
        assert!(
            s.apply_refund("r1", RefundOutcome::Processing, Some("wx-r1"), true, NOW)
                .await
                .unwrap()
        );
        assert!(
            s.apply_refund("r1", RefundOutcome::Success, None, true, NOW)
                .await
                .unwrap()
        );
        assert!(
            !s.apply_refund("r1", RefundOutcome::Success, None, true, NOW)
                .await
                .unwrap(),
            "a duplicate changes nothing"
        );
        assert!(
            !s.apply_refund("r1", RefundOutcome::Closed, None, true, NOW)
                .await
                .unwrap(),
            "final states stay"
        );
        let o = s.get_order("o1").await.unwrap().unwrap();
        assert_eq!(
            (o.state, o.refunded_fen),
            (OrderState::PartiallyRefunded, 400)
        );
        // A closed refund releases its reservation.
        s.create_refund(&refund("o1", "r2", 500), NOW)
            .await
            .unwrap();
        assert!(
            s.create_refund(&refund("o1", "r3", 500), NOW)
                .await
                .is_err()
        );
        assert!(
            s.apply_refund("r2", RefundOutcome::Closed, None, true, NOW)
                .await
                .unwrap()
        );
        s.create_refund(&refund("o1", "r3", 500), NOW)
            .await
            .unwrap();
        s.apply_refund("r3", RefundOutcome::Success, Some("wx-r3"), true, NOW)
            .await
            .unwrap();
        let o = s.get_order("o1").await.unwrap().unwrap();
        assert_eq!((o.state, o.refunded_fen), (OrderState::Refunded, 900));
        assert_eq!(
            s.get_coupon("C1").await.unwrap().unwrap().state,
            CouponState::Available,
            "returned on full refund"
        );
        let kinds: Vec<_> = s
            .list_events("o1")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event_type)
            .collect();
        assert_eq!(
            kinds,
            vec![
                "order.paid",
                "refund.succeeded",
                "refund.failed",
                "refund.succeeded"
            ]
        );
        assert!(
            s.create_refund(&refund("o1", "r4", 1), NOW).await.is_err(),
            "nothing left to refund"
        );
    }
}

#[tokio::test]
async fn only_paid_orders_are_refunded() {
    for db in TestDb::all().await.unwrap() {
        let s = &db.store;
        s.create_order(
            &NewOrder {
                order_no: "o1".into(),
                user_id: "u1".into(),
                subject: "s".into(),
                items_json: None,
                amount_fen: 10,
                coupon_code: None,
                expires_at: NOW + 1,
            },
            NOW,
        )
        .await
        .unwrap();
        let e = s
            .create_refund(&refund("o1", "r1", 1), NOW)
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Rejected(ref r) if r.code == "order_not_refundable"));
        let e = s
            .create_refund(&refund("nope", "r2", 1), NOW)
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Rejected(ref r) if r.code == "order_not_found"));
        let e = s
            .create_refund(&refund("o1", "r3", 0), NOW)
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Rejected(ref r) if r.code == "invalid_amount"));
    }
}
