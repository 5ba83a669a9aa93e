//! The data plane, from the endpoint's side: inputs and function code too large for a
//! task message are fetched from the web-service (a function once, then kept), and
//! results too large for a report are stored there first (the report then carries only
//! their size). All go over HTTP with the endpoint's token.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ferry_proto::api::{StillToRun, StillToRunRequest, TaskCopy};
use ferry_proto::messages::{Completion, TaskBatch, TaskResult, TaskSpec};
use ferry_proto::{EndpointId, FunctionId, TaskId};

/// Functions fetched by reference kept at most (their code is immutable).
const KEPT_FUNCTIONS: usize = 1024;

/// The web-service's data routes, and the limits it announced at registration.
#[derive(Clone)]
pub struct DataPlane {
    http: reqwest::Client,
    url: String,
    token: String,
    /// Results above this size go by reference.
    pub inline_limit: u64,
    /// Results above this size fail their task.
    pub max_result: u64,
    /// Function code fetched by reference, by function.
    functions: Arc<Mutex<HashMap<FunctionId, Bytes>>>,
}

impl DataPlane {
    pub fn new(http: reqwest::Client, url: &str, token: String, inline_limit: u64, max_result: u64) -> Self {
        Self {
            http,
            url: url.trim_end_matches('/').to_owned(),
            token,
            inline_limit,
            max_result,
            functions: Arc::default(),
        }
    }

    /// Fills in the code of functions that travel by reference: from what was fetched
    /// before, else from the web-service through one of the message's tasks of that
    /// function. A function none of whose tasks can be had any more (all finished and
    /// gone) is left out with its tasks.
    pub async fn fetch_functions(&self, batch: &mut TaskBatch) -> anyhow::Result<()> {
        let mut gone = Vec::new();
        for f in batch.functions.iter_mut() {
            let Some(size) = f.by_reference else { continue };
            let kept = self
                .functions
                .lock()
                .expect("functions")
                .get(&f.function_id)
                .cloned();
            let code = match kept {
                Some(code) => Some(code),
                None => self.function(f.function_id, &batch.tasks).await?,
            };
            match code {
                Some(code) => {
                    if code.len() as u64 != size {
                        tracing::warn!(function_id = %f.function_id, size, got = code.len(), "function code of another size than announced");
                    }
                    let mut kept = self.functions.lock().expect("functions");
                    if kept.len() >= KEPT_FUNCTIONS {
                        kept.clear();
                    }
                    kept.insert(f.function_id, code.clone());
                    f.code = code;
                    f.by_reference = None;
                }
                None => gone.push(f.function_id),
            }
        }
        if !gone.is_empty() {
            batch.functions.retain(|f| !gone.contains(&f.function_id));
            batch.tasks.retain(|t| {
                let keep = !gone.contains(&t.function_id);
                if !keep {
                    tracing::info!(task_id = %t.task_id, function_id = %t.function_id, "the task is gone (it finished); dropped");
                }
                keep
            });
        }
        Ok(())
    }

    /// The code of `function`, through the first of `tasks` using it that the web-service
    /// still has; `None` when none has.
    async fn function(&self, function: FunctionId, tasks: &[TaskSpec]) -> anyhow::Result<Option<Bytes>> {
        for task in tasks.iter().filter(|t| t.function_id == function) {
            let what = format!("function {function} (task {})", task.task_id);
            if let Some(code) = self.fetch(task.task_id, "function", &what).await? {
                tracing::debug!(function_id = %function, task_id = %task.task_id, "fetched a function by reference");
                return Ok(Some(code));
            }
        }
        Ok(None)
    }

    /// Keeps of a message's tasks only those still to run: the web-service says which
    /// are unfinished, dispatched here, and not dispatched again since as a newer
    /// attempt than the message carries (a copy of the record's attempt, or of a newer
    /// one, is kept). Asked for a message that comes again after the endpoint stopped
    /// with it unacked (a restart, a crash, a lost connection), and for one carrying a
    /// re-dispatched copy (attempt > 0): their finished tasks must not run again. A
    /// message taken while or shortly after RabbitMQ blocked publishes is checked too: a
    /// cancel made meanwhile may not have reached the endpoint yet.
    pub async fn keep_still_to_run(
        &self,
        endpoint: EndpointId,
        tasks: &mut Vec<TaskSpec>,
    ) -> anyhow::Result<()> {
        if tasks.is_empty() {
            return Ok(());
        }
        let url = format!("{}/v1/endpoints/{endpoint}/still_to_run", self.url);
        let body = StillToRunRequest {
            tasks: tasks
                .iter()
                .map(|t| TaskCopy {
                    task_id: t.task_id,
                    attempt: t.attempt,
                })
                .collect(),
        };
        let response = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .json(&body)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| {
                anyhow::Error::new(e).context(format!("cannot ask {url} which tasks are still to run"))
            })?;
        if !response.status().is_success() {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            anyhow::bail!("cannot ask {url} which tasks are still to run: {status} {text}");
        }
        let answer: StillToRun = response.json().await?;
        let run: HashSet<TaskId> = answer.run.into_iter().collect();
        tasks.retain(|t| {
            let keep = run.contains(&t.task_id);
            if !keep {
                tracing::info!(task_id = %t.task_id, attempt = t.attempt, "a copy (redelivered, re-dispatched, or taken during or after a broker block) of a task that finished, was cancelled or was dispatched again; not run");
            }
            keep
        });
        Ok(())
    }

    /// Fills in the inputs of tasks that travel by reference; a task whose input cannot
    /// be had any more (it finished meanwhile) is dropped from the list.
    pub async fn fetch_inputs(&self, tasks: &mut Vec<TaskSpec>) -> anyhow::Result<()> {
        let mut keep = Vec::with_capacity(tasks.len());
        for mut task in tasks.drain(..) {
            if task.input_bytes.is_some() {
                match self.input(task.task_id).await? {
                    Some(data) => {
                        task.payload = data;
                        task.input_bytes = None;
                    }
                    None => {
                        tracing::info!(task_id = %task.task_id, "the task's input is gone (it finished); dropped");
                        continue;
                    }
                }
            }
            keep.push(task);
        }
        *tasks = keep;
        Ok(())
    }

    async fn input(&self, task: TaskId) -> anyhow::Result<Option<Bytes>> {
        self.fetch(task, "input", &format!("the input of task {task}"))
            .await
    }

    /// `GET /v1/tasks/{task}/{route}`: the bytes, or `None` when the web-service no longer
    /// has them (the task finished and is gone); `what` names them in errors.
    async fn fetch(&self, task: TaskId, route: &str, what: &str) -> anyhow::Result<Option<Bytes>> {
        let url = format!("{}/v1/tasks/{task}/{route}", self.url);
        let response = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(300))
            .send()
            .await
            .map_err(|e| anyhow::Error::new(e).context(format!("cannot fetch {what} from {url}")))?;
        match response.status() {
            s if s.is_success() => Ok(Some(response.bytes().await?)),
            reqwest::StatusCode::GONE | reqwest::StatusCode::NOT_FOUND => Ok(None),
            s => anyhow::bail!("cannot fetch {what} from {url}: {s}"),
        }
    }

    /// About how many bytes a result will take in a report (after [`Self::prepare`]).
    pub fn carried_bytes(&self, result: &TaskResult) -> usize {
        let value = match &result.completion {
            Completion::Success { result } => result.len().min(self.inline_limit as usize),
            Completion::Failure { traceback, exception } => {
                traceback.len() + exception.as_ref().map_or(0, |e| e.len())
            }
            Completion::Lost { reason } | Completion::TimedOut { reason } => reason.len(),
            Completion::SuccessByReference { .. } => 0,
        };
        value + result.stdout.len() + result.stderr.len() + 64 * (result.steps.len() + 1)
    }

    /// Makes a result fit for a report: a large value is stored in the data plane and
    /// replaced by its size; one past the limit fails the task instead.
    pub async fn prepare(&self, result: &mut TaskResult) {
        let Completion::Success { result: data } = &result.completion else {
            return;
        };
        let len = data.len() as u64;
        if len <= self.inline_limit {
            return;
        }
        let task = result.task_id;
        result.completion = if len > self.max_result {
            Completion::Failure {
                // Named as Globus Compute names it, so its SDK's users recognise it.
                traceback: format!(
                    "MaxResultSizeExceeded({len}, {max}): the result of task {task} is {len} bytes; \
                     the limit is {max} bytes (FERRY_MAX_PAYLOAD_BYTES)",
                    max = self.max_result
                ),
                exception: None,
            }
        } else {
            match self.put_result(task, result.attempt, data.clone()).await {
                Ok(()) => Completion::SuccessByReference { bytes: len },
                Err(e) => {
                    tracing::warn!(task_id = %task, error = %format!("{e:#}"), "cannot store a large result");
                    Completion::Failure {
                        traceback: format!(
                            "the result of task {task} ({len} bytes) could not be stored: {e:#}"
                        ),
                        exception: None,
                    }
                }
            }
        };
    }

    async fn put_result(&self, task: TaskId, attempt: u32, data: Bytes) -> anyhow::Result<()> {
        let url = format!("{}/v1/tasks/{task}/results/{attempt}", self.url);
        let mut delay = Duration::from_millis(200);
        for left in (0..5).rev() {
            let sent = self
                .http
                .put(&url)
                .bearer_auth(&self.token)
                .body(data.clone())
                .timeout(Duration::from_secs(300))
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => return Ok(()),
                // A refusal will not change on retry.
                Ok(r) if r.status().is_client_error() => {
                    anyhow::bail!("{url} refused the result: {}", r.text().await.unwrap_or_default())
                }
                Ok(r) if left == 0 => anyhow::bail!("{url} answered {}", r.status()),
                Err(e) if left == 0 => anyhow::bail!("cannot reach {url}: {e}"),
                _ => {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
        unreachable!("the last attempt returns")
    }
}
