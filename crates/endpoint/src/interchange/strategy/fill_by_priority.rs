//! `fill-by-priority`: managers by priority, then connection order, each filled to
//! capacity before the next gets a task.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

use ferry_proto::ManagerId;

use super::{Facts, Strategy};

type Rank = (Reverse<i32>, u64, ManagerId);

/// The managers with free slots, best first.
#[derive(Debug, Default)]
pub struct FillByPriority {
    ranked: BTreeSet<Rank>,
    held: HashMap<ManagerId, (Rank, u32)>,
}

impl Strategy for FillByPriority {
    fn set(&mut self, id: ManagerId, free: u32, facts: Facts<'_>) {
        self.forget(id);
        if free > 0 {
            let rank = (Reverse(facts.info.priority), facts.order, id);
            self.ranked.insert(rank);
            self.held.insert(id, (rank, free));
        }
    }

    fn next(&mut self, _: Option<&str>) -> Option<(ManagerId, u32)> {
        let &(_, _, id) = self.ranked.first()?;
        Some((id, self.held[&id].1))
    }

    fn forget(&mut self, id: ManagerId) {
        if let Some((rank, _)) = self.held.remove(&id) {
            self.ranked.remove(&rank);
        }
    }
}
