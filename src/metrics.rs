//! The daemon's counters as typed Prometheus families (`prometheus-client`). Services hold
//! an `Arc<Metrics>` and count what they do; `ops::metrics` adds the gauges read from the
//! store and renders the registry. Nothing here knows HTTP.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Success or failure of an attempt.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Outcome {
    /// It worked.
    Success,
    /// It failed.
    Failure,
}

/// How a token refresh ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// New tokens stored.
    Success,
    /// Intuit refused the grant: reconnect needed.
    InvalidGrant,
    /// Network, 5xx or another refusal.
    Failure,
}

/// What a QuickBooks call was for.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum CallKind {
    /// A metered read (query, GET).
    Read,
    /// An exchange-rate write.
    Write,
}

/// Label values in snake_case, as Prometheus users expect.
macro_rules! snake_label {
    ($t:ty { $($v:ident => $s:literal),* $(,)? }) => {
        impl EncodeLabelValue for $t {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                std::fmt::Write::write_str(encoder, match self { $(Self::$v => $s),* })
            }
        }
    };
}
snake_label!(Outcome { Success => "success", Failure => "failure" });
snake_label!(RefreshOutcome { Success => "success", InvalidGrant => "invalid_grant", Failure => "failure" });
snake_label!(CallKind { Read => "read", Write => "write" });

/// Label set of the outcome families.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// success / failure.
    pub outcome: Outcome,
}

/// Label set of the refresh family.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefreshLabels {
    /// How the refresh ended.
    pub outcome: RefreshOutcome,
}

/// Label set of the QuickBooks calls family: what and how it answered (`200`, `401`,
/// `429`, `5xx` code, `400` for a fault, `error` for network).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// Read or write.
    pub kind: CallKind,
    /// The HTTP status, or `error`.
    pub status: String,
}

/// Every counter of the daemon, registered once.
pub struct Metrics {
    registry: Registry,
    /// BoA scrapes by outcome.
    pub scrapes: Family<OutcomeLabels, Counter>,
    /// Company syncs by outcome.
    pub company_syncs: Family<OutcomeLabels, Counter>,
    /// Rates written to QuickBooks.
    pub rates_written: Counter,
    /// Token refreshes by outcome.
    pub token_refreshes: Family<RefreshLabels, Counter>,
    /// QuickBooks accounting calls by kind and status.
    pub quickbooks_calls: Family<CallLabels, Counter>,
    /// Wall time of the last sync-all.
    pub sync_all_seconds: Gauge<f64, AtomicU64>,
    /// Companies synced at once in a sync-all right now (adaptive level).
    pub companies_in_flight_limit: Gauge,
    /// Exchange-rate query faults that made a sync fall back to single GETs.
    pub read_fallbacks: Counter,
    /// Rates in QuickBooks found different from what we had confirmed.
    pub drifts: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Builds and registers every family.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("boa_exchange");
        let scrapes = Family::<OutcomeLabels, Counter>::default();
        registry.register("scrapes", "BoA page scrapes by outcome", scrapes.clone());
        let company_syncs = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "company_syncs",
            "Company syncs by outcome",
            company_syncs.clone(),
        );
        let rates_written = Counter::default();
        registry.register(
            "rates_written",
            "Exchange rates written to QuickBooks",
            rates_written.clone(),
        );
        let token_refreshes = Family::<RefreshLabels, Counter>::default();
        registry.register(
            "token_refreshes",
            "Intuit token refreshes by outcome",
            token_refreshes.clone(),
        );
        let quickbooks_calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "quickbooks_calls",
            "QuickBooks accounting API calls by kind and status",
            quickbooks_calls.clone(),
        );
        let sync_all_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "sync_all_duration_seconds",
            "Wall time of the last sync of all companies",
            sync_all_seconds.clone(),
        );
        let companies_in_flight_limit = Gauge::default();
        registry.register(
            "sync_companies_in_flight_limit",
            "Companies a sync-all runs at once now (lowered after runs of 429/5xx, raised again after successes)",
            companies_in_flight_limit.clone(),
        );
        let read_fallbacks = Counter::default();
        registry.register(
            "rate_read_fallbacks",
            "Syncs whose exchange-rate query was refused and fell back to single reads",
            read_fallbacks.clone(),
        );
        let drifts = Counter::default();
        registry.register(
            "drifts",
            "QuickBooks rates found different from the BoA rate we had confirmed",
            drifts.clone(),
        );
        // Every outcome label exists from the start, so a scraper sees 0 before the first event.
        for outcome in [Outcome::Success, Outcome::Failure] {
            let _ = scrapes.get_or_create(&OutcomeLabels { outcome });
            let _ = company_syncs.get_or_create(&OutcomeLabels { outcome });
        }
        for outcome in [
            RefreshOutcome::Success,
            RefreshOutcome::InvalidGrant,
            RefreshOutcome::Failure,
        ] {
            let _ = token_refreshes.get_or_create(&RefreshLabels { outcome });
        }
        Metrics {
            registry,
            scrapes,
            company_syncs,
            rates_written,
            token_refreshes,
            quickbooks_calls,
            sync_all_seconds,
            companies_in_flight_limit,
            read_fallbacks,
            drifts,
        }
    }

    /// Counts one scrape.
    pub fn scrape(&self, ok: bool) {
        let outcome = if ok {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        self.scrapes.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Counts one company sync.
    pub fn company_sync(&self, ok: bool) {
        let outcome = if ok {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        self.company_syncs
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Counts one token refresh.
    pub fn refresh(&self, outcome: RefreshOutcome) {
        self.token_refreshes
            .get_or_create(&RefreshLabels { outcome })
            .inc();
    }

    /// Counts one QuickBooks call.
    pub fn call(&self, kind: CallKind, status: &str) {
        self.quickbooks_calls
            .get_or_create(&CallLabels {
                kind,
                status: status.to_string(),
            })
            .inc();
    }

    /// A count of one family member (tests and `status`).
    pub fn company_syncs_of(&self, ok: bool) -> u64 {
        let outcome = if ok {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        self.company_syncs
            .get_or_create(&OutcomeLabels { outcome })
            .get()
    }

    /// The registry in the OpenMetrics text format, with `extra` (gauges computed by the
    /// caller at render time) registered on a copy-free second registry appended before
    /// the end marker.
    ///
    /// # Errors
    /// A formatting failure (never expected with a `String`).
    pub fn encode(&self, extra: &Registry) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode_registry(&mut out, &self.registry)?;
        prometheus_client::encoding::text::encode_registry(&mut out, extra)?;
        prometheus_client::encoding::text::encode_eof(&mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_as_typed_families() {
        let m = Metrics::new();
        m.scrape(true);
        m.call(CallKind::Read, "200");
        m.call(CallKind::Read, "200");
        m.rates_written.inc_by(3);
        let text = m.encode(&Registry::default()).unwrap();
        assert!(
            text.contains("boa_exchange_scrapes_total{outcome=\"success\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("boa_exchange_quickbooks_calls_total{kind=\"read\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("boa_exchange_rates_written_total 3"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
