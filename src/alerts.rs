//! Alerts (the brief's list): token refresh failures, sync failures for several companies,
//! companies not synced for over 24 business hours. Each is logged once (WARN/ERROR, with
//! the company) until it clears, and optionally POSTed as JSON to `[alerts] webhook_url`
//! with bounded retries in the background — never blocking a sync or shutdown.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::json;

use crate::app::AppState;
use crate::ops::ts;
use crate::scheduler::time::{is_business_day, local_date, local_instant};
use crate::store::records::Connection;

/// Alerts currently raised (so each is logged and sent once).
#[derive(Default)]
pub struct Alerts {
    raised: Mutex<HashSet<String>>,
}

/// Raises an alert once; `realm` adds the company to the log line and the webhook body.
pub fn raise(state: &AppState, key: &str, kind: &str, realm: Option<&str>, message: &str) {
    {
        let mut r = match state.alerts.raised.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if !r.insert(key.to_string()) {
            return;
        }
    }
    match realm {
        Some(id) => tracing::error!(realm_id = id, alert = kind, "ALERT Company {id}: {message}"),
        None => tracing::error!(alert = kind, "ALERT {message}"),
    }
    let Some(url) = state.config().alert_webhook.clone() else {
        return;
    };
    let body = json!({
        "source": "boa-exchange",
        "alert": kind,
        "company_id": realm,
        "message": message,
        "at": ts(state.now()),
    });
    let client = state.http_client.clone();
    let stop = state.shutdown.clone();
    let kind = kind.to_string();
    let deliver = async move {
        for attempt in 0..3u32 {
            let r = client
                .post(url.clone())
                .timeout(Duration::from_secs(10))
                .json(&body)
                .send()
                .await;
            match r {
                Ok(resp) if resp.status().is_success() => return,
                Ok(resp) => tracing::warn!(
                    status = resp.status().as_u16(),
                    "alert webhook refused the alert"
                ),
                Err(e) => tracing::warn!(error = %e.without_url(), "alert webhook unreachable"),
            }
            tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
        }
    };
    // The delivery runs on the task tracker, so a webhook that hangs would hold shutdown
    // for the whole drain budget: it gives up when the daemon stops (the alert is logged).
    state.tasks.spawn(async move {
        tokio::select! {
            _ = deliver => {}
            _ = stop.cancelled() => {
                tracing::warn!(alert = %kind, "alert webhook delivery abandoned: the daemon is stopping");
            }
        }
    });
}

/// Clears an alert so it is reported again if it comes back.
pub fn clear(state: &AppState, key: &str) {
    let mut r = match state.alerts.raised.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    r.remove(key);
}

/// Hours between two instants that fall on business days (Mon–Fri, local), capped at 30 days.
pub fn business_hours(from: DateTime<Utc>, to: DateTime<Utc>, tz: Tz) -> i64 {
    let mut t = from;
    let mut secs = 0i64;
    let stop = to.min(from + chrono::Duration::days(30));
    while t < stop {
        let day = local_date(t, tz);
        let next_day = day
            .succ_opt()
            .map(|d| local_instant(d, chrono::NaiveTime::MIN, tz))
            .unwrap_or(stop);
        let end = next_day.min(stop).max(t + chrono::Duration::seconds(1));
        if is_business_day(day) {
            secs += (end - t).num_seconds();
        }
        t = end;
    }
    secs / 3600
}

/// Periodic check: companies not synced for over 24 business hours, companies needing a
/// reconnect. Raises new alerts, clears resolved ones.
pub fn check_health(state: &AppState) {
    let Ok(companies) = state.store.companies() else {
        return;
    };
    let config = state.config();
    let now = state.now();
    for c in companies.iter().filter(|c| c.is_active) {
        let stale_key = format!("stale:{}", c.realm_id);
        let since = c.last_sync_at.unwrap_or(c.created_at);
        if config.schedule.enabled
            && c.sync_enabled
            && c.is_connected()
            && business_hours(since, now, config.schedule.timezone) > 24
        {
            raise(
                state,
                &stale_key,
                "company_not_synced",
                Some(&c.realm_id),
                &format!(
                    "not synced for over 24 business hours (last sync {})",
                    c.last_sync_at.map(ts).unwrap_or_else(|| "never".into())
                ),
            );
        } else {
            clear(state, &stale_key);
        }
        let token_key = format!("token:{}", c.realm_id);
        if let Connection::ReconnectNeeded { reason, .. } = &c.connection {
            raise(
                state,
                &token_key,
                "token_refresh_failed",
                Some(&c.realm_id),
                &format!("Token refresh failed ({reason}); the company must reconnect"),
            );
        } else {
            clear(state, &token_key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Europe::Tirane;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn weekends_do_not_count() {
        // Friday 12:00 → Monday 12:00 (Tirana): 24 business hours, not 72.
        let h = business_hours(
            utc("2026-05-22T10:00:00Z"),
            utc("2026-05-25T10:00:00Z"),
            Tirane,
        );
        assert_eq!(h, 24);
        let h = business_hours(
            utc("2026-05-22T10:00:00Z"),
            utc("2026-05-25T11:00:00Z"),
            Tirane,
        );
        assert_eq!(h, 25);
        assert_eq!(
            business_hours(
                utc("2026-05-23T10:00:00Z"),
                utc("2026-05-24T20:00:00Z"),
                Tirane
            ),
            0
        );
    }
}
