//! The server handle [`FakeIntuit`]: starting, stopping, and the knobs and readings tests use
//! (scripted failures, tokens, rates, recorded requests).

use super::*;

/// A running fake Intuit (OAuth + QuickBooks Online accounting API). Drop it to stop it;
/// dropping re-raises any handler panic or fake misuse as a test failure.
pub struct FakeIntuit {
    pub(super) addr: SocketAddr,
    pub(super) shared: Arc<Shared>,
    pub(super) shutdown_tx: Option<tokio::sync::oneshot::Sender<()>>,
    pub(super) thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for FakeIntuit {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown_tx.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if !std::thread::panicking() {
            let failures = std::mem::take(&mut self.shared.lock().failures);
            if !failures.is_empty() {
                panic!("fake Intuit recorded failures:\n{}", failures.join("\n"));
            }
        }
    }
}

impl FakeIntuit {
    /// Binds `127.0.0.1:0` and serves until dropped.
    pub async fn start(config: FakeIntuitConfig) -> FakeIntuit {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("fake Intuit: bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("fake Intuit: set_nonblocking");
        let addr = listener.local_addr().expect("fake Intuit: local_addr");
        let clock = Clock {
            epoch: config.start_time.unwrap_or_else(Utc::now),
            started: Instant::now(),
            offset: Duration::ZERO,
        };
        let state = State {
            redirect_uris: vec![config.redirect_uri.clone()],
            config,
            clock,
            companies: HashMap::new(),
            next_realm: None,
            last_added: None,
            deny_next: false,
            codes: HashMap::new(),
            grants: Vec::new(),
            realm_grants: HashMap::new(),
            refresh_index: HashMap::new(),
            access_index: HashMap::new(),
            issued_rts: Vec::new(),
            issued_ats: Vec::new(),
            revoked_tokens: Vec::new(),
            token_calls: 0,
            revoke_calls: 0,
            token_failures: VecDeque::new(),
            api_failures: VecDeque::new(),
            realm_api_failures: HashMap::new(),
            realm_latency: HashMap::new(),
            counters: HashMap::new(),
            in_flight_total: 0,
            peak_in_flight_total: 0,
            buckets: HashMap::new(),
            idempotency: HashMap::new(),
            replays: 0,
            requestid_conflicts: Vec::new(),
            refreshing: HashMap::new(),
            concurrent_refreshes: 0,
            early_refreshes: 0,
            requests: Vec::new(),
            failures: Vec::new(),
            random_faults: None,
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
        });
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let server_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fake-intuit-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("fake Intuit: runtime");
                rt.block_on(serve(listener, server_shared, shutdown_rx, ready_tx));
            })
            .expect("fake Intuit: spawn thread");
        let _ = ready_rx.await;
        FakeIntuit {
            addr,
            shared,
            shutdown_tx: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    // --- addresses ---------------------------------------------------------------------------

    /// The bound socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The browser authorize endpoint (`/connect/oauth2`).
    pub fn authorize_url(&self) -> String {
        format!("{}/connect/oauth2", self.base_url())
    }

    /// The token endpoint (`/oauth2/v1/tokens/bearer`).
    pub fn token_url(&self) -> String {
        format!("{}/oauth2/v1/tokens/bearer", self.base_url())
    }

    /// The revoke endpoint (`/v2/oauth2/tokens/revoke`).
    pub fn revoke_url(&self) -> String {
        format!("{}/v2/oauth2/tokens/revoke", self.base_url())
    }

    /// The sandbox discovery document.
    pub fn discovery_url(&self) -> String {
        format!(
            "{}/.well-known/openid_sandbox_configuration",
            self.base_url()
        )
    }

    /// The accounting API base; paths are `/v3/company/{realm}/...`.
    pub fn api_base(&self) -> String {
        self.base_url()
    }

    /// The configured client id.
    pub fn client_id(&self) -> String {
        self.state().config.client_id.clone()
    }

    /// The configured client secret.
    pub fn client_secret(&self) -> String {
        self.state().config.client_secret.clone()
    }

    /// The redirect URI registered at start.
    pub fn redirect_uri(&self) -> String {
        self.state().config.redirect_uri.clone()
    }

    /// Registers one more redirect URI (e.g. once the daemon under test knows its port).
    pub fn register_redirect_uri(&self, uri: impl Into<String>) {
        self.state().redirect_uris.push(uri.into());
    }

    // --- companies and grants ----------------------------------------------------------------

    /// Registers a company. The most recently added one is handed out at authorize time
    /// unless [`set_next_realm`](Self::set_next_realm) picked one. Panics on a duplicate realm.
    pub fn add_company(&self, spec: CompanySpec) {
        let mut st = self.state();
        let realm = spec.realm_id.clone();
        st.add_company(spec);
        st.last_added = Some(realm);
    }

    /// Registers a company and issues it a grant directly, without the browser flow.
    /// Returns `(access_token, refresh_token)`. Does not change which realm authorize hands
    /// out, and does not count as a token call.
    pub fn add_connected_company(&self, spec: CompanySpec) -> (String, String) {
        let mut st = self.state();
        let realm = spec.realm_id.clone();
        st.add_company(spec);
        issue_grant_locked(&mut st, &realm)
    }

    /// Issues a new grant for an already registered realm, as a completed browser flow
    /// would. Returns `(access_token, refresh_token)`.
    pub fn issue_grant(&self, realm: &str) -> (String, String) {
        let mut st = self.state();
        st.company_mut(realm);
        issue_grant_locked(&mut st, realm)
    }

    /// A grant "made by another deployment" (the predecessor, or a single-tenant install):
    /// registers the company unless it is known, and mints a grant for it that did not come
    /// through our connect flow. Its refresh token was issued a rotation interval ago, so the
    /// first refresh rotates it (the old value then lives only for the grace period), as a
    /// long-running deployment's token would. Returns the refresh token; not a token call.
    pub fn grant_from_other_deployment(&self, spec: CompanySpec) -> String {
        let mut st = self.state();
        let realm = spec.realm_id.clone();
        if !st.companies.contains_key(&realm) {
            st.add_company(spec);
        }
        let now = st.now();
        let id = st.create_grant(&realm, now);
        let aged = now - td(st.config.rotation_interval);
        st.grants[id].current_rt_issued_at = aged;
        st.grants[id].current_rt.clone()
    }

    /// The realm the next authorize hands out (sticky until changed).
    pub fn set_next_realm(&self, realm: impl Into<String>) {
        self.state().next_realm = Some(realm.into());
    }

    /// The next authorize is denied: redirect with `error=access_denied&state=...`.
    pub fn deny_next(&self) {
        self.state().deny_next = true;
    }

    /// Switches multicurrency on or off (on is irreversible at Intuit; the fake allows both).
    pub fn set_multicurrency(&self, realm: &str, enabled: bool) {
        self.state().company_mut(realm).spec.multicurrency = enabled;
    }

    /// Adds a CompanyCurrency row or changes its `Active` flag.
    pub fn set_currency_active(&self, realm: &str, code: &str, active: bool) {
        let mut st = self.state();
        let now = st.now();
        st.company_mut(realm).set_currency(code, active, now);
    }

    /// Renames the company (`CompanyName` and `LegalName`).
    pub fn set_company_name(&self, realm: &str, name: &str) {
        self.state().company_mut(realm).spec.name = name.to_string();
    }

    /// Changes the home currency (the Preferences answer and the write validation).
    pub fn set_home_currency(&self, realm: &str, code: &str) {
        let mut st = self.state();
        let company = st.company_mut(realm);
        company.spec.home_currency = code.to_string();
        company.currencies.retain(|c| c.code != code);
    }

    // --- clock -------------------------------------------------------------------------------

    /// The fake's notion of now.
    pub fn now(&self) -> DateTime<Utc> {
        self.state().now()
    }

    /// Moves the fake's clock forward (codes and tokens expire without sleeping).
    pub fn advance(&self, by: Duration) {
        self.state().clock.offset += by;
    }

    // --- OAuth knobs and observations --------------------------------------------------------

    /// Revokes every grant of `realm`, as disconnecting the app inside QuickBooks would.
    pub fn revoke_grant(&self, realm: &str) {
        let mut st = self.state();
        let ids = st.realm_grants.get(realm).cloned().unwrap_or_default();
        for id in ids {
            st.grants[id].revoked = true;
        }
    }

    /// Whether the realm's latest grant has been revoked (false when it never had one).
    pub fn is_grant_revoked(&self, realm: &str) -> bool {
        let st = self.state();
        st.latest_grant(realm).is_some_and(|g| st.grants[g].revoked)
    }

    /// Whether `realm` has a grant that is neither revoked nor past its expiries.
    pub fn is_connected(&self, realm: &str) -> bool {
        let st = self.state();
        let now = st.now();
        st.realm_grants.get(realm).is_some_and(|ids| {
            ids.iter().any(|&g| {
                let g = &st.grants[g];
                !g.revoked && now < g.rolling_expires_at && now < g.hard_expires_at
            })
        })
    }

    /// The next refresh of the realm's latest grant mints a new refresh token, whatever the
    /// current one's age.
    pub fn rotate_now(&self, realm: &str) {
        let mut st = self.state();
        if let Some(g) = st.latest_grant(realm) {
            st.grants[g].force_rotate = true;
        }
    }

    /// Expires every access token of the realm now (Intuit invalidating them early).
    pub fn expire_access_tokens(&self, realm: &str) {
        let mut st = self.state();
        let now = st.now();
        let ids = st.realm_grants.get(realm).cloned().unwrap_or_default();
        for id in ids {
            let ats = st.grants[id].access_tokens.clone();
            for at in ats {
                if let Some(a) = st.access_index.get_mut(&at) {
                    a.expires_at = a.expires_at.min(now);
                }
            }
        }
    }

    /// The current refresh token of the realm's latest grant.
    pub fn current_refresh_token(&self, realm: &str) -> Option<String> {
        let st = self.state();
        st.latest_grant(realm)
            .map(|g| st.grants[g].current_rt.clone())
    }

    /// The next `n` token-endpoint calls answer `status` (500: HTML body; 400: invalid_grant;
    /// 401: invalid_client). Calls queue up, so knobs can script a sequence.
    pub fn fail_next_token_calls(&self, n: usize, status: u16) {
        let mut st = self.state();
        st.token_failures.extend(std::iter::repeat_n(status, n));
    }

    /// Token-endpoint calls received (all, including failed ones).
    pub fn token_calls(&self) -> u64 {
        self.state().token_calls
    }

    /// How many refresh calls arrived while another refresh of the same grant was still in
    /// flight (the daemon is meant to refresh one realm at a time).
    pub fn concurrent_refreshes(&self) -> u64 {
        self.state().concurrent_refreshes
    }

    /// Successful refreshes of the realm's grants.
    pub fn refreshes(&self, realm: &str) -> u64 {
        let st = self.state();
        st.realm_grants
            .get(realm)
            .map_or(0, |ids| ids.iter().map(|&g| st.grants[g].refreshes).sum())
    }

    /// Successful refreshes made while the grant's newest access token still had more than
    /// five minutes left (Intuit asks apps not to refresh before they need to).
    pub fn early_refreshes(&self) -> u64 {
        self.state().early_refreshes
    }

    /// Revoke-endpoint calls received.
    pub fn revoke_calls(&self) -> u64 {
        self.state().revoke_calls
    }

    /// The tokens the client sent to the revoke endpoint, in order.
    pub fn revoked_tokens(&self) -> Vec<String> {
        self.state().revoked_tokens.clone()
    }

    /// Every refresh token the fake ever minted (to grep stores and logs for plaintext).
    pub fn issued_refresh_tokens(&self) -> Vec<String> {
        self.state().issued_rts.clone()
    }

    /// Every access token the fake ever minted.
    pub fn issued_access_tokens(&self) -> Vec<String> {
        self.state().issued_ats.clone()
    }

    // --- API knobs ---------------------------------------------------------------------------

    /// Delay for every request (OAuth and API) without a per-realm value.
    pub fn set_latency(&self, latency: Duration) {
        self.state().config.latency = latency;
    }

    /// Delay for this realm's API calls (overrides the global latency).
    pub fn set_realm_latency(&self, realm: &str, latency: Duration) {
        self.state()
            .realm_latency
            .insert(realm.to_string(), latency);
    }

    /// The next `n` accounting calls (any realm) answer `status` after auth-independent
    /// gateway checks: 429 throttle body (XML or JSON per `xml_429`), 401 gateway body,
    /// 500 SystemFault JSON, 503/502/504 an HTML page, 200 a SystemFault inside a 200,
    /// anything else an empty body.
    pub fn fail_next_api_calls(&self, n: usize, status: u16) {
        let mut st = self.state();
        st.api_failures.extend(std::iter::repeat_n(status, n));
    }

    /// Every later accounting call fails at random: 429 with probability `p429`, a 5xx with
    /// probability `p5xx` (half of them a 500 before the call is processed, half a 502 after
    /// it was processed, as when an answer is lost on the way back). Deterministic per
    /// `seed`. `p5xx = p429 = 0` turns it off.
    pub fn set_random_api_faults(&self, p5xx: f64, p429: f64, seed: u64) {
        self.state().random_faults = (p5xx > 0.0 || p429 > 0.0).then_some(RandomFaults {
            p5xx,
            p429,
            rng: seed.max(1),
            injected_5xx: 0,
            injected_429: 0,
        });
    }

    /// Random faults injected so far: (5xx, 429).
    pub fn random_faults_injected(&self) -> (u64, u64) {
        self.state()
            .random_faults
            .as_ref()
            .map_or((0, 0), |f| (f.injected_5xx, f.injected_429))
    }

    /// Like [`fail_next_api_calls`](Self::fail_next_api_calls), for one realm's calls only
    /// (consumed before the global queue).
    pub fn fail_next_api_calls_for(&self, realm: &str, n: usize, status: u16) {
        let mut st = self.state();
        st.realm_api_failures
            .entry(realm.to_string())
            .or_default()
            .extend(std::iter::repeat_n(status, n));
    }

    /// Per-realm in-flight cap (`None`: unlimited).
    pub fn set_concurrency_cap(&self, cap: Option<usize>) {
        self.state().config.concurrency_cap = cap;
    }

    /// Per-realm token buckets (empty: none). Resets existing buckets.
    pub fn set_rate_limits(&self, limits: Vec<RateLimit>) {
        let mut st = self.state();
        st.config.rate_limits = limits;
        st.buckets.clear();
    }

    /// `Retry-After` on 429s.
    pub fn set_retry_after(&self, after: Option<Duration>) {
        self.state().config.retry_after = after;
    }

    /// XML (true) or gateway JSON (false) 429 bodies.
    pub fn set_xml_429(&self, xml: bool) {
        self.state().config.xml_429 = xml;
    }

    /// XML (true) or lower-case gateway JSON (false) 401 bodies.
    pub fn set_xml_401(&self, xml: bool) {
        self.state().config.xml_401 = xml;
    }

    /// Refuse (or accept again) every ExchangeRate query with a Fault; single GETs work.
    pub fn set_exchange_rate_query_fault(&self, on: bool) {
        self.state().config.exchange_rate_query_fault = on;
    }

    /// The ExchangeRate queries this realm received (their `query` text), in order.
    pub fn exchange_rate_queries(&self, realm: &str) -> Vec<String> {
        self.requests_for(realm)
            .iter()
            .filter(|r| r.path().ends_with("/query"))
            .filter_map(|r| r.query_param("query"))
            .filter(|q| q.to_ascii_lowercase().contains("from exchangerate"))
            .collect()
    }

    /// What `GET exchangerate` answers for a date without a row.
    pub fn set_missing_rate(&self, behaviour: MissingRate) {
        self.state().config.missing_rate = behaviour;
    }

    // --- API observations --------------------------------------------------------------------

    /// Metered reads received for the realm (GETs and queries, accepted or not).
    pub fn reads(&self, realm: &str) -> u64 {
        self.state().counters.get(realm).map_or(0, |c| c.reads)
    }

    /// Writes received for the realm (POSTs other than query, accepted or not).
    pub fn writes(&self, realm: &str) -> u64 {
        self.state().counters.get(realm).map_or(0, |c| c.writes)
    }

    /// Reads over all realms.
    pub fn total_reads(&self) -> u64 {
        self.state().counters.values().map(|c| c.reads).sum()
    }

    /// Writes over all realms.
    pub fn total_writes(&self) -> u64 {
        self.state().counters.values().map(|c| c.writes).sum()
    }

    /// The most accounting calls that were ever in flight at once for the realm.
    pub fn peak_in_flight(&self, realm: &str) -> usize {
        self.state()
            .counters
            .get(realm)
            .map_or(0, |c| c.peak_in_flight)
    }

    /// The most accounting calls that were ever in flight at once, over all realms.
    pub fn peak_in_flight_total(&self) -> usize {
        self.state().peak_in_flight_total
    }

    /// The realm's exchange-rate rows, ordered by (date, source).
    pub fn exchange_rates(&self, realm: &str) -> Vec<StoredRate> {
        let st = self.state();
        st.companies.get(realm).map_or_else(Vec::new, |c| {
            c.rates
                .iter()
                .map(|((date, source), row)| stored_rate(*date, source, row))
                .collect()
        })
    }

    /// One exchange-rate row.
    pub fn exchange_rate(&self, realm: &str, source: &str, date: NaiveDate) -> Option<StoredRate> {
        let st = self.state();
        let company = st.companies.get(realm)?;
        company
            .rates
            .get(&(date, source.to_string()))
            .map(|row| stored_rate(date, source, row))
    }

    /// Seeds or edits a row as someone in the QuickBooks UI would: a new row gets SyncToken
    /// "0", an existing one is updated and its SyncToken incremented.
    pub fn set_exchange_rate(&self, realm: &str, source: &str, date: NaiveDate, rate: Decimal) {
        let mut st = self.state();
        let now = st.now();
        let company = st.company_mut(realm);
        let target = company.spec.home_currency.clone();
        upsert_rate(company, source, date, rate, &target, now);
    }

    /// Every request received, in arrival order (empty when `record_requests` is off).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state().requests.clone()
    }

    /// The requests one realm received.
    pub fn requests_for(&self, realm: &str) -> Vec<RecordedRequest> {
        self.state()
            .requests
            .iter()
            .filter(|r| r.realm.as_deref() == Some(realm))
            .cloned()
            .collect()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.state().requests.clear();
    }

    /// POSTs answered from the `requestid` cache instead of being run again.
    pub fn idempotent_replays(&self) -> u64 {
        self.state().replays
    }

    /// `(realm, requestid)` pairs reused with a different body (a client bug: the replay
    /// answers the first body's result).
    pub fn requestid_conflicts(&self) -> Vec<(String, String)> {
        self.state().requestid_conflicts.clone()
    }

    /// Takes the recorded handler panics and misuse reports, so a test that provokes one on
    /// purpose can assert on it and still drop the fake cleanly.
    pub fn take_failures(&self) -> Vec<String> {
        std::mem::take(&mut self.state().failures)
    }
}
