//! `round-robin`: one task to each manager with a free slot in turn, in the order they
//! connected.

use std::collections::{BTreeMap, HashMap};

use ferry_proto::ManagerId;

use super::{Facts, Strategy};

/// The managers with free slots by connection order, and where the turn is.
#[derive(Debug, Default)]
pub struct RoundRobin {
    ring: BTreeMap<u64, ManagerId>,
    orders: HashMap<ManagerId, u64>,
    /// The connection order of the last manager picked.
    last: Option<u64>,
}

impl Strategy for RoundRobin {
    fn set(&mut self, id: ManagerId, free: u32, facts: Facts<'_>) {
        self.forget(id);
        if free > 0 {
            self.ring.insert(facts.order, id);
            self.orders.insert(id, facts.order);
        }
    }

    fn next(&mut self, _: Option<&str>) -> Option<(ManagerId, u32)> {
        let after = self.last.map_or(0, |o| o + 1);
        let (&order, &id) = self
            .ring
            .range(after..)
            .next()
            .or_else(|| self.ring.iter().next())?;
        self.last = Some(order);
        Some((id, 1))
    }

    fn forget(&mut self, id: ManagerId) {
        if let Some(order) = self.orders.remove(&id) {
            self.ring.remove(&order);
        }
    }
}
