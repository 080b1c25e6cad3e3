//! The few HTML pages a browser sees: the landing page with the "Connect to QuickBooks"
//! button, and the result pages of the OAuth flow. Every dynamic value is escaped.

use crate::app::AppState;
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
pub fn index(state: &AppState) -> String {
    let config = state.config();
    let button = match config.server.enrollment {
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
