//! A bounded in-memory map for what rarely or never changes (functions, endpoint owners,
//! token users), so that a hot request need not ask Redis each time.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// Most entries; the map is emptied when it is full (entries are cheap to read again).
const LIMIT: usize = 10_000;

/// Shared by clones.
pub struct Memo<K, V> {
    map: Arc<Mutex<HashMap<K, V>>>,
}

impl<K, V> Clone for Memo<K, V> {
    fn clone(&self) -> Self {
        Self {
            map: self.map.clone(),
        }
    }
}

impl<K, V> Default for Memo<K, V> {
    fn default() -> Self {
        Self { map: Arc::default() }
    }
}

impl<K: Hash + Eq, V: Clone> Memo<K, V> {
    pub fn get<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        self.map.lock().expect("memo poisoned").get(key).cloned()
    }

    pub fn put(&self, key: K, value: V) {
        let mut map = self.map.lock().expect("memo poisoned");
        if map.len() >= LIMIT {
            map.clear();
        }
        map.insert(key, value);
    }

    pub fn forget<Q: Hash + Eq + ?Sized>(&self, key: &Q)
    where
        K: Borrow<Q>,
    {
        self.map.lock().expect("memo poisoned").remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_keeps_forgets_and_stays_bounded() {
        let memo: Memo<String, u32> = Memo::default();
        memo.put("a".into(), 1);
        assert_eq!(memo.get("a"), Some(1));
        memo.forget("a");
        assert_eq!(memo.get("a"), None);
        for i in 0..=LIMIT as u32 {
            memo.put(i.to_string(), i);
        }
        assert!(memo.map.lock().unwrap().len() <= LIMIT);
        assert_eq!(memo.get(&LIMIT.to_string()), Some(LIMIT as u32));
    }
}
