//! The accounting API's gateway: concurrency and latency, injected and random failures,
//! throttling (token buckets, 429) and bearer-token checks (401).

use super::*;

/// Per-call fault probabilities ([`FakeIntuit::set_random_api_faults`]).
pub(super) struct RandomFaults {
    pub(super) p5xx: f64,
    pub(super) p429: f64,
    /// xorshift64 state (deterministic per seed).
    pub(super) rng: u64,
    pub(super) injected_5xx: u64,
    pub(super) injected_429: u64,
}

impl RandomFaults {
    pub(super) fn next(&mut self) -> f64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What a random fault does to one call.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    None,
    Throttle,
    /// 500 before the call is processed.
    Before,
    /// The call is processed, then its answer is lost (a 502 instead).
    AnswerLost,
}

/// Decrements the in-flight counters however the request ends (even if cancelled).
pub(super) struct InFlight {
    pub(super) shared: Arc<Shared>,
    pub(super) realm: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.in_flight_total = st.in_flight_total.saturating_sub(1);
        let c = st.counters(&self.realm);
        c.in_flight = c.in_flight.saturating_sub(1);
    }
}

pub(super) fn is_read(method: &Method, rest: &str) -> bool {
    *method == Method::GET || rest.eq_ignore_ascii_case("query")
}

pub(super) async fn api(shared: Arc<Shared>, req: &Req, realm: &str, rest: &str) -> Resp {
    let (guard, latency, over_cap) = {
        let mut st = shared.lock();
        let read = is_read(&req.method, rest);
        st.in_flight_total += 1;
        st.peak_in_flight_total = st.peak_in_flight_total.max(st.in_flight_total);
        let cap = st.config.concurrency_cap;
        let c = st.counters(realm);
        if read {
            c.reads += 1;
        } else {
            c.writes += 1;
        }
        c.in_flight += 1;
        c.peak_in_flight = c.peak_in_flight.max(c.in_flight);
        let over_cap = cap.is_some_and(|cap| c.in_flight > cap);
        let latency = st
            .realm_latency
            .get(realm)
            .copied()
            .unwrap_or(st.config.latency);
        let guard = InFlight {
            shared: shared.clone(),
            realm: realm.to_string(),
        };
        (guard, latency, over_cap)
    };
    if over_cap {
        let st = shared.lock();
        return throttled(&st);
    }
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut st = shared.lock();
    let injected = match st.realm_api_failures.get_mut(realm) {
        Some(q) if !q.is_empty() => q.pop_front(),
        _ => st.api_failures.pop_front(),
    };
    if let Some(status) = injected {
        return injected_api_failure(&st, status);
    }
    let fault = match st.random_faults.as_mut() {
        None => Fault::None,
        Some(f) => {
            let x = f.next();
            if x < f.p429 {
                f.injected_429 += 1;
                Fault::Throttle
            } else if x < f.p429 + f.p5xx {
                f.injected_5xx += 1;
                if x < f.p429 + f.p5xx / 2.0 {
                    Fault::Before
                } else {
                    Fault::AnswerLost
                }
            } else {
                Fault::None
            }
        }
    };
    match fault {
        Fault::Throttle => return throttled(&st),
        Fault::Before => return injected_api_failure(&st, 500),
        Fault::None | Fault::AnswerLost => {}
    }
    if !take_bucket_token(&mut st, realm) {
        return throttled(&st);
    }
    if let Err(reason) = check_bearer(&st, req, realm) {
        return unauthorized(&st, reason);
    }
    let accepts_json = req
        .header("accept")
        .is_some_and(|a| a.contains("application/json"));
    let resp = route_api(&mut st, req, realm, rest);
    if fault == Fault::AnswerLost {
        return injected_api_failure(&st, 502);
    }
    drop(st);
    drop(guard);
    if accepts_json {
        resp
    } else {
        // QuickBooks answers XML unless the client asks for JSON. The fake does not render
        // entities as XML; it answers a placeholder a JSON parser will choke on, as production
        // would choke the client.
        let status = resp.status();
        xml(
            status,
            "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\
             <IntuitResponse xmlns=\"http://schema.intuit.com/finance/v3\">\
             <!-- fake Intuit: send Accept: application/json to get JSON --></IntuitResponse>"
                .to_string(),
        )
    }
}

pub(super) fn take_bucket_token(st: &mut State, realm: &str) -> bool {
    if st.config.rate_limits.is_empty() {
        return true;
    }
    let now = st.now();
    let limits = st.config.rate_limits.clone();
    let buckets = st.buckets.entry(realm.to_string()).or_insert_with(|| {
        limits
            .iter()
            .map(|l| Bucket {
                tokens: f64::from(l.requests),
                last: now,
            })
            .collect()
    });
    for (bucket, limit) in buckets.iter_mut().zip(&limits) {
        let elapsed = (now - bucket.last).to_std().unwrap_or_default();
        let per = limit.per.as_secs_f64().max(f64::MIN_POSITIVE);
        bucket.tokens = (bucket.tokens + elapsed.as_secs_f64() * f64::from(limit.requests) / per)
            .min(f64::from(limit.requests));
        bucket.last = now;
    }
    if buckets.iter().any(|b| b.tokens < 1.0) {
        return false;
    }
    for b in buckets.iter_mut() {
        b.tokens -= 1.0;
    }
    true
}

pub(super) fn check_bearer(st: &State, req: &Req, realm: &str) -> Result<(), &'static str> {
    let header = req
        .header("authorization")
        .ok_or("no Authorization header")?;
    let (scheme, token) = header.split_once(' ').ok_or("malformed Authorization")?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err("not a Bearer token");
    }
    let at = st
        .access_index
        .get(token.trim())
        .ok_or("unknown access token")?;
    let grant = &st.grants[at.grant];
    if grant.revoked {
        return Err("grant revoked");
    }
    if grant.realm != realm {
        return Err("access token belongs to another realm");
    }
    if st.now() >= at.expires_at {
        return Err("access token expired");
    }
    Ok(())
}

pub(super) fn unauthorized(st: &State, reason: &str) -> Resp {
    let now = st.now();
    let mut resp = if st.config.xml_401 {
        xml(
            StatusCode::UNAUTHORIZED,
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\
                 <IntuitResponse xmlns=\"http://schema.intuit.com/finance/v3\" time=\"{}\">\
                 <Fault type=\"AuthenticationFault\"><Error code=\"100\">\
                 <Message>General Authentication Error</Message>\
                 <Detail>AuthenticationErrorGeneral: SRV-110-Authentication Failure , \
                 statusCode: 401</Detail></Error></Fault></IntuitResponse>",
                qbo_time(now)
            ),
        )
    } else {
        json_resp(
            StatusCode::UNAUTHORIZED,
            &json!({
                "warnings": null,
                "intuitObject": null,
                "fault": {
                    "error": [{
                        "message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                        "detail": "Token expired: fake",
                        "code": "3200",
                        "element": null
                    }],
                    "type": "AUTHENTICATION"
                },
                "report": null,
                "queryResponse": null,
                "batchItemResponse": [],
                "attachableResponse": [],
                "syncErrorResponse": null,
                "requestId": null,
                "time": now.timestamp_millis(),
                "status": null,
                "cdcresponse": []
            }),
        )
    };
    resp.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"Intuit\", error=\"invalid_token\""),
    );
    if let Ok(v) = HeaderValue::from_str(reason) {
        resp.headers_mut()
            .insert(HeaderName::from_static("x-fake-reason"), v);
    }
    resp
}

pub(super) fn throttled(st: &State) -> Resp {
    let now = st.now();
    let mut resp = if st.config.xml_429 {
        xml(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n\
                 <IntuitResponse time=\"{}\" xmlns=\"http://schema.intuit.com/finance/v3\">\n\
                 <Fault type=\"SERVICE\">\n<Error code=\"3001\">\n\
                 <Message>message=ThrottleExceeded; errorCode=003001; statusCode=429</Message>\n\
                 <Detail>The request limit was reached.  Try again later</Detail>\n\
                 </Error>\n</Fault>\n</IntuitResponse>",
                qbo_time(now)
            ),
        )
    } else {
        json_resp(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({
                "fault": {
                    "error": [{
                        "message": "message=ThrottleExceeded; errorCode=003001; statusCode=429",
                        "detail": "The request limit was reached.  Try again later",
                        "code": "3001",
                        "element": null
                    }],
                    "type": "SERVICE"
                },
                "time": now.timestamp_millis()
            }),
        )
    };
    if let Some(after) = st.config.retry_after {
        if let Ok(v) = HeaderValue::from_str(&after.as_secs().to_string()) {
            resp.headers_mut().insert(hyper::header::RETRY_AFTER, v);
        }
    }
    resp
}

pub(super) fn injected_api_failure(st: &State, status: u16) -> Resp {
    let now = st.now();
    match status {
        429 => throttled(st),
        401 => unauthorized(st, "injected failure"),
        200 | 500 => json_resp(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &fault_body(
                now,
                "SystemFault",
                "10000",
                "An application error has occurred while processing your request",
                "System Failure Error: fake Intuit injected failure",
            ),
        ),
        502..=504 => html(
            StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            "Service Unavailable",
        ),
        s => Response::builder()
            .status(StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .body(Full::new(Bytes::new()))
            .unwrap_or_default(),
    }
}
