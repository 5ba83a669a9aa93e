//! The stream: entries in ID order, each a list of field-value pairs.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;

use bytes::Bytes;

/// An entry's ID: milliseconds, then a sequence number within them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct StreamId {
    pub(crate) ms: u64,
    pub(crate) seq: u64,
}

impl StreamId {
    /// `1526919030474-55`, or `1526919030474` (the sequence is then `missing_seq`).
    pub(crate) fn parse(text: &[u8], missing_seq: u64) -> Option<StreamId> {
        let text = std::str::from_utf8(text).ok()?;
        match text.split_once('-') {
            Some((ms, seq)) => Some(StreamId {
                ms: ms.parse().ok()?,
                seq: seq.parse().ok()?,
            }),
            None => Some(StreamId {
                ms: text.parse().ok()?,
                seq: missing_seq,
            }),
        }
    }

    /// The next ID after this one, if there is one.
    pub(crate) fn next(self) -> Option<StreamId> {
        match self.seq.checked_add(1) {
            Some(seq) => Some(StreamId { ms: self.ms, seq }),
            None => self.ms.checked_add(1).map(|ms| StreamId { ms, seq: 0 }),
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Stream {
    /// Each entry's fields and values, alternating.
    entries: BTreeMap<StreamId, Vec<Bytes>>,
    /// The greatest ID ever added (entries trimmed away keep it).
    last_id: StreamId,
}

impl Stream {
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn last_id(&self) -> StreamId {
        self.last_id
    }

    /// Adds an entry; its ID must be greater than every earlier one (the caller checks).
    pub(crate) fn push(&mut self, id: StreamId, fields: Vec<Bytes>) {
        self.last_id = self.last_id.max(id);
        self.entries.insert(id, fields);
    }

    /// Removes the oldest entries until at most `keep` are left; how many it removed.
    pub(crate) fn trim_to(&mut self, keep: usize) -> usize {
        let mut removed = 0;
        while self.entries.len() > keep {
            self.entries.pop_first();
            removed += 1;
        }
        removed
    }

    /// Entries from `start` to `end` in ID order (or reverse), at most `count`.
    pub(crate) fn range<'a>(
        &'a self,
        start: Bound<StreamId>,
        end: Bound<StreamId>,
        reverse: bool,
        count: usize,
    ) -> Vec<(StreamId, &'a [Bytes])> {
        if !bounds_ordered(start, end) {
            return Vec::new();
        }
        let range = self.entries.range((start, end));
        let entry = |(id, fields): (&StreamId, &'a Vec<Bytes>)| (*id, fields.as_slice());
        if reverse {
            range.rev().take(count).map(entry).collect()
        } else {
            range.take(count).map(entry).collect()
        }
    }

    /// Every entry (for the snapshot).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&StreamId, &Vec<Bytes>)> + '_ {
        self.entries.iter()
    }

    /// A stream read back from a snapshot.
    pub(crate) fn restore(last_id: StreamId, entries: BTreeMap<StreamId, Vec<Bytes>>) -> Self {
        Self { entries, last_id }
    }
}

/// Whether a range from `start` to `end` is non-empty as bounds go (`BTreeMap::range`
/// panics on a reversed one, so it is checked first).
fn bounds_ordered(start: Bound<StreamId>, end: Bound<StreamId>) -> bool {
    match (start, end) {
        (Bound::Included(s), Bound::Included(e)) => s <= e,
        (Bound::Included(s), Bound::Excluded(e)) | (Bound::Excluded(s), Bound::Included(e)) => s < e,
        (Bound::Excluded(s), Bound::Excluded(e)) => s.next().is_some_and(|n| n < e),
        _ => true,
    }
}
