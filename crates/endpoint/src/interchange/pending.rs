//! The tasks that wait at the endpoint for a manager.

use std::cmp::Reverse;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use ferry_proto::TaskId;

/// Tasks waiting for a manager: the highest priority first, and first come, first
/// served within a priority, whichever session or message a task came in. A task given
/// back (its manager's block is ending) goes first among its priority again.
///
/// With aging (`priority_aging_secs`), a waiting task's priority counts one more for
/// every such period it has waited, so a steady stream of higher priorities does not
/// starve the lower ones: the next task is the one at the head of its priority whose
/// priority plus its waiting periods is the highest (the higher priority on a tie).
#[derive(Debug, Default)]
pub(super) struct Pending {
    levels: BTreeMap<Reverse<i32>, VecDeque<(TaskId, Instant)>>,
    len: usize,
    aging: Option<Duration>,
}

impl Pending {
    /// Waiting periods of `aging` raise a task's priority by one each.
    pub(super) fn aging(aging: Option<Duration>) -> Self {
        Self {
            aging: aging.filter(|a| !a.is_zero()),
            ..Self::default()
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Last in line among `priority`.
    pub(super) fn push_back(&mut self, task: TaskId, priority: i32) {
        self.push_back_at(task, priority, Instant::now());
    }

    /// Last in line among `priority`, waiting since `since`.
    pub(super) fn push_back_at(&mut self, task: TaskId, priority: i32, since: Instant) {
        self.levels
            .entry(Reverse(priority))
            .or_default()
            .push_back((task, since));
        self.len += 1;
    }

    /// First in line among `priority`.
    pub(super) fn push_front(&mut self, task: TaskId, priority: i32) {
        self.levels
            .entry(Reverse(priority))
            .or_default()
            .push_front((task, Instant::now()));
        self.len += 1;
    }

    /// The next task to hand out.
    pub(super) fn pop_front(&mut self) -> Option<TaskId> {
        self.pop_at(Instant::now())
    }

    /// The next task to hand out, aging counted up to `now`.
    pub(super) fn pop_at(&mut self, now: Instant) -> Option<TaskId> {
        let level = match self.aging {
            None => *self.levels.keys().next()?,
            Some(period) => {
                let aged = |(Reverse(priority), tasks): (&Reverse<i32>, &VecDeque<(TaskId, Instant)>)| {
                    let waited = tasks.front().map_or(0, |(_, since)| {
                        now.saturating_duration_since(*since).as_nanos() / period.as_nanos().max(1)
                    });
                    let waited = i64::try_from(waited).unwrap_or(i64::MAX);
                    (i64::from(*priority).saturating_add(waited), *priority)
                };
                let (_, priority) = self.levels.iter().map(aged).max()?;
                Reverse(priority)
            }
        };
        let tasks = self.levels.get_mut(&level)?;
        let (task, _) = tasks.pop_front()?;
        if tasks.is_empty() {
            self.levels.remove(&level);
        }
        self.len -= 1;
        Some(task)
    }

    /// Keeps only the tasks `keep` says to.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&TaskId) -> bool) {
        for tasks in self.levels.values_mut() {
            tasks.retain(|(task, _)| keep(task));
        }
        self.levels.retain(|_, tasks| !tasks.is_empty());
        self.len = self.levels.values().map(VecDeque::len).sum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_priority_goes_first_and_first_come_within_one() {
        let ids: Vec<TaskId> = (0..6).map(|_| TaskId::new()).collect();
        let mut pending = Pending::default();
        for (id, priority) in ids.iter().zip([0, 5, 0, -3, 5, 0]) {
            pending.push_back(*id, priority);
        }
        let returned = TaskId::new();
        pending.push_front(returned, 0);
        assert_eq!(pending.len(), 7);

        let order: Vec<TaskId> = std::iter::from_fn(|| pending.pop_front()).collect();

        assert_eq!(order, [ids[1], ids[4], returned, ids[0], ids[2], ids[5], ids[3]]);
        assert!(pending.is_empty());
    }

    #[test]
    fn retain_drops_tasks_and_their_empty_levels() {
        let (a, b, c) = (TaskId::new(), TaskId::new(), TaskId::new());
        let mut pending = Pending::default();
        pending.push_back(a, 1);
        pending.push_back(b, 2);
        pending.push_back(c, 1);
        pending.retain(|t| *t != b);
        assert_eq!(pending.len(), 2);
        assert_eq!(pending.pop_front(), Some(a));
        assert_eq!(pending.pop_front(), Some(c));
        assert_eq!(pending.pop_front(), None);
    }

    #[test]
    fn with_aging_a_task_that_waited_long_enough_overtakes_higher_priorities() {
        let period = Duration::from_secs(10);
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let mut pending = Pending::aging(Some(period));
        let (low, high, later) = (TaskId::new(), TaskId::new(), TaskId::new());
        pending.push_back_at(low, 0, t0);

        // At 15 s the low task counts 1: a priority-2 task that just came goes first.
        pending.push_back_at(high, 2, at(15));
        assert_eq!(pending.pop_at(at(15)), Some(high));
        // At 25 s it counts 2, a tie with a fresh priority 2: the higher priority wins.
        pending.push_back_at(high, 2, at(25));
        assert_eq!(pending.pop_at(at(25)), Some(high));
        // At 35 s it counts 3 and goes before a fresh priority 2.
        pending.push_back_at(later, 2, at(35));
        assert_eq!(pending.pop_at(at(35)), Some(low));
        assert_eq!(pending.pop_at(at(35)), Some(later));

        // Without aging, waiting changes nothing.
        let mut strict = Pending::default();
        strict.push_back_at(low, 0, t0);
        strict.push_back_at(high, 2, at(3600));
        assert_eq!(strict.pop_at(at(3600)), Some(high));
    }
}
