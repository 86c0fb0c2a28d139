//! The admin console at `/admin`: server-rendered HTML with every asset embedded (no CDN, works
//! offline), for the people who run wxpay.
//!
//! | route | |
//! |---|---|
//! | `GET /admin/login`, `POST /admin/login` | the admin key on a form; sets the session cookie |
//! | `POST /admin/logout` | ends the session |
//! | `GET /admin` | overview: orders by state, the queue, payments per minute and success rate |
//! | `GET /admin/orders` | `?state=&merchant=&user_id=&q=&from=&to=&page=` (q: order_no, out_trade_no or transaction_id; dates UTC, inclusive) |
//! | `GET /admin/orders/{order_no}` | the order's timeline: attempts, notifications, events, refunds, anomalies, webhook deliveries |
//! | `GET /admin/anomalies` | `?show=all` includes resolved ones |
//! | `POST /admin/anomalies/{id}/resolve`, `POST /admin/receipts/{id}/resolve` | `resolution` note |
//! | `GET /admin/webhooks` | `?state=&order_no=&event_id=&before=` |
//! | `POST /admin/webhooks/events/{event_id}/redeliver` | sends an event again |
//! | `GET /admin/reconciliation` | `?merchant=&before=` stored reconciliation reports |
//! | `GET /admin/assets/{console.css,console.js}` | embedded assets |
//!
//! Security: the session cookie is `HttpOnly; SameSite=Strict; Path=/admin` and holds a signed,
//! expiring token, no secret ([`session`]). Every POST but the login carries the session's CSRF
//! token in a hidden field and is refused (403) without it; a POST that a browser marks
//! `Sec-Fetch-Site: cross-site` is refused too. Without a session every page redirects to the
//! login page. Every rendered value is HTML-escaped; keys, tokens and private keys are never
//! rendered. The JSON admin API (`/admin/api/…`) stays bearer-authenticated and is not served
//! from here.

mod chart;
pub mod html;
mod pages;
pub mod session;

use crate::routes::State;
use axum::Router;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, OriginalUri, Query, State as S};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use html::{esc, layout};
use secrecy::ExposeSecret;
use session::{COOKIE, SESSION_TTL_SECS, Session, Sessions};
use std::collections::HashMap;
use std::sync::Arc;
use wxpay_store::StoreError;

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// What console handlers share.
#[derive(Clone)]
pub struct Console {
    pub app: State,
    sessions: Arc<Sessions>,
}

/// A request with a valid session.
pub struct Ctx {
    pub session: Session,
    pub csrf: String,
}

type Params = HashMap<String, String>;

/// The console's routes, with their own state; mergeable into a router of any state.
pub fn router<S2: Clone + Send + Sync + 'static>(app: State) -> Router<S2> {
    let console = Console {
        app,
        sessions: Arc::new(Sessions::default()),
    };
    Router::new()
        .route("/admin", get(pages::overview))
        .route("/admin/", get(pages::overview))
        .route("/admin/login", get(login_page).post(login))
        .route("/admin/logout", post(logout))
        .route("/admin/orders", get(pages::orders))
        .route("/admin/orders/{order_no}", get(pages::order))
        .route("/admin/anomalies", get(pages::anomalies))
        .route(
            "/admin/anomalies/{id}/resolve",
            post(pages::resolve_anomaly),
        )
        .route("/admin/receipts/{id}/resolve", post(pages::resolve_receipt))
        .route("/admin/webhooks", get(pages::webhooks))
        .route(
            "/admin/webhooks/events/{event_id}/redeliver",
            post(pages::redeliver),
        )
        .route("/admin/reconciliation", get(pages::reconciliation))
        .route("/admin/assets/console.css", get(css))
        .route("/admin/assets/console.js", get(js))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(console)
}

async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        CSS,
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        JS,
    )
        .into_response()
}

/// Why a console request did not get its page.
pub enum Fail {
    /// No valid session: to the login page, then back to `next`.
    Login {
        next: String,
    },
    /// A page with this status and message (plain text, escaped when rendered).
    Page(StatusCode, String),
    Store(StoreError),
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => {
                Fail::Page(StatusCode::NOT_FOUND, format!("{what} not found"))
            }
            StoreError::Invalid(m) => Fail::Page(StatusCode::BAD_REQUEST, m),
            StoreError::Rejected(r) => Fail::Page(StatusCode::CONFLICT, r.message),
            other => Fail::Store(other),
        }
    }
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        match self {
            Fail::Login { next } => {
                see_other(&format!("/admin/login?next={}", html::url_encode(&next)))
            }
            Fail::Page(status, message) => {
                let title = status.canonical_reason().unwrap_or("Error");
                let body = format!(
                    "<p class=\"flash bad\">{}</p><p><a href=\"/admin\">Back to the console</a></p>",
                    esc(&message)
                );
                (status, html_response(layout(title, None, &body))).into_response()
            }
            Fail::Store(e) => {
                tracing::error!(error = %e, "admin console: store failure");
                let body =
                    "<p class=\"flash bad\">The database failed; the error has been logged.</p>";
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    html_response(layout("Internal error", None, body)),
                )
                    .into_response()
            }
        }
    }
}

pub fn html_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

pub fn see_other(location: &str) -> Response {
    let mut res = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}

/// A console path to return to: only `/admin…` paths of this site (no `//host`, no `\`).
pub fn safe_next(next: Option<&str>, default: &str) -> String {
    match next {
        Some(n)
            if (n == "/admin" || n.starts_with("/admin/") || n.starts_with("/admin?"))
                && !n.contains('\\')
                && !n.starts_with("/admin/login")
                && n.len() <= 2048
                && n.chars().all(|c| c.is_ascii_graphic()) =>
        {
            n.to_string()
        }
        _ => default.to_string(),
    }
}

/// `next` with `msg=code` added (a fixed code the page turns into a fixed message).
pub fn with_msg(next: &str, code: &str) -> String {
    let (path, query) = next.split_once('?').unwrap_or((next, ""));
    let mut kept: Vec<&str> = query
        .split('&')
        .filter(|kv| !kv.is_empty() && !kv.starts_with("msg="))
        .collect();
    let msg = format!("msg={code}");
    kept.push(&msg);
    format!("{path}?{}", kept.join("&"))
}

fn cookie_tokens(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .collect()
}

fn cross_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("cross-site"))
}

pub fn query_params(q: Result<Query<Params>, QueryRejection>) -> Result<Params, Fail> {
    q.map(|Query(p)| p).map_err(|e| {
        Fail::Page(
            StatusCode::BAD_REQUEST,
            format!("invalid query: {}", e.body_text()),
        )
    })
}

pub fn form_params(f: Result<Form<Params>, FormRejection>) -> Result<Params, Fail> {
    f.map(|Form(p)| p).map_err(|e| {
        Fail::Page(
            StatusCode::BAD_REQUEST,
            format!("invalid form: {}", e.body_text()),
        )
    })
}

impl Console {
    fn admin_key(&self) -> Option<&[u8]> {
        self.app
            .settings
            .auth
            .admin_key
            .as_ref()
            .map(|k| k.expose_secret().as_bytes())
            .filter(|k| !k.is_empty())
    }

    fn now_secs(&self) -> i64 {
        self.app.now_ms().div_euclid(1000)
    }

    fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let key = self.admin_key()?;
        let now = self.now_secs();
        cookie_tokens(headers)
            .into_iter()
            .find_map(|t| self.sessions.verify(key, t, now))
    }

    /// The session of a page request, or the way to the login page.
    pub fn require(&self, headers: &HeaderMap, uri: &OriginalUri) -> Result<Ctx, Fail> {
        let next = safe_next(uri.0.path_and_query().map(|p| p.as_str()), "/admin");
        let (Some(key), Some(session)) = (self.admin_key(), self.session(headers)) else {
            return Err(Fail::Login { next });
        };
        Ok(Ctx {
            csrf: session::csrf_token(key, &session),
            session,
        })
    }

    /// The session of a state-changing request, with its CSRF token checked.
    pub fn require_post(&self, headers: &HeaderMap, form: &Params) -> Result<Ctx, Fail> {
        if cross_site(headers) {
            return Err(Fail::Page(
                StatusCode::FORBIDDEN,
                "cross-site request refused".into(),
            ));
        }
        let (Some(key), Some(session)) = (self.admin_key(), self.session(headers)) else {
            return Err(Fail::Login {
                next: safe_next(form.get("next").map(String::as_str), "/admin"),
            });
        };
        if !session::csrf_ok(key, &session, form.get("csrf").map(String::as_str)) {
            return Err(Fail::Page(
                StatusCode::FORBIDDEN,
                "missing or wrong CSRF token: reload the page and try again".into(),
            ));
        }
        Ok(Ctx {
            csrf: session::csrf_token(key, &session),
            session,
        })
    }

    fn cookie(&self, value: &str, max_age: i64) -> String {
        let secure = self.app.settings.production || self.app.public_url.starts_with("https://");
        format!(
            "{COOKIE}={value}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
            if secure { "; Secure" } else { "" }
        )
    }

    /// The navigation bar of a page.
    pub async fn nav(&self, active: &'static str, ctx: &Ctx) -> html::Nav {
        html::Nav {
            active,
            csrf: ctx.csrf.clone(),
            open_reviews: self.app.store.admin_open_review_count().await.ok(),
        }
    }
}

fn login_html(next: &str, error: Option<&str>, enabled: bool) -> String {
    let mut body = String::new();
    if let Some(e) = error {
        body.push_str(&format!("<p class=\"flash bad\">{}</p>", esc(e)));
    }
    if !enabled {
        body.push_str(
            "<p class=\"flash bad\">The console is disabled: no admin key is configured \
             (<code>auth.admin_key</code> or <code>WXPAY_AUTH__ADMIN_KEY</code>).</p>",
        );
    }
    body.push_str(&format!(
        "<form method=\"post\" action=\"/admin/login\" class=\"login\">\
         <input type=\"hidden\" name=\"next\" value=\"{}\">\
         <label>Admin key <input type=\"password\" name=\"key\" autocomplete=\"current-password\" required autofocus></label>\
         <button type=\"submit\"{}>Log in</button></form>",
        esc(next),
        if enabled { "" } else { " disabled" }
    ));
    layout("Log in", None, &body)
}

async fn login_page(
    S(c): S<Console>,
    headers: HeaderMap,
    q: Result<Query<Params>, QueryRejection>,
) -> Result<Response, Fail> {
    let p = query_params(q)?;
    let next = safe_next(p.get("next").map(String::as_str), "/admin");
    if c.session(&headers).is_some() {
        return Ok(see_other(&next));
    }
    let enabled = c.admin_key().is_some();
    let status = if enabled {
        StatusCode::OK
    } else {
        StatusCode::FORBIDDEN
    };
    let msg = match p.get("msg").map(String::as_str) {
        Some("logged_out") => Some("You have been logged out."),
        _ => None,
    };
    let mut page = login_html(&next, None, enabled);
    if let Some(m) = msg {
        page = page.replacen(
            "<form",
            &format!("<p class=\"flash ok\">{}</p><form", esc(m)),
            1,
        );
    }
    Ok((status, html_response(page)).into_response())
}

async fn login(
    S(c): S<Console>,
    headers: HeaderMap,
    form: Result<Form<Params>, FormRejection>,
) -> Result<Response, Fail> {
    if cross_site(&headers) {
        return Err(Fail::Page(
            StatusCode::FORBIDDEN,
            "cross-site request refused".into(),
        ));
    }
    let p = form_params(form)?;
    let next = safe_next(p.get("next").map(String::as_str), "/admin");
    let Some(key) = c.admin_key() else {
        return Ok((
            StatusCode::FORBIDDEN,
            html_response(login_html(&next, None, false)),
        )
            .into_response());
    };
    let typed = p.get("key").map(String::as_str).unwrap_or("");
    if !session::key_matches(key, typed.as_bytes()) {
        tracing::warn!("admin console: login with a wrong key");
        // Slows guessing down; the answer does not say anything about the key.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        return Ok((
            StatusCode::UNAUTHORIZED,
            html_response(login_html(&next, Some("Wrong admin key."), true)),
        )
            .into_response());
    }
    let session = c.sessions.issue(key, c.now_secs());
    tracing::info!("admin console: login");
    let mut res = see_other(&next);
    if let Ok(v) = HeaderValue::from_str(&c.cookie(&session.token, SESSION_TTL_SECS)) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(res)
}

async fn logout(
    S(c): S<Console>,
    headers: HeaderMap,
    form: Result<Form<Params>, FormRejection>,
) -> Result<Response, Fail> {
    let p = form_params(form)?;
    let ctx = c.require_post(&headers, &p)?;
    c.sessions.revoke(&ctx.session, c.now_secs());
    let mut res = see_other("/admin/login?msg=logged_out");
    if let Ok(v) = HeaderValue::from_str(&c.cookie("", 0)) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_inside_the_console() {
        assert_eq!(
            safe_next(Some("/admin/orders?x=1"), "/admin"),
            "/admin/orders?x=1"
        );
        assert_eq!(safe_next(Some("/admin"), "/d"), "/admin");
        assert_eq!(safe_next(Some("//evil.example/admin"), "/admin"), "/admin");
        assert_eq!(safe_next(Some("https://evil.example"), "/admin"), "/admin");
        assert_eq!(safe_next(Some("/administrator"), "/admin"), "/admin");
        assert_eq!(safe_next(Some("/admin/\\evil"), "/admin"), "/admin");
        assert_eq!(safe_next(Some("/admin/login"), "/admin"), "/admin");
        assert_eq!(safe_next(None, "/admin/orders"), "/admin/orders");
        assert_eq!(with_msg("/admin/orders", "ok"), "/admin/orders?msg=ok");
        assert_eq!(
            with_msg("/admin/orders?a=1", "ok"),
            "/admin/orders?a=1&msg=ok"
        );
        assert_eq!(with_msg("/admin/x?msg=a&b=2", "ok"), "/admin/x?b=2&msg=ok");
    }

    #[test]
    fn finds_the_session_cookie_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; wxpay_console=tok; b=2"),
        );
        assert_eq!(cookie_tokens(&h), vec!["tok"]);
    }
}
