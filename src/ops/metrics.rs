//! `GET /metrics`: the services' counters (typed families of [`crate::metrics::Metrics`])
//! plus gauges from the company snapshot (`ops::snapshot`, no scan per scrape) and the
//! stored fixings, in the OpenMetrics text format.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Ctx;
use crate::fixing::TableKind;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabels {
    table: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// Renders every metric. Counters are since the daemon started; gauges are read now.
///
/// # Errors
/// Store failure.
pub async fn render(ctx: &std::sync::Arc<Ctx>) -> Result<String, super::ApiError> {
    render_now(ctx).await.map_err(super::ApiError::from)
}

async fn render_now(ctx: &Ctx) -> Result<String, crate::store::Error> {
    let mut extra = Registry::with_prefix("boa_exchange");
    let fixing = Family::<TableLabels, Gauge>::default();
    let today = ctx.today();
    for kind in [TableKind::Main, TableKind::Minor] {
        if let Some(t) = ctx.store.table_on_or_before(kind, today).await? {
            let secs = t
                .table
                .date
                .and_hms_opt(0, 0, 0)
                .map(|d| d.and_utc().timestamp())
                .unwrap_or(0);
            fixing
                .get_or_create(&TableLabels {
                    table: kind.as_str(),
                })
                .set(secs);
        }
    }
    extra.register(
        "last_fixing_date_seconds",
        "Date of the newest stored fixing per table (Unix time of its midnight UTC)",
        fixing,
    );
    let snapshot = ctx.companies_snapshot().await?;
    let states = Family::<StateLabels, Gauge>::default();
    for (state, n) in [
        ("connected", snapshot.counts.connected),
        ("reconnect_needed", snapshot.counts.reconnect_needed),
        ("disconnected", snapshot.counts.disconnected),
        ("sync_disabled", snapshot.counts.sync_disabled),
    ] {
        states
            .get_or_create(&StateLabels { state })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    extra.register("companies", "Companies by state", states);
    let bad_now = Gauge::<i64>::default();
    bad_now.set(ctx.store.bad_records().len() as i64);
    extra.register(
        "bad_records",
        "Stored records that cannot be decoded now (skipped)",
        bad_now,
    );
    let bad_seen = Gauge::<i64>::default();
    bad_seen.set(i64::try_from(ctx.store.bad_records_seen()).unwrap_or(i64::MAX));
    extra.register(
        "bad_records_seen",
        "Undecodable stored records met since the daemon started",
        bad_seen,
    );
    let leader = Gauge::<i64>::default();
    leader.set(i64::from(
        ctx.role.get() == crate::scheduler::lead::Role::Leader,
    ));
    extra.register(
        "leader",
        "1 when this node runs the schedule (the leader; always on sled), 0 on a standby",
        leader,
    );
    // A formatting error into a String cannot happen; answer an empty body rather than panic.
    Ok(ctx.metrics.encode(&extra).unwrap_or_default())
}
