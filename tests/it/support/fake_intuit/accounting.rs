//! The accounting API's entities: CompanyInfo, Preferences, CompanyCurrency and ExchangeRate
//! reads and (idempotent) writes.

use super::*;

pub(super) fn route_api(st: &mut State, req: &Req, realm: &str, rest: &str) -> Resp {
    let now = st.now();
    if !st.companies.contains_key(realm) {
        // A token can only name a registered realm; this is fake misuse, not client behaviour.
        st.failures.push(format!(
            "fake Intuit: API call for unregistered realm {realm}"
        ));
        return text(StatusCode::INTERNAL_SERVER_ERROR, "fake: unknown realm");
    }
    let segments: Vec<String> = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (&req.method, segments.as_slice()) {
        (&Method::GET, ["companyinfo", id]) => company_info(st, realm, id, now),
        (&Method::GET, ["preferences"]) => preferences(st, realm, now),
        (&Method::GET, ["query"]) => match req.query().get("query") {
            Some(q) => run_query(st, realm, q, now),
            None => validation_fault(
                now,
                "2020",
                "Required param missing, need to supply the required value for the API",
                "Required parameter query is missing in the request",
            ),
        },
        (&Method::POST, ["query"]) => {
            let q = String::from_utf8_lossy(&req.body).into_owned();
            run_query(st, realm, &q, now)
        }
        (&Method::GET, ["exchangerate"]) => read_exchange_rate(st, realm, req, now),
        (&Method::POST, ["exchangerate"]) => write_exchange_rate_idempotent(st, realm, req, now),
        _ => json_resp(
            StatusCode::BAD_REQUEST,
            &fault_body(
                now,
                "ValidationFault",
                "500",
                "Unsupported Operation",
                &format!("Operation {} {rest} is not supported.", req.method),
            ),
        ),
    }
}

pub(super) fn company_info(st: &State, realm: &str, id: &str, now: DateTime<Utc>) -> Resp {
    if id != realm && id != "1" {
        return object_not_found(now, &format!("CompanyInfo {id} not found"));
    }
    let company = &st.companies[realm];
    json_resp(
        StatusCode::OK,
        &json!({"CompanyInfo": company_info_json(company), "time": qbo_time(now)}),
    )
}

pub(super) fn company_info_json(company: &Company) -> Value {
    json!({
        "CompanyName": company.spec.name,
        "LegalName": company.spec.name,
        "Country": company.spec.country,
        "CompanyAddr": {"Id": "1", "City": "Tirana", "Country": company.spec.country},
        "SupportedLanguages": "en",
        "domain": "QBO",
        "sparse": false,
        "Id": "1",
        "SyncToken": "0",
        "MetaData": {
            "CreateTime": qbo_meta_time(company.created),
            "LastUpdatedTime": qbo_meta_time(company.created)
        }
    })
}

pub(super) fn preferences(st: &State, realm: &str, now: DateTime<Utc>) -> Resp {
    let company = &st.companies[realm];
    json_resp(
        StatusCode::OK,
        &json!({"Preferences": preferences_json(company), "time": qbo_time(now)}),
    )
}

pub(super) fn preferences_json(company: &Company) -> Value {
    json!({
        "CurrencyPrefs": {
            "MultiCurrencyEnabled": company.spec.multicurrency,
            "HomeCurrency": {"value": company.spec.home_currency}
        },
        "domain": "QBO",
        "sparse": false,
        "Id": "1",
        "SyncToken": "0",
        "MetaData": {
            "CreateTime": qbo_meta_time(company.created),
            "LastUpdatedTime": qbo_meta_time(company.created)
        }
    })
}

pub(super) fn company_currency_json(c: &CompanyCurrency) -> Value {
    json!({
        "Code": c.code,
        "Name": currency_name(&c.code),
        "Active": c.active,
        "domain": "QBO",
        "sparse": false,
        "Id": c.id.to_string(),
        "SyncToken": c.sync_token.to_string(),
        "MetaData": {
            "CreateTime": qbo_meta_time(c.updated),
            "LastUpdatedTime": qbo_meta_time(c.updated)
        }
    })
}

/// The ExchangeRate object as JSON text. Written by hand because `Rate` must be the stored
/// decimal exactly, and serde_json (without `arbitrary_precision`) would go through f64.
pub(super) fn exchange_rate_json(date: NaiveDate, source: &str, row: &RateRow) -> String {
    format!(
        "{{\"SyncToken\":{},\"domain\":\"QBO\",\"sparse\":false,\"AsOfDate\":\"{}\",\
         \"SourceCurrencyCode\":{},\"TargetCurrencyCode\":{},\"Rate\":{},\
         \"MetaData\":{{\"LastUpdatedTime\":\"{}\"}}}}",
        json_str(&row.sync_token.to_string()),
        date.format("%Y-%m-%d"),
        json_str(source),
        json_str(&row.target),
        row.rate,
        qbo_meta_time(row.updated),
    )
}

pub(super) fn read_exchange_rate(st: &State, realm: &str, req: &Req, now: DateTime<Utc>) -> Resp {
    let company = &st.companies[realm];
    let q = req.query();
    let Some(source) = q.get("sourcecurrencycode") else {
        return validation_fault(
            now,
            "2020",
            "Required param missing, need to supply the required value for the API",
            "Required parameter sourcecurrencycode is missing in the request",
        );
    };
    if !company.spec.multicurrency {
        return multicurrency_off(now);
    }
    // Without asofdate QuickBooks uses "today"; the fake takes its clock's UTC date.
    let date = match q.get("asofdate") {
        Some(d) => match parse_date(d) {
            Some(d) => d,
            None => {
                return validation_fault(
                    now,
                    "2010",
                    "Invalid date",
                    &format!("asofdate {d:?} is not a date (YYYY-MM-DD)"),
                )
            }
        },
        None => now.date_naive(),
    };
    let found = company
        .rates
        .get_key_value(&(date, source.clone()))
        .or_else(|| match st.config.missing_rate {
            MissingRate::NotFound => None,
            MissingRate::NearestEarlier => company
                .rates
                .range(..(date, String::new()))
                .rev()
                .find(|((_, s), _)| s == source),
        });
    match found {
        Some(((d, s), row)) => raw_json_resp(
            StatusCode::OK,
            format!(
                "{{\"ExchangeRate\":{},\"time\":{}}}",
                exchange_rate_json(*d, s, row),
                json_str(&qbo_time(now))
            ),
        ),
        None => object_not_found(
            now,
            &format!("ExchangeRate for {source} on {date} not found"),
        ),
    }
}

pub(super) fn write_exchange_rate_idempotent(
    st: &mut State,
    realm: &str,
    req: &Req,
    now: DateTime<Utc>,
) -> Resp {
    let request_id = req.query().get("requestid").cloned();
    if let Some(id) = &request_id {
        if id.is_empty() || id.len() > MAX_REQUEST_ID_LEN {
            // The doc states the 50-character limit but not Intuit's answer when it is broken;
            // the fake refuses loudly so a client bug cannot hide.
            return validation_fault(
                now,
                "2010",
                "Invalid requestid",
                &format!(
                    "requestid must be 1 to {MAX_REQUEST_ID_LEN} characters (got {})",
                    id.len()
                ),
            );
        }
        let key = (realm.to_string(), id.clone());
        if let Some(cached) = st.idempotency.get(&key).cloned() {
            st.replays += 1;
            if cached.request_body != req.body {
                st.requestid_conflicts.push(key);
            }
            return Response::builder()
                .status(cached.status)
                .header(hyper::header::CONTENT_TYPE, cached.content_type)
                .body(Full::new(cached.body))
                .unwrap_or_default();
        }
    }
    let resp = write_exchange_rate(st, realm, req, now);
    if let Some(id) = request_id {
        let (parts, body) = resp.into_parts();
        // Full<Bytes> is a single frame; rebuild it after taking the bytes for the cache.
        let bytes = body_bytes(body);
        st.idempotency.insert(
            (realm.to_string(), id),
            CachedResponse {
                status: parts.status,
                content_type: parts
                    .headers
                    .get(hyper::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("application/json")
                    .to_string(),
                body: bytes.clone(),
                request_body: req.body.clone(),
            },
        );
        return Response::from_parts(parts, Full::new(bytes));
    }
    resp
}

/// The bytes of a `Full` body (always one ready frame).
pub(super) fn body_bytes(body: Full<Bytes>) -> Bytes {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let mut fut = std::pin::pin!(body.collect());
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(c)) => c.to_bytes(),
        _ => Bytes::new(),
    }
}

pub(super) const EXCHANGE_RATE_FIELDS: &[&str] = &[
    "SourceCurrencyCode",
    "TargetCurrencyCode",
    "Rate",
    "AsOfDate",
    "SyncToken",
    "MetaData",
    "domain",
    "sparse",
];

pub(super) fn write_exchange_rate(
    st: &mut State,
    realm: &str,
    req: &Req,
    now: DateTime<Utc>,
) -> Resp {
    let json_ct = req
        .header("content-type")
        .is_some_and(|ct| ct.starts_with("application/json"));
    if !json_ct {
        return validation_fault(
            now,
            "2010",
            "Request has invalid or unsupported property",
            "Content-Type must be application/json",
        );
    }
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&req.body) else {
        return validation_fault(
            now,
            "2010",
            "Request has invalid or unsupported property",
            "Request body is not a JSON object",
        );
    };
    if let Some(unknown) = body
        .keys()
        .find(|k| !EXCHANGE_RATE_FIELDS.contains(&k.as_str()))
    {
        return validation_fault(
            now,
            "2010",
            "Request has invalid or unsupported property",
            &format!("Property Name:Unrecognized field \"{unknown}\" specified is unsupported or invalid"),
        );
    }
    let missing = |name: &str| {
        validation_fault(
            now,
            "2020",
            "Required param missing, need to supply the required value for the API",
            &format!("Required parameter {name} is missing in the request"),
        )
    };
    let Some(source) = body.get("SourceCurrencyCode") else {
        return missing("SourceCurrencyCode");
    };
    let Some(source) = source.as_str().map(str::to_string) else {
        return validation_fault(
            now,
            "2010",
            "Request has invalid or unsupported property",
            "SourceCurrencyCode must be a string",
        );
    };
    let Some(date_value) = body.get("AsOfDate") else {
        return missing("AsOfDate");
    };
    let Some(date) = date_value.as_str().and_then(parse_date) else {
        return validation_fault(
            now,
            "2010",
            "Request has invalid or unsupported property",
            "AsOfDate must be a string YYYY-MM-DD",
        );
    };
    let Some(rate_value) = body.get("Rate") else {
        return missing("Rate");
    };
    // The doc says Rate is a JSON number; the fake refuses a string so the client's encoding
    // is checked, and reads the number's own text so no float ever touches it.
    if !rate_value.is_number() {
        return validation_fault(
            now,
            "2010",
            "Request has invalid or unsupported property",
            "Rate must be a JSON number (fake Intuit is strict here)",
        );
    }
    let raw = raw_top_level_value(&req.body, "Rate").unwrap_or_default();
    let Some(mut rate) = parse_decimal(&raw) else {
        return validation_fault(
            now,
            "2010",
            "Request has invalid or unsupported property",
            &format!("Rate {raw} is not a decimal the fake can hold"),
        );
    };
    let sync_token = match body.get("SyncToken") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return validation_fault(
                now,
                "2010",
                "Request has invalid or unsupported property",
                "SyncToken must be a JSON string (fake Intuit is strict here)",
            )
        }
    };
    let company = &st.companies[realm];
    let home = company.spec.home_currency.clone();
    if !company.spec.multicurrency {
        return multicurrency_off(now);
    }
    if let Some(target) = body.get("TargetCurrencyCode").filter(|t| !t.is_null()) {
        if target.as_str() != Some(home.as_str()) {
            return business_fault(
                now,
                &format!("TargetCurrencyCode must be the home currency {home}"),
            );
        }
    }
    if source == home {
        return business_fault(
            now,
            &format!("Source currency {source} is the home currency; it has no exchange rate"),
        );
    }
    if !company.is_active(&source) {
        return object_not_found(
            now,
            &format!("Currency {source} is not active in this company"),
        );
    }
    if rate <= Decimal::ZERO {
        return business_fault(now, "Rate must be greater than zero");
    }
    if let Some(scale) = st.config.rate_scale {
        rate =
            rate.round_dp_with_strategy(scale, rust_decimal::RoundingStrategy::MidpointNearestEven);
    }
    let require_token = st.config.require_sync_token;
    let company = st.company_mut(realm);
    match (company.rates.get(&(date, source.clone())), &sync_token) {
        (None, None) if require_token => return missing("SyncToken"),
        (None, _) => {}
        (Some(row), Some(sent)) if *sent == row.sync_token.to_string() => {}
        (Some(_), _) => {
            return json_resp(
                StatusCode::BAD_REQUEST,
                &fault_body(
                    now,
                    "ValidationFault",
                    "5010",
                    "Stale Object Error",
                    "Stale Object Error : You and fake user were working on this at the same \
                     time. fake user finished before you did, so your work was not saved.",
                ),
            )
        }
    }
    upsert_rate(company, &source, date, rate, &home, now);
    let key = (date, source);
    let row = &company.rates[&key];
    raw_json_resp(
        StatusCode::OK,
        format!(
            "{{\"ExchangeRate\":{},\"time\":{}}}",
            exchange_rate_json(date, &key.1, row),
            json_str(&qbo_time(now))
        ),
    )
}
