//! Answers about many tasks, written task by task: a status request, a session's page,
//! Globus Compute's `batch_status`. Their large results (kept in the data plane) are
//! read from Redis in bounded groups ([`ferry_store::Store::result_groups`]) as the
//! body is sent, each record serialized and dropped in turn, so the web-service holds
//! about one group of results and its JSON at a time, never the whole answer. An answer
//! whose results fit one group (the common case: all inline) is written in one body,
//! with no more round trips than before.
//!
//! The bytes are those `serde_json` gives for the whole document: `head`, each
//! record's entry (comma-separated), `tail`.

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use ferry_proto::TaskId;
use ferry_store::{ByReference, Store};

use crate::error::ApiResult;

/// Writes a record's entry in an answer (`"<key>":<document>` in an object, the
/// document alone in a list), consuming the record.
pub(crate) type WriteEntry<T> = fn(T, &mut Vec<u8>);

/// An answer about many tasks: `head`, an entry per record, `tail`.
pub(crate) struct Answer<T> {
    /// Everything before the first entry (`{"tasks":{`).
    pub(crate) head: Vec<u8>,
    /// The records, in the order of their entries.
    pub(crate) records: Vec<T>,
    /// Everything after the last entry (`},"unknown":[]}`).
    pub(crate) tail: Vec<u8>,
    pub(crate) write: WriteEntry<T>,
}

/// What is known of a record besides its result, for the log.
pub(crate) trait Entry: ByReference {
    fn task_id(&self) -> TaskId;
}

impl Entry for ferry_store::TaskRecord {
    fn task_id(&self) -> TaskId {
        self.task_id
    }
}

impl Entry for ferry_store::TaskOutcome {
    fn task_id(&self) -> TaskId {
        self.task_id
    }
}

impl<T: Entry + Send + 'static> Answer<T> {
    /// Reads the records' large results and answers 200 with JSON: in one body when
    /// they fit one group, else streamed group by group. Past the response budget,
    /// 413 before anything is read or sent.
    pub(crate) async fn respond(self, store: &Store) -> ApiResult<Response> {
        let groups = store.result_groups(&self.records).await?;
        if groups.len() <= 1 {
            let mut records = self.records;
            store.fill_results(&mut records).await?;
            let mut body = self.head;
            write_entries(records, self.write, &mut body, true);
            body.extend_from_slice(&self.tail);
            return Ok(json(Body::from(body)));
        }
        tracing::debug!(
            tasks = self.records.len(),
            groups = groups.len(),
            "answer streamed in groups of results"
        );
        let writing = Writing {
            store: store.clone(),
            records: self.records.into_iter(),
            groups: groups.into_iter(),
            head: Some(self.head),
            tail: self.tail,
            write: self.write,
        };
        let chunks = futures_util::stream::try_unfold(writing, |mut w| async move {
            Ok::<_, ferry_store::Error>(w.next_chunk().await?.map(|chunk| (chunk, w)))
        });
        Ok(json(Body::from_stream(chunks)))
    }
}

impl<T> Answer<T> {
    /// The whole answer at once, its records as they are (their results read or not).
    #[cfg(test)]
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        let mut body = self.head;
        write_entries(self.records, self.write, &mut body, true);
        body.extend_from_slice(&self.tail);
        body
    }
}

/// A streamed answer, part way.
struct Writing<T> {
    store: Store,
    records: std::vec::IntoIter<T>,
    groups: std::vec::IntoIter<usize>,
    /// Not yet sent (it goes with the first group).
    head: Option<Vec<u8>>,
    tail: Vec<u8>,
    write: WriteEntry<T>,
}

impl<T: Entry> Writing<T> {
    /// The next group's entries (after the head, for the first; before the tail, for
    /// the last), or `None` once all are sent. A store error ends the body unfinished
    /// (the status is sent already): the client sees a broken answer, not a short one.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, ferry_store::Error> {
        let Some(len) = self.groups.next() else {
            return Ok(None);
        };
        let mut group: Vec<T> = self.records.by_ref().take(len).collect();
        if let Err(e) = self.store.fill_results(&mut group).await {
            let ids: Vec<String> = group.iter().map(|r| r.task_id().to_string()).collect();
            tracing::warn!(error = %e, task_ids = ?ids, "cannot read results; the answer ends unfinished");
            return Err(e);
        }
        let first = self.head.is_some();
        let mut chunk = self.head.take().unwrap_or_default();
        write_entries(group, self.write, &mut chunk, first);
        if self.groups.len() == 0 {
            chunk.extend_from_slice(&self.tail);
        }
        Ok(Some(Bytes::from(chunk)))
    }
}

/// Writes the records' entries, comma-separated (a comma before the first too unless
/// it is the answer's first), dropping each record once written.
fn write_entries<T>(records: Vec<T>, write: WriteEntry<T>, out: &mut Vec<u8>, first: bool) {
    for (i, record) in records.into_iter().enumerate() {
        if i > 0 || !first {
            out.push(b',');
        }
        write(record, out);
    }
}

/// A 200 answer with a JSON body.
fn json(body: Body) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Writes `"<key>":<value>` (`key` serializes as a string).
pub(crate) fn write_keyed<K: serde::Serialize, V: serde::Serialize>(key: &K, value: &V, out: &mut Vec<u8>) {
    serde_json::to_writer(&mut *out, key).expect("a key serializes");
    out.push(b':');
    serde_json::to_writer(out, value).expect("a document serializes");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_comma_separated_across_groups() {
        let write: WriteEntry<u32> = |n, out| write_keyed(&n.to_string(), &n, out);
        let mut out = b"{".to_vec();
        write_entries(vec![1, 2], write, &mut out, true);
        write_entries(vec![3], write, &mut out, false);
        out.push(b'}');
        let expected: std::collections::BTreeMap<String, u32> =
            [("1".into(), 1), ("2".into(), 2), ("3".into(), 3)].into();
        assert_eq!(out, serde_json::to_vec(&expected).unwrap());
    }
}
