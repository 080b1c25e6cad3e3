//! A consistent view of a running store for backups (SPEC §12), without stopping writers.
//!
//! sled 0.34 has no snapshots, and its transactions take a process-wide lock (see the module
//! docs of `store`), so the copy is made by copy-on-write pre-images:
//!
//! - Every write to a tree goes through a [`Writing`] handle, which holds the shared side of
//!   a gate for the duration of one store method (a method's writes land on the same side of
//!   the instant).
//! - A backup starts by taking the exclusive side for a moment (it waits only for the store
//!   methods in flight, microseconds) and installs a [`Cursor`]: that is the instant `B`.
//! - The backup then walks the trees in key order. A write after `B` to a key the walk has
//!   not passed first saves the key's value at `B` (or "absent") in a scratch tree; the walk
//!   emits that saved value instead of the current one. Keys deleted after `B` before the
//!   walk reached them are emitted from the scratch tree at the end.
//!
//! So every record is as it was at `B`, while writers go on; the scratch tree lives in sled
//! (bounded memory however much is written meanwhile) and is emptied at the end and at open.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard};

use super::{keys, SledStore};
use crate::locks::lock;

/// The trees a backup copies, in the order it walks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum TreeId {
    Companies = 0,
    Tokens,
    Rates,
    Logs,
    Fixings,
    Scrapes,
    OauthStates,
    Meta,
}

impl TreeId {
    /// Every tree, in walk order.
    pub(super) const ALL: [TreeId; 8] = [
        TreeId::Companies,
        TreeId::Tokens,
        TreeId::Rates,
        TreeId::Logs,
        TreeId::Fixings,
        TreeId::Scrapes,
        TreeId::OauthStates,
        TreeId::Meta,
    ];

    /// The sled tree's name.
    pub(super) fn name(self) -> &'static str {
        match self {
            TreeId::Companies => keys::COMPANIES,
            TreeId::Tokens => keys::TOKENS,
            TreeId::Rates => keys::RATES,
            TreeId::Logs => keys::LOGS,
            TreeId::Fixings => keys::FIXINGS,
            TreeId::Scrapes => keys::SCRAPES,
            TreeId::OauthStates => keys::OAUTH_STATES,
            TreeId::Meta => keys::META,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The scratch tree of pre-images (never backed up itself).
pub(super) const SCRATCH: &str = "backup_preimages";

/// How far the walk has come: keys at or before it are passed.
#[derive(Debug)]
struct Cursor {
    /// The tree being walked (`ALL.len()` once every tree is done).
    tree: usize,
    /// The last key emitted from that tree.
    after: Option<Vec<u8>>,
}

impl Cursor {
    fn passed(&self, tree: TreeId, key: &[u8]) -> bool {
        let t = tree.index();
        t < self.tree || (t == self.tree && self.after.as_deref().is_some_and(|a| key <= a))
    }
}

/// The gate, the cursor of the running backup (at most one) and the scratch tree.
pub(super) struct Snapshots {
    gate: RwLock<()>,
    active: AtomicBool,
    cursor: Mutex<Option<Cursor>>,
    scratch: sled::Tree,
}

/// The key of a pre-image in the scratch tree: the tree's byte, then the key.
fn scratch_key(tree: TreeId, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(tree as u8);
    k.extend_from_slice(key);
    k
}

/// A pre-image as stored: `0` absent at the instant, `1` then the value.
fn encode_pre(v: Option<&[u8]>) -> Vec<u8> {
    match v {
        None => vec![0],
        Some(v) => {
            let mut out = Vec::with_capacity(v.len() + 1);
            out.push(1);
            out.extend_from_slice(v);
            out
        }
    }
}

fn decode_pre(v: &[u8]) -> Option<&[u8]> {
    match v.split_first() {
        Some((1, rest)) => Some(rest),
        _ => None,
    }
}

/// One entry of the walk: the tree, the key, the value at the instant.
pub(super) type Entry = (TreeId, sled::IVec, Vec<u8>);

/// A refusal to start a second backup while one runs.
#[derive(Debug)]
pub(super) struct Busy;

impl Snapshots {
    /// Opens the scratch tree and empties it (a backup cut short by a crash left it).
    pub(super) fn open(db: &sled::Db) -> sled::Result<Snapshots> {
        let scratch = db.open_tree(SCRATCH)?;
        scratch.clear()?;
        Ok(Snapshots {
            gate: RwLock::new(()),
            active: AtomicBool::new(false),
            cursor: Mutex::new(None),
            scratch,
        })
    }

    /// The shared side of the gate for one store method's writes.
    pub(super) fn writing(&self) -> RwLockReadGuard<'_, ()> {
        self.gate
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Called (holding [`Snapshots::writing`]) before a write to `key` of `tree`: saves
    /// its value at the backup's instant when a backup runs and has not passed the key.
    pub(super) fn before_write(
        &self,
        id: TreeId,
        tree: &sled::Tree,
        key: &[u8],
    ) -> sled::Result<()> {
        if !self.active.load(Ordering::Acquire) {
            return Ok(());
        }
        let cursor = lock(&self.cursor);
        let Some(c) = cursor.as_ref() else {
            return Ok(());
        };
        if c.passed(id, key) {
            return Ok(());
        }
        let sk = scratch_key(id, key);
        if self.scratch.contains_key(&sk)? {
            return Ok(()); // an earlier write since the instant saved it
        }
        let pre = tree.get(key)?;
        self.scratch.insert(sk, encode_pre(pre.as_deref()))?;
        Ok(())
    }

    /// Fixes the instant: waits for the store methods writing now, then installs the
    /// cursor. [`Busy`] while another backup runs.
    pub(super) fn begin(&self) -> Result<(), Busy> {
        let _exclusive = self
            .gate
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut cursor = lock(&self.cursor);
        if cursor.is_some() {
            return Err(Busy);
        }
        *cursor = Some(Cursor {
            tree: 0,
            after: None,
        });
        self.active.store(true, Ordering::Release);
        Ok(())
    }

    /// The next entries of the walk (at most `max`), as they were at the instant; empty
    /// once every tree and the deleted keys are done. `trees` in [`TreeId::ALL`] order.
    pub(super) fn next_batch(
        &self,
        trees: &[&sled::Tree; 8],
        max: usize,
    ) -> sled::Result<Vec<Entry>> {
        let mut out = Vec::new();
        let mut cursor = lock(&self.cursor);
        let Some(c) = cursor.as_mut() else {
            return Ok(out);
        };
        while out.len() < max && c.tree < TreeId::ALL.len() {
            let id = TreeId::ALL[c.tree];
            let range = match &c.after {
                Some(a) => trees[c.tree].range::<&[u8], _>((
                    std::ops::Bound::Excluded(a.as_slice()),
                    std::ops::Bound::Unbounded,
                )),
                None => trees[c.tree].iter(),
            };
            let mut seen = 0;
            for r in super::paced(trees[c.tree], range).take(max - out.len()) {
                let (k, v) = r?;
                seen += 1;
                match self.scratch.remove(scratch_key(id, &k))? {
                    // Written since the instant: what it was then.
                    Some(pre) => {
                        if let Some(old) = decode_pre(&pre) {
                            out.push((id, k.clone(), old.to_vec()));
                        }
                    }
                    None => out.push((id, k.clone(), v.to_vec())),
                }
                c.after = Some(k.to_vec());
            }
            if seen == 0 {
                c.tree += 1;
                c.after = None;
            }
        }
        if out.is_empty() {
            // Every tree walked (nothing is captured any more): the keys deleted since
            // the instant before the walk reached them, as they were. Entries of keys that
            // were absent at the instant are dropped on the way.
            loop {
                let mut any = false;
                for r in self.scratch.iter().take(max) {
                    let (sk, pre) = r?;
                    any = true;
                    self.scratch.remove(&sk)?;
                    let (Some(&t), Some(old)) = (sk.first(), decode_pre(&pre)) else {
                        continue;
                    };
                    if let Some(&id) = TreeId::ALL.get(usize::from(t)) {
                        out.push((id, sled::IVec::from(&sk[1..]), old.to_vec()));
                    }
                }
                if !out.is_empty() || !any {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// True when no pre-image is kept (tests).
    #[cfg(test)]
    pub(super) fn scratch_is_empty(&self) -> bool {
        self.scratch.is_empty()
    }

    /// Ends the running backup (finished or not) and empties the scratch tree.
    pub(super) fn end(&self) {
        let mut cursor = lock(&self.cursor);
        self.active.store(false, Ordering::Release);
        *cursor = None;
        if let Err(e) = self.scratch.clear() {
            tracing::warn!(error = %e, "backup: emptying the scratch tree failed (it is emptied at the next start)");
        }
    }
}

/// One store method's writes: every write to a tree goes through one of these (see the
/// module docs), held for the whole method so its writes fall on one side of a backup's
/// instant. Never held across an `.await` (the guard is not `Send`, so that does not build).
pub(super) struct Writer<'a> {
    store: &'a SledStore,
    _gate: RwLockReadGuard<'a, ()>,
}

impl SledStore {
    /// The tree behind an id.
    pub(super) fn tree(&self, id: TreeId) -> &sled::Tree {
        match id {
            TreeId::Companies => &self.companies,
            TreeId::Tokens => &self.tokens,
            TreeId::Rates => &self.rates,
            TreeId::Logs => &self.logs,
            TreeId::Fixings => &self.fixings,
            TreeId::Scrapes => &self.scrapes,
            TreeId::OauthStates => &self.oauth_states,
            TreeId::Meta => &self.meta,
        }
    }

    /// The handle for one store method's writes.
    pub(super) fn writer(&self) -> Writer<'_> {
        Writer {
            store: self,
            _gate: self.snaps.writing(),
        }
    }
}

impl Writer<'_> {
    /// `insert` on the tree, its value at a running backup's instant saved first.
    pub(super) fn insert(
        &self,
        id: TreeId,
        key: &[u8],
        value: impl Into<sled::IVec>,
    ) -> sled::Result<Option<sled::IVec>> {
        let tree = self.store.tree(id);
        self.store.snaps.before_write(id, tree, key)?;
        tree.insert(key, value)
    }

    /// `remove` on the tree, as [`Writer::insert`].
    pub(super) fn remove(&self, id: TreeId, key: &[u8]) -> sled::Result<Option<sled::IVec>> {
        let tree = self.store.tree(id);
        self.store.snaps.before_write(id, tree, key)?;
        tree.remove(key)
    }

    /// `compare_and_swap` on the tree, as [`Writer::insert`].
    pub(super) fn compare_and_swap(
        &self,
        id: TreeId,
        key: &[u8],
        old: Option<sled::IVec>,
        new: Option<Vec<u8>>,
    ) -> sled::Result<Result<(), sled::CompareAndSwapError>> {
        let tree = self.store.tree(id);
        self.store.snaps.before_write(id, tree, key)?;
        tree.compare_and_swap(key, old, new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_passes_earlier_trees_and_keys() {
        let c = Cursor {
            tree: TreeId::Rates.index(),
            after: Some(b"5".to_vec()),
        };
        assert!(c.passed(TreeId::Companies, b"9"));
        assert!(c.passed(TreeId::Rates, b"5"));
        assert!(c.passed(TreeId::Rates, b"4"));
        assert!(!c.passed(TreeId::Rates, b"6"));
        assert!(!c.passed(TreeId::Logs, b"0"));
        let start = Cursor {
            tree: 0,
            after: None,
        };
        assert!(!start.passed(TreeId::Companies, b""));
    }

    #[test]
    fn pre_images_round_trip() {
        assert_eq!(decode_pre(&encode_pre(None)), None);
        assert_eq!(decode_pre(&encode_pre(Some(b"x"))), Some(&b"x"[..]));
        assert_eq!(decode_pre(&encode_pre(Some(b""))), Some(&b""[..]));
    }
}
