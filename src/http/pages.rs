//! The few HTML pages a browser sees: the landing page with the "Connect to QuickBooks"
//! button, and the result pages of the OAuth flow. Every dynamic value is escaped.

use chrono::NaiveDate;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

use crate::fixing::TableKind;
use crate::ops::landing::{LandingData, LandingTable, SeriesPoint, SERIES_DAYS};
use crate::store::records::Company;

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{t} · boa-exchange</title><style>body{{font-family:system-ui,sans-serif;max-width:44rem;margin:2rem auto;padding:0 1rem;color:#222}}\
         .c2qb{{display:inline-block;background:#2CA01C;color:#fff;font-weight:600;padding:.7rem 1.4rem;border-radius:4px;text-decoration:none}}\
         .c2qb:hover{{background:#108000}}table{{border-collapse:collapse;width:100%}}th,td{{padding:.2rem .4rem;border-bottom:1px solid #ddd;text-align:left}}\
         .n{{text-align:right;font-variant-numeric:tabular-nums}}.up{{color:#1a7f37}}.down{{color:#c0392b}}.meta{{color:#555;font-size:.9rem}}</style></head><body><h1>{t}</h1>{body}</body></html>\n",
        t = esc(title)
    )
}

/// `GET /`: today's fixing as a table (with the change against the previous fixing), a
/// chart of EUR and USD over the last 90 days of the archive, and the Connect button when
/// enrollment is open. Inline SVG, no script, no external asset.
pub fn index(data: &LandingData) -> String {
    let button = if data.enrollment_open {
        "<p><a class=\"c2qb\" href=\"/api/v1/oauth/connect\" title=\"Connect to QuickBooks\">Connect to QuickBooks</a></p>"
    } else {
        "<p>Connections are by invitation: ask your administrator for a connection link.</p>"
    };
    let mut body = String::from(
        "<p>This service writes the Bank of Albania's official exchange rates into your QuickBooks Online \
         company every business day, converted to your home currency.</p>",
    );
    if data.tables.is_empty() {
        body.push_str("<p><strong>No Bank of Albania fixing is stored yet.</strong> The daemon stores one at its next \
             scheduled fetch (an administrator can run <code>boa-exchange fetch</code> now).</p>");
    }
    for t in &data.tables {
        body.push_str(&fixing_table(t));
    }
    // One point is no line: an empty frame would look broken, so say when it comes.
    if data.series.len() >= CHART_MIN_DAYS {
        body.push_str(&chart(&data.series));
    } else if !data.tables.is_empty() {
        body.push_str(&format!(
            "<p class=\"meta\" id=\"chart-pending\">The EUR and USD chart appears once {CHART_MIN_DAYS} days are stored \
             ({} stored so far).</p>",
            data.series.len()
        ));
    }
    body.push_str(button);
    body.push_str("<p><a href=\"/api/v1/rates\">The official rates as JSON</a></p>");
    page("Bank of Albania rates for QuickBooks", &body)
}

/// How many stored fixings the chart needs before it is drawn (two points make a line).
pub const CHART_MIN_DAYS: usize = 2;

/// English names of the codes BoA publishes (as its English page words them, tidied).
pub fn currency_name(code: &str) -> &'static str {
    match code {
        "USD" => "US dollar",
        "EUR" => "Euro",
        "GBP" => "British pound",
        "CHF" => "Swiss franc",
        "JPY" => "Japanese yen",
        "AUD" => "Australian dollar",
        "CAD" => "Canadian dollar",
        "SEK" => "Swedish krona",
        "NOK" => "Norwegian krone",
        "DKK" => "Danish krone",
        "SDR" | "XDR" => "Special drawing right",
        "XAU" => "Gold (troy ounce)",
        "XAG" => "Silver (troy ounce)",
        "CNY" => "Chinese yuan (onshore)",
        "CNH" => "Chinese yuan (offshore)",
        "TRY" => "Turkish lira",
        "HUF" => "Hungarian forint",
        "RUB" => "Russian ruble",
        "CZK" => "Czech koruna",
        "MKD" => "Macedonian denar",
        "BGN" => "Bulgarian lev",
        "HRK" => "Croatian kuna",
        "ALL" => "Albanian lek",
        _ => "",
    }
}

fn long_date(d: NaiveDate) -> String {
    d.format("%A %-d %B %Y").to_string()
}

fn fixing_table(t: &LandingTable) -> String {
    let title = match t.kind {
        TableKind::Main => "Official rates",
        TableKind::Minor => "Currencies fixed twice a month",
    };
    let mut s = format!(
        "<h2>{} of {}</h2><p class=\"meta\">",
        esc(title),
        esc(&long_date(t.date))
    );
    match t.published_time {
        Some(time) => s.push_str(&format!(
            "Published {} Tirana time. ",
            time.format("%H:%M:%S")
        )),
        None => s.push_str("Imported from BoA's archive. "),
    }
    match t.previous_date {
        Some(p) => s.push_str(&format!(
            "Change since the fixing of {}.",
            esc(&long_date(p))
        )),
        None => s.push_str("No earlier fixing is stored to compare with."),
    }
    s.push_str("</p><table><thead><tr><th>Code</th><th>Currency</th><th class=\"n\">Units</th><th class=\"n\">Lek</th><th class=\"n\">Change</th></tr></thead><tbody>");
    for r in &t.rows {
        let code = r.code.as_str();
        let (class, change) = match r.change {
            None => ("n", "\u{2014}".to_string()),
            Some(c) if c.is_zero() => ("n", c.abs().to_string()),
            Some(c) if c.is_sign_positive() => ("n up", format!("+{c}")),
            Some(c) => ("n down", c.to_string()),
        };
        s.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"{class}\">{}</td></tr>",
            esc(code),
            esc(currency_name(code)),
            r.units,
            esc(&r.published.to_string()),
            esc(&change),
        ));
    }
    s.push_str("</tbody></table>");
    s
}

/// Chart geometry (SVG user units; the image scales to the page width).
const W: f64 = 640.0;
const H: f64 = 240.0;
const LEFT: f64 = 52.0;
const RIGHT: f64 = 560.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 208.0;

/// A chart line: name, colour, and the value it takes from a point.
type Line = (
    &'static str,
    &'static str,
    fn(&SeriesPoint) -> Option<Decimal>,
);

/// EUR and USD (lek per unit) over the chart's window: one polyline point per stored date.
fn chart(series: &[SeriesPoint]) -> String {
    let Some(newest) = series.last().map(|p| p.date) else {
        return String::new();
    };
    let first = newest - chrono::Duration::days(SERIES_DAYS - 1);
    let values: Vec<f64> = series
        .iter()
        .flat_map(|p| [p.eur, p.usd])
        .flatten()
        .filter_map(|v| v.to_f64())
        .collect();
    let (mut lo, mut hi) = values
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    if values.is_empty() {
        return String::new();
    }
    let pad = ((hi - lo) * 0.05).max(0.5);
    lo -= pad;
    hi += pad;
    let x = |d: NaiveDate| {
        LEFT + (d - first).num_days() as f64 * (RIGHT - LEFT) / (SERIES_DAYS - 1) as f64
    };
    let y = |v: f64| BOTTOM - (v - lo) * (BOTTOM - TOP) / (hi - lo);
    let mut svg = format!(
        "<h2>EUR and USD, last {SERIES_DAYS} days</h2><svg viewBox=\"0 0 {W} {H}\" width=\"100%\" role=\"img\" aria-labelledby=\"ct\" \
         xmlns=\"http://www.w3.org/2000/svg\" font-size=\"12\" font-family=\"system-ui,sans-serif\"><title id=\"ct\">Lek per euro and per US dollar, \
         {} to {}</title><path d=\"M{LEFT} {TOP}V{BOTTOM}H{RIGHT}\" fill=\"none\" stroke=\"#999\"/>\
         <text x=\"{lx}\" y=\"{ty}\" text-anchor=\"end\">{hi:.2}</text><text x=\"{lx}\" y=\"{BOTTOM}\" text-anchor=\"end\">{lo:.2}</text>\
         <text x=\"{LEFT}\" y=\"{dy}\">{}</text><text x=\"{RIGHT}\" y=\"{dy}\" text-anchor=\"end\">{}</text>",
        first,
        newest,
        first.format("%-d %b"),
        newest.format("%-d %b %Y"),
        lx = LEFT - 4.0,
        ty = TOP + 10.0,
        dy = BOTTOM + 18.0,
    );
    let lines: [Line; 2] = [("EUR", "#1f5fbf", |p| p.eur), ("USD", "#d9730d", |p| p.usd)];
    for (name, color, value) in lines {
        let pts: Vec<(f64, f64, Decimal)> = series
            .iter()
            .filter_map(|p| {
                let v = value(p)?;
                Some((x(p.date), y(v.to_f64()?), v))
            })
            .collect();
        let Some(&(lx, ly, last)) = pts.last() else {
            continue;
        };
        let points = pts
            .iter()
            .map(|(px, py, _)| format!("{px:.1},{py:.1}"))
            .collect::<Vec<_>>()
            .join(" ");
        svg.push_str(&format!(
            "<polyline class=\"{name}\" points=\"{points}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>\
             <circle cx=\"{lx:.1}\" cy=\"{ly:.1}\" r=\"3\" fill=\"{color}\"/>\
             <text x=\"{tx:.1}\" y=\"{ty:.1}\" fill=\"{color}\">{name} {last}</text>",
            tx = lx + 6.0,
            ty = ly + 4.0,
        ));
    }
    svg.push_str("</svg>");
    svg
}

/// The success page after a connection.
pub fn connected(c: &Company) -> String {
    page(
        "Connected to QuickBooks",
        &format!(
            "<p><strong>{}</strong> (company {}) is connected. Its exchange rates (home currency {}) will be kept \
             up to date from the Bank of Albania's official fixing every business day.</p><p>You can close this page.</p>",
            esc(&c.company_name),
            esc(&c.realm_id),
            esc(c.home_currency.as_str())
        ),
    )
}

/// The OAuth error codes Intuit (RFC 6749 §4.1.2.1) may send back to the callback.
const OAUTH_ERRORS: &[(&str, &str)] = &[
    (
        "access_denied",
        "the connection was not authorized in QuickBooks (access denied)",
    ),
    (
        "invalid_scope",
        "QuickBooks refused the requested access (invalid scope); contact the administrator",
    ),
    (
        "server_error",
        "QuickBooks had an error while authorizing; try again later",
    ),
    (
        "temporarily_unavailable",
        "QuickBooks authorization is temporarily unavailable; try again later",
    ),
    (
        "invalid_request",
        "QuickBooks refused the authorization request (invalid request); start again",
    ),
    (
        "unauthorized_client",
        "this app is not allowed to connect to QuickBooks (unauthorized client); contact the administrator",
    ),
    (
        "unsupported_response_type",
        "QuickBooks refused the authorization request (unsupported response type); contact the administrator",
    ),
];

/// Longest unknown error code that is shown (as is) rather than replaced.
const MAX_SHOWN_CODE: usize = 40;

/// The callback's `error=` value reduced to something safe to repeat: a known code, a short
/// `[a-z_]` code, or `"unknown_error"`. Never the caller's text otherwise.
pub fn oauth_error_code(raw: &str) -> &str {
    let short = !raw.is_empty()
        && raw.len() <= MAX_SHOWN_CODE
        && raw.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    if short {
        raw
    } else {
        "unknown_error"
    }
}

/// A fixed sentence for an OAuth error code (from [`oauth_error_code`]).
pub fn oauth_error_message(code: &str) -> String {
    match OAUTH_ERRORS.iter().find(|(c, _)| *c == code) {
        Some((_, msg)) => (*msg).to_string(),
        None => format!("QuickBooks did not authorize the connection ({code})"),
    }
}

/// A page with one message (errors, disconnect).
pub fn message(title: &str, text: &str) -> String {
    page(
        title,
        &format!("<p>{}</p><p><a href=\"/\">Back</a></p>", esc(text)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn landing(days: &[(&str, &str)]) -> LandingData {
        let point = |(d, eur): &(&str, &str)| SeriesPoint {
            date: d.parse().unwrap(),
            eur: Some(eur.parse().unwrap()),
            usd: Some("82.24".parse().unwrap()),
        };
        let series: Vec<SeriesPoint> = days.iter().map(point).collect();
        LandingData {
            enrollment_open: true,
            tables: vec![LandingTable {
                kind: TableKind::Main,
                date: series.last().map(|p| p.date).unwrap(),
                published_time: None,
                previous_date: None,
                rows: vec![],
            }],
            series,
        }
    }

    #[test]
    fn one_stored_day_says_when_the_chart_comes_two_draw_it() {
        let one = index(&landing(&[("2026-05-22", "95.40")]));
        assert!(
            one.contains("The EUR and USD chart appears once 2 days are stored (1 stored so far)."),
            "{one}"
        );
        assert!(!one.contains("<svg"), "an empty frame is drawn: {one}");

        let two = index(&landing(&[
            ("2026-05-21", "95.30"),
            ("2026-05-22", "95.40"),
        ]));
        assert!(!two.contains("chart-pending"), "{two}");
        assert_eq!(two.matches("<svg").count(), 1, "{two}");
        for line in ["class=\"EUR\"", "class=\"USD\""] {
            let at = two.find(line).unwrap_or_else(|| panic!("{line}: {two}"));
            let points = &two[at..].split('"').nth(3).unwrap();
            assert_eq!(points.split(' ').count(), 2, "{line} {points}");
        }
        assert!(two.contains("EUR 95.40"), "{two}");
    }

    #[test]
    fn oauth_errors_are_never_echoed_unbounded() {
        assert_eq!(oauth_error_code("access_denied"), "access_denied");
        assert_eq!(oauth_error_code("some_new_code"), "some_new_code");
        for bad in [
            "<script>alert(1)</script>",
            "Access_Denied",
            "",
            &"a".repeat(41),
            "code with spaces",
        ] {
            assert_eq!(oauth_error_code(bad), "unknown_error", "{bad:?}");
        }
        for (code, _) in OAUTH_ERRORS {
            let m = oauth_error_message(code);
            assert!(!m.contains(code) || m.contains('('), "{m}");
            assert!(
                !m.starts_with("QuickBooks did not authorize"),
                "{code}: {m}"
            );
        }
        assert_eq!(
            oauth_error_message("unknown_error"),
            "QuickBooks did not authorize the connection (unknown_error)"
        );
        let long = "x".repeat(10_000);
        assert!(oauth_error_message(oauth_error_code(&long)).len() < 100);
    }
}
