//! The payments chart, drawn on the server as inline SVG: orders paid per minute (bars, left
//! axis) and the success rate of the payment attempts opened in each minute (line, right axis).
//! Colours are presentation attributes, so a strict Content-Security-Policy holds.

use super::html::{esc, yuan};
use std::fmt::Write;
use wxpay_store::admin::MinuteBucket;

const W: f64 = 960.0;
const H: f64 = 260.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 48.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 32.0;

/// A round upper bound for the count axis.
fn nice_max(v: i64) -> i64 {
    let mut step = 1i64;
    loop {
        for m in [1, 2, 5] {
            if step * m >= v {
                return step * m;
            }
        }
        step = step.saturating_mul(10);
    }
}

fn hhmm(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.format("%H:%M").to_string(),
        None => String::new(),
    }
}

/// Totals over the window: paid orders, their fen, attempts, succeeded attempts.
pub fn totals(buckets: &[MinuteBucket]) -> (i64, i64, i64, i64) {
    buckets.iter().fold((0, 0, 0, 0), |(p, f, a, s), b| {
        (p + b.paid, f + b.paid_fen, a + b.attempts, s + b.succeeded)
    })
}

/// The SVG of `minutes` minutes starting at `from_ms` (a whole minute).
pub fn svg(buckets: &[MinuteBucket], from_ms: i64, minutes: i64) -> String {
    let minutes = minutes.max(1);
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let max_paid = nice_max(buckets.iter().map(|b| b.paid).max().unwrap_or(0).max(1));
    let slot = plot_w / minutes as f64;
    let x_of = |minute_ms: i64| LEFT + ((minute_ms - from_ms) / 60_000) as f64 * slot;
    let y_count = |n: i64| TOP + plot_h - (n as f64 / max_paid as f64) * plot_h;
    let y_rate = |per_mille: i64| TOP + plot_h - (per_mille as f64 / 1000.0) * plot_h;
    let (paid, paid_fen, attempts, succeeded) = totals(buckets);
    let mut s = String::with_capacity(8192);
    let _ = write!(
        s,
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" width=\"100%\" role=\"img\" \
         xmlns=\"http://www.w3.org/2000/svg\" font-family=\"system-ui, sans-serif\" font-size=\"11\" \
         aria-label=\"{}\">",
        esc(&format!(
            "Payments per minute: {paid} orders paid ({}), {attempts} attempts, {succeeded} succeeded",
            yuan(paid_fen)
        ))
    );
    // Grid and axes.
    for i in 0..=4 {
        let y = TOP + plot_h * f64::from(i) / 4.0;
        let _ = write!(
            s,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#e3e6ea\"/>",
            W - RIGHT
        );
    }
    let mut ticks = vec![0, max_paid];
    if max_paid >= 2 {
        ticks.insert(1, max_paid / 2);
    }
    for n in ticks {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#2563eb\">{n}</text>",
            LEFT - 6.0,
            y_count(n) + 4.0
        );
    }
    for (pct, pm) in [(0, 0), (50, 500), (100, 1000)] {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#059669\">{pct}%</text>",
            W - RIGHT + 6.0,
            y_rate(pm) + 4.0
        );
    }
    // Time ticks: at most ~12 labels, on round minutes.
    let tick = [5i64, 10, 15, 30, 60, 120, 180, 360]
        .into_iter()
        .find(|t| minutes / t <= 12)
        .unwrap_or(720);
    let first = (from_ms / 60_000).div_euclid(tick) * tick + tick;
    let end_minute = from_ms / 60_000 + minutes;
    let mut m = first;
    while m < end_minute {
        let x = x_of(m * 60_000);
        let _ = write!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#f0f1f3\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">{}</text>",
            TOP + plot_h,
            H - BOTTOM + 16.0,
            hhmm(m * 60_000)
        );
        m += tick;
    }
    let _ = write!(
        s,
        "<line x1=\"{LEFT}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#888\"/>",
        TOP + plot_h,
        W - RIGHT,
        TOP + plot_h
    );
    // Bars: orders paid per minute.
    let bar_w = (slot * 0.8).max(1.0);
    for b in buckets.iter().filter(|b| b.paid > 0) {
        let x = x_of(b.minute_ms) + (slot - bar_w) / 2.0;
        let y = y_count(b.paid);
        let _ = write!(
            s,
            "<rect class=\"bar\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar_w:.1}\" height=\"{:.1}\" fill=\"#2563eb\">\
             <title>{} UTC: {} paid, {}</title></rect>",
            (TOP + plot_h - y).max(0.5),
            hhmm(b.minute_ms),
            b.paid,
            esc(&yuan(b.paid_fen))
        );
    }
    // Line: success rate of the attempts opened in each minute (gaps where none were opened).
    let mut run: Vec<(f64, f64)> = Vec::new();
    let mut last_minute: Option<i64> = None;
    let flush = |run: &mut Vec<(f64, f64)>, s: &mut String| {
        if run.len() > 1 {
            let pts: Vec<String> = run.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            let _ = write!(
                s,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"#059669\" stroke-width=\"2\"/>",
                pts.join(" ")
            );
        }
        run.clear();
    };
    let mut dots = String::new();
    for b in buckets.iter().filter(|b| b.attempts > 0) {
        let per_mille = b.succeeded * 1000 / b.attempts;
        let x = x_of(b.minute_ms) + slot / 2.0;
        let y = y_rate(per_mille);
        if last_minute.is_some_and(|l| l + 60_000 != b.minute_ms) {
            flush(&mut run, &mut s);
        }
        run.push((x, y));
        last_minute = Some(b.minute_ms);
        let _ = write!(
            dots,
            "<circle class=\"rate\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"#059669\">\
             <title>{} UTC: {} of {} attempts succeeded ({}%)</title></circle>",
            hhmm(b.minute_ms),
            b.succeeded,
            b.attempts,
            b.succeeded * 100 / b.attempts
        );
    }
    flush(&mut run, &mut s);
    s.push_str(&dots);
    if buckets.is_empty() {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#888\" font-size=\"14\">No payments in this window</text>",
            LEFT + plot_w / 2.0,
            TOP + plot_h / 2.0
        );
    }
    // Legend.
    let _ = write!(
        s,
        "<rect x=\"{LEFT}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"#2563eb\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" fill=\"#333\">orders paid / minute</text>\
         <rect x=\"{:.1}\" y=\"{:.1}\" width=\"10\" height=\"3\" fill=\"#059669\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" fill=\"#333\">success rate of attempts opened that minute</text>",
        H - 11.0,
        LEFT + 14.0,
        H - 2.0,
        LEFT + 160.0,
        H - 7.0,
        LEFT + 174.0,
        H - 2.0
    );
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_axis_maxima() {
        assert_eq!(nice_max(1), 1);
        assert_eq!(nice_max(3), 5);
        assert_eq!(nice_max(7), 10);
        assert_eq!(nice_max(11), 20);
        assert_eq!(nice_max(180), 200);
    }

    #[test]
    fn draws_bars_and_rate_points() {
        let from = 1_800_000_000_000 / 60_000 * 60_000;
        let b = [
            MinuteBucket {
                minute_ms: from + 60_000,
                paid: 2,
                paid_fen: 1999,
                attempts: 4,
                succeeded: 3,
            },
            MinuteBucket {
                minute_ms: from + 120_000,
                paid: 0,
                paid_fen: 0,
                attempts: 1,
                succeeded: 0,
            },
        ];
        let svg = svg(&b, from, 180);
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), 1);
        assert_eq!(svg.matches("<circle class=\"rate\"").count(), 2);
        assert!(svg.contains("<polyline"), "consecutive minutes are joined");
        assert!(svg.contains("¥19.99"));
        assert!(svg.contains("3 of 4 attempts succeeded (75%)"));
        assert_eq!(totals(&b), (2, 1999, 5, 3));
        assert!(super::svg(&[], from, 60).contains("No payments"));
    }
}
