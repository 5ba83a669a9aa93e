//! Task environments at the interchange: a task naming one the endpoint lacks fails at
//! once; a function serialized as bytecode goes to an environment whose Python can load
//! it, or fails naming the versions there are; and when the last task of an environment
//! that recycles when unreferenced, or of a session in one that recycles when a session
//! completes, is done, the managers that ran one hear so
//! (docs/scheduling.md#task-environments).

use std::collections::{BTreeMap, HashMap};

use ferry_proto::frames::ToManager;
use ferry_proto::messages::TaskSpec;
use ferry_proto::{BatchId, ManagerId, TaskId};

use super::{Ack, InFlight, Interchange, Sink, WorkersPython};

/// What the interchange knows of one task environment.
#[derive(Debug, Clone, Default)]
pub struct EnvironmentInfo {
    /// Its Python (`None`: not known, nothing is refused for it).
    pub python: Option<WorkersPython>,
    /// Its hosts are replaced once no task of it is left here.
    pub recycle_unreferenced: bool,
    /// Its hosts that ran a session's tasks are replaced once no task of that session
    /// is left here.
    pub recycle_session: bool,
}

/// What managers are told of when no task held here refers to it any more.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Referred {
    Environment(String),
    Session(BatchId),
}

/// The environments, and how many tasks are held here of each environment that
/// recycles when unreferenced and of each session in one that recycles when a session
/// completes, with the managers that were sent one.
#[derive(Default)]
pub(super) struct Environments {
    pub(super) known: BTreeMap<String, EnvironmentInfo>,
    held: HashMap<Referred, (usize, Vec<ManagerId>)>,
}

impl Environments {
    /// What a task refers to that its managers are told of when it ends.
    fn referred(&self, spec: &TaskSpec) -> impl Iterator<Item = Referred> + use<> {
        let info = spec.environment.as_ref().and_then(|e| self.known.get(e));
        let environment = spec
            .environment
            .clone()
            .filter(|_| info.is_some_and(|i| i.recycle_unreferenced))
            .map(Referred::Environment);
        let session = spec
            .session
            .filter(|_| info.is_some_and(|i| i.recycle_session))
            .map(Referred::Session);
        environment.into_iter().chain(session)
    }

    /// A manager is sent this task.
    pub(super) fn sent_to(&mut self, manager: ManagerId, spec: &TaskSpec) {
        for referred in self.referred(spec) {
            if let Some((_, managers)) = self.held.get_mut(&referred)
                && !managers.contains(&manager)
            {
                managers.push(manager);
            }
        }
    }
}

impl<S: Sink, D: Ack> Interchange<S, D> {
    /// The endpoint's task environments (`[provider.environments.<name>]`).
    pub fn with_environments(mut self, environments: BTreeMap<String, EnvironmentInfo>) -> Self {
        self.environments.known = environments;
        self
    }

    /// Why a task's environment cannot run it, after routing a function serialized as
    /// bytecode (naming no environment) to one whose Python loads it; `None`: it runs.
    pub(super) fn route(&self, spec: &mut TaskSpec) -> Option<String> {
        if let Some(name) = &spec.environment
            && !self.environments.known.contains_key(name)
        {
            return Some(format!(
                "task {} names task environment {name:?}, which endpoint {} does not have ({})",
                spec.task_id,
                self.endpoint_id,
                self.environment_list()
            ));
        }
        let theirs = self.functions.get(&spec.function_id)?.python.as_deref()?;
        let python_of = |name: Option<&str>| match name {
            None => self.python.as_ref(),
            Some(name) => self.environments.known.get(name)?.python.as_ref(),
        };
        let loads =
            |p: Option<&WorkersPython>| p.is_none_or(|p| ferry_proto::python::same_minor(theirs, &p.version));
        if loads(python_of(spec.environment.as_deref())) {
            return None;
        }
        if spec.environment.is_none()
            && let Some((name, _)) = self.environments.known.iter().find(|(_, e)| {
                e.python
                    .as_ref()
                    .is_some_and(|p| ferry_proto::python::same_minor(theirs, &p.version))
            })
        {
            tracing::debug!(task_id = %spec.task_id, environment = %name, python = theirs, "bytecode routed to an environment whose Python loads it");
            spec.environment = Some(name.clone());
            return None;
        }
        let minor = |v: &str| {
            ferry_proto::python::major_minor(v).map_or_else(|| v.to_owned(), |(a, b)| format!("{a}.{b}"))
        };
        let ours = python_of(spec.environment.as_deref()).expect("refused only against a known Python");
        let which = match &spec.environment {
            Some(name) => format!("task environment {name:?} of endpoint {} runs", self.endpoint_id),
            None => format!("the workers of endpoint {} run", self.endpoint_id),
        };
        Some(format!(
            "function {} was serialized as Python bytecode on Python {theirs}, and {which} Python {} \
             ({}); no environment of it runs Python {} ({}): bytecode loads only on the Python \
             major.minor that made it. Run it on an endpoint or environment whose workers run \
             Python {}, register it again from Python {}, or register it as source (Ferry's SDK: \
             register_function(f, source=True); Globus Compute's: a source serialization strategy)",
            spec.function_id,
            ours.version,
            ours.interpreter,
            minor(theirs),
            self.environment_list(),
            minor(theirs),
            minor(&ours.version),
        ))
    }

    /// The environments and their Pythons, for errors: `default (3.11.7), torch (3.10.4)`.
    fn environment_list(&self) -> String {
        let version =
            |p: Option<&WorkersPython>| p.map_or("Python unknown", |p| p.version.as_str()).to_owned();
        std::iter::once(format!("default: Python {}", version(self.python.as_ref())))
            .chain(
                self.environments
                    .known
                    .iter()
                    .map(|(name, e)| format!("{name}: Python {}", version(e.python.as_ref()))),
            )
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Holds a task (counting it for what it refers to).
    pub(super) fn hold(&mut self, task_id: TaskId, held: InFlight) {
        for referred in self.environments.referred(&held.spec) {
            self.environments.held.entry(referred).or_default().0 += 1;
        }
        self.inflight.insert(task_id, held);
    }

    /// Stops holding a task; the last of an environment that recycles when unreferenced
    /// (or of a session in one that recycles when a session completes) tells the
    /// managers that were sent one.
    pub(super) fn unhold(&mut self, task_id: &TaskId) -> Option<InFlight> {
        let held = self.inflight.remove(task_id)?;
        for referred in self.environments.referred(&held.spec) {
            let Some((count, _)) = self.environments.held.get_mut(&referred) else {
                continue;
            };
            *count -= 1;
            if *count > 0 {
                continue;
            }
            let (_, managers) = self.environments.held.remove(&referred).expect("present");
            let told = match referred {
                Referred::Environment(environment) => ToManager::Unreferenced { environment },
                Referred::Session(session) => ToManager::SessionDone { session },
            };
            for m in managers.iter().filter_map(|m| self.managers.get(m)) {
                let _ = m.tx.send(told.clone());
            }
        }
        Some(held)
    }
}
