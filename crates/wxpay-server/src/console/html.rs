//! Tiny HTML helpers: escaping (every value rendered goes through [`esc`]), formatting of
//! times (UTC) and money (yuan from integer fen), and the page layout.

use std::fmt::Write;
use wxpay_proto::Fen;

/// Escapes text for an HTML element body or a double- or single-quoted attribute value.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Short name of [`html_escape`].
pub fn esc(s: &str) -> String {
    html_escape(s)
}

/// An optional value, escaped, or a dash.
pub fn opt(s: Option<&str>) -> String {
    match s {
        Some(v) if !v.is_empty() => esc(v),
        _ => "<span class=\"muted\">—</span>".into(),
    }
}

/// Percent-encodes a query or path component (RFC 3986 unreserved characters pass).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// `¥12.34` from integer fen.
pub fn yuan(fen: i64) -> String {
    format!("¥{}", Fen::new(fen).to_yuan_string())
}

/// `2026-11-01 12:34:56` (UTC) from unix milliseconds.
pub fn time(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S").to_string(),
        None => ms.to_string(),
    }
}

pub fn opt_time(ms: Option<i64>) -> String {
    match ms {
        Some(ms) => time(ms),
        None => "<span class=\"muted\">—</span>".into(),
    }
}

/// A state badge; the class is derived from a fixed list, the text escaped.
pub fn badge(text: &str) -> String {
    let class = match text {
        "PAID" | "SUCCEEDED" | "DELIVERED" | "SUCCESS" | "BALANCED" | "paid" | "resolved"
        | "verified" => "ok",
        "CREATED" | "PAYING" | "PENDING" | "PROCESSING" | "RETRY" | "RUNNING" | "REPAIRED"
        | "received" | "duplicate" => "wait",
        "CLOSED" | "PARTIALLY_REFUNDED" | "REFUNDED" | "not_success" => "neutral",
        _ => "bad",
    };
    format!("<span class=\"badge {class}\">{}</span>", esc(text))
}

/// `s` cut to at most `max` characters, with a note when cut.
pub fn truncate_chars(s: &str, max: usize) -> (String, bool) {
    match s.char_indices().nth(max) {
        Some((i, _)) => (s[..i].to_string(), true),
        None => (s.to_string(), false),
    }
}

pub struct Nav {
    pub active: &'static str,
    pub csrf: String,
    pub open_reviews: Option<i64>,
}

/// A whole console page. `title` is plain text (escaped here); `body` is HTML built by the
/// caller from escaped values.
pub fn layout(title: &str, nav: Option<&Nav>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 2048);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"referrer\" content=\"no-referrer\">\
         <link rel=\"icon\" href=\"data:,\">\
         <title>{} · wxpay admin</title>\
         <link rel=\"stylesheet\" href=\"/admin/assets/console.css\">\
         <script src=\"/admin/assets/console.js\" defer></script></head><body>",
        esc(title)
    );
    out.push_str(
        "<header class=\"top\"><a class=\"brand\" href=\"/admin\">wxpay <small>admin</small></a>",
    );
    if let Some(nav) = nav {
        out.push_str("<nav>");
        for (key, href, label) in [
            ("overview", "/admin", "Overview"),
            ("orders", "/admin/orders", "Orders"),
            ("anomalies", "/admin/anomalies", "Anomalies"),
            ("webhooks", "/admin/webhooks", "Webhooks"),
            ("reconciliation", "/admin/reconciliation", "Reconciliation"),
        ] {
            let class = if key == nav.active {
                " class=\"active\""
            } else {
                ""
            };
            let count = match (key, nav.open_reviews) {
                ("anomalies", Some(n)) if n > 0 => format!(" <span class=\"count\">{n}</span>"),
                _ => String::new(),
            };
            let _ = write!(out, "<a href=\"{href}\"{class}>{label}{count}</a>");
        }
        out.push_str("</nav>");
        let _ = write!(
            out,
            "<form method=\"post\" action=\"/admin/logout\" class=\"logout\">{}\
             <button type=\"submit\">Log out</button></form>",
            csrf_field(&nav.csrf)
        );
    }
    out.push_str("</header><main>");
    let _ = write!(out, "<h1>{}</h1>", esc(title));
    out.push_str(body);
    out.push_str(
        "</main><footer>Times are UTC. Amounts are yuan (¥), computed from integer fen.</footer>\
         </body></html>\n",
    );
    out
}

pub fn csrf_field(token: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(token)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            html_escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(html_escape("支付 ok"), "支付 ok");
    }

    #[test]
    fn formats_money_times_and_urls() {
        assert_eq!(yuan(1099), "¥10.99");
        assert_eq!(yuan(1), "¥0.01");
        assert_eq!(time(0), "1970-01-01 00:00:00");
        assert_eq!(url_encode("a b&c/支"), "a%20b%26c%2F%E6%94%AF");
        assert_eq!(truncate_chars("支付失败", 2), ("支付".to_string(), true));
        assert_eq!(truncate_chars("ab", 2), ("ab".to_string(), false));
    }

    #[test]
    fn badges_escape_unknown_text() {
        assert!(badge("<x>").contains("&lt;x&gt;"));
        assert!(badge("PAID").contains("ok"));
    }
}
