//! What the interchange takes in ([`Input`]) and hands out ([`Sink`]), and what it
//! acknowledges ([`Ack`]): its whole interface with the rest of the endpoint.

use ferry_broker::Delivery;
use ferry_proto::frames::{FromManager, ManagerInfo, ToManager};
use ferry_proto::messages::{EndpointLoad, StatusUpdate, TaskBatch, TaskResult};
use ferry_proto::{ManagerId, TaskId};
use tokio::sync::mpsc;

/// Everything the interchange reacts to.
pub enum Input<D = Delivery> {
    /// A message from the endpoint's queue.
    Tasks {
        batch: Box<TaskBatch>,
        delivery: Box<D>,
    },
    ManagerConnected {
        info: ManagerInfo,
        tx: mpsc::UnboundedSender<ToManager>,
    },
    FromManager {
        manager: ManagerId,
        message: FromManager,
    },
    ManagerGone {
        manager: ManagerId,
        reason: String,
    },
    /// These results are confirmed by the broker.
    Published {
        tasks: Vec<TaskId>,
    },
    /// A retry is confirmed by the broker and its loss reported: the delivery the lost
    /// attempt came in is settled for that task.
    Settle {
        delivery: u64,
    },
    /// Stop these tasks: their records are terminal (cancelled, or their session timed
    /// out). Held ones are dropped or killed; copies that arrive later are dropped.
    Cancel {
        task_ids: Vec<TaskId>,
    },
    /// The endpoint is stopping: hand out no more tasks. Once no task runs on a manager
    /// and every result is published, `done` gets the tasks whose results this run
    /// published, with their attempts (the next start drops copies of them).
    Drain {
        done: tokio::sync::oneshot::Sender<Vec<(TaskId, u32)>>,
    },
    /// Time to check managers' liveness and send a heartbeat.
    Tick,
    /// Nothing new: a chance to report what is due (see `RECEIVED_LINGER`).
    Wake,
}

/// What the interchange tells scaling on every tick.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capacity {
    /// Tasks received and not given to any manager.
    pub pending_tasks: u32,
    /// By block id: what the block's connected managers hold.
    pub blocks: std::collections::HashMap<String, BlockLoad>,
}

/// One block's connected managers, as the interchange sees them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockLoad {
    pub managers: u32,
    /// Of those, the ones that take no more tasks (their block ends soon).
    pub draining: u32,
    pub workers: u32,
    /// Tasks its managers hold (running or queued at them).
    pub tasks: u32,
}

/// A message the interchange acknowledges once every task in it is settled: an AMQP
/// delivery in production, anything in benchmarks.
pub trait Ack: Send + 'static {
    fn ack(self) -> impl std::future::Future<Output = anyhow::Result<()>> + Send;
}

impl Ack for Delivery {
    async fn ack(self) -> anyhow::Result<()> {
        Ok(Delivery::ack(&self).await?)
    }
}

/// Where the interchange sends what it learns.
pub trait Sink {
    fn status(&self, update: StatusUpdate);
    fn result(&self, result: TaskResult);
    fn heartbeat(&self, load: EndpointLoad, alive: Vec<TaskId>);
    /// Publish a retry to the endpoint's own queue; once confirmed, report `lost` and
    /// send back [`Input::Settle`] for `delivery`.
    fn retry(&self, batch: TaskBatch, lost: StatusUpdate, delivery: u64);
}
