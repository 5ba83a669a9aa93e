//! Executions, not only records: a copy of a task published by a re-dispatch (a sweep, a
//! block's end, a retry: attempt > 0) that reaches the endpoint after the task's result
//! was recorded does not run, whether the endpoint never published that result (a
//! sweep raced it) or forgot it (it was killed since). The endpoint asks the
//! web-service (`still_to_run`) for every message carrying such a copy. Each task writes
//! a line to a side-effect log to count its runs.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use ferry_broker::Broker;
use ferry_proto::messages::{FunctionCode, FunctionKind, TaskBatch, TaskSpec};
use ferry_proto::{EndpointId, FunctionId, TaskId};
use ferry_tests::{Part, Stack, amqp_url};

const WITHIN: Duration = Duration::from_secs(60);

/// Runs of the task, from the side-effect log.
fn runs(log: &Path) -> usize {
    std::fs::read_to_string(log).unwrap_or_default().lines().count()
}

/// Lines of the endpoint's log saying it left out a copy of `task`.
fn left_out(stack: &Stack, task: TaskId) -> usize {
    let task = task.to_string();
    stack
        .log_text("ferry-endpoint")
        .lines()
        .filter(|l| l.contains(&task) && l.contains("not run"))
        .count()
}

/// Publishes late copies of tasks of the side-effect function straight to the
/// endpoint's queue, as a re-dispatch would.
struct LateCopies<'a> {
    admin: &'a Broker,
    function: FunctionId,
    code: &'a str,
    log: &'a Path,
}

impl LateCopies<'_> {
    /// A task message carrying one copy of `task` at `attempt`.
    fn message(&self, endpoint: EndpointId, task: TaskId, attempt: u32) -> Vec<u8> {
        let batch = TaskBatch {
            endpoint_id: endpoint,
            functions: vec![FunctionCode::inline(
                self.function,
                FunctionKind::Shell,
                Bytes::from(self.code.to_owned()),
            )],
            tasks: vec![TaskSpec {
                task_id: task,
                function_id: self.function,
                attempt,
                max_retries: 3,
                payload: Bytes::new(),
                group: None,
                walltime_ms: None,
                input_bytes: None,
                requeues: 0,
                priority: 0,
                requires: None,
                retry: None,
                not_before: None,
                environment: None,
                session: None,
            }],
        };
        ferry_proto::codec::encode(&batch).unwrap()
    }

    /// Publishes a copy of `task` at `attempt` and waits until the endpoint left it out,
    /// or ran it; then the function must have run `ran` times in all.
    async fn do_not_run(&self, stack: &Stack, task: TaskId, attempt: u32, ran: usize) {
        let endpoint = stack.endpoint_id.unwrap();
        let before = left_out(stack, task);
        self.admin
            .publish(
                &self.admin.endpoint_queue(endpoint),
                &self.message(endpoint, task, attempt),
            )
            .await
            .unwrap();
        let log = self.log;
        stack
            .wait_until(
                WITHIN,
                "the endpoint leaves the copy out, or runs it",
                || async move { left_out(stack, task) > before || runs(log) > ran },
            )
            .await;
        // A run would have logged by now: give it the time to.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            runs(log),
            ran,
            "a copy at attempt {attempt} of task {task} ran after its result was recorded"
        );
        let doc = stack.task(task).await;
        assert_eq!(doc.status, "success", "{doc:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_re_dispatched_copy_runs_no_task_whose_result_was_recorded() {
    let mut stack = Stack::start_with_env(&[("FERRY_STRANDED_AFTER_SECS", "1")]).await;
    let log = stack.dir.path().join("runs.log");
    let code = format!("echo ran >> {}; echo done", log.display());
    let f = stack.register("shell", "note", &code).await;
    let admin = Broker::connect(&amqp_url(), &stack.namespace, Default::default())
        .await
        .unwrap();
    let copies = LateCopies {
        admin: &admin,
        function: f.parse().unwrap(),
        code: &code,
        log: &log,
    };

    // A task runs and its attempt 0 is recorded; then a copy of attempt 1 comes, as one
    // a lost endpoint's sweep published while the result was on its way would. The
    // endpoint remembers only attempt 0.
    let first = stack.submit(&[(&f, "")]).await[0];
    let doc = stack.wait_done(first, WITHIN).await;
    assert_eq!((doc.status.as_str(), doc.attempt), ("success", 0), "{doc:?}");
    copies.do_not_run(&stack, first, 1, 1).await;

    // A task whose message vanished is re-dispatched as attempt 1 (the stranded sweep)
    // and recorded; the endpoint is killed, forgetting it, and a second copy of that
    // attempt comes.
    stack.stop(Part::Endpoint);
    let second = stack.submit(&[(&f, "")]).await[0];
    let this = &stack;
    this.wait_until(WITHIN, "the task waits for its endpoint", || async move {
        this.task(second).await.status == "waiting-for-ep"
    })
    .await;
    admin
        .delete_queue(&admin.endpoint_queue(stack.endpoint_id.unwrap()))
        .await
        .unwrap();
    stack.start_part(Part::Endpoint);
    let doc = stack.wait_done(second, WITHIN).await;
    assert_eq!((doc.status.as_str(), doc.attempt), ("success", 1), "{doc:?}");
    assert_eq!(runs(&log), 2);
    stack.kill(Part::Endpoint);
    stack.start_part(Part::Endpoint);
    copies.do_not_run(&stack, second, 1, 2).await;
    // Nor, now that the endpoint forgot it too, does the first task's copy.
    copies.do_not_run(&stack, first, 1, 2).await;

    admin.close().await;
    stack.shutdown().await;
}
