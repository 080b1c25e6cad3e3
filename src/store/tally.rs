//! Counts of the company records, kept up to date by every company write (SPEC §6: `/health`,
//! `/metrics` and `status` answer "without decoding every record each time").
//!
//! The store builds the tally with one pass over the companies the first time it is asked
//! for, then each write to the companies tree subtracts what the old record contributed and
//! adds what the new one does. Writes and the building pass take the same lock around the
//! sled operation itself, so the pass never sees a write whose change is applied again
//! afterwards. The one thing a write cannot always update is the newest sync of all: when the
//! record holding it is removed or lowered, the next read makes a new pass (rare: undoing a
//! takeover, an import over a record).
//!
//! Companies "waiting for a sync" (active, connected, sync enabled) are kept by the second
//! of their last sync (or connection when never synced), so the caller's time-dependent
//! question "how many have waited since before T" is a range count over those seconds.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::records::{Company, Connection};

/// What the company records add up to, and how many waited since before the instant asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompanyTally {
    /// Every company record that decodes.
    pub total: usize,
    /// Not disconnected here.
    pub active: usize,
    /// Active and connected.
    pub connected: usize,
    /// Active and flagged reconnect-needed.
    pub reconnect_needed: usize,
    /// Not active.
    pub disconnected: usize,
    /// Active with sync turned off.
    pub sync_disabled: usize,
    /// Newest sync of any company.
    pub last_sync: Option<DateTime<Utc>>,
    /// Active, connected, sync enabled, and last synced (or connected, when never synced) at
    /// or before the instant asked (to the second).
    pub waiting: usize,
}

/// What one record contributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Part {
    active: bool,
    connected: bool,
    reconnect_needed: bool,
    sync_disabled: bool,
    /// For a company that waits for syncs: the second it has waited since.
    waiting_since: Option<i64>,
}

impl Part {
    fn of(c: &Company) -> Part {
        let active = c.is_active;
        let connected = active && c.connection == Connection::Connected;
        let sync_disabled = active && !c.sync_enabled;
        Part {
            active,
            connected,
            reconnect_needed: active && matches!(c.connection, Connection::ReconnectNeeded { .. }),
            sync_disabled,
            waiting_since: (connected && c.sync_enabled)
                .then(|| c.last_sync_at.unwrap_or(c.created_at).timestamp()),
        }
    }
}

/// The running tally (inside the store's lock).
#[derive(Debug, Default)]
pub(super) struct Tally {
    /// False until the first pass; writes before it change nothing here.
    built: bool,
    /// The newest sync may have gone down: the next read makes a new pass.
    stale_last_sync: bool,
    total: i64,
    active: i64,
    connected: i64,
    reconnect_needed: i64,
    sync_disabled: i64,
    last_sync: Option<DateTime<Utc>>,
    /// Companies waiting for syncs, by the second they have waited since.
    waiting: BTreeMap<i64, i64>,
}

impl Tally {
    /// An empty tally ready to be filled by a pass ([`Tally::change`] with no old record).
    pub(super) fn empty_built() -> Tally {
        Tally {
            built: true,
            ..Tally::default()
        }
    }

    /// Whether a read must first make a pass over the records.
    pub(super) fn needs_pass(&self) -> bool {
        !self.built || self.stale_last_sync
    }

    /// One record replaced another (`None`: absent, or a record that does not decode, which
    /// was never counted).
    pub(super) fn change(&mut self, old: Option<&Company>, new: Option<&Company>) {
        if !self.built {
            return;
        }
        if let Some(o) = old {
            self.apply(Part::of(o), -1);
        }
        if let Some(n) = new {
            self.apply(Part::of(n), 1);
        }
        let old_sync = old.and_then(|c| c.last_sync_at);
        let new_sync = new.and_then(|c| c.last_sync_at);
        if new_sync > self.last_sync {
            self.last_sync = new_sync;
        } else if old_sync.is_some() && old_sync == self.last_sync && new_sync < old_sync {
            self.stale_last_sync = true;
        }
    }

    fn apply(&mut self, p: Part, sign: i64) {
        let n = |b: bool| if b { sign } else { 0 };
        self.total += sign;
        self.active += n(p.active);
        self.connected += n(p.connected);
        self.reconnect_needed += n(p.reconnect_needed);
        self.sync_disabled += n(p.sync_disabled);
        if let Some(s) = p.waiting_since {
            let e = self.waiting.entry(s).or_insert(0);
            *e += sign;
            if *e == 0 {
                self.waiting.remove(&s);
            }
        }
    }

    /// The counts, with [`CompanyTally::waiting`] for companies waiting since `before` or
    /// earlier.
    pub(super) fn view(&self, before: DateTime<Utc>) -> CompanyTally {
        let count = |v: i64| usize::try_from(v).unwrap_or(0);
        let waiting: i64 = self
            .waiting
            .range(..=before.timestamp())
            .map(|(_, n)| *n)
            .sum();
        CompanyTally {
            total: count(self.total),
            active: count(self.active),
            connected: count(self.connected),
            reconnect_needed: count(self.reconnect_needed),
            disconnected: count(self.total - self.active),
            sync_disabled: count(self.sync_disabled),
            last_sync: self.last_sync,
            waiting: count(waiting),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::company;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// The tally after a sequence of writes equals a pass over the final records.
    #[test]
    fn changes_add_up_to_a_fresh_pass() {
        let mut t = Tally::empty_built();
        let mut a = company("a");
        a.created_at = at("2026-05-01T10:00:00Z");
        let mut b = company("b");
        b.created_at = at("2026-05-02T10:00:00Z");
        t.change(None, Some(&a));
        t.change(None, Some(&b));
        let mut a2 = a.clone();
        a2.last_sync_at = Some(at("2026-05-20T11:00:00Z"));
        t.change(Some(&a), Some(&a2));
        let mut b2 = b.clone();
        b2.connection = Connection::ReconnectNeeded {
            since: at("2026-05-21T00:00:00Z"),
            reason: "invalid_grant".into(),
        };
        t.change(Some(&b), Some(&b2));
        let mut c = company("c");
        c.is_active = false;
        t.change(None, Some(&c));
        let mut d = company("d");
        d.sync_enabled = false;
        t.change(None, Some(&d));

        let mut fresh = Tally::empty_built();
        for r in [&a2, &b2, &c, &d] {
            fresh.change(None, Some(r));
        }
        let when = at("2026-05-30T00:00:00Z");
        let v = t.view(when);
        assert_eq!(v, fresh.view(when));
        assert_eq!(
            (v.total, v.active, v.connected, v.reconnect_needed),
            (4, 3, 2, 1)
        );
        assert_eq!((v.disconnected, v.sync_disabled), (1, 1));
        assert_eq!(v.last_sync, Some(at("2026-05-20T11:00:00Z")));
        // Only `a` waits (b needs a reconnect, c is gone, d has sync off), since its sync.
        assert_eq!(t.view(at("2026-05-20T11:00:00Z")).waiting, 1);
        assert_eq!(t.view(at("2026-05-20T10:59:59Z")).waiting, 0);
    }

    #[test]
    fn losing_the_newest_sync_asks_for_a_pass_and_writes_before_the_first_pass_count_nothing() {
        let mut t = Tally::default();
        t.change(None, Some(&company("x")));
        assert!(t.needs_pass());
        assert_eq!(t.view(Utc::now()).total, 0);

        let mut t = Tally::empty_built();
        let mut a = company("a");
        a.last_sync_at = Some(at("2026-05-20T11:00:00Z"));
        let mut b = company("b");
        b.last_sync_at = Some(at("2026-05-19T11:00:00Z"));
        t.change(None, Some(&a));
        t.change(None, Some(&b));
        assert!(!t.needs_pass());
        // Lowering or removing a company that is not the newest: still known.
        t.change(Some(&b), None);
        assert!(!t.needs_pass());
        t.change(Some(&a), None);
        assert!(t.needs_pass());
    }
}
