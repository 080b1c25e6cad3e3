//! The fake's internal state: its clock, grants and tokens, companies and their rates,
//! counters, and the helpers that change them under the one lock.

use super::*;

/// The fake's clock: wall time at start (or `start_time`) plus real elapsed time plus
/// whatever tests `advance`d.
pub(super) struct Clock {
    pub(super) epoch: DateTime<Utc>,
    pub(super) started: Instant,
    pub(super) offset: Duration,
}

impl Clock {
    pub(super) fn now(&self) -> DateTime<Utc> {
        self.epoch + td(self.started.elapsed() + self.offset)
    }
}

pub(super) struct AuthCode {
    pub(super) realm: String,
    pub(super) redirect_uri: String,
    pub(super) issued_at: DateTime<Utc>,
    pub(super) used: bool,
}

/// One authorization (token chain) for one realm.
pub(super) struct Grant {
    pub(super) realm: String,
    pub(super) hard_expires_at: DateTime<Utc>,
    pub(super) rolling_expires_at: DateTime<Utc>,
    pub(super) current_rt: String,
    pub(super) current_rt_issued_at: DateTime<Utc>,
    /// The demoted refresh token and the end of its grace period.
    pub(super) previous_rt: Option<(String, DateTime<Utc>)>,
    pub(super) access_tokens: Vec<String>,
    pub(super) refresh_tokens: Vec<String>,
    pub(super) revoked: bool,
    /// Set by `rotate_now`: the next refresh mints a new refresh token whatever its age.
    pub(super) force_rotate: bool,
    /// Successful refreshes of this grant.
    pub(super) refreshes: u64,
}

pub(super) struct AccessToken {
    pub(super) grant: usize,
    pub(super) expires_at: DateTime<Utc>,
}

pub(super) struct CompanyCurrency {
    pub(super) id: u64,
    pub(super) code: String,
    pub(super) active: bool,
    pub(super) sync_token: u64,
    pub(super) updated: DateTime<Utc>,
}

pub(super) struct RateRow {
    pub(super) target: String,
    pub(super) rate: Decimal,
    pub(super) sync_token: u64,
    pub(super) updated: DateTime<Utc>,
}

pub(super) struct Company {
    pub(super) spec: CompanySpec,
    pub(super) created: DateTime<Utc>,
    pub(super) currencies: Vec<CompanyCurrency>,
    pub(super) next_currency_id: u64,
    /// Keyed (date, source) so a date is a contiguous range.
    pub(super) rates: BTreeMap<(NaiveDate, String), RateRow>,
}

impl Company {
    pub(super) fn new(spec: CompanySpec, now: DateTime<Utc>) -> Self {
        let mut company = Company {
            spec: spec.clone(),
            created: now,
            currencies: Vec::new(),
            next_currency_id: 1,
            rates: BTreeMap::new(),
        };
        for code in &spec.active_currencies {
            company.set_currency(code, true, now);
        }
        for code in &spec.inactive_currencies {
            company.set_currency(code, false, now);
        }
        company
    }

    pub(super) fn set_currency(&mut self, code: &str, active: bool, now: DateTime<Utc>) {
        if code == self.spec.home_currency {
            // The home currency is never a CompanyCurrency row (doc §4: excluded either way).
            return;
        }
        if let Some(c) = self.currencies.iter_mut().find(|c| c.code == code) {
            if c.active != active {
                c.active = active;
                c.sync_token += 1;
                c.updated = now;
            }
            return;
        }
        self.currencies.push(CompanyCurrency {
            id: self.next_currency_id,
            code: code.to_string(),
            active,
            sync_token: 0,
            updated: now,
        });
        self.next_currency_id += 1;
    }

    pub(super) fn is_active(&self, code: &str) -> bool {
        self.currencies.iter().any(|c| c.code == code && c.active)
    }
}

#[derive(Default)]
pub(super) struct RealmCounters {
    pub(super) reads: u64,
    pub(super) writes: u64,
    pub(super) in_flight: usize,
    pub(super) peak_in_flight: usize,
}

pub(super) struct Bucket {
    pub(super) tokens: f64,
    pub(super) last: DateTime<Utc>,
}

#[derive(Clone)]
pub(super) struct CachedResponse {
    pub(super) status: StatusCode,
    pub(super) content_type: String,
    pub(super) body: Bytes,
    pub(super) request_body: Bytes,
}

pub(super) struct State {
    pub(super) config: FakeIntuitConfig,
    pub(super) redirect_uris: Vec<String>,
    pub(super) clock: Clock,
    pub(super) companies: HashMap<String, Company>,
    pub(super) next_realm: Option<String>,
    pub(super) last_added: Option<String>,
    pub(super) deny_next: bool,
    pub(super) codes: HashMap<String, AuthCode>,
    pub(super) grants: Vec<Grant>,
    pub(super) realm_grants: HashMap<String, Vec<usize>>,
    pub(super) refresh_index: HashMap<String, usize>,
    pub(super) access_index: HashMap<String, AccessToken>,
    pub(super) issued_rts: Vec<String>,
    pub(super) issued_ats: Vec<String>,
    pub(super) revoked_tokens: Vec<String>,
    pub(super) token_calls: u64,
    pub(super) revoke_calls: u64,
    pub(super) token_failures: VecDeque<u16>,
    pub(super) api_failures: VecDeque<u16>,
    pub(super) realm_api_failures: HashMap<String, VecDeque<u16>>,
    pub(super) realm_latency: HashMap<String, Duration>,
    pub(super) counters: HashMap<String, RealmCounters>,
    pub(super) in_flight_total: usize,
    pub(super) peak_in_flight_total: usize,
    pub(super) buckets: HashMap<String, Vec<Bucket>>,
    pub(super) idempotency: HashMap<(String, String), CachedResponse>,
    pub(super) replays: u64,
    pub(super) requestid_conflicts: Vec<(String, String)>,
    /// Refresh calls in flight per grant, and how often two overlapped.
    pub(super) refreshing: HashMap<usize, usize>,
    pub(super) concurrent_refreshes: u64,
    pub(super) early_refreshes: u64,
    pub(super) requests: Vec<RecordedRequest>,
    /// Handler panics and fake misuse; re-raised on drop.
    pub(super) failures: Vec<String>,
    /// Faults drawn at random per accounting call (stress benchmarks).
    pub(super) random_faults: Option<RandomFaults>,
}

impl State {
    pub(super) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub(super) fn counters(&mut self, realm: &str) -> &mut RealmCounters {
        if !self.counters.contains_key(realm) {
            self.counters
                .insert(realm.to_string(), RealmCounters::default());
        }
        self.counters
            .get_mut(realm)
            .unwrap_or_else(|| unreachable!("just inserted"))
    }

    pub(super) fn issue_access_token(&mut self, grant: usize, now: DateTime<Utc>) -> String {
        let at = new_token("fakeAT-");
        let expires_at =
            (now + td(self.config.access_token_lifetime)).min(self.grants[grant].hard_expires_at);
        self.access_index
            .insert(at.clone(), AccessToken { grant, expires_at });
        self.grants[grant].access_tokens.push(at.clone());
        self.issued_ats.push(at.clone());
        at
    }

    pub(super) fn mint_refresh_token(&mut self, grant: usize) -> String {
        let rt = new_token("fakeRT-");
        self.refresh_index.insert(rt.clone(), grant);
        self.grants[grant].refresh_tokens.push(rt.clone());
        self.issued_rts.push(rt.clone());
        rt
    }

    /// A fresh grant for `realm`, as a successful code exchange creates one.
    pub(super) fn create_grant(&mut self, realm: &str, now: DateTime<Utc>) -> usize {
        let id = self.grants.len();
        let hard = now + td(self.config.hard_expiry);
        self.grants.push(Grant {
            realm: realm.to_string(),
            hard_expires_at: hard,
            rolling_expires_at: (now + td(self.config.refresh_token_lifetime)).min(hard),
            current_rt: String::new(),
            current_rt_issued_at: now,
            previous_rt: None,
            access_tokens: Vec::new(),
            refresh_tokens: Vec::new(),
            revoked: false,
            force_rotate: false,
            refreshes: 0,
        });
        let rt = self.mint_refresh_token(id);
        self.grants[id].current_rt = rt;
        self.realm_grants
            .entry(realm.to_string())
            .or_default()
            .push(id);
        id
    }

    pub(super) fn latest_grant(&self, realm: &str) -> Option<usize> {
        self.realm_grants.get(realm).and_then(|g| g.last().copied())
    }

    pub(super) fn add_company(&mut self, spec: CompanySpec) {
        assert!(
            !self.companies.contains_key(&spec.realm_id),
            "fake Intuit: realm {} is already registered",
            spec.realm_id
        );
        let now = self.now();
        self.companies
            .insert(spec.realm_id.clone(), Company::new(spec, now));
    }

    pub(super) fn company_mut(&mut self, realm: &str) -> &mut Company {
        self.companies
            .get_mut(realm)
            .unwrap_or_else(|| panic!("fake Intuit: unknown realm {realm}; call add_company first"))
    }
}

pub(super) struct Shared {
    pub(super) state: Mutex<State>,
}

impl Shared {
    /// Locks the state. A panicking handler may have poisoned the mutex; the panic is
    /// already recorded, so later requests carry on with the inner value.
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(super) fn issue_grant_locked(st: &mut State, realm: &str) -> (String, String) {
    let now = st.now();
    let id = st.create_grant(realm, now);
    let at = st.issue_access_token(id, now);
    (at, st.grants[id].current_rt.clone())
}

pub(super) fn stored_rate(date: NaiveDate, source: &str, row: &RateRow) -> StoredRate {
    StoredRate {
        source: source.to_string(),
        target: row.target.clone(),
        date,
        rate: row.rate,
        sync_token: row.sync_token.to_string(),
        last_updated: row.updated,
    }
}

pub(super) fn upsert_rate(
    company: &mut Company,
    source: &str,
    date: NaiveDate,
    rate: Decimal,
    target: &str,
    now: DateTime<Utc>,
) {
    match company.rates.get_mut(&(date, source.to_string())) {
        Some(row) => {
            row.rate = rate;
            row.sync_token += 1;
            row.updated = now;
        }
        None => {
            company.rates.insert(
                (date, source.to_string()),
                RateRow {
                    target: target.to_string(),
                    rate,
                    sync_token: 0,
                    updated: now,
                },
            );
        }
    }
}
