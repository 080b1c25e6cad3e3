//! Serving: the accept loop, reading a request, catching handler panics, and routing to the
//! OAuth endpoints or the accounting API.

use super::*;

pub(super) type Resp = Response<Full<Bytes>>;

/// A request with its body already read.
pub(super) struct Req {
    pub(super) method: Method,
    pub(super) uri: Uri,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

impl Req {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Query parameters with lower-cased names (Intuit's are case-insensitive).
    pub(super) fn query(&self) -> HashMap<String, String> {
        let mut out = HashMap::new();
        if let Some(q) = self.uri.query() {
            for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
                out.entry(k.to_ascii_lowercase())
                    .or_insert_with(|| v.into_owned());
            }
        }
        out
    }
}

pub(super) async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            shared
                .lock()
                .failures
                .push(format!("fake Intuit: listener: {e}"));
            return;
        }
    };
    let _ = ready.send(());
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(dispatch(shared, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
}

/// Reads the body, records the request, runs the handler in its own task (so a panic is
/// caught, answered with 500 and recorded), and stamps `intuit_tid` on the answer.
pub(super) async fn dispatch(shared: Arc<Shared>, req: Request<Incoming>) -> Resp {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let req = Req {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        body,
    };
    let realm = api_path(req.uri.path()).map(|(realm, _)| realm.to_string());
    let log_index = {
        let mut st = shared.lock();
        if st.config.record_requests {
            st.requests.push(RecordedRequest {
                method: req.method.to_string(),
                path_and_query: req
                    .uri
                    .path_and_query()
                    .map_or_else(|| req.uri.path().to_string(), |p| p.to_string()),
                realm,
                headers: req
                    .headers
                    .iter()
                    .map(|(n, v)| {
                        (
                            n.as_str().to_string(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect(),
                body: String::from_utf8_lossy(&req.body).into_owned(),
                status: None,
            });
            Some(st.requests.len() - 1)
        } else {
            None
        }
    };
    let what = format!("{} {}", req.method, req.uri);
    let mut resp = match tokio::spawn(handle(shared.clone(), req)).await {
        Ok(resp) => resp,
        Err(e) => {
            let msg = if e.is_panic() {
                let payload = e.into_panic();
                payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "non-string panic payload".to_string())
            } else {
                "handler task cancelled".to_string()
            };
            shared
                .lock()
                .failures
                .push(format!("fake Intuit: handler for {what} panicked: {msg}"));
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "fake Intuit handler panicked",
            )
        }
    };
    if let Ok(v) = HeaderValue::from_str(&new_tid()) {
        resp.headers_mut()
            .insert(HeaderName::from_static("intuit_tid"), v);
    }
    if let Some(i) = log_index {
        let mut st = shared.lock();
        if let Some(r) = st.requests.get_mut(i) {
            r.status = Some(resp.status().as_u16());
        }
    }
    resp
}

/// `(realm, rest)` for `/v3/company/{realm}/{rest}`.
pub(super) fn api_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/v3/company/")?;
    let (realm, rest) = rest.split_once('/').unwrap_or((rest, ""));
    (!realm.is_empty()).then_some((realm, rest))
}

pub(super) async fn handle(shared: Arc<Shared>, req: Req) -> Resp {
    let path = req.uri.path().to_string();
    if let Some((realm, rest)) = api_path(&path) {
        return api(shared, &req, realm, rest).await;
    }
    let (latency, _refreshing) = {
        let mut st = shared.lock();
        let refreshing = if path == "/oauth2/v1/tokens/bearer" {
            Refreshing::enter(&mut st, &shared, &req)
        } else {
            None
        };
        (st.config.latency, refreshing)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    // Declared after `_refreshing`, so dropped first: its Drop takes the lock too.
    let mut st = shared.lock();
    match (req.method.clone(), path.as_str()) {
        (
            Method::GET,
            "/.well-known/openid_sandbox_configuration" | "/.well-known/openid_configuration",
        ) => discovery(&st, &req),
        (Method::GET, "/connect/oauth2") => authorize(&mut st, &req),
        (_, "/oauth2/v1/tokens/bearer") => token_endpoint(&mut st, &req),
        (_, "/v2/oauth2/tokens/revoke") => revoke_endpoint(&mut st, &req),
        (_, "/__fake/panic") => {
            drop(st);
            panic!("deliberate panic requested by a test")
        }
        _ => text(StatusCode::NOT_FOUND, "not found"),
    }
}
