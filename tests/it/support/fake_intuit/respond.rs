//! Helpers: responses, faults, time, tokens, numbers.

use super::*;

pub(super) fn td(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX / 2)
}

pub(super) fn secs_until(now: DateTime<Utc>, then: DateTime<Utc>) -> i64 {
    // Rounded, so a clock that moved a few microseconds since `then` was set still reads whole.
    ((then - now).num_milliseconds().max(0) + 500) / 1000
}

pub(super) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

pub(super) fn new_token(prefix: &str) -> String {
    format!("{prefix}{}", random_hex(24))
}

pub(super) fn new_tid() -> String {
    format!("1-{}-{}", random_hex(4), random_hex(12))
}

/// `time` as Intuit writes it: Pacific time with milliseconds.
pub(super) fn qbo_time(t: DateTime<Utc>) -> String {
    t.with_timezone(&chrono_tz::America::Los_Angeles)
        .format("%Y-%m-%dT%H:%M:%S%.3f%:z")
        .to_string()
}

/// `MetaData` timestamps: Pacific time, whole seconds.
pub(super) fn qbo_meta_time(t: DateTime<Utc>) -> String {
    t.with_timezone(&chrono_tz::America::Los_Angeles)
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

pub(super) fn parse_date(s: &str) -> Option<NaiveDate> {
    if s.len() != 10 {
        return None;
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

pub(super) fn parse_decimal(raw: &str) -> Option<Decimal> {
    if raw.contains(['e', 'E']) {
        Decimal::from_scientific(raw).ok()
    } else {
        Decimal::from_str(raw).ok()
    }
}

pub(super) fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

/// The raw text of a top-level member's value in a JSON object (last one wins, like serde).
/// The body has already been validated as JSON, so this scanner only has to skip correctly.
pub(super) fn raw_top_level_value(body: &[u8], key: &str) -> Option<String> {
    fn skip_ws(b: &[u8], mut i: usize) -> usize {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    }
    /// `i` is at an opening quote; returns the index after the closing quote.
    fn skip_string(b: &[u8], mut i: usize) -> usize {
        i += 1;
        while i < b.len() {
            match b[i] {
                b'\\' => i += 2,
                b'"' => return i + 1,
                _ => i += 1,
            }
        }
        i
    }
    fn skip_value(b: &[u8], mut i: usize) -> usize {
        match b.get(i) {
            Some(b'"') => skip_string(b, i),
            Some(b'{') | Some(b'[') => {
                let mut depth = 0usize;
                while i < b.len() {
                    match b[i] {
                        b'"' => {
                            i = skip_string(b, i);
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                return i + 1;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                i
            }
            _ => {
                while i < b.len()
                    && !matches!(b[i], b',' | b'}' | b']')
                    && !b[i].is_ascii_whitespace()
                {
                    i += 1;
                }
                i
            }
        }
    }
    let b = body;
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    let mut found = None;
    loop {
        i = skip_ws(b, i);
        match b.get(i) {
            Some(b'"') => {}
            _ => return found,
        }
        let key_end = skip_string(b, i);
        let name: String = serde_json::from_slice(&b[i..key_end]).ok()?;
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return found;
        }
        i = skip_ws(b, i + 1);
        let value_end = skip_value(b, i);
        if name == key {
            found = Some(String::from_utf8_lossy(&b[i..value_end]).into_owned());
        }
        i = skip_ws(b, value_end);
        if b.get(i) == Some(&b',') {
            i += 1;
        } else {
            return found;
        }
    }
}

pub(super) fn fault_body(
    now: DateTime<Utc>,
    ftype: &str,
    code: &str,
    message: &str,
    detail: &str,
) -> Value {
    json!({
        "Fault": {
            "Error": [{"Message": message, "Detail": detail, "code": code, "element": ""}],
            "type": ftype
        },
        "time": qbo_time(now)
    })
}

pub(super) fn validation_fault(
    now: DateTime<Utc>,
    code: &str,
    message: &str,
    detail: &str,
) -> Resp {
    json_resp(
        StatusCode::BAD_REQUEST,
        &fault_body(now, "ValidationFault", code, message, detail),
    )
}

/// 400 ValidationFault 6000, QuickBooks' generic business rule failure.
pub(super) fn business_fault(now: DateTime<Utc>, detail: &str) -> Resp {
    validation_fault(
        now,
        "6000",
        "A business validation error has occurred while processing your request",
        &format!("Business Validation Error: {detail}"),
    )
}

pub(super) fn multicurrency_off(now: DateTime<Utc>) -> Resp {
    business_fault(now, "Multicurrency is not enabled for this company")
}

/// 400 ValidationFault 610, "Object Not Found" (also used for inactive objects).
pub(super) fn object_not_found(now: DateTime<Utc>, detail: &str) -> Resp {
    validation_fault(
        now,
        "610",
        "Object Not Found",
        &format!("Object Not Found : {detail}"),
    )
}

pub(super) fn json_resp(status: StatusCode, body: &Value) -> Resp {
    raw_json_resp(status, body.to_string())
}

pub(super) fn raw_json_resp(status: StatusCode, body: String) -> Resp {
    with_type(status, "application/json;charset=UTF-8", body)
}

pub(super) fn xml(status: StatusCode, body: String) -> Resp {
    with_type(status, "application/xml", body)
}

pub(super) fn text(status: StatusCode, body: &str) -> Resp {
    with_type(status, "text/plain; charset=utf-8", body.to_string())
}

pub(super) fn text_resp_500(body: &str) -> Resp {
    text(StatusCode::INTERNAL_SERVER_ERROR, body)
}

pub(super) fn html(status: StatusCode, message: &str) -> Resp {
    with_type(
        status,
        "text/html; charset=utf-8",
        format!("<!DOCTYPE html><html><body><h1>{status}</h1><p>{message}</p></body></html>"),
    )
}

pub(super) fn redirect(location: &str) -> Resp {
    let mut resp = html(StatusCode::FOUND, "Redirecting");
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(hyper::header::LOCATION, v);
    }
    resp
}

pub(super) fn with_type(status: StatusCode, content_type: &str, body: String) -> Resp {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

/// `CompanyCurrency.Name` for the codes our tests use; others fall back to the code.
pub(super) fn currency_name(code: &str) -> &str {
    match code {
        "ALL" => "Albanian Lek",
        "EUR" => "Euro",
        "USD" => "United States Dollar",
        "GBP" => "British Pound Sterling",
        "CHF" => "Swiss Franc",
        "JPY" => "Japanese Yen",
        "AUD" => "Australian Dollar",
        "CAD" => "Canadian Dollar",
        "SEK" => "Swedish Krona",
        "NOK" => "Norwegian Krone",
        "DKK" => "Danish Krone",
        "TRY" => "Turkish Lira",
        "CNY" => "Chinese Yuan Renminbi",
        "HUF" => "Hungarian Forint",
        "RUB" => "Russian Ruble",
        "CZK" => "Czech Koruna",
        "MKD" => "Macedonian Denar",
        "XDR" => "Special Drawing Rights",
        "XAU" => "Gold",
        "XAG" => "Silver",
        other => other,
    }
}
