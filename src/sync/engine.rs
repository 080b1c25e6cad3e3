//! The sync engine (SPEC §5): for a company and a date, obtain the fixing in force, compute
//! the company's rates, read what QuickBooks holds for that date (one metered read), write
//! each currency that differs (deterministic `requestid`), ride out 401/429/5xx with bounded
//! retries, and record every attempt — all flushed before the answer.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sha2::Digest;
use tokio::sync::watch;

use crate::app::AppState;
use crate::boa::model::TableKind;
use crate::currency::Currency;
use crate::fixings::{self, parse_date, NoFixing};
use crate::ops::ApiError;
use crate::qbo::model::{rate_body, QboRate};
use crate::qbo::tokens::TokenError;
use crate::qbo::{self, Traced};
use crate::store::records::{Company, CompanyRate as StoredRate, Connection, LogKind, LogRecord};
use crate::sync::rates::{company_rates, InForce};

/// Company currencies and preferences are re-read after this long.
pub const CURRENCY_CACHE: chrono::Duration = chrono::Duration::hours(24);
/// Two rates closer than this are equal (QuickBooks keeps ≥ 6 decimals; we send ≤ 6).
pub const TOLERANCE: Decimal = Decimal::from_parts(5, 0, 0, false, 7);
/// Retries after 429 within one call.
const MAX_THROTTLE_RETRIES: u32 = 3;
/// Retries after 5xx/network within one call.
const MAX_TRANSIENT_RETRIES: u32 = 3;
/// Longest wait honoured for a Retry-After.
const MAX_RETRY_AFTER: u64 = 120;

/// Progress of the sync-all in flight (for `status`).
#[derive(Debug, Default)]
pub struct Progress {
    /// Companies in the run.
    pub total: AtomicUsize,
    /// Finished so far.
    pub done: AtomicUsize,
    /// Failed so far.
    pub failed: AtomicUsize,
}

/// The sync-all in flight: its date and a receiver of its answer.
type Running = Option<(NaiveDate, watch::Receiver<Option<Arc<Value>>>)>;

/// A finished sync-all, for `status` and health.
#[derive(Debug, Clone)]
pub struct LastRun {
    /// Rate date.
    pub date: NaiveDate,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
    /// Companies synced.
    pub successful: usize,
    /// Companies that failed.
    pub failed: usize,
    /// Wall time.
    pub seconds: f64,
}

/// Shared engine state: per-company locks, the sync-all gate, counters.
pub struct SyncEngine {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    running: Mutex<Running>,
    /// Progress of the current sync-all.
    pub progress: Progress,
    /// Last finished sync-all.
    pub last_run: Mutex<Option<LastRun>>,
    /// Base of the exponential backoff after 5xx/network failures.
    pub backoff_base: Duration,
    /// QuickBooks calls by kind and status (metrics): "read:200" → n.
    pub calls: Mutex<HashMap<String, u64>>,
    /// Rates written, total.
    pub rates_written: AtomicU64,
    /// Company syncs by outcome.
    pub syncs_ok: AtomicU64,
    /// Company syncs that failed.
    pub syncs_failed: AtomicU64,
}

impl Default for SyncEngine {
    fn default() -> Self {
        SyncEngine {
            locks: Mutex::new(HashMap::new()),
            running: Mutex::new(None),
            progress: Progress::default(),
            last_run: Mutex::new(None),
            backoff_base: Duration::from_secs(1),
            calls: Mutex::new(HashMap::new()),
            rates_written: AtomicU64::new(0),
            syncs_ok: AtomicU64::new(0),
            syncs_failed: AtomicU64::new(0),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl SyncEngine {
    fn company_lock(&self, realm: &str) -> CompanyLock<'_> {
        let mutex = lock(&self.locks)
            .entry(realm.to_string())
            .or_default()
            .clone();
        CompanyLock {
            engine: self,
            realm: realm.to_string(),
            mutex,
        }
    }

    fn count_call(&self, kind: &str, status: &str) {
        *lock(&self.calls)
            .entry(format!("{kind}:{status}"))
            .or_insert(0) += 1;
    }

    /// Whether a sync-all is running, and for which date.
    pub fn running_date(&self) -> Option<NaiveDate> {
        lock(&self.running).as_ref().map(|(d, _)| *d)
    }
}

/// A company's sync lock, taken from the engine's map; the map entry goes when its last
/// user is done, so the map does not keep one entry for every company ever synced.
struct CompanyLock<'a> {
    engine: &'a SyncEngine,
    realm: String,
    mutex: Arc<tokio::sync::Mutex<()>>,
}

impl CompanyLock<'_> {
    async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.mutex.lock().await
    }
}

impl Drop for CompanyLock<'_> {
    fn drop(&mut self) {
        // The guard borrowed from `self` is gone by now. Clones are only made under the map
        // lock: a count of 2 (the map's and ours) means no one else holds or waits for it,
        // and the next user creates a fresh one.
        let mut map = lock(&self.engine.locks);
        if map
            .get(&self.realm)
            .is_some_and(|m| Arc::ptr_eq(m, &self.mutex) && Arc::strong_count(m) == 2)
        {
            map.remove(&self.realm);
        }
    }
}

/// What one company sync did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Realm.
    pub realm: String,
    /// Display name.
    pub company_name: String,
    /// Rate date.
    pub date: NaiveDate,
    /// Currencies equal in QuickBooks after the call.
    pub rates_synced: usize,
    /// Writes made.
    pub rates_written: usize,
    /// Already equal.
    pub rates_unchanged: usize,
    /// Set when the sync failed.
    pub error: Option<ApiError>,
}

impl Outcome {
    /// The brief's single-company answer.
    pub fn to_json(&self) -> Value {
        json!({
            "success": self.error.is_none(),
            "message": match &self.error {
                None => format!("Synced {} rates for {}", self.rates_synced, self.company_name),
                Some(e) => format!("Sync failed for {}: {}", self.company_name, e.message),
            },
            "company_id": self.realm,
            "company_name": self.company_name,
            "date": self.date.to_string(),
            "rates_synced": self.rates_synced,
            "rates_written": self.rates_written,
            "rates_unchanged": self.rates_unchanged,
        })
    }
}

/// Why a company sync could not go on (internal).
enum Fail {
    Api(ApiError),
}

impl From<ApiError> for Fail {
    fn from(e: ApiError) -> Self {
        Fail::Api(e)
    }
}
impl From<crate::store::Error> for Fail {
    fn from(e: crate::store::Error) -> Self {
        Fail::Api(e.into())
    }
}

fn qbo_fail(e: &qbo::Error, what: &str) -> ApiError {
    if e.is_invalid_grant() {
        return ApiError::conflict(
            "reconnect_needed",
            "the QuickBooks connection expired or was revoked; the company must reconnect",
        );
    }
    ApiError::upstream(e.code(), format!("{what}: {e}"))
}

fn multicurrency_disabled() -> ApiError {
    ApiError::unprocessable(
        "multicurrency_disabled",
        "multicurrency is switched off in this QuickBooks company; exchange rates cannot be set",
    )
}

fn token_fail(e: TokenError) -> ApiError {
    match e {
        TokenError::NotConnected => ApiError::conflict(
            "not_connected",
            "the company is not connected to QuickBooks",
        ),
        TokenError::ReconnectNeeded => ApiError::conflict(
            "reconnect_needed",
            "the QuickBooks connection expired or was revoked; the company must reconnect",
        ),
        TokenError::Upstream(e) => {
            ApiError::upstream(e.code(), format!("refreshing the QuickBooks token: {e}"))
        }
        TokenError::Store(e) => ApiError::internal(e),
    }
}

/// The request id of one write: the same write retried gets the same id; a write after a
/// stale SyncToken (a new token) gets a new one. ≤ 50 characters as Intuit requires.
pub fn request_id(
    realm: &str,
    currency: Currency,
    date: NaiveDate,
    rate: Decimal,
    sync_token: &str,
) -> String {
    let mut h = sha2::Sha256::new();
    h.update(
        format!(
            "boa-exchange|{realm}|{currency}|{date}|{}|{sync_token}",
            rate.normalize()
        )
        .as_bytes(),
    );
    hex::encode(&h.finalize()[..16])
}

/// Resolves the target date: the parameter, or today falling back to the newest fixing's
/// date while today's is not yet published.
///
/// # Errors
/// 400 for a malformed date.
pub fn target_date(state: &AppState, param: Option<&str>) -> Result<NaiveDate, ApiError> {
    if let Some(p) = param.filter(|p| !p.is_empty()) {
        return parse_date("target_date", p);
    }
    let today = state.today();
    match fixings::resolve(state, today) {
        Err(Ok(NoFixing::NotYetPublished { nearest })) => Ok(nearest),
        _ => Ok(today),
    }
}

/// Calls QuickBooks with the SPEC's handling: 401 → refresh once and retry once; 429 →
/// wait (Retry-After or 60 s) and retry, bounded; 5xx/network → bounded backoff.
async fn call<T, F, Fut>(
    state: &AppState,
    realm: &str,
    token: &mut String,
    kind: &str,
    f: F,
) -> Result<Traced<T>, qbo::Error>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<Traced<T>, qbo::Error>>,
{
    let engine = &state.sync;
    let (mut refreshed, mut throttled, mut transient) = (false, 0u32, 0u32);
    loop {
        let r = f(token.clone()).await;
        match &r {
            Ok(_) => engine.count_call(kind, "200"),
            Err(qbo::Error::Unauthorized) => engine.count_call(kind, "401"),
            Err(qbo::Error::RateLimited { .. }) => engine.count_call(kind, "429"),
            Err(qbo::Error::Server { status }) => engine.count_call(kind, &status.to_string()),
            Err(qbo::Error::Fault { .. }) => engine.count_call(kind, "400"),
            Err(_) => engine.count_call(kind, "error"),
        }
        match r {
            Err(qbo::Error::Unauthorized) if !refreshed => {
                refreshed = true;
                *token = match state.tokens.after_unauthorized(realm, token).await {
                    Ok(t) => t,
                    Err(TokenError::ReconnectNeeded) => {
                        return Err(qbo::Error::InvalidGrant("refresh refused after 401".into()))
                    }
                    Err(TokenError::Upstream(e)) => return Err(e),
                    Err(e) => return Err(qbo::Error::Network(e.to_string())),
                };
            }
            Err(qbo::Error::RateLimited { retry_after }) if throttled < MAX_THROTTLE_RETRIES => {
                throttled += 1;
                let wait = retry_after.clamp(1, MAX_RETRY_AFTER);
                tracing::warn!(
                    realm_id = realm,
                    wait,
                    "Company {realm}: QuickBooks throttled (429); retrying in {wait} s"
                );
                tokio::time::sleep(Duration::from_secs(wait)).await;
            }
            Err(e) if e.is_retryable() && transient < MAX_TRANSIENT_RETRIES => {
                transient += 1;
                let wait = engine.backoff_base * 2u32.pow(transient - 1);
                tracing::warn!(realm_id = realm, error = %e, "Company {realm}: QuickBooks call failed; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
            }
            other => return other,
        }
    }
}

/// Refreshes the cached preferences and currency list (at most daily, or on demand).
async fn refresh_company_cache(
    state: &AppState,
    company: &mut Company,
    token: &mut String,
    tids: &mut Vec<String>,
) -> Result<(), ApiError> {
    let qbo = state.qbo();
    let realm = company.realm_id.clone();
    let prefs = call(state, &realm, token, "read", |t| {
        let q = qbo.clone();
        let r = realm.clone();
        async move { q.preferences(&r, &t).await }
    })
    .await
    .map_err(|e| qbo_fail(&e, "reading Preferences"))?;
    tids.extend(prefs.tid);
    let currencies = call(state, &realm, token, "read", |t| {
        let q = qbo.clone();
        let r = realm.clone();
        async move { q.company_currencies(&r, &t).await }
    })
    .await
    .map_err(|e| qbo_fail(&e, "reading company currencies"))?;
    tids.extend(currencies.tid);
    company.multicurrency = prefs.value.multicurrency;
    if let Some(home) = prefs.value.home {
        company.home_currency = home;
    }
    let home = company.home_currency;
    company.active_currencies = currencies
        .value
        .iter()
        .filter(|c| c.active && c.code != home)
        .map(|c| c.code)
        .collect();
    company.currencies_checked_at = Some(state.now());
    Ok(())
}

/// Stores what [`refresh_company_cache`] read into the company's *current* record. The sync
/// works on a copy taken when it started; saving that whole copy would undo a settings
/// change, a token refresh or a disconnect made while the sync was running.
async fn save_company_cache(state: &AppState, company: &Company) -> Result<(), Fail> {
    let now = state.now();
    state
        .store
        .update_company(&company.realm_id, |c| {
            c.multicurrency = company.multicurrency;
            c.home_currency = company.home_currency;
            c.active_currencies.clone_from(&company.active_currencies);
            c.currencies_checked_at = company.currencies_checked_at;
            c.updated_at = now;
        })
        .await?;
    Ok(())
}

/// What QuickBooks holds for `date` and `codes` (one metered read), by currency.
async fn read_theirs(
    state: &AppState,
    realm: &str,
    token: &mut String,
    date: NaiveDate,
    codes: &[Currency],
    tids: &mut Vec<String>,
) -> Result<HashMap<Currency, QboRate>, ApiError> {
    let qbo = state.qbo();
    let read = call(state, realm, token, "read", |t| {
        let q = qbo.clone();
        let r = realm.to_string();
        let c = codes.to_vec();
        async move { q.rates_on(&r, &t, date, &c).await }
    })
    .await
    .map_err(|e| qbo_fail(&e, "reading QuickBooks exchange rates"))?;
    tids.extend(read.tid);
    Ok(read.value.into_iter().map(|r| (r.currency, r)).collect())
}

/// Syncs one company for one date and records the attempt. Never panics; every failure is
/// an [`Outcome`] with an error (and recorded), except an unknown company (404).
///
/// # Errors
/// 404 unknown company; store failures.
pub async fn sync_company(
    state: &AppState,
    realm: &str,
    date: NaiveDate,
) -> Result<Outcome, ApiError> {
    let lock = state.sync.company_lock(realm);
    let _g = lock.lock().await;
    let company = state
        .store
        .company(realm)?
        .ok_or_else(|| ApiError::unknown_company(realm))?;
    let name = company.company_name.clone();
    tracing::info!(realm_id = realm, fixing_date = %date, "Company {realm}: Syncing rates for {date}");
    let mut tids = Vec::new();
    let mut written = 0usize;
    let mut unchanged = 0usize;
    let mut synced = 0usize;
    let mut fixing_ok = false;
    let result = run_sync(
        state,
        company,
        date,
        &mut tids,
        &mut written,
        &mut unchanged,
        &mut synced,
        &mut fixing_ok,
    )
    .await;
    let now = state.now();
    let error = match result {
        Ok(()) => None,
        Err(Fail::Api(e)) => Some(e),
    };
    // One scraping attempt and one syncing attempt per call (SPEC §5 "Counts").
    state.store.append_log(
        realm,
        &LogRecord {
            at: now,
            kind: LogKind::Scraping,
            success: fixing_ok,
            date: Some(date),
            message: if fixing_ok {
                format!("fixing in force on {date} obtained")
            } else {
                error
                    .as_ref()
                    .map(|e| e.message.clone())
                    .unwrap_or_default()
            },
            rates_written: 0,
            rates_unchanged: 0,
            intuit_tids: vec![],
        },
    )?;
    state.store.append_log(
        realm,
        &LogRecord {
            at: now,
            kind: LogKind::Syncing,
            success: error.is_none(),
            date: Some(date),
            message: match &error {
                None => format!("synced {synced} rates ({written} written, {unchanged} unchanged)"),
                Some(e) => format!("{}: {}", e.code, e.message),
            },
            rates_written: written as u32,
            rates_unchanged: unchanged as u32,
            intuit_tids: tids,
        },
    )?;
    state.store.flush().await?;
    match &error {
        None => {
            state.sync.syncs_ok.fetch_add(1, Relaxed);
            tracing::info!(realm_id = realm, fixing_date = %date, rates_written = written, "Company {realm}: Successfully synced {synced} rates");
        }
        Some(e) => {
            state.sync.syncs_failed.fetch_add(1, Relaxed);
            if e.code == "reconnect_needed" {
                crate::alerts::raise(
                    state,
                    &format!("token:{realm}"),
                    "token_refresh_failed",
                    Some(realm),
                    "Token refresh failed; the company must reconnect to QuickBooks",
                );
            }
            tracing::warn!(realm_id = realm, fixing_date = %date, error = %e.message, "Company {realm}: Sync failed for {date}: {}", e.message);
        }
    }
    state.sync.rates_written.fetch_add(written as u64, Relaxed);
    Ok(Outcome {
        realm: realm.to_string(),
        company_name: name,
        date,
        rates_synced: synced,
        rates_written: written,
        rates_unchanged: unchanged,
        error,
    })
}

#[allow(clippy::too_many_arguments)]
async fn run_sync(
    state: &AppState,
    mut company: Company,
    date: NaiveDate,
    tids: &mut Vec<String>,
    written: &mut usize,
    unchanged: &mut usize,
    synced: &mut usize,
    fixing_ok: &mut bool,
) -> Result<(), Fail> {
    let realm = company.realm_id.clone();
    if !company.is_active {
        return Err(ApiError::conflict(
            "company_disconnected",
            "the company is disconnected; reconnect it to sync",
        )
        .into());
    }
    if let Connection::ReconnectNeeded { .. } = company.connection {
        return Err(ApiError::conflict(
            "reconnect_needed",
            "the QuickBooks connection expired or was revoked; the company must reconnect",
        )
        .into());
    }
    // 1. The fixing in force (fetching BoA first when today's is missing).
    let resolved = match fixings::resolve(state, date) {
        Ok(r) => r,
        Err(Err(e)) => return Err(e.into()),
        Err(Ok(no)) => {
            let may_fetch = date == state.today()
                && matches!(
                    no,
                    NoFixing::NotYetPublished { .. } | NoFixing::Empty | NoFixing::Missing { .. }
                );
            if may_fetch {
                if let Err(e) = fixings::fetch(state, false).await {
                    tracing::warn!(error = %e, "BoA fetch for a sync failed");
                }
                match fixings::resolve(state, date) {
                    Ok(r) => r,
                    Err(Ok(no)) => return Err(no.to_api(date).into()),
                    Err(Err(e)) => return Err(e.into()),
                }
            } else {
                return Err(no.to_api(date).into());
            }
        }
    };
    *fixing_ok = true;
    let in_force: InForce = resolved.in_force();

    // 2. A token (refreshed if needed).
    let mut token = state
        .tokens
        .access_token(&realm)
        .await
        .map_err(token_fail)?;

    // 3. Currencies/preferences at most daily.
    let stale = company
        .currencies_checked_at
        .is_none_or(|t| state.now() - t > CURRENCY_CACHE);
    if stale {
        refresh_company_cache(state, &mut company, &mut token, tids).await?;
        save_company_cache(state, &company).await?;
    }
    if !company.multicurrency {
        return Err(multicurrency_disabled().into());
    }
    let wanted = company_rates(&in_force, company.home_currency, &company.active_currencies)
        .map_err(|e| ApiError::unprocessable("home_currency_not_fixed", e.to_string()))?;

    // 4. One metered read: what QuickBooks holds for that date and those currencies.
    let codes: Vec<Currency> = wanted.iter().map(|w| w.currency).collect();
    if codes.is_empty() {
        tracing::info!(realm_id = %realm, "Company {realm}: no active currency has a BoA rate; nothing to write");
        let now = state.now();
        state.store.update_company_unflushed(&realm, |c| {
            c.last_sync_at = Some(now);
            c.updated_at = now;
        })?;
        return Ok(());
    }
    let qbo = state.qbo();
    let mut theirs = read_theirs(state, &realm, &mut token, date, &codes, tids).await?;

    // 5. Write what differs.
    let mut rows = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut cache_refreshed = stale;
    for want in &wanted {
        let fixing = match in_force.rate(want.currency) {
            Some(r) => (r.table, r.fixing_date),
            None => (TableKind::Main, resolved.main.table.date),
        };
        let mut row = StoredRate {
            date,
            currency: want.currency,
            rate: want.rate,
            fixing,
            synced: false,
            synced_at: None,
        };
        if let Some(q) = theirs.get(&want.currency) {
            if (q.rate - want.rate).abs() < TOLERANCE {
                *unchanged += 1;
                *synced += 1;
                row.synced = true;
                row.synced_at = Some(state.now());
                rows.push(row);
                continue;
            }
        }
        let mut stale_retry = false;
        let mut skipped = false;
        loop {
            let sync_token = theirs
                .get(&want.currency)
                .map(|q| q.sync_token.clone())
                .unwrap_or_else(|| "0".into());
            let rid = request_id(&realm, want.currency, date, want.rate, &sync_token);
            let body = rate_body(
                want.currency,
                company.home_currency,
                want.rate,
                date,
                &sync_token,
            );
            let res = call(state, &realm, &mut token, "write", |t| {
                let q = qbo.clone();
                let r = realm.clone();
                let b = body.clone();
                let id = rid.clone();
                async move { q.write_rate(&r, &t, b, &id).await }
            })
            .await;
            match res {
                Ok(w) => {
                    tids.extend(w.tid);
                    *written += 1;
                    *synced += 1;
                    row.synced = true;
                    row.synced_at = Some(state.now());
                    theirs.insert(want.currency, w.value);
                    break;
                }
                Err(e) if e.is_stale() && !stale_retry => {
                    // Someone changed the rate meanwhile: re-read the date once, retry with the new SyncToken.
                    stale_retry = true;
                    theirs = read_theirs(state, &realm, &mut token, date, &codes, tids).await?;
                    if let Some(q) = theirs.get(&want.currency) {
                        if (q.rate - want.rate).abs() < TOLERANCE {
                            *unchanged += 1;
                            *synced += 1;
                            row.synced = true;
                            row.synced_at = Some(state.now());
                            break;
                        }
                    }
                }
                Err(e) if e.is_currency_rejection() => {
                    // QuickBooks says the currency is inactive or home: re-read the company
                    // once; a currency no longer active is skipped, not a failure.
                    if !cache_refreshed {
                        cache_refreshed = true;
                        refresh_company_cache(state, &mut company, &mut token, tids).await?;
                        save_company_cache(state, &company).await?;
                        // Switched off since the cache was read: every write will be
                        // refused, and "synced 0 rates" would hide it.
                        if !company.multicurrency {
                            return Err(multicurrency_disabled().into());
                        }
                    }
                    let still =
                        company_rates(&in_force, company.home_currency, &company.active_currencies)
                            .map(|f| f.iter().any(|r| r.currency == want.currency))
                            .unwrap_or(false);
                    if still {
                        failures.push(format!("{}: {e}", want.currency));
                    } else {
                        tracing::info!(realm_id = %realm, currency = %want.currency, "Company {realm}: {} is not active in QuickBooks; skipped", want.currency);
                        skipped = true;
                    }
                    break;
                }
                Err(e) if e.is_invalid_grant() || e.is_unauthorized() => {
                    return Err(qbo_fail(&e, "writing exchange rates").into());
                }
                Err(e) => {
                    failures.push(format!("{}: {e}", want.currency));
                    break;
                }
            }
        }
        if !skipped {
            rows.push(row);
        }
    }
    state.store.put_rates(&realm, &rows)?;
    if failures.is_empty() {
        let now = state.now();
        // Flushed with the attempt's log records by `sync_company`, before the answer.
        state.store.update_company_unflushed(&realm, |c| {
            c.last_sync_at = Some(now);
            c.updated_at = now;
        })?;
        Ok(())
    } else {
        Err(ApiError::upstream(
            "quickbooks_write_failed",
            format!(
                "{} of {} rates could not be written: {}",
                failures.len(),
                wanted.len(),
                failures.join("; ")
            ),
        )
        .into())
    }
}

/// `POST /api/v1/companies/{id}/sync` and `sync REALM`.
///
/// # Errors
/// 400 bad date, 404 unknown company, 409 sync disabled / reconnect needed, 422 no fixing,
/// 502 QuickBooks failure.
pub async fn sync_one_op(
    state: &AppState,
    realm: &str,
    date: Option<&str>,
) -> Result<Value, ApiError> {
    let company = state
        .store
        .company(realm)?
        .ok_or_else(|| ApiError::unknown_company(realm))?;
    let date = target_date(state, date)?;
    if !company.sync_enabled {
        return Err(ApiError::conflict(
            "sync_disabled",
            format!("sync is disabled for company {realm}; enable it in its settings first"),
        ));
    }
    let outcome = sync_company(state, realm, date).await?;
    match &outcome.error {
        None => Ok(outcome.to_json()),
        Some(e) => Err(e.clone()),
    }
}

/// `POST /api/v1/companies/sync-all` and `sync --all`. A second call while a run is in
/// flight for the same date joins it; for another date it is refused (409). The run goes
/// on when the caller disconnects.
///
/// # Errors
/// 400 bad date; 409 a run for another date is in progress.
pub async fn sync_all_op(state: &Arc<AppState>, date: Option<&str>) -> Result<Value, ApiError> {
    let date = target_date(state, date)?;
    sync_all_for(state, date, Scope::All).await
}

/// Which companies a sync-all covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every active, sync-enabled, connected company.
    All,
    /// Those, restricted to companies that want weekend/holiday dates filled.
    FillNonBusinessDays,
}

/// Runs (or joins) the one sync-all for `date`.
///
/// # Errors
/// 409 when a run for another date is in progress; 503 when the daemon stops meanwhile.
pub async fn sync_all_for(
    state: &Arc<AppState>,
    date: NaiveDate,
    scope: Scope,
) -> Result<Value, ApiError> {
    let mut rx = {
        let mut running = lock(&state.sync.running);
        match running.as_ref() {
            Some((d, rx)) if *d == date => rx.clone(),
            Some((d, _)) => {
                return Err(ApiError::conflict(
                    "sync_in_progress",
                    format!(
                        "a sync of all companies for {d} is running; try again when it finishes"
                    ),
                ));
            }
            None => {
                let (tx, rx) = watch::channel(None);
                *running = Some((date, rx.clone()));
                let st = state.clone();
                state.tasks.spawn(async move {
                    let result = run_all(&st, date, scope).await;
                    *lock(&st.sync.running) = None;
                    let _ = tx.send(Some(Arc::new(result)));
                });
                rx
            }
        }
    };
    loop {
        let done = rx.borrow().clone();
        if let Some(v) = done {
            // The last caller holding the channel takes the answer without a copy (10,000
            // companies' results are ~15 MB as JSON values); a joined caller copies.
            drop(rx);
            return Ok(Arc::try_unwrap(v).unwrap_or_else(|shared| (*shared).clone()));
        }
        if rx.changed().await.is_err() {
            return Err(ApiError::new(
                503,
                "shutting_down",
                "the daemon is stopping; the run was interrupted",
            ));
        }
    }
}

/// One company's line of a sync-all answer.
struct RunEntry {
    realm: String,
    name: String,
    synced: usize,
    written: usize,
    unchanged: usize,
    error: Option<ApiError>,
}

impl RunEntry {
    fn into_json(self) -> Value {
        match self.error {
            None => {
                json!({"company_id": self.realm, "company_name": self.name, "success": true, "rates_synced": self.synced, "rates_written": self.written, "rates_unchanged": self.unchanged})
            }
            Some(e) => {
                json!({"company_id": self.realm, "company_name": self.name, "success": false, "rates_synced": self.synced, "error": {"code": e.code, "message": e.message}})
            }
        }
    }
}

/// Runs one sync-all to completion (bounded concurrency; failures isolated).
pub async fn run_all(state: &Arc<AppState>, date: NaiveDate, scope: Scope) -> Value {
    let started = std::time::Instant::now();
    // Only what the run needs of each company (the records are re-read one by one).
    let companies: Vec<(String, String)> = match state.store.companies() {
        Ok(c) => c
            .into_iter()
            .filter(|c| c.is_active && c.sync_enabled && c.is_connected())
            .filter(|c| scope == Scope::All || c.fill_non_business_days)
            .map(|c| (c.realm_id, c.company_name))
            .collect(),
        Err(e) => {
            return ApiError::internal(e).body();
        }
    };
    let total = companies.len();
    let p = &state.sync.progress;
    p.total.store(total, Relaxed);
    p.done.store(0, Relaxed);
    p.failed.store(0, Relaxed);
    tracing::info!(companies = total, fixing_date = %date, "Syncing rates for {date} to {total} companies");
    // At most `limit` company syncs exist at a time: a task (and its future, several KiB)
    // is spawned only when one finishes, so memory does not grow with the number of
    // companies (10,000 tasks spawned up front held ~100 MB).
    let limit = state.config().quickbooks.max_concurrent_companies.max(1);
    let mut pending = companies
        .into_iter()
        .enumerate()
        .map(|(idx, (realm, name))| (idx, realm, name));
    let mut set = tokio::task::JoinSet::new();
    let mut running: HashMap<tokio::task::Id, (usize, String, String)> = HashMap::new();
    // Compact while the run goes on; JSON only once at the end.
    let mut results: Vec<(usize, RunEntry)> = Vec::with_capacity(total);
    let (mut ok, mut failed) = (0usize, 0usize);
    loop {
        while set.len() < limit {
            let Some((idx, realm, name)) = pending.next() else {
                break;
            };
            let st = state.clone();
            let r = realm.clone();
            let handle = set.spawn(async move {
                if st.shutdown.is_cancelled() {
                    return Err(ApiError::new(
                        503,
                        "shutting_down",
                        "not synced: the daemon is stopping",
                    ));
                }
                sync_company(&st, &r, date).await
            });
            running.insert(handle.id(), (idx, realm, name));
        }
        let Some(joined) = set.join_next_with_id().await else {
            break;
        };
        let (id, r) = match joined {
            Ok((id, r)) => (id, r),
            // A panicked sync is a failed company, not a lost one.
            Err(e) => (
                e.id(),
                Err(ApiError::internal(format!("the sync task failed: {e}"))),
            ),
        };
        let Some((idx, realm, name)) = running.remove(&id) else {
            continue;
        };
        let entry = match r {
            Ok(o) => RunEntry {
                realm,
                name: o.company_name,
                synced: o.rates_synced,
                written: o.rates_written,
                unchanged: o.rates_unchanged,
                error: o.error,
            },
            Err(e) => RunEntry {
                realm,
                name,
                synced: 0,
                written: 0,
                unchanged: 0,
                error: Some(e),
            },
        };
        p.done.fetch_add(1, Relaxed);
        if entry.error.is_some() {
            failed += 1;
            p.failed.fetch_add(1, Relaxed);
        } else {
            ok += 1;
        }
        results.push((idx, entry));
    }
    results.sort_by_key(|(i, _)| *i);
    let secs = started.elapsed().as_secs_f64();
    *lock(&state.sync.last_run) = Some(LastRun {
        date,
        finished_at: state.now(),
        successful: ok,
        failed,
        seconds: secs,
    });
    tracing::info!(fixing_date = %date, successful = ok, failed, seconds = secs, "Synced {ok}/{total} companies successfully");
    let key = format!("sync_failures:{date}");
    if failed >= 2 {
        crate::alerts::raise(
            state,
            &key,
            "sync_failures",
            None,
            &format!("sync of {date} failed for {failed} of {total} companies"),
        );
    } else {
        crate::alerts::clear(state, &key);
    }
    let mut answer = json!({
        "success": true,
        "message": format!("Synced {ok}/{total} companies successfully"),
        "date": date.to_string(),
        "total_companies": total,
        "successful": ok,
        "failed": failed,
        "duration_secs": (secs * 1000.0).round() / 1000.0,
    });
    // Moved in, not through `json!` (which would serialize a copy of every result).
    answer["results"] = Value::Array(results.into_iter().map(|(_, e)| e.into_json()).collect());
    answer
}

/// A company was connected, re-activated or re-enabled: sync it at once for today and for
/// any missed fixing of the last 31 days (unless automatic syncs are off).
pub fn on_connected(state: &Arc<AppState>, realm: &str) {
    if !state.config().schedule.enabled {
        return;
    }
    let st = state.clone();
    let realm = realm.to_string();
    state.tasks.spawn(async move {
        if let Err(e) = crate::scheduler::runner::catch_up_company(&st, &realm, true).await {
            tracing::warn!(realm_id = %realm, error = %e, "catch-up after connecting failed");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn request_ids_are_deterministic_and_short() {
        let d = NaiveDate::from_ymd_opt(2026, 5, 22).unwrap();
        let eur = Currency::new("EUR").unwrap();
        let r = Decimal::from_str("95.40").unwrap();
        let a = request_id("123", eur, d, r, "0");
        assert_eq!(
            a,
            request_id("123", eur, d, Decimal::from_str("95.4").unwrap(), "0")
        );
        assert_ne!(
            a,
            request_id("123", eur, d, r, "1"),
            "a new SyncToken is a new write"
        );
        assert_ne!(a, request_id("124", eur, d, r, "0"));
        assert!(a.len() <= 50);
    }

    #[test]
    fn tolerance_is_half_a_millionth() {
        assert_eq!(TOLERANCE.to_string(), "0.0000005");
    }
}
