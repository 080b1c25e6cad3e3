//! Intuit OAuth 2.0: discovery, the auto-approving authorize endpoint, the token endpoint
//! (code exchange and refresh rotation) and revoke.

use super::*;

/// Marks a refresh of one grant as in flight from arrival (before latency) until answered,
/// so overlapping refreshes of the same grant can be seen.
pub(super) struct Refreshing {
    pub(super) shared: Arc<Shared>,
    pub(super) grant: usize,
}

impl Refreshing {
    pub(super) fn enter(st: &mut State, shared: &Arc<Shared>, req: &Req) -> Option<Refreshing> {
        let form: HashMap<String, String> = url::form_urlencoded::parse(&req.body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if form.get("grant_type").map(String::as_str) != Some("refresh_token") {
            return None;
        }
        let grant = *st.refresh_index.get(form.get("refresh_token")?)?;
        let in_flight = st.refreshing.entry(grant).or_default();
        *in_flight += 1;
        if *in_flight > 1 {
            st.concurrent_refreshes += 1;
            if st.config.concurrent_refresh_revokes {
                st.grants[grant].revoked = true;
            }
        }
        Some(Refreshing {
            shared: shared.clone(),
            grant,
        })
    }
}

impl Drop for Refreshing {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        if let Some(n) = st.refreshing.get_mut(&self.grant) {
            *n = n.saturating_sub(1);
        }
    }
}

pub(super) fn discovery(_st: &State, req: &Req) -> Resp {
    let base = match req.header("host") {
        Some(host) => format!("http://{host}"),
        None => String::new(),
    };
    json_resp(
        StatusCode::OK,
        &json!({
            "issuer": "https://oauth.platform.intuit.com/op/v1",
            "authorization_endpoint": format!("{base}/connect/oauth2"),
            "token_endpoint": format!("{base}/oauth2/v1/tokens/bearer"),
            "userinfo_endpoint": format!("{base}/v1/openid_connect/userinfo"),
            "revocation_endpoint": format!("{base}/v2/oauth2/tokens/revoke"),
            "jwks_uri": format!("{base}/v1/openid_connect/keys"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "profile", "address", "phone"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "claims_supported": ["aud", "exp", "iat", "iss", "realmid", "sub"],
        }),
    )
}

pub(super) fn authorize(st: &mut State, req: &Req) -> Resp {
    let q = req.query();
    if q.get("client_id") != Some(&st.config.client_id) {
        return html(StatusCode::BAD_REQUEST, "invalid client_id");
    }
    let Some(redirect_uri) = q.get("redirect_uri").cloned() else {
        return html(StatusCode::BAD_REQUEST, "missing redirect_uri");
    };
    if !st.redirect_uris.contains(&redirect_uri) {
        return html(
            StatusCode::BAD_REQUEST,
            "The redirect_uri query parameter value is invalid. Make sure it is listed in the \
             Redirect URIs section on your app's keys tab and matches it exactly.",
        );
    }
    let Ok(mut location) = url::Url::parse(&redirect_uri) else {
        return html(StatusCode::BAD_REQUEST, "redirect_uri is not a URL");
    };
    if q.get("response_type").map(String::as_str) != Some("code") {
        return html(StatusCode::BAD_REQUEST, "response_type must be code");
    }
    let scope = q.get("scope").cloned().unwrap_or_default();
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    if !scopes.contains(&ACCOUNTING_SCOPE) || scopes.iter().any(|s| !KNOWN_SCOPES.contains(s)) {
        return html(StatusCode::BAD_REQUEST, "invalid scope");
    }
    let state = q.get("state").cloned();
    if std::mem::take(&mut st.deny_next) {
        {
            let mut pairs = location.query_pairs_mut();
            pairs.append_pair("error", "access_denied");
            if let Some(state) = &state {
                pairs.append_pair("state", state);
            }
        }
        return redirect(location.as_str());
    }
    let realm = st.next_realm.clone().or_else(|| st.last_added.clone());
    let Some(realm) = realm.filter(|r| st.companies.contains_key(r)) else {
        st.failures.push(
            "fake Intuit: authorize called with no company to hand out \
             (add_company / set_next_realm a registered realm)"
                .to_string(),
        );
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "fake misconfigured: no company",
        );
    };
    let code = new_token("fakeAC-");
    let now = st.now();
    st.codes.insert(
        code.clone(),
        AuthCode {
            realm: realm.clone(),
            redirect_uri,
            issued_at: now,
            used: false,
        },
    );
    {
        let mut pairs = location.query_pairs_mut();
        pairs.append_pair("code", &code);
        if let Some(state) = &state {
            pairs.append_pair("state", state);
        }
        pairs.append_pair("realmId", &realm);
    }
    redirect(location.as_str())
}

pub(super) fn basic_auth_ok(st: &State, req: &Req) -> bool {
    let Some(value) = req.header("authorization") else {
        return false;
    };
    let Some((scheme, b64)) = value.split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
        return false;
    };
    let Ok(decoded) = String::from_utf8(decoded) else {
        return false;
    };
    decoded
        .split_once(':')
        .is_some_and(|(id, secret)| id == st.config.client_id && secret == st.config.client_secret)
}

pub(super) fn oauth_error(
    status: StatusCode,
    error: &str,
    description: Option<&str>,
    reason: &str,
) -> Resp {
    let body = match description {
        Some(d) => json!({"error": error, "error_description": d}),
        None => json!({"error": error}),
    };
    let mut resp = json_resp(status, &body);
    // Not an Intuit header: says why, for whoever debugs a failing test.
    if let Ok(v) = HeaderValue::from_str(reason) {
        resp.headers_mut()
            .insert(HeaderName::from_static("x-fake-reason"), v);
    }
    resp
}

pub(super) fn invalid_grant(reason: &str) -> Resp {
    oauth_error(
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        Some("Token invalid"),
        reason,
    )
}

pub(super) fn invalid_client() -> Resp {
    let mut resp = oauth_error(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        None,
        "bad client credentials",
    );
    resp.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"Intuit\""),
    );
    resp
}

pub(super) fn token_endpoint(st: &mut State, req: &Req) -> Resp {
    st.token_calls += 1;
    if let Some(status) = st.token_failures.pop_front() {
        return match status {
            400 => invalid_grant("injected failure"),
            401 => invalid_client(),
            s => {
                let status = StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                html(status, "injected failure")
            }
        };
    }
    if req.method != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    if !basic_auth_ok(st, req) {
        return invalid_client();
    }
    let form_type = req
        .header("content-type")
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if !form_type {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            None,
            "content-type must be application/x-www-form-urlencoded",
        );
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(&req.body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let include_hard = req
        .header("x-include-refresh-token-hard-expires-in")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let now = st.now();
    let grant = match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let (Some(code), Some(redirect_uri)) = (form.get("code"), form.get("redirect_uri"))
            else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    None,
                    "code and redirect_uri are required",
                );
            };
            let code_lifetime = td(st.config.code_lifetime);
            let Some(entry) = st.codes.get_mut(code) else {
                return invalid_grant("unknown code");
            };
            if entry.used {
                return invalid_grant("code already used");
            }
            if now >= entry.issued_at + code_lifetime {
                return invalid_grant("code expired");
            }
            if entry.redirect_uri != *redirect_uri {
                return invalid_grant("redirect_uri differs from the one used at authorize");
            }
            entry.used = true;
            let realm = entry.realm.clone();
            st.create_grant(&realm, now)
        }
        Some("refresh_token") => {
            let Some(rt) = form.get("refresh_token") else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    None,
                    "refresh_token is required",
                );
            };
            match refresh(st, rt, now) {
                Ok(id) => id,
                Err(reason) => return invalid_grant(reason),
            }
        }
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                None,
                "unsupported grant_type",
            )
        }
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                None,
                "grant_type is required",
            )
        }
    };
    let at = st.issue_access_token(grant, now);
    let g = &st.grants[grant];
    let at_expires = st.access_index[&at].expires_at;
    let mut body = json!({
        "token_type": "bearer",
        "access_token": at,
        "expires_in": secs_until(now, at_expires),
        "refresh_token": g.current_rt,
        "x_refresh_token_expires_in": secs_until(now, g.rolling_expires_at),
    });
    if include_hard {
        body["x_refresh_token_hard_expires_in"] = json!(secs_until(now, g.hard_expires_at));
    }
    let mut resp = json_resp(StatusCode::OK, &body);
    resp.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    resp
}

/// The rotation rules of doc §2 "What the fake OAuth server should do".
pub(super) fn refresh(st: &mut State, rt: &str, now: DateTime<Utc>) -> Result<usize, &'static str> {
    let Some(&id) = st.refresh_index.get(rt) else {
        return Err("unknown refresh token");
    };
    let rotation = td(st.config.rotation_interval);
    let grace = td(st.config.previous_token_grace);
    let lifetime = td(st.config.refresh_token_lifetime);
    let g = &st.grants[id];
    if g.revoked {
        return Err("grant revoked");
    }
    if now >= g.hard_expires_at {
        return Err("grant past its hard expiry");
    }
    if now >= g.rolling_expires_at {
        return Err("refresh token expired (rolling window)");
    }
    let is_current = g.current_rt == rt;
    let in_grace = g
        .previous_rt
        .as_ref()
        .is_some_and(|(prev, deadline)| prev == rt && now < *deadline);
    if !is_current && !in_grace {
        return Err("refresh token rotated out (previous token past its grace)");
    }
    if g.force_rotate || now - g.current_rt_issued_at >= rotation {
        let new_rt = st.mint_refresh_token(id);
        let g = &mut st.grants[id];
        let old = std::mem::replace(&mut g.current_rt, new_rt);
        g.previous_rt = Some((old, now + grace));
        g.current_rt_issued_at = now;
        g.force_rotate = false;
    }
    // Intuit requires refreshing only when the access token is expired or about to expire.
    let latest_at_expiry = st.grants[id]
        .access_tokens
        .last()
        .and_then(|at| st.access_index.get(at))
        .map(|a| a.expires_at);
    if latest_at_expiry.is_some_and(|exp| now + td(EARLY_REFRESH_MARGIN) < exp) {
        st.early_refreshes += 1;
    }
    let g = &mut st.grants[id];
    g.rolling_expires_at = (now + lifetime).min(g.hard_expires_at);
    g.refreshes += 1;
    Ok(id)
}

pub(super) fn revoke_endpoint(st: &mut State, req: &Req) -> Resp {
    st.revoke_calls += 1;
    if req.method != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    if !basic_auth_ok(st, req) {
        return invalid_client();
    }
    let is_json = req
        .header("content-type")
        .is_some_and(|ct| ct.starts_with("application/json"));
    let token = serde_json::from_slice::<Value>(&req.body)
        .ok()
        .and_then(|v| v.get("token").and_then(Value::as_str).map(str::to_string));
    let (true, Some(token)) = (is_json, token) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            None,
            "body must be JSON {\"token\": ...} with content-type application/json",
        );
    };
    st.revoked_tokens.push(token.clone());
    let grant = st
        .refresh_index
        .get(&token)
        .copied()
        .or_else(|| st.access_index.get(&token).map(|a| a.grant));
    // Unknown tokens also get 200 (RFC 7009; Intuit's answer is undocumented).
    if let Some(id) = grant {
        st.grants[id].revoked = true;
    }
    Response::builder()
        .status(StatusCode::OK)
        .body(Full::new(Bytes::new()))
        .unwrap_or_default()
}
