//! `least-loaded`: the manager with the most free slots, filled with as many as it takes.

use std::collections::{BTreeSet, HashMap};

use ferry_proto::ManagerId;

use super::{Facts, Strategy};

/// Managers by free slots, the emptiest last: a pick is O(log managers).
#[derive(Debug, Default)]
pub struct LeastLoaded {
    by_free: BTreeSet<(u32, ManagerId)>,
    free: HashMap<ManagerId, u32>,
}

impl LeastLoaded {
    /// The manager with the most free slots, and how many.
    pub fn emptiest(&self) -> Option<(ManagerId, u32)> {
        self.by_free.last().map(|&(free, id)| (id, free))
    }

    /// The free slots of `id` (0 when it takes none).
    pub fn free(&self, id: ManagerId) -> u32 {
        self.free.get(&id).copied().unwrap_or(0)
    }
}

impl Strategy for LeastLoaded {
    fn set(&mut self, id: ManagerId, free: u32, _: Facts<'_>) {
        if let Some(old) = self.free.remove(&id) {
            self.by_free.remove(&(old, id));
        }
        if free > 0 {
            self.free.insert(id, free);
            self.by_free.insert((free, id));
        }
    }

    fn next(&mut self, _: Option<&str>) -> Option<(ManagerId, u32)> {
        self.emptiest()
    }

    fn forget(&mut self, id: ManagerId) {
        if let Some(old) = self.free.remove(&id) {
            self.by_free.remove(&(old, id));
        }
    }
}
