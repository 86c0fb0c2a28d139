//! The admin console at `/admin`, through HTTP as a browser would use it (cookies and forms by
//! hand, no redirects followed) — on SQLite, and on PostgreSQL + Redis when
//! `WXPAY_TEST_DATABASE_URL` / `WXPAY_TEST_REDIS_URL` are set.

mod common;

use common::*;
use reqwest::header::HeaderMap;
use secrecy::SecretString;
use serde_json::{Value, json};
use wxpay_sandbox::config as sb;
use wxpay_server::configuration::WebhookSettings;
use wxpay_store::testing::TestDb;
use wxpay_store::{
    AttemptOutcome, NewOrder, NewRefund, PaidSource, PaymentSuccess, WebhookEndpoint,
};

const ADMIN_KEY: &str = "adm_test";

fn form_encode(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A browser without JavaScript: one cookie, no redirects followed.
struct Browser {
    base: String,
    http: reqwest::Client,
    cookie: Option<String>,
}

struct Page {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    /// The CSRF token of the page's forms.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no csrf field in page: {}", self.body));
        let rest = &self.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_string()
    }
}

impl Browser {
    fn new(app: &TestApp) -> Browser {
        Browser {
            base: app.base.clone(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookie: None,
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Page {
        let req = match &self.cookie {
            Some(c) => req.header("cookie", format!("wxpay_console={c}")),
            None => req,
        };
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        Page {
            status,
            headers,
            body: r.text().await.unwrap(),
        }
    }

    async fn get(&self, path: &str) -> Page {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        self.post_with(path, fields, &[]).await
    }

    async fn post_with(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Page {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_encode(fields));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req).await
    }

    /// Logs in with `key`; keeps the session cookie on success.
    async fn login(&mut self, key: &str) -> Page {
        let page = self
            .post("/admin/login", &[("key", key), ("next", "/admin/orders")])
            .await;
        if let Some(set) = page.headers.get("set-cookie") {
            let set = set.to_str().unwrap();
            let value = set
                .strip_prefix("wxpay_console=")
                .and_then(|s| s.split(';').next())
                .unwrap();
            self.cookie = Some(value.to_string());
        }
        page
    }

    async fn logged_in(app: &TestApp) -> Browser {
        let mut b = Browser::new(app);
        let p = b.login(ADMIN_KEY).await;
        assert_eq!(p.status, 303, "{}", p.body);
        b
    }
}

/// Creates an order, opens a legacy attempt, pays it at the sandbox and waits for PAID.
async fn paid_order(
    app: &TestApp,
    sandbox: &wxpay_sandbox::SandboxHandle,
    user: &str,
    fen: i64,
) -> (String, Value) {
    let order = app.create_order(user, fen, None).await;
    let order_no = order["order_no"].as_str().unwrap().to_string();
    let pay = app.pay(&order_no).await;
    sandbox
        .pay_prepay(pay["app_params"]["prepayid"].as_str().unwrap())
        .unwrap();
    app.wait_state(&order_no, "PAID").await;
    (order_no, pay)
}

/// A verified success of the wrong amount for an open attempt: an AMOUNT_MISMATCH anomaly.
async fn amount_mismatch(app: &TestApp) -> (String, i64) {
    let order = app.create_order("u-anomaly", 500, None).await;
    let order_no = order["order_no"].as_str().unwrap().to_string();
    let pay = app.pay(&order_no).await;
    let out = pay["out_trade_no"].as_str().unwrap().to_string();
    app.state
        .store
        .mark_paid(
            &PaymentSuccess {
                merchant_id: "legacy-demo".into(),
                out_trade_no: out,
                transaction_id: "4200000000000000000000000001".into(),
                paid_fen: 5,
                source: PaidSource::Query,
                receipt_id: None,
                refund_if_late: false,
            },
            app.state.now_ms(),
        )
        .await
        .unwrap();
    let anomalies = app.state.store.list_anomalies(&order_no).await.unwrap();
    assert_eq!(anomalies.len(), 1);
    (order_no, anomalies[0].id)
}

#[tokio::test]
async fn console_pages_need_a_login_and_a_wrong_key_is_refused() {
    for db in TestDb::all().await.unwrap() {
        let sandbox = sandbox().await;
        let app = spawn_app(&db, &sandbox, &cache_for(&db), &random_prefix()).await;
        let mut b = Browser::new(&app);
        for path in [
            "/admin",
            "/admin/orders?state=PAID",
            "/admin/orders/o1",
            "/admin/anomalies",
            "/admin/webhooks",
            "/admin/reconciliation",
        ] {
            let p = b.get(path).await;
            assert_eq!(p.status, 303, "{path}");
            assert!(
                p.location().starts_with("/admin/login?next="),
                "{path} → {}",
                p.location()
            );
        }
        assert_eq!(
            b.get("/admin/orders?state=PAID").await.location(),
            "/admin/login?next=%2Fadmin%2Forders%3Fstate%3DPAID"
        );
        // The admin key as a bearer token is for the JSON API, not a console session.
        let p = b
            .send(
                b.http
                    .get(format!("{}/admin/orders", app.base))
                    .bearer_auth(ADMIN_KEY),
            )
            .await;
        assert_eq!(p.status, 303);
        // The JSON admin API stays bearer-authenticated.
        let (s, _) = app.get("/admin/api/webhook-deliveries", "nope").await;
        assert_eq!(s, 401);
        let (s, _) = app.get("/admin/api/webhook-deliveries", ADMIN_KEY).await;
        assert_eq!(s, 200);

        let login = b.get("/admin/login").await;
        assert_eq!(login.status, 200);
        assert!(login.body.contains("type=\"password\" name=\"key\""));
        // A wrong key: refused, no cookie.
        let p = b.login("adm_wrong").await;
        assert_eq!(p.status, 401);
        assert!(p.headers.get("set-cookie").is_none());
        assert!(p.body.contains("Wrong admin key"));
        assert!(b.cookie.is_none());
        assert_eq!(b.get("/admin").await.status, 303);
        // A forged cookie is no session.
        b.cookie = Some(format!("{}.{}.AAAA", 4_000_000_000i64, "0".repeat(32)));
        assert_eq!(b.get("/admin").await.status, 303);
        b.cookie = None;

        // The right key: a session cookie with the right attributes and no secret in it.
        let p = b.login(ADMIN_KEY).await;
        assert_eq!(p.status, 303);
        assert_eq!(p.location(), "/admin/orders");
        let set = p.headers.get("set-cookie").unwrap().to_str().unwrap();
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/admin", "Max-Age="] {
            assert!(set.contains(attr), "{set}");
        }
        assert!(!set.contains(ADMIN_KEY), "{set}");
        let p = b.get("/admin/orders").await;
        assert_eq!(p.status, 200, "{}", p.body);
        assert!(p.body.contains("<h1>Orders</h1>"));
        assert!(
            p.headers
                .get("content-security-policy")
                .unwrap()
                .to_str()
                .unwrap()
                .contains("default-src 'none'")
        );
        assert_eq!(p.headers.get("x-frame-options").unwrap(), "DENY");
        // The login page sends a logged-in browser on.
        assert_eq!(
            b.get("/admin/login?next=/admin/webhooks").await.location(),
            "/admin/webhooks"
        );
        // An open redirect is not possible through `next`.
        assert_eq!(
            b.get("/admin/login?next=//evil.example/").await.location(),
            "/admin"
        );

        // Logging out ends the session, even for someone who kept the cookie.
        let csrf = p.csrf();
        let kept = b.cookie.clone();
        let out = b.post("/admin/logout", &[("csrf", &csrf)]).await;
        assert_eq!(out.status, 303);
        assert_eq!(out.location(), "/admin/login?msg=logged_out");
        assert!(
            out.headers
                .get("set-cookie")
                .unwrap()
                .to_str()
                .unwrap()
                .contains("Max-Age=0")
        );
        b.cookie = kept;
        assert_eq!(b.get("/admin/orders").await.status, 303);
        // Assets are embedded and served without a session.
        let css = b.get("/admin/assets/console.css").await;
        assert_eq!(css.status, 200);
        assert!(
            css.headers
                .get("content-type")
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("text/css")
        );
        assert_eq!(b.get("/admin/assets/console.js").await.status, 200);
    }
}

#[tokio::test]
async fn state_changing_posts_need_the_sessions_csrf_token() {
    for db in TestDb::all().await.unwrap() {
        let sandbox = sandbox().await;
        let app = spawn_app(&db, &sandbox, &cache_for(&db), &random_prefix()).await;
        let (order_no, id) = amount_mismatch(&app).await;
        let b = Browser::logged_in(&app).await;
        let other = Browser::logged_in(&app).await;
        let page = b.get("/admin/anomalies").await;
        assert_eq!(page.status, 200);
        let csrf = page.csrf();
        let other_csrf = other.get("/admin/anomalies").await.csrf();
        assert_ne!(csrf, other_csrf, "a token per session");
        let action = format!("/admin/anomalies/{id}/resolve");
        // No token, a wrong token, another session's token: 403 and nothing changes.
        for fields in [
            vec![("resolution", "refunded")],
            vec![("resolution", "refunded"), ("csrf", "")],
            vec![("resolution", "refunded"), ("csrf", "bm9wZQ")],
            vec![("resolution", "refunded"), ("csrf", other_csrf.as_str())],
        ] {
            let p = b.post(&action, &fields).await;
            assert_eq!(p.status, 403, "{fields:?}: {}", p.body);
        }
        // The right token from a page the browser calls cross-site: refused too.
        let p = b
            .post_with(
                &action,
                &[("resolution", "refunded"), ("csrf", &csrf)],
                &[("sec-fetch-site", "cross-site")],
            )
            .await;
        assert_eq!(p.status, 403);
        // No session at all: to the login page.
        let anon = Browser::new(&app);
        let p = anon
            .post(&action, &[("resolution", "refunded"), ("csrf", &csrf)])
            .await;
        assert_eq!(p.status, 303);
        assert!(p.location().starts_with("/admin/login"));
        // Logout needs the token too.
        assert_eq!(b.post("/admin/logout", &[]).await.status, 403);
        let still = app.state.store.list_anomalies(&order_no).await.unwrap();
        assert_eq!(still[0].resolved_at, None);
        // With the token, it is done.
        let p = b
            .post(
                &action,
                &[
                    ("resolution", "refunded"),
                    ("csrf", &csrf),
                    ("next", "/admin/anomalies"),
                ],
            )
            .await;
        assert_eq!(p.status, 303, "{}", p.body);
        assert_eq!(p.location(), "/admin/anomalies?msg=resolved");
        let done = app.state.store.list_anomalies(&order_no).await.unwrap();
        assert_eq!(done[0].resolution.as_deref(), Some("refunded"));
    }
}

#[tokio::test]
async fn order_filters_search_and_paging() {
    for db in TestDb::all().await.unwrap() {
        let sandbox = sandbox().await;
        let app = spawn_app(&db, &sandbox, &cache_for(&db), &random_prefix()).await;
        let (paid_no, pay) = paid_order(&app, &sandbox, "alice", 1099).await;
        let out_trade_no = pay["out_trade_no"].as_str().unwrap().to_string();
        let transaction_id = app
            .state
            .store
            .get_attempt(&out_trade_no)
            .await
            .unwrap()
            .unwrap()
            .transaction_id
            .unwrap();
        let bob = app.create_order("bob", 250, None).await;
        let bob_no = bob["order_no"].as_str().unwrap().to_string();
        let b = Browser::logged_in(&app).await;

        let rows = |body: &str| body.matches("<tr><td><a href=\"/admin/orders/").count();
        let all = b.get("/admin/orders").await;
        assert_eq!(all.status, 200);
        assert_eq!(rows(&all.body), 2);
        assert!(all.body.contains("1–2 of 2 orders"));
        assert!(all.body.contains("¥10.99"), "money in yuan from fen");

        let paid = b.get("/admin/orders?state=PAID").await.body;
        assert_eq!(rows(&paid), 1);
        assert!(paid.contains(&paid_no) && !paid.contains(&bob_no));
        let created = b.get("/admin/orders?state=CREATED").await.body;
        assert!(created.contains(&bob_no) && !created.contains(&paid_no));
        let by_user = b.get("/admin/orders?user_id=bob").await.body;
        assert_eq!(rows(&by_user), 1);
        assert!(by_user.contains(&bob_no));
        let by_merchant = b.get("/admin/orders?merchant=legacy-demo").await.body;
        assert_eq!(rows(&by_merchant), 1, "bob never opened an attempt");
        assert!(by_merchant.contains(&paid_no));
        for q in [&paid_no, &out_trade_no, &transaction_id] {
            let found = b.get(&format!("/admin/orders?q={}", enc(q))).await.body;
            assert_eq!(rows(&found), 1, "search {q}");
            assert!(found.contains(&paid_no), "search {q}");
        }
        assert_eq!(
            rows(&b.get("/admin/orders?q=nothing-like-this").await.body),
            0
        );
        // Dates are UTC days, both ends included.
        let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
        let today_rows = b
            .get(&format!("/admin/orders?from={today}&to={today}"))
            .await
            .body;
        assert_eq!(rows(&today_rows), 2);
        assert_eq!(
            rows(
                &b.get("/admin/orders?from=2001-01-01&to=2001-01-02")
                    .await
                    .body
            ),
            0
        );
        assert_eq!(
            rows(
                &b.get("/admin/orders?to=2001-01-02&user_id=alice")
                    .await
                    .body
            ),
            0
        );
        // Bad filters are a 400 page, not a 500.
        assert_eq!(b.get("/admin/orders?state=NOPE").await.status, 400);
        assert_eq!(b.get("/admin/orders?from=yesterday").await.status, 400);
        assert_eq!(b.get("/admin/orders?page=0").await.status, 400);

        // Paging: 50 a page, newest first, filters kept in the links.
        let now = app.state.now_ms();
        for i in 0..55 {
            app.state
                .store
                .create_order(
                    &NewOrder {
                        order_no: format!("bulk{i:03}"),
                        user_id: "carol".into(),
                        subject: format!("bulk {i}"),
                        items_json: None,
                        amount_fen: 100 + i,
                        coupon_code: None,
                        expires_at: now + 1_800_000,
                    },
                    now + i,
                )
                .await
                .unwrap();
        }
        let p1 = b.get("/admin/orders?user_id=carol").await.body;
        assert_eq!(rows(&p1), 50);
        assert!(p1.contains("1–50 of 55 orders"));
        assert!(p1.contains("bulk054") && !p1.contains("bulk004"));
        assert!(
            p1.contains("href=\"/admin/orders?user_id=carol&amp;page=2\""),
            "{p1}"
        );
        let p2 = b.get("/admin/orders?user_id=carol&page=2").await.body;
        assert_eq!(rows(&p2), 5);
        assert!(p2.contains("51–55 of 55 orders"));
        assert!(p2.contains("bulk000") && p2.contains("bulk004") && !p2.contains("bulk005"));
    }
}

#[tokio::test]
async fn a_paid_orders_timeline_shows_its_attempt_notification_and_event() {
    for db in TestDb::all().await.unwrap() {
        let sandbox = sandbox().await;
        let app = spawn_app(&db, &sandbox, &cache_for(&db), &random_prefix()).await;
        let (order_no, pay) = paid_order(&app, &sandbox, "u1", 999).await;
        let out_trade_no = pay["out_trade_no"].as_str().unwrap();
        let prepay_id = pay["app_params"]["prepayid"].as_str().unwrap();
        let events = app.state.store.list_events(&order_no).await.unwrap();
        let paid_event = events
            .iter()
            .find(|e| e.event_type == "order.paid")
            .unwrap();
        let receipts = app.state.store.list_receipts(out_trade_no).await.unwrap();
        assert!(!receipts.is_empty());
        // (The legacy protocol refunds outside wxpay; a refund row as the v3 flow would make.)
        app.state
            .store
            .create_refund(
                &NewRefund {
                    order_no: order_no.clone(),
                    out_refund_no: "rf-console-1".into(),
                    amount_fen: 300,
                    reason: Some("<broken cup>".into()),
                    next_query_at: None,
                },
                app.state.now_ms(),
            )
            .await
            .unwrap();
        let b = Browser::logged_in(&app).await;

        let p = b.get(&format!("/admin/orders/{order_no}")).await;
        assert_eq!(p.status, 200, "{}", p.body);
        let body = &p.body;
        for needle in [
            out_trade_no,
            prepay_id,
            "Payment attempt",
            "SUCCEEDED",
            &format!("Notification #{}", receipts[0].id),
            "verified",
            "outcome <span class=\"badge ok\">paid</span>",
            "order.paid",
            &paid_event.id,
            "¥9.99",
            "<ol class=\"timeline\">",
            "Refund <code>rf-console-1</code> of ¥3.00",
            "&lt;broken cup&gt;",
        ] {
            assert!(body.contains(needle), "timeline lacks {needle:?}");
        }
        // In time order: the order, its attempt, the notification, the event.
        let pos = |s: &str| body.find(s).unwrap_or_else(|| panic!("{s}"));
        let timeline = pos("<ol class=\"timeline\">");
        let created = timeline + body[timeline..].find("Order created").unwrap();
        let opened = timeline + body[timeline..].find("Payment attempt").unwrap();
        let notified = timeline + body[timeline..].find("Notification #").unwrap();
        let event = timeline + body[timeline..].find("Event <strong>order.paid").unwrap();
        assert!(created < opened && opened < notified && notified < event);
        // No webhook endpoint is configured here: the page says so and offers no redelivery.
        assert!(body.contains("No webhook endpoint is configured"));
        // Secrets of the merchant never reach the page.
        for secret in [
            sb::DEMO_LEGACY_APP_KEY,
            sb::DEMO_LEGACY_PARTNER_KEY,
            sb::DEMO_LEGACY_APP_SECRET,
            sb::DEMO_V3_APIV3_KEY,
            "PRIVATE KEY",
            ADMIN_KEY,
            API_KEY,
        ] {
            assert!(!body.contains(secret), "a secret on the page");
        }
        // An unknown order is a 404 page.
        assert_eq!(b.get("/admin/orders/no-such-order").await.status, 404);

        // The overview charts the payment and the success rate.
        let o = b.get("/admin").await;
        assert_eq!(o.status, 200);
        assert!(o.body.contains("<svg class=\"chart\""));
        assert_eq!(o.body.matches("<rect class=\"bar\"").count(), 1);
        assert!(o.body.contains("1 of 1 attempts succeeded (100%)"));
        assert!(o.body.contains("<strong>1</strong> orders paid (¥9.99)"));
        for secret in [sb::DEMO_LEGACY_PARTNER_KEY, ADMIN_KEY, API_KEY] {
            assert!(!o.body.contains(secret));
        }
    }
}

#[tokio::test]
async fn anomalies_and_rejected_notifications_are_resolved_from_the_queue() {
    for db in TestDb::all().await.unwrap() {
        let sandbox = sandbox().await;
        let app = spawn_app(&db, &sandbox, &cache_for(&db), &random_prefix()).await;
        let (order_no, id) = amount_mismatch(&app).await;
        // A forged notification: kept as a rejected receipt.
        let r = app
            .http
            .post(format!(
                "{}/notify/legacy-demo?out_trade_no=forged-otn&total_fee=1&sign=BAD",
                app.base
            ))
            .body("<xml><Forged>yes</Forged></xml>")
            .send()
            .await
            .unwrap();
        assert_eq!(r.text().await.unwrap(), "fail");
        let b = Browser::logged_in(&app).await;
        let q = b.get("/admin/anomalies").await;
        assert_eq!(q.status, 200);
        assert!(q.body.contains("AMOUNT_MISMATCH"));
        assert!(q.body.contains("REJECTED_NOTIFICATION"));
        assert!(q.body.contains("forged-otn"));
        assert!(
            q.body.contains("&lt;xml&gt;&lt;Forged&gt;yes"),
            "body shown escaped"
        );
        assert!(
            q.body.contains("<span class=\"count\">2</span>"),
            "nav count"
        );
        let csrf = q.csrf();
        let receipt_id = {
            let at = q.body.find("<tr class=\"receipt\" data-id=\"").unwrap();
            let rest = &q.body[at + "<tr class=\"receipt\" data-id=\"".len()..];
            rest[..rest.find('"').unwrap()].parse::<i64>().unwrap()
        };

        // An empty note is refused.
        let p = b
            .post(
                &format!("/admin/anomalies/{id}/resolve"),
                &[("resolution", "  "), ("csrf", &csrf)],
            )
            .await;
        assert_eq!(p.status, 400);
        let p = b
            .post(
                &format!("/admin/anomalies/{id}/resolve"),
                &[
                    ("resolution", "asked WeChat; refunded 0.05 by hand"),
                    ("csrf", &csrf),
                    ("next", "/admin/anomalies"),
                ],
            )
            .await;
        assert_eq!(
            (p.status, p.location()),
            (303, "/admin/anomalies?msg=resolved")
        );
        let a = &app.state.store.list_anomalies(&order_no).await.unwrap()[0];
        assert!(a.resolved_at.is_some());
        assert_eq!(
            a.resolution.as_deref(),
            Some("asked WeChat; refunded 0.05 by hand")
        );
        // Twice: the first resolution stands.
        let p = b
            .post(
                &format!("/admin/anomalies/{id}/resolve"),
                &[("resolution", "other"), ("csrf", &csrf)],
            )
            .await;
        assert_eq!(p.location(), "/admin/anomalies?msg=already_resolved");
        let a = &app.state.store.list_anomalies(&order_no).await.unwrap()[0];
        assert_eq!(
            a.resolution.as_deref(),
            Some("asked WeChat; refunded 0.05 by hand")
        );
        assert_eq!(
            b.post(
                "/admin/anomalies/999999/resolve",
                &[("resolution", "x"), ("csrf", &csrf)]
            )
            .await
            .status,
            404
        );

        // The rejected notification.
        let p = b
            .post(
                &format!("/admin/receipts/{receipt_id}/resolve"),
                &[("resolution", "forgery from a scanner"), ("csrf", &csrf)],
            )
            .await;
        assert_eq!(
            (p.status, p.location()),
            (303, "/admin/anomalies?msg=resolved")
        );
        let p = b
            .post(
                &format!("/admin/receipts/{receipt_id}/resolve"),
                &[("resolution", "again"), ("csrf", &csrf)],
            )
            .await;
        assert_eq!(p.location(), "/admin/anomalies?msg=already_resolved");

        let open = b.get("/admin/anomalies?msg=resolved").await.body;
        assert!(open.contains("Nothing to review."), "{open}");
        assert!(open.contains("<p class=\"flash ok\">Resolved.</p>"));
        let all = b.get("/admin/anomalies?show=all").await.body;
        assert!(all.contains("asked WeChat; refunded 0.05 by hand"));
        assert!(all.contains("forgery from a scanner"));
        assert!(all.contains("REJECTED_NOTIFICATION"));
        // The order's timeline shows the anomaly and its resolution.
        let t = b.get(&format!("/admin/orders/{order_no}")).await.body;
        assert!(t.contains("AMOUNT_MISMATCH") && t.contains("asked WeChat; refunded 0.05 by hand"));
    }
}

#[tokio::test]
async fn rendered_values_are_html_escaped() {
    for db in TestDb::all().await.unwrap() {
        let sandbox = sandbox().await;
        let app = spawn_app(&db, &sandbox, &cache_for(&db), &random_prefix()).await;
        let evil = r#"<script>alert("x")</script>'"#;
        let (s, order) = app
            .post(
                "/v1/orders",
                API_KEY,
                json!({"user_id": "<b>u</b>", "subject": evil, "amount_fen": 100}),
            )
            .await;
        assert_eq!(s, 201, "{order}");
        let order_no = order["order_no"].as_str().unwrap();
        let b = Browser::logged_in(&app).await;
        let escaped = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&#39;";
        for path in [
            "/admin/orders".to_string(),
            format!("/admin/orders/{order_no}"),
            format!("/admin/orders?user_id={}", enc("<b>u</b>")),
        ] {
            let p = b.get(&path).await;
            assert_eq!(p.status, 200, "{path}");
            assert!(p.body.contains(escaped), "{path}: {}", p.body);
            assert!(!p.body.contains("<script>alert"), "{path}");
            assert!(p.body.contains("&lt;b&gt;u&lt;/b&gt;"), "{path}");
            assert!(!p.body.contains("<b>u</b>"), "{path}");
        }
        // Filter values echoed into the form are escaped too.
        let p = b
            .get(&format!("/admin/orders?q={}", enc("\"><script>x</script>")))
            .await;
        assert!(
            p.body
                .contains("value=\"&quot;&gt;&lt;script&gt;x&lt;/script&gt;\"")
        );
        assert!(!p.body.contains("<script>x"));
    }
}

#[tokio::test]
async fn webhook_deliveries_are_listed_and_redelivered() {
    for db in TestDb::all().await.unwrap() {
        let sandbox = sandbox().await;
        // An endpoint nobody listens on: deliveries stay PENDING; nothing is sent in this test.
        let url = "http://127.0.0.1:9/hooks?token=shh".to_string();
        let app = spawn_app_custom(
            &db,
            &sandbox,
            &cache_for(&db),
            &random_prefix(),
            std::sync::Arc::new(wxpay_gateway::SystemClock),
            |s| {
                s.webhooks = vec![WebhookSettings {
                    url: url.clone(),
                    secret: SecretString::from("whsec_console_test"),
                    events: vec![],
                }];
            },
        )
        .await;
        let eps = [WebhookEndpoint {
            url: url.clone(),
            events: vec![],
        }];
        let store = &app.state.store;
        store
            .register_webhook_endpoints(&eps, app.state.now_ms())
            .await
            .unwrap();
        let (order_no, _) = paid_order(&app, &sandbox, "u1", 300).await;
        store
            .fan_out_webhooks(&eps, app.state.now_ms(), 100)
            .await
            .unwrap();
        let event = store.list_events(&order_no).await.unwrap().remove(0);
        let b = Browser::logged_in(&app).await;
        let p = b.get("/admin/webhooks").await;
        assert_eq!(p.status, 200);
        assert!(p.body.contains(&event.id));
        assert!(p.body.contains("order.paid"));
        assert!(p.body.contains("http://127.0.0.1:9/hooks"));
        assert!(
            !p.body.contains("token=shh"),
            "endpoint URLs are shown without their query"
        );
        assert!(!p.body.contains("whsec_console_test"));
        assert!(p.body.contains("class=\"redeliver\""));
        assert!(
            b.get("/admin/webhooks?state=DEAD")
                .await
                .body
                .contains("No deliveries.")
        );
        assert_eq!(b.get("/admin/webhooks?state=NOPE").await.status, 400);
        // The order's timeline shows the delivery, with its redeliver button.
        let t = b.get(&format!("/admin/orders/{order_no}")).await;
        let csrf = t.csrf();
        assert!(t.body.contains("Webhook order.paid"));
        assert!(t.body.contains(&format!(
            "action=\"/admin/webhooks/events/{}/redeliver\"",
            event.id
        )));
        // Mark it dead, then redeliver from the console: PENDING again with a fresh budget.
        let claimed = store
            .claim_due_webhooks(
                "console-test",
                std::slice::from_ref(&url),
                app.state.now_ms(),
                60_000,
                10,
            )
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        assert!(
            store
                .record_webhook_attempt(
                    claimed[0].id,
                    "console-test",
                    AttemptOutcome::Dead,
                    Some(500),
                    Some("<upstream> said no"),
                    app.state.now_ms(),
                )
                .await
                .unwrap()
        );
        let dead = b.get("/admin/webhooks?state=DEAD").await.body;
        assert!(dead.contains(&event.id));
        assert!(dead.contains("last HTTP 500"));
        assert!(dead.contains("&lt;upstream&gt; said no"));
        let next = format!("/admin/orders/{order_no}");
        let action = format!("/admin/webhooks/events/{}/redeliver", event.id);
        assert_eq!(b.post(&action, &[("next", &next)]).await.status, 403);
        let p = b.post(&action, &[("csrf", &csrf), ("next", &next)]).await;
        assert_eq!(p.status, 303, "{}", p.body);
        assert_eq!(p.location(), format!("{next}?msg=redelivered"));
        let d = store.event_deliveries(&event.id).await.unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].state.as_str(), d[0].attempts), ("PENDING", 0));
        let shown = b.get(p.location()).await.body;
        assert!(shown.contains("queued for delivery again"));
        assert_eq!(
            b.post(
                "/admin/webhooks/events/evt_nope/redeliver",
                &[("csrf", &csrf)]
            )
            .await
            .status,
            404
        );
    }
}

#[tokio::test]
async fn reconciliation_page_lists_reports_or_says_there_are_none() {
    for db in TestDb::all().await.unwrap() {
        let sandbox = sandbox().await;
        let app = spawn_app(&db, &sandbox, &cache_for(&db), &random_prefix()).await;
        let b = Browser::logged_in(&app).await;
        let p = b.get("/admin/reconciliation").await;
        assert_eq!(p.status, 200);
        assert!(p.body.contains("No reconciliation reports yet"));
        let report = wxpay_store::reconcile::NewReconciliationReport {
            merchant_id: "v3-demo".into(),
            bill_date: "2026-11-01".into(),
            status: wxpay_store::reconcile::REPORT_UNRESOLVED.into(),
            counts: wxpay_store::reconcile::ReconciliationCounts {
                bill_rows: 2,
                bill_payments: 2,
                bill_payments_fen: 1234,
                matched: 1,
                missing_at_wechat: 1,
                unresolved: 1,
                ..Default::default()
            },
            differences_json: json!([{"kind": "missing_at_wechat", "out_trade_no": "<otn>"}])
                .to_string(),
        };
        app.state
            .store
            .insert_reconciliation_report(&report, app.state.now_ms())
            .await
            .unwrap();
        let p = b.get("/admin/reconciliation").await.body;
        assert!(p.contains("2026-11-01"));
        assert!(p.contains("UNRESOLVED"));
        assert!(p.contains("¥12.34"));
        assert!(p.contains("missing_at_wechat"));
        assert!(p.contains("&lt;otn&gt;") && !p.contains("<otn>"));
    }
}
