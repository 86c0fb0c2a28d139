//! Database side of the bench: bulk loads straight into the scratch database (one
//! `INSERT … SELECT` over a generated series per table, not through the API), and pgbench runs of
//! the exact SQL of our mark-paid transition.

use std::path::{Path, PathBuf};

use sqlx::Row;
use wxpay_store::{Backend, Store};

/// What the loaded rows look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rows {
    /// Order PAYING + attempt PENDING (what a notification will pay).
    Pending,
    /// [`Rows::Pending`] plus a receipt whose id is the key (what the pgbench scripts update).
    PendingWithReceipts,
    /// Order PAID + attempt SUCCEEDED + its receipt + its `order.paid` event (history).
    PaidHistory,
}

/// Every key is the decimal string of a number of this many digits, so string order = number
/// order and a key range is an index range.
pub const KEY_BASE: i64 = 1_000_000_000;

fn series(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => {
            "WITH s(i) AS (SELECT generate_series(CAST($1 AS BIGINT), CAST($2 AS BIGINT) - 1))"
        }
        Backend::Sqlite => {
            "WITH RECURSIVE s(i) AS (SELECT CAST($1 AS INTEGER) UNION ALL SELECT i + 1 FROM s WHERE i + 1 < $2)"
        }
    }
}

/// A legacy notification body of the usual size, stored in loaded receipts.
const SAMPLE_BODY: &str = "<xml><OpenId><![CDATA[oBenchUser0000000000000000000]]></OpenId><AppId><![CDATA[wxd930ea5d5a258f4f]]></AppId><IsSubscribe>1</IsSubscribe><TimeStamp>1700000000</TimeStamp><NonceStr><![CDATA[n1000000000]]></NonceStr><AppSignature><![CDATA[0000000000000000000000000000000000000000]]></AppSignature><SignMethod><![CDATA[sha1]]></SignMethod></xml>";

/// A prepay request as the attempt stores it (with a space after each colon: pgbench would read
/// `:1700000000` as a variable).
const SAMPLE_REQUEST: &str = r#"{"out_trade_no": "1000000000", "description": "bench", "amount": 1, "client_ip": "127.0.0.1", "notify_url": "https://shop.example.com/notify/v3-demo", "attach": null, "time_start": 1700000000, "time_expire": 1700001800, "trace_id": "bench-user-1"}"#;

const SAMPLE_PAYLOAD: &str = r#"{"amount_fen":1,"merchant":"legacy-demo","order_no":"1000000000","out_trade_no":"1000000000","paid_at":1700000000000,"source":"notify","transaction_id":"4200000000000000001000000000"}"#;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Inserts the keys `from..to` (orders, attempts and, per `rows`, receipts and events).
pub async fn load(
    store: &Store,
    from: i64,
    to: i64,
    rows: Rows,
    merchant: &str,
    protocol: &str,
) -> Result<(), String> {
    if from >= to {
        return Ok(());
    }
    let pool = store.pool();
    let s = series(store.backend());
    let now = now_ms();
    let paid = rows == Rows::PaidHistory;
    let err = |what: &str, e: sqlx::Error| format!("bulk load of {what}: {e}");
    let (ostate, otn, osrc, oat) = if paid {
        ("PAID", "CAST(i AS TEXT)", "'notify'", "$4")
    } else {
        ("PAYING", "NULL", "NULL", "NULL")
    };
    let sql = format!(
        "{s} INSERT INTO orders (order_no, user_id, subject, amount_fen, discount_fen, payable_fen, \
         refunded_fen, state, merchant_id, paid_out_trade_no, paid_source, created_at, updated_at, \
         expires_at, paid_at) SELECT CAST(i AS TEXT), 'bench-user-' || CAST(i % 10000 AS TEXT), \
         'bench', 1, 0, 1, 0, '{ostate}', $3, {otn}, {osrc}, $4, $4, $5, {oat} FROM s"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(from)
        .bind(to)
        .bind(merchant)
        .bind(now)
        .bind(now + 30 * 86_400_000)
        .execute(pool)
        .await
        .map_err(|e| err("orders", e))?;
    let (astate, tid, pfen, psrc, pat, nq) = if paid {
        (
            "SUCCEEDED",
            "'42' || CAST(i AS TEXT)",
            "1",
            "'notify'",
            "$5",
            "NULL",
        )
    } else {
        ("PENDING", "NULL", "NULL", "NULL", "NULL", "$5 + 3600000")
    };
    let sql = format!(
        "{s} INSERT INTO payment_attempts (out_trade_no, order_no, merchant_id, protocol, amount_fen, \
         state, transaction_id, paid_fen, paid_source, created_at, updated_at, paid_at, \
         next_query_at, query_count) SELECT CAST(i AS TEXT), CAST(i AS TEXT), $3, $4, 1, \
         '{astate}', {tid}, {pfen}, {psrc}, $5, $5, {pat}, {nq}, 0 FROM s"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(from)
        .bind(to)
        .bind(merchant)
        .bind(protocol)
        .bind(now)
        .execute(pool)
        .await
        .map_err(|e| err("payment_attempts", e))?;
    if rows == Rows::Pending {
        return Ok(());
    }
    let (idcol, idval, outcome, tid) = if paid {
        ("", "", "paid", "'42' || CAST(i AS TEXT)")
    } else {
        ("id, ", "i, ", "received", "NULL")
    };
    let sql = format!(
        "{s} INSERT INTO receipts ({idcol}merchant_id, kind, received_at, remote_addr, query, \
         headers_json, body, body_truncated, verified, outcome, out_trade_no, transaction_id) \
         SELECT {idval}$3, 'payment', $4, '127.0.0.1', 'out_trade_no=' || CAST(i AS TEXT), '[]', \
         $5, 0, 1, '{outcome}', CAST(i AS TEXT), {tid} FROM s"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(from)
        .bind(to)
        .bind(merchant)
        .bind(now)
        .bind(SAMPLE_BODY.as_bytes().to_vec())
        .execute(pool)
        .await
        .map_err(|e| err("receipts", e))?;
    if paid {
        let sql = format!(
            "{s} INSERT INTO outbox_events (id, event_type, order_no, payload, created_at) \
             SELECT 'evt_bench' || CAST(i AS TEXT), 'order.paid', CAST(i AS TEXT), $3, $4 FROM s"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(from)
            .bind(to)
            .bind(SAMPLE_PAYLOAD)
            .bind(now)
            .execute(pool)
            .await
            .map_err(|e| err("outbox_events", e))?;
    }
    Ok(())
}

/// After a large bulk load, what a database in steady state looks like: `VACUUM ANALYZE` (hint
/// bits and visibility map set, statistics fresh — this cluster may run without autovacuum) and
/// a `CHECKPOINT` (needs superuser; skipped otherwise) so the load's writes do not land in the
/// measurement.
pub async fn settle(store: &Store) -> Result<(), String> {
    if store.backend() != Backend::Postgres {
        return analyze(store).await;
    }
    sqlx::raw_sql("VACUUM ANALYZE")
        .execute(store.pool())
        .await
        .map_err(|e| format!("VACUUM ANALYZE: {e}"))?;
    let _ = sqlx::raw_sql("CHECKPOINT").execute(store.pool()).await;
    Ok(())
}

/// Fresh planner statistics after a bulk load.
pub async fn analyze(store: &Store) -> Result<(), String> {
    sqlx::query("ANALYZE")
        .execute(store.pool())
        .await
        .map_err(|e| format!("ANALYZE: {e}"))?;
    Ok(())
}

/// How many attempts of the keys `from..to` are SUCCEEDED (a run's result, read back).
pub async fn count_succeeded(store: &Store, from: i64, to: i64) -> Result<i64, String> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n FROM payment_attempts WHERE out_trade_no >= $1 \
         AND out_trade_no < $2 AND state = 'SUCCEEDED'",
    )
    .bind(from.to_string())
    .bind(to.to_string())
    .fetch_one(store.pool())
    .await
    .map_err(|e| format!("counting paid attempts: {e}"))?;
    row.try_get::<i64, _>("n").map_err(|e| e.to_string())
}

// -------------------------------------------------------------------------------------- pgbench

/// `pgbench` from `explicit`, `PATH`, or the newest `/usr/lib/postgresql/*/bin/pgbench`.
pub fn find_pgbench(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return p.is_file().then(|| p.to_path_buf());
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("pgbench");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let p = e.path().join("bin/pgbench");
            p.is_file().then_some((v, p))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}

/// Which pgbench script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Script {
    /// Exactly what `Store::mark_paid` sends on its PostgreSQL main path: BEGIN, the guarded
    /// UPDATE of the attempt … RETURNING order_no, one statement of CTEs (order, coupon, event,
    /// receipt), COMMIT.
    MarkPaid,
    /// What `mark_paid` sent before it was folded (and still sends on SQLite): BEGIN,
    /// SELECT … FOR UPDATE, UPDATE attempt, UPDATE order … RETURNING, INSERT event, UPDATE
    /// receipt, COMMIT.
    MarkPaidOld,
    /// The database work of one notification: the receipt INSERT (its own commit), then
    /// [`Script::MarkPaid`].
    NotifySql,
    /// The same transition as one statement (data-modifying CTE), autocommit: the reference.
    Cte,
    /// The database work of one order + prepay on PostgreSQL, statement for statement: the
    /// order INSERT (`POST /v1/orders`), then for `POST …/pay` the order read, the reusable-
    /// attempt lookup, the attempt start (one UPDATE→INSERT statement) and, after WeChat's
    /// answer, the prepay id UPDATE — five autocommit statements. New keys, nothing preloaded.
    OrderPrepay,
}

impl Script {
    pub fn label(self) -> &'static str {
        match self {
            Script::MarkPaid => "pgbench mark_paid (BEGIN+2+COMMIT)",
            Script::MarkPaidOld => "pgbench old mark_paid (BEGIN+5+COMMIT)",
            Script::NotifySql => "pgbench receipt+mark_paid",
            Script::Cte => "pgbench mark_paid as 1 CTE",
            Script::OrderPrepay => "pgbench order + prepay SQL (5 statements)",
        }
    }
}

const PREAMBLE: &str =
    "\\set i :base + :k * :nc + :client_id\n\\set k :k + 1\n\\set now 1700000000000\n";

/// The script text. Every transaction takes the next key of its client: `base + k·C + client`.
pub fn script(which: Script, merchant: &str) -> String {
    let mark_paid = format!(
        "BEGIN;\n\
         UPDATE payment_attempts SET state = 'SUCCEEDED', transaction_id = :i, paid_fen = 1, \
         paid_source = 'notify', paid_at = :now, updated_at = :now, next_query_at = NULL \
         WHERE out_trade_no = :i AND merchant_id = '{merchant}' AND amount_fen = 1 \
         AND state <> 'SUCCEEDED' RETURNING order_no \\gset a_\n\
         WITH o AS (UPDATE orders SET state = 'PAID', paid_out_trade_no = :i, \
         paid_receipt_id = :RID, paid_source = 'notify', paid_at = :now, updated_at = :now \
         WHERE order_no = :a_order_no AND state IN ('CREATED', 'PAYING') \
         RETURNING order_no, coupon_code), \
         c AS (UPDATE coupons SET state = 'USED', used_at = :now, updated_at = :now \
         WHERE code = (SELECT coupon_code FROM o) AND state = 'RESERVED' \
         AND order_no = (SELECT order_no FROM o)), \
         e AS (INSERT INTO outbox_events (id, event_type, order_no, payload, created_at) \
         SELECT :i, 'order.paid', order_no, '{SAMPLE_PAYLOAD}', :now FROM o), \
         r AS (UPDATE receipts SET outcome = 'paid' WHERE id = :RID AND EXISTS (SELECT 1 FROM o)) \
         SELECT order_no FROM o;\n\
         COMMIT;\n"
    );
    let mark_paid_old = format!(
        "BEGIN;\n\
         SELECT out_trade_no, order_no, merchant_id, protocol, amount_fen, state, prepay_id, \
         prepay_expires_at, transaction_id, paid_fen, paid_source, anomaly, created_at, updated_at, \
         paid_at, next_query_at, query_count, request_json FROM payment_attempts \
         WHERE out_trade_no = :i FOR UPDATE \\gset a_\n\
         UPDATE payment_attempts SET state = 'SUCCEEDED', transaction_id = :i, paid_fen = 1, \
         paid_source = 'notify', paid_at = :now, updated_at = :now, next_query_at = NULL \
         WHERE out_trade_no = :i AND state <> 'SUCCEEDED';\n\
         UPDATE orders SET state = 'PAID', paid_out_trade_no = :i, paid_receipt_id = :RID, \
         paid_source = 'notify', paid_at = :now, updated_at = :now \
         WHERE order_no = :a_order_no AND state IN ('CREATED', 'PAYING') RETURNING coupon_code;\n\
         INSERT INTO outbox_events (id, event_type, order_no, payload, created_at) \
         VALUES (:i, 'order.paid', :a_order_no, '{SAMPLE_PAYLOAD}', :now);\n\
         UPDATE receipts SET outcome = 'paid' WHERE id = :RID;\n\
         COMMIT;\n"
    );
    match which {
        Script::OrderPrepay => {
            use wxpay_store::{ATTEMPT_COLS, ORDER_COLS};
            format!(
                "{PREAMBLE}\\set exp :now + 1800000\n\\set pexp :now + 7200000\n\\set next :now + 10000\n\
                 INSERT INTO orders (order_no, user_id, subject, items_json, amount_fen, discount_fen, \
                 payable_fen, refunded_fen, coupon_code, state, created_at, updated_at, expires_at) \
                 VALUES (:i, 'bench-user-1', 'bench', NULL, 1, 0, 1, 0, NULL, 'CREATED', :now, :now, :exp) \
                 RETURNING {ORDER_COLS};\n\
                 SELECT {ORDER_COLS} FROM orders WHERE order_no = :i;\n\
                 SELECT {ATTEMPT_COLS} FROM payment_attempts a WHERE order_no = :i \
                 AND merchant_id = '{merchant}' AND state = 'PENDING' \
                 AND (prepay_id IS NULL OR prepay_expires_at > :now) \
                 AND amount_fen = (SELECT payable_fen FROM orders o WHERE o.order_no = a.order_no) \
                 ORDER BY created_at DESC LIMIT 1;\n\
                 WITH o AS (UPDATE orders SET state = 'PAYING', merchant_id = '{merchant}', \
                 updated_at = :now WHERE order_no = :i AND state IN ('CREATED', 'PAYING') \
                 AND expires_at > :now RETURNING order_no, payable_fen) \
                 INSERT INTO payment_attempts (out_trade_no, order_no, merchant_id, protocol, \
                 amount_fen, state, created_at, updated_at, next_query_at, query_count, request_json) \
                 SELECT :i, o.order_no, '{merchant}', 'v3', o.payable_fen, 'PENDING', :now, :now, \
                 :next, 0, '{SAMPLE_REQUEST}' FROM o RETURNING {ATTEMPT_COLS};\n\
                 UPDATE payment_attempts SET prepay_id = 'wx201410272009395522657a690389285100', \
                 prepay_expires_at = :pexp, updated_at = :now \
                 WHERE out_trade_no = :i AND state = 'PENDING';\n"
            )
        }
        Script::MarkPaid => format!("{PREAMBLE}{}", mark_paid.replace(":RID", ":i")),
        Script::MarkPaidOld => format!("{PREAMBLE}{}", mark_paid_old.replace(":RID", ":i")),
        Script::NotifySql => format!(
            "{PREAMBLE}INSERT INTO receipts (merchant_id, kind, received_at, remote_addr, query, \
             headers_json, body, body_truncated, verified, outcome, detail, out_trade_no, \
             transaction_id) VALUES ('{merchant}', 'payment', :now, '127.0.0.1', \
             'bank_billno=200000000000000&bank_type=WX&discount=0&fee_type=1&input_charset=UTF-8&notify_id=bench&partner=1900000109&sign=0000000000000000000000000000000&sign_key_index=1&sign_type=MD5&total_fee=1&trade_mode=1&trade_state=0&transaction_id=1900000109000000000000000000', \
             '[[\"content-type\",\"text/xml; charset=UTF-8\"]]', '{SAMPLE_BODY}', 0, 1, 'received', \
             NULL, :i, :i) RETURNING id AS rid \\gset r_\n{}",
            mark_paid.replace(":RID", ":r_rid")
        ),
        Script::Cte => format!(
            "{PREAMBLE}WITH a AS (UPDATE payment_attempts SET state = 'SUCCEEDED', \
             transaction_id = :i, paid_fen = 1, paid_source = 'notify', paid_at = :now, \
             updated_at = :now, next_query_at = NULL WHERE out_trade_no = :i \
             AND merchant_id = '{merchant}' AND amount_fen = 1 AND state <> 'SUCCEEDED' \
             RETURNING order_no), \
             o AS (UPDATE orders SET state = 'PAID', paid_out_trade_no = :i, paid_receipt_id = :i, \
             paid_source = 'notify', paid_at = :now, updated_at = :now \
             WHERE order_no = (SELECT order_no FROM a) AND state IN ('CREATED', 'PAYING') \
             RETURNING order_no, coupon_code), \
             c AS (UPDATE coupons SET state = 'USED', used_at = :now, updated_at = :now \
             WHERE code = (SELECT coupon_code FROM o) AND state = 'RESERVED' \
             AND order_no = (SELECT order_no FROM o)), \
             e AS (INSERT INTO outbox_events (id, event_type, order_no, payload, created_at) \
             SELECT :i, 'order.paid', order_no, '{SAMPLE_PAYLOAD}', :now FROM o), \
             r AS (UPDATE receipts SET outcome = 'paid' WHERE id = :i AND EXISTS (SELECT 1 FROM o)) \
             SELECT order_no, coupon_code FROM o;\n"
        ),
    }
}

/// The order lookup of `GET /v1/orders/{no}` (`Store::get_order`) on a random key of
/// `from..to`.
pub fn lookup_script(from: i64, to: i64) -> String {
    format!(
        "\\set r random({from}, {})\nSELECT {} FROM orders WHERE order_no = CAST(:r AS TEXT);\n",
        to - 1,
        wxpay_store::ORDER_COLS
    )
}

/// What pgbench reported.
#[derive(Clone, Debug, Default)]
pub struct PgbenchOut {
    pub tps: f64,
    pub latency_avg_ms: f64,
    pub processed: u64,
    pub failed: u64,
}

fn number_after(text: &str, label: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.trim_start().starts_with(label))?;
    let rest = line.trim_start()[label.len()..].trim_start();
    let num: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    num.parse().ok()
}

/// Parses pgbench's summary.
pub fn parse_pgbench(out: &str) -> Option<PgbenchOut> {
    Some(PgbenchOut {
        tps: number_after(out, "tps =")?,
        latency_avg_ms: number_after(out, "latency average =").unwrap_or(0.0),
        processed: number_after(out, "number of transactions actually processed:").unwrap_or(0.0)
            as u64,
        failed: number_after(out, "number of failed transactions:").unwrap_or(0.0) as u64,
    })
}

/// Runs `script` at concurrency `c`, `per_client` transactions per client, keys from `base`
/// (`base .. base + c·per_client` must be loaded with [`Rows::PendingWithReceipts`]).
pub async fn pgbench(
    bin: &Path,
    url: &str,
    script_text: &str,
    c: usize,
    per_client: usize,
    base: i64,
) -> Result<PgbenchOut, String> {
    let path = std::env::temp_dir().join(format!(
        "wxpay-bench-{}-{}.sql",
        std::process::id(),
        wxpay_store::new_id("")
    ));
    std::fs::write(&path, script_text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    let out = tokio::process::Command::new(bin)
        .arg("-n")
        .args(["-M", "prepared"])
        .args(["-c", &c.to_string()])
        .args(["-j", &c.clamp(1, 2).to_string()])
        .args(["-t", &per_client.to_string()])
        .args(["-D", "k=0"])
        .args(["-D", &format!("nc={c}")])
        .args(["-D", &format!("base={base}")])
        .arg("-f")
        .arg(&path)
        .arg(url)
        .output()
        .await;
    let _ = std::fs::remove_file(&path);
    let out = out.map_err(|e| format!("running {}: {e}", bin.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    match parse_pgbench(&stdout) {
        Some(r) if out.status.success() => Ok(r),
        _ => Err(format!(
            "pgbench failed ({}): {}",
            out.status,
            stderr.lines().rev().take(3).collect::<Vec<_>>().join(" | ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_pgbench_summary() {
        let out = "transaction type: /tmp/x.sql\nscaling factor: 1\nquery mode: prepared\n\
                   number of clients: 8\nnumber of threads: 2\n\
                   number of transactions actually processed: 24000/24000\n\
                   number of failed transactions: 0 (0.000%)\nlatency average = 6.530 ms\n\
                   initial connection time = 17.556 ms\n\
                   tps = 1225.106912 (without initial connection time)\n";
        let r = parse_pgbench(out).unwrap();
        assert_eq!(r.tps, 1225.106912);
        assert_eq!(r.latency_avg_ms, 6.53);
        assert_eq!(r.processed, 24000);
        assert_eq!(r.failed, 0);
        assert!(parse_pgbench("no summary").is_none());
    }

    #[test]
    fn scripts_take_one_key_per_transaction() {
        for s in [
            Script::MarkPaid,
            Script::MarkPaidOld,
            Script::NotifySql,
            Script::Cte,
            Script::OrderPrepay,
        ] {
            let text = script(s, "legacy-demo");
            assert!(text.starts_with(PREAMBLE));
            assert!(!text.contains(":RID"));
            assert!(text.contains("WHERE out_trade_no = :i"));
        }
        assert!(script(Script::NotifySql, "m").contains("paid_receipt_id = :r_rid"));
        // Every `:name` pgbench will substitute is a variable the script or the run defines.
        for s in [
            Script::MarkPaid,
            Script::MarkPaidOld,
            Script::NotifySql,
            Script::Cte,
            Script::OrderPrepay,
        ] {
            let text = script(s, "v3-demo");
            let b = text.as_bytes();
            for (at, _) in text.match_indices(':') {
                let name: String = b[at + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                    .map(|c| *c as char)
                    .collect();
                if name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
                    let known = [
                        "i",
                        "k",
                        "nc",
                        "client_id",
                        "base",
                        "now",
                        "exp",
                        "pexp",
                        "next",
                    ];
                    assert!(
                        known.contains(&name.as_str())
                            || name.starts_with("a_")
                            || name.starts_with("r_"),
                        "{s:?}: :{name} is not a variable"
                    );
                }
            }
        }
        let op = script(Script::OrderPrepay, "v3-demo");
        assert_eq!(op.matches(";\n").count(), 5, "five statements: {op}");
        assert!(op.contains("INSERT INTO orders") && op.contains("SET prepay_id"));
    }
}
