//! The few HTML pages a browser sees: the landing page with the "Connect to QuickBooks"
//! button, and the result pages of the OAuth flow. Every dynamic value is escaped.

use crate::config::Enrollment;
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
         <title>{t} · boa-exchange</title><style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;color:#222}}\
         .c2qb{{display:inline-block;background:#2CA01C;color:#fff;font-weight:600;padding:.7rem 1.4rem;border-radius:4px;text-decoration:none}}\
         .c2qb:hover{{background:#108000}}</style></head><body><h1>{t}</h1>{body}</body></html>\n",
        t = esc(title)
    )
}

/// `GET /`: what the service is; the Connect button when enrollment is open.
pub fn index(enrollment: Enrollment) -> String {
    let button = match enrollment {
        Enrollment::Open => "<p><a class=\"c2qb\" href=\"/api/v1/oauth/connect\" title=\"Connect to QuickBooks\">Connect to QuickBooks</a></p>",
        Enrollment::Invite => "<p>Connections are by invitation: ask your administrator for a connection link.</p>",
    };
    page(
        "Bank of Albania rates for QuickBooks",
        &format!(
            "<p>This service writes the Bank of Albania's official exchange rates into your QuickBooks Online \
             company every business day, converted to your home currency.</p>{button}\
             <p><a href=\"/api/v1/rates\">Today's official rates (JSON)</a></p>"
        ),
    )
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

/// A page with one message (errors, disconnect).
pub fn message(title: &str, text: &str) -> String {
    page(
        title,
        &format!("<p>{}</p><p><a href=\"/\">Back</a></p>", esc(text)),
    )
}
