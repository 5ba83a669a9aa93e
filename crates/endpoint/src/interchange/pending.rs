//! The tasks that wait at the endpoint for a manager.

use std::cmp::Reverse;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use ferry_proto::TaskId;
use ferry_proto::messages::Requires;

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
        let (level, _) = self.head(now)?;
        let tasks = self.levels.get_mut(&level)?;
        let (task, _) = tasks.pop_front()?;
        if tasks.is_empty() {
            self.levels.remove(&level);
        }
        self.len -= 1;
        Some(task)
    }

    /// The next task to hand out, left in line.
    fn peek_at(&self, now: Instant) -> Option<TaskId> {
        let (level, _) = self.head(now)?;
        self.levels.get(&level)?.front().map(|(task, _)| *task)
    }

    /// The level the next task comes from, and how that task ranks against the heads of
    /// other queues: its priority with aging, its priority, and the earlier it came the
    /// higher (see [`Waiting`]).
    fn head(&self, now: Instant) -> Option<(Reverse<i32>, HeadRank)> {
        let rank = |(level, tasks): (&Reverse<i32>, &VecDeque<(TaskId, Instant)>)| {
            let since = tasks.front().map_or(now, |(_, since)| *since);
            let waited = self.aging.map_or(0, |period| {
                let periods = now.saturating_duration_since(since).as_nanos() / period.as_nanos().max(1);
                i64::try_from(periods).unwrap_or(i64::MAX)
            });
            let Reverse(priority) = *level;
            (
                *level,
                (
                    i64::from(priority).saturating_add(waited),
                    priority,
                    Reverse(since),
                ),
            )
        };
        match self.aging {
            None => self.levels.iter().next().map(rank),
            Some(_) => self.levels.iter().map(rank).max_by_key(|(_, r)| (r.0, r.1)),
        }
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

/// How the head of a queue ranks: priority with aging, priority, arrival (earlier
/// higher).
type HeadRank = (i64, i32, Reverse<Instant>);

/// The waiting tasks by what they require: one [`Pending`] for the tasks that require
/// nothing, and one per distinct requirement. A manager takes the best-ranked head among
/// the queues whose requirement its node meets, so the order by priority (and aging, and
/// arrival) holds across them, and tasks no free manager can take wait without holding
/// back the others.
#[derive(Debug, Default)]
pub(super) struct Waiting {
    any: Pending,
    needs: Vec<(Requires, Pending)>,
    aging: Option<Duration>,
}

impl Waiting {
    pub(super) fn aging(aging: Option<Duration>) -> Self {
        Self {
            any: Pending::aging(aging),
            needs: Vec::new(),
            aging,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.any.len() + self.needs.iter().map(|(_, p)| p.len()).sum::<usize>()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn queue(&mut self, requires: Option<&Requires>) -> &mut Pending {
        let Some(requires) = requires else {
            return &mut self.any;
        };
        let i = match self.needs.iter().position(|(r, _)| r == requires) {
            Some(i) => i,
            None => {
                self.needs.push((requires.clone(), Pending::aging(self.aging)));
                self.needs.len() - 1
            }
        };
        &mut self.needs[i].1
    }

    /// Last in line among `priority` (of its requirement's queue).
    pub(super) fn push_back(&mut self, task: TaskId, priority: i32, requires: Option<&Requires>) {
        self.queue(requires).push_back(task, priority);
    }

    /// First in line among `priority` (of its requirement's queue).
    pub(super) fn push_front(&mut self, task: TaskId, priority: i32, requires: Option<&Requires>) {
        self.queue(requires).push_front(task, priority);
    }

    /// The next task for a manager whose node meets the requirements `fits` says it
    /// meets.
    pub(super) fn pop_for(&mut self, fits: impl Fn(&Requires) -> bool) -> Option<TaskId> {
        let now = Instant::now();
        if self.needs.is_empty() {
            return self.any.pop_at(now);
        }
        let mut best: Option<(HeadRank, Option<usize>)> = self.any.head(now).map(|(_, r)| (r, None));
        for (i, (requires, queue)) in self.needs.iter().enumerate() {
            if let Some((_, rank)) = queue.head(now)
                && best.as_ref().is_none_or(|(b, _)| rank > *b)
                && fits(requires)
            {
                best = Some((rank, Some(i)));
            }
        }
        match best?.1 {
            None => self.any.pop_at(now),
            Some(i) => {
                let task = self.needs[i].1.pop_at(now);
                if self.needs[i].1.is_empty() {
                    self.needs.swap_remove(i);
                }
                task
            }
        }
    }

    /// The task first in line, whatever it requires.
    pub(super) fn peek(&self) -> Option<TaskId> {
        let now = Instant::now();
        let heads = std::iter::once(&self.any).chain(self.needs.iter().map(|(_, p)| p));
        let (queue, _) = heads
            .filter_map(|q| Some((q, q.head(now)?)))
            .max_by_key(|(_, (_, rank))| *rank)?;
        queue.peek_at(now)
    }

    /// The requirements tasks wait with.
    pub(super) fn requirements(&self) -> impl Iterator<Item = &Requires> {
        self.needs.iter().map(|(r, _)| r)
    }

    /// Takes every task waiting with `requires`.
    pub(super) fn take(&mut self, requires: &Requires) -> Vec<TaskId> {
        let Some(i) = self.needs.iter().position(|(r, _)| r == requires) else {
            return Vec::new();
        };
        let (_, mut queue) = self.needs.swap_remove(i);
        std::iter::from_fn(|| queue.pop_front()).collect()
    }

    /// Keeps only the tasks `keep` says to.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&TaskId) -> bool) {
        self.any.retain(&mut keep);
        for (_, queue) in &mut self.needs {
            queue.retain(&mut keep);
        }
        self.needs.retain(|(_, q)| !q.is_empty());
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

    #[test]
    fn a_manager_takes_the_best_head_among_the_queues_it_meets() {
        let gpu = Requires {
            gpus: 1,
            ..Requires::default()
        };
        let (plain, urgent_gpu, later_plain) = (TaskId::new(), TaskId::new(), TaskId::new());
        let mut waiting = Waiting::default();
        waiting.push_back(plain, 0, None);
        waiting.push_back(urgent_gpu, 5, Some(&gpu));
        waiting.push_back(later_plain, 0, None);
        assert_eq!(waiting.len(), 3);
        // A node without a GPU skips the GPU task, in order for the rest.
        let cpu_only = |r: &Requires| r.gpus == 0;
        assert_eq!(waiting.pop_for(cpu_only), Some(plain));
        // A GPU node takes the higher priority first.
        assert_eq!(waiting.pop_for(|_| true), Some(urgent_gpu));
        assert_eq!(waiting.requirements().count(), 0, "an emptied queue goes");
        assert_eq!(waiting.pop_for(cpu_only), Some(later_plain));
        assert_eq!(waiting.pop_for(|_| true), None);
        // Within one priority, first come first across queues.
        let (first, second) = (TaskId::new(), TaskId::new());
        waiting.push_back(first, 1, Some(&gpu));
        std::thread::sleep(Duration::from_millis(2));
        waiting.push_back(second, 1, None);
        assert_eq!(waiting.pop_for(|_| true), Some(first));
        assert_eq!(waiting.take(&gpu), Vec::<TaskId>::new());
        waiting.push_back(first, 1, Some(&gpu));
        assert_eq!(waiting.take(&gpu), vec![first]);
        assert_eq!(waiting.len(), 1);
    }
}
