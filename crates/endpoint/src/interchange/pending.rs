//! The tasks that wait at the endpoint for a manager.

use std::cmp::Reverse;
use std::collections::{BTreeMap, VecDeque};

use ferry_proto::TaskId;

/// Tasks waiting for a manager: the highest priority first, and first come, first
/// served within a priority, whichever session or message a task came in. A task given
/// back (its manager's block is ending) goes first among its priority again.
#[derive(Debug, Default)]
pub(super) struct Pending {
    levels: BTreeMap<Reverse<i32>, VecDeque<TaskId>>,
    len: usize,
}

impl Pending {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Last in line among `priority`.
    pub(super) fn push_back(&mut self, task: TaskId, priority: i32) {
        self.levels.entry(Reverse(priority)).or_default().push_back(task);
        self.len += 1;
    }

    /// First in line among `priority`.
    pub(super) fn push_front(&mut self, task: TaskId, priority: i32) {
        self.levels.entry(Reverse(priority)).or_default().push_front(task);
        self.len += 1;
    }

    /// The next task to hand out.
    pub(super) fn pop_front(&mut self) -> Option<TaskId> {
        let mut level = self.levels.first_entry()?;
        let task = level.get_mut().pop_front();
        if level.get().is_empty() {
            level.remove();
        }
        if task.is_some() {
            self.len -= 1;
        }
        task
    }

    /// Keeps only the tasks `keep` says to.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&TaskId) -> bool) {
        for tasks in self.levels.values_mut() {
            tasks.retain(&mut keep);
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
}
