//! Alerts (the brief's list): token refresh failures, sync failures for several companies,
//! companies not synced for over 24 business hours, repeated drift, undecodable records.
//! Each is logged once (ERROR, with the company) until it clears, and handed to a sink;
//! the daemon's sink POSTs it as JSON to `[alerts] webhook_url` with bounded retries in
//! the background — never blocking a sync or shutdown.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{current, Config, ConfigWatch};
use crate::locks::lock;
use crate::store::records::{Company, Connection};
use crate::store::BadRecord;
use crate::time::calendar::{is_business_day, local_date, local_instant, rfc3339};
use crate::time::clock::Clock;

/// One alert as sinks receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// Machine-readable kind (`token_refresh_failed`, `sync_failures`, …).
    pub kind: String,
    /// The company, when the alert is about one.
    pub realm: Option<String>,
    /// What happened, in a sentence.
    pub message: String,
    /// When it was raised.
    pub at: DateTime<Utc>,
}

/// Where raised alerts go besides the log.
pub trait AlertSink: Send + Sync {
    /// Takes one alert; must not block (deliver in the background).
    fn deliver(&self, alert: Alert);
}

/// A sink that drops alerts (the log line is the alert).
pub struct LogOnly;

impl AlertSink for LogOnly {
    fn deliver(&self, _alert: Alert) {}
}

/// Alerts currently raised (so each is logged and sent once), and where they go.
pub struct Alerts {
    raised: Mutex<HashSet<String>>,
    sink: Arc<dyn AlertSink>,
    clock: Arc<dyn Clock>,
}

impl Alerts {
    /// Alerts delivered to `sink`, stamped by `clock`.
    pub fn new(sink: Arc<dyn AlertSink>, clock: Arc<dyn Clock>) -> Self {
        Alerts {
            raised: Mutex::new(HashSet::new()),
            sink,
            clock,
        }
    }

    fn raised(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        lock(&self.raised)
    }

    /// Raises an alert once per `key`; `realm` adds the company to the log line and the
    /// sink's alert. Returns whether it was new.
    pub fn raise(&self, key: &str, kind: &str, realm: Option<&str>, message: &str) -> bool {
        if !self.raised().insert(key.to_string()) {
            return false;
        }
        match realm {
            Some(id) => {
                tracing::error!(realm_id = id, alert = kind, "ALERT Company {id}: {message}")
            }
            None => tracing::error!(alert = kind, "ALERT {message}"),
        }
        self.sink.deliver(Alert {
            kind: kind.to_string(),
            realm: realm.map(str::to_string),
            message: message.to_string(),
            at: self.clock.now(),
        });
        true
    }

    /// Clears an alert so it is reported again if it comes back.
    pub fn clear(&self, key: &str) {
        self.raised().remove(key);
    }

    /// Whether an alert is raised now.
    pub fn is_raised(&self, key: &str) -> bool {
        self.raised().contains(key)
    }

    /// Periodic check of one company (the scheduler streams the store through it): not synced
    /// for over 24 business hours, or needing a reconnect. Raises new alerts, clears resolved
    /// ones.
    pub fn check_company(&self, c: &Company, config: &Config) {
        if !c.is_active {
            return;
        }
        let now = self.clock.now();
        let stale_key = format!("stale:{}", c.realm_id);
        let since = c.last_sync_at.unwrap_or(c.created_at);
        if config.schedule.enabled
            && c.sync_enabled
            && c.is_connected()
            && business_hours(since, now, config.schedule.timezone) > STALE_AFTER_HOURS
        {
            self.raise(
                &stale_key,
                "company_not_synced",
                Some(&c.realm_id),
                &format!(
                    "not synced for over 24 business hours (last sync {})",
                    c.last_sync_at
                        .map(rfc3339)
                        .unwrap_or_else(|| "never".into())
                ),
            );
        } else {
            self.clear(&stale_key);
        }
        let token_key = format!("token:{}", c.realm_id);
        if let Connection::ReconnectNeeded { reason, .. } = &c.connection {
            self.raise(
                &token_key,
                "token_refresh_failed",
                Some(&c.realm_id),
                &format!("Token refresh failed ({reason}); the company must reconnect"),
            );
        } else {
            self.clear(&token_key);
        }
    }
}

impl Alerts {
    /// Raises one alert per undecodable record; clears those repaired.
    pub fn check_bad_records(&self, bad: &[BadRecord]) {
        let keys: HashSet<String> = bad
            .iter()
            .map(|b| format!("bad_record:{}", b.key_display()))
            .collect();
        let stale: Vec<String> = self
            .raised()
            .iter()
            .filter(|k| k.starts_with("bad_record:") && !keys.contains(*k))
            .cloned()
            .collect();
        for k in stale {
            self.clear(&k);
        }
        for b in bad {
            let key = b.key_display();
            self.raise(
                &format!("bad_record:{key}"),
                "bad_record",
                None,
                &format!(
                    "the {} record {key} cannot be decoded ({}); it is skipped",
                    b.tree, b.error
                ),
            );
        }
    }
}

/// The daemon's sink: POSTs each alert to `[alerts] webhook_url` (when set), three tries,
/// on the daemon's task tracker, given up when the daemon stops.
pub struct WebhookSink {
    client: reqwest::Client,
    config: ConfigWatch,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl WebhookSink {
    /// A sink posting with `client` to the webhook the current config names.
    pub fn new(
        client: reqwest::Client,
        config: ConfigWatch,
        tasks: TaskTracker,
        stop: CancellationToken,
    ) -> Self {
        WebhookSink {
            client,
            config,
            tasks,
            stop,
        }
    }
}

impl AlertSink for WebhookSink {
    fn deliver(&self, alert: Alert) {
        let Some(url) = current(&self.config).alert_webhook.clone() else {
            return;
        };
        let body = json!({
            "source": "boa-exchange",
            "alert": alert.kind,
            "company_id": alert.realm,
            "message": alert.message,
            "at": rfc3339(alert.at),
        });
        let client = self.client.clone();
        let stop = self.stop.clone();
        let kind = alert.kind;
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
        self.tasks.spawn(async move {
            tokio::select! {
                _ = deliver => {}
                _ = stop.cancelled() => {
                    tracing::warn!(alert = %kind, "alert webhook delivery abandoned: the daemon is stopping");
                }
            }
        });
    }
}

/// A company not synced for more than this many business hours is stale (alerted, counted).
pub const STALE_AFTER_HOURS: i64 = 24;

/// The latest instant, to the second, such that a company last synced (or connected) then
/// has waited more than [`STALE_AFTER_HOURS`] business hours at `now`: a company is stale
/// exactly when it has waited since this instant or earlier. [`business_hours`] only grows as
/// its start moves back, so a binary search over the 31 days before `now` finds it (31 days
/// always hold more: the count covers up to 30 of them).
pub fn stale_before(now: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
    let stale = |back: i64| {
        business_hours(now - chrono::Duration::seconds(back), now, tz) > STALE_AFTER_HOURS
    };
    // `fresh` seconds back is not stale, `old` seconds back is.
    let (mut fresh, mut old) = (0i64, 31 * 86_400i64);
    while old - fresh > 1 {
        let mid = fresh + (old - fresh) / 2;
        if stale(mid) {
            old = mid;
        } else {
            fresh = mid;
        }
    }
    now - chrono::Duration::seconds(old)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::clock::ManualClock;
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

    #[test]
    fn stale_before_is_the_boundary_of_business_hours() {
        for now in [
            "2026-05-25T11:30:00Z", // Monday: the boundary falls before the weekend
            "2026-05-27T09:00:00Z", // Wednesday
            "2026-05-23T12:00:00Z", // Saturday
            "2026-03-30T08:00:00Z", // the Monday after the DST change
        ] {
            let now = utc(now);
            let b = stale_before(now, Tirane);
            assert!(business_hours(b, now, Tirane) > STALE_AFTER_HOURS, "{now}");
            assert!(
                business_hours(b + chrono::Duration::seconds(1), now, Tirane) <= STALE_AFTER_HOURS,
                "{now}"
            );
        }
        // Monday 11:30 UTC (13:30 local): 25 business hours back is Friday 10:30 UTC.
        assert_eq!(
            stale_before(utc("2026-05-25T11:30:00Z"), Tirane),
            utc("2026-05-22T10:30:00Z")
        );
    }

    struct Recorder(Mutex<Vec<Alert>>);
    impl AlertSink for Recorder {
        fn deliver(&self, alert: Alert) {
            self.0.lock().unwrap().push(alert);
        }
    }

    #[test]
    fn an_alert_is_delivered_once_until_cleared() {
        let sink = Arc::new(Recorder(Mutex::new(vec![])));
        let clock = ManualClock::new(utc("2026-05-22T10:00:00Z"));
        let alerts = Alerts::new(sink.clone(), Arc::new(clock));
        assert!(alerts.raise("k", "sync_failures", None, "two failed"));
        assert!(!alerts.raise("k", "sync_failures", None, "two failed"));
        assert_eq!(sink.0.lock().unwrap().len(), 1);
        alerts.clear("k");
        assert!(alerts.raise("k", "sync_failures", Some("1"), "again"));
        let got = sink.0.lock().unwrap().clone();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].realm.as_deref(), Some("1"));
        assert_eq!(got[1].at, utc("2026-05-22T10:00:00Z"));
    }
}
