//! Locks as the daemon uses them (a pure leaf).
//!
//! - [`lock`]: a `std::sync::Mutex` guard that survives poisoning. Every mutex here guards
//!   plain data that a panicking holder leaves consistent (a cache, a counter, a map), so the
//!   guard is taken over rather than the panic spread to every later caller.
//! - [`KeyedLocks`]: one async lock per key (a realm id), created on first use and dropped
//!   when its last user lets go, so the map holds only the keys in use — not one entry per
//!   company ever synced. The sync engine (one sync of a company at a time) and the token
//!   manager (refresh, connect and disconnect of a realm serialised) each own one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// `m`'s guard, poisoned or not.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One async mutex per key; see the module docs for the eviction rule.
#[derive(Debug, Default)]
pub struct KeyedLocks {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The lock of `key` (the same one for every caller while any holds or waits for it).
    pub fn get(&self, key: &str) -> KeyLock<'_> {
        let mutex = lock(&self.map).entry(key.to_string()).or_default().clone();
        KeyLock {
            owner: self,
            key: key.to_string(),
            mutex,
        }
    }

    /// Keys with a lock in use (held, waited for, or handed out and not yet dropped).
    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    /// Whether no key's lock is in use.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A handle on one key's lock. Dropping the last handle of a key removes it from the map.
#[derive(Debug)]
pub struct KeyLock<'a> {
    owner: &'a KeyedLocks,
    key: String,
    mutex: Arc<tokio::sync::Mutex<()>>,
}

impl KeyLock<'_> {
    /// Waits for the lock.
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.mutex.lock().await
    }

    /// The lock if nobody holds it now.
    pub fn try_lock(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        self.mutex.try_lock().ok()
    }

    /// Whether two handles are of the same lock.
    pub fn same_as(&self, other: &KeyLock<'_>) -> bool {
        Arc::ptr_eq(&self.mutex, &other.mutex)
    }
}

impl Drop for KeyLock<'_> {
    fn drop(&mut self) {
        // A guard borrows its handle, so none is alive here. Handles are only made under the
        // map's lock: a count of 2 (the map's and ours) means no other handle exists, and
        // the next user of the key gets a fresh lock.
        let mut map = lock(&self.owner.map);
        if map
            .get(&self.key)
            .is_some_and(|m| Arc::ptr_eq(m, &self.mutex) && Arc::strong_count(m) == 2)
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_lock_per_key_while_in_use_and_none_kept_after() {
        let locks = KeyedLocks::new();
        let a = locks.get("1001");
        let b = locks.get("1001");
        assert!(a.same_as(&b));
        let held = a.lock().await;
        assert!(b.try_lock().is_none(), "the same lock");
        assert!(
            locks.get("2002").try_lock().is_some(),
            "another key is free"
        );
        drop(held);
        drop(a);
        assert_eq!(locks.len(), 1, "b still uses 1001");
        drop(b);
        assert!(locks.is_empty(), "no entry kept for keys nobody uses");
        for i in 0..10_000 {
            let _ = locks.get(&i.to_string()).try_lock();
        }
        assert!(locks.is_empty());
    }

    #[test]
    fn a_poisoned_mutex_is_taken_over() {
        let m = Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
    }
}
