//! `GET /metrics` in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use crate::app::AppState;
use crate::boa::model::TableKind;
use crate::store::records::Connection;

/// Renders every metric. Counters are since the daemon started; gauges are read from the
/// store now.
///
/// # Errors
/// Store failure.
pub fn render(state: &AppState) -> Result<String, crate::store::Error> {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let g = &state.fetch_gate;
    metric(
        "boa_exchange_scrapes_total",
        "counter",
        "BoA page scrapes by outcome.",
        vec![
            ("{outcome=\"success\"}".into(), g.ok.load(Relaxed) as f64),
            (
                "{outcome=\"failure\"}".into(),
                g.failed.load(Relaxed) as f64,
            ),
        ],
    );
    let s = &state.sync;
    metric(
        "boa_exchange_company_syncs_total",
        "counter",
        "Company syncs by outcome.",
        vec![
            (
                "{outcome=\"success\"}".into(),
                s.syncs_ok.load(Relaxed) as f64,
            ),
            (
                "{outcome=\"failure\"}".into(),
                s.syncs_failed.load(Relaxed) as f64,
            ),
        ],
    );
    metric(
        "boa_exchange_rates_written_total",
        "counter",
        "Exchange rates written to QuickBooks.",
        vec![(String::new(), s.rates_written.load(Relaxed) as f64)],
    );
    let t = &state.tokens.stats;
    metric(
        "boa_exchange_token_refreshes_total",
        "counter",
        "Intuit token refreshes by outcome.",
        vec![
            ("{outcome=\"success\"}".into(), t.ok.load(Relaxed) as f64),
            (
                "{outcome=\"invalid_grant\"}".into(),
                t.invalid_grant.load(Relaxed) as f64,
            ),
            (
                "{outcome=\"failure\"}".into(),
                t.failed.load(Relaxed) as f64,
            ),
        ],
    );
    let calls: Vec<(String, f64)> = {
        let c = match s.calls.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let mut v: Vec<(String, f64)> = c
            .iter()
            .map(|(k, n)| {
                let (kind, status) = k.split_once(':').unwrap_or((k.as_str(), ""));
                (
                    format!("{{kind=\"{kind}\",status=\"{status}\"}}"),
                    *n as f64,
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    metric(
        "boa_exchange_quickbooks_calls_total",
        "counter",
        "QuickBooks accounting API calls by kind and status.",
        calls,
    );
    let last = match s.last_run.lock() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    };
    metric(
        "boa_exchange_sync_all_duration_seconds",
        "gauge",
        "Wall time of the last sync of all companies.",
        vec![(String::new(), last.map(|l| l.seconds).unwrap_or(0.0))],
    );
    let today = state.today();
    let mut fixing = Vec::new();
    for kind in [TableKind::Main, TableKind::Minor] {
        if let Some(t) = state.store.table_on_or_before(kind, today)? {
            let secs = t
                .table
                .date
                .and_hms_opt(0, 0, 0)
                .map(|d| d.and_utc().timestamp())
                .unwrap_or(0);
            fixing.push((format!("{{table=\"{}\"}}", kind.as_str()), secs as f64));
        }
    }
    metric(
        "boa_exchange_last_fixing_date_seconds",
        "gauge",
        "Date of the newest stored fixing per table (Unix time of its midnight UTC).",
        fixing,
    );
    let companies = state.store.companies()?;
    let count = |f: &dyn Fn(&crate::store::records::Company) -> bool| {
        companies.iter().filter(|c| f(c)).count() as f64
    };
    metric(
        "boa_exchange_companies",
        "gauge",
        "Companies by state.",
        vec![
            ("{state=\"connected\"}".into(), count(&|c| c.is_connected())),
            (
                "{state=\"reconnect_needed\"}".into(),
                count(&|c| {
                    c.is_active && matches!(c.connection, Connection::ReconnectNeeded { .. })
                }),
            ),
            ("{state=\"disconnected\"}".into(), count(&|c| !c.is_active)),
            (
                "{state=\"sync_disabled\"}".into(),
                count(&|c| c.is_active && !c.sync_enabled),
            ),
        ],
    );
    Ok(out)
}
