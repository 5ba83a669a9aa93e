//! `environment-affinity`: a task goes to a manager that was given tasks of its task
//! environment (its workers likely hold warm hosts of it), the one with the most free
//! slots among them; else to the least loaded.

use std::collections::{HashMap, HashSet};

use ferry_proto::ManagerId;

use super::{Facts, LeastLoaded, Strategy};

#[derive(Debug, Default)]
pub struct EnvironmentAffinity {
    load: LeastLoaded,
    /// The managers given tasks of each environment.
    ran: HashMap<String, HashSet<ManagerId>>,
}

impl Strategy for EnvironmentAffinity {
    fn set(&mut self, id: ManagerId, free: u32, facts: Facts<'_>) {
        self.load.set(id, free, facts);
    }

    /// One task at a time, so each task is placed by its own environment. A pick scans
    /// the managers that ran the environment (O(those)).
    fn next(&mut self, environment: Option<&str>) -> Option<(ManagerId, u32)> {
        let warm = environment
            .and_then(|e| self.ran.get(e))
            .and_then(|ran| {
                ran.iter()
                    .map(|&id| (self.load.free(id), id))
                    .filter(|&(free, _)| free > 0)
                    .max()
            })
            .map(|(_, id)| (id, 1));
        warm.or_else(|| self.load.emptiest().map(|(id, _)| (id, 1)))
    }

    fn uses_environment(&self) -> bool {
        true
    }

    fn sent(&mut self, id: ManagerId, environment: &str) {
        if let Some(ran) = self.ran.get_mut(environment) {
            ran.insert(id);
        } else {
            self.ran.insert(environment.to_owned(), HashSet::from([id]));
        }
    }

    fn forget(&mut self, id: ManagerId) {
        self.load.forget(id);
        for ran in self.ran.values_mut() {
            ran.remove(&id);
        }
    }
}
