//! The keyspace on disk: written when the server shuts down, read when it starts, so
//! `ferry dev` keeps its users, functions and tasks across restarts.
//!
//! The format is JSON (one object: `format`, `saved_at_ms`, `keys`), readable by a
//! person looking for what a dev stack holds. Each key carries its type, its value and
//! its expiry as an absolute time (`expires_at_ms`, ms since the Unix epoch), so a key
//! that expired while the server was down is not loaded. Byte strings are JSON strings
//! when they are UTF-8 and `{"hex": "..."}` when not. A file is written whole to a
//! temporary file beside it, then renamed over the old one: a crash mid-write leaves
//! the previous snapshot.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::Write;
use std::path::Path;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::db::{Db, Value, now_ms};
use super::stream::{Stream, StreamId};
use super::zset::{SortedSet, format_score};

/// Written in every snapshot; a file with another is refused.
const FORMAT: &str = "ferry-embedded-redis/1";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Snapshot {
    format: String,
    saved_at_ms: u64,
    keys: Vec<Key>,
}

#[derive(Serialize, Deserialize)]
struct Key {
    key: Blob,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at_ms: Option<u64>,
    #[serde(flatten)]
    value: Stored,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "lowercase")]
enum Stored {
    String(Blob),
    Hash(Vec<(Blob, Blob)>),
    Set(Vec<Blob>),
    /// Members with their scores written as Redis writes them (`inf` has no JSON form).
    Zset(Vec<(Blob, String)>),
    List(Vec<Blob>),
    Stream {
        last_id: String,
        entries: Vec<(String, Vec<Blob>)>,
    },
}

/// A byte string: a JSON string when it is UTF-8, `{"hex": ...}` when not.
struct Blob(Bytes);

impl Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => BlobRepr::Hex {
                hex: hex::encode(&self.0),
            }
            .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match BlobRepr::deserialize(d)? {
            BlobRepr::Text(text) => Ok(Blob(Bytes::from(text))),
            BlobRepr::Hex { hex } => hex::decode(hex)
                .map(|b| Blob(Bytes::from(b)))
                .map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum BlobRepr {
    Text(String),
    Hex { hex: String },
}

fn blob(b: &Bytes) -> Blob {
    Blob(b.clone())
}

/// Copies the live keys out of the keyspace (cheap: values share their bytes).
pub(crate) fn capture(db: &Db) -> std::io::Result<Vec<u8>> {
    let keys = db
        .entries()
        .map(|(key, value, expires_at_ms)| Key {
            key: blob(key),
            expires_at_ms,
            value: match value {
                Value::String(s) => Stored::String(blob(s)),
                Value::Hash(h) => Stored::Hash(h.iter().map(|(f, v)| (blob(f), blob(v))).collect()),
                Value::Set(s) => Stored::Set(s.iter().map(blob).collect()),
                Value::SortedSet(z) => {
                    Stored::Zset(z.iter().map(|(m, s)| (blob(m), format_score(s))).collect())
                }
                Value::List(l) => Stored::List(l.iter().map(blob).collect()),
                Value::Stream(s) => Stored::Stream {
                    last_id: s.last_id().to_string(),
                    entries: s
                        .iter()
                        .map(|(id, fields)| (id.to_string(), fields.iter().map(blob).collect()))
                        .collect(),
                },
            },
        })
        .collect();
    let snapshot = Snapshot {
        format: FORMAT.to_owned(),
        saved_at_ms: now_ms(),
        keys,
    };
    serde_json::to_vec(&snapshot).map_err(std::io::Error::other)
}

/// Writes `bytes` to `path` through a temporary file renamed over it.
pub(crate) fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let temp = path.with_file_name(name);
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temp, path)
}

fn invalid(path: &Path, detail: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!(
            "the embedded store's snapshot {} is unreadable: {detail}",
            path.display()
        ),
    )
}

/// The keyspace saved at `path`; an empty one when there is no file yet. Keys whose
/// expiry has passed are left out.
pub(crate) fn load(path: &Path) -> std::io::Result<Db> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Db::default()),
        Err(e) => {
            return Err(std::io::Error::new(
                e.kind(),
                format!(
                    "cannot read the embedded store's snapshot {}: {e}",
                    path.display()
                ),
            ));
        }
    };
    let snapshot: Snapshot = serde_json::from_slice(&bytes).map_err(|e| invalid(path, e))?;
    if snapshot.format != FORMAT {
        return Err(invalid(
            path,
            format!("its format is {:?}, this build reads {FORMAT:?}", snapshot.format),
        ));
    }
    let now = now_ms();
    let mut db = Db::default();
    for Key {
        key,
        expires_at_ms,
        value,
    } in snapshot.keys
    {
        if expires_at_ms.is_some_and(|at| at <= now) {
            continue;
        }
        let name = String::from_utf8_lossy(&key.0).into_owned();
        let value = restore(value).map_err(|detail| invalid(path, format!("key {name:?}: {detail}")))?;
        db.restore(key.0, value, expires_at_ms);
    }
    Ok(db)
}

fn restore(stored: Stored) -> Result<Value, String> {
    Ok(match stored {
        Stored::String(s) => Value::String(s.0),
        Stored::Hash(pairs) => Value::Hash(
            pairs
                .into_iter()
                .map(|(f, v)| (f.0, v.0))
                .collect::<HashMap<_, _>>(),
        ),
        Stored::Set(members) => Value::Set(members.into_iter().map(|m| m.0).collect::<HashSet<_>>()),
        Stored::Zset(members) => {
            let mut set = SortedSet::default();
            for (member, score) in members {
                let score =
                    super::commands::float(score.as_bytes()).map_err(|_| format!("bad score {score:?}"))?;
                set.insert(member.0, score);
            }
            Value::SortedSet(set)
        }
        Stored::List(items) => Value::List(items.into_iter().map(|i| i.0).collect::<VecDeque<_>>()),
        Stored::Stream { last_id, entries } => {
            let id = |text: &str| {
                StreamId::parse(text.as_bytes(), 0).ok_or_else(|| format!("bad stream id {text:?}"))
            };
            let mut map = BTreeMap::new();
            for (entry_id, fields) in entries {
                map.insert(id(&entry_id)?, fields.into_iter().map(|f| f.0).collect());
            }
            Value::Stream(Stream::restore(id(&last_id)?, map))
        }
    })
}
