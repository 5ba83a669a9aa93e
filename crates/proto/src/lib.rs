//! The language every Ferry process speaks, and nothing else: no I/O, no async runtime.
//!
//! - [`ids`]: UUID newtypes for tasks, functions, endpoints, batches, users and managers,
//!   parsed once at the edge so that past it an invalid id cannot be represented.
//! - [`state`]: the task state machine of DESIGN.md §3 as one pure function. The Redis
//!   script in `ferry-store` mirrors it and a test checks that the two agree.
//! - [`codec`]: the one place `bincode` is named; every AMQP body and TCP frame between
//!   Ferry processes goes through it.
//! - [`messages`]: what travels over RabbitMQ (web-service -> forwarder -> endpoint -> forwarder).
//! - [`frames`]: what travels over TCP and pipes (endpoint <-> manager <-> worker).
//! - [`api`]: the JSON bodies of the HTTP API, shared by the web-service, the endpoint
//!   (which registers itself over HTTP) and the tests.
//! - [`environments`]: task environments as an endpoint hands them to its workers.
//! - [`time`]: wall-clock timestamps as plain numbers, so records stay compact.

pub mod api;
pub mod codec;
pub mod environments;
pub mod frames;
pub mod globus;
pub mod ids;
pub mod messages;
pub mod python;
pub mod state;
pub mod time;

pub use ids::{BatchId, EndpointId, FunctionId, ManagerId, TaskGroupId, TaskId, UserId};
pub use state::{Actor, Event, EventKind, Ignored, Outcome, TaskState, TaskStatus, Transition};
