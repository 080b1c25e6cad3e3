//! Undecodable records: remembered by (tree, key) when a scan skips them, forgotten when
//! they are rewritten or removed (SPEC §9).

use super::*;

impl SledStore {
    /// Undecodable records found by the latest full scan of each tree.
    pub fn bad_records(&self) -> Vec<BadRecord> {
        let known = self.bad();
        known
            .iter()
            .map(|((tree, key), error)| BadRecord {
                tree,
                key: key.clone(),
                error: error.clone(),
            })
            .collect()
    }

    /// Distinct undecodable records met since the store was opened (monotonic).
    pub fn bad_records_seen(&self) -> u64 {
        self.bad_seen.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A record known bad was overwritten or removed.
    pub(super) fn forget_bad(&self, tree: &'static str, key: &[u8]) {
        let mut known = self.bad();
        known.remove(&(tree, key.to_vec()));
    }

    /// Replaces what is known bad in `tree` with a full scan's findings; logs the new ones.
    pub(super) fn note_bad(&self, tree: &'static str, found: &[BadRecord]) {
        let mut known = self.bad();
        for b in found {
            if !known.contains_key(&(tree, b.key.clone())) {
                tracing::warn!(
                    tree,
                    key = %b.key_display(),
                    error = %b.error,
                    "skipping a stored record that cannot be decoded"
                );
                self.bad_seen
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        known.retain(|(t, _), _| *t != tree);
        for b in found {
            known.insert((tree, b.key.clone()), b.error.clone());
        }
    }

    /// The undecodable records known (a poisoned lock still holds a usable map).
    pub(super) fn bad(&self) -> std::sync::MutexGuard<'_, BadMap> {
        lock(&self.bad)
    }
}
