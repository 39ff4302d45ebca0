//! Concurrent-use caps per key: connections or TLS handshakes per peer address, sessions
//! per client IP, per token subject or per API key. A [`Quota`] counts what each key holds now; a
//! [`QuotaGuard`] is one unit, given back when it is dropped, so a connection or session
//! that ends by any path (error, panic, client gone) frees its place.
//!
//! Memory is bounded by what is held: a key is forgotten when its count returns to zero.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// Counts per key, each capped at `limit` (0: no cap, nothing is counted).
#[derive(Debug)]
pub struct Quota<K: Eq + Hash> {
    limit: usize,
    held: Mutex<HashMap<K, usize>>,
}

/// One unit of a key's quota; dropping it gives the unit back.
#[derive(Debug)]
pub struct QuotaGuard<K: Eq + Hash + Clone> {
    quota: Arc<Quota<K>>,
    key: K,
}

impl<K: Eq + Hash + Clone> Quota<K> {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Quota {
            limit,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// The cap (0: none).
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Takes one unit for `key`, or `None` when it already holds `limit`. With no cap
    /// there is nothing to give back, so `Some(None)` is returned without counting.
    pub fn enter(self: &Arc<Self>, key: &K) -> Option<Option<QuotaGuard<K>>> {
        self.enter_up_to(key, self.limit)
    }

    /// [`Self::enter`] with a cap of this key's own (an API key's `max_sessions`) in place
    /// of the quota's.
    pub fn enter_up_to(self: &Arc<Self>, key: &K, limit: usize) -> Option<Option<QuotaGuard<K>>> {
        if limit == 0 {
            return Some(None);
        }
        let mut held = self.held.lock().expect("quota lock");
        let n = held.entry(key.clone()).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(Some(QuotaGuard {
            quota: self.clone(),
            key: key.clone(),
        }))
    }

    /// Units `key` holds now.
    #[cfg(test)]
    fn held(&self, key: &K) -> usize {
        self.held
            .lock()
            .expect("quota lock")
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    /// Keys holding at least one unit.
    #[cfg(test)]
    fn keys(&self) -> usize {
        self.held.lock().expect("quota lock").len()
    }
}

impl<K: Eq + Hash + Clone> Drop for QuotaGuard<K> {
    fn drop(&mut self) {
        let mut held = self.quota.held.lock().expect("quota lock");
        if let Some(n) = held.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_each_key_and_gives_back_on_drop() {
        let q = Quota::new(2);
        let a1 = q.enter(&"a").unwrap();
        let a2 = q.enter(&"a").unwrap();
        assert!(q.enter(&"a").is_none(), "a third unit for the same key");
        let b = q.enter(&"b").unwrap();
        assert_eq!((q.held(&"a"), q.held(&"b"), q.keys()), (2, 1, 2));
        drop(a1);
        assert_eq!(q.held(&"a"), 1);
        assert!(q.enter(&"a").is_some(), "a place was given back");
        drop((a2, b));
        assert_eq!(q.keys(), 0, "keys at zero are forgotten");
    }

    #[test]
    fn a_key_of_its_own_cap() {
        let q = Quota::new(0);
        let held: Vec<_> = (0..3).map(|_| q.enter_up_to(&"k", 3).unwrap()).collect();
        assert!(q.enter_up_to(&"k", 3).is_none());
        assert!(q.enter_up_to(&"other", 1).unwrap().is_some());
        drop(held);
        assert_eq!(q.keys(), 0);
    }

    #[test]
    fn no_cap_counts_nothing() {
        let q = Quota::new(0);
        let guards: Vec<_> = (0..1000).map(|_| q.enter(&1u8).unwrap()).collect();
        assert!(guards.iter().all(Option::is_none));
        assert_eq!(q.keys(), 0);
    }
}
