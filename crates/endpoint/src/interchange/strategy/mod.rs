//! Which manager gets the next tasks: the endpoint's `strategy` (docs/scheduling.md#strategies).
//!
//! The interchange tells its [`Strategy`] every manager's free slots as they change, and
//! asks it, while tasks wait, which manager to give tasks to next and at most how many
//! before it asks again (the tasks a manager gets in one round still go in one frame).
//! Which tasks it gets (priority, requirements) is the interchange's.
//!
//! A strategy of your own is one file here implementing [`Strategy`], and a name in
//! [`StrategyKind`].

use ferry_proto::ManagerId;
use ferry_proto::frames::ManagerInfo;
use serde::{Deserialize, Serialize};

mod affinity;
mod fill_by_priority;
mod least_loaded;
mod round_robin;

pub use affinity::EnvironmentAffinity;
pub use fill_by_priority::FillByPriority;
pub use least_loaded::LeastLoaded;
pub use round_robin::RoundRobin;

/// A manager as a strategy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// What it said of itself when it connected (`priority`, `capacity`, its node).
    pub info: &'a ManagerInfo,
    /// The order it connected in (0 the first).
    pub order: u64,
}

/// Picks the manager that gets tasks next.
pub trait Strategy: Send {
    /// Manager `id` can take `free` more tasks. `0`: none for now (full, draining, gone,
    /// or fitting no waiting task this round): it is not picked until set again.
    fn set(&mut self, id: ManagerId, free: u32, facts: Facts<'_>);
    /// The manager to give tasks to next, and at most how many before asking again;
    /// `None` when none has a free slot. `environment`: the task environment of the task
    /// first in line (asked only of a strategy that [`Strategy::uses_environment`]).
    fn next(&mut self, environment: Option<&str>) -> Option<(ManagerId, u32)>;
    /// Whether [`Strategy::next`] wants the environment of the task first in line.
    fn uses_environment(&self) -> bool {
        false
    }
    /// Manager `id` was given a task of `environment`.
    fn sent(&mut self, _id: ManagerId, _environment: &str) {}
    /// Manager `id` is gone for good.
    fn forget(&mut self, id: ManagerId);
}

/// The strategies an endpoint's config may name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyKind {
    /// The manager with the most free slots first, filled with as many as it takes.
    #[default]
    LeastLoaded,
    /// Managers by `priority` (highest first; `FERRY_MANAGER_PRIORITY`), then the order
    /// they connected in; each filled to capacity before the next gets any (the STK
    /// coordinator's default: work packs onto the fewest nodes, idle blocks end).
    FillByPriority,
    /// One task to each manager with a free slot in turn, in the order they connected.
    RoundRobin,
    /// A manager that was given tasks of the task's environment first (its workers have
    /// warm hosts of it), the one with the most free slots among them; else the least
    /// loaded.
    EnvironmentAffinity,
}

impl StrategyKind {
    pub fn name(self) -> &'static str {
        match self {
            StrategyKind::LeastLoaded => "least-loaded",
            StrategyKind::FillByPriority => "fill-by-priority",
            StrategyKind::RoundRobin => "round-robin",
            StrategyKind::EnvironmentAffinity => "environment-affinity",
        }
    }

    pub fn build(self) -> Box<dyn Strategy> {
        match self {
            StrategyKind::LeastLoaded => Box::new(LeastLoaded::default()),
            StrategyKind::FillByPriority => Box::new(FillByPriority::default()),
            StrategyKind::RoundRobin => Box::new(RoundRobin::default()),
            StrategyKind::EnvironmentAffinity => Box::new(EnvironmentAffinity::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(priority: i32) -> ManagerInfo {
        ManagerInfo {
            manager_id: ManagerId::new(),
            hostname: "n".into(),
            workers: 1,
            capacity: 4,
            cores: 1,
            memory_bytes: 1 << 30,
            gpus: 0,
            tags: Vec::new(),
            block_id: None,
            block_end: None,
            priority,
        }
    }

    /// Managers `(priority, free)` in connection order, set on a fresh `kind`.
    fn with(kind: StrategyKind, managers: &[(i32, u32)]) -> (Box<dyn Strategy>, Vec<ManagerInfo>) {
        let mut s = kind.build();
        let infos: Vec<ManagerInfo> = managers.iter().map(|&(p, _)| info(p)).collect();
        for (order, (i, &(_, free))) in infos.iter().zip(managers).enumerate() {
            s.set(
                i.manager_id,
                free,
                Facts {
                    info: i,
                    order: order as u64,
                },
            );
        }
        (s, infos)
    }

    /// Which managers (by index) get tasks, one task at a time, `n` tasks.
    fn picks(
        s: &mut dyn Strategy,
        infos: &[ManagerInfo],
        free: &mut [u32],
        n: usize,
        env: Option<&str>,
    ) -> Vec<usize> {
        let mut out = Vec::new();
        for _ in 0..n {
            let Some((id, most)) = s.next(env) else { break };
            assert!(most >= 1);
            let i = infos.iter().position(|m| m.manager_id == id).unwrap();
            out.push(i);
            free[i] -= 1;
            if let Some(e) = env {
                s.sent(id, e);
            }
            s.set(
                id,
                free[i],
                Facts {
                    info: &infos[i],
                    order: i as u64,
                },
            );
        }
        out
    }

    #[test]
    fn least_loaded_fills_the_emptiest_first() {
        let (mut s, infos) = with(StrategyKind::LeastLoaded, &[(0, 1), (0, 3)]);
        assert_eq!(s.next(None), Some((infos[1].manager_id, 3)));
        let mut free = [1, 3];
        assert_eq!(picks(&mut *s, &infos, &mut free, 2, None), [1, 1]);
        let mut rest = picks(&mut *s, &infos, &mut free, 2, None);
        rest.sort();
        assert_eq!(rest, [0, 1], "as loaded, either");
        assert_eq!(s.next(None), None);
    }

    #[test]
    fn fill_by_priority_fills_the_highest_then_the_oldest_to_capacity() {
        let (mut s, infos) = with(StrategyKind::FillByPriority, &[(0, 2), (5, 2), (0, 2)]);
        let mut free = [2, 2, 2];
        assert_eq!(picks(&mut *s, &infos, &mut free, 6, None), [1, 1, 0, 0, 2, 2]);
        assert_eq!(s.next(None), None);
    }

    #[test]
    fn round_robin_gives_one_each_in_turn_and_skips_the_full() {
        let (mut s, infos) = with(StrategyKind::RoundRobin, &[(0, 3), (0, 1), (0, 3)]);
        let mut free = [3, 1, 3];
        assert_eq!(picks(&mut *s, &infos, &mut free, 7, None), [0, 1, 2, 0, 2, 0, 2]);
        assert_eq!(s.next(None), None);
    }

    #[test]
    fn environment_affinity_prefers_managers_that_ran_the_environment() {
        let (mut s, infos) = with(StrategyKind::EnvironmentAffinity, &[(0, 1), (0, 5), (0, 3)]);
        assert!(s.uses_environment());
        let mut free = [1, 5, 3];
        // Nobody ran `torch`: the least loaded (1) gets it, and then keeps getting it
        // while less free than 2.
        assert_eq!(picks(&mut *s, &infos, &mut free, 3, Some("torch")), [1, 1, 1]);
        // Another environment goes by load: 2 (3 free) over 1 (2) and 0 (1).
        assert_eq!(picks(&mut *s, &infos, &mut free, 1, Some("numpy")), [2]);
        // `torch` stays with 1 until it is full, then the least loaded.
        assert_eq!(picks(&mut *s, &infos, &mut free, 3, Some("torch")), [1, 1, 2]);
        s.forget(infos[2].manager_id);
        assert_eq!(picks(&mut *s, &infos, &mut free, 1, Some("numpy")), [0]);
    }
}
