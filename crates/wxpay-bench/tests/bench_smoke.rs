//! The bench machinery on tiny counts (not timed: only that every part runs and counts right).
//! Without `WXPAY_TEST_DATABASE_URL` it runs on SQLite and says why pgbench and growth are
//! skipped; with it, the pgbench comparison and the growth phase must run too.

use wxpay_bench::{BenchOptions, Kind, find_pgbench, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_runs_on_tiny_counts() {
    let database_url = std::env::var(wxpay_store::testing::DATABASE_ENV)
        .ok()
        .filter(|u| !u.is_empty());
    if database_url.is_none() {
        eprintln!(
            "note: {} is not set; the bench runs on SQLite and skips pgbench and growth",
            wxpay_store::testing::DATABASE_ENV
        );
    }
    let pg = database_url.is_some();
    let opts = BenchOptions {
        database_url,
        n: 40,
        payments: 12,
        concurrency: vec![2, 4],
        growth: vec![400, 900],
        growth_samples: 30,
        max_run_secs: 300.0,
        half_rate_secs: 0.5,
        rsa_secs: 0.05,
        pgbench: None,
    };
    let report = run(&opts).await.expect("the bench runs");
    println!("{}", report.render());

    let of = |k: Kind| report.rows.iter().filter(move |r| r.kind == k);
    // Every notification was accepted and paid exactly its attempt.
    assert_eq!(of(Kind::Notify).count(), 4, "legacy and v3 at C = 2 and 4");
    for r in of(Kind::Notify).chain(of(Kind::NotifyHalfRate)) {
        assert_eq!(r.errors, 0, "{r:?}");
        assert_eq!(r.ok, r.requested, "{r:?}");
        assert_eq!(r.paid_in_db, Some(r.ok as i64), "{r:?}");
        assert!(
            r.rate > 0.0 && r.p50_ms > 0.0 && r.p99_ms >= r.p50_ms,
            "{r:?}"
        );
    }
    assert_eq!(of(Kind::NotifyHalfRate).count(), 2);
    // Every order got its prepay, legacy and v3.
    assert_eq!(of(Kind::Payment).count(), 4);
    for r in of(Kind::Payment).chain(of(Kind::PaymentHalfRate)) {
        assert_eq!((r.ok, r.errors), (r.requested, 0), "{r:?}");
    }
    assert_eq!(of(Kind::PaymentHalfRate).count(), 2);
    let (one, all) = report.sign_rate.expect("RSA rates");
    assert!(one > 0.0 && all > 0.0);
    assert!(of(Kind::Payment).any(|r| r.workload.starts_with("v3") && r.ratio.is_some()));
    assert_eq!(report.targets.len(), 5);

    if pg {
        if find_pgbench(None).is_some() {
            let pgb: Vec<_> = of(Kind::Pgbench).collect();
            assert_eq!(
                pgb.len(),
                10,
                "four mark-paid scripts and the order + prepay SQL, at two concurrencies: {pgb:?}"
            );
            for r in pgb {
                assert_eq!((r.ok, r.errors), (r.requested, 0), "{r:?}");
                assert!(r.rate > 0.0);
            }
            assert!(of(Kind::Notify).all(|r| r.ratio.is_some()));
            assert!(report.targets[0].pass.is_some());
            // Payments are set against the database's own rate for the same SQL.
            assert!(
                of(Kind::Payment).all(|r| r.ratio.is_some() && r.note.contains("database ceiling")),
                "{:?}",
                of(Kind::Payment).collect::<Vec<_>>()
            );
            // PostgreSQL's own lookup is measured beside our order query at each size.
            let own: Vec<_> = of(Kind::GrowthPgbench).collect();
            assert_eq!(own.len(), 2, "{own:?}");
            assert!(own.iter().all(|r| r.ok == 30 && r.p50_ms > 0.0), "{own:?}");
        } else {
            eprintln!("note: pgbench is not installed; its rows are skipped");
        }
        let growth: Vec<_> = of(Kind::GrowthNotify).collect();
        assert_eq!(growth.len(), 2);
        for r in growth {
            assert_eq!((r.ok, r.errors), (30, 0), "{r:?}");
            assert_eq!(r.paid_in_db, Some(30));
        }
        assert!(of(Kind::GrowthQuery).all(|r| r.ok == 30 && r.errors == 0));
        assert!(report.targets[3].pass.is_some());
    } else {
        assert_eq!(of(Kind::Pgbench).count(), 0);
        assert_eq!(of(Kind::GrowthNotify).count(), 0);
        assert!(report.skipped.iter().any(|s| s.contains("PostgreSQL")));
    }
}
