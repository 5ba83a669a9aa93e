//! The sorted set: members with a score, read in score order (then by member).

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use bytes::Bytes;

/// A score, ordered totally (NaN never gets in: the commands refuse it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Score(pub(crate) f64);

impl PartialEq for Score {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Score {}
impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// One end of a score range: `5`, `(5` (exclusive), `-inf`, `+inf`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScoreBound {
    pub(crate) value: f64,
    pub(crate) exclusive: bool,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct SortedSet {
    scores: HashMap<Bytes, f64>,
    order: BTreeSet<(Score, Bytes)>,
}

impl SortedSet {
    pub(crate) fn len(&self) -> usize {
        self.scores.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    pub(crate) fn score(&self, member: &[u8]) -> Option<f64> {
        self.scores.get(member).copied()
    }

    /// Sets the member's score; true if the member is new.
    pub(crate) fn insert(&mut self, member: Bytes, score: f64) -> bool {
        // -0 and 0 are one score, as in Redis.
        let score = if score == 0.0 { 0.0 } else { score };
        let old = self.scores.insert(member.clone(), score);
        if let Some(old) = old {
            self.order.remove(&(Score(old), member.clone()));
        }
        self.order.insert((Score(score), member));
        old.is_none()
    }

    /// Removes the member; true if it was there.
    pub(crate) fn remove(&mut self, member: &[u8]) -> bool {
        match self.scores.remove_entry(member) {
            Some((member, score)) => {
                self.order.remove(&(Score(score), member));
                true
            }
            None => false,
        }
    }

    /// Members with scores between `min` and `max`, lowest first.
    pub(crate) fn range_by_score(
        &self,
        min: ScoreBound,
        max: ScoreBound,
    ) -> impl Iterator<Item = (&Bytes, f64)> + '_ {
        let start = (
            Bound::Included((Score(min.value), Bytes::new())),
            Bound::Unbounded,
        );
        self.order
            .range(start)
            .map(|(s, m)| (m, s.0))
            .skip_while(move |(_, s)| min.exclusive && *s == min.value)
            .take_while(move |(_, s)| {
                if max.exclusive {
                    *s < max.value
                } else {
                    *s <= max.value
                }
            })
    }

    /// Every member with its score (for the snapshot).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Bytes, f64)> + '_ {
        self.order.iter().map(|(s, m)| (m, s.0))
    }
}

/// A score as Redis writes it: integers without a fraction, `inf`/`-inf`.
pub(crate) fn format_score(score: f64) -> String {
    if score.is_infinite() {
        if score > 0.0 {
            "inf".to_owned()
        } else {
            "-inf".to_owned()
        }
    } else if score.fract() == 0.0 && score.abs() < 1e17 {
        format!("{}", score as i64)
    } else {
        format!("{score}")
    }
}
