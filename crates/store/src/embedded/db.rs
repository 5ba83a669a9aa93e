//! The keyspace: one map from key to value (string, hash, set, sorted set, list or
//! stream), and the keys' expiry times. An expired key is gone the moment it is
//! looked at (lazily), and a periodic sweep ([`Db::sweep_expired`]) frees the ones
//! nobody looks at.
//!
//! The keyspace has no lock of its own: the server holds it behind one mutex, taken
//! for a whole command, a whole EXEC and a whole script, so each runs alone, as in
//! Redis's single thread.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};

use bytes::Bytes;
use tokio::sync::watch;

use super::frame::Frame;
use super::stream::Stream;
use super::zset::SortedSet;

/// A value of any type Redis knows (and Ferry uses).
#[derive(Debug, Clone)]
pub(crate) enum Value {
    String(Bytes),
    Hash(HashMap<Bytes, Bytes>),
    Set(HashSet<Bytes>),
    SortedSet(SortedSet),
    List(VecDeque<Bytes>),
    Stream(Stream),
}

impl Value {
    /// The name `TYPE` answers.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Value::String(_) => "string",
            Value::Hash(_) => "hash",
            Value::Set(_) => "set",
            Value::SortedSet(_) => "zset",
            Value::List(_) => "list",
            Value::Stream(_) => "stream",
        }
    }

    /// A collection left empty is deleted, as Redis does (a stream is not).
    fn is_empty_collection(&self) -> bool {
        match self {
            Value::Hash(h) => h.is_empty(),
            Value::Set(s) => s.is_empty(),
            Value::SortedSet(z) => z.is_empty(),
            Value::List(l) => l.is_empty(),
            Value::String(_) | Value::Stream(_) => false,
        }
    }
}

/// The reply to a command on a key of another type.
pub(crate) fn wrong_type() -> Frame {
    Frame::error("WRONGTYPE Operation against a key holding the wrong kind of value")
}

/// Milliseconds since the Unix epoch (expiry times are absolute, so they survive a
/// snapshot).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Defines a typed read and a typed write-or-create accessor for one value type.
macro_rules! typed_access {
    ($read:ident, $write:ident, $variant:ident, $ty:ty) => {
        /// The key's value if it is of this type; `None` when absent; WRONGTYPE else.
        pub(crate) fn $read(&mut self, key: &[u8]) -> Result<Option<&$ty>, Frame> {
            match self.get(key) {
                None => Ok(None),
                Some(Value::$variant(v)) => Ok(Some(v)),
                Some(_) => Err(wrong_type()),
            }
        }

        /// The key's value for writing, created empty when absent; WRONGTYPE when the
        /// key holds another type. The caller calls [`Db::drop_if_empty`] after taking
        /// things out.
        pub(crate) fn $write(&mut self, key: &Bytes) -> Result<&mut $ty, Frame> {
            self.expire_if_due(key);
            let value = self
                .entries
                .entry(key.clone())
                .or_insert_with(|| Value::$variant(Default::default()));
            match value {
                Value::$variant(v) => Ok(v),
                _ => Err(wrong_type()),
            }
        }
    };
}

/// The keyspace (Redis's database 0).
pub(crate) struct Db {
    entries: HashMap<Bytes, Value>,
    /// Expiry times (ms since the epoch) of the keys that have one.
    expires: HashMap<Bytes, u64>,
    /// Bumped by every XADD: blocked XREADs wait on it.
    stream_added: watch::Sender<u64>,
}

impl Default for Db {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            expires: HashMap::new(),
            stream_added: watch::Sender::new(0),
        }
    }
}

impl Db {
    typed_access!(hash, hash_mut, Hash, HashMap<Bytes, Bytes>);
    typed_access!(set, set_mut, Set, HashSet<Bytes>);
    typed_access!(sorted_set, sorted_set_mut, SortedSet, SortedSet);
    typed_access!(list, list_mut, List, VecDeque<Bytes>);
    typed_access!(stream, stream_mut, Stream, Stream);

    /// Removes the key if its time has come; true if it did.
    fn expire_if_due(&mut self, key: &[u8]) -> bool {
        match self.expires.get(key) {
            Some(&at) if at <= now_ms() => {
                self.expires.remove(key);
                self.entries.remove(key);
                true
            }
            _ => false,
        }
    }

    /// The key's value, if it exists and has not expired.
    pub(crate) fn get(&mut self, key: &[u8]) -> Option<&Value> {
        self.expire_if_due(key);
        self.entries.get(key)
    }

    /// The key's string value; `None` when absent; WRONGTYPE for another type.
    pub(crate) fn string(&mut self, key: &[u8]) -> Result<Option<&Bytes>, Frame> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(wrong_type()),
        }
    }

    pub(crate) fn exists(&mut self, key: &[u8]) -> bool {
        self.get(key).is_some()
    }

    /// Sets the key to `value`, replacing any value of any type; its expiry is
    /// cleared unless `keep_ttl`.
    pub(crate) fn put(&mut self, key: Bytes, value: Value, keep_ttl: bool) {
        self.expire_if_due(&key);
        if !keep_ttl {
            self.expires.remove(&key);
        }
        self.entries.insert(key, value);
    }

    /// Deletes the key; true if it existed.
    pub(crate) fn remove(&mut self, key: &[u8]) -> bool {
        let expired = self.expire_if_due(key);
        self.expires.remove(key);
        self.entries.remove(key).is_some() && !expired
    }

    /// Deletes the key if its collection was left empty.
    pub(crate) fn drop_if_empty(&mut self, key: &[u8]) {
        if self.entries.get(key).is_some_and(Value::is_empty_collection) {
            self.entries.remove(key);
            self.expires.remove(key);
        }
    }

    /// Sets the key's expiry (ms since the epoch); a time already past deletes it.
    /// False when there is no such key.
    pub(crate) fn expire_at(&mut self, key: &[u8], at_ms: u64) -> bool {
        if !self.exists(key) {
            return false;
        }
        if at_ms <= now_ms() {
            self.remove(key);
        } else if let Some((k, _)) = self.entries.get_key_value(key) {
            self.expires.insert(k.clone(), at_ms);
        }
        true
    }

    /// Clears the key's expiry; true if it had one.
    pub(crate) fn persist(&mut self, key: &[u8]) -> bool {
        self.exists(key) && self.expires.remove(key).is_some()
    }

    /// The key's expiry: `None` when there is no such key, `Some(None)` when it is
    /// kept for good.
    pub(crate) fn expiry(&mut self, key: &[u8]) -> Option<Option<u64>> {
        if !self.exists(key) {
            return None;
        }
        Some(self.expires.get(key).copied())
    }

    /// How many keys there are (some may have expired unseen).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.expires.clear();
    }

    /// Every live key.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &Bytes> + '_ {
        let now = now_ms();
        self.entries
            .keys()
            .filter(move |k| self.expires.get(*k).is_none_or(|&at| at > now))
    }

    /// One step of `SCAN`: about `count` keys from `cursor` on, and the next cursor (0
    /// when done). Keys are visited in the order of a fixed hash of their names and the
    /// cursor is the next key's hash, so a key present from the first call to the last
    /// is returned at least once, whatever is added or deleted meanwhile (as Redis
    /// guarantees).
    pub(crate) fn scan(&self, cursor: u64, count: usize) -> (u64, Vec<Bytes>) {
        let mut found: Vec<(u64, &Bytes)> = self
            .keys()
            .map(|k| (scan_hash(k), k))
            .filter(|(h, _)| *h >= cursor)
            .collect();
        found.sort_unstable();
        let mut take = count.max(1).min(found.len());
        // Never split the keys sharing one hash between two calls.
        while take < found.len() && found[take].0 == found[take - 1].0 {
            take += 1;
        }
        let next = found.get(take).map_or(0, |(h, _)| *h);
        (next, found[..take].iter().map(|(_, k)| (*k).clone()).collect())
    }

    /// Deletes up to `most` expired keys; how many it deleted.
    pub(crate) fn sweep_expired(&mut self, most: usize) -> usize {
        let now = now_ms();
        let due: Vec<Bytes> = self
            .expires
            .iter()
            .filter(|(_, at)| **at <= now)
            .take(most)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &due {
            self.expires.remove(key);
            self.entries.remove(key);
        }
        due.len()
    }

    /// Wakes blocked XREADs: a stream got an entry.
    pub(crate) fn note_stream_added(&self) {
        self.stream_added.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that changes whenever a stream gets an entry.
    pub(crate) fn stream_added(&self) -> watch::Receiver<u64> {
        self.stream_added.subscribe()
    }

    /// Every live key with its value and expiry (for the snapshot).
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&Bytes, &Value, Option<u64>)> + '_ {
        let now = now_ms();
        self.entries
            .iter()
            .filter_map(move |(k, v)| match self.expires.get(k) {
                Some(&at) if at <= now => None,
                at => Some((k, v, at.copied())),
            })
    }

    /// Adds a key read back from a snapshot.
    pub(crate) fn restore(&mut self, key: Bytes, value: Value, expires_at: Option<u64>) {
        if let Some(at) = expires_at {
            self.expires.insert(key.clone(), at);
        }
        self.entries.insert(key, value);
    }
}

/// The position of a key in `SCAN`'s order: a fixed hash, never 0 (0 starts a scan).
fn scan_hash(key: &[u8]) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() >> 1) + 1
}

/// Redis's glob matching (`KEYS`, `SCAN MATCH`, `PSUBSCRIBE`): `*`, `?`, `[abc]`,
/// `[^a-z]` and `\` escapes.
pub(crate) fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| glob_match(rest, &text[skip..])),
        Some((b'?', rest)) => !text.is_empty() && glob_match(rest, &text[1..]),
        Some((b'[', rest)) => {
            let Some((&c, text_rest)) = text.split_first() else {
                return false;
            };
            let (negate, mut class) = match rest.split_first() {
                Some((b'^', r)) => (true, r),
                _ => (false, rest),
            };
            let mut matched = false;
            loop {
                match class {
                    [] => return false,
                    [b']', after @ ..] => {
                        class = after;
                        break;
                    }
                    [b'\\', e, after @ ..] => {
                        matched |= *e == c;
                        class = after;
                    }
                    [lo, b'-', hi, after @ ..] if *hi != b']' => {
                        let (lo, hi) = if lo <= hi { (*lo, *hi) } else { (*hi, *lo) };
                        matched |= (lo..=hi).contains(&c);
                        class = after;
                    }
                    [x, after @ ..] => {
                        matched |= *x == c;
                        class = after;
                    }
                }
            }
            matched != negate && glob_match(class, text_rest)
        }
        Some((b'\\', [e, rest @ ..])) => text.first() == Some(e) && glob_match(rest, &text[1..]),
        Some((p, rest)) => text.first() == Some(p) && glob_match(rest, &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_in_redis() {
        assert!(glob_match(b"ns:*", b"ns:task:{1}"));
        assert!(!glob_match(b"ns:*", b"other:x"));
        assert!(glob_match(b"h?llo", b"hello"));
        assert!(glob_match(b"h[ae]llo", b"hallo"));
        assert!(!glob_match(b"h[^e]llo", b"hello"));
        assert!(glob_match(b"h[a-c]llo", b"hbllo"));
        assert!(glob_match(b"a\\*b", b"a*b"));
        assert!(!glob_match(b"a\\*b", b"axb"));
        assert!(glob_match(b"*", b""));
    }

    #[test]
    fn a_scan_returns_every_key_present_throughout_while_keys_are_deleted() {
        let mut db = Db::default();
        for i in 0..500 {
            db.put(Bytes::from(format!("k{i}")), Value::String(Bytes::new()), false);
        }
        let mut seen = HashSet::new();
        let mut cursor = 0;
        loop {
            let (next, keys) = db.scan(cursor, 37);
            for k in keys {
                db.remove(&k);
                seen.insert(k);
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        assert_eq!(seen.len(), 500);
        assert_eq!(db.len(), 0);
    }

    #[test]
    fn an_expired_key_is_gone_when_looked_at() {
        let mut db = Db::default();
        let key = Bytes::from("k");
        db.put(key.clone(), Value::String(Bytes::from("v")), false);
        db.expires.insert(key.clone(), now_ms() - 1);
        assert!(db.get(&key).is_none());
        assert_eq!(db.len(), 0);
    }
}
